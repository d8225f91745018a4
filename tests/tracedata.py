"""Where the tests find real traces.

The H200 reference traces (our own captures, with their un-profiled step times) live in the
repository, ``tests/data/h200`` (see its PROVENANCE.md), so every checkout runs the calibration
and diagnosis tests. Public traces from other projects are not copied in: they are read from the
workspace's ``shared/traces/external`` beside the repository when it is there, and the tests
that need them skip otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
H200 = ROOT / "tests" / "data" / "h200"
EXTERNAL = ROOT.parent / "shared" / "traces" / "external"


def h200_trace(name: str) -> Path:
    """The H200 reference trace of scenario ``name``."""
    return H200 / f"{name}.pt.trace.json.gz"


def h200_truth() -> dict[str, dict]:
    """Per scenario: the figures measured around the capture (``step_ms_noprof`` ...)."""
    return json.loads((H200 / "summary.json").read_text())["scenarios"]
