"""Does the regression gate hold on a noisy machine? False alarms and detection, measured.

Each trial runs a short CPU training job under ``torchdiag.profile()`` nine times, as three
interleaved rounds of three variants (A B S, A B S, A B S), each run its own process:

- A and B are the same code: ``torchdiag diff --base A1 A2 A3 --head B1 B2 B3`` exiting 1 is a
  false alarm;
- S is the same code with a planted slowdown: every step spends an extra ``--slowdown`` (15%) of
  its own compute time busy on the CPU, so S is slower by that fraction whatever the machine's
  load; ``diff`` of A against S exiting 1 is a detection.

The one-run-a-side diff (A1 against B1: an interval over the steps of one run) is judged too, to
show what the gate over runs fixes. Every diff goes through the command line's ``main`` with the
default 5% threshold, exactly as a CI job runs it.

    python benchmarks/regression_gate.py [--trials 20] [--steps 200] \
        [--json benchmarks/results/regression_gate.json]
    python benchmarks/regression_gate.py --summarise benchmarks/results/regression_gate.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("A", "B", "S")  # A and B identical, S slowed
ROUNDS = 3  # runs a side, interleaved


def train(output: str, steps: int, slowdown: float) -> None:
    """The short CPU job (a few seconds): an MLP trained on a fixed batch with one torch thread
    (as in a DataLoader worker: on a small shared machine, competing intra-op threads make step
    times erratic)."""
    import torch
    import torch.nn as nn

    import torchdiag

    torch.set_num_threads(1)
    torch.manual_seed(0)
    width, batch = 512, 256
    model = nn.Sequential(
        nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(batch, width), torch.randint(0, 10, (batch,))
    with torchdiag.profile(output=output, name="regression-gate"):
        for _ in range(steps):
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
            if slowdown > 0:
                # The planted regression: busy for a fixed share of this step's own work, so the
                # slowdown is that share under any load (a sleep would leave the CPU to others).
                deadline = start + (time.perf_counter() - start) * (1 + slowdown)
                while time.perf_counter() < deadline:
                    pass
            opt.step()


def run_once(output: Path, steps: int, slowdown: float) -> None:
    command = [sys.executable, __file__, "--train", str(output), "--steps", str(steps)]
    command += ["--slowdown", str(slowdown)]
    subprocess.run(command, check=True, capture_output=True, timeout=600, cwd=ROOT)


def gate(base: list[Path], head: list[Path], out: Path) -> dict[str, Any]:
    """``torchdiag diff`` through the command line's entry point: exit status and interval."""
    from torchdiag.cli import main

    argv = ["diff", "--base", *map(str, base), "--head", *map(str, head)]
    status = main([*argv, "--format", "json", "-o", str(out)])
    doc = json.loads(out.read_text())
    iv = doc["interval"]
    return {"exit": status, "ratio": iv["ratio"], "low": iv["low"], "high": iv["high"]}


def trial(folder: Path, steps: int, slowdown: float) -> dict[str, Any]:
    runs: dict[str, list[Path]] = {v: [] for v in VARIANTS}
    for i in range(ROUNDS):
        for variant in VARIANTS:
            path = folder / f"{variant}{i + 1}.json"
            run_once(path, steps, slowdown if variant == "S" else 0.0)
            runs[variant].append(path)
    medians = {v: [_median_step(p) for p in paths] for v, paths in runs.items()}
    return {
        "run_median_step_ms": medians,
        "identical_over_runs": gate(runs["A"], runs["B"], folder / "ab.json"),
        "slowed_over_runs": gate(runs["A"], runs["S"], folder / "as.json"),
        "identical_one_run": gate(runs["A"][:1], runs["B"][:1], folder / "ab1.json"),
        "slowed_one_run": gate(runs["A"][:1], runs["S"][:1], folder / "as1.json"),
    }


def _median_step(path: Path) -> float | None:
    from torchdiag.record import load_record
    from torchdiag.view.run_view import RunView
    from torchdiag.view.step_sample import sample_median

    record = load_record(path)
    return sample_median(RunView(record).sample) if record is not None else None


