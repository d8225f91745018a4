"""Compare runs (BASE and HEAD): did HEAD get slower, and where did the time go?

Step times are noisy (data-loader hiccups, clock changes, other tenants), so "HEAD's median is 3%
above BASE's" says little on its own. The comparison puts a confidence interval on the HEAD/BASE
ratio of step times and only calls a change when the whole interval lies on one side of 1.0. CI
gating (:func:`is_regression`) asks more: a slowdown shown with confidence, and beyond
``threshold``, so a slowdown that is real but smaller than the threshold, or one the noise cannot
confirm, does not fail a build.

Two kinds of noise matter, and only repeated runs show the second. Steps inside one run vary;
whole runs of the same code vary too (on a shared 2-core machine, pairs of identical runs
differed by a median of 10%: docs/pull-requests.md), by more than the steps of one run suggest.
So:

- several runs a side (:func:`diff_run_sets`): each run counts once, by its own step time (its
  steady-state median, or a trace's un-profiled estimate), and the interval is a t-interval over
  runs on the log of those times (:mod:`torchdiag.view.student_t`): its width follows the spread
  between runs, with the critical value right for a few runs;
- one run a side (:func:`diff_runs`): the interval is a bootstrap over that run's steps, which
  says nothing of between-run variation, and the output says so.

Why the median inside a run: one slow outlier step (a checkpoint, a GC pause) moves the mean, not
the median. Why a bootstrap over steps: step times are skewed and often multi-modal, so no
normal-theory interval fits; the bootstrap needs no shape assumption. How it is drawn: see
:func:`bootstrap_medians`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import msgspec

from torchdiag.analyze.finding import SEVERITY_ORDER
from torchdiag.analyze.registry import Analysis, analyze
from torchdiag.diff.counters import (
    CounterChange,
    CounterGate,
    CounterRule,
    counter_changes,
    disagreeing_runs,
    judge,
)
from torchdiag.record import BreakdownMs, TraceSummary
from torchdiag.traces.launches import quantile
from torchdiag.view.numbers import finite, to_jsonable
from torchdiag.view.run_view import RunView
from torchdiag.view.step_model import gpu_work_steps
from torchdiag.view.step_sample import StepSample, bootstrap_medians, sample_median
from torchdiag.view.student_t import geometric_mean, run_ratio_interval

DIFF_SCHEMA = "torchdiag.diff/1"
DEFAULT_THRESHOLD_PCT = 5.0
CONFIDENCE = 0.95
RESAMPLES = 4000
# Fixed, so the same two inputs always give the same interval, verdict and exit status.
SEED = 20_240_611
# With fewer steady steps than this on either side, no interval is reported: a bootstrap of one
# or two values is the values themselves, and would call any difference "significant".
MIN_STEPS = 3
TOP_DELTAS = 10
# Floating-point slack when comparing a bound to the threshold, so 105/100 against 5% is "equal".
_EPS = 1e-9

Verdict = str  # "slower" | "faster" | "no significant change"
SLOWER, FASTER, NO_CHANGE = "slower", "faster", "no significant change"


# ---------------------------------------------------------------------------------------------
# The diff document


class RunStep(msgspec.Struct, kw_only=True):
    """One run of a side: what it is called and the step time it is counted by."""

    label: str
    # The run's steady-state median step, or a trace's un-profiled estimate (``estimated``).
    step_ms: float | None
    steps: int
    estimated: bool = False


class Side(msgspec.Struct, kw_only=True):
    """One side's headline numbers in the comparison (one run, or several)."""

    name: str
    source: str
    steps: int
    steps_excluded: str
    # One run: the steady-state median of a live run, or the un-profiled estimate of a profiled
    # trace with its range (``estimated``), which is what a trace is compared on. Several runs:
    # the geometric mean of the runs' step times (``runs``), the centre of the t-interval.
    median_step_ms: float | None
    batch_size: int | None
    # One run: the report's throughput; several: the geometric mean of the runs' throughputs.
    samples_per_s: float | None
    # Tokens model.generate() produced per second, as samples_per_s (None where none counted).
    tokens_per_s: float | None = None
    estimated: bool = False
    step_ms_range: list[float] | None = None
    runs: list[RunStep] = msgspec.field(default_factory=list)
    # Whether a step is one call of the model (a live inference loop; headline's
    # ``step_is_forward_call``): the rendered diff then speaks of calls and their latency.
    step_is_forward_call: bool = False


