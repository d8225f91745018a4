"""ProfilerStep spans whose duration cannot be true are skipped and named, never reported."""

from __future__ import annotations

import json
from pathlib import Path

from tracedata import small_trace

from torchdiag.traces.load import record_from_traces
from torchdiag.view.run_view import RunView


def _with_step_durations(tmp_path: Path, durations: dict[int, float]) -> Path:
    """A 4-step hand-made trace whose ``ProfilerStep#N`` spans last ``durations[N]`` µs."""
    path = small_trace(tmp_path)
    doc = json.loads(path.read_text())
    for ev in doc["traceEvents"]:
        number = ev["name"].removeprefix("ProfilerStep#")
        if number != ev["name"] and int(number) in durations:
            ev["dur"] = durations[int(number)]
    path.write_text(json.dumps(doc))
    return path


def test_a_negative_step_is_skipped_and_named(tmp_path: Path) -> None:
    record = record_from_traces(_with_step_durations(tmp_path, {2: -1000.0}))
    summary = record.traces[0]
    assert [s.number for s in summary.steps] == [0, 1, 3]
    assert all(s.duration_ms > 0 for s in summary.steps)
    assert len(summary.skipped_steps) == 1 and "ProfilerStep#2" in summary.skipped_steps[0]
    assert any("impossible duration skipped" in n for n in summary.notes)
    assert RunView(record).headline["median_step_ms"] == 0.9


def test_a_trace_with_no_possible_step_is_rejected(tmp_path: Path, run_cli) -> None:
    path = _with_step_durations(tmp_path, dict.fromkeys(range(4), -1000.0))
    code, out, err = run_cli("report", str(path), "--format", "text", "--no-progress")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no ProfilerStep span with a possible duration" in err


def test_a_negative_step_in_the_cli_report_exits_0_with_positive_steps(
    tmp_path: Path, run_cli
) -> None:
    path = _with_step_durations(tmp_path, {1: -1000.0})
    code, out, err = run_cli("report", str(path), "--format", "json", "--no-progress")
    assert code == 0, err
    assert json.loads(out)["headline"]["median_step_ms"] == 0.9


def test_an_absurdly_long_step_is_skipped(tmp_path: Path) -> None:
    # As a run record refuses a duration above MAX_DURATION_MS, the trace reader skips it.
    summary = record_from_traces(_with_step_durations(tmp_path, {0: 2.0**63})).traces[0]
    assert [s.number for s in summary.steps] == [1, 2, 3]
    assert "ProfilerStep#0" in summary.skipped_steps[0] and "days" in summary.skipped_steps[0]
