"""The samples captured for real on the CPU: the planted stall is found, quickstart is clean."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("torchvision")


def _capture_and_report(sample: str, tmp_path: Path, *args: str) -> dict:
    record = tmp_path / "run.json"
    subprocess.run(
        [sys.executable, str(ROOT / "samples" / sample), "--output", str(record), *args],
        check=True,
        timeout=300,
        capture_output=True,
    )
    out = subprocess.run(
        [sys.executable, "-m", "torchdiag", "report", str(record), "--format", "json", "-o", "-"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return {f["id"]: f for f in json.loads(out.stdout)["findings"]}


def test_input_bound_sample_is_diagnosed(tmp_path):
    findings = _capture_and_report("input_bound.py", tmp_path, "--steps", "16")
    assert findings["dataloader-stall"]["severity"] in ("warning", "critical")
    assert findings["dataloader-workers"]["evidence"]["num_workers"] == 0


def test_quickstart_is_healthy_on_input(tmp_path):
    findings = _capture_and_report("quickstart.py", tmp_path, "--steps", "16")
    for rule in ("dataloader-stall", "dataloader-workers"):
        if rule in findings:
            assert findings[rule]["severity"] == "info", findings[rule]
