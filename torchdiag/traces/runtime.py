"""What a CUDA / HIP / SYCL runtime or driver call does, from its name.

A trace records every runtime call the host made. Three kinds matter to the diagnosis: kernel
launches (the host cost of issuing work), CUDA-graph launches (many kernels for one call), and
calls that make the host wait for the device (synchronisations). Everything else (memset, event
record, attribute queries ...) is ``OTHER``.

Name variants are folded before lookup: the per-thread default-stream suffixes ``_ptsz`` /
``_ptds`` and driver API versions ``_v2`` / ``_v3`` (``cuMemcpyDtoH_v2``).
"""

from __future__ import annotations

import re

__all__ = [
    "GRAPH_LAUNCH",
    "KERNEL_LAUNCH",
    "OTHER",
    "SYNC",
    "runtime_family",
    "runtime_kind",
]

OTHER, KERNEL_LAUNCH, GRAPH_LAUNCH, SYNC = 0, 1, 2, 3

_LAUNCHES = frozenset(
    {
        # CUDA runtime and driver
        "cudaLaunchKernel",
        "cudaLaunchKernelExC",
        "cudaLaunchKernelEx",
        "cudaLaunchCooperativeKernel",
        "cudaLaunchCooperativeKernelMultiDevice",
        "cuLaunchKernel",
        "cuLaunchKernelEx",
        "cuLaunchCooperativeKernel",
        "cuLaunchGrid",
        "cuLaunchGridAsync",
        # HIP (ROCm)
        "hipLaunchKernel",
        "hipLaunchKernelExC",
        "hipExtLaunchKernel",
        "hipModuleLaunchKernel",
        "hipExtModuleLaunchKernel",
        "hipHccModuleLaunchKernel",
        "hipLaunchCooperativeKernel",
        "hipModuleLaunchCooperativeKernel",
        "hipExtLaunchMultiKernelMultiDevice",
        # SYCL / Level Zero (Intel XPU)
        "urEnqueueKernelLaunch",
        "piEnqueueKernelLaunch",
        "zeCommandListAppendLaunchKernel",
    }
)
_GRAPH_LAUNCHES = frozenset({"cudaGraphLaunch", "cuGraphLaunch", "hipGraphLaunch"})
# Calls that block the host until the device (or a stream, or an event) is done. Synchronous
# copies count: cudaMemcpy returns only once the copy, and so all work before it, finished.
# cudaStreamWaitEvent is not here: it makes a *stream* wait, the host carries on.
_SYNCS = frozenset(
    {
        "cudaDeviceSynchronize",
        "cudaStreamSynchronize",
        "cudaEventSynchronize",
        "cudaThreadSynchronize",
        "cuCtxSynchronize",
        "cuStreamSynchronize",
        "cuEventSynchronize",
        "cudaMemcpy",
        "cudaMemcpy2D",
        "cudaMemcpy3D",
        "cudaMemcpyPeer",
        "cudaMemcpyToSymbol",
        "cudaMemcpyFromSymbol",
        "cudaMemcpy2DToArray",
        "cudaMemcpy2DFromArray",
        "cuMemcpy",
        "cuMemcpyDtoH",
        "cuMemcpyHtoD",
        "cuMemcpy2D",
        "cuMemcpy3D",
        "cuMemcpyPeer",
        "hipDeviceSynchronize",
        "hipStreamSynchronize",
        "hipEventSynchronize",
        "hipCtxSynchronize",
        "hipMemcpy",
        "hipMemcpyDtoH",
        "hipMemcpyHtoD",
        "hipMemcpy2D",
        "hipMemcpy3D",
        "hipMemcpyPeer",
        "hipMemcpyToSymbol",
        "hipMemcpyFromSymbol",
        # PyTorch on ROCm copies with this instead of async copy + stream synchronize.
        "hipMemcpyWithStream",
        "urQueueFinish",
        "piQueueFinish",
        "urEventWait",
        "piEventsWait",
        "zeHostSynchronize",
        "zeCommandQueueSynchronize",
        "zeEventHostSynchronize",
    }
)
_SUFFIX = re.compile(r"(?:_ptsz|_ptds|_v\d)+$")
_KINDS: dict[str, int] = {}


def runtime_kind(name: str) -> int:
    """``KERNEL_LAUNCH``, ``GRAPH_LAUNCH``, ``SYNC`` or ``OTHER`` for a runtime call ``name``."""
    kind = _KINDS.get(name)
    if kind is None:
        base = _SUFFIX.sub("", name)
        if base in _LAUNCHES:
            kind = KERNEL_LAUNCH
        elif base in _GRAPH_LAUNCHES:
            kind = GRAPH_LAUNCH
        elif base in _SYNCS:
            kind = SYNC
        else:
            kind = OTHER
        if len(_KINDS) < 65536:  # names come from files: bound the cache
            _KINDS[name] = kind
    return kind


def runtime_family(name: str) -> str | None:
    """The accelerator stack a runtime call belongs to: "cuda", "rocm", "xpu", or None."""
    if name.startswith("hip"):
        return "rocm"
    if name.startswith(("cuda", "cu")):
        return "cuda"
    if name.startswith(("ur", "pi", "ze", "sycl")):
        return "xpu"
    return None
