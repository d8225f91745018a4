"""Records of a running job, as the live view and ``torchdiag watch`` see them."""

from __future__ import annotations

from torchdiag.record import (
    Environment,
    GpuSeries,
    HostSeries,
    LoaderInfo,
    RunRecord,
    RunState,
    RunStatus,
    Samples,
    StepSeries,
)

GIB = 1024**3


def running_record(
    n_steps: int = 2000,
    *,
    step_ms: float = 50.0,
    wait_ms: float = 10.0,
    name: str = "train.py",
    batch: int | None = 32,
    length: int | None = 500,
    limit: int | None = None,
    gpus: int = 1,
    state: RunState = "running",
    rank: int = 0,
    world_size: int = 1,
) -> RunRecord:
    """A live record ``n_steps`` into a run: one row per step (a slow first step, then a steady
    jitter), samples every half second (4 cores, ``gpus`` GPUs) and one DataLoader of ``length``
    batches per epoch."""
    walls = [4 * step_ms] + [step_ms * (1 + 0.05 * ((i * 7) % 5)) for i in range(1, n_steps)]
    waits = [min(w, wait_ms * (1 + (i % 3) / 2)) for i, w in enumerate(walls)]
    starts = [0.0]
    for w in walls[:-1]:
        starts.append(starts[-1] + w / 1e3)
    total_s = sum(walls) / 1e3
    steps = StepSeries(
        detection="optimizer",
        count=n_steps,
        total_wall_s=total_s,
        total_input_wait_s=sum(waits) / 1e3,
        first_step=list(range(n_steps)),
        steps=[1] * n_steps,
        start_s=starts,
        wall_ms=walls,
        input_wait_ms=waits,
        max_wall_ms=walls,
        profiled=[False] * n_steps,
        limit=limit,
    )
    rows = max(1, int(total_s / 0.5))
    t = [0.5 * i for i in range(rows)]
    host = HostSeries(
        cpu_count=4,
        memory_total_bytes=64 * GIB,
        cpu_pct_per_core=[[40.0 + i % 20, 60.0, 20.0, 30.0] for i in range(rows)],
        process_cpu_pct=[100.0 + i % 30 for i in range(rows)],
        process_rss_bytes=[3.0 * GIB] * rows,
        memory_used_bytes=[20.0 * GIB] * rows,
    )
    gpu_series = [
        GpuSeries(
            index=g,
            name="NVIDIA H100 80GB HBM3",
            memory_total_bytes=80 * GIB,
            utilization_pct=[50.0 + 10 * g + (i % 40) for i in range(rows)],
            memory_used_bytes=[float((10 + g) * GIB + (i % 50) * 2**24) for i in range(rows)],
        )
        for g in range(gpus)
    ]
    samples = Samples(sample_count=rows, t_s=t, rows_merged=[1] * rows, host=host, gpus=gpu_series)
    loaders = []
    if batch is not None:
        epochs = n_steps // length + 1 if length else 1
        loaders.append(
            LoaderInfo(
                loader_id=0,
                dataset="ImageFolder",
                batch_size=batch,
                batches=n_steps,
                length=length,
                epochs=epochs,
                epoch_batches=n_steps % length if length else n_steps,
            )
        )
    return RunRecord(
        name=name,
        started_utc="2026-12-06T01:00:00+00:00",
        duration_s=total_s + 0.5,
        status=RunStatus(state=state),
        rank=rank,
        world_size=world_size,
        steps=steps,
        samples=samples,
        environment=Environment(loaders=loaders),
    )
