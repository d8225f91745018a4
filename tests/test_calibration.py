"""The step model against the truth, and the savings it promises against what fixes really saved.

Every H200 reference trace comes with its step time measured without the profiler
(tests/data/h200/summary.json). The model's un-profiled estimate from the profiled trace must
come within :data:`TOLERANCE` of it; the table of model against truth prints at the end of every
test run. Paired traces (the same model with and without the fix) show what AMP and a larger
batch really saved: the modelled saving's range must hold it.
"""

from __future__ import annotations

import functools
import math
import statistics

import pytest
from tracedata import h200_trace, h200_truth
from viewing import analyze_record

from torchdiag.analyze.host import batch_saving
from torchdiag.record import RunRecord
from torchdiag.traces.load import record_from_traces
from torchdiag.view.profiler_cost import (
    REFERENCE_RANGE_US,
    REFERENCE_US,
    ProfilerCost,
    profiler_cost,
)
from torchdiag.view.run_view import RunView
from torchdiag.view.step_model import COVERAGE, trace_step_time

TOLERANCE = 0.10
# name -> (real ms, estimate ms, low ms, high ms, bound, truth in range), the range with the
# reference cost fitted without the trace (leave-one-out): read by conftest's terminal summary.
CALIBRATION: dict[str, tuple[float, float, float, float, str, bool]] = {}

# The one reference run the model misses, and why (measured, not assumed): its profiled steps
# (92.4 ms) are faster than the same steps timed without the profiler (100.6 ms). Removing the
# profiler's cost can only lower the estimate: with none removed it is 94.2 ms (-6%), and staying
# within 10% would allow under 0.7 µs per recorded event, a quarter of the cost every other
# reference run implies. That capture timed its un-profiled steps beside a 100 ms sampler thread
# while the dataset's CPU work kept 13-15 of 16 cores busy (its samples.json), and its profiled
# steps without the sampler. Strict: should the model start passing it, the reason changed.
# Its range misses it too (62-82 ms against 100.6 ms): the range carries the errors of removing
# the profiler's cost and of the profiled steps' spread, and no honest one of them reaches above
# the profiled steps (92.4 ms, 89.6-96.9 ms each); the reference's own conditions differed.
KNOWN_OFF = {
    "dataloader_stall_w0": "un-profiled reference is slower than the profiled steps themselves",
}

SCENARIOS = sorted(h200_truth())


def _known_off(names: list[str]) -> list[object]:
    return [
        pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN_OFF[n], strict=True))
        if n in KNOWN_OFF
        else n
        for n in names
    ]


@functools.cache
def _record(name: str) -> RunRecord:
    return record_from_traces(h200_trace(name))


@pytest.mark.parametrize("name", _known_off(SCENARIOS))
def test_step_estimate_matches_unprofiled_step(name: str) -> None:
    real = h200_truth()[name]["step_ms_noprof"]
    timing = RunView(_record(name)).timing
    assert timing is not None and not timing.measured
    low, high = timing.range_ms
    assert low <= timing.step_ms <= high and low < high
    assert timing.coverage == COVERAGE
    assert timing.step_ms <= timing.profiled_ms * 1.5  # the window holds no extra step of work
    assert abs(timing.step_ms / real - 1) <= TOLERANCE, (
        f"{name}: estimate {timing.step_ms:.1f} ms against {real:.1f} ms measured"
    )


# The host-bound reference runs, whose un-profiled step times fix the profiler's cost per event.
FITTED = [
    "resnet_small_batch",
    "tiny_mlp_launch_bound",
    "transformer_amp",
    "transformer_sync_each_step",
]


def _estimate_at(name: str, cost_us: float) -> float:
    cost = ProfilerCost(us=cost_us, low_us=cost_us, high_us=cost_us, source="test", reading_us=None)
    return trace_step_time(RunView(_record(name)).summary, cost).step_ms


@functools.cache
def _implied_cost_us(name: str) -> float:
    """The cost per event at which the estimate meets the un-profiled step (bisection)."""
    real = h200_truth()[name]["step_ms_noprof"]
    low, high = 0.0, 20.0
    for _ in range(50):
        mid = (low + high) / 2
        low, high = (mid, high) if _estimate_at(name, mid) > real else (low, mid)
    return low


def test_reference_cost_is_what_the_runs_imply() -> None:
    implied = sorted(_implied_cost_us(n) for n in FITTED)
    assert REFERENCE_RANGE_US[0] <= implied[0] and implied[-1] <= REFERENCE_RANGE_US[1]
    assert pytest.approx((implied[1] + implied[2]) / 2, abs=0.05) == REFERENCE_US


