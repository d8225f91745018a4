"""``Optimizer.step#<Class>.step`` regions: how much host work one optimizer step issues.

PyTorch wraps every ``optimizer.step()`` in a ``record_function`` named
``Optimizer.step#Adam.step``. What happens inside tells a fused or foreach implementation (a
handful of ``aten::_foreach_*`` / ``aten::_fused_*`` operators launching a few kernels) from the
single-tensor loop (a dozen operators and kernels per parameter).

For each region: the operators that started inside it on the same thread (all nesting levels),
those among them that are foreach / fused, and the kernels whose launching runtime call started
inside it. The regions' ends are also the fallback step boundaries of traces without
``ProfilerStep#`` markers (:mod:`~torchdiag.traces.steps`).
"""

from __future__ import annotations

from collections.abc import Mapping

from torchdiag.record import OptimizerStepStat

__all__ = ["OPTIMIZER_PREFIX", "OptimizerRegions", "is_foreach_op"]

OPTIMIZER_PREFIX = "Optimizer.step#"

ThreadKey = tuple[int | str, int | str]


def is_foreach_op(name: str) -> bool:
    """Multi-tensor optimizer math: ``aten::_foreach_*`` and ``aten::_fused_*`` (fused Adam ...)."""
    return name.startswith(("aten::_foreach_", "aten::_fused_"))


class OptimizerRegions:
    """The optimizer-step regions of a trace (:meth:`add`), summarised by :meth:`stats`.

    Regions are few (one per step and optimizer), so they are kept as they come.
    """

    def __init__(self) -> None:
        self._regions: dict[str, list[tuple[ThreadKey, float, float]]] = {}
        # per region name: [operators, foreach operators, kernels] inside its calls
        self._counts: dict[str, list[int]] = {}

    def __bool__(self) -> bool:
        return bool(self._regions)

    def add(self, name: str, key: ThreadKey, ts: float, end: float) -> None:
        """One ``Optimizer.step#...`` annotation on thread ``key``."""
        self._regions.setdefault(name, []).append((key, ts, end))

    def step_ends(self, main_pid: int | str | None) -> list[float]:
        """Ends of the training process's most frequent optimizer step, sorted.

        With several optimizers stepping once per iteration each, any one of them marks the
        iterations; the most frequent (then the one ending last) is taken.
        """
        best: list[float] = []
        for _, regions in sorted(self._regions.items()):
            ends = sorted(e for key, _, e in regions if key[0] == main_pid)
            if (len(ends), ends[-1] if ends else 0.0) > (len(best), best[-1] if best else 0.0):
                best = ends
        return best

    def regions_on(self, key: ThreadKey) -> list[tuple[str, float, float]]:
        """(name, start, end) of the regions recorded on thread ``key``."""
        return [
            (name, a, b)
            for name, regions in self._regions.items()
            for k, a, b in regions
            if k == key
        ]

    def count_thread(
        self,
        key: ThreadKey,
        ops: Mapping[float, int],
        foreach_ops: Mapping[float, int],
        kernels: Mapping[float, int],
    ) -> None:
        """Count what the regions on thread ``key`` contain.

        Each mapping gives, for every region bound ``q``, the thread's operators, foreach /
        fused operators and launched kernels that started before ``q``
        (:func:`~torchdiag.traces.window.counts_below`).
        """
        for name, a, b in self.regions_on(key):
            counts = self._counts.setdefault(name, [0, 0, 0])
            counts[0] += ops[b] - ops[a]
            counts[1] += foreach_ops[b] - foreach_ops[a]
            counts[2] += kernels[b] - kernels[a]

    def stats(self) -> list[OptimizerStepStat]:
        """One entry per region name, from what :meth:`count_thread` saw."""
        out = []
        for name, regions in sorted(self._regions.items()):
            ops, foreach_ops, kernels = self._counts.get(name, (0, 0, 0))
            calls = len(regions)
            out.append(
                OptimizerStepStat(
                    name=name,
                    calls=calls,
                    total_ms=sum(b - a for _, a, b in regions) / 1000,
                    ops_per_call=ops / calls,
                    foreach_ops_per_call=foreach_ops / calls,
                    kernels_per_call=kernels / calls,
                )
            )
        return out
