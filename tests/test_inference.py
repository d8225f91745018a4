"""Inference runs: a step per call of the model when no optimizer steps, the run's mode, the
model's calls by autograd mode, latency percentiles, and the ``inference-mode`` rule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torchdiag
from torchdiag.analyze.inference import inference_mode
from torchdiag.analyze.registry import SkipRule, analyze
from torchdiag.capture.steps import StepTimer
from torchdiag.record import (
    Environment,
    ModelCalls,
    OpStat,
    OptimizerInfo,
    ProfilerWindow,
    RunRecord,
    StepSeries,
    TraceStep,
    TraceSummary,
    load_record,
)
from torchdiag.report.figures_detail import detail_figures
from torchdiag.report.verdict import headline_items
from torchdiag.traces.load import trace_mode
from torchdiag.view.run_view import RunView


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def _profile(tmp_path, **kwargs):
    return torchdiag.profile(output=tmp_path / "run.json", profile_steps=0, **kwargs)


# -- the step timer -------------------------------------------------------------------------------


def test_timer_folds_forward_steps_into_the_first_optimizer_step():
    clock = FakeClock()
    timer = StepTimer(clock=clock)
    clock.now += 0.010
    timer.boundary("forward", at=clock.now)
    timer.add_input_wait(0.001)
    clock.now += 0.020
    assert timer.series().detection == "forward" and timer.completed == 1
    timer.restart_detection()  # an optimizer step: the run trains after all
    clock.now += 0.005
    timer.boundary("optimizer")
    s = timer.series()
    assert (s.detection, s.count) == ("optimizer", 1)
    # The folded forward step's time belongs to the first update: from the run's start.
    assert s.wall_ms == [pytest.approx(35.0)]
    assert s.input_wait_ms == [pytest.approx(1.0)]


def test_a_boundary_confirmed_later_closes_the_step_where_it_was_marked():
    clock = FakeClock()
    timer = StepTimer(clock=clock)
    clock.now += 0.010
    marked = timer.now()
    clock.now += 0.004  # the next call begins: the boundary is confirmed now
    timer.boundary("forward", at=marked)
    clock.now += 0.010
    timer.boundary("forward")
    assert timer.series().wall_ms == [pytest.approx(10.0), pytest.approx(14.0)]


# -- live capture ---------------------------------------------------------------------------------


def test_an_inference_loop_has_a_step_per_call_of_the_model(tmp_path):
    model = _net()
    loss_fn = torch.nn.CrossEntropyLoss()  # no parameters: never the model
    with _profile(tmp_path) as run:
        for _ in range(7):
            out = model(torch.randn(4, 8))
            loss_fn(out, torch.zeros(4, dtype=torch.long))
    record = run.record
    assert (record.steps.detection, record.steps.count) == ("forward", 7)
    assert record.mode == "inference"
    calls = record.environment.model_calls
    assert calls is not None
    assert (calls.model, calls.grad, calls.no_grad, calls.inference_mode) == ("Sequential", 7, 0, 0)
    assert calls.backward == 0 and calls.parameter_bytes == 4 * (8 * 8 + 8 + 8 * 2 + 2)
    assert record.collectors["model"].available


def test_the_watch_is_undone_when_the_block_ends(tmp_path):
    model = _net()
    own_forward = model.forward
    call, backward, grad = torch.nn.Module.__call__, torch.autograd.backward, torch.autograd.grad
    with _profile(tmp_path):
        model(torch.randn(2, 8))
        assert "forward" in vars(model)  # only this instance pays for the watching
        assert torch.nn.Module.__call__ is call
    assert "forward" not in vars(model) and model.forward == own_forward
    assert torch.nn.Module.__call__ is call
    assert (torch.autograd.backward, torch.autograd.grad) == (backward, grad)


@pytest.mark.parametrize(
    ("mode", "field"),
    [(torch.no_grad, "no_grad"), (torch.inference_mode, "inference_mode")],
)
def test_calls_are_counted_by_autograd_mode(tmp_path, mode, field):
    model = _net()
    with _profile(tmp_path) as run, mode():
        for _ in range(3):
            model(torch.randn(2, 8))
    calls = run.record.environment.model_calls
    assert getattr(calls, field) == 3 and calls.grad == 0
    assert run.record.steps.count == 3


def test_a_training_run_keeps_its_optimizer_steps(tmp_path):
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with _profile(tmp_path) as run:
        for _ in range(4):
            model(torch.randn(4, 8)).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
    record = run.record
    assert (record.steps.detection, record.steps.count, record.mode) == ("optimizer", 4, "training")
    assert record.environment.model_calls.backward == 4
    assert record.environment.model_calls.grad == 4


def test_gradient_accumulation_switches_from_forward_to_optimizer_steps(tmp_path):
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with _profile(tmp_path) as run:
        for _ in range(3):
            for _ in range(2):  # the second forward confirms a forward step before the update
                model(torch.randn(4, 8)).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
    s = run.record.steps
    assert (s.detection, s.count) == ("optimizer", 3)
    # Folded: the first update's step starts where the run began, as without the forward steps.
    assert s.start_s[0] == 0.0


def test_a_backward_without_an_optimizer_is_training(tmp_path):
    model = _net()
    with _profile(tmp_path) as run:
        for _ in range(3):
            model(torch.randn(4, 8)).sum().backward()
    assert run.record.mode == "training"
    assert run.record.steps.detection == "forward"  # no optimizer: steps are still the calls


def test_manual_steps_win_over_calls_of_the_model(tmp_path):
    model = _net()
    with _profile(tmp_path) as run:
        for _ in range(5):
            model(torch.randn(2, 8))
            model(torch.randn(2, 8))
            run.step()
    assert (run.record.steps.detection, run.record.steps.count) == ("manual", 5)


def test_max_steps_stops_an_inference_loop(tmp_path):
    model = _net()
    calls = 0
    with _profile(tmp_path, max_steps=4) as run:
        for _ in range(100):
            model(torch.randn(2, 8))
            calls += 1
    assert run.record.steps.count == 4
    assert run.record.status.state == "completed"
    assert calls == 4  # the fifth call is where the fourth step was confirmed


def test_the_profiler_window_advances_on_forward_steps(tmp_path):
    model = _net()
    with torchdiag.profile(output=tmp_path / "run.json", skip_first=2, profile_steps=3) as run:
        for _ in range(8):
            model(torch.randn(2, 8))
    window = run.record.profiler
    assert window is not None and window.steps == 3 and window.first_step == 2
    assert sum(run.record.steps.profiled) >= 3


# -- the record's mode for a trace ----------------------------------------------------------------


def test_a_trace_is_inference_only_without_backward_and_optimizer():
    forward = TraceSummary(top_ops=[OpStat(name="aten::linear", calls=10)])
    backward = TraceSummary(
        top_ops=[
            OpStat(name="aten::linear", calls=10),
            OpStat(name="autograd::engine::evaluate_function: AddmmBackward0", calls=10),
        ]
    )
    assert trace_mode([forward]) == "inference"
    assert trace_mode([forward, backward]) == "training"
    assert trace_mode([TraceSummary()]) == "training"  # no operators: nothing to tell by


def test_an_inference_trace_keeps_its_profiler_steps_as_steps():
    """A forward-only trace reads as inference, but its steps are ProfilerStep spans, not calls
    of the model: the key numbers say "step" and add the p99 latency."""
    from torchdiag.report.text import render_text
    from torchdiag.traces.load import record_from_traces

    trace = Path(__file__).resolve().parent / "data" / "external" / "dtu_mlops" / "trace.json"
    view = RunView(record_from_traces(trace))
    assert view.record.mode == "inference" and not view.headline["step_is_forward_call"]
    text = render_text(view, analyze(view))
    assert "p99 step" in text and "Median step" in text and "forward call" not in text


# -- the view -------------------------------------------------------------------------------------


def _steps(walls: list[float], profiled: list[bool] | None = None) -> StepSeries:
    n = len(walls)
    return StepSeries(
        detection="forward",
        count=n,
        total_wall_s=sum(walls) / 1e3,
        first_step=list(range(n)),
        steps=[1] * n,
        start_s=[0.0] * n,
        wall_ms=walls,
        input_wait_ms=[0.0] * n,
        max_wall_ms=walls,
        profiled=profiled or [False] * n,
    )


def test_latency_percentiles_of_an_inference_run_leave_the_warm_up_out():
    walls = [500.0] + [10.0] * 98 + [20.0]
    inference = RunView(RunRecord(mode="inference", steps=_steps(walls)))
    numbers = inference.headline
    assert numbers["mode"] == "inference"
    assert (numbers["median_step_ms"], numbers["p95_step_ms"]) == (10.0, 10.0)
    assert numbers["p99_step_ms"] == 20.0  # the warm-up call is not the tail latency
    assert inference.wall_stats is not None and inference.wall_stats.p99 == 20.0
    training = RunView(RunRecord(steps=_steps(walls))).headline
    assert training["mode"] == "training"
    assert training["p99_step_ms"] == 20.0 and training["median_step_ms"] == 10.0


def test_latency_percentiles_leave_profiled_calls_out():
    walls = [100.0, 10.0, 11.0, 30.0, 30.0, 12.0]
    profiled = [False, False, False, True, True, False]
    numbers = RunView(RunRecord(mode="inference", steps=_steps(walls, profiled))).headline
    assert numbers["p99_step_ms"] == 12.0


def test_warm_up_calls_after_the_first_are_named_and_left_out():
    # A compiled model: the first calls compile and recompile, then 40 steady calls with jitter
    # and one late slow call (a real tail: it stays in).
    steady = [10.0 + 0.1 * (i % 5) for i in range(40)]
    walls = [900.0, 400.0, 150.0, *steady, 60.0]
    view = RunView(RunRecord(mode="inference", steps=_steps(walls)))
    numbers = view.headline
    assert numbers["warmup_steps"] == [0, 1, 2]
    assert view.steady.steps == 41 and view.steady.excluded.startswith("warm-up steps 0–2")
    assert view.steady.mean_step_ms == pytest.approx((sum(steady) + 60.0) / 41)
    assert numbers["p99_step_ms"] > 11.0  # the late slow call is tail latency, not warm-up
    assert ("Warm-up (left out of the steady figures)", "calls 0–2") in headline_items(numbers)
    assert view.sample.n == 41
    # The warm-up is named apart, not counted again as step variance: only the late call is.
    variance = {f.id: f for f in analyze(view).findings}["step-variance"]
    assert variance.evidence["first_outliers"] == "43" and variance.evidence["steps"] == 41
    chart = detail_figures(view)["step_distribution"]
    marked = {note["text"] for note in chart["layout"]["annotations"]}
    assert {"p50", "p95", "p99"} <= marked


def test_a_steady_run_names_no_warm_up_but_its_first_step():
    walls = [50.0] + [10.0 + 0.1 * (i % 7) for i in range(30)]
    view = RunView(RunRecord(mode="inference", steps=_steps(walls)))
    assert view.headline["warmup_steps"] == [0]
    assert view.steady.steps == 30
    assert all(
        label != "Warm-up (left out of the steady figures)"
        for label, _ in headline_items(view.headline)
    )


# -- the rule on constructed records --------------------------------------------------------------


def _inference_record(calls: ModelCalls, **environment) -> RunRecord:
    summary = TraceSummary(
        steps=[TraceStep(number=n, start_us=n * 10_000.0, duration_ms=10.0) for n in range(3)],
        host_events=3 * 200,
    )
    return RunRecord(
        mode="inference",
        steps=_steps([10.0] * 20),
        environment=Environment(model_calls=calls, **environment),
        profiler=ProfilerWindow(first_step=5, steps=3, summary=summary),
    )


def test_the_rule_bounds_autograd_bookkeeping_by_operators_per_step():
    view = RunView(_inference_record(ModelCalls(model="Net", grad=60)))
    finding = inference_mode(view)
    assert finding is not None and finding.id == "inference-mode"
    assert finding.evidence["calls_with_grad"] == 60
    assert finding.evidence["ops_per_step"] == 200.0
    # 200 operators x 5 us of bookkeeping against a 10 ms step: at most 10%.
    assert finding.saving_pct_max == pytest.approx(10.0)
    assert finding.severity == "warning"
    assert "torch.inference_mode()" in finding.snippet


def test_the_rule_counts_only_calls_made_with_grad():
    finding = inference_mode(
        RunView(_inference_record(ModelCalls(model="Net", grad=15, no_grad=45)))
    )
    assert finding is not None and finding.saving_pct_max == pytest.approx(2.5)
    assert finding.severity == "info"


@pytest.mark.parametrize(
    ("calls", "environment"),
    [
        (ModelCalls(model="Net", inference_mode=60), {}),
        (ModelCalls(model="Net", no_grad=60), {}),
        (ModelCalls(model="Net", grad=60, backward=60), {}),
        (ModelCalls(model="Net", grad=60), {"optimizers": [OptimizerInfo(class_name="SGD")]}),
    ],
)
def test_the_rule_is_silent_where_graphs_are_used_or_never_recorded(calls, environment):
    assert inference_mode(RunView(_inference_record(calls, **environment))) is None


def test_the_rule_is_skipped_without_watched_calls():
    with pytest.raises(SkipRule):
        inference_mode(RunView(RunRecord(mode="inference", steps=_steps([10.0] * 5))))
    inference = RunView(RunRecord(mode="inference", steps=_steps([10.0] * 5)))
    assert "inference-mode" in {s.id for s in analyze(inference).skipped}
    # A training record (every trace of a training run) has nothing to skip: the rule is silent.
    training = analyze(RunView(RunRecord(steps=_steps([10.0] * 5))))
    assert "inference-mode" not in {s.id for s in training.skipped}
    assert "inference-mode" not in {f.id for f in training.findings}


def test_without_a_profiler_window_the_finding_promises_no_saving():
    record = RunRecord(
        mode="inference",
        steps=_steps([10.0] * 20),
        environment=Environment(model_calls=ModelCalls(model="Net", grad=20)),
    )
    finding = inference_mode(RunView(record))
    assert finding is not None and finding.saving_pct_max == 0.0 and finding.severity == "info"


# -- `torchdiag run` on the samples, unmodified ---------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def _run_and_report(tmp_path: Path, script: str, *script_args: str) -> tuple[RunRecord, dict]:
    out = tmp_path / "out"
    options = ["--output", str(out / "run.json"), "--skip-first", "1", "--profile-steps", "2"]
    run = [sys.executable, "-m", "torchdiag", "run", *options, "--no-report"]
    proc = subprocess.run(
        [*run, str(ROOT / "samples" / script), *script_args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = [sys.executable, "-m", "torchdiag", "report", str(out / "run.json")]
    proc = subprocess.run(
        [*report, "--format", "json", "-o", "-"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return load_record(out / "run.json"), json.loads(proc.stdout)


def test_torchdiag_run_reports_an_inference_loop_call_by_call(tmp_path):
    record, doc = _run_and_report(tmp_path, "inference.py", "--steps", "20")
    assert (record.steps.detection, record.steps.count) == ("forward", 20)
    numbers = doc["headline"]
    assert numbers["mode"] == "inference" and numbers["steps"] == 20
    assert numbers["step_is_forward_call"]
    for key in ("median_step_ms", "p95_step_ms", "p99_step_ms", "samples_per_s"):
        assert numbers[key] > 0, key
    assert numbers["median_step_ms"] <= numbers["p95_step_ms"] <= numbers["p99_step_ms"]
    assert numbers["batch_size"] == 16
    finding = next(f for f in doc["findings"] if f["id"] == "inference-mode")
    assert finding["evidence"]["calls_with_grad"] == 20
    assert finding["evidence"]["backward_calls"] == 0


def test_the_inference_mode_twin_raises_no_such_finding(tmp_path):
    record, doc = _run_and_report(tmp_path, "inference.py", "--steps", "20", "--inference-mode")
    assert record.environment.model_calls.inference_mode == 20
    assert doc["headline"]["mode"] == "inference"
    assert "inference-mode" not in {f["id"] for f in doc["findings"]}


def test_torchdiag_run_of_a_training_sample_keeps_optimizer_steps(tmp_path):
    args = ["--steps", "3", "--batch-size", "4", "--image-size", "32", "--workers", "0"]
    record, doc = _run_and_report(tmp_path, "quickstart.py", *args)
    assert (record.steps.detection, record.steps.count) == ("optimizer", 3)
    assert record.mode == "training" and doc["headline"]["mode"] == "training"
    assert record.profiler is not None and record.profiler.steps == 2
    assert "inference-mode" not in {f["id"] for f in doc["findings"]}