@pytest.mark.parametrize("name", FITTED)
def test_reference_cost_left_out_still_calibrates(name: str) -> None:
    """Fitted on the other three runs, the cost still estimates this one within the tolerance:
    the reference is not tuned to each trace it is checked on."""
    others = sorted(_implied_cost_us(n) for n in FITTED if n != name)
    estimate = _estimate_at(name, others[1])
    real = h200_truth()[name]["step_ms_noprof"]
    assert abs(estimate / real - 1) <= TOLERANCE


def _fit(names: list[str]) -> tuple[float, tuple[float, float]]:
    """The reference cost as the module fits it from these runs: their implied costs' median,
    and their range rounded outward to 0.1 µs."""
    implied = sorted(_implied_cost_us(n) for n in names)
    low, high = math.floor(implied[0] * 10) / 10, math.ceil(implied[-1] * 10) / 10
    return statistics.median(implied), (low, high)


def test_reference_cost_is_the_fit() -> None:
    us, (low, high) = _fit(FITTED)
    assert us == pytest.approx(REFERENCE_US, abs=0.05)
    assert (low, high) == pytest.approx(REFERENCE_RANGE_US)


@pytest.mark.parametrize("name", _known_off(SCENARIOS))
def test_range_left_out_holds_the_unprofiled_step(name: str) -> None:
    """With the reference cost fitted without this trace (the only constant fitted to the
    reference runs: every other error source is read off the trace), the stated range holds the
    un-profiled step, and never has zero width."""
    real = h200_truth()[name]["step_ms_noprof"]
    summary = RunView(_record(name)).summary
    assert summary is not None
    us, span = _fit([n for n in FITTED if n != name])
    timing = trace_step_time(summary, profiler_cost(summary.profiler_event_us, us, span))
    assert timing is not None
    low, high = timing.range_ms
    CALIBRATION[name] = (real, timing.step_ms, low, high, timing.bound or "-", low <= real <= high)
    assert high - low >= 0.005 * timing.step_ms, f"{name}: range {low:.2f}–{high:.2f}"
    assert low <= real <= high, f"{name}: {real:.2f} ms measured, range {low:.2f}–{high:.2f} ms"
    assert abs(timing.step_ms / real - 1) <= TOLERANCE


def test_every_reference_scenario_has_a_trace() -> None:
    assert len(SCENARIOS) == 8
    assert all(h200_trace(n).is_file() for n in SCENARIOS)


def _real_saving(slow: str, fast: str, per_sample: tuple[int, int] = (1, 1)) -> float:
    """Percent of the time (per sample, with batches ``per_sample``) that ``fast`` saved."""
    truth = h200_truth()
    slow_ms = truth[slow]["step_ms_noprof"] / per_sample[0]
    fast_ms = truth[fast]["step_ms_noprof"] / per_sample[1]
    return 100.0 * (1.0 - fast_ms / slow_ms)


@pytest.mark.parametrize(
    ("fp32", "amp"),
    [("resnet_fp32", "healthy_resnet_amp"), ("transformer_fp32", "transformer_amp")],
)
def test_amp_saving_range_holds_the_real_saving(fp32: str, amp: str) -> None:
    real = _real_saving(fp32, amp)
    findings = {f.id: f for f in analyze_record(_record(fp32)).findings}
    no_amp = findings["no-amp"]
    assert no_amp.saving_pct_low <= real <= no_amp.saving_pct_max, (
        f"{fp32}: AMP really saved {real:.1f}%, stated "
        f"{no_amp.saving_pct_low}–{no_amp.saving_pct_max}%"
    )
    assert no_amp.saving_pct_max < 100
    # TF32 claims the same matrix math: an alternative, not a second critical saving.
    tf32 = findings.get("tf32-disabled")
    if tf32 is not None:
        assert tf32.alternative_to == "no-amp" and tf32.severity == "info"


def test_batch_saving_range_holds_the_real_saving() -> None:
    # resnet18 with bf16 and channels_last at batch 4 and at batch 256: per sample.
    real = _real_saving("resnet_small_batch", "healthy_resnet_amp", per_sample=(4, 256))
    record = _record("resnet_small_batch")
    small = next(f for f in analyze_record(record).findings if f.id == "small-batch")
    utilisation = small.evidence["useful_gpu_pct"] / 100
    low, _, high = batch_saving(RunView(record).timing, utilisation, 256 // 4)
    assert low <= real <= high, (
        f"batch x64 really saved {real:.1f}%, modelled {low:.1f}–{high:.1f}%"
    )
    # The finding states its own, smaller step (within the memory headroom).
    assert small.evidence["suggested_batch"] in (8, 12, 16)
    assert small.saving_pct_low <= small.saving_pct <= small.saving_pct_max < 100
