"""Tests of the report renderers (HTML, Markdown, text, JSON) on hand-built records.

Findings are made by hand so these tests do not depend on the analyzer rules.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from markdown_checks import md_cells_consistent

from torchdiag.analyze.finding import Finding, Skipped
from torchdiag.analyze.registry import Analysis
from torchdiag.record import (
    BreakdownMs,
    CollectorStatus,
    DeviceInfo,
    DistributedInfo,
    Environment,
    GpmSeries,
    GpuSeries,
    HostSeries,
    KernelStat,
    LoaderInfo,
    OpStat,
    OptimizerInfo,
    ParameterInfo,
    ProfilerWindow,
    RunRecord,
    RunStatus,
    Samples,
    StepSeries,
    TraceStep,
    TraceSummary,
    decode_record,
)
from torchdiag.report.bundle import plotly_js, unpack
from torchdiag.report.html import DATA_ELEMENT_ID, PLOTLY_ELEMENT_ID, json_for_script, render_html
from torchdiag.report.json_report import render_json
from torchdiag.report.markdown import MAX_CHARS, render_markdown
from torchdiag.report.text import render_text
from torchdiag.report.verdict import CLEAN_VERDICT, EMPTY_VERDICT, verdict
from torchdiag.view.numbers import weighted_quantile
from torchdiag.view.run_view import RunView

EVIL = "</script><script>alert(1)</script> <!-- <b>x</b> -->"
# Raw markup that must never reach the page; "</script>" alone is the page's own closing tag, so
# the script elements are counted instead.
EVIL_PARTS = ("</script><script>", "<script>alert(1)", "<!--", "-->", "<b>x</b>")
GIB = 1024**3


# ---------------------------------------------------------------------------------------------
# Record and findings builders


def make_record(n_steps: int = 40, name: str = "resnet-demo", evil: str | None = None) -> RunRecord:
    """A plausible live record: steps, host + one GPU sampled (with GPM), loaders and a profiler
    window whose summary has steps with a breakdown, top ops and kernels. ``evil`` is put into
    the dataset, op, kernel, exception and record names."""
    tag = evil or ""
    walls = [120.0 if i == 0 else 50.0 + (i % 5) for i in range(n_steps)]
    waits = [30.0 if i % 3 == 0 else 10.0 for i in range(n_steps)]
    profiled = [10 <= i < 15 for i in range(n_steps)]
    steps = StepSeries(
        detection="optimizer",
        count=n_steps,
        total_wall_s=sum(walls) / 1000,
        total_input_wait_s=sum(waits) / 1000,
        first_step=list(range(n_steps)),
        steps=[1] * n_steps,
        start_s=[sum(walls[:i]) / 1000 for i in range(n_steps)],
        wall_ms=walls,
        input_wait_ms=waits,
        max_wall_ms=walls,
        profiled=profiled,
    )
    t = [0.5 * i for i in range(8)]
    gpu = GpuSeries(
        index=0,
        name="NVIDIA H100 80GB HBM3",
        memory_total_bytes=80 * GIB,
        power_limit_w=700.0,
        utilization_pct=[40.0, 55.0, None, 60.0, 62.0, 58.0, 61.0, 63.0],
        memory_utilization_pct=[20.0] * 8,
        memory_used_bytes=[float(10 * GIB + i * GIB) for i in range(8)],
        power_w=[300.0 + 10 * i for i in range(8)],
        sm_clock_mhz=[1980.0] * 8,
        max_sm_clock_mhz=1980.0,
        temperature_c=[60.0] * 8,
        throttle_reasons=[0] * 8,
        gpm=GpmSeries(
            sm_active_pct=[50.0] * 8,
            sm_occupancy_pct=[30.0] * 8,
            tensor_active_pct=[20.0 + i for i in range(8)],
            dram_bandwidth_pct=[40.0] * 8,
        ),
    )
    host = HostSeries(
        cpu_count=4,
        memory_total_bytes=64 * GIB,
        cpu_pct_per_core=[[50.0, 70.0, 10.0, 30.0] for _ in range(8)],
        process_cpu_pct=[110.0] * 8,
        process_rss_bytes=[3.0 * GIB] * 8,
        worker_count=[4.0] * 8,
        workers_cpu_pct=[300.0] * 8,
        workers_rss_bytes=[2.0 * GIB] * 8,
        memory_used_bytes=[20.0 * GIB] * 8,
    )
    samples = Samples(
        sample_count=8, t_s=t, rows_merged=[1] * 8, host=host, gpus=[gpu], sampler_cpu_s=0.1
    )
    trace_steps = [
        TraceStep(
            number=n,
            start_us=1000.0 * n,
            duration_ms=52.0,
            breakdown=BreakdownMs(
                wall=52.0,
                compute=30.0,
                memcpy=2.0,
                memset=0.5,
                input_wait=12.0,
                host_runtime=4.0,
                idle_host_wait=2.5,
                idle_other=1.0,
            ),
            kernels=300,
            gpu_busy_ms=32.5,
        )
        for n in range(10, 15)
    ]
    summary = TraceSummary(
        origin="live",
        format="chrome-trace",
        event_count=12345,
        span_ms=260.0,
        has_gpu=True,
        device_kind="cuda",
        step_detection="profiler-step",
        steps=trace_steps,
        kernel_count=1500,
        kernel_time_ms=150.0,
        gpu_busy_ms=162.0,
        top_ops=[
            OpStat(
                name=f"aten::conv2d{tag}",
                calls=100,
                total_ms=80.0,
                self_ms=5.0,
                gpu_ms=60.0,
                input_dtypes=["float32"],
                input_shapes=["[32, 3, 224, 224]"],
            ),
            OpStat(name="aten::addmm", calls=50, total_ms=20.0, self_ms=2.0, gpu_ms=15.0),
        ],
        top_kernels=[
            KernelStat(
                name=f"void cutlass::Kernel<{tag}>",
                kernel_class="gemm",
                tensor_core=True,
                calls=200,
                total_ms=90.0,
                median_us=400.0,
                max_us=900.0,
            ),
            KernelStat(
                name="elementwise_kernel",
                kernel_class="elementwise",
                calls=900,
                total_ms=30.0,
                median_us=30.0,
                max_us=50.0,
            ),
        ],
        kernel_class_ms={"gemm": 90.0, "elementwise": 30.0, f"conv{tag}": 30.0},
        notes=["CUDA graphs were not used"],
    )
    env = Environment(
        torchdiag_version="0.1.0",
        python="3.11.7",
        platform="Linux-6.1-x86_64",
        hostname="node-1",
        torch_version="2.14.1+cu130",
        cuda_version="13.0",
        cudnn_version=92400,
        nvidia_driver="580.1",
        devices=[
            DeviceInfo(
                index=0,
                name="NVIDIA H100 80GB HBM3",
                capability="9.0",
                memory_total_bytes=80 * GIB,
                multiprocessors=132,
            )
        ],
        cpu_count_logical=4,
        cpu_count_physical=2,
        cudnn_benchmark=False,
        tf32_matmul=False,
        num_threads=2,
        distributed=DistributedInfo(),
        loaders=[
            LoaderInfo(
                loader_id=1,
                dataset=f"ImageFolder{tag}",
                batch_size=32,
                num_workers=2,
                batches=n_steps,
                wait_s=sum(waits) / 1000,
            ),
            LoaderInfo(loader_id=2, dataset="Validation", batch_size=256, batches=3),
        ],
        optimizers=[
            OptimizerInfo(
                class_name="SGD", foreach=True, param_groups=1, parameters=161, steps=n_steps
            )
        ],
        parameters=ParameterInfo(
            tensors=161,
            elements=25_557_032,
            elements_by_dtype={"float32": 25_557_032},
            devices=["cuda:0"],
        ),
        env_vars={"CUDA_VISIBLE_DEVICES": "0"},
    )
    return RunRecord(
        name=f"{name}{tag}",
        started_utc="2026-01-02T03:04:05Z",
        ended_utc="2026-01-02T03:05:05Z",
        duration_s=60.0,
        status=RunStatus(
            state="failed" if evil else "completed",
            exception_type="RuntimeError" if evil else None,
            message=f"CUDA out of memory {tag}" if evil else None,
        ),
        collectors={
            "steps": CollectorStatus(available=True),
            "nvml": CollectorStatus(available=True),
            "gpm": CollectorStatus(available=False, reason="GPM needs Hopper or newer"),
        },
        steps=steps,
        samples=samples,
        environment=env,
        profiler=ProfilerWindow(
            first_step=10, steps=5, wall_s=0.26, trace_file="runs/x/trace.json", summary=summary
        ),
        overhead={"sampler_cpu_pct": 0.4},
    )


def make_analysis(evil: str | None = None) -> Analysis:
    tag = evil or ""
    return Analysis(
        findings=[
            Finding(
                id="gpu-idle-small-kernels",
                severity="warning",
                title="launch-bound: many tiny kernels",
                evidence={"kernels_per_step": 300, "median_kernel_us": 4.2},
                recommendation="Use torch.compile or CUDA graphs to cut launch overhead.",
                snippet="model = torch.compile(model)",
                saving_pct_max=8.0,
                docs="docs/rules.md#gpu-idle-small-kernels",
            ),
            Finding(
                id="input-bound",
                severity="critical",
                title=f"input-bound: 31% of each step waits for data{tag}",
                evidence={
                    "input_wait_pct": 31.2,
                    "num_workers": 2,
                    "pin_memory": False,
                    "dataset": f"ImageFolder{tag}",
                },
                recommendation=f"Raise num_workers to 8 and set pin_memory=True.{tag}",
                snippet=f"loader = DataLoader(ds, num_workers=8, pin_memory=True)  # {tag}",
                saving_pct_max=31.0,
                docs="javascript:alert(1)" if evil else "https://example.org/rules#input-bound",
            ),
            Finding(
                id="tf32-off",
                severity="info",
                title="TF32 matmul is off",
                evidence={"tf32_matmul": False},
                recommendation="torch.backends.cuda.matmul.allow_tf32 = True",
                saving_pct_max=1.0,
            ),
        ],
        skipped=[Skipped(id="nccl-imbalance", reason="single process run")],
    )


def data_island(page: str) -> dict:
    match = re.search(
        rf'<script type="application/json" id="{DATA_ELEMENT_ID}">(.*?)</script>', page, re.S
    )
    assert match is not None, "data island missing"
    return json.loads(match.group(1))


def strip_plotly(page: str) -> str:
    """The page without the packed plotly.js bundle (third-party code we do not generate)."""
    start = page.index(f'<script type="application/octet-stream" id="{PLOTLY_ELEMENT_ID}">')
    end = page.index("</script>", start)
    return page[:start] + page[end:]


ASSET_URL = re.compile(
    r"""<(?:script|link|img|iframe|source)\b[^>]*?\b(?:src|href)\s*=\s*["']?https?://"""
)