class RatioInterval(msgspec.Struct, kw_only=True):
    """HEAD/BASE ratio of step times with its interval (``method`` says which kind)."""

    ratio: float | None
    low: float | None
    high: float | None
    confidence: float = CONFIDENCE
    resamples: int = RESAMPLES
    seed: int = SEED
    method: str = "percentile bootstrap of the ratio of medians over steady-state step times"
    # A t-interval over runs: its degrees of freedom (None for the other methods).
    df: float | None = None


MODEL_METHOD = (
    "range of the un-profiled step estimates (a profiled trace has no un-profiled steps to "
    "resample): HEAD's low over BASE's high to HEAD's high over BASE's low"
)
RUNS_METHOD = {
    "pooled": "Student t-interval (pooled, as many runs a side) over runs on the log of each "
    "run's step time (ratio of geometric means)",
    "welch": "Welch t-interval over runs on the log of each run's step time (ratio of geometric "
    "means)",
}
RUNS_ONE_SIDED_METHOD = (
    "t-interval over runs on the log of each run's step time (ratio of geometric means); the "
    "spread between runs from the side with several runs, assumed to hold for both"
)
ONE_RUN_NOTE = (
    "one run a side: the interval covers the variation between the steps of each run, not "
    "between runs (identical runs can differ by several percent on a loaded machine); repeat "
    "each side (--base A1 A2 A3 --head B1 B2 B3) to account for it"
)


class PartShift(msgspec.Struct, kw_only=True):
    """Mean milliseconds per step of one breakdown part, BASE vs HEAD."""

    part: str
    base_ms: float
    head_ms: float
    delta_ms: float


class FindingRef(msgspec.Struct, kw_only=True):
    """A finding id with its severity (HEAD's, BASE's or both) and title."""

    id: str
    severity: str
    title: str
    base_severity: str | None = None


class NameDelta(msgspec.Struct, kw_only=True):
    """An operator's or kernel's total milliseconds per step, BASE vs HEAD."""

    name: str
    base_ms: float
    head_ms: float
    delta_ms: float


class FindingChanges(msgspec.Struct, kw_only=True):
    """Findings that appeared, went away, or stayed (with both severities)."""

    new: list[FindingRef]
    resolved: list[FindingRef]
    persisting: list[FindingRef]


class RunDiff(msgspec.Struct, kw_only=True):
    """Everything ``torchdiag diff`` reports (the ``torchdiag.diff/1`` document)."""

    schema: str = DIFF_SCHEMA
    base: Side
    head: Side
    median_change_pct: float | None
    throughput_change_pct: float | None
    interval: RatioInterval
    verdict: Verdict
    threshold_pct: float
    regression: bool
    breakdown: list[PartShift] | None
    findings: FindingChanges
    top_ops: list[NameDelta]
    top_kernels: list[NameDelta]
    notes: list[str]
    # Whether the interval is over runs (several runs on a side), so between-run variation is in it.
    between_runs: bool = False
    # HEAD's change in generated tokens per second (None unless both sides counted tokens).
    tokens_change_pct: float | None = None
    # The exact counters (torchdiag.view.counters), every one, None where a side cannot tell it.
    counters: list[CounterChange] = msgspec.field(default_factory=list)
    # The --fail-on rules and their outcomes; any failed one fails the comparison (``failed``)
    # whatever the step-time verdict.
    counter_gates: list[CounterGate] = msgspec.field(default_factory=list)

    @property
    def failed(self) -> bool:
        """Whether the comparison fails: a step-time regression or a failed counter rule."""
        return self.regression or any(g.failed for g in self.counter_gates)

    def to_jsonable(self) -> dict[str, Any]:
        """Plain JSON data (NaN and infinities as null)."""
        doc: dict[str, Any] = to_jsonable(msgspec.to_builtins(self))
        doc["failed"] = self.failed
        return doc


