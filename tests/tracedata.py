"""Where the tests find real traces: in the repository, so a fresh clone runs every test.

``tests/data/h200``: the H200 reference traces (our own captures, with their un-profiled step
times); ``tests/data/external``: public traces of many dialects (MANIFEST.tsv says where each
comes from). See the PROVENANCE.md in each folder.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
H200 = ROOT / "tests" / "data" / "h200"
EXTERNAL = ROOT / "tests" / "data" / "external"


def h200_trace(name: str) -> Path:
    """The H200 reference trace of scenario ``name``."""
    return H200 / f"{name}.pt.trace.json.gz"


def h200_truth() -> dict[str, dict]:
    """Per scenario: the figures measured around the capture (``step_ms_noprof`` ...)."""
    return json.loads((H200 / "summary.json").read_text())["scenarios"]


def small_trace(
    folder: Path,
    name: str = "tiny.pt.trace.json",
    *,
    steps: int = 4,
    op: str = "aten::mm",
    **top: object,
) -> Path:
    """A hand-made trace of ``steps`` ProfilerSteps with one operator ``op`` each; ``top`` adds
    top-level members (``baseTimeNanoseconds=...``)."""
    events = [
        {
            "ph": "X",
            "cat": "user_annotation",
            "name": f"ProfilerStep#{i}",
            "pid": 1,
            "tid": 1,
            "ts": 1000.0 * i,
            "dur": 900.0,
        }
        for i in range(steps)
    ] + [
        {
            "ph": "X",
            "cat": "cpu_op",
            "name": op,
            "pid": 1,
            "tid": 1,
            "ts": 1000.0 * i + 10,
            "dur": 500.0,
        }
        for i in range(steps)
    ]
    path = folder / name
    path.write_text(json.dumps({"schemaVersion": 1, "traceEvents": events, **top}))
    return path
