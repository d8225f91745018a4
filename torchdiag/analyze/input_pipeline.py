"""Input-pipeline rules: the step waits for data (``dataloader-stall``), and too few loader
workers to feed it (``dataloader-workers``)."""

from __future__ import annotations

from torchdiag.analyze.finding import Finding, severity_for_saving
from torchdiag.analyze.registry import SkipRule, rule
from torchdiag.analyze.step_stats import SteadySteps, mean_gpu_busy_share, steady_steps
from torchdiag.record import LoaderInfo, RunRecord

# Below this share the wait is within what timing a blocking call around prefetched batches can
# resolve (tens of microseconds against millisecond steps) and not worth a user's attention.
NEGLIGIBLE_WAIT_SHARE = 0.02


def _stall(record: RunRecord) -> tuple[SteadySteps, float, float | None]:
    """Steady steps, the possible saving (0-1) and the GPU busy share used to bound it."""
    if record.steps.count == 0:
        raise SkipRule("no steps were recorded")
    steady = steady_steps(record)
    if steady.wall_s <= 0:
        raise SkipRule("the recorded steps have no duration")
    share = steady.input_wait_share
    busy = mean_gpu_busy_share(record)
    # While the host waits for data the GPU may still be draining queued kernels; a better
    # loader can only reclaim time the GPU was idle. Without GPU samples the wait is the bound.
    saving = share if busy is None else min(share, 1.0 - busy)
    return steady, max(saving, 0.0), busy


def _slowest_loader(record: RunRecord) -> LoaderInfo | None:
    loaders = record.environment.loaders
    return max(loaders, key=lambda info: info.wait_s) if loaders else None


@rule("dataloader-stall")
def dataloader_stall(record: RunRecord) -> Finding | None:
    """The training loop blocks on the next batch for a measurable share of each step."""
    steady, saving, busy = _stall(record)
    share = steady.input_wait_share
    if share < NEGLIGIBLE_WAIT_SHARE:
        return None
    loader = _slowest_loader(record)
    evidence: dict[str, float | int | str | bool | None] = {
        "input_wait_share_pct": round(share * 100, 1),
        "mean_input_wait_ms": round(steady.input_wait_s / steady.steps * 1e3, 2),
        "mean_step_ms": round(steady.mean_step_ms, 2),
        "steps": steady.steps,
        "steps_used": steady.excluded,
    }
    if busy is not None:
        evidence["gpu_busy_pct_nvml"] = round(busy * 100, 1)
    if loader is not None:
        evidence["num_workers"] = loader.num_workers
        evidence["batch_size"] = loader.batch_size
    return Finding(
        id="dataloader-stall",
        severity=severity_for_saving(saving * 100),
        title=f"input-bound: {share * 100:.0f}% of each step waits for data",
        evidence=evidence,
        recommendation=(
            "The training loop waits for the DataLoader. Load batches in parallel worker "
            "processes, keep them alive across epochs and prefetch ahead; if workers are already "
            "busy, make __getitem__ cheaper (decode once, cache, move augmentation to the GPU)."
        ),
        snippet=_loader_snippet(loader, record),
        saving_pct_max=round(saving * 100, 1),
    )


@rule("dataloader-workers")
def dataloader_workers(record: RunRecord) -> Finding | None:
    """The loader that stalls has no (or too few) worker processes for the cores available."""
    steady, saving, _ = _stall(record)
    share = steady.input_wait_share
    if share < NEGLIGIBLE_WAIT_SHARE:
        return None
    loader = _slowest_loader(record)
    if loader is None:
        raise SkipRule("no DataLoader settings were recorded")
    cores = _cores_per_rank(record)
    workers = loader.num_workers
    busy_workers = _mean_workers_cpu_share(record)
    evidence: dict[str, float | int | str | bool | None] = {
        "num_workers": workers,
        "iterator": loader.iterator or None,
        "cpu_cores_per_rank": cores,
        "input_wait_share_pct": round(share * 100, 1),
    }
    if busy_workers is not None:
        evidence["workers_cpu_pct_each"] = round(busy_workers * 100, 1)
    if workers > 0:
        if cores is not None and workers + 1 >= cores:
            return None  # no spare cores: more workers cannot help, the stall finding says why
        if busy_workers is not None and busy_workers < 0.5:
            return None  # workers are mostly idle: the bottleneck is elsewhere (I/O, collation)
    target = _suggested_workers(cores)
    if workers >= target:
        return None
    evidence["suggested_num_workers"] = target
    title = (
        "DataLoader runs in the training process (num_workers=0)"
        if workers == 0
        else f"too few DataLoader workers ({workers}) for the input stall"
    )
    return Finding(
        id="dataloader-workers",
        severity=severity_for_saving(saving * 100),
        title=title,
        evidence=evidence,
        recommendation=(
            f"Use {target} loader worker process{'es' if target > 1 else ''} so batches are "
            "prepared while the model trains; with persistent_workers the workers survive "
            "between epochs."
        ),
        snippet=_loader_snippet(loader, record, workers=target),
        saving_pct_max=round(saving * 100, 1),
    )


def _cores_per_rank(record: RunRecord) -> int | None:
    env = record.environment
    cores = env.cpu_count_logical
    if cores is None:
        return None
    local = env.distributed.local_world_size or (
        env.distributed.world_size if env.distributed.world_size > 1 else 1
    )
    return max(1, cores // max(1, local))


def _suggested_workers(cores: int | None) -> int:
    # One core stays with the training loop; beyond 8 workers returns usually flatten while
    # memory (one dataset copy per worker) keeps growing.
    if cores is None:
        return 4
    return max(1, min(8, cores - 1))


def _mean_workers_cpu_share(record: RunRecord) -> float | None:
    """Mean CPU of one worker (0-1 of a core), from the sampler, if workers were seen."""
    samples = record.samples
    if samples is None or samples.host is None:
        return None
    pairs = [
        (cpu, n)
        for cpu, n in zip(samples.host.workers_cpu_pct, samples.host.worker_count, strict=False)
        if cpu is not None and n
    ]
    if not pairs:
        return None
    return sum(cpu / n for cpu, n in pairs) / len(pairs) / 100.0


def _loader_snippet(
    loader: LoaderInfo | None, record: RunRecord, workers: int | None = None
) -> str:
    n = workers if workers is not None else max(_suggested_workers(_cores_per_rank(record)), 1)
    pin = "True" if _has_gpu(record) else "False"
    batch = loader.batch_size if loader is not None and loader.batch_size else "batch_size"
    return (
        "loader = torch.utils.data.DataLoader(\n"
        f"    dataset, batch_size={batch}, shuffle=True,\n"
        f"    num_workers={n}, persistent_workers=True, prefetch_factor=4,\n"
        f"    pin_memory={pin},\n"
        ")"
    )


def _has_gpu(record: RunRecord) -> bool:
    summaries = list(record.traces)
    if record.profiler is not None and record.profiler.summary is not None:
        summaries.append(record.profiler.summary)
    return bool(record.environment.devices) or any(t.has_gpu for t in summaries)