def is_regression(interval: RatioInterval, threshold_pct: float, *, between_runs: bool) -> bool:
    """Whether HEAD is slower beyond ``threshold_pct``, with confidence.

    Over runs (``between_runs``) the interval holds the noise between whole runs, so it decides
    *whether* HEAD is slower (the whole interval above 1) and the ratio *how much* (above
    ``1 + threshold_pct/100``): identical code fails 2.5% of the time at most, while a real
    slowdown of twice the threshold is caught even when runs differ by several percent. One run a
    side, the interval covers that run's steps only and is too narrow for the noise between
    runs; there the threshold is the margin for it, and the whole interval must lie above
    ``1 + threshold_pct/100``.
    """
    if interval.low is None or interval.ratio is None:
        return False
    limit = 1 + threshold_pct / 100
    if between_runs:
        return interval.low - 1 > _EPS and interval.ratio - limit > _EPS
    return interval.low - limit > _EPS


def diff_runs(
    base: RunView,
    head: RunView,
    *,
    threshold_pct: float = DEFAULT_THRESHOLD_PCT,
    base_analysis: Analysis | None = None,
    head_analysis: Analysis | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    fail_on: Sequence[CounterRule] = (),
) -> RunDiff:
    """Compare one run of ``head`` against one of ``base``: the interval is over their steps, so
    between-run variation is not in it (a note says so). Pure and deterministic."""
    return diff_run_sets(
        [base],
        [head],
        threshold_pct=threshold_pct,
        base_analysis=base_analysis,
        head_analysis=head_analysis,
        resamples=resamples,
        seed=seed,
        fail_on=fail_on,
    )


def diff_run_sets(
    bases: Sequence[RunView],
    heads: Sequence[RunView],
    *,
    threshold_pct: float = DEFAULT_THRESHOLD_PCT,
    base_labels: Sequence[str] | None = None,
    head_labels: Sequence[str] | None = None,
    base_analysis: Analysis | None = None,
    head_analysis: Analysis | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    fail_on: Sequence[CounterRule] = (),
) -> RunDiff:
    """Compare the runs in ``heads`` against those in ``bases``; pure and deterministic.

    With several runs on a side, each run counts once by its step time and the interval is the
    t-interval over runs (:func:`torchdiag.view.student_t.run_ratio_interval`). With one run a
    side it is the single-run comparison. Breakdown, findings and operators compare each side's
    median run (the run whose step time is the side's median); ``base_analysis`` and
    ``head_analysis``, when given, are those runs' analyses. ``*_labels`` name the runs (e.g.
    their files); by default their record names. The exact counters are the median runs' too
    (a note names any on which a side's runs differ); ``fail_on`` rules judge them
    (:mod:`torchdiag.diff.counters`).
    """
    if not math.isfinite(threshold_pct) or threshold_pct < 0:
        raise ValueError(f"threshold must be a non-negative percentage, not {threshold_pct}")
    if not bases or not heads:
        raise ValueError("each side needs at least one run")
    notes: list[str] = []
    base_runs = _run_views(bases, base_labels)
    head_runs = _run_views(heads, head_labels)
    base_pick, head_pick = _median_run(base_runs), _median_run(head_runs)
    between = len(base_runs) > 1 or len(head_runs) > 1
    if between:
        base_side, head_side = _set_side(base_runs, base_pick), _set_side(head_runs, head_pick)
        interval = _runs_interval(base_runs, head_runs, notes)
        notes.append(
            f"breakdown, findings and operators compare the median runs: BASE "
            f"{base_pick.label}, HEAD {head_pick.label}"
        )
    else:
        base_side, head_side = base_pick.side, head_pick.side
        if base_side.estimated or head_side.estimated:
            interval = _model_interval(base_side, head_side, notes)
        else:
            interval = _interval(
                base_pick.view.sample, head_pick.view.sample, resamples, seed, notes
            )
        notes.append(ONE_RUN_NOTE)
    if interval.low is not None and interval.low > 1.0:
        verdict = SLOWER
    elif interval.high is not None and interval.high < 1.0:
        verdict = FASTER
    else:
        verdict = NO_CHANGE
    counts = [c for run in (*base_runs, *head_runs) for c in run.view.sample.counts]
    if not between and any(merged > 1 for merged in counts):
        notes.append("merged step rows expanded at their mean: the interval is a little narrow")
    base, head = base_pick.view, head_pick.view
    base_sum, head_sum = base.summary, head.summary
    counters = counter_changes(base, head)
    if between:
        notes += disagreeing_runs("BASE", [r.view for r in base_runs])
        notes += disagreeing_runs("HEAD", [r.view for r in head_runs])
    for side, view in (("BASE", base), ("HEAD", head)):
        if view.summary is not None and view.summary.skipped_steps:
            notes.append(
                f"{side}: {len(view.summary.skipped_steps)} profiler step(s) with an impossible "
                f"duration skipped ({view.summary.skipped_steps[0]}"
                + (", ..." if len(view.summary.skipped_steps) > 1 else "")
                + ")"
            )
    base_analysis = base_analysis if base_analysis is not None else analyze(base)
    head_analysis = head_analysis if head_analysis is not None else analyze(head)
    return RunDiff(
        base=base_side,
        head=head_side,
        median_change_pct=_change_pct(base_side.median_step_ms, head_side.median_step_ms),
        throughput_change_pct=_change_pct(base_side.samples_per_s, head_side.samples_per_s),
        interval=interval,
        verdict=verdict,
        threshold_pct=threshold_pct,
        regression=is_regression(interval, threshold_pct, between_runs=between),
        breakdown=_breakdown(base_sum, head_sum),
        findings=_finding_changes(base_analysis, head_analysis),
        top_ops=_name_deltas(base_sum, head_sum, "top_ops"),
        top_kernels=_name_deltas(base_sum, head_sum, "top_kernels"),
        notes=notes,
        between_runs=between,
        tokens_change_pct=_change_pct(base_side.tokens_per_s, head_side.tokens_per_s),
        counters=counters,
        counter_gates=judge(fail_on, counters),
    )