def summarise(trials: list[dict[str, Any]], slowdown: float) -> dict[str, Any]:
    def rate(key: str) -> dict[str, Any]:
        alarms = sum(t[key]["exit"] == 1 for t in trials)
        return {"exit_1": alarms, "trials": len(trials)}

    # Between-run spread of identical code: the A and B runs of each trial, as ratios to their
    # trial's geometric mean (the machine's drift between trials left out).
    spreads, pair_gaps, slowed = [], [], []
    for t in trials:
        a, b, s = (t["run_median_step_ms"][v] for v in VARIANTS)
        same = [math.log(v) for v in (*a, *b)]
        centre = statistics.fmean(same)
        spreads += [abs(v - centre) for v in same]
        pair_gaps += [abs(math.log(x / y)) for x, y in zip(a, b, strict=True)]
        slowed.append(math.exp(statistics.fmean(map(math.log, s)) - statistics.fmean(same)))
    return {
        "false_alarms_over_runs": rate("identical_over_runs"),
        "detections_over_runs": rate("slowed_over_runs"),
        "false_alarms_one_run": rate("identical_one_run"),
        "detections_one_run": rate("slowed_one_run"),
        "planted_slowdown_pct": 100 * slowdown,
        "measured_slowdown_median_pct": 100 * (statistics.median(slowed) - 1),
        "identical_pair_gap_pct": {
            "median": 100 * (math.exp(statistics.median(pair_gaps)) - 1),
            "max": 100 * (math.exp(max(pair_gaps)) - 1),
        },
        "identical_run_spread_pct_median": 100 * (math.exp(statistics.median(spreads)) - 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--slowdown", type=float, default=0.15)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--train", metavar="OUTPUT", help=argparse.SUPPRESS)
    parser.add_argument(
        "--summarise", metavar="JSON", type=Path, help="recompute the summary of saved trials"
    )
    args = parser.parse_args()
    if args.train:
        train(args.train, args.steps, args.slowdown)
        return
    if args.summarise:
        saved = json.loads(args.summarise.read_text())
        saved["summary"] = summarise(saved["trials"], args.slowdown)
        args.summarise.write_text(json.dumps(saved, indent=2) + "\n")
        print(json.dumps(saved["summary"], indent=2))
        return

    trials: list[dict[str, Any]] = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="regression-gate-") as tmp:
        for n in range(args.trials):
            folder = Path(tmp) / f"trial{n + 1}"
            folder.mkdir()
            trials.append(trial(folder, args.steps, args.slowdown))
            t = trials[-1]
            medians = "  ".join(
                f"{v} " + ",".join(f"{m:.1f}" for m in t["run_median_step_ms"][v]) for v in VARIANTS
            )
            print(
                f"trial {n + 1:2d}: identical exit {t['identical_over_runs']['exit']} "
                f"(one run: {t['identical_one_run']['exit']}), "
                f"slowed exit {t['slowed_over_runs']['exit']} "
                f"(ratio {t['slowed_over_runs']['ratio']:.3f}, "
                f"low {t['slowed_over_runs']['low']:.3f}); run medians ms: {medians}",
                flush=True,
            )
            # Written after every trial, so a run cut short still leaves its figures.
            result = _result(trials, args, started)
            if args.json:
                args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))


def _result(
    trials: list[dict[str, Any]], args: argparse.Namespace, started: float
) -> dict[str, Any]:
    import torch

    return {
        "summary": summarise(trials, args.slowdown),
        "trials": trials,
        "settings": {
            "trials_planned": args.trials,
            "trials_done": len(trials),
            "runs_a_side": ROUNDS,
            "steps_per_run": args.steps,
            "threshold_pct": 5.0,
            "order": "A B S interleaved, three rounds",
        },
        "machine": {
            "cpus": _cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "wall_s": round(time.time() - started, 1),
        "date": time.strftime("%Y-%m-%d"),
    }


def _cpu_count() -> int | None:
    import os

    return os.cpu_count()


if __name__ == "__main__":
    main()
