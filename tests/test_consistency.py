"""One quantity, one number: the cards, the findings' evidence, the breakdown, Markdown, text,
JSON and ``diff`` agree on every reference trace and on live captures of both samples.

Each output is read the way a person or a script reads it (the HTML's card texts, Markdown table
rows, the JSON document, the diff document), and the numbers are compared within the rounding of
the display (four significant digits).
"""

from __future__ import annotations

import functools
import json
import re

import pytest
from tracedata import h200_trace, h200_truth
from viewing import analyze_record

from torchdiag.analyze.registry import Analysis
from torchdiag.diff import diff_runs
from torchdiag.record import RunRecord, load_record
from torchdiag.report.json_report import findings_document
from torchdiag.report.markdown import render_markdown
from torchdiag.report.page_context import build_context
from torchdiag.report.text import render_text
from torchdiag.traces.load import record_from_traces
from torchdiag.view.run_view import RunView

TRACES = sorted(h200_truth())
SAMPLES = ["input_bound.py", "quickstart.py"]
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _first_number(text: str) -> float:
    match = NUMBER.search(text)
    assert match, f"no number in {text!r}"
    return float(match.group().replace(",", ""))


def _close(shown: float, value: float, *, pct: bool = False) -> bool:
    """``shown`` is ``value`` as displayed (about four significant digits; percentages with one
    decimal)."""
    return shown == pytest.approx(value, rel=5e-3, abs=0.051 if pct else 0.011)


@functools.cache
def _trace_record(name: str) -> RunRecord:
    return record_from_traces(h200_trace(name))


@pytest.fixture(params=[*(f"trace:{n}" for n in TRACES), *(f"live:{s}" for s in SAMPLES)])
def run(request, live_sample_record) -> tuple[RunRecord, Analysis]:
    kind, name = request.param.split(":", 1)
    record = _trace_record(name) if kind == "trace" else load_record(live_sample_record(name))
    return record, analyze_record(record)


def _md_rows(markdown: str) -> dict[str, str]:
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 2:
            rows[cells[0]] = cells[1]
    return rows


def test_outputs_agree(run) -> None:
    record, analysis = run
    doc = findings_document(RunView(record), analysis)
    numbers = doc["headline"]
    step = numbers["step_ms_estimate"]
    assert step is not None and step > 0
    low, high = numbers["step_ms_estimate_range"]
    assert low <= step <= high

    # HTML cards, Markdown rows and the text renderer show the same step, throughput, GPU busy
    # and input wait as the JSON headline.
    context, _ = build_context(RunView(record), analysis)
    cards = dict(context["headline"])
    md_rows = _md_rows(render_markdown(RunView(record), analysis))
    text = render_text(RunView(record), analysis, width=200)
    step_label = (
        "Step time"
        if numbers["step_time_measured"]
        else ("Step time (estimated without the profiler)")
    )
    for label, key in [
        (step_label, "step_ms_estimate"),
        ("Throughput", "samples_per_s"),
        ("GPU busy", "gpu_busy_pct"),
        ("Input wait", "input_wait_pct"),
    ]:
        value = numbers[key]
        if value is None:
            assert label not in cards and label not in md_rows
            continue
        pct = key.endswith("_pct")
        assert _close(_first_number(cards[label]), value, pct=pct), (label, cards[label], value)
        assert _close(_first_number(md_rows[label]), value, pct=pct), (label, md_rows[label])
        line = next(row for row in text.splitlines() if row.strip().startswith(label))
        shown = _first_number(line.strip()[len(label) :])
        assert _close(shown, value, pct=pct), (label, line, value)

    # Every finding's evidence uses the same step time and GPU busy share.
    for finding in doc["findings"]:
        evidence = finding["evidence"]
        if "step_ms" in evidence:
            assert evidence["step_ms"] == pytest.approx(step, abs=0.006), finding["id"]
        if "gpu_busy_pct" in evidence and numbers["gpu_busy_pct"] is not None:
            assert evidence["gpu_busy_pct"] == pytest.approx(numbers["gpu_busy_pct"], abs=0.06)
        if "input_wait_share_pct" in evidence:
            assert evidence["input_wait_share_pct"] == pytest.approx(
                numbers["input_wait_pct"], abs=0.06
            )
        # A finding's title number is its evidence's number.
        if finding["id"] == "dataloader-stall":
            assert _first_number(finding["title"]) == round(numbers["input_wait_pct"])
        low_s, mid_s, max_s = (
            finding.get("saving_pct_low"),
            finding.get("saving_pct"),
            finding["saving_pct_max"],
        )
        if mid_s is not None:
            assert low_s <= mid_s <= max_s

    # The breakdown is of the profiled steps: its parts add up to the profiled step.
    summary = record.profiler.summary if record.profiler else record.traces[0]
    if summary is not None and summary.steps and numbers["step_ms_profiled"] is not None:
        walls = [s.breakdown.wall for s in summary.steps if s.breakdown.wall > 0]
        if walls:
            assert sum(walls) / len(walls) == pytest.approx(numbers["step_ms_profiled"], rel=1e-3)

    # diff reads the same throughput; on a trace it compares the same step estimate.
    diff = diff_runs(
        RunView(record), RunView(record), base_analysis=analysis, head_analysis=analysis
    )
    if numbers["samples_per_s"] is not None:
        assert diff.base.samples_per_s == pytest.approx(numbers["samples_per_s"])
    if record.source == "trace":
        assert diff.base.median_step_ms == pytest.approx(step, abs=1e-3)
    assert diff.regression is False

    # JSON carries the figures the issue of one step view promised, named for what they are.
    json.dumps(doc, allow_nan=False)
    assert {"step_ms_profiled", "step_ms_estimate", "step_ms_estimate_range"} <= numbers.keys()


def test_nothing_measured_is_called_unmeasured(run) -> None:
    record, analysis = run
    context, _ = build_context(RunView(record), analysis)
    page_text = json.dumps(context)
    assert "not measured" not in page_text
    numbers = findings_document(RunView(record), analysis)["headline"]
    memory = context["memory"]
    if numbers["gpu_memory_peak_bytes"] is None:
        assert not record.samples or not any(g.memory_used_bytes for g in record.samples.gpus)
    else:
        assert "GPU memory peak" in dict(context["headline"])
    assert memory is not None
