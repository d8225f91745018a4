"""Real torch.distributed runs (torchrun, 2 ranks, gloo on the CPU) and the report over ranks.

A planted straggler (rank 1 sleeps in every step) must be named at warning or above; its healthy
twin must raise no straggler; a rank that dies mid-run must leave the other rank's record, and
the report must say which rank is missing.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "distributed.py"


@functools.cache
def _torchrun(out: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    command += ["--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:0", str(SAMPLE)]
    # Little CPU work and a wait that stands in for GPU work: on a loaded CI machine, CPU
    # contention can make one of two identical compute-bound ranks really slower (a straggler
    # the machine made); a wait is not slowed by it, and the planted 50 ms stays far above noise.
    command += ["--output", f"{out}/", "--hidden", "256", "--step-wait", "0.1"]
    command += ["--steps", "20", "--profile-steps", "10"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    return {
        "straggler": (base / "straggler", _torchrun(base / "straggler", "--straggler", "1")),
        "slow-input": (
            base / "slow-input",
            _torchrun(base / "slow-input", "--straggler", "0", "--slow-input"),
        ),
        "healthy": (base / "healthy", _torchrun(base / "healthy")),
        "dies": (base / "dies", _torchrun(base / "dies", "--die-at", "8")),
    }


def _report(run_cli, folder: Path) -> dict:
    code, out, err = run_cli("report", str(folder), "--format", "json", "-o", "-", "--no-progress")
    assert code == 0, err
    return json.loads(out)


def test_each_rank_writes_its_own_record(runs):
    folder, proc = runs["healthy"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in folder.iterdir()) == ["run.rank0.json", "run.rank1.json"]


def test_planted_straggler_is_named(runs, run_cli):
    folder, proc = runs["straggler"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = _report(run_cli, folder)
    assert [r["rank"] for r in doc["ranks"]] == [0, 1]
    found = {f["id"]: f for f in doc["findings"]}
    straggler = found["straggler"]
    assert straggler["severity"] in ("warning", "critical")
    assert straggler["evidence"]["straggler_rank"] == 1
    assert "rank 1" in straggler["title"]
    # The other rank waited for it in the all-reduce.
    ranks = {r["rank"]: r for r in doc["ranks"]}
    assert ranks[0]["comm_ms"] > ranks[1]["comm_ms"]


def test_healthy_twin_has_no_straggler(runs, run_cli):
    folder, _ = runs["healthy"]
    doc = _report(run_cli, folder)
    found = {f["id"]: f for f in doc["findings"]}
    assert "straggler" not in found, (found["straggler"]["evidence"], doc["ranks"])
    assert len(doc["ranks"]) == 2 and doc["missing_ranks"] == []


def test_a_rank_that_dies_leaves_the_others_reportable(runs, run_cli):
    folder, proc = runs["dies"]
    assert proc.returncode != 0
    assert [p.name for p in folder.iterdir()] == ["run.rank0.json"]
    doc = _report(run_cli, folder)
    assert doc["missing_ranks"] == [1]
    assert [r["rank"] for r in doc["ranks"]] == [0]
    assert doc["ranks"][0]["state"] in ("failed", "interrupted")
    code, out, _ = run_cli("report", str(folder), "--format", "md", "-o", "-", "--no-progress")
    assert code == 0 and "no record from rank 1" in out


def test_diff_compares_run_directories(runs, run_cli):
    healthy, straggler = runs["healthy"][0], runs["straggler"][0]
    code, out, err = run_cli("diff", str(healthy), str(straggler), "--format", "json", "-o", "-")
    assert code == 1, err  # the planted 50 ms per step is a confident slowdown
    doc = json.loads(out)
    assert doc["verdict"] == "slower"
    assert {f["id"] for f in doc["findings"]["new"]} >= {"straggler"}


def test_straggler_cause_and_its_own_findings(runs, run_cli):
    folder, proc = runs["slow-input"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = _report(run_cli, folder)
    straggler = next(f for f in doc["findings"] if f["id"] == "straggler")
    assert straggler["evidence"]["straggler_rank"] == 0
    assert "input stall" in straggler["evidence"]["likely_cause"]
    ranks = {r["rank"]: r for r in doc["ranks"]}
    assert any(f.startswith("dataloader-stall") for f in ranks[0]["findings"])
    assert not any(f.startswith("dataloader-stall") for f in ranks[1]["findings"])
