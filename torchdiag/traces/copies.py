"""Memory copies on the GPU timeline, aggregated by kind (the trace's copy name).

CUPTI names every copy by direction and by the kind of memory on each side:
``Memcpy HtoD (Pageable -> Device)``, ``Memcpy DtoH (Device -> Pinned)``, ``Memcpy DtoD (Device ->
Device)``, ``Memcpy PtoP (Device -> Device)``. Early traces (and ROCm) say less: ``Memcpy HtoD``,
``Memcpy HtoD (Host -> Device)``; those read as not pageable, since the trace does not say so.
A pageable host side is what makes an "async" copy synchronous and slow (no DMA from pageable
memory): the pin-memory finding rests on it.
"""

from __future__ import annotations

import re

from torchdiag.record import CopyStat
from torchdiag.traces.events import Event, GpuArgs, decode_args

__all__ = ["CopyStats", "copy_kind"]

_DIRECTION = re.compile(r"\b(HtoD|DtoH|DtoD|HtoH|PtoP|DtoA|AtoD|AtoH|HtoA|AtoA)\b", re.IGNORECASE)
_CANONICAL = {"htod": "HtoD", "dtoh": "DtoH", "dtod": "DtoD", "htoh": "HtoH", "ptop": "PtoP"}


def copy_kind(name: str) -> tuple[str, bool]:
    """(direction, pageable host side) from a copy's name; ("other", False) when unreadable."""
    found = _DIRECTION.search(name)
    direction = _CANONICAL.get(found.group(1).lower(), "other") if found else "other"
    return direction, "pageable" in name.lower()


class CopyStats:
    """Per-name copy aggregates, folded in copy by copy (:meth:`add`)."""

    __slots__ = ("_by_name",)

    def __init__(self) -> None:
        self._by_name: dict[str, CopyStat] = {}

    def add(self, ev: Event) -> None:
        """One ``gpu_memcpy`` event."""
        stat = self._by_name.get(ev.name)
        if stat is None:
            direction, pageable = copy_kind(ev.name)
            stat = self._by_name[ev.name] = CopyStat(
                name=ev.name, direction=direction, pageable=pageable
            )
        stat.count += 1
        stat.total_ms += ev.dur / 1000
        args = decode_args(ev.args, GpuArgs)
        if args is not None and isinstance(args.bytes, (int, float)) and args.bytes > 0:
            stat.bytes += int(args.bytes)

    def stats(self) -> list[CopyStat]:
        """All copy kinds, most time first."""
        return sorted(self._by_name.values(), key=lambda c: (-c.total_ms, c.name))
