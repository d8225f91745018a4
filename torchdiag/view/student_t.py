"""Few runs a side: Student's t distribution and the t-interval on the log ratio of run step times.

Repeated runs of the same code on one machine differ by several percent (other tenants, clock and
cache state, where the scheduler puts the threads), far more than the steps inside one run
suggest. With three or so runs a side, only an interval whose width follows the spread between
runs, and whose critical value is right for that few, is honest: a normal (z) interval is too
narrow at n = 3 (1.96 instead of 4.30 standard errors at 2 degrees of freedom), and a bootstrap
over three values has only ten distinct resamples and no coverage guarantee.

Step times are compared on a log scale: a slowdown is a ratio, the spread of step times between
runs grows with the step time, and the log makes it roughly constant and symmetric. The interval
is Welch's (no equal-variance assumption: a change can make runs noisier as well as slower), on
the difference of mean log step times; exponentiated, it is an interval for the ratio of the
geometric means, HEAD/BASE.

The t quantile is computed here (bisection on the CDF, itself the regularised incomplete beta
function by its continued fraction) so the comparison needs nothing beyond the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torchdiag.view.numbers import finite

# Continued-fraction terms are evaluated until they change the value by less than this.
_CF_TOLERANCE = 1e-14
_CF_MAX_TERMS = 500
_TINY = 1e-300


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _beta_continued_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of I_x(a, b) (DLMF 8.17.22), by the modified Lentz method."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    value = d
    for m in range(1, _CF_MAX_TERMS):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            value *= c * d
        if abs(c * d - 1.0) < _CF_TOLERANCE:
            break
    return value


def regularized_beta(x: float, a: float, b: float) -> float:
    """The regularised incomplete beta function I_x(a, b), for 0 <= x <= 1 and a, b > 0."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(a * math.log(x) + b * math.log1p(-x) - _log_beta(a, b))
    # The fraction converges fast below the mean of Beta(a, b); above it, use the symmetry.
    if x < (a + 1) / (a + b + 2):
        return front * _beta_continued_fraction(x, a, b) / a
    return 1.0 - front * _beta_continued_fraction(1.0 - x, b, a) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    if df <= 0 or not math.isfinite(df):
        raise ValueError(f"degrees of freedom must be positive and finite, not {df}")
    tail = 0.5 * regularized_beta(df / (df + t * t), df / 2, 0.5)
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (0 < p < 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, not {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, high * 2
    # The CDF is monotone: bisection to the last bit a double can tell.
    for _ in range(200):
        mid = (low + high) / 2
        if mid in (low, high):
            break
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2


@dataclass(frozen=True)
class RunRatioInterval:
    """HEAD/BASE ratio of the geometric means of per-run step times, with its t-interval."""

    ratio: float
    low: float
    high: float
    # nb + nh - 2 (as many runs a side), Welch-Satterthwaite's (unequal counts), or n - 1 of the
    # side that has several runs.
    df: float
    # "pooled" (as many runs a side), "welch" (several runs a side, unequal counts) or
    # "one-sided-spread" (one run on one side: the spread between runs comes from the other
    # side alone, assumed to hold for both).
    variance: str


def run_ratio_interval(
    base: Sequence[float], head: Sequence[float], confidence: float
) -> RunRatioInterval | None:
    """The t-interval for HEAD/BASE over per-run step times (milliseconds, one value per run).

    Needs at least two runs on one side and one on the other (the spread between runs has to be
    seen somewhere); returns None otherwise, or when a value is not a positive finite number.
    With as many runs on both sides it is Student's pooled interval (nb + nh - 2 degrees of
    freedom): with equal counts its standard error is Welch's, and the pooled test keeps its
    level even when the two sides' variances differ (equal sample sizes make it robust to
    that), while Welch's estimated degrees of freedom fall towards n - 1 and, at three runs a
    side, widen the interval by up to half for no gain in validity. With unequal counts it is
    Welch's interval; with one run on a side, the other side's spread stands for both (a pooled
    interval with that side's n - 1 degrees of freedom).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    if any(not finite(v) or v <= 0 for v in (*base, *head)):
        return None
    nb, nh = len(base), len(head)
    if min(nb, nh) < 1 or max(nb, nh) < 2:
        return None
    log_b, log_h = [math.log(v) for v in base], [math.log(v) for v in head]
    mean_b, mean_h = sum(log_b) / nb, sum(log_h) / nh
    diff = mean_h - mean_b
    if nb >= 2 and nh >= 2:
        vb, vh = _sample_variance(log_b, mean_b) / nb, _sample_variance(log_h, mean_h) / nh
        se = math.sqrt(vb + vh)
        if nb == nh:
            df, variance = float(nb + nh - 2), "pooled"
        else:
            denominator = (vb * vb / (nb - 1) if vb else 0.0) + (vh * vh / (nh - 1) if vh else 0.0)
            df = (vb + vh) ** 2 / denominator if denominator > 0 else float(nb + nh - 2)
            variance = "welch"
    else:
        several, mean = (log_b, mean_b) if nb >= 2 else (log_h, mean_h)
        se = math.sqrt(_sample_variance(several, mean) * (1 / nb + 1 / nh))
        df = float(len(several) - 1)
        variance = "one-sided-spread"
    half = t_quantile(0.5 + confidence / 2, df) * se
    return RunRatioInterval(
        ratio=math.exp(diff),
        low=math.exp(diff - half),
        high=math.exp(diff + half),
        df=df,
        variance=variance,
    )


def geometric_mean(values: Sequence[float]) -> float | None:
    """The geometric mean of positive finite values; None if there are none or one is not."""
    if not values or any(not finite(v) or v <= 0 for v in values):
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _sample_variance(values: Sequence[float], mean: float) -> float:
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)
