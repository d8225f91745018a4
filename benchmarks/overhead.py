"""What torchdiag costs a training step.

Runs the same CPU training step (an MLP sized to take ~10-20 ms) in alternating blocks with and
without ``torchdiag.profile(profile_steps=0)`` (monitor-only: step hooks, DataLoader timing and
the background sampler), so machine noise hits both sides alike, and reports the ratio of the
median step times. The torch.profiler window is measured separately: how much slower its recorded
steps are, and the pause to export and summarise the trace. So is a checkpoint of the record
(snapshot, encoding and write), on a long run's record.

The live view (``profile(live=True)``, ``torchdiag watch``) is measured by the CPU time of its
work per second of training: a panel drawn about once a second and the rules re-run every few
seconds, on a record of the largest size a capture keeps (2048 step rows, 1024 sample rows).

    python benchmarks/overhead.py [--blocks 12] [--steps 40] [--json out.json] [--checkpoint-only]
                                  [--live-only]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import torch
import torch.nn as nn

import torchdiag
from torchdiag.capture.sampler import GPM_COLUMNS, GpuDevice, GpuReading, HostReading, Sampler
from torchdiag.record import (
    CollectorStatus,
    GpuSeries,
    HostSeries,
    RunRecord,
    RunStatus,
    Samples,
)


def make_step(width: int, batch: int) -> Callable[[], None]:
    """A training step on a synthetic batch through a DataLoader-free loop."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(batch, width)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
        opt.step()

    return step


