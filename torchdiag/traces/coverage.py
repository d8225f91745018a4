"""What a trace lacks, said in words, so an empty figure is never read as a measurement.

A summary of a nearly empty trace is still a summary: its ``notes`` say plainly which evidence
is missing (no operators, too few of them, no GPU activity, no dtypes or shapes, no runtime
events) and how the steps were found when the trace did not mark them.
"""

from __future__ import annotations

__all__ = ["FEW_OPS", "coverage_notes", "step_notes"]

# Fewer operator events than this: the figures rest on very little.
FEW_OPS = 50

_STEP_NOTES = {
    "optimizer": "no ProfilerStep# annotations: steps end where each Optimizer.step ends",
    "annotation": "no ProfilerStep# annotations: steps are a repeated top-level annotation",
    "trace": "no ProfilerStep# annotations: one step spans the whole trace",
}


def step_notes(source: str) -> list[str]:
    """The note for steps found without ``ProfilerStep#`` markers (none when they were)."""
    note = _STEP_NOTES.get(source)
    return [note] if note else []


def coverage_notes(
    *,
    events: int,
    operators: int,
    typed_operators: int,
    shapes: bool,
    devices: int,
    gpu_activity: bool,
    kernels: int,
    runtime_calls: bool,
    unmatched_ends: int,
    open_begins: int,
) -> list[str]:
    """Notes on the evidence a trace lacks, from counts of what it holds."""
    if events == 0:
        return ["the trace holds no events: nothing to diagnose"]
    out = []
    if operators == 0:
        out.append("no operator events: nothing to diagnose on the host side")
    elif operators < FEW_OPS:
        out.append(f"only {operators} operator events: too few for reliable figures")
    elif not typed_operators:
        if shapes:
            out.append("no operator input dtypes in the trace: matrix dtypes are unknown")
        else:
            out.append(
                "no operator input dtypes or shapes (recorded without record_shapes=True): "
                "batch size and matrix dtypes are unknown"
            )
    if not gpu_activity:
        if devices:
            out.append(
                f"no GPU activity (kernels, copies, memsets) although the trace lists "
                f"{devices} device(s)"
            )
        else:
            out.append("no GPU activity: a CPU-only trace")
    elif kernels and not runtime_calls:
        out.append("no runtime (launch) events: launch figures and operator GPU time unknown")
    if unmatched_ends or open_begins:
        out.append(
            f"unmatched duration events ignored: {unmatched_ends} 'E' without 'B', "
            f"{open_begins} 'B' never closed"
        )
    return out
