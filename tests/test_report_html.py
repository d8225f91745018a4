"""Tests of the HTML report's sections, size bounds, determinism and escaping.

Builds on the hand-made records of ``test_report.py``; the H200 trace test reads a real trace
(tests/data/h200).
"""

from __future__ import annotations

import html
import importlib.resources
import re
from pathlib import Path

import msgspec
import pytest
from tracedata import H200, ROOT, h200_trace
from viewing import analyze_record, analyzed

from tests.test_report import (
    ASSET_URL,
    EVIL,
    EVIL_PARTS,
    data_island,
    make_analysis,
    make_record,
    strip_plotly,
)
from torchdiag.analyze.finding import rank_findings
from torchdiag.analyze.registry import Analysis, registered_rules
from torchdiag.record import (
    GpmSeries,
    GpuSeries,
    HostSeries,
    KernelStat,
    MemoryTimeline,
    OpStat,
    RunRecord,
    Samples,
    StepSeries,
    decode_record,
)
from torchdiag.report import rule_docs
from torchdiag.report.html import render_html
from torchdiag.view.run_view import RunView

H200_TRACE = h200_trace("dataloader_stall_w0")
SECTIONS = (
    "summary",
    "findings",
    "steps",
    "input",
    "samples",
    "ops",
    "kernels",
    "memory",
    "raw-trace",
    "profiler",
    "environment",
    "overhead",
    "collectors",
    "status",
)
# Packed plotly.js is ~1.8 MB; the rest of the page must stay within this.
MAX_PAGE_WITHOUT_PLOTLY = 1_000_000
MAX_PAGE = 3_000_000


def assert_sections(page: str, absent: tuple[str, ...] = ()) -> None:
    """Every section is on the page except ``absent``, which are left out and listed instead."""
    for section in SECTIONS:
        if section in absent:
            assert f'id="{section}"' not in page, section
            assert f'href="#{section}"' not in page, section  # nor in the table of contents
        else:
            assert f'id="{section}"' in page, section
    assert ('id="not-recorded"' in page) == bool(absent)


def not_recorded(page: str) -> dict[str, str]:
    """The page's "Not in this record" list: part title -> why."""
    match = re.search(r'<section id="not-recorded">(.*?)</section>', page, re.S)
    if match is None:
        return {}
    rows = re.findall(r"<tr><th scope=\"row\">(.*?)</th><td>(.*?)</td></tr>", match.group(1))
    return {html.unescape(k): html.unescape(v) for k, v in rows}


