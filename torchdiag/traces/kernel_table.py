"""Kernels by name: every duration, the name's class, and the top-kernels table.

A trace names each kernel launch; the same few hundred names repeat thousands of times. Each
distinct name is classified once (:func:`~torchdiag.traces.kernels.classify_kernel`) and keeps
its call count and summed time (added in arrival order). The durations themselves stay in the
reader's GPU columns, which may spill to disk; the exact per-name median and maximum of the top
names come from those columns sorted by (name, duration) at the end (:meth:`KernelTable.top`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import groupby
from operator import itemgetter

from torchdiag.record import KernelStat
from torchdiag.traces.events import Interner
from torchdiag.traces.kernels import TENSOR_CORE_CLASSES, classify_kernel, is_triton
from torchdiag.traces.spill import values_at

__all__ = ["KernelInfo", "KernelTable"]


class KernelInfo:
    """What is known of one kernel name, decided on first sight."""

    __slots__ = (
        "calls",
        "cls",
        "communication",
        "id",
        "matrix",
        "tensor_core",
        "total",
        "triton",
    )

    def __init__(self, name: str, kid: int) -> None:
        self.id = kid
        self.cls, self.tensor_core = classify_kernel(name)
        self.communication = self.cls == "communication"
        self.matrix = self.cls in TENSOR_CORE_CLASSES
        # A matrix kernel whose name does not tell its tensor-core use, but whose launching
        # operator's dtype will (Triton).
        self.triton = self.matrix and self.tensor_core is None and is_triton(name)
        self.calls = 0
        self.total = 0.0  # µs, summed in arrival order


class KernelTable:
    """Per-name kernel figures (:meth:`info`; the caller updates ``calls`` and ``total``)."""

    __slots__ = ("_infos", "names")

    def __init__(self) -> None:
        self.names = Interner()
        self._infos: list[KernelInfo] = []

    def __len__(self) -> int:
        return len(self._infos)

    def info(self, name: str) -> KernelInfo:
        """The record of kernel ``name``, created (and classified) on first sight."""
        kid = self.names.ids.get(name)
        if kid is None:
            kid = self.names.intern(name)
            self._infos.append(KernelInfo(name, kid))
        return self._infos[kid]

    @property
    def classes(self) -> list[tuple[str, bool | None]]:
        """(class, tensor core) per name, in name-id order."""
        return [(i.cls, i.tensor_core) for i in self._infos]

    def count(self) -> int:
        """Kernels run."""
        return sum(i.calls for i in self._infos)

    def communication_count(self) -> int:
        """Collective-communication kernels run (NCCL, RCCL)."""
        return sum(i.calls for i in self._infos if i.communication)

    def totals_us(self) -> list[float]:
        """Summed µs per name, in name-id order."""
        return [i.total for i in self._infos]

    def flags(self) -> tuple[list[bool], list[bool]]:
        """(matrix math, Triton matrix math) per name id."""
        return [i.matrix for i in self._infos], [i.triton for i in self._infos]

    def top_ids(self, n: int, totals_us: list[float]) -> list[int]:
        """The name ids of the ``n`` names with the most kernel time (ties by name)."""
        names = self.names.names
        return sorted(range(len(names)), key=lambda i: (-totals_us[i], names[i]))[:n]

    def median_max(self, by_name: Iterable[tuple[int, float]]) -> dict[int, tuple[float, float]]:
        """(median, max) µs per name id from (name id, duration) rows sorted by both."""
        out: dict[int, tuple[float, float]] = {}
        for kid, rows in groupby(by_name, key=itemgetter(0)):
            k = self._infos[kid].calls
            durs = values_at(map(itemgetter(1), rows), (k // 2 - 1, k // 2, k - 1))
            median = durs[k // 2] if k % 2 else (durs[k // 2 - 1] + durs[k // 2]) / 2
            out[kid] = (median, durs[k - 1])
        return out

    def class_ms(self, totals_us: list[float]) -> dict[str, float]:
        """Kernel time per class (ms), by class name."""
        out: dict[str, float] = {}
        for info, total in zip(self._infos, totals_us, strict=True):
            out[info.cls] = out.get(info.cls, 0.0) + total / 1000
        return dict(sorted(out.items()))

    def top(
        self, ids: list[int], totals_us: list[float], median_max: Mapping[int, tuple[float, float]]
    ) -> list[KernelStat]:
        """The table rows of the names ``ids`` (:meth:`top_ids`), with :meth:`median_max`."""
        names = self.names.names
        return [
            KernelStat(
                name=names[i],
                kernel_class=self._infos[i].cls,
                tensor_core=self._infos[i].tensor_core,
                calls=self._infos[i].calls,
                total_ms=totals_us[i] / 1000,
                median_us=median_max[i][0],
                max_us=median_max[i][1],
            )
            for i in ids
        ]
