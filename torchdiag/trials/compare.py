"""A fix measured: the baseline's runs against the runs with the fix, as ``torchdiag diff`` compares
two runs, plus memory and the loss.

The speedup is the baseline's step time over the fix's, with the interval of ``torchdiag diff``'s
ratio (inverted): both come from :func:`torchdiag.diff.diff_run_sets`, so ``try`` and ``diff``
never disagree about the same runs. With several runs a side the interval is over runs (how much
runs of the same code differ is part of it); with one run a side it is over that run's steps. A
fix that changes the batch size is compared per sample. A run without losses (inference) is
judged on its model outputs (:mod:`torchdiag.trials.outputs`), its step time being the latency
of one call.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import msgspec

from torchdiag.analyze.finding import Finding
from torchdiag.capture.fixes import kind_of, parse_fix
from torchdiag.diff import NO_CHANGE, diff_run_sets
from torchdiag.record import AppliedFix, MeasuredFix, RunRecord
from torchdiag.trials.estimates import pair_estimates
from torchdiag.trials.outputs import compare_outputs
from torchdiag.view.run_view import RunView
from torchdiag.view.step_sample import sample_median

TRY_SCHEMA = "torchdiag.try/1"
# The loss "stayed close" when the mean of the last half of the losses moved by less than this
# many standard errors of that difference, or less than this share of the baseline's loss:
# unseeded runs start from different weights and draw different batches, so losses of two sound
# runs differ by about their step-to-step noise, and a few percent in level.
LOSS_STANDARD_ERRORS = 3.0
LOSS_RELATIVE_SLACK = 0.05


class Baseline(msgspec.Struct, kw_only=True):
    """The baseline's figures in a ``torchdiag try`` result."""

    step_ms: float | None
    memory_peak_bytes: int | None
    memory_of: str
    findings: list[str]
    runs: int
    records: list[str]


class TryResult(msgspec.Struct, kw_only=True):
    """What ``torchdiag try --format json`` prints (schema ``torchdiag.try/1``)."""

    schema: str = TRY_SCHEMA
    script: str
    steps: int
    baseline: Baseline
    fixes: list[MeasuredFix]


def baseline_step_ms(baselines: Sequence[RunView]) -> float | None:
    """The baseline's step time: the median over its runs of each run's median steady step."""
    medians = [m for m in (sample_median(v.sample) for v in baselines) if m is not None]
    return statistics.median(medians) if medians else None


def measure_fix(
    spec: str,
    baselines: Sequence[RunView],
    runs: Sequence[RunView],
    *,
    records: Sequence[str] = (),
    findings: Sequence[Finding] = (),
) -> MeasuredFix:
    """The fix ``spec`` (a valid spelling) measured from its ``runs`` against the ``baselines``
    (views of their records).

    What the fix's kind says decides how: a fix that multiplies the batch is compared per sample,
    and one whose first step holds a one-off cost (compilation) has that cost reported apart.
    ``findings`` (the baseline's) that the fix answers are paired with the saving it measured.
    """
    measured = _measure(spec, baselines, runs, records)
    measured.estimates = pair_estimates(measured, findings)
    return measured