@pytest.fixture(scope="module")
def rich_page() -> str:
    rec = make_record()
    assert rec.profiler is not None and rec.profiler.summary is not None
    rec.profiler.summary.memory = [
        MemoryTimeline(
            device=0,
            peak_allocated_bytes=5 * 1024**3,
            peak_reserved_bytes=6 * 1024**3,
            t_us=[float(i) * 100 for i in range(50)],
            allocated_bytes=[i * 1024**3 // 10 for i in range(50)],
            reserved_bytes=[6 * 1024**3] * 50,
        )
    ]
    return render_html(RunView(rec), make_analysis())


def test_rich_live_record_has_every_section_with_data(rich_page: str) -> None:
    assert_sections(rich_page)
    figs = data_island(rich_page)["figures"]
    for name in (
        "steps",
        "breakdown",
        "step_distribution",
        "input_waits",
        "samples",
        "cpu_heatmap",
        "top_ops",
        "top_kernels",
        "kernel_classes",
        "memory",
    ):
        assert name in figs, name
        assert f'data-figure="{name}"' in rich_page, name
    # Headline: throughput, GPU busy and tensor-core activity from GPM.
    assert "samples/s" in rich_page and "GPU busy" in rich_page
    assert "active (GPM)" in rich_page
    # Findings are collapsible, the top ones open; relative docs shown as text, not a link.
    assert '<details class="finding sev-critical" id="finding-1" open>' in rich_page
    assert 'href="docs/rules.md' not in rich_page
    assert "docs/rules.md#gpu-idle-small-kernels</code>" in rich_page
    # The profiled window is shaded on the timeline (steps 10..14 start at their start_s).
    (band,) = figs["samples"]["layout"]["shapes"]
    assert band["x0"] < band["x1"]
    # Sortable, searchable tables; the Perfetto box names the trace file.
    assert 'class="grid sortable" id="ops-table"' in rich_page
    assert 'data-table="kernels-table"' in rich_page
    assert "ui.perfetto.dev" in rich_page and "runs/x/trace.json" in rich_page
    assert "sampler cpu pct" in rich_page  # torchdiag's overhead
    # The outlier step 0 (120 ms) is listed.
    assert "step 0" in rich_page


def test_h200_trace_record_has_every_section() -> None:
    from torchdiag.traces.load import record_from_traces

    rec = record_from_traces(str(H200_TRACE))
    page = render_html(*analyzed(rec))
    # What a trace cannot have is left out, and said once, not shown as empty boxes.
    assert_sections(page, absent=("samples", "overhead"))
    absent = not_recorded(page)
    assert absent["GPU and host timelines"].startswith("A record built from a trace file")
    assert set(absent) == {
        "DataLoader settings",
        "GPU and host timelines",
        "torchdiag's own overhead",
    }
    assert page.count('class="missing"') == 0
    figs = data_island(page)["figures"]
    assert {"breakdown", "step_distribution", "top_ops", "top_kernels"} <= set(figs)
    assert "of math time" in page  # tensor cores from the trace's math stats
    assert "samples/s (batch 64)" in page
    assert H200_TRACE.name in page and "chrome://tracing" in page
    assert len(page.encode()) < MAX_PAGE
    assert len(strip_plotly(page).encode()) < MAX_PAGE_WITHOUT_PLOTLY


def huge_record() -> RunRecord:
    rec = make_record(n_steps=2048)
    summary = rec.profiler.summary
    long_name = "void at::native::kernel<" + "float, " * 400 + ">"
    summary.top_ops = [
        OpStat(
            name=f"aten::op{i}_{long_name}",
            calls=i,
            total_ms=1.0 + i,
            self_ms=0.5 + i,
            input_dtypes=["float"] * 10,
            input_shapes=["[1, 2, 3]"] * 10,
        )
        for i in range(10_000)
    ]
    summary.top_kernels = [
        KernelStat(name=f"k{i}{long_name}", calls=i, total_ms=float(i), tensor_core=i % 2 == 0)
        for i in range(10_000)
    ]
    summary.memory = [
        MemoryTimeline(
            device=d,
            t_us=[float(i) for i in range(100_000)],
            allocated_bytes=list(range(100_000)),
            reserved_bytes=list(range(100_000)),
        )
        for d in range(8)
    ]
    n, cores = 1024, 128
    gpm = GpmSeries(
        **{
            f: [12.345] * n
            for f in (
                "sm_active_pct",
                "sm_occupancy_pct",
                "tensor_active_pct",
                "dram_bandwidth_pct",
            )
        }
    )
    rec.samples = Samples(
        t_s=[0.5 * i for i in range(n)],
        rows_merged=[1] * n,
        host=HostSeries(
            cpu_count=cores,
            cpu_pct_per_core=[[float((i * c) % 100) for c in range(cores)] for i in range(n)],
            process_cpu_pct=[101.5] * n,
            workers_cpu_pct=[333.25] * n,
            process_rss_bytes=[3e9] * n,
            workers_rss_bytes=[2e9] * n,
        ),
        gpus=[
            GpuSeries(
                index=g,
                utilization_pct=[float(i % 100) for i in range(n)],
                memory_used_bytes=[1.2345e10] * n,
                power_w=[512.345] * n,
                sm_clock_mhz=[1980.0] * n,
                gpm=gpm,
            )
            for g in range(8)
        ],
    )
    return rec


def test_huge_record_page_stays_bounded() -> None:
    rec = huge_record()
    page = render_html(RunView(rec), make_analysis())
    size = len(page.encode())
    rest = len(strip_plotly(page).encode())
    assert size < MAX_PAGE, size
    assert rest < MAX_PAGE_WITHOUT_PLOTLY, rest
    assert "9,950 more operators" in page and "9,950 more kernels" in page
    assert_sections(page)


def test_same_record_same_bytes(rich_page: str) -> None:
    rec = huge_record()
    again = decode_record(rec.to_json())
    assert render_html(RunView(rec), make_analysis(), cdn=True) == render_html(
        RunView(again), make_analysis(), cdn=True
    )


def test_names_are_escaped_in_tables_and_chart_labels() -> None:
    rec = make_record(evil=EVIL)
    page = render_html(RunView(rec), make_analysis(evil=EVIL))
    for part in EVIL_PARTS:
        assert part not in page, part
    assert page.count("<script") == page.count("</script>") == 3
    # Table cells show the name as text.
    assert f"aten::conv2d{html.escape(EVIL, quote=False)}" in page
    figs = data_island(page)["figures"]
    op_labels = figs["top_ops"]["data"][0]["y"]
    assert any("&lt;/script&gt;" in label for label in op_labels)
    kernel_labels = [y for t in figs["top_kernels"]["data"] for y in t["y"]]
    assert all("<" not in label for label in kernel_labels)


def test_no_network_assets_by_default(rich_page: str) -> None:
    assert not ASSET_URL.search(rich_page)
    # Links in findings may point at docs on the web; nothing is fetched: no asset URL, no CSS
    # url(), no @import.
    rest = strip_plotly(rich_page)
    assert not re.search(r"url\(\s*['\"]?https?:", rest) and "@import" not in rest


def test_empty_record_says_why_each_section_is_missing() -> None:
    page = render_html(
        RunView(RunRecord(name="empty")), Analysis(findings=[], skipped=[]), cdn=True
    )
    assert_sections(page, absent=SECTIONS[2:10] + SECTIONS[11:13])
    absent = not_recorded(page)
    assert absent["Raw trace"] == "This run had no torch.profiler window"
    assert absent["Profiler window"].startswith("No torch.profiler window or trace")
    assert len(absent) == 15  # every part but the allocator timeline, which memory covers
    assert data_island(page)["figures"] == {}


def test_long_step_series_is_capped() -> None:
    n = 50_000
    steps = StepSeries(
        detection="manual",
        count=n,
        first_step=list(range(n)),
        steps=[1] * n,
        start_s=[i * 0.01 for i in range(n)],
        wall_ms=[10.0] * n,
        input_wait_ms=[1.0] * n,
        max_wall_ms=[10.0] * n,
        profiled=[False] * n,
    )
    page = render_html(RunView(RunRecord(steps=steps)), Analysis(findings=[], skipped=[]), cdn=True)
    assert len(page.encode()) < MAX_PAGE_WITHOUT_PLOTLY


# ---------------------------------------------------------------------------------------------
# Page size, rule documentation, page layout decisions

# The page with plotly.js in it: the bound a report must keep to travel as a CI artifact or in a
# mail (decimal megabytes).
MAX_H200_PAGE = 2_000_000


@pytest.mark.parametrize("trace", sorted(p.name for p in H200.glob("*.pt.trace.json.gz")))
def test_h200_trace_pages_weigh_at_most_2_mb(trace: str) -> None:
    from torchdiag.traces.load import record_from_traces

    page = render_html(*analyzed(record_from_traces(str(H200 / trace))))
    assert len(page.encode()) <= MAX_H200_PAGE, len(page.encode())


def test_shipped_rule_docs_are_docs_rules_md() -> None:
    """The report embeds rule docs from a package-data copy of docs/rules.md: one source."""
    shipped = importlib.resources.files("torchdiag.report_templates") / rule_docs.RULES_DOC
    assert shipped.read_bytes() == (ROOT / "docs" / "rules.md").read_bytes(), (
        "copy docs/rules.md to report_templates/rules.md"
    )


def test_every_rule_is_documented() -> None:
    registered = {r.id for r in registered_rules()}
    assert registered <= set(rule_docs.documented_rules()), registered - set(
        rule_docs.documented_rules()
    )


def test_findings_embed_their_rule_docs() -> None:
    from torchdiag.traces.load import record_from_traces

    rec = record_from_traces(str(H200_TRACE))
    analysis = analyze_record(rec)
    page = render_html(RunView(rec), analysis)
    blocks = re.findall(
        r'<details class="rule-doc"><summary>About the <code>([a-z0-9-]+)</code> rule.*?'
        r'<div class="rule-doc-body">(.*?)</div></details>',
        page,
        re.S,
    )
    assert [rule for rule, _ in blocks] == [f.id for f in rank_findings(analysis.findings)]
    for rule, body in blocks:
        assert body == rule_docs.rule_doc_html(rule)
        assert "<strong>What:</strong>" in body and "<strong>Fix:</strong>" in body
    # Documented rules get the block instead of a reference into a repository.
    assert "docs/rules.md#" not in page


def test_rule_docs_are_escaped_and_link_nothing() -> None:
    evil = f"- **What:** {EVIL} [a link](javascript:alert(1)) <https://example.org> ![i](x.png)"
    doc = rule_docs.render_section(evil)
    for part in EVIL_PARTS:
        assert part not in doc, part
    assert "href" not in doc and "<img" not in doc and "a link" in doc
    assert rule_docs.rule_doc_html("no-such-rule") is None


def test_cached_rule_docs_are_the_rendered_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A report reads the rule docs from the user's cache once rendered: the same HTML, and a
    damaged entry is rendered again."""
    monkeypatch.setenv("TORCHDIAG_CACHE_DIR", str(tmp_path))
    fresh = {rule: rule_docs.render_section(text) for rule, text in rule_docs._sections().items()}
    rule_docs._rendered.cache_clear()
    assert rule_docs._rendered() == fresh  # a miss: rendered and stored
    (entry,) = tmp_path.glob("rule-docs-*.json")
    rule_docs._rendered.cache_clear()
    assert rule_docs._rendered() == fresh  # a hit
    entry.write_bytes(entry.read_bytes()[:-10])
    rule_docs._rendered.cache_clear()
    assert rule_docs._rendered() == fresh  # damaged: rendered again
    rule_docs._rendered.cache_clear()


def test_count_axes_tick_whole_numbers() -> None:
    from torchdiag.report.figures_base import count_axis

    for top, dtick in ((1, 1), (2, 1), (8, 1), (9, 2), (16, 2), (17, 5), (40, 5), (41, 10)):
        axis = count_axis("steps", top)
        assert axis["dtick"] == dtick and axis["tick0"] == 0, top
        assert top / axis["dtick"] <= 8


def test_one_step_numbering_for_a_live_window() -> None:
    """The window's trace numbers its steps ProfilerStep#1..; the page uses the record's."""
    rec = make_record()
    summary = rec.profiler.summary
    # As torch.profiler numbers them, whatever the record's first profiled step.
    summary.steps = [msgspec.structs.replace(st, number=i) for i, st in enumerate(summary.steps, 1)]
    page = render_html(RunView(rec), make_analysis(), cdn=True)
    first = rec.profiler.first_step
    last = first + rec.profiler.steps - 1
    figs = data_island(page)["figures"]
    assert figs["breakdown"]["data"][0]["x"] == [str(n) for n in range(first, last + 1)]
    (band,) = figs["steps"]["layout"]["shapes"]
    assert (band["x0"], band["x1"]) == (first - 0.5, last + 0.5)
    assert f"<td>{first} to {last}" in page
