"""Compare two runs (BASE and HEAD): did HEAD get slower, and where did the time go?

Step times are noisy (data-loader hiccups, clock changes, other tenants), so "HEAD's median is 3%
above BASE's" says little on its own. :func:`diff_runs` therefore puts a confidence interval on the
ratio of median step times (HEAD/BASE) by bootstrapping the per-step times of each run, and only
calls a change when the whole interval lies on one side of 1.0. CI gating (:func:`is_regression`)
asks more: the whole interval must lie above ``1 + threshold``, so a slowdown that is real but
smaller than the threshold, or one the noise cannot confirm, does not fail a build.

Why the median: one slow outlier step (a checkpoint, a GC pause) moves the mean, not the median.
Why a bootstrap: step times are skewed and often multi-modal, so no normal-theory interval fits;
the bootstrap needs no shape assumption. How it is drawn: see :func:`bootstrap_medians`.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from torchdiag.analyze.finding import SEVERITY_ORDER
from torchdiag.analyze.registry import Analysis, analyze
from torchdiag.record import BreakdownMs, RunRecord, TraceSummary
from torchdiag.traces.launches import quantile
from torchdiag.view.headline import headline
from torchdiag.view.numbers import finite, to_jsonable
from torchdiag.view.step_model import gpu_work_steps, primary_summary

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
# Per-step samples


@dataclass(frozen=True)
class StepSample:
    """Steady-state step times of one run as (value, count) pairs, sorted by value.

    A merged row of the step series stands for ``count`` steps at the row's mean wall time; the
    per-step spread inside a row is lost, so merged rows make the interval somewhat too narrow.
    """

    values: tuple[float, ...]
    counts: tuple[int, ...]
    excluded: str

    @property
    def n(self) -> int:
        """Number of steps the sample stands for."""
        return sum(self.counts)


def step_sample(record: RunRecord) -> StepSample:
    """Steady-state step times of ``record``, chosen as the rules choose them.

    The row selection mirrors :func:`torchdiag.view.steady.steady_steps`: the first step
    (one-off start-up costs) and profiled steps (slowed by the profiler) are left out whenever
    other steps remain. A record built from traces holds the trace steps in its step series
    (all profiled, the slowest rank per step); a trace whose steps are only in its summary is read
    from there.
    """
    s = record.steps
    rows = [
        i
        for i in range(min(len(s.wall_ms), len(s.steps), len(s.first_step), len(s.profiled)))
        if s.steps[i] > 0 and finite(s.wall_ms[i])
    ]
    if rows:
        keep = [i for i in rows if not s.profiled[i] and s.first_step[i] > 0]
        excluded = "first step and profiled steps excluded"
        if not keep:
            keep = [i for i in rows if s.first_step[i] > 0] or rows
            excluded = "first step excluded" if len(keep) < len(rows) else "all steps used"
        pairs = [(s.wall_ms[i], s.steps[i]) for i in keep]
    else:
        summary = _summary(record)
        steps = [st for st in summary.steps if finite(st.duration_ms)] if summary else []
        keep_steps = [st for st in steps if st.number > 0] or steps
        excluded = "first step excluded" if len(keep_steps) < len(steps) else "all steps used"
        pairs = [(st.duration_ms, 1) for st in keep_steps]
    merged: dict[float, int] = {}
    for value, count in pairs:
        merged[value] = merged.get(value, 0) + count
    ordered = sorted(merged.items())
    return StepSample(
        values=tuple(v for v, _ in ordered), counts=tuple(c for _, c in ordered), excluded=excluded
    )


def sample_median(sample: StepSample) -> float | None:
    """Median of the expanded steps (mean of the middle two when their number is even)."""
    n = sample.n
    if n == 0:
        return None
    cum = _cumulative(sample.counts)
    lo = sample.values[bisect_right(cum, (n - 1) // 2)]
    hi = sample.values[bisect_right(cum, n // 2)]
    return (lo + hi) / 2


def bootstrap_medians(sample: StepSample, resamples: int, rng: random.Random) -> list[float]:
    """Medians of ``resamples`` bootstrap resamples of ``sample`` (size ``n``, with replacement).

    Drawn exactly but without materialising any resample. Resampling ``n`` steps from the
    empirical distribution is drawing ``n`` uniforms and mapping them through its inverse CDF;
    the map is monotone, so the resample's k-th smallest step is the inverse CDF of the k-th
    smallest uniform, which is Beta(k, n-k+1) distributed. Given it is ``u``, the next one up is
    ``u + (1-u)·Beta(1, n-k)`` (the other n-k uniforms are uniform above ``u``). So each
    bootstrap median costs two Beta draws and a binary search, however many steps the run had
    or however its rows were merged: a long run's million steps cost what ten do.
    """
    n = sample.n
    if n == 0:
        return []
    cum = _cumulative(sample.counts)
    values = sample.values

    def at(u: float) -> float:
        # The expanded, sorted steps indexed by floor(u·n): the inverse empirical CDF.
        return values[bisect_right(cum, min(int(u * n), n - 1))]

    k = (n + 1) // 2  # the lower middle order statistic (the middle one when n is odd)
    out: list[float] = []
    for _ in range(resamples):
        u = rng.betavariate(k, n - k + 1)
        if n % 2:
            out.append(at(u))
        else:
            u_next = u + (1.0 - u) * rng.betavariate(1, n - k)
            out.append((at(u) + at(u_next)) / 2)
    return out


def _cumulative(counts: Sequence[int]) -> list[int]:
    cum, total = [], 0
    for c in counts:
        total += c
        cum.append(total)
    return cum


# ---------------------------------------------------------------------------------------------
# The diff document


class Side(msgspec.Struct, kw_only=True):
    """One run's headline numbers in the comparison."""

    name: str
    source: str
    steps: int
    steps_excluded: str
    # The steady-state median of a live run; the un-profiled estimate of a profiled trace,
    # with its range (``estimated``), which is what a trace is compared on.
    median_step_ms: float | None
    batch_size: int | None
    samples_per_s: float | None
    estimated: bool = False
    step_ms_range: list[float] | None = None


