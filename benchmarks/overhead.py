"""What torchdiag costs a training step.

Runs the same CPU training step (an MLP sized to take ~10-20 ms) in alternating blocks with and
without ``torchdiag.profile(profile_steps=0)`` (monitor-only: step hooks, DataLoader timing and
the background sampler), so machine noise hits both sides alike, and reports the ratio of the
median step times. The torch.profiler window is measured separately: how much slower its recorded
steps are, and the pause to export and summarise the trace.

The live view (``profile(live=True)``, ``torchdiag watch``) is measured by the CPU time of its
work per second of training: a panel drawn about once a second and the rules re-run every few
seconds, on a record of the largest size a capture keeps (2048 step rows, 1024 sample rows).

    python benchmarks/overhead.py [--blocks 12] [--steps 40] [--json out.json] [--live-only]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
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
from torchdiag.record import (
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
        "--live-only", action="store_true", help="measure the live view's cost alone (quick)"
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    width, batch = calibrate(args.target_ms)
    step = make_step(width, batch)
    timed_steps(step, 20)  # warm-up
    out_dir = Path(tempfile.mkdtemp(prefix="torchdiag-bench-"))
    if args.live_only:
        live = {"machine": machine(), **live_costs(step, out_dir)}
        print(json.dumps(live, indent=2))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(live, indent=2) + "\n")
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
    median_plain = statistics.median(plain)
    median_monitored = statistics.median(monitored)
    results: dict[str, Any] = {
        "machine": machine(),
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
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def machine() -> str:
    """What the figures were measured on."""
    return (
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"{platform.python_version()}, torch {torch.__version__}"
    )


def live_costs(step: Callable[[], None], out_dir: Path) -> dict[str, Any]:
    """The live view's cost: the display's work per second of training, measured on a record
    of a real capture grown to the largest size a capture keeps; and, where this build has
    ``Run.snapshot()``, the live thread's own CPU time in a monitored block (snapshot included)."""
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


def live_thread_cost(step: Callable[[], None], out_dir: Path, seconds: float = 20.0) -> Any:
    """The ``torchdiag-live`` thread's CPU time over a monitored block, as a percentage of the
    block's wall time, with the panel drawn as on a terminal; None where this build has no
    ``Run.snapshot()`` (the live view needs it)."""
    from rich.console import Console

    from torchdiag.capture import live
    from torchdiag.capture.session import Run
    from torchdiag.report.live_display import PanelDisplay

    if not hasattr(Run, "snapshot"):
        return None
    installed = live._factory

    def terminal(log_interval_s: float) -> PanelDisplay:
        console = Console(file=io.StringIO(), force_terminal=True, width=120)
        return PanelDisplay(console, terminal=True, log_interval_s=log_interval_s)

    live.install_display(terminal)
    try:
        t0 = time.perf_counter()
        with torchdiag.profile(out_dir / "live.json", profile_steps=5, live=True) as run:
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
