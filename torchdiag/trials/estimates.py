"""A finding's stated saving scored against what ``torchdiag try`` measured for its fix.

A finding states what fixing it could save (``saving_pct_low`` .. ``saving_pct_max``, percent of
step time); a measured fix has a speedup S with a 95% interval [a, b]. The measured saving is the
share of step time the fix removed, ``1 - 1/S`` (of the time per sample where the fix changes the
batch, as its speedup is), its interval ``[1 - 1/a, 1 - 1/b]``. Every ``try`` run makes that
pairing, so every run tests the estimates: :mod:`benchmarks.estimates_vs_try` counts them per rule.
"""

from __future__ import annotations

from collections.abc import Sequence

from torchdiag.analyze.finding import Finding
from torchdiag.capture.fixes import kinds_answering
from torchdiag.record import EstimatePairing, EstimateVerdict, MeasuredFix


def pair_estimates(fix: MeasuredFix, findings: Sequence[Finding]) -> list[EstimatePairing]:
    """The ``findings`` (the baseline's) that ``fix`` answers, each against its measured saving.

    None for a fix that failed or did not apply (nothing was measured), and none for a finding
    that states no step-time saving (a blocking one, an out-of-memory: no speedup measures it).
    """
    if fix.error is not None or not fix.applicable:
        return []
    name = fix.fix.partition("=")[0]
    measured, low, high = measured_saving(fix.speedup, fix.ci95)
    pairings = []
    for finding in findings:
        if finding.blocking or finding.saving_pct_max <= 0:
            continue
        if name not in {kind.name for kind in kinds_answering(finding.id)}:
            continue
        pairings.append(
            EstimatePairing(
                finding=finding.id,
                stated_low=finding.saving_pct_low,
                stated=finding.saving_pct,
                stated_max=finding.saving_pct_max,
                measured=_round(measured),
                measured_low=_round(low),
                measured_high=_round(high),
                verdict=classify(finding.saving_pct_low, finding.saving_pct_max, low, high),
            )
        )
    return pairings


def measured_saving(
    speedup: float | None, ci95: Sequence[float] | None
) -> tuple[float | None, float | None, float | None]:
    """The saving (percent) a speedup stands for, and its interval's ends; Nones when the speedup
    or its interval is missing (a fix measured without an interval is not scored)."""
    if speedup is None or speedup <= 0 or ci95 is None or len(ci95) != 2 or min(ci95) <= 0:
        return None, None, None
    low, high = sorted(ci95)
    return _saving(speedup), _saving(low), _saving(high)


def classify(
    stated_low: float | None,
    stated_max: float,
    measured_low: float | None,
    measured_high: float | None,
) -> EstimateVerdict:
    """Where the measured interval lies against the stated range [low (0 when the rule states
    none), bound]: overlapping it ("within"), wholly above the bound, or wholly below the low end
    (below 0, a slowdown, when no low end is stated)."""
    if measured_low is None or measured_high is None:
        return "not measured"
    floor = stated_low if stated_low is not None else 0.0
    if measured_low > stated_max:
        return "above"
    if measured_high < floor:
        return "below"
    return "within"


def _saving(speedup: float) -> float:
    return 100.0 * (1.0 - 1.0 / speedup)


def _round(value: float | None) -> float | None:
    # Two decimals of a percent: far finer than any interval try measures.
    return None if value is None else round(value, 2)
