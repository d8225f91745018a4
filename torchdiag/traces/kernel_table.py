"""Kernels by name: every duration, the name's class, and the top-kernels table.

A trace names each kernel launch; the same few hundred names repeat thousands of times. Each
distinct name is classified once (:func:`~torchdiag.traces.kernels.classify_kernel`) and gets a
column of durations (``array``, 8 bytes a kernel), from which the per-name table, the time per
class and the exact duration quantiles are computed at the end.
"""

from __future__ import annotations

from array import array
from itertools import chain

from torchdiag.record import KernelStat
from torchdiag.traces.events import Interner
from torchdiag.traces.kernels import TENSOR_CORE_CLASSES, classify_kernel, is_triton

__all__ = ["KernelInfo", "KernelTable"]


class KernelInfo:
    """What is known of one kernel name, decided on first sight."""

    __slots__ = ("cls", "communication", "durations", "matrix", "tensor_core", "triton")

    def __init__(self, name: str) -> None:
        self.cls, self.tensor_core = classify_kernel(name)
        self.communication = self.cls == "communication"
        self.matrix = self.cls in TENSOR_CORE_CLASSES
        # A matrix kernel whose name does not tell its tensor-core use, but whose launching
        # operator's dtype will (Triton).
        self.triton = self.matrix and self.tensor_core is None and is_triton(name)
        self.durations = array("d")


class KernelTable:
    """Per-name kernel durations (:meth:`info` then ``info.durations.append``)."""

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
            self._infos.append(KernelInfo(name))
        return self._infos[kid]

    @property
    def classes(self) -> list[tuple[str, bool | None]]:
        """(class, tensor core) per name, in name-id order."""
        return [(i.cls, i.tensor_core) for i in self._infos]

    def count(self) -> int:
        """Kernels run."""
        return sum(len(i.durations) for i in self._infos)

    def communication_count(self) -> int:
        """Collective-communication kernels run (NCCL, RCCL)."""
        return sum(len(i.durations) for i in self._infos if i.communication)

    def totals_us(self) -> list[float]:
        """Summed µs per name, in name-id order."""
        return [sum(i.durations) for i in self._infos]

    def sorted_durations(self) -> list[float]:
        """Every kernel's duration (µs), sorted: for exact quantiles."""
        return sorted(chain.from_iterable(i.durations for i in self._infos))

    def class_ms(self, totals_us: list[float]) -> dict[str, float]:
        """Kernel time per class (ms), by class name."""
        out: dict[str, float] = {}
        for info, total in zip(self._infos, totals_us, strict=True):
            out[info.cls] = out.get(info.cls, 0.0) + total / 1000
        return dict(sorted(out.items()))

    def top(self, n: int, totals_us: list[float]) -> list[KernelStat]:
        """The ``n`` names with the most kernel time (ties by name)."""
        names = self.names.names
        ranked = sorted(range(len(names)), key=lambda i: (-totals_us[i], names[i]))
        out = []
        for i in ranked[:n]:
            durs = sorted(self._infos[i].durations)
            k = len(durs)
            median = durs[k // 2] if k % 2 else (durs[k // 2 - 1] + durs[k // 2]) / 2
            out.append(
                KernelStat(
                    name=names[i],
                    kernel_class=self._infos[i].cls,
                    tensor_core=self._infos[i].tensor_core,
                    calls=k,
                    total_ms=totals_us[i] / 1000,
                    median_us=median,
                    max_us=durs[-1],
                )
            )
        return out