class _Run:
    """One run of a side: its view, its label and its side of the comparison."""

    def __init__(self, view: RunView, label: str) -> None:
        self.view, self.label = view, label
        self.side = _side(view)
        self.side.runs = [
            RunStep(
                label=label,
                step_ms=self.side.median_step_ms,
                steps=self.side.steps,
                estimated=self.side.estimated,
            )
        ]


def _run_views(views: Sequence[RunView], labels: Sequence[str] | None) -> list[_Run]:
    if labels is not None and len(labels) != len(views):
        raise ValueError(f"{len(labels)} labels for {len(views)} runs")
    if labels is None:
        labels = [v.record.name or f"run {i + 1}" for i, v in enumerate(views)]
    return [_Run(v, label) for v, label in zip(views, labels, strict=True)]


def _median_run(runs: Sequence[_Run]) -> _Run:
    """The run whose step time is the side's (lower) median; the first run if none has one."""
    timed = sorted(
        (r for r in runs if r.side.median_step_ms is not None),
        key=lambda r: r.side.median_step_ms or 0.0,
    )
    return timed[(len(timed) - 1) // 2] if timed else runs[0]


def _set_side(runs: Sequence[_Run], pick: _Run) -> Side:
    """A side of several runs, each counted once by its step time."""
    rates = _positive([r.side.samples_per_s for r in runs])
    token_rates = _positive([r.side.tokens_per_s for r in runs])
    return Side(
        name=pick.side.name,
        source=pick.side.source,
        steps=sum(r.side.steps for r in runs),
        steps_excluded=pick.side.steps_excluded,
        median_step_ms=geometric_mean(_positive([r.side.median_step_ms for r in runs])),
        batch_size=pick.side.batch_size,
        samples_per_s=geometric_mean(rates) if len(rates) == len(runs) else None,
        tokens_per_s=geometric_mean(token_rates) if len(token_rates) == len(runs) else None,
        estimated=any(r.side.estimated for r in runs),
        runs=[run for r in runs for run in r.side.runs],
        step_is_forward_call=all(r.side.step_is_forward_call for r in runs),
    )


def _usable(value: float | None) -> bool:
    return value is not None and finite(value) and value > 0


def _positive(values: Sequence[float | None]) -> list[float]:
    """The positive finite values (a run without a step time or throughput counts for none)."""
    return [v for v in values if v is not None and finite(v) and v > 0]


def _runs_interval(base: Sequence[_Run], head: Sequence[_Run], notes: list[str]) -> RatioInterval:
    """The t-interval over runs, from the runs that have a step time."""
    base_ms = _positive([r.side.median_step_ms for r in base])
    head_ms = _positive([r.side.median_step_ms for r in head])
    untimed = [r.label for r in (*base, *head) if not _usable(r.side.median_step_ms)]
    if untimed:
        notes.append("runs without a step time, left out: " + ", ".join(untimed))
    result = run_ratio_interval(base_ms, head_ms, CONFIDENCE)
    if result is None:
        notes.append(
            f"too few timed runs to judge a change over runs (BASE {len(base_ms)}, HEAD "
            f"{len(head_ms)}; at least 2 on one side and 1 on the other)"
        )
        return RatioInterval(
            ratio=None, low=None, high=None, resamples=0, method=RUNS_METHOD["welch"]
        )
    if result.variance not in RUNS_METHOD:
        notes.append(
            "one run on a side: the spread between runs is taken from the other side alone"
        )
    return RatioInterval(
        ratio=result.ratio,
        low=result.low,
        high=result.high,
        resamples=0,
        method=RUNS_METHOD.get(result.variance, RUNS_ONE_SIDED_METHOD),
        df=result.df,
    )


def _side(view: RunView) -> Side:
    record, sample, numbers = view.record, view.sample, view.headline
    batch = numbers["batch_size"]
    if record.source == "trace" and numbers["step_ms_estimate"]:
        # Profiled steps are slowed by the profiler (and a GPU-bound window's first steps only
        # fill the launch queue): a trace is compared on its un-profiled estimate.
        return Side(
            name=record.name,
            source=record.source,
            steps=numbers["estimate_steps"],
            steps_excluded="profiled steps, un-profiled step estimated",
            median_step_ms=numbers["step_ms_estimate"],
            batch_size=batch,
            samples_per_s=numbers["samples_per_s"],
            tokens_per_s=numbers["tokens_per_s"],
            estimated=True,
            step_ms_range=numbers["step_ms_estimate_range"],
        )
    median = sample_median(sample)
    return Side(
        name=record.name,
        source=record.source,
        steps=sample.n,
        steps_excluded=sample.excluded,
        median_step_ms=median,
        batch_size=batch,
        samples_per_s=numbers["samples_per_s"],
        step_is_forward_call=numbers["step_is_forward_call"],
        tokens_per_s=numbers["tokens_per_s"],
    )


def _model_interval(base: Side, head: Side, notes: list[str]) -> RatioInterval:
    """The ratio of the step estimates and the widest ratio their ranges allow."""
    b, h = base.median_step_ms, head.median_step_ms
    if not b or h is None:
        notes.append("no step time on one side: no ratio to judge")
        return RatioInterval(ratio=None, low=None, high=None, resamples=0, method=MODEL_METHOD)
    b_low, b_high = base.step_ms_range or (b, b)
    h_low, h_high = head.step_ms_range or (h, h)
    notes.append(
        f"compared on un-profiled step estimates (BASE from {base.steps} profiled steps, "
        f"HEAD from {head.steps})"
    )
    return RatioInterval(
        ratio=h / b,
        low=h_low / b_high if b_high > 0 else None,
        high=h_high / b_low if b_low > 0 else None,
        resamples=0,
        method=MODEL_METHOD,
    )


def _interval(
    base: StepSample, head: StepSample, resamples: int, seed: int, notes: list[str]
) -> RatioInterval:
    base_median, head_median = sample_median(base), sample_median(head)
    ratio = head_median / base_median if base_median and head_median is not None else None
    if base.n < MIN_STEPS or head.n < MIN_STEPS or not base_median:
        if base.n >= MIN_STEPS and head.n >= MIN_STEPS:
            notes.append("BASE's median step time is zero: no ratio to judge")
        else:
            notes.append(
                f"too few steady-state steps to judge a change (BASE {base.n}, HEAD {head.n}; "
                f"at least {MIN_STEPS} each)"
            )
        return RatioInterval(ratio=ratio, low=None, high=None, resamples=resamples, seed=seed)
    rng = random.Random(seed)
    base_medians = bootstrap_medians(base, resamples, rng)
    head_medians = bootstrap_medians(head, resamples, rng)
    ratios = sorted(h / b for h, b in zip(head_medians, base_medians, strict=True) if b > 0)
    tail = (1 - CONFIDENCE) / 2
    return RatioInterval(
        ratio=ratio,
        low=quantile(ratios, tail) if ratios else None,
        high=quantile(ratios, 1 - tail) if ratios else None,
        resamples=resamples,
        seed=seed,
    )


def _change_pct(base: float | None, head: float | None) -> float | None:
    if base is None or head is None or base == 0:
        return None
    return 100.0 * (head - base) / base


def _breakdown(base: TraceSummary | None, head: TraceSummary | None) -> list[PartShift] | None:
    """Per-step mean of each breakdown part, when both runs have a profiled breakdown."""
    base_means, head_means = _breakdown_means(base), _breakdown_means(head)
    if base_means is None or head_means is None:
        return None
    return [
        PartShift(part=part, base_ms=b, head_ms=h, delta_ms=h - b)
        for part, b in base_means.items()
        if (h := head_means[part]) or b
    ]


def _breakdown_means(summary: TraceSummary | None) -> dict[str, float] | None:
    steps = [st for st in summary.steps if st.breakdown.wall > 0] if summary else []
    if not steps:
        return None
    return {
        part: sum(getattr(st.breakdown, part) for st in steps) / len(steps)
        for part in BreakdownMs.__struct_fields__
    }


def _finding_changes(base: Analysis, head: Analysis) -> FindingChanges:
    base_by_id, head_by_id = _by_id(base), _by_id(head)
    new = [head_by_id[i] for i in sorted(head_by_id.keys() - base_by_id.keys())]
    resolved = [base_by_id[i] for i in sorted(base_by_id.keys() - head_by_id.keys())]
    persisting = [
        FindingRef(
            id=i,
            severity=head_by_id[i].severity,
            title=head_by_id[i].title,
            base_severity=base_by_id[i].severity,
        )
        for i in sorted(base_by_id.keys() & head_by_id.keys())
    ]
    return FindingChanges(new=new, resolved=resolved, persisting=persisting)


def _by_id(analysis: Analysis) -> dict[str, FindingRef]:
    # A rule may report several findings under one id; the most severe speaks for the id.
    out: dict[str, FindingRef] = {}
    for f in sorted(analysis.findings, key=lambda f: (SEVERITY_ORDER[f.severity], f.title)):
        out.setdefault(f.id, FindingRef(id=f.id, severity=f.severity, title=f.title))
    return out


def _name_deltas(
    base: TraceSummary | None, head: TraceSummary | None, field: str
) -> list[NameDelta]:
    """The names whose total milliseconds per step changed most (either direction).

    Summaries keep only their top entries, so a name missing on one side counts as zero there:
    it may have been just below that side's cut.
    """
    if base is None or head is None:
        return []
    base_ms, head_ms = _per_step_ms(base, field), _per_step_ms(head, field)
    rows = [
        NameDelta(name=name, base_ms=b, head_ms=h, delta_ms=h - b)
        for name in base_ms.keys() | head_ms.keys()
        for b, h in [(base_ms.get(name, 0.0), head_ms.get(name, 0.0))]
    ]
    rows.sort(key=lambda r: (-abs(r.delta_ms), r.name))
    return rows[:TOP_DELTAS]


def _per_step_ms(summary: TraceSummary, field: str) -> dict[str, float]:
    # Kernels: per step of the steps' own GPU work (a trace may hold more); operators: per step.
    per_step = max(gpu_work_steps(summary) if field == "top_kernels" else len(summary.steps), 1)
    out: dict[str, float] = {}
    for stat in getattr(summary, field):
        if finite(stat.total_ms):
            out[stat.name] = out.get(stat.name, 0.0) + stat.total_ms / per_step
    return out
