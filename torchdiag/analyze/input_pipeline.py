"""Input-pipeline rules: the step waits for data (``dataloader-stall``), and too few loader
workers to feed it (``dataloader-workers``)."""

from __future__ import annotations

from dataclasses import dataclass

from torchdiag.analyze.finding import NEGLIGIBLE_SAVING_PCT, Finding, severity_for_saving
from torchdiag.analyze.registry import SkipRule, rule
from torchdiag.analyze.wording import is_inference, step_noun
from torchdiag.record import LoaderInfo, RunRecord
from torchdiag.view.run_view import RunView
from torchdiag.view.step_model import StepTime, step_evidence

# Below this share the wait is within what timing a blocking call around prefetched batches can
# resolve (tens of microseconds against millisecond steps) and not worth a user's attention.
NEGLIGIBLE_WAIT_SHARE = 0.02


def _stall(view: RunView) -> tuple[StepTime, float, float]:
    """The step estimate, the share of it spent waiting for data, and the possible saving."""
    record = view.record
    timing = view.timing
    if timing is None or timing.step_ms <= 0:
        raise SkipRule("no steps were recorded")
    summary = view.summary
    share = timing.input_wait_share
    if record.source == "trace" and summary is not None and summary.steps and summary.has_gpu:
        # A trace shows directly whether the GPU idled while the host waited for data
        # (breakdown.input_wait): a better loader can reclaim only that part of the wait.
        waited = sum(s.dataloader_ms for s in summary.steps)
        idle = sum(s.breakdown.input_wait for s in summary.steps)
        saving = share * (idle / waited) if waited > 0 else 0.0
        return timing, share, max(0.0, min(share, saving))
    busy = timing.gpu_busy_share
    # While the host waits for data the GPU may still be draining queued kernels; a better
    # loader can only reclaim time the GPU was idle. Without GPU data the wait is the bound.
    saving = share if busy is None else min(share, 1.0 - busy)
    return timing, share, max(saving, 0.0)


def _slowest_loader(record: RunRecord) -> LoaderInfo | None:
    loaders = record.environment.loaders
    return max(loaders, key=lambda info: info.wait_s) if loaders else None


@rule("dataloader-stall")
def dataloader_stall(view: RunView) -> Finding | None:
    """The training (or evaluation) loop blocks on the next batch for a measurable share of each
    step."""
    record = view.record
    timing, share, saving = _stall(view)
    if share < NEGLIGIBLE_WAIT_SHARE:
        return None
    loader = _slowest_loader(record)
    evidence: dict[str, float | int | str | bool | None] = {
        "input_wait_share_pct": round(share * 100, 1),
        "mean_input_wait_ms": round(timing.input_wait_ms, 2),
        **step_evidence(timing),
    }
    if timing.gpu_busy_share is not None:
        evidence["gpu_busy_pct"] = round(timing.gpu_busy_share * 100, 1)
    if loader is not None:
        evidence["num_workers"] = loader.num_workers
        evidence["batch_size"] = loader.batch_size
    return Finding(
        id="dataloader-stall",
        severity=severity_for_saving(saving * 100),
        title=f"input-bound: {share * 100:.0f}% of each {step_noun(view)} waits for data",
        evidence=evidence,
        recommendation=(
            f"The {_loop(view)} waits for the DataLoader. Load batches in parallel worker "
            "processes, keep them alive across epochs and prefetch ahead; if workers are already "
            "busy, make __getitem__ cheaper (decode once, cache, move augmentation to the GPU)."
        ),
        snippet=_loader_snippet(loader, record, shuffle=not is_inference(view)),
        saving_pct_max=round(saving * 100, 1),
    )


