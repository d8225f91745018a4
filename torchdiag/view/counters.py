"""Exact counters of a run: numbers that identical runs repeat exactly, unlike any time.

A step time varies from run to run with the machine's noise; how many kernels a step launches,
how many operators it runs, how often it waits for the GPU and how many bytes it copies do not.
So a change in one of these is a fact about the code, not a statistic, and ``torchdiag diff``
can gate on it (``--fail-on``) whatever the timing noise.

Every counter is computed here, once per run (:attr:`RunView.counters
<torchdiag.view.run_view.RunView.counters>`), from the primary trace summary; a counter the
record cannot tell is ``None`` (a run without a profiler window, a CPU-only trace for the device
counters, a trace for the torch.compile counters).

Per-step counters are the median over the trace's steps, so one step doing one-off work (lazy
initialisation, the first optimizer step allocating its state, cudnn benchmarking) does not move
them; copies are only known for the whole trace, so their bytes are the trace's total over its
steps.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from torchdiag.record import RunRecord, TraceSummary

# The counters, in the order every output lists them.
COUNTER_NAMES: tuple[str, ...] = (
    "kernels_per_step",
    "cpu_ops_per_step",
    "syncs_per_step",
    "h2d_bytes_per_step",
    "d2h_bytes_per_step",
    "allocator_peak_bytes",
    "graph_breaks",
    "recompiles",
)

# What each counter counts, for documentation and the rendered diff.
COUNTER_LABELS: dict[str, str] = {
    "kernels_per_step": "Kernel launches per step",
    "cpu_ops_per_step": "CPU operators per step",
    "syncs_per_step": "Host-device syncs per step",
    "h2d_bytes_per_step": "Host-to-device bytes per step",
    "d2h_bytes_per_step": "Device-to-host bytes per step",
    "allocator_peak_bytes": "Allocator peak (bytes)",
    "graph_breaks": "torch.compile graph breaks",
    "recompiles": "torch.compile recompiles",
}

Counters = dict[str, float | None]


def run_counters(record: RunRecord, summary: TraceSummary | None, allocated_peak: int) -> Counters:
    """Every counter of :data:`COUNTER_NAMES` (``None`` where the record cannot tell it).

    ``summary`` is the primary trace summary and ``allocated_peak`` the caching allocator's peak
    from its memory events (:attr:`MemoryPeaks.allocated
    <torchdiag.view.memory.MemoryPeaks.allocated>`; 0 where none were recorded).
    """
    out: Counters = dict.fromkeys(COUNTER_NAMES)
    steps = summary.steps if summary is not None else []
    if summary is not None and steps:
        ops = [s.ops for s in steps]
        if all(n is not None for n in ops):
            out["cpu_ops_per_step"] = _median([n or 0 for n in ops])
        if summary.has_gpu:
            # Host-side launch calls are exact; kernels counted by their GPU start are not (a GPU
            # lagging the host puts a timing-dependent share of them in the next step). Traces
            # without runtime events have only the kernels.
            launches = [s.launches for s in steps]
            out["kernels_per_step"] = _median(
                launches if any(launches) else [s.kernels for s in steps]
            )
            out["syncs_per_step"] = _median([s.syncs for s in steps])
            out["h2d_bytes_per_step"] = _copied(summary, "HtoD")
            out["d2h_bytes_per_step"] = _copied(summary, "DtoH")
    if allocated_peak > 0:
        out["allocator_peak_bytes"] = float(allocated_peak)
    env = record.environment
    # dynamo's counters are read by a live capture only; a trace cannot tell them.
    if env.compile_used is not None or env.dynamo_counters:
        dynamo = env.dynamo_counters
        out["graph_breaks"] = float(sum(dynamo.get("graph_break", {}).values()))
        out["recompiles"] = float(sum(dynamo.get("recompiles", {}).values()))
    return out


def _median(values: Sequence[int]) -> float:
    return float(statistics.median(values))


def _copied(summary: TraceSummary, direction: str) -> float:
    """Bytes copied in ``direction`` over the trace, per step of the trace."""
    total = sum(c.bytes for c in summary.copies if c.direction == direction)
    return total / len(summary.steps)
