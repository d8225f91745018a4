"""Markers of parallelism and compilation: which wrappers and runtimes the trace shows.

They are counts of events PyTorch emits by name: ``record_function`` regions of the
data-parallel wrappers (``DataParallel.forward``, ``DistributedDataParallel.forward``,
``FullyShardedDataParallel.forward`` and FSDP2's ``FSDP::*``), collective calls
(``nccl:all_reduce``, ``gloo:all_reduce`` ...), torch.compile's compiled graphs
(``Torch-Compiled Region: 0/0``, the ``CompiledFunction`` autograd function, Inductor's
``## Call CompiledFxGraph ... ##``), and, from the GPU side, collective kernels and CUDA graph
launches.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["count_markers"]

_COLLECTIVE_PREFIXES = ("nccl:", "gloo:", "mpi:", "ucc:", "xccl:")


def count_markers(
    host_names: Iterable[tuple[str, int]], nccl_kernels: int, cuda_graph_launches: int
) -> dict[str, int]:
    """Marker counts from (operator or annotation name, calls) pairs and GPU-side counts.

    Keys present only when non-zero: ``DataParallel``, ``DistributedDataParallel``,
    ``FullyShardedDataParallel``, ``collectives``, ``compiled_regions``, ``nccl_kernels``,
    ``cuda_graph_launches``.
    """
    counts: dict[str, int] = {}
    compiled = {"region": 0, "function": 0, "graph": 0}

    def bump(key: str, n: int) -> None:
        counts[key] = counts.get(key, 0) + n

    for name, n in host_names:
        if name == "DataParallel.forward":
            bump("DataParallel", n)
        elif name == "DistributedDataParallel.forward":
            bump("DistributedDataParallel", n)
        elif name.startswith(("FullyShardedDataParallel.", "FSDP::")):
            bump("FullyShardedDataParallel", n)
        elif name.startswith(_COLLECTIVE_PREFIXES):
            bump("collectives", n)
        elif name.startswith("Torch-Compiled Region"):
            compiled["region"] += n
        elif name == "CompiledFunction":
            compiled["function"] += n
        elif name.startswith("## Call CompiledFxGraph"):
            compiled["graph"] += n
    # One compiled call shows up under up to three names: count the most telling one.
    regions = max(compiled.values())
    if regions:
        counts["compiled_regions"] = regions
    if nccl_kernels:
        counts["nccl_kernels"] = nccl_kernels
    if cuda_graph_launches:
        counts["cuda_graph_launches"] = cuda_graph_launches
    return dict(sorted(counts.items()))