class RatioInterval(msgspec.Struct, kw_only=True):
    """HEAD/BASE ratio of median step times with its bootstrap percentile interval."""

    ratio: float | None
    low: float | None
    high: float | None
    confidence: float = CONFIDENCE
    resamples: int = RESAMPLES
    seed: int = SEED
    method: str = "percentile bootstrap of the ratio of medians over steady-state step times"


MODEL_METHOD = (
    "range of the un-profiled step estimates (a profiled trace has no un-profiled steps to "
    "resample): HEAD's low over BASE's high to HEAD's high over BASE's low"
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

    def to_jsonable(self) -> dict:
        """Plain JSON data (NaN and infinities as null)."""
        return to_jsonable(msgspec.to_builtins(self))


def is_regression(interval: RatioInterval, threshold_pct: float) -> bool:
    """Whether HEAD is slower beyond ``threshold_pct`` with confidence: the whole interval of the
    ratio lies above ``1 + threshold_pct/100`` (its lower bound does)."""
    return interval.low is not None and interval.low - (1 + threshold_pct / 100) > _EPS


def diff_runs(
    base: RunRecord,
    head: RunRecord,
    *,
    threshold_pct: float = DEFAULT_THRESHOLD_PCT,
    base_analysis: Analysis | None = None,
    head_analysis: Analysis | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> RunDiff:
    """Compare ``head`` against ``base``; pure and deterministic for given inputs and seed."""
    if not math.isfinite(threshold_pct) or threshold_pct < 0:
        raise ValueError(f"threshold must be a non-negative percentage, not {threshold_pct}")
    notes: list[str] = []
    base_sample, head_sample = step_sample(base), step_sample(head)
    base_side, head_side = _side(base, base_sample), _side(head, head_sample)
    if base_side.estimated or head_side.estimated:
        interval = _model_interval(base_side, head_side, notes)
    else:
        interval = _interval(base_sample, head_sample, resamples, seed, notes)
    if interval.low is not None and interval.low > 1.0:
        verdict = SLOWER
    elif interval.high is not None and interval.high < 1.0:
        verdict = FASTER
    else:
        verdict = NO_CHANGE
    if any(merged > 1 for merged in base_sample.counts + head_sample.counts):
        notes.append("merged step rows expanded at their mean: the interval is a little narrow")
    base_sum, head_sum = _summary(base), _summary(head)
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
        regression=is_regression(interval, threshold_pct),
        breakdown=_breakdown(base_sum, head_sum),
        findings=_finding_changes(base_analysis, head_analysis),
        top_ops=_name_deltas(base_sum, head_sum, "top_ops"),
        top_kernels=_name_deltas(base_sum, head_sum, "top_kernels"),
        notes=notes,
    )


def _side(record: RunRecord, sample: StepSample) -> Side:
    numbers = headline(record)
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


def _summary(record: RunRecord) -> TraceSummary | None:
    return primary_summary(record)


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
