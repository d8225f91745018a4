"""``data-parallel``: GPUs left idle, or the single-process ``nn.DataParallel``."""

from __future__ import annotations

from torchdiag.analyze.finding import Finding, severity_for_saving
from torchdiag.analyze.registry import SkipRule, rule
from torchdiag.view.run_view import RunView

# nn.DataParallel's autograd functions (torch.nn.parallel._functions), recorded by the profiler
# under their class names: replicate broadcasts (its backward reduces), scatter and gather are
# each other's backward. Exact names: aten::gather/scatter_ are ordinary model operators.
_DP_FUNCTIONS = frozenset({"Broadcast", "ReduceAddCoalesced", "Scatter", "Gather"})

# A GPU whose mean NVML utilisation stays under this did no training work in the run.
IDLE_GPU_UTILISATION = 5.0

_DDP_SNIPPET = (
    "# torchrun --nproc-per-node=NUM_GPUS train.py\n"
    "torch.distributed.init_process_group('nccl')\n"
    "local_rank = int(os.environ['LOCAL_RANK'])\n"
    "torch.cuda.set_device(local_rank)\n"
    "model = torch.nn.parallel.DistributedDataParallel(model.cuda(), device_ids=[local_rank])\n"
    "sampler = torch.utils.data.distributed.DistributedSampler(dataset)"
)


@rule("data-parallel")
def data_parallel(view: RunView) -> Finding | None:
    """nn.DataParallel in use, or visible GPUs idle while one process trains on one."""
    record = view.record
    summary = view.summary
    markers = summary.markers if summary is not None else {}
    if markers.get("DataParallel"):
        return _data_parallel_in_use(view, markers["DataParallel"])
    samples = record.samples
    if samples is None or len(samples.gpus) < 2:
        raise SkipRule("needs NVML samples of two or more visible GPUs (a live capture)")
    if record.world_size > 1:
        return None
    means = {}
    for gpu in samples.gpus:
        values = [v for v in gpu.utilization_pct if v is not None]
        if values:
            means[gpu.index] = sum(values) / len(values)
    idle = sorted(i for i, m in means.items() if m < IDLE_GPU_UTILISATION)
    if not idle or len(idle) == len(means):
        return None
    n = len(means)
    used = n - len(idle)
    # With all n GPUs sharing the batch, time per sample falls at best to used/n of today's.
    saving = (1.0 - used / n) * 100
    return Finding(
        id="data-parallel",
        severity=severity_for_saving(saving),
        title=f"{len(idle)} of {n} visible GPUs sat idle",
        evidence={
            "visible_gpus": n,
            "idle_gpus": ", ".join(str(i) for i in idle),
            "world_size": record.world_size,
            "mean_utilisation_pct": ", ".join(f"{i}:{m:.0f}" for i, m in sorted(means.items())),
        },
        recommendation=(
            "Train on every GPU: launch one process per GPU with torchrun and wrap the model in "
            "DistributedDataParallel (or FSDP for models that do not fit one GPU). "
            "saving_pct_max is per sample, with perfect scaling."
        ),
        snippet=_DDP_SNIPPET,
        saving_pct_max=round(saving, 1),
    )


def _data_parallel_in_use(view: RunView, calls: int) -> Finding | None:
    """nn.DataParallel replicates the model and scatters inputs from one process every step."""
    summary = view.summary
    timing = view.timing
    overhead_ms = 0.0
    if summary is not None:
        # Replication, scatter and gather are the work DDP does not do per step.
        overhead_ms = sum(op.total_ms for op in summary.top_ops if op.name in _DP_FUNCTIONS)
    saving = 0.0
    if timing is not None and timing.step_ms > 0 and summary is not None and summary.steps:
        saving = min(overhead_ms / len(summary.steps), timing.step_ms) / timing.step_ms * 100
    return Finding(
        id="data-parallel",
        severity=severity_for_saving(saving),
        title="nn.DataParallel drives all GPUs from one Python process",
        evidence={
            "dataparallel_calls": calls,
            "replicate_scatter_gather_ms": round(overhead_ms, 2),
        },
        recommendation=(
            "DataParallel re-replicates the model and scatters and gathers through one process "
            "(and one GIL) every step; DistributedDataParallel runs one process per GPU and "
            "overlaps gradient communication with the backward pass."
        ),
        snippet=_DDP_SNIPPET,
        saving_pct_max=round(saving, 1),
    )