@pytest.fixture(scope="module")
def record() -> RunRecord:
    return make_record()


@pytest.fixture(scope="module")
def page(record: RunRecord) -> str:
    return render_html(RunView(record), make_analysis())


# ---------------------------------------------------------------------------------------------
# Verdict and headline


def test_verdict_from_top_warning_finding(record: RunRecord) -> None:
    line = verdict(RunView(record), make_analysis())
    assert line.startswith("input-bound: 31% of each step waits for data")
    assert "(+1 more finding)" in line


def test_verdict_clean_and_empty(record: RunRecord) -> None:
    info_only = Analysis(findings=[make_analysis().findings[2]], skipped=[])
    assert verdict(RunView(record), info_only).startswith(CLEAN_VERDICT)
    assert verdict(RunView(record), Analysis(findings=[], skipped=[])) == CLEAN_VERDICT
    assert verdict(RunView(RunRecord()), make_analysis()) == EMPTY_VERDICT


def test_verdict_adds_saving_when_title_has_no_number(record: RunRecord) -> None:
    f = Finding(
        id="x",
        severity="warning",
        title="launch-bound",
        evidence={},
        recommendation="",
        saving_pct_max=12.5,
    )
    assert verdict(RunView(record), Analysis(findings=[f], skipped=[])) == (
        "launch-bound (up to 12.5% of step time)"
    )


