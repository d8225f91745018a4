"""The rules' stated savings scored against what ``torchdiag try`` measures, per rule.

    python benchmarks/estimates_vs_try.py [--steps 40] [--repeat 3] [--only NAME ...]

Runs ``torchdiag try --fix auto`` (the fixes behind the baseline's own findings, and a few named
fixes for findings at info level) on the CPU samples in a few scenarios, and counts, for each
rule, the fixes whose measured saving (``1 - 1/speedup``, with its 95% interval) fell within the
finding's stated range, above its bound or below it (:mod:`torchdiag.trials.estimates`). Short
runs (``--steps``, a 3-step profiler window, ``--repeat`` runs a side) so that it finishes in
minutes on 2 CPU cores. Every pairing and the per-rule counts go to
benchmarks/results/estimates_vs_try.json; the per-rule table is printed as Markdown
(docs/rules.md, "Estimates against measurements", quotes it).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from torchdiag.record import EstimatePairing
from torchdiag.trials.runner import TrialSettings, try_fixes

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "benchmarks" / "results" / "estimates_vs_try.json"
# name -> (sample script, its arguments, the fixes to try): the samples that run on a CPU in
# seconds a step. "auto" tries the fixes behind the baseline's findings at warning or above; the
# fixes named besides it answer findings these samples raise at info level (a fix is paired only
# with the findings the baseline really raised).
SCENARIOS: dict[str, tuple[str, list[str], list[str]]] = {
    "input_bound": ("input_bound.py", [], ["auto"]),
    "input_bound_slow_read": ("input_bound.py", ["--read-ms", "2"], ["auto"]),
    "inference": ("inference.py", [], ["auto", "inference-mode"]),
    "inference_batch_1": (
        "inference.py",
        ["--batch-size", "1"],
        ["auto", "inference-mode", "batch=x4"],
    ),
    "quickstart": ("quickstart.py", [], ["auto", "input-ceiling"]),
}
VERDICTS = ("within", "above", "below", "not measured")


def run_scenario(
    name: str, folder: Path, settings: TrialSettings
) -> tuple[list[dict[str, Any]], float]:
    """Every pairing of one scenario's ``try`` (one row each), and its wall time in seconds."""
    script, args, fixes = SCENARIOS[name]
    started = time.perf_counter()
    result = try_fixes(
        ROOT / "samples" / script,
        args,
        fixes=fixes,
        settings=settings,
        output=folder / name,
        on_run=lambda fix, r, n: print(f"  {name}: {fix}, run {r} of {n}", file=sys.stderr),
    )
    rows = [
        _row(name, fix.fix, fix.speedup, fix.ci95, fix.per_sample, pairing)
        for fix in result.fixes
        for pairing in fix.estimates
    ]
    return rows, time.perf_counter() - started


def _row(
    scenario: str,
    fix: str,
    speedup: float | None,
    ci95: list[float] | None,
    per_sample: bool,
    pairing: EstimatePairing,
) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "fix": fix,
        "speedup": speedup,
        "ci95": ci95,
        "per_sample": per_sample,
        "finding": pairing.finding,
        "stated_low": pairing.stated_low,
        "stated": pairing.stated,
        "stated_max": pairing.stated_max,
        "measured": pairing.measured,
        "measured_low": pairing.measured_low,
        "measured_high": pairing.measured_high,
        "verdict": pairing.verdict,
    }


def per_rule(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """For each rule (sorted), how many pairings fell under each verdict."""
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        rule = counts.setdefault(row["finding"], dict.fromkeys(VERDICTS, 0))
        rule[row["verdict"]] += 1
    return dict(sorted(counts.items()))


def markdown(counts: dict[str, dict[str, int]]) -> str:
    """The per-rule counts as the Markdown table docs/rules.md shows."""
    lines = [
        "| rule | pairings | within the range | above the bound | below the range | no interval |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for rule, c in counts.items():
        cells = [str(sum(c.values()))] + [str(c[v]) for v in VERDICTS]
        lines.append(f"| `{rule}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="steps per run (default 40)")
    parser.add_argument("--repeat", type=int, default=3, help="runs a side (default 3)")
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), help="scenarios to run")
    parser.add_argument("--keep", help="keep the try folders here (default: a temporary folder)")
    args = parser.parse_args()
    settings = TrialSettings(
        steps=args.steps, skip_first=3, profile_steps=3, repeat=args.repeat, timeout_s=600
    )
    rows: list[dict[str, Any]] = []
    wall: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        for name in args.only or list(SCENARIOS):
            print(f"{name} ...", file=sys.stderr)
            found, wall[name] = run_scenario(name, folder, settings)
            rows += found
    counts = per_rule(rows)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(
        json.dumps(
            {
                "machine": {
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(),
                    "device": "cuda" if torch.cuda.is_available() else "cpu",
                },
                "settings": {"steps": args.steps, "repeat": args.repeat, "profile_steps": 3},
                "scenarios": {name: list(SCENARIOS[name]) for name in wall},
                "wall_s": {name: round(s, 1) for name, s in wall.items()},
                "per_rule": counts,
                "pairings": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(markdown(counts))


if __name__ == "__main__":
    main()
