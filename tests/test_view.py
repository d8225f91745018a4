"""One view of a run: every derived figure is computed once per record, by construction.

Every output of ``torchdiag report`` (HTML, Markdown, JSON, text) and ``diff`` is rendered from
one :class:`RunView`; the derivations behind it are counted, and each runs at most once. No
module outside the view calls them: the static check below keeps it so.
"""

from __future__ import annotations

import ast
import functools
from collections import Counter
from pathlib import Path

import pytest
from tracedata import h200_trace

from torchdiag.analyze.registry import Analysis, analyze
from torchdiag.diff import diff_runs
from torchdiag.record import RunRecord
from torchdiag.report.formats import FORMATS
from torchdiag.report.renderer import RenderOptions
from torchdiag.traces.load import record_from_traces
from torchdiag.view import (
    counters,
    headline,
    memory,
    memory_breakdown,
    progress,
    ranks,
    run_end,
    samples,
    steady,
    step_model,
    step_rows,
    step_sample,
)
from torchdiag.view.run_view import RunView

PACKAGE = Path(__file__).resolve().parent.parent / "torchdiag"
# The derivations a RunView caches: (module, function name).
DERIVATIONS = [
    (step_model, "primary_summary"),
    (step_model, "step_time"),
    (step_model, "batch_size"),
    (step_model, "device_capability"),
    (step_model, "device_memory_bytes"),
    (headline, "headline"),
    (counters, "run_counters"),
    (memory, "memory_peaks"),
    (memory, "run_memory_peak"),
    (memory_breakdown, "memory_breakdown"),
    (ranks, "rank_figures"),
    (run_end, "run_end"),
    (step_rows, "step_rows"),
    (step_rows, "wall_stats"),
    (step_rows, "percentile_rows"),
    (step_rows, "step_quantiles"),
    (step_rows, "profiled_step_range"),
    (step_sample, "step_sample"),
    (steady, "steady_rows"),
    (steady, "steady_steps"),
    (samples, "mean_gpu_busy_share"),
    (samples, "mean_gpm_tensor_pct"),
    (samples, "gpu_use"),
    (samples, "host_cpu"),
    (progress, "run_progress"),
]


@functools.cache
def _trace_record(name: str) -> RunRecord:
    return record_from_traces(h200_trace(name))


@pytest.fixture(params=["transformer_sync_each_step", "dataloader_stall_w0"])
def trace_record(request: pytest.FixtureRequest) -> RunRecord:
    return _trace_record(request.param)


def _count_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    calls: Counter[str] = Counter()
    for module, name in DERIVATIONS:
        original = getattr(module, name)

        def counted(*args: object, _name: str = name, _fn=original, **kw: object) -> object:
            calls[_name] += 1
            return _fn(*args, **kw)

        monkeypatch.setattr(module, name, counted)
    return calls


def test_every_output_of_a_record_derives_each_figure_once(
    monkeypatch: pytest.MonkeyPatch, trace_record: RunRecord
) -> None:
    calls = _count_calls(monkeypatch)
    view = RunView(trace_record)
    analysis = analyze(view)
    for fmt in FORMATS:
        fmt.renderer().render(view, analysis, RenderOptions(cdn=True))
    diff_runs(view, view, base_analysis=analysis, head_analysis=analysis)
    assert calls, "the derivations were not reached: the counting is broken"
    assert {name: n for name, n in calls.items() if n > 1} == {}


def test_the_view_is_immutable() -> None:
    view = RunView(RunRecord(name="x"))
    with pytest.raises(AttributeError):
        view.record = RunRecord()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        view.timing = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        view.headline["steps"] = 3  # type: ignore[index]


def test_analysis_is_ranked_on_construction(trace_record: RunRecord) -> None:
    analysis = analyze(RunView(trace_record))
    again = Analysis(findings=list(reversed(analysis.findings)), skipped=analysis.skipped[::-1])
    assert [f.id for f in again.findings] == [f.id for f in analysis.findings]
    assert [s.id for s in again.skipped] == sorted(s.id for s in analysis.skipped)


def _calls_outside_the_view() -> list[str]:
    names = {name for _, name in DERIVATIONS}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent)
        if rel.parts[:2] == ("torchdiag", "view"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                fn = node.func
                called = fn.id if isinstance(fn, ast.Name) else getattr(fn, "attr", None)
                if called in names:
                    found.append(f"{rel}:{node.lineno} calls {called}()")
    return found


def test_only_the_view_derives_figures_from_a_record() -> None:
    """Rules, diff, try, integrations and renderers read the view's figures; a call to a
    derivation outside ``torchdiag/view/`` would compute a figure a second time."""
    assert _calls_outside_the_view() == []