def test_headline_numbers(record: RunRecord) -> None:
    h = RunView(record).headline
    assert h["steps"] == 40
    assert h["median_step_ms"] == 52.0
    assert h["p95_step_ms"] == 54.0
    assert h["batch_size"] == 32  # the training loader (most batches), not the validation one
    # Throughput and input wait are shares of the one step figure: the steady mean step.
    timing = RunView(record).timing
    assert h["step_time_measured"]
    assert h["step_ms_estimate"] == pytest.approx(timing.step_ms, abs=1e-3)
    assert h["samples_per_s"] == pytest.approx(32 * 1000 / timing.step_ms, rel=1e-3)
    assert h["input_wait_pct"] == pytest.approx(100 * timing.input_wait_share, rel=1e-3)
    assert h["gpu_util_mean_pct"] == pytest.approx((40 + 55 + 60 + 62 + 58 + 61 + 63) / 7, 1e-3)
    assert h["gpu_memory_peak_bytes"] == 17 * GIB
    empty = RunView(RunRecord()).headline
    assert empty["steps"] == 0
    assert empty["mode"] == "training"  # a record without the field reads as training
    flags = ("step_time_measured", "step_is_forward_call", "step_is_generate_call")
    assert not any(empty[k] for k in flags)
    assert all(
        v is None for k, v in empty.items() if k not in ("steps", "estimate_steps", "mode", *flags)
    )