@rule("dataloader-workers")
def dataloader_workers(view: RunView) -> Finding | None:
    """The loader that stalls has no (or too few) worker processes to hide its loads."""
    record = view.record
    timing, share, saving = _stall(view)
    if share < NEGLIGIBLE_WAIT_SHARE:
        return None
    loader = _slowest_loader(record)
    iterator = loader.iterator if loader is not None else _trace_iterator(view)
    if loader is None and iterator is None:
        raise SkipRule("no DataLoader settings or iterator class were recorded")
    cores = _cores_per_rank(record)
    if loader is not None:
        workers = loader.num_workers
    elif iterator == "_SingleProcessDataLoaderIter":
        workers = 0
    else:
        return None  # a multi-process iterator in a trace: the worker count is unknown
    busy_workers = _mean_workers_cpu_share(record)
    waiting_cpu = _wait_cpu_share(loader)
    evidence: dict[str, float | int | str | bool | None] = {
        "num_workers": workers,
        "iterator": iterator or None,
        "cpu_cores_per_rank": cores,
        "input_wait_share_pct": round(share * 100, 1),
    }
    if busy_workers is not None:
        evidence["workers_cpu_pct_each"] = round(busy_workers * 100, 1)
    if waiting_cpu is not None:
        evidence["cpu_while_waiting_pct"] = round(waiting_cpu * 100, 1)
    if workers == 0:
        # The training process prepares each batch while it waits: its CPU during the waits is
        # the load's own computing, the rest is waiting on reads.
        load_cpu = waiting_cpu
    else:
        if waiting_cpu is not None and waiting_cpu >= 0.5:
            return None  # the wait is this process's own work (receiving, collating, pinning)
        if waiting_cpu is None and busy_workers is not None and busy_workers < 0.5:
            return None  # idle workers, and nothing says where the wait goes instead
        load_cpu = busy_workers
    compute_ms = max(0.0, timing.step_ms - timing.input_wait_ms)
    load = BatchLoad(
        ms=_batch_load_ms(workers, timing.input_wait_ms, compute_ms),
        cpu_share=1.0 if load_cpu is None else load_cpu,
        loop_ms=compute_ms,
    )
    target = load.fewest_workers(cores)
    if workers >= target:
        return None  # as many workers as help already: the stall finding says why it remains
    evidence["suggested_num_workers"] = target
    new_step = load.step_ms(target, cores)
    saving = min(saving, max(0.0, 1.0 - new_step / timing.step_ms))
    evidence["batch_load_ms"] = round(load.ms, 2)
    evidence["batch_load_cpu_pct"] = None if load_cpu is None else round(load_cpu * 100, 1)
    evidence["step_without_wait_ms"] = round(compute_ms, 2)
    if saving * 100 < NEGLIGIBLE_SAVING_PCT:
        return None
    title = (
        f"DataLoader runs in the {'main' if is_inference(view) else 'training'} process "
        "(num_workers=0)"
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
            f"prepared while the model {'runs' if is_inference(view) else 'trains'}; with "
            "persistent_workers the workers survive between epochs."
        ),
        snippet=_loader_snippet(loader, record, workers=target, shuffle=not is_inference(view)),
        saving_pct_max=round(saving * 100, 1),
    )


# Beyond this many workers returns usually flatten while memory (a dataset copy per worker) and
# start-up time keep growing.
MAX_SUGGESTED_WORKERS = 8


@dataclass(frozen=True)
class BatchLoad:
    """How one batch is prepared, and what a step costs with ``workers`` processes preparing.

    ``ms`` is one batch's time in one process and ``cpu_share`` the share of it on a CPU;
    ``loop_ms`` is the training loop's own work per step, taken to be all on a CPU (on a GPU run
    the host does less, so the cores are if anything underrated). Workers taking turns deliver a
    batch every ``ms / workers``: waits on reads overlap across workers without taking a core.
    Computing does not: per step the cores do the loop's work and one batch's computing. A loop
    that waits for data leaves its core to the workers, so it is counted by its work, not as a
    core of its own.
    """

    ms: float
    cpu_share: float
    loop_ms: float

    def step_ms(self, workers: int, cores: int | None) -> float:
        """The step with ``workers`` worker processes on ``cores`` cores per rank."""
        step = max(self.loop_ms, self.ms / max(1, workers))
        if cores is not None:
            step = max(step, (self.loop_ms + self.cpu_share * self.ms) / cores)
        return step

    def fewest_workers(self, cores: int | None) -> int:
        """The fewest workers (at most :data:`MAX_SUGGESTED_WORKERS`) giving the shortest step."""
        shortest = self.step_ms(MAX_SUGGESTED_WORKERS, cores)
        return next(
            n
            for n in range(1, MAX_SUGGESTED_WORKERS + 1)
            if self.step_ms(n, cores) <= shortest * (1 + 1e-9)
        )


def _batch_load_ms(workers: int, wait_ms: float, compute_ms: float) -> float:
    """Time one process takes to prepare one batch, from the wait it causes.

    Without workers the training process prepares each batch while the step waits: the wait is
    the load. With ``workers`` processes taking turns, a batch is ready every load / workers, and
    the step waits for the part of that not hidden behind its own work.
    """
    if workers <= 0:
        return wait_ms
    return workers * (wait_ms + compute_ms)


