"""The trace dialects torch.profiler (and its predecessors) wrote, and how they are normalised.

Every dialect is a Chrome trace: ``traceEvents`` (or a bare array of them) plus, for Kineto, a
few top-level members. What differs, and is folded here so the summary code sees one dialect:

- **categories**: early Kineto (PyTorch 1.8-1.9) wrote ``Operator`` / ``Runtime`` / ``Kernel`` /
  ``Memcpy`` / ``Memset``; the autograd profiler before Kineto wrote no category at all, with
  ``pid`` ``"CPU functions"`` (operators) or ``"CUDA functions"`` (kernels);
- **ids**: ``pid``/``tid`` may be strings (``"7"``, ``"stream 7"``, ``"CPU functions"``); digit
  strings are made ints so one thread is one key whichever way an event spelled it;
- **durations**: ``ph: "X"`` events carry ``dur``; ``B``/``E`` pairs are matched per thread
  (:class:`DurationPairs`) into equivalent ``X`` events;
- **time**: ``ts`` is microseconds whatever ``displayTimeUnit`` says (that member only tells
  viewers how to display time), possibly fractional, possibly relative to
  ``baseTimeNanoseconds``; the summary only ever subtracts timestamps, so no rebasing is needed;
- **devices**: ``deviceProperties`` or early Kineto's ``computeProperties``; ROCm traces say so in
  their metadata, device names or ``hip*`` runtime calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from torchdiag.record import DeviceInfo
from torchdiag.traces.events import Event
from torchdiag.traces.runtime import runtime_family

__all__ = [
    "AUTOGRAD_CPU_PID",
    "AUTOGRAD_CUDA_PID",
    "CATEGORY_ALIASES",
    "GPU_CATEGORIES",
    "RUNTIME_CATEGORIES",
    "DurationPairs",
    "device_kind",
    "devices_from_metadata",
    "distributed_info",
    "format_name",
    "norm_id",
]

# Early Kineto's capitalised categories, mapped to the modern names.
CATEGORY_ALIASES: dict[str, str] = {
    "Operator": "cpu_op",
    "Runtime": "cuda_runtime",
    "Kernel": "kernel",
    "Memcpy": "gpu_memcpy",
    "Memset": "gpu_memset",
}
GPU_CATEGORIES = frozenset({"kernel", "gpu_memcpy", "gpu_memset"})
RUNTIME_CATEGORIES = frozenset(
    {
        "cuda_runtime",
        "cuda_driver",
        "hip_runtime",
        "hip_driver",
        "xpu_runtime",
        "xpu_driver",
        "mtia_runtime",
        "privateuse1_runtime",
        "privateuse1_driver",
    }
)
# The pre-Kineto autograd profiler (``prof.export_chrome_trace`` up to PyTorch 1.7) put every
# operator in this pseudo-process, and kernels in the next one; it wrote no categories.
AUTOGRAD_CPU_PID = "CPU functions"
AUTOGRAD_CUDA_PID = "CUDA functions"


def norm_id(value: int | str) -> int | str:
    """A pid/tid as one key: digit strings (``"7"``) become ints, other strings stay."""
    if value.__class__ is str and value.isdigit():
        return int(value)
    return value


class DurationPairs:
    """Matches ``B`` (begin) and ``E`` (end) events into ``X`` events, per (pid, tid) stack.

    The trace format nests B/E pairs per thread in file order; an ``E`` closes the most recent
    open ``B`` of its thread. An ``E`` with nothing open is counted in :attr:`unmatched_ends`;
    ``B`` events never closed are reported by :attr:`open_count`.
    """

    def __init__(self) -> None:
        self._stacks: dict[tuple[int | str, int | str], list[Event]] = {}
        self.unmatched_ends = 0
        self.pairs = 0

    def begin(self, ev: Event) -> None:
        """Open a duration on the event's thread."""
        key = (norm_id(ev.pid), norm_id(ev.tid))
        stack = self._stacks.get(key)
        if stack is None:
            stack = self._stacks[key] = []
        stack.append(ev)

    def end(self, ev: Event) -> Event | None:
        """Close the thread's innermost open duration: the equivalent ``X`` event, or None."""
        stack = self._stacks.get((norm_id(ev.pid), norm_id(ev.tid)))
        if not stack:
            self.unmatched_ends += 1
            return None
        begin = stack.pop()
        self.pairs += 1
        return msgspec.structs.replace(begin, ph="X", dur=max(0.0, ev.ts - begin.ts))

    @property
    def open_count(self) -> int:
        """``B`` events still waiting for their ``E``."""
        return sum(len(s) for s in self._stacks.values())