def test_weighted_quantile_counts_merged_rows() -> None:
    # One row of 10 ms stands for 9 steps: the median is 10 ms, not the mean of the rows.
    assert weighted_quantile([10.0, 100.0], [9, 1], 0.5) == 10.0
    assert weighted_quantile([10.0, 100.0], [9, 1], 0.95) == 100.0
    assert weighted_quantile([], [], 0.5) is None


# ---------------------------------------------------------------------------------------------
# HTML


def test_html_has_every_section(page: str) -> None:
    for section in (
        "summary",
        "findings",
        "steps",
        "profiler",
        "samples",
        "ops",
        "kernels",
        "environment",
        "collectors",
        "status",
    ):
        assert f'id="{section}"' in page, section
    for figure in ("steps", "breakdown", "samples", "kernel_classes"):
        assert f'data-figure="{figure}"' in page, figure
    assert "input-bound: 31% of each step waits for data" in page
    assert "resnet-demo" in page and "2.14.1+cu130" in page and "NVIDIA H100 80GB HBM3" in page
    assert "badge-critical" in page and "badge-warning" in page and "badge-info" in page
    assert '<button type="button" class="copy" data-copy="snippet-1">' in page
    assert 'href="https://example.org/rules#input-bound"' in page
    assert '<details class="skipped">' in page and "nccl-imbalance" in page
    assert "aten::conv2d" in page and "cutlass::Kernel" in page
    assert "ImageFolder" in page and "GPM needs Hopper or newer" in page
    assert "SGD" in page and "25,557,032" in page


def test_html_figures_from_record(page: str, record: RunRecord) -> None:
    figs = data_island(page)["figures"]
    steps = figs["steps"]
    assert [t["name"] for t in steps["data"]] == ["input wait", "rest of step"]
    assert steps["data"][0]["y"][:2] == [30.0, 10.0]
    assert steps["data"][1]["y"][0] == 90.0
    assert steps["layout"]["barmode"] == "stack"
    # The profiled steps 10..14 are shaded as one band.
    (band,) = steps["layout"]["shapes"]
    assert (band["x0"], band["x1"]) == (9.5, 14.5)
    names = [t["name"] for t in figs["breakdown"]["data"]]
    assert names[:2] == ["compute", "memcpy"] and "communication" not in names
    sample_names = {t["name"] for t in figs["samples"]["data"]}
    assert {
        "GPU 0",
        "GPU 0 tensor active",
        "GPU 0 SM active",
        "host CPU (mean of cores)",
        "process CPU",
        "workers CPU",
        "process RSS",
    } <= sample_names
    # Every sampler row shares the first x axis.
    layout = figs["samples"]["layout"]
    assert layout["xaxis2"]["matches"] == "x"
    util = next(t for t in figs["samples"]["data"] if t["name"] == "GPU 0")
    assert util["y"][2] is None
    # The time axis is stored once and referenced by every sampler trace.
    assert util["x"] == "@shared:t_s"
    assert data_island(page)["shared"]["t_s"] == record.samples.t_s


def test_html_escapes_everything_from_the_record() -> None:
    rec = make_record(evil=EVIL)
    page = render_html(RunView(rec), make_analysis(evil=EVIL), cdn=True)
    for part in EVIL_PARTS:
        assert part not in page, part
    assert page.count("<script") == page.count("</script>") == 3  # data, plotly, report.js
    # Shown as text instead: the escaped form is on the page.
    assert html.escape(EVIL, quote=False).split(" ")[0] in page
    assert "javascript:" not in page  # a docs link with another scheme is not linked at all
    island = data_island(page)
    assert island["run"]["name"] == rec.name
    assert island["run"]["status"]["message"] == rec.status.message
    labels = island["figures"]["kernel_classes"]["data"][0]["y"]
    assert f"conv{html.escape(EVIL, quote=False)}" in labels
    # With plotly.js inlined the same holds outside the bundle, which contains none of these.
    inline = render_html(RunView(rec), make_analysis(evil=EVIL))
    for part in EVIL_PARTS:
        assert part not in inline, part
    assert inline.count("<script") == inline.count("</script>") == 3