def _wait_cpu_share(loader: LoaderInfo | None) -> float | None:
    """CPU time of the process during the waits on ``loader``, as a share of their wall time."""
    if loader is None or loader.wait_cpu_s is None or loader.wait_s <= 0:
        return None
    return min(1.0, loader.wait_cpu_s / loader.wait_s)


def _spare_cores(cores: int) -> int:
    """Cores a rank's loader workers can compute on: one stays with the training loop."""
    return max(1, cores - 1)


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
    """Workers for a loader whose load is not known: as many as the spare cores allow."""
    if cores is None:
        return 4
    return min(MAX_SUGGESTED_WORKERS, _spare_cores(cores))


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


def _loop(view: RunView) -> str:
    """The loop that reads the DataLoader: an inference run's is an evaluation loop."""
    return "evaluation loop" if is_inference(view) else "training loop"


def _loader_snippet(
    loader: LoaderInfo | None,
    record: RunRecord,
    workers: int | None = None,
    *,
    shuffle: bool = True,
) -> str:
    n = workers if workers is not None else max(_suggested_workers(_cores_per_rank(record)), 1)
    pin = "True" if _has_gpu(record) else "False"
    batch = loader.batch_size if loader is not None and loader.batch_size else "batch_size"
    return (
        "loader = torch.utils.data.DataLoader(\n"
        f"    dataset, batch_size={batch}, shuffle={shuffle},\n"
        f"    num_workers={n}, persistent_workers=True, prefetch_factor=4,\n"
        f"    pin_memory={pin},\n"
        ")"
    )


def _has_gpu(record: RunRecord) -> bool:
    summaries = list(record.traces)
    if record.profiler is not None and record.profiler.summary is not None:
        summaries.append(record.profiler.summary)
    return bool(record.environment.devices) or any(t.has_gpu for t in summaries)


def _trace_iterator(view: RunView) -> str | None:
    """The DataLoader iterator class a trace shows most often (says whether workers were used)."""
    summary = view.summary
    if summary is None or not summary.dataloader_iterators:
        return None
    counts = summary.dataloader_iterators
    return max(sorted(counts), key=lambda name: counts[name])


@rule("pin-memory")
def pin_memory(view: RunView) -> Finding | None:
    """Host-to-device copies from pageable memory: staged, synchronous, slower."""
    record = view.record
    summary = view.summary
    if summary is None or not summary.steps:
        raise SkipRule("needs a profiler window or trace to see the copies")
    pageable = [c for c in summary.copies if c.direction == "HtoD" and c.pageable]
    if not pageable:
        return None
    timing = view.timing
    if timing is None or timing.step_ms <= 0:
        raise SkipRule("no step time")
    n = len(summary.steps)
    copy_ms = sum(c.total_ms for c in pageable) / n
    nbytes = sum(c.bytes for c in pageable)
    # A pageable copy is staged through a driver buffer and blocks the host; pinned memory with
    # non_blocking=True lets it overlap compute, so at most the copy's own time is won back.
    saving = min(copy_ms, timing.step_ms) / timing.step_ms * 100
    if saving < NEGLIGIBLE_SAVING_PCT:
        return None
    seconds = sum(c.total_ms for c in pageable) / 1e3
    loader = _slowest_loader(record)
    return Finding(
        id="pin-memory",
        severity=severity_for_saving(saving),
        title="host-to-device copies come from pageable memory",
        evidence={
            "pageable_copies": sum(c.count for c in pageable),
            "pageable_mib_per_step": round(nbytes / n / 2**20, 2),
            "pageable_copy_ms_per_step": round(copy_ms, 2),
            "pageable_bandwidth_gb_s": round(nbytes / seconds / 1e9, 2) if seconds else None,
            "loader_pin_memory": None if loader is None else loader.pin_memory,
            "step_ms": round(timing.step_ms, 2),
        },
        recommendation=(
            "Let the DataLoader return batches in pinned (page-locked) memory and copy them "
            "with non_blocking=True so the transfer overlaps compute at full bandwidth."
        ),
        snippet=(
            "loader = torch.utils.data.DataLoader(dataset, ..., pin_memory=True)\n"
            "images = images.to(device, non_blocking=True)"
        ),
        saving_pct_max=round(saving, 1),
    )
