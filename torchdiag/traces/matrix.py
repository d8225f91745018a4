"""Matrix math (GEMM, convolution, attention): tensor-core use, dtypes, layouts; and occupancy.

Two sources of evidence, because neither is enough alone:

- the **kernel name** (:mod:`~torchdiag.traces.kernels`) says whether a kernel runs on tensor
  cores and in which layout a convolution works, when the library spells it out;
- the **launching operator** says which dtype the framework asked for: each matrix kernel's
  time is attributed to the first tensor ``Input type`` of the innermost operator around the
  runtime call that launched it (:class:`DtypeTime`, filled by
  :meth:`~torchdiag.traces.operators.OperatorStats.nest`). That holds whatever the kernel is
  named, and decides Triton kernels, whose names carry no precision: launched from a bf16/fp16/
  fp8 operator they run on tensor cores.

:class:`Occupancy` folds CUPTI's per-kernel launch figures (``blocks per SM``, ``est. achieved
occupancy %``) into kernel-time-weighted means while events stream in.
"""

from __future__ import annotations

from collections.abc import Sequence

from torchdiag.record import MathStats, OccupancyStats
from torchdiag.traces.events import Interner
from torchdiag.traces.kernels import TENSOR_CORE_CLASSES, conv_layout, is_layout_transform

__all__ = ["UNKNOWN_DTYPE", "DtypeTime", "Occupancy", "is_low_precision", "math_stats"]

UNKNOWN_DTYPE = "unknown"
# PyTorch's dtype names in "Input type": c10::BFloat16, c10::Half, c10::Float8_e4m3fn ...
_LOW_PRECISION = ("bfloat16", "half", "float16", "float8", "fp8", "e4m3", "e5m2")


def is_low_precision(dtype: str) -> bool:
    """True for 16- and 8-bit floating dtypes, the ones that always use tensor cores."""
    lowered = dtype.lower()
    return any(p in lowered for p in _LOW_PRECISION)


class DtypeTime:
    """Matrix-kernel µs by the launching operator's dtype (an id in :attr:`names`, -1 unknown)."""

    __slots__ = ("_low", "names", "triton_tensor_core_us", "us")

    def __init__(self) -> None:
        self.names = Interner()
        self.us: dict[int, float] = {}
        # Triton matrix-kernel µs launched from a low-precision operator: tensor cores.
        self.triton_tensor_core_us = 0.0
        self._low: list[bool] = []

    def intern(self, dtype: str) -> int:
        """The id of a dtype name."""
        did = self.names.intern(dtype)
        if did == len(self._low):
            self._low.append(is_low_precision(dtype))
        return did

    def add(self, dtype: int, math_us: float, triton_us: float) -> None:
        """Attribute one launch's matrix-kernel time to ``dtype``."""
        self.us[dtype] = self.us.get(dtype, 0.0) + math_us
        if triton_us and dtype >= 0 and self._low[dtype]:
            self.triton_tensor_core_us += triton_us

    def by_name(self, total_math_us: float) -> dict[str, float]:
        """Milliseconds per dtype name; what no operator launched is ``"unknown"``."""
        out: dict[str, float] = {}
        attributed = 0.0
        for did, us in self.us.items():
            attributed += us
            name = self.names.names[did] if did >= 0 else UNKNOWN_DTYPE
            out[name] = out.get(name, 0.0) + us / 1000
        rest = total_math_us - attributed
        if rest > 1e-6:
            out[UNKNOWN_DTYPE] = out.get(UNKNOWN_DTYPE, 0.0) + rest / 1000
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


class Occupancy:
    """Kernel-time-weighted launch figures, as running sums.

    Over kernels carrying ``blocks per SM``: their count, Σ dur·min(blocks per SM, 1) and Σ dur;
    over kernels carrying ``est. achieved occupancy %``: Σ dur·occupancy and Σ dur. The
    summary's event loop keeps these sums in local variables while it walks a chunk and stores
    them back after it (a method call per kernel would cost more than the arithmetic); the
    additions happen in event order either way, so the result does not depend on chunking.
    """

    __slots__ = ("fill", "fill_weight", "kernels", "occ", "occ_weight")

    def __init__(self) -> None:
        self.kernels = 0
        self.fill = 0.0
        self.fill_weight = 0.0
        self.occ = 0.0
        self.occ_weight = 0.0

    def stats(self) -> OccupancyStats:
        """The time-weighted means (None where no kernel carried the figure)."""
        return OccupancyStats(
            kernels_with_launch_info=self.kernels,
            sm_efficiency_pct=100 * self.fill / self.fill_weight if self.fill_weight else None,
            achieved_occupancy_pct=self.occ / self.occ_weight if self.occ_weight else None,
        )


def math_stats(
    names: Sequence[str],
    classes: Sequence[tuple[str, bool | None]],
    totals_us: Sequence[float],
    dtypes: DtypeTime,
) -> MathStats:
    """:class:`MathStats` from per-kernel-name totals and the dtype attribution."""
    eligible = tc = no_tc = unknown = conv = nhwc = nchw = transform = 0.0
    for name, (cls, uses_tc), total in zip(names, classes, totals_us, strict=True):
        if cls in TENSOR_CORE_CLASSES:
            eligible += total
            if uses_tc is True:
                tc += total
            elif uses_tc is False:
                no_tc += total
            else:
                unknown += total
            if cls == "convolution":
                conv += total
                layout = conv_layout(name)
                if layout == "nhwc":
                    nhwc += total
                elif layout == "nchw":
                    nchw += total
        elif is_layout_transform(name):
            transform += total
    # Triton kernels the launching dtype showed to be on tensor cores leave "unknown".
    moved = min(dtypes.triton_tensor_core_us, unknown)
    return MathStats(
        eligible_ms=eligible / 1000,
        tensor_core_ms=(tc + moved) / 1000,
        non_tensor_core_ms=no_tc / 1000,
        unknown_ms=(unknown - moved) / 1000,
        op_dtype_ms=dtypes.by_name(eligible),
        conv_ms=conv / 1000,
        conv_nhwc_ms=nhwc / 1000,
        conv_nchw_ms=nchw / 1000,
        layout_transform_ms=transform / 1000,
    )
