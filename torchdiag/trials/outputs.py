"""Whether a fix kept the numerics of a run without a loss: its model outputs against the
baseline's (:class:`~torchdiag.record.OutputDigest`, ``record.outputs``).

``torchdiag try`` seeds every run alike, so the baseline and the fix see the same weights and
inputs and their first outputs should agree up to the fix's rounding. Two figures over the
digests of the first calls both runs kept:

* the relative error ``||a - b|| / ||b||`` over the sampled values (``b`` the baseline's);
* for a classifier (2-D outputs: one row of logits per sample) the top-1 agreement, the share of
  rows whose argmax is the same.

A classifier is judged on its predictions: logits may move by a few percent in reduced precision
while every prediction stays, and what a classifier serves is the prediction. Other outputs are
judged on the relative error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torchdiag.record import OutputDigest

# Bound on the relative error a sound fix may leave. bfloat16 keeps 8 significant bits, a unit
# roundoff of 2**-8 = 0.4% per rounding; rounding errors through a network's layers grow to a
# few times that (1-2% is usual for bf16 autocast), while a real change in the computation
# (other weights, other inputs, a wrong kernel) moves outputs by their own size, tens of percent.
RELATIVE_ERROR_LIMIT = 0.05
# Share of rows whose top-1 prediction may change: reduced precision flips only rows whose two
# best logits are within its rounding, a small share on any model that separates its classes;
# more than 1 row in 100 changes what the model serves, and is flagged.
TOP1_FLIP_LIMIT = 0.01


def compare_outputs(
    baseline: Sequence[OutputDigest], fixed: Sequence[OutputDigest]
) -> tuple[bool | None, str]:
    """Whether the fix's outputs kept the baseline's, and the figures: ``(None, why)`` when
    they cannot be compared (none recorded, other shapes), else ``(ok, figures)``."""
    if not baseline:
        return None, "no loss and no model output seen"
    if not fixed:
        return None, "the run with the fix recorded no model output"
    by_call = {d.call: d for d in fixed}
    pairs = [(b, by_call[b.call]) for b in baseline if b.call in by_call]
    if not pairs:
        return None, "no model call recorded by both runs"
    for base, head in pairs:
        if base.shape != head.shape:
            return None, (
                f"outputs not compared: call {base.call} has shape {_shape(base.shape)} in the "
                f"baseline and {_shape(head.shape)} with the fix (other inputs: a bigger batch?)"
            )
    if any(v is None for _, head in pairs for v in head.values):
        return False, "the model's outputs became NaN or infinite"
    if any(v is None for base, _ in pairs for v in base.values):
        return None, "the baseline's outputs are not finite: not compared"
    error = relative_error(
        [float(v) for b, _ in pairs for v in b.values if v is not None],
        [float(v) for _, h in pairs for v in h.values if v is not None],
    )
    where = f"outputs of {len(pairs)} calls: relative error {error:.2%}"
    rows = [
        (x, y)
        for base, head in pairs
        if base.argmax is not None and head.argmax is not None
        for x, y in zip(base.argmax, head.argmax, strict=False)
    ]
    if rows:  # a classifier: judged on its predictions
        flipped = sum(1 for x, y in rows if x != y)
        agree = 1 - flipped / len(rows)
        text = f"{where}, top-1 agreement {agree:.1%} ({flipped} of {len(rows)} rows changed)"
        if flipped / len(rows) > TOP1_FLIP_LIMIT:
            return False, f"{text}: more than {TOP1_FLIP_LIMIT:.0%} of predictions changed"
        return True, text
    if error > RELATIVE_ERROR_LIMIT:
        return False, f"{where}: more than {RELATIVE_ERROR_LIMIT:.0%}"
    return True, f"{where} (within {RELATIVE_ERROR_LIMIT:.0%})"


def relative_error(baseline: Sequence[float], fixed: Sequence[float]) -> float:
    """``||fixed - baseline|| / ||baseline||`` (0 when both are zero, infinite when only the
    baseline is)."""
    diff = math.sqrt(sum((a - b) ** 2 for a, b in zip(fixed, baseline, strict=False)))
    norm = math.sqrt(sum(b * b for b in baseline))
    if norm == 0:
        return 0.0 if diff == 0 else math.inf
    return diff / norm


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(n) for n in shape) or "scalar"
