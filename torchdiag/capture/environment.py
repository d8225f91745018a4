"""Snapshot the settings that decide training speed: versions, devices, backend flags, parallelism.

Each probe is guarded on its own: a failing probe leaves its field ``None`` and never stops the
snapshot, let alone training.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import psutil

from torchdiag.capture.privacy import host_label, redact_argv
from torchdiag.record import DeviceInfo, DistributedInfo, Environment, OptimizerInfo, ParameterInfo

T = TypeVar("T")

# Only variables that shape performance, never the whole environment: it holds credentials.
_ENV_ALLOWLIST = (
    "CUDA_VISIBLE_DEVICES",
    "CUDA_LAUNCH_BLOCKING",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "PYTORCH_CUDA_ALLOC_CONF",
    "TORCH_CUDNN_V8_API_ENABLED",
    "NCCL_DEBUG",
    "NCCL_P2P_DISABLE",
    "NCCL_IB_DISABLE",
    "NCCL_ALGO",
    "NCCL_PROTO",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING",
    "TORCHINDUCTOR_MAX_AUTOTUNE",
    "LOCAL_RANK",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
)


def _probe(fn: Callable[[], T]) -> T | None:
    try:
        return fn()
    except Exception:
        return None


def snapshot_environment(version: str, *, redact: bool = True) -> Environment:
    """Versions, devices and global flags as they are now (call inside the block).

    With ``redact`` (the default) the host is a short hash and the command line keeps the
    script's file name and hides secret values (:mod:`torchdiag.capture.privacy`).
    """
    import torch

    hostname = _probe(socket.gethostname) or ""
    env = Environment(
        torchdiag_version=version,
        python=platform.python_version(),
        platform=platform.platform(),
        hostname=host_label(hostname) if redact else hostname,
        pid=os.getpid(),
        argv=redact_argv(list(sys.argv)) if redact else list(sys.argv),
        torch_version=str(torch.__version__),
        cuda_version=_probe(lambda: str(torch.version.cuda) if torch.version.cuda else None),
        cudnn_version=_probe(torch.backends.cudnn.version),
        cpu_count_logical=psutil.cpu_count(logical=True),
        cpu_count_physical=_probe(lambda: psutil.cpu_count(logical=False)),
        memory_total_bytes=_probe(lambda: psutil.virtual_memory().total),
        num_threads=_probe(torch.get_num_threads),
        env_vars={k: os.environ[k] for k in _ENV_ALLOWLIST if k in os.environ},
    )
    env.devices = _probe(_cuda_devices) or []
    env.cudnn_benchmark = _probe(lambda: bool(torch.backends.cudnn.benchmark))
    env.cudnn_deterministic = _probe(lambda: bool(torch.backends.cudnn.deterministic))
    env.tf32_matmul = _probe(lambda: bool(torch.backends.cuda.matmul.allow_tf32))
    env.tf32_cudnn = _probe(lambda: bool(torch.backends.cudnn.allow_tf32))
    env.float32_matmul_precision = _probe(torch.get_float32_matmul_precision)
    env.deterministic_algorithms = _probe(torch.are_deterministic_algorithms_enabled)
    env.distributed = _probe(distributed_info) or DistributedInfo()
    return env


def _cuda_devices() -> list[DeviceInfo]:
    import torch

    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append(
            DeviceInfo(
                index=i,
                name=p.name,
                kind="rocm" if torch.version.hip else "cuda",
                capability=f"{p.major}.{p.minor}",
                memory_total_bytes=int(p.total_memory),
                multiprocessors=int(p.multi_processor_count),
            )
        )
    return out


def distributed_info() -> DistributedInfo:
    """Rank and world size from torch.distributed, else from the launcher's variables."""
    import torch.distributed as dist

    local_rank = _int_env("LOCAL_RANK")
    local_world = _int_env("LOCAL_WORLD_SIZE")
    if dist.is_available() and dist.is_initialized():
        return DistributedInfo(
            initialized=True,
            backend=str(dist.get_backend()),
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=local_rank,
            local_world_size=local_world,
        )
    # torchrun sets these before the script initialises the process group.
    return DistributedInfo(
        initialized=False,
        rank=_int_env("RANK") or 0,
        world_size=_int_env("WORLD_SIZE") or 1,
        local_rank=local_rank,
        local_world_size=local_world,
    )


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def optimizer_info(optimizer: Any, steps: int) -> OptimizerInfo:
    """Class and the options that decide its kernel path (foreach / fused)."""
    defaults = getattr(optimizer, "defaults", {}) or {}
    groups = getattr(optimizer, "param_groups", []) or []
    return OptimizerInfo(
        class_name=type(optimizer).__name__,
        foreach=_first_option(groups, defaults, "foreach"),
        fused=_first_option(groups, defaults, "fused"),
        param_groups=len(groups),
        parameters=sum(len(g.get("params", ())) for g in groups),
        steps=steps,
    )


def _first_option(groups: list[dict[str, Any]], defaults: dict[str, Any], key: str) -> bool | None:
    for g in groups:
        if g.get(key) is not None:
            return bool(g[key])
    value = defaults.get(key)
    return None if value is None else bool(value)


def parameter_info(optimizers: Iterable[Any]) -> ParameterInfo:
    """Parameters reached through the optimizers (the model itself is never handed to us)."""
    seen: set[int] = set()
    info = ParameterInfo()
    devices: set[str] = set()
    for opt in optimizers:
        for group in getattr(opt, "param_groups", []):
            for p in group.get("params", ()):
                if id(p) in seen:
                    continue
                seen.add(id(p))
                n = int(p.numel())
                dtype = str(p.dtype).replace("torch.", "")
                info.tensors += 1
                info.elements += n
                info.elements_by_dtype[dtype] = info.elements_by_dtype.get(dtype, 0) + n
                devices.add(str(p.device))
    info.devices = sorted(devices)
    return info


def dynamo_counters() -> tuple[bool | None, dict[str, dict[str, int]]]:
    """Whether torch.compile ran, and dynamo's counters (only if dynamo was already imported)."""
    mod = sys.modules.get("torch._dynamo.utils")
    if mod is None:
        # Importing dynamo costs seconds; if nothing imported it, nothing was compiled.
        return (False if "torch._dynamo" not in sys.modules else None), {}
    counters = getattr(mod, "counters", {})
    wanted = ("stats", "frames", "graph_break", "recompiles", "unimplemented")
    out = {
        group: {str(k): int(v) for k, v in counters[group].items()}
        for group in wanted
        if counters.get(group)
    }
    frames_ok = out.get("frames", {}).get("ok", 0)
    graphs = out.get("stats", {}).get("unique_graphs", 0)
    return bool(frames_ok or graphs), out