def timed_steps(step: Callable[[], None], n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def calibrate(target_ms: float) -> tuple[int, int]:
    """Pick an MLP width whose step takes about ``target_ms`` on this machine."""
    width, batch = 512, 256
    for _ in range(8):
        step = make_step(width, batch)
        timed_steps(step, 5)
        ms = statistics.median(timed_steps(step, 15)) * 1e3
        if 0.7 * target_ms <= ms <= 1.4 * target_ms:
            break
        width = max(64, int(width * (target_ms / ms) ** 0.5))
    return width, batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=40, help="blocks per side, interleaved")
    parser.add_argument("--steps", type=int, default=25, help="steps per block")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1 keeps a 2-core machine's scheduler noise out of the step)",
    )
    parser.add_argument("--target-ms", type=float, default=15.0)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument(
        "--checkpoint-only", action="store_true", help="measure only what a checkpoint costs"
    )
    parser.add_argument(
        "--live-only", action="store_true", help="measure only what the live view costs"
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    width, batch = calibrate(args.target_ms)
    step = make_step(width, batch)
    timed_steps(step, 20)  # warm-up
    out_dir = Path(tempfile.mkdtemp(prefix="torchdiag-bench-"))
    if args.checkpoint_only:
        _report({"machine": _machine(), **checkpoint_figures(out_dir, step)}, args.json)
        return
    if args.live_only:
        _report({"machine": _machine(), **live_costs(step, out_dir)}, args.json)
        return

    plain: list[float] = []
    monitored: list[float] = []
    enter_exit: list[float] = []
    pair_ratios: list[float] = []
    sampler_cpu = 0.0
    for block in range(args.blocks):
        # Alternate which side goes first so drift over time does not favour either, and compare
        # each monitored block with the plain block run right beside it.
        medians = {}
        for side in (0, 1) if block % 2 == 0 else (1, 0):
            if side == 0:
                times = timed_steps(step, args.steps)
                plain += times
            else:
                t0 = time.perf_counter()
                with torchdiag.profile(out_dir / f"m{block}.json", profile_steps=0) as mon:
                    times = timed_steps(step, args.steps)
                enter_exit.append(time.perf_counter() - t0 - sum(times))
                assert mon.record is not None  # written when the block ends
                sampler_cpu += mon.record.overhead.get("sampler_cpu_s", 0.0)
                monitored += times
            medians[side] = statistics.median(times)
        pair_ratios.append(medians[1] / medians[0])

    # The profiler window: 5 recorded steps after 5 skipped, one warm-up included.
    skip, window = 5, 5
    t0 = time.perf_counter()
    with torchdiag.profile(out_dir / "w.json", skip_first=skip, profile_steps=window) as run:
        window_times = timed_steps(step, skip + window + 5)
    window_total = time.perf_counter() - t0
    record = run.record
    assert record is not None  # written when the block ends
    profiled = [t for t, p in zip(window_times, _profiled_flags(record), strict=False) if p]

    hook_us = hook_cost_us(out_dir)
    checkpoint = checkpoint_figures(out_dir, step)
    median_plain = statistics.median(plain)
    median_monitored = statistics.median(monitored)
    results: dict[str, Any] = {
        "machine": _machine(),
        "step": f"MLP width {width}, batch {batch}",
        "steps_per_side": len(plain),
        "median_step_ms_plain": round(median_plain * 1e3, 3),
        "median_step_ms_monitored": round(median_monitored * 1e3, 3),
        "monitor_overhead_pct": round((median_monitored / median_plain - 1) * 100, 2),
        "monitor_overhead_pct_paired": round((statistics.median(pair_ratios) - 1) * 100, 2),
        "paired_ratio_spread": [round(min(pair_ratios), 3), round(max(pair_ratios), 3)],
        "monitor_overhead_pct_paired_ci95": [
            round((x - 1) * 100, 2) for x in bootstrap_median_ci(pair_ratios)
        ],
        "hook_cost_us_per_step": round(hook_us, 2),
        "hook_cost_pct_of_step": round(hook_us / (median_plain * 1e6) * 100, 3),
        "sampler_cpu_pct_of_wall": round(sampler_cpu / sum(monitored) * 100, 3),
        "enter_exit_ms_median": round(statistics.median(enter_exit) * 1e3, 1),
        "profiled_steps": len(profiled),
        "profiled_step_ms_median": round(statistics.median(profiled) * 1e3, 3)
        if profiled
        else None,
        "profiler_slowdown_x": round(statistics.median(profiled) / median_plain, 2)
        if profiled
        else None,
        "profiler_export_and_summary_s": round(record.overhead.get("profiler_export_s", 0.0), 3),
        "profiler_block_total_s": round(window_total, 3),
    }
    if profiled:
        extra = sum(profiled) - len(profiled) * median_plain
        results["profiler_window_cost_s"] = round(
            extra + results["profiler_export_and_summary_s"], 3
        )
    results.update(live_costs(step, out_dir))
    results.update(checkpoint)
    _report(results, args.json)


def checkpoint_figures(out_dir: Path, step: Callable[[], None]) -> dict[str, Any]:
    """A checkpoint's cost with this machine's samples, and with a 64-core, 8-GPU host's."""
    return {
        "checkpoint": checkpoint_cost(out_dir, step, big_host=False),
        "checkpoint_64_cores_8_gpus": checkpoint_cost(out_dir, step, big_host=True),
    }


def checkpoint_cost(
    out_dir: Path, step: Callable[[], None], *, big_host: bool, n: int = 20
) -> dict[str, Any]:
    """What one checkpoint of the record costs (snapshot, encoding, write), on the largest record
    a checkpoint writes: a long run's, its step and sample series just short of being merged
    (2048 and 1024 rows) and its profiler window summarised.

    ``big_host``: the samples of a 64-core host with 8 GPUs (GPM included; sampled from
    stand-in backends), the largest sample rows a record holds; else this machine's own.
    The checkpoint thread holds the GIL while it builds and encodes the snapshot, so on a CPU
    step its wall time is also the most it can delay training: the share of a run is that time
    over the interval between checkpoints.
    """
    from torchdiag.files import atomic_write

    path = out_dir / "checkpointed.json"
    with torchdiag.profile(path, skip_first=2, profile_steps=3, checkpoint_interval=0) as run:
        timed_steps(step, 8)  # the window: warm-up, 3 recorded steps, exported
        while run.steps < 2040:  # a long run's step rows: marked by hand, a few µs each
            run.step()
        if big_host:
            # The session's own sampler, swapped for one reading stand-in backends: the block's
            # end stops it as it would the real one.
            run._sampler.stop()
            run._sampler = Sampler(0.5, host=_BigHost(), gpus=_EightGpus())
        for _ in range(1000):  # a long run's sample rows, without waiting 1000 intervals
            run._sampler.sample_once()
        names = ("snapshot", "encode", "write", "cpu", "total")
        phases: dict[str, list[float]] = {name: [] for name in names}
        size = 0
        for _ in range(n):
            cpu0, t0 = time.thread_time(), time.perf_counter()
            record = run.snapshot()
            t1 = time.perf_counter()
            data = record.to_json()
            t2 = time.perf_counter()
            atomic_write(path, data)
            t3 = time.perf_counter()
            phases["snapshot"].append(t1 - t0)
            phases["encode"].append(t2 - t1)
            phases["write"].append(t3 - t2)
            phases["cpu"].append(time.thread_time() - cpu0)
            phases["total"].append(t3 - t0)
            size = len(data)
    total = phases["total"]
    median_ms = statistics.median(total) * 1e3
    samples = record.samples
    return {
        "record_bytes": size,
        "step_rows": len(record.steps.wall_ms),
        "sample_rows": len(samples.t_s) if samples else 0,
        "cores_sampled": samples.host.cpu_count if samples and samples.host else 0,
        "gpus_sampled": len(samples.gpus) if samples else 0,
        "ms_median": round(median_ms, 2),
        "ms_max": round(max(total) * 1e3, 2),
        "snapshot_ms_median": round(statistics.median(phases["snapshot"]) * 1e3, 2),
        "encode_ms_median": round(statistics.median(phases["encode"]) * 1e3, 2),
        "write_ms_median": round(statistics.median(phases["write"]) * 1e3, 2),
        "cpu_ms_median": round(statistics.median(phases["cpu"]) * 1e3, 2),
        # Its share of a run at the default interval (60 s) and at 10 s.
        "pct_of_run_at_60s": round(median_ms / 60e3 * 100, 4),
        "pct_of_run_at_10s": round(median_ms / 10e3 * 100, 4),
    }


class _BigHost:
    """Stand-in host backend: 64 cores, varying readings (the sampler's HostBackend)."""

    status = CollectorStatus(available=True)
    cpu_count = 64
    memory_total_bytes = 512 * 2**30

    def __init__(self) -> None:
        self._rng = random.Random(0)

    def read(self) -> HostReading:
        r = self._rng.random
        return HostReading(
            cpu_pct_per_core=[100 * r() for _ in range(self.cpu_count)],
            process_cpu_pct=100 * r(),
            process_rss_bytes=2**34 * r(),
            worker_count=8.0,
            workers_cpu_pct=800 * r(),
            workers_rss_bytes=2**33 * r(),
            memory_used_bytes=2**38 * r(),
        )

    def close(self) -> None:
        pass


class _EightGpus:
    """Stand-in GPU backend: 8 GPUs with GPM, varying readings (the sampler's GpuBackend)."""

    status = CollectorStatus(available=True)
    gpm_status = CollectorStatus(available=True)
    devices = tuple(GpuDevice(index=i, name="H100", gpm_supported=True) for i in range(8))

    def __init__(self) -> None:
        self._rng = random.Random(1)

    def read(self) -> list[GpuReading]:
        r = self._rng.random
        return [
            GpuReading(
                utilization_pct=100 * r(),
                memory_utilization_pct=100 * r(),
                memory_used_bytes=2**36 * r(),
                power_w=700 * r(),
                sm_clock_mhz=1980 * r(),
                temperature_c=80 * r(),
                throttle_reasons=0,
                gpm={name: 100 * r() for name in GPM_COLUMNS},
            )
            for _ in self.devices
        ]

    def close(self) -> None:
        pass


def live_costs(step: Callable[[], None], out_dir: Path) -> dict[str, Any]:
    """The live view's cost: the display's work per second of training, measured on a record
    of a real capture grown to the largest size a capture keeps; and the live thread's own CPU
    time in a monitored block (the snapshots of the run included)."""
    with torchdiag.profile(out_dir / "live-base.json", skip_first=5, profile_steps=5) as run:
        timed_steps(step, 40)
    assert run.record is not None  # written when the block ends
    frame_ms, analysis_ms, pct = display_cost(full_size(run.record))
    results: dict[str, Any] = {
        "live_frame_ms_median": round(frame_ms, 2),
        "live_frame_with_rules_ms_median": round(analysis_ms, 2),
        "live_display_cpu_pct_of_one_core": round(pct, 3),
    }
    results["live_thread_cpu_pct_of_wall"] = live_thread_cost(step, out_dir)
    return results


def full_size(record: RunRecord, rows: int = 2048, sample_rows: int = 1024) -> RunRecord:
    """``record`` (a real capture, with its profiler window) as a running record of the largest
    size a capture keeps: its step rows repeated to ``rows``, and a host and a GPU sampled for
    ``sample_rows`` rows over the same time."""
    s = record.steps
    walls = [s.wall_ms[i % len(s.wall_ms)] for i in range(rows)]
    waits = [s.input_wait_ms[i % len(s.input_wait_ms)] for i in range(rows)]
    starts = [0.0]
    for w in walls[:-1]:
        starts.append(starts[-1] + w / 1e3)
    steps = msgspec.structs.replace(
        s,
        count=rows,
        total_wall_s=sum(walls) / 1e3,
        total_input_wait_s=sum(waits) / 1e3,
        first_step=list(range(rows)),
        steps=[1] * rows,
        start_s=starts,
        wall_ms=walls,
        input_wait_ms=waits,
        max_wall_ms=walls,
        profiled=[False] * rows,
        tokens=[],
    )
    span = starts[-1] + walls[-1] / 1e3
    t = [span * i / sample_rows for i in range(sample_rows)]
    host = HostSeries(
        cpu_count=2,
        cpu_pct_per_core=[[50.0 + i % 7, 40.0] for i in range(sample_rows)],
        process_cpu_pct=[100.0] * sample_rows,
        process_rss_bytes=[1e9] * sample_rows,
        memory_used_bytes=[4e9] * sample_rows,
    )
    gpu = GpuSeries(
        index=0,
        name="GPU",
        memory_total_bytes=80 * 2**30,
        utilization_pct=[float(50 + i % 40) for i in range(sample_rows)],
        memory_used_bytes=[1e10] * sample_rows,
    )
    samples = Samples(
        sample_count=sample_rows, t_s=t, rows_merged=[1] * sample_rows, host=host, gpus=[gpu]
    )
    return msgspec.structs.replace(
        record, status=RunStatus(state="running"), steps=steps, samples=samples, duration_s=span
    )


def display_cost(record: RunRecord, seconds: int = 60) -> tuple[float, float, float]:
    """The live panel drawn on a terminal once a second for ``seconds`` simulated seconds, each
    frame from a new snapshot of ``record``: the median CPU ms of a frame without and with the
    rules, and the CPU it all used as a percentage of one core over those seconds."""
    from rich.console import Console

    from torchdiag.report.live_display import ANALYSIS_INTERVAL_S, REFRESH_S, PanelDisplay

    every = round(ANALYSIS_INTERVAL_S / REFRESH_S)  # the frames the rules run in: 0, 5, 10 ...
    now = [0.0]
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    display = PanelDisplay(console, terminal=True, log_interval_s=30.0, clock=lambda: now[0])
    plain: list[float] = []
    with_rules: list[float] = []
    for i in range(int(seconds / REFRESH_S)):
        now[0] = i * REFRESH_S
        snapshot = msgspec.structs.replace(record)  # a new record every frame, as in a run
        ran_rules = i % every == 0
        t0 = time.thread_time()
        display.update(snapshot)
        (with_rules if ran_rules else plain).append(time.thread_time() - t0)
    display.close(None)
    total = sum(plain) + sum(with_rules)
    return (
        statistics.median(plain) * 1e3,
        statistics.median(with_rules) * 1e3,
        total / seconds * 100,
    )


def live_thread_cost(step: Callable[[], None], out_dir: Path, seconds: float = 20.0) -> float:
    """The ``torchdiag-live`` thread's CPU time over a monitored block (its snapshots of the run
    included), as a percentage of the block's wall time, with the panel drawn as on a terminal
    (checkpoints off, so that only the live view is measured)."""
    from rich.console import Console

    from torchdiag.capture import live
    from torchdiag.report.live_display import PanelDisplay

    installed = live._factory

    def terminal(log_interval_s: float) -> PanelDisplay:
        console = Console(file=io.StringIO(), force_terminal=True, width=120)
        return PanelDisplay(console, terminal=True, log_interval_s=log_interval_s)

    live.install_display(terminal)
    try:
        t0 = time.perf_counter()
        with torchdiag.profile(
            out_dir / "live.json", profile_steps=5, live=True, checkpoint_interval=0
        ) as run:
            while time.perf_counter() - t0 < seconds:
                step()
        wall = time.perf_counter() - t0
    finally:
        if installed is not None:
            live.install_display(installed)
    assert run.record is not None  # written when the block ends
    return round(run.record.overhead.get("live_cpu_s", 0.0) / wall * 100, 3)


def hook_cost_us(out_dir: Path, n: int = 20000) -> float:
    """Per-step cost of the step hook: a trivial optimizer step with and without a capture.

    The trivial step makes the hook's few microseconds resolvable, which no A/B on a real step
    can do on a noisy machine.
    """
    p = torch.zeros(1, requires_grad=True)
    p.grad = torch.zeros(1)
    opt = torch.optim.SGD([p], lr=0.0)

    def loop() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            opt.step()
        return (time.perf_counter() - t0) / n

    loop()
    bare, hooked = [], []
    for _ in range(5):
        bare.append(loop())
        with torchdiag.profile(out_dir / "hook.json", profile_steps=0, sample_interval=60):
            hooked.append(loop())
    return (statistics.median(hooked) - statistics.median(bare)) * 1e6


def _report(results: dict[str, Any], path: Path | None) -> None:
    print(json.dumps(results, indent=2))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")


def _machine() -> str:
    return (
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"{platform.python_version()}, torch {torch.__version__}"
    )


def bootstrap_median_ci(values: list[float], rounds: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the median (seeded: the same data gives the same interval)."""
    import random

    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(rounds))
    return medians[int(0.025 * rounds)], medians[int(0.975 * rounds) - 1]


def _profiled_flags(record: RunRecord) -> list[bool]:
    flags: list[bool] = []
    for n, p in zip(record.steps.steps, record.steps.profiled, strict=True):
        flags += [p] * n
    return flags


if __name__ == "__main__":
    main()