def _measure(
    spec: str, baselines: Sequence[RunView], runs: Sequence[RunView], records: Sequence[str]
) -> MeasuredFix:
    if not runs or not baselines:
        return MeasuredFix(fix=spec, applicable=False, detail="not run", records=list(records))
    run = next((v.record for v in runs if v.record.status.state == "failed"), runs[0].record)
    applied = _applied(spec, run)
    if run.status.state == "failed":
        error = f"{run.status.exception_type}: {run.status.message or ''}".strip(": ")
        return MeasuredFix(
            fix=spec,
            applicable=applied is not None and applied.applied,
            detail=applied.detail if applied else "",
            error=error,
            runs=len(runs),
            records=list(records),
        )
    if applied is None or not applied.applied:
        detail = applied.detail if applied else "the run does not say whether the fix applied"
        return MeasuredFix(
            fix=spec, applicable=False, detail=detail, runs=len(runs), records=list(records)
        )
    baseline = baselines[0].record
    diff = diff_run_sets(baselines, runs)
    factor = parse_fix(spec).batch_factor
    kind = kind_of(spec)
    speedup = ci95 = None
    ratio, low, high = diff.interval.ratio, diff.interval.low, diff.interval.high
    if ratio and low and high:
        # ratio is the fix's step time over the baseline's; per sample, a K times bigger batch
        # does K times the work in its step.
        speedup = factor / ratio
        ci95 = [factor / high, factor / low]
    numerics_ok, numerics = compare_numerics(spec, baseline, run)
    memory = max((v.run_memory_peak[0] or 0 for v in runs), default=0) or None
    base_memory = max((v.run_memory_peak[0] or 0 for v in baselines), default=0) or None
    window = runs[0].memory_breakdown
    base_window = baselines[0].memory_breakdown
    predicted = None
    if factor != 1 and base_window.batch_size:
        predicted = base_window.predicted_peak(base_window.batch_size * factor)
    return MeasuredFix(
        fix=spec,
        applicable=True,
        detail=applied.detail,
        step_ms=diff.head.median_step_ms,
        baseline_step_ms=diff.base.median_step_ms,
        speedup=speedup,
        ci95=ci95,
        significant=ci95 is not None and diff.verdict != NO_CHANGE,
        per_sample=factor != 1,
        memory_peak_bytes=memory,
        baseline_memory_peak_bytes=base_memory,
        memory_at_peak=dict(window.at_peak) if window.at_peak is not None else None,
        window_peak_bytes=window.peak_bytes,
        predicted_window_peak_bytes=predicted,
        numerics_ok=numerics_ok,
        numerics=numerics,
        compile_s=(
            _first_step_excess_s(baseline, run)
            if kind is not None and kind.first_step_one_off_cost
            else None
        ),
        inference=baseline.mode == "inference",
        runs=len(runs),
        records=list(records),
    )


def compare_numerics(spec: str, baseline: RunRecord, run: RunRecord) -> tuple[bool | None, str]:
    """The losses compared where the runs have any; on a run without (inference) the model's
    outputs, when the baseline recorded them."""
    if baseline.losses or run.losses or not baseline.outputs:
        return compare_losses(spec, baseline.losses, run.losses)
    kind = kind_of(spec)
    if kind is not None and kind.loss_note is not None:  # other inputs: other outputs
        return None, kind.loss_note
    return compare_outputs(baseline.outputs, run.outputs)


def compare_losses(
    spec: str, baseline: Sequence[float | None], fixed: Sequence[float | None]
) -> tuple[bool | None, str]:
    """Whether the run with the fix kept the baseline's numerics, and how that was judged."""
    kind = kind_of(spec)
    if kind is not None and kind.loss_note is not None:  # it sees other data than the baseline
        return None, kind.loss_note
    if not fixed:
        return None, "no loss seen (backward() was not called on a scalar)"
    if any(v is None for v in fixed):
        return False, "the loss became NaN or infinite"
    if not baseline or any(v is None for v in baseline):
        return None, "the baseline's loss is not usable for a comparison"
    n = min(len(baseline), len(fixed))
    if n < 4:
        return None, f"too few losses to compare ({n})"
    half = n // 2
    base = [float(v) for v in baseline[n - half : n] if v is not None]
    head = [float(v) for v in fixed[n - half : n] if v is not None]
    base_mean, head_mean = statistics.fmean(base), statistics.fmean(head)
    error = math.sqrt(statistics.variance(base) / len(base) + statistics.variance(head) / len(head))
    allowed = max(LOSS_STANDARD_ERRORS * error, LOSS_RELATIVE_SLACK * abs(base_mean))
    moved = head_mean - base_mean
    where = f"mean loss of the last {half} steps {base_mean:.4g} -> {head_mean:.4g}"
    if abs(moved) <= allowed:
        return True, f"{where} (within {allowed:.2g})"
    return False, f"{where}: moved by {moved:+.3g}, more than {allowed:.2g}"


def _applied(spec: str, run: RunRecord) -> AppliedFix | None:
    return next((f for f in run.fixes if f.fix == spec), None)


def _first_step_excess_s(baseline: RunRecord, run: RunRecord) -> float | None:
    """How much longer the fix's first step took (a compilation's cost), in seconds."""
    first = [_first_step_ms(r) for r in (baseline, run)]
    if first[0] is None or first[1] is None:
        return None
    return max(0.0, first[1] - first[0]) / 1000


def _first_step_ms(record: RunRecord) -> float | None:
    steps = record.steps
    for i, first in enumerate(steps.first_step):
        if first == 0 and steps.steps[i] == 1:
            return steps.wall_ms[i]
    return None