def test_json_for_script_round_trips() -> None:
    value = {"s": EVIL + "\u2028\u2029&", "n": [1, 2.5, None], "nan": float("nan")}
    text = json_for_script(value)
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in text
    assert json.loads(text) == {"s": value["s"], "n": [1, 2.5, None], "nan": None}


def test_html_offline_by_default_and_cdn_on_request(record: RunRecord, page: str) -> None:
    assert not ASSET_URL.search(strip_plotly(page))
    assert not ASSET_URL.search(page)
    # plotly.js travels packed: the data block unpacks to exactly the installed bundle, and the
    # page's script policy admits that code by its hash.
    packed = re.search(
        rf'<script type="application/octet-stream" id="{PLOTLY_ELEMENT_ID}">([^<]*)</script>', page
    )
    assert packed is not None
    _, code = plotly_js(code=True)
    assert code is not None and unpack(packed.group(1)) == code
    digest = base64.b64encode(hashlib.sha256(code.encode()).digest()).decode()
    assert f"sha256-{digest}" in page
    assert len(packed.group(1)) < 0.4 * len(code.encode())
    cdn = render_html(RunView(record), make_analysis(), cdn=True)
    urls = re.findall(r'<script src="(https://cdn\.plot\.ly/plotly-\d+\.\d+\.\d+\.min\.js)"', cdn)
    assert len(urls) == 1
    assert f'id="{PLOTLY_ELEMENT_ID}"' not in cdn and len(cdn) < 200_000


def test_html_is_deterministic(record: RunRecord, page: str) -> None:
    again = render_html(RunView(decode_record(record.to_json())), make_analysis())
    assert again == page


def test_html_failed_run_shows_exception() -> None:
    rec = make_record(evil=EVIL)
    page = render_html(RunView(rec), make_analysis(), cdn=True)
    assert "Run failed" in page and "RuntimeError" in page
    assert "CUDA out of memory" in page


def test_empty_record_renders_everything() -> None:
    rec = RunRecord(name="empty")
    analysis = Analysis(findings=[], skipped=[Skipped(id="input-bound", reason="no steps")])
    page = render_html(RunView(rec), analysis, cdn=True)
    assert EMPTY_VERDICT in page
    assert "no per-step timings in this record" in page.lower()
    assert "No sampler series in this record" in page
    assert "No torch.profiler window or trace" in page
    assert "No operator statistics" in page and "No GPU kernel statistics" in page
    assert "No DataLoader was iterated" in page
    assert "not measured" not in page  # missing numbers are left out, not called unmeasured
    assert data_island(page)["figures"] == {}
    md = render_markdown(RunView(rec), analysis)
    assert EMPTY_VERDICT in md and "No step timings in this record" in md
    text = render_text(RunView(rec), analysis)
    assert EMPTY_VERDICT in text and "not measured" not in text
    doc = json.loads(render_json(RunView(rec), analysis))
    assert doc["verdict"] == EMPTY_VERDICT and doc["findings"] == []


def test_trace_only_record_uses_trace_steps(record: RunRecord) -> None:
    summary = record.profiler.summary
    rec = RunRecord(source="trace", name="imported", traces=[summary])
    h = RunView(rec).headline
    assert h["steps"] == 5 and h["median_step_ms"] == 52.0 and h["step_rows"] == "profiled"
    timing = RunView(rec).timing
    assert h["step_ms_estimate"] == pytest.approx(timing.step_ms, abs=1e-3)
    assert h["step_ms_profiled"] == pytest.approx(52.0)
    assert h["input_wait_pct"] == pytest.approx(100 * timing.input_wait_share, abs=1e-3)
    page = render_html(RunView(rec), Analysis(findings=[], skipped=[]), cdn=True)
    figs = data_island(page)["figures"]
    assert "breakdown" in figs and "steps" not in figs


