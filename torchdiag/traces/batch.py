"""The training batch size, read from the input shapes of the operators that consume the batch.

With ``record_shapes=True`` every operator carries its ``Input Dims``. The batch is the leading
dimension of the activations entering the model's first layers, but which argument holds the
activations, and whether its leading dimension is the batch, depends on the operator. The tiers
below go from the most to the least trustworthy; the first tier with any shape decides, by the
most common leading dimension among its calls:

1. convolutions (``aten::conv2d`` ...): the input is (N, C, ...), N is the batch;
2. ``aten::embedding(weight, indices)``: the indices' leading dimension;
3. ``aten::linear`` / ``aten::matmul`` with an input of 3 or more dimensions: (B, S, ...);
4. ``aten::linear`` / ``aten::matmul`` with a 2-D input, and ``aten::addmm(bias, mat1, mat2)``'s
   ``mat1``: (B, features) in an MLP, but (B*S, features) after a transformer flattens its
   tokens, which is why it comes last.

Only the outermost of nested calls counts (one layer, one vote): ``aten::linear`` calls
``aten::matmul`` or ``aten::addmm``, ``aten::conv2d`` calls ``aten::convolution``, and autocast
re-enters the same operator with cast inputs. A winner shared by fewer than a third of the
tier's calls, or tied, is no answer (None).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from torchdiag.traces.events import Event, OpArgs, decode_args

ThreadKey = tuple[int | str, int | str]

__all__ = ["BATCH_OPS", "BatchSizes"]

# operator -> (argument holding the batch, tier for 2-D input, tier for 3-D or more)
BATCH_OPS: dict[str, tuple[int, int, int]] = {
    "aten::conv1d": (0, 1, 1),
    "aten::conv2d": (0, 1, 1),
    "aten::conv3d": (0, 1, 1),
    "aten::convolution": (0, 1, 1),
    "aten::embedding": (1, 2, 2),
    "aten::linear": (0, 4, 3),
    "aten::matmul": (0, 4, 3),
    "aten::addmm": (1, 4, 4),
}
_SAMPLES_PER_OP = 1024  # shapes decoded per operator name: plenty for a mode, bounded cost
_MIN_SHARE = 1 / 3


class BatchSizes:
    """Calls of the batch-consuming operators (:meth:`add`), decided by :meth:`result`.

    Each sampled call is kept as (start, end, tier, leading dim, operator) per thread until the
    end, when nesting is known; at most :data:`_SAMPLES_PER_OP` calls per operator name.
    """

    def __init__(self) -> None:
        self._seen: Counter[str] = Counter()
        self._calls: dict[ThreadKey, list[tuple[float, float, int, int, str]]] = {}

    def add(self, ev: Event, key: ThreadKey) -> None:
        """One call of an operator in :data:`BATCH_OPS`, on thread ``key``."""
        if self._seen[ev.name] >= _SAMPLES_PER_OP:
            return
        self._seen[ev.name] += 1
        args = decode_args(ev.args, OpArgs)
        dims = args.dims if args is not None else None
        arg, tier_2d, tier_nd = BATCH_OPS[ev.name]
        shape = _shape(dims, arg)
        # Its own tier, or 0 for "no usable shape" (it still hides the calls nested in it).
        tier = 0
        if shape is not None and (ev.name == "aten::embedding" or len(shape) >= 2):
            tier = tier_nd if len(shape) >= 3 else tier_2d
        lead = shape[0] if shape else 0
        self._calls.setdefault(key, []).append((ev.ts, ev.ts + ev.dur, tier, lead, ev.name))

    def _outermost(self) -> dict[int, Counter[tuple[int, str]]]:
        """Leading-dim counts per tier over the calls not nested in another sampled call."""
        tiers: dict[int, Counter[tuple[int, str]]] = {}
        for _, calls in sorted(self._calls.items(), key=lambda kv: str(kv[0])):
            calls.sort(key=lambda c: (c[0], -c[1]))
            outer_end = float("-inf")
            for start, end, tier, lead, name in calls:
                if start < outer_end and end <= outer_end:
                    continue  # nested in the previous outermost call
                outer_end = end
                if tier:
                    tiers.setdefault(tier, Counter())[(lead, name)] += 1
        return tiers

    def result(self) -> tuple[int | None, str | None]:
        """(batch size, where it came from) or (None, None) when the shapes do not tell."""
        tiers = self._outermost()
        for tier in sorted(tiers):
            by_op = tiers[tier]
            dims: Counter[int] = Counter()
            for (dim, _), n in by_op.items():
                dims[dim] += n
            ranked = sorted(dims.items(), key=lambda kv: (-kv[1], kv[0]))
            best, count = ranked[0]
            tied = len(ranked) > 1 and ranked[1][1] == count
            if tied or count < _MIN_SHARE * sum(dims.values()):
                return None, None
            op = max(
                ((name, n) for (dim, name), n in by_op.items() if dim == best),
                key=lambda kv: (kv[1], kv[0]),
            )[0]
            return best, f"{op} input dims"
        return None, None


def _shape(dims: list[Any] | None, arg: int) -> list[int] | None:
    if not dims or len(dims) <= arg:
        return None
    shape = dims[arg]
    if not isinstance(shape, list) or not shape:
        return None
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        return None
    return shape
