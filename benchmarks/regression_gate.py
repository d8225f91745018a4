"""Does the regression gate hold on a noisy machine? False alarms and detection, measured.

Each trial runs a short CPU training job under ``torchdiag.profile()`` in interleaved rounds of
three variants (B A S, B A S, ...; ``--rounds``, six by default), each run its own process:

- A and B are the same code: ``torchdiag diff --base A1 A2 A3 --head B1 B2 B3`` exiting 1 is a
  false alarm;
- S is the same code with a planted slowdown: every step spends an extra ``--slowdown`` (15%) of
  its own compute time busy on the CPU, so S is slower by that fraction whatever the machine's
  load; ``diff`` of A against S exiting 1 is a detection.

A sits between B and S in every round, so both comparisons pair runs made next to each other,
as the workflow's base and head runs are. Each trial is gated with the runs of its first 3, 5 and
all rounds (runs a side), and with one run a side (A1 against B1: an interval over the steps of one
run) to show what the gate over runs fixes. Every diff goes through the command line's ``main``
with the default 5% threshold, exactly as a CI job runs it.

    python benchmarks/regression_gate.py [--trials 20] [--rounds 6] [--steps 200] \
        [--keep DIR] [--json benchmarks/results/regression_gate.json]
    python benchmarks/regression_gate.py --regate DIR --json ...   # gate kept records again
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
VARIANTS = ("B", "A", "S")  # A and B identical, S slowed; run in this order in every round
SIDES = (1, 3, 5)  # runs a side judged, besides all the rounds run


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


def trial(folder: Path, steps: int, slowdown: float, rounds: int) -> dict[str, Any]:
    for i in range(rounds):
        for variant in VARIANTS:
            run_once(folder / f"{variant}{i + 1}.json", steps, slowdown if variant == "S" else 0.0)
    return judge(folder, rounds)


def judge(folder: Path, rounds: int) -> dict[str, Any]:
    """Gate a trial's records: identical (A vs B) and slowed (A vs S), at each count a side."""
    runs = {v: [folder / f"{v}{i + 1}.json" for i in range(rounds)] for v in VARIANTS}
    gates: dict[str, Any] = {}
    for k in sorted({*(n for n in SIDES if n <= rounds), rounds}):
        gates[str(k)] = {
            "identical": gate(runs["A"][:k], runs["B"][:k], folder / f"ab{k}.json"),
            "slowed": gate(runs["A"][:k], runs["S"][:k], folder / f"as{k}.json"),
        }
    return {
        "run_median_step_ms": {v: [_median_step(p) for p in paths] for v, paths in runs.items()},
        "gates": gates,
    }


def _median_step(path: Path) -> float | None:
    from torchdiag.record import load_record
    from torchdiag.view.run_view import RunView
    from torchdiag.view.step_sample import sample_median

    record = load_record(path)
    return sample_median(RunView(record).sample) if record is not None else None


def summarise(trials: list[dict[str, Any]], slowdown: float) -> dict[str, Any]:
    def rate(k: str, key: str) -> dict[str, Any]:
        alarms = sum(t["gates"][k][key]["exit"] == 1 for t in trials)
        return {"exit_1": alarms, "trials": len(trials)}

    # Between-run spread of identical code: the A and B runs of each trial, as ratios to their
    # trial's geometric mean (the machine's drift between trials left out).
    spreads, pair_gaps, slowed = [], [], []
    for t in trials:
        a, b, s = (t["run_median_step_ms"][v] for v in ("A", "B", "S"))
        same = [math.log(v) for v in (*a, *b)]
        centre = statistics.fmean(same)
        spreads += [abs(v - centre) for v in same]
        pair_gaps += [abs(math.log(x / y)) for x, y in zip(a, b, strict=True)]
        slowed.append(math.exp(statistics.fmean(map(math.log, s)) - statistics.fmean(same)))
    return {
        "runs_a_side": {
            k: {"false_alarms": rate(k, "identical"), "detections": rate(k, "slowed")}
            for k in trials[0]["gates"]
        },
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
    parser.add_argument("--rounds", type=int, default=6, help="runs a side (default 6)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--slowdown", type=float, default=0.15)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--keep", type=Path, help="keep every trial's records in this folder")
    parser.add_argument("--regate", type=Path, help="gate the records kept in this folder again")
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
        root = args.regate or args.keep or Path(tmp)
        for n in range(args.trials):
            folder = root / f"trial{n + 1}"
            if args.regate:
                if not folder.is_dir():
                    break
                trials.append(judge(folder, args.rounds))
            else:
                folder.mkdir(parents=True)
                trials.append(trial(folder, args.steps, args.slowdown, args.rounds))
            _print_trial(n + 1, trials[-1])
            # Written after every trial, so a run cut short still leaves its figures.
            result = _result(trials, args, started)
            if args.json:
                args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))


def _print_trial(n: int, t: dict[str, Any]) -> None:
    gates = "  ".join(
        f"{k} a side: identical {g['identical']['exit']}, slowed {g['slowed']['exit']} "
        f"(ratio {g['slowed']['ratio']:.3f}, low {g['slowed']['low']:.3f})"
        for k, g in t["gates"].items()
    )
    medians = "  ".join(
        f"{v} " + ",".join(f"{m:.1f}" for m in t["run_median_step_ms"][v]) for v in VARIANTS
    )
    print(f"trial {n:2d}: {gates}; run medians ms: {medians}", flush=True)


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
            "rounds": args.rounds,
            "steps_per_run": args.steps,
            "threshold_pct": 5.0,
            "order": "B A S, interleaved rounds",
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