def test_templates_load_from_installed_package() -> None:
    # The editable install must expose the templates as the package torchdiag.report_templates.
    code = (
        "import importlib.resources as r;"
        "f = r.files('torchdiag.report_templates');"
        "print(all((f / n).is_file() for n in "
        "('base.html', 'report.html', 'report.css', 'report.js', 'rules.md')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_reporting_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from torchdiag.report.html import render_html\n"
        "from torchdiag.report.markdown import render_markdown\n"
        "from torchdiag.report.text import render_text\n"
        "from torchdiag.report.json_report import render_json\n"
        "from torchdiag.record import RunRecord\n"
        "from torchdiag.analyze.registry import Analysis\n"
        "from torchdiag.view.run_view import RunView\n"
        "a = Analysis(findings=[], skipped=[])\n"
        "render_html(RunView(RunRecord()), a); render_markdown(RunView(RunRecord()), a)\n"
        "render_text(RunView(RunRecord()), a); render_json(RunView(RunRecord()), a)\n"
        "bad = [m for m in ('torch', 'pynvml', 'plotly.graph_objects') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# Markdown, text, JSON


def test_markdown_has_sections_and_a_row_per_finding(record: RunRecord) -> None:
    md = render_markdown(RunView(record), make_analysis())
    assert md.startswith("# torchdiag: resnet-demo\n")
    assert "**input-bound: 31% of each step waits for data" in md
    finding_row = re.compile(r"\| \d+ \| (critical|warning|info) \|")
    rows = [line for line in md.splitlines() if finding_row.match(line)]
    assert len(rows) == 3
    assert rows[0].startswith("| 1 | critical |") and "31%" in rows[0]
    assert "## Step breakdown" in md and "| compute | 30 | 57.7% |" in md
    assert "## Top operators" in md and "`aten::conv2d`" in md
    assert "```python\nmodel = torch.compile(model)\n```" in md
    assert render_markdown(RunView(record), make_analysis()) == md


def test_markdown_stays_under_github_limit_with_huge_tables(record: RunRecord) -> None:
    big = msgspec.structs.replace(
        record.profiler.summary,
        top_ops=[
            OpStat(name=f"aten::op_{i}_" + "x" * 60, calls=i, total_ms=float(i))
            for i in range(10_000)
        ],
    )
    rec = RunRecord(
        name="big", steps=record.steps, profiler=ProfilerWindow(first_step=10, steps=5, summary=big)
    )
    # 10,000 ops: the op table is cut, every finding still has its row.
    md = render_markdown(RunView(rec), make_analysis())
    assert len(md) < 20_000
    assert "... and 9,985 more" in md
    assert len(re.findall(r"^\| \d+ \| (?:critical|warning|info) \|", md, re.M)) == 3
    # Hundreds of long findings as well: still under GitHub's 65,536-character limit, the
    # findings table is cut before the lower sections are lost, and the cuts are announced.
    many = [
        Finding(
            id=f"rule-{i:04d}",
            severity="warning",
            title=f"problem {i} " + "y" * 80,
            evidence={"value": i},
            recommendation="do something " * 20,
            snippet="x = 1\n" * 10,
            saving_pct_max=5.0,
        )
        for i in range(600)
    ]
    md = render_markdown(RunView(rec), Analysis(findings=many, skipped=[]))
    assert len(md) < MAX_CHARS < 65_536
    rows = re.findall(r"^\| (\d+) \| warning \|", md, re.M)
    assert rows == [str(i) for i in range(1, len(rows) + 1)] and len(rows) > 100
    assert f"... and {600 - len(rows)} more" in md
    assert "details of 600 more findings left out" in md
    assert "## Step breakdown" in md and "... and 9,985 more" in md


def test_markdown_escapes_names() -> None:
    md = render_markdown(RunView(make_record(evil=EVIL)), make_analysis(evil=EVIL))
    # Outside code (where GitHub shows text literally) no raw markup survives.
    prose = re.sub(r"`+[^`]*`+", "", re.sub(r"```python\n.*?\n```", "", md, flags=re.S))
    for part in EVIL_PARTS:
        assert part not in prose, part
    assert "&lt;b&gt;x&lt;/b&gt;" in md
    # Pipes in names would split table cells.
    assert md_table_cells_consistent(md)


def md_table_cells_consistent(md: str) -> bool:
    widths: list[int] = []
    for line in md.splitlines():
        if line.startswith("|"):
            widths.append(len(re.findall(r"(?<!\\)\|", line)))
        elif widths:
            if len(set(widths)) != 1:
                return False
            widths = []
    return not widths or len(set(widths)) == 1


def test_text_report(record: RunRecord) -> None:
    text = render_text(RunView(record), make_analysis(), width=100)
    assert "input-bound: 31% of each step waits for data" in text
    for fid in ("input-bound", "gpu-idle-small-kernels", "tf32-off"):
        assert fid in text
    assert "Median step" in text and "52 ms" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "\x1b[" not in text  # no colour codes
    assert render_text(RunView(record), make_analysis(), width=100) == text
    narrow = render_text(RunView(make_record(evil="[bold]x[/bold]")), make_analysis(), width=60)
    assert "[bold]x[/bold]" in narrow  # record text is never read as rich markup
    assert max(len(line) for line in narrow.splitlines()) <= 60


def test_json_report(record: RunRecord) -> None:
    text = render_json(RunView(record), make_analysis())
    doc = json.loads(text)
    assert set(doc) == {
        "schema",
        "findings",
        "skipped",
        "verdict",
        "headline",
        "record",
        "ranks",
        "missing_ranks",
        "memory",
    }
    assert doc["ranks"] == [] and doc["missing_ranks"] == []  # a single-process run
    assert doc["memory"]["at_peak"] is None  # no memory categories in this record
    assert doc["schema"] == "torchdiag.findings/1"
    assert [f["id"] for f in doc["findings"]] == [
        "input-bound",
        "gpu-idle-small-kernels",
        "tf32-off",
    ]
    assert set(doc["findings"][0]) == {
        "id",
        "severity",
        "title",
        "evidence",
        "recommendation",
        "saving_pct_max",
        "saving_pct",
        "saving_pct_low",
        "alternative_to",
        "blocking",
        "snippet",
        "docs",
    }
    assert doc["skipped"] == [{"id": "nccl-imbalance", "reason": "single process run"}]
    assert doc["record"] == {
        "name": "resnet-demo",
        "source": "live",
        "status": {
            "state": "completed",
            "exception_type": None,
            "message": None,
            "out_of_memory": None,
        },
        "ended": True,
        "checkpoint_utc": None,
        "process": None,
        "end_note": "",
    }
    assert doc["headline"]["steps"] == 40
    assert doc["verdict"] == verdict(RunView(record), make_analysis())
    assert text == json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert render_json(RunView(decode_record(record.to_json())), make_analysis()) == text


def test_json_report_replaces_nan() -> None:
    f = Finding(
        id="x",
        severity="info",
        title="t",
        evidence={"v": float("nan")},
        recommendation="",
        saving_pct_max=float("inf"),
    )
    doc = json.loads(render_json(RunView(RunRecord()), Analysis(findings=[f], skipped=[])))
    assert doc["findings"][0]["evidence"]["v"] is None
    assert doc["findings"][0]["saving_pct_max"] is None


def test_merged_step_rows_are_drawn_as_wide_bars() -> None:
    steps = StepSeries(
        detection="optimizer",
        count=12,
        total_wall_s=0.6,
        total_input_wait_s=0.06,
        first_step=[0, 4, 8],
        steps=[4, 4, 4],
        start_s=[0.0, 0.2, 0.4],
        wall_ms=[50.0, 50.0, 50.0],
        input_wait_ms=[5.0, 5.0, 5.0],
        max_wall_ms=[90.0, 60.0, 55.0],
        profiled=[False, True, False],
    )
    page = render_html(RunView(RunRecord(steps=steps)), Analysis(findings=[], skipped=[]), cdn=True)
    fig = data_island(page)["figures"]["steps"]
    bars = fig["data"][0]
    assert bars["x"] == [1.5, 5.5, 9.5] and bars["width"] == [3.4, 3.4, 3.4]
    assert fig["data"][2]["name"] == "slowest step in row" and fig["data"][2]["y"][0] == 90.0
    (band,) = fig["layout"]["shapes"]
    assert (band["x0"], band["x1"]) == (3.5, 7.5)
    assert "rows merge up to 4 steps each" in page


# ---------------------------------------------------------------------------------------------
# Markdown for pull requests: HTML link, escaping of trace names, the size bound


def _with_ops(record: RunRecord, ops: list[OpStat], kernels: list[KernelStat]) -> RunRecord:
    summary = msgspec.structs.replace(record.profiler.summary, top_ops=ops, top_kernels=kernels)
    return msgspec.structs.replace(
        record, profiler=msgspec.structs.replace(record.profiler, summary=summary)
    )


def test_markdown_links_the_html_report(record: RunRecord) -> None:
    md = render_markdown(
        RunView(record), make_analysis(), html_url="https://ci.example.org/r/1 (a).html"
    )
    link = "[Full HTML report](https://ci.example.org/r/1%20%28a%29.html)"
    assert link in md
    assert md.index("**input-bound") < md.index(link) < md.index("## Findings")
    assert "Full HTML report" not in render_markdown(RunView(record), make_analysis())
    for bad in ("javascript:alert(1)", "data:text/html,x", "ci/report.html"):
        with pytest.raises(ValueError):
            render_markdown(RunView(record), make_analysis(), html_url=bad)


def test_cli_html_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from torchdiag.cli import main
    from torchdiag.record import save_record

    path = save_record(make_record(), tmp_path / "run.json")
    url = "https://ci.example.org/artifacts/report.html"
    assert main(["report", str(path), "--format", "md", "-o", "-", "--html-url", url]) == 0
    assert f"[Full HTML report]({url})" in capsys.readouterr().out
    assert main(["report", str(path), "--format", "md", "--html-url", "javascript:x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--html-url" in err


def test_markdown_breakdown_table_and_pie(record: RunRecord) -> None:
    md = render_markdown(RunView(record), make_analysis())
    # The breakdown sits under the findings table, before the (folded) details.
    assert md.index("## Findings") < md.index("## Step breakdown") < md.index("<details>")
    pie = re.search(r"```mermaid\npie showData\n(.*?)\n```", md, re.S)
    assert pie is not None and '"compute" : 30.000' in pie.group(1)
    assert "```mermaid" not in render_markdown(RunView(record), make_analysis(), pie=False)
    assert md.count("<details>") == md.count("</details>")


def test_markdown_escapes_pipes_backticks_and_brackets_in_trace_names(record: RunRecord) -> None:
    names = [
        "aten::a|b",
        "k`tick`|x",
        "ends with backslash \\",
        "backslash before pipe \\|y",
        "<img src=x onerror=alert(1)>",
        "``double``",
        "@octocat ping",
    ]
    ops = [OpStat(name=n, calls=1, total_ms=10.0 - i) for i, n in enumerate(names)]
    kernels = [KernelStat(name=n, total_ms=10.0 - i) for i, n in enumerate(names)]
    rec = _with_ops(msgspec.structs.replace(record, name="a|b `c` <i>@team</i>"), ops, kernels)
    analysis = make_analysis(evil="|`<b>x</b>`|")
    md = render_markdown(RunView(rec), analysis)
    assert md_cells_consistent(md)
    # Each name is one code span in the first cell of its row, whatever it holds.
    op_rows = [line for line in md.splitlines() if line.startswith("| `")]
    assert len(op_rows) >= 2 * len(names)
    assert "`` ``double`` ``" in md
    # No raw HTML outside code spans, and no live @mention anywhere in prose.
    prose = re.sub(r"(`+).*?\1", "", re.sub(r"```.*?```", "", md, flags=re.S))
    assert "<img" not in prose and "<i>" not in prose and "<b>" not in prose
    assert not re.search(r"@[A-Za-z]", prose)


def test_markdown_stays_under_the_limit_for_a_huge_record(record: RunRecord) -> None:
    long = "x|`<" * 2_000
    ops = [OpStat(name=f"op{i}{long}", calls=i, total_ms=float(i)) for i in range(20_000)]
    kernels = [KernelStat(name=f"k{i}{long}", total_ms=float(i)) for i in range(20_000)]
    rec = _with_ops(msgspec.structs.replace(record, name=long), ops, kernels)
    rec = msgspec.structs.replace(
        rec, status=RunStatus(state="failed", exception_type=long, message=long * 10)
    )
    findings = [
        Finding(
            id=f"rule-{i}{long}",
            severity="critical",
            title=long,
            evidence={f"k{j}{long}": long for j in range(20)},
            recommendation=long * 5,
            snippet=long,
            saving_pct_max=50.0,
        )
        for i in range(2_000)
    ]
    skipped = [Skipped(id=f"s{i}{long}", reason=long) for i in range(2_000)]
    md = render_markdown(
        RunView(rec),
        Analysis(findings=findings, skipped=skipped),
        html_url="https://x.org/" + "a" * 5000,
    )
    assert len(md) < MAX_CHARS < 65_536
    assert md_cells_consistent(md)
    for heading in ("## Findings (2,000)", "## Step breakdown", "## Top operators"):
        assert heading in md
    assert md.count("<details>") == md.count("</details>")
    assert md.count("```") % 2 == 0
