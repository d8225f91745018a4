"""What categorising the profiler window's memory costs, against the window's size.

    python benchmarks/memory_categories.py [--repeat 3]

A 20-layer MLP (Linear 256) trained with AdamW under ``torchdiag.profile()`` with windows of 2,
4 and 8 steps. For each window: the host events it recorded, the pause to export and summarise
it (``overhead.profiler_export_s``) and the part spent in torch's memory categoriser
(``overhead.memory_categories_s``), medians over ``--repeat`` runs, and the cost per host event
that sets ``capture/profiler_window.CATEGORISE_S_PER_EVENT``. Results go to
benchmarks/results/memory_categories.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

import torchdiag

ROOT = Path(__file__).resolve().parent.parent


def one_window(folder: Path, steps: int) -> tuple[int, float, float]:
    """(host events, export s, categorising s) of one run with a ``steps``-step window."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(20)])
    optimizer = torch.optim.AdamW(model.parameters())
    with torchdiag.profile(folder / f"w{steps}.json", skip_first=1, profile_steps=steps) as run:
        for _ in range(steps + 3):
            model(torch.randn(32, 256)).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
    record = run.record
    assert record is not None and record.profiler is not None
    summary = record.profiler.summary
    events = summary.host_events if summary is not None else 0
    overhead = record.overhead
    return events, overhead["profiler_export_s"], overhead.get("memory_categories_s", 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for steps in (2, 4, 8):
            runs = [one_window(Path(tmp), steps) for _ in range(args.repeat)]
            events = runs[0][0]
            export = statistics.median(r[1] for r in runs)
            categorise = statistics.median(r[2] for r in runs)
            rows.append(
                {
                    "window_steps": steps,
                    "host_events": events,
                    "export_s": round(export, 3),
                    "memory_categories_s": round(categorise, 3),
                    "share_of_export": round(categorise / export, 3) if export else None,
                    "ms_per_host_event": round(categorise / events * 1e3, 4) if events else None,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"python {platform.python_version()}, torch {torch.__version__}",
        "repeat": args.repeat,
        "windows": rows,
    }
    out = ROOT / "benchmarks" / "results" / "memory_categories.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
