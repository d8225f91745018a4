"""What torch.profiler adds to the host's time per recorded event, with its uncertainty.

Every recorded event (operator, runtime call, annotation) costs the host a few microseconds of
bookkeeping, more with shapes and memory recorded. Removing that cost from a profiled step is
what turns a trace's host time into an un-profiled estimate, so the figure is shown with a range.

Two sources:

- **the trace itself**: view operators (``aten::t``, ``aten::transpose`` ...) do next to nothing
  but call one other view, so their self time is the profiler's cost of that one nested event
  plus their own small work (``TraceSummary.profiler_event_us``, the median). It follows the
  machine and the profiler version, but it is noisy: on the reference H200 traces it read
  2.2–5.8 µs where the cost that the un-profiled step times imply was 2.60–3.11 µs;
- **the reference**: the cost implied by the H200 reference runs (``tests/data/h200``: step
  time without the profiler against the profiled step, per recorded event, on the four
  host-bound runs), REFERENCE_US within REFERENCE_RANGE_US.

The reference is used while the trace's own reading lies within a factor of
:data:`AGREEMENT_FACTOR` of it (the reading's spread seen on the reference traces): the reading
then carries no information the reference lacks beyond its noise, and the range spans both.
A reading further off means another machine or profiler (a 2020 V100 trace reads 17 µs): it is
used, with the reading's measured spread as its range. Without view operators the reference is
used, and the evidence says so.
"""

from __future__ import annotations

from dataclasses import dataclass

# Implied by the reference runs (see the module docstring and docs/rules.md, "Step model"):
# 2.60, 2.71, 2.88 and 3.11 µs per event; their median, and their range rounded outward.
REFERENCE_US = 2.8
REFERENCE_RANGE_US = (2.6, 3.2)
# A view reading within this factor of the reference agrees with it: on the reference machine the
# readings spread over 0.80–2.05x the reference.
AGREEMENT_FACTOR = 2.5
# Where the reading is used on its own: the implied cost was 0.62–1.16x the reading on the
# reference traces, widened to a round range.
READING_SPREAD = (0.5, 1.3)


@dataclass(frozen=True)
class ProfilerCost:
    """The profiler's host cost per recorded event (µs): a point estimate, a range, and where
    it came from (said in the evidence of every rule that uses it)."""

    us: float
    low_us: float
    high_us: float
    source: str
    reading_us: float | None


def profiler_cost(
    reading_us: float | None,
    reference_us: float = REFERENCE_US,
    reference_range_us: tuple[float, float] = REFERENCE_RANGE_US,
) -> ProfilerCost:
    """The cost per event to use, given the trace's own view-operator reading (or None).

    ``reference_us`` and ``reference_range_us`` replace the reference (the calibration tests
    refit it without the trace they check).
    """
    ref_low, ref_high = reference_range_us
    if reading_us is None or reading_us <= 0:
        return ProfilerCost(
            us=reference_us,
            low_us=0.0,
            high_us=2 * ref_high,
            source="reference cost (the trace has no view operators to read it from)",
            reading_us=None,
        )
    if reference_us / AGREEMENT_FACTOR <= reading_us <= reference_us * AGREEMENT_FACTOR:
        return ProfilerCost(
            us=reference_us,
            low_us=min(ref_low, reading_us),
            high_us=max(ref_high, reading_us),
            source=f"reference cost (the trace's views read {reading_us:.2f} µs: within range)",
            reading_us=reading_us,
        )
    low, high = READING_SPREAD
    return ProfilerCost(
        us=reading_us,
        low_us=reading_us * low,
        high_us=reading_us * high,
        source=f"read off the trace's view operators ({reading_us:.2f} µs)",
        reading_us=reading_us,
    )