def format_name(
    metadata: Mapping[str, Any],
    form: str,
    *,
    autograd_legacy: bool,
    legacy_categories: bool,
    kineto_categories: bool,
) -> str:
    """A short name for the trace's dialect.

    ``autograd-legacy`` (pre-Kineto autograd profiler), ``kineto-early`` (PyTorch 1.8-1.9
    categories), ``kineto``, else ``chrome-trace`` / ``chrome-trace-array`` (a generic Chrome
    trace as an object / a bare event array).
    """
    if autograd_legacy:
        return "autograd-legacy"
    if legacy_categories:
        return "kineto-early"
    if "schemaVersion" in metadata or kineto_categories:
        return "kineto"
    return "chrome-trace" if form == "object" else "chrome-trace-array"


def devices_from_metadata(metadata: Mapping[str, Any]) -> list[DeviceInfo]:
    """Accelerators listed in ``deviceProperties`` (or early Kineto's ``computeProperties``)."""
    listed = metadata.get("deviceProperties") or metadata.get("computeProperties") or []
    rocm = any(k in metadata for k in ("roctracer_version", "hip_runtime_version"))
    out = []
    for i, props in enumerate(listed if isinstance(listed, list) else []):
        if not isinstance(props, dict):
            continue
        name = str(props.get("name", ""))
        major = props.get("computeMajor", props.get("major"))
        minor = props.get("computeMinor", props.get("minor"))
        amd = rocm or any(w in name for w in ("AMD", "Radeon", "Instinct"))
        out.append(
            DeviceInfo(
                index=props["id"] if _is_int(props.get("id")) else i,
                name=name,
                kind="rocm" if amd else "cuda",
                capability=f"{major}.{minor}" if major is not None and minor is not None else None,
                memory_total_bytes=_int_or_none(props.get("totalGlobalMem")),
                multiprocessors=_int_or_none(props.get("numSms", props.get("multiProcessorCount"))),
            )
        )
    return out


def device_kind(
    devices: list[DeviceInfo], gpu_activity: bool, runtime_names: Iterable[str]
) -> str | None:
    """``rocm``, ``xpu`` or ``cuda`` for the trace's accelerator; None without one.

    Listed AMD devices or ROCm metadata decide first; else the runtime calls' API family
    (``hip*`` calls, or SYCL / Level Zero ones); else CUDA when anything ran on a device.
    """
    if any(d.kind == "rocm" for d in devices):
        return "rocm"
    families = {runtime_family(n) for n in runtime_names}
    for family in ("rocm", "xpu"):
        if family in families:
            return family
    return "cuda" if devices or gpu_activity else None


def distributed_info(metadata: Mapping[str, Any]) -> tuple[int | None, int | None, str | None]:
    """(rank, world size, backend) from ``distributedInfo``; None where not stated."""
    info = metadata.get("distributedInfo")
    if not isinstance(info, dict):
        return None, None, None
    rank = info.get("rank")
    world = info.get("world_size")
    backend = info.get("backend")
    return (
        rank if _is_int(rank) else None,
        world if _is_int(world) and world is not None and world > 0 else None,
        backend if isinstance(backend, str) and backend else None,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
