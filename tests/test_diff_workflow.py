"""The pull-request workflow's shell steps, run locally as the workflow runs them.

``samples/github-actions/torchdiag.yml`` keeps every shell step in ``torchdiag-pr.sh`` (one phase
per step), so this test runs the very commands the workflow does, in the workflow's order and with
its settings (RUNS, THRESHOLD_PCT, PR_SCRIPT read from its ``env:`` block). What Actions itself
does is replaced: the two checkouts by two copies of a sample script (HEAD's with a planted ~4x
slowdown), the artifact upload by a fixed link, the comment post by reading the comment file, and
the gate step's ``if:`` by the same condition in Python. The install step is not run (no network).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "samples" / "github-actions" / "torchdiag.yml"
SCRIPT = ROOT / "samples" / "github-actions" / "torchdiag-pr.sh"
SAMPLE = ROOT / "samples" / "input_bound.py"
# Short runs of the sample: 24 steps leave 17 steady-state ones (first and profiled left out).
SMOKE = 'python sample.py --steps 24 --rounds 4 --output "$RUN_JSON"'
# The planted regression: HEAD's augmentation does five times the work (the step ~4x longer),
# so the verdict holds even when other jobs double some runs' step times.
AUGMENTATION = "for _ in range(self.rounds):"
SLOWED = "for _ in range(5 * self.rounds):"
HTML_URL = "https://example.org/artifacts/1/report.html"


def workflow_env() -> dict[str, str]:
    """The workflow's top-level ``env:`` settings the script reads (plain ``KEY: value`` lines;
    read without a YAML library, which the project does not depend on)."""
    text = WORKFLOW.read_text()
    block = text[text.index("\nenv:\n") : text.index("\njobs:\n")]
    found = dict(re.findall(r'^  ([A-Z_]+): "?([^"\n]*)"?$', block, re.M))
    return {key: found[key] for key in ("RUNS", "THRESHOLD_PCT", "PR_SCRIPT")}


def workflow_phases() -> list[str]:
    """The script phases the workflow's ``run:`` steps call, in order."""
    return re.findall(r'^\s+run: bash "\$PR_SCRIPT" (\w+)$', WORKFLOW.read_text(), re.M)


def test_every_shell_step_of_the_workflow_is_a_script_phase() -> None:
    text = WORKFLOW.read_text()
    assert workflow_phases() == ["smoke", "report", "compare", "comment", "gate"]
    # The only other shell step installs torch and torchdiag; everything else is `uses:`.
    inline = re.findall(r"^\s+run: \|\n((?:\s{10}.*\n)+)", text, re.M)
    assert len(inline) == 1 and "pip install" in inline[0]
    assert workflow_env()["RUNS"] == "6"


class Job:
    """A workspace laid out as the workflow's job sees it, and its steps."""

    def __init__(self, tmp: Path, base_source: str | None, head_source: str) -> None:
        # Three runs a side, not the workflow's six: these tests check what the steps do, and the
        # default's power is measured in benchmarks/regression_gate.py, not here.
        self.dir, self.settings = tmp, {**workflow_env(), "RUNS": "3"}
        for side, source in (("base", base_source), ("head", head_source)):
            (tmp / side).mkdir()
            if source is not None:
                (tmp / side / "sample.py").write_text(source)
        script = tmp / self.settings["PR_SCRIPT"]
        script.parent.mkdir(parents=True)
        shutil.copy(SCRIPT, script)
        bin_dir = tmp / "bin"  # `python` is this interpreter, as setup-python makes it
        bin_dir.mkdir()
        # A wrapper, not a symlink: a virtual environment's python finds its packages from where
        # it is started.
        (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        (bin_dir / "python").chmod(0o755)
        self.output, self.summary = tmp / "github_output", tmp / "step_summary"
        self.env = {
            **os.environ,
            **self.settings,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(ROOT),
            "SMOKE": SMOKE,
            "GITHUB_WORKSPACE": str(tmp),
            "GITHUB_OUTPUT": str(self.output),
            "GITHUB_STEP_SUMMARY": str(self.summary),
        }

    def step(self, phase: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", f'bash "$PR_SCRIPT" {phase}'],
            cwd=self.dir,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=600,
        )

    def outputs(self) -> dict[str, str]:
        lines = self.output.read_text().splitlines() if self.output.exists() else []
        return dict(line.split("=", 1) for line in lines)


def _sources() -> tuple[str, str]:
    source = SAMPLE.read_text()
    assert source.count(AUGMENTATION) == 1
    return source, source.replace(AUGMENTATION, SLOWED)


def test_workflow_fails_a_pull_request_with_a_planted_slowdown(tmp_path: Path) -> None:
    base, head = _sources()
    job = Job(tmp_path, base, head)
    smoke = job.step("smoke")
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    runs = int(job.settings["RUNS"])
    for side in ("base", "head"):
        assert sorted(p.name for p in (tmp_path / "runs" / side).glob("run*.json")) == [
            f"run{i}.json" for i in range(1, runs + 1)
        ]
    report = job.step("report")
    assert report.returncode == 0, report.stderr[-3000:]
    assert "<html" in (tmp_path / "runs" / "head" / "report.html").read_text()

    compare = job.step("compare")
    assert compare.returncode == 0, compare.stderr[-3000:]
    status = job.outputs()["status"]
    assert status == "1"  # a confident regression: the product's own verdict on a ~4x slowdown
    diff = (tmp_path / "diff.md").read_text()
    assert f"({runs} runs)" in diff and "**HEAD is slower: step over runs +" in diff
    assert "t-interval over runs" in diff

    comment = job.step("comment", HTML_URL=HTML_URL)
    assert comment.returncode == 0, comment.stderr[-3000:]
    body = (tmp_path / "comment.md").read_text()
    assert body.startswith("<!-- torchdiag -->\n") and diff.strip() in body
    assert HTML_URL in body and "dataloader-stall" in body
    assert job.summary.read_text() == body

    # The gate step runs when `steps.diff.outputs.status != '0' && != 'skipped'`.
    assert status not in ("0", "skipped")
    gate = job.step("gate", STATUS=status)
    assert gate.returncode == 1
    assert "::error::HEAD is slower than base" in gate.stdout


def test_workflow_skips_the_comparison_when_the_base_cannot_run(tmp_path: Path) -> None:
    """The pull request adds the smoke script: the base has none. HEAD's runs and report still
    happen; the comparison says why it is missing; the gate step does not run."""
    _, head = _sources()
    job = Job(tmp_path, None, head)
    smoke = job.step("smoke")
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    assert "::warning::the smoke job failed on the base branch" in smoke.stdout
    assert not (tmp_path / "runs" / "base").exists()
    assert len(list((tmp_path / "runs" / "head").glob("run*.json"))) == int(job.settings["RUNS"])
    compare = job.step("compare")
    assert compare.returncode == 0 and job.outputs()["status"] == "skipped"
    assert "no comparison" in (tmp_path / "diff.md").read_text()


@pytest.mark.parametrize(("status", "code"), [("0", 0), ("skipped", 0), ("1", 1), ("2", 1)])
def test_gate_phase(tmp_path: Path, status: str, code: int) -> None:
    job = Job(tmp_path, None, "")
    assert job.step("gate", STATUS=status).returncode == code
