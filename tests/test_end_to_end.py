"""A real CPU capture in a subprocess, then ``torchdiag report`` in every format."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from torchdiag.record import load_record

ROOT = Path(__file__).resolve().parent.parent

TRAIN = textwrap.dedent(
    """
    import sys, time, torch, torchdiag

    class Slow(torch.utils.data.Dataset):
        def __len__(self): return 64
        def __getitem__(self, i):
            time.sleep(0.004)
            return torch.randn(16), i % 4

    loader = torch.utils.data.DataLoader(Slow(), batch_size=4)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    opt = torch.optim.Adam(model.parameters())
    with torchdiag.profile(sys.argv[1], skip_first=2, profile_steps=3, trace=True,
                           sample_interval=0.05) as run:
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward(); opt.step(); opt.zero_grad()
    """
)


@pytest.fixture(scope="module")
def captured(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("e2e")
    script = folder / "train.py"
    script.write_text(TRAIN)
    record = folder / "out" / "run.json"
    subprocess.run([sys.executable, str(script), str(record)], check=True, timeout=300)
    return record


def test_record_is_complete(captured):
    record = load_record(captured)
    assert record.status.state == "completed"
    assert record.steps.count == 16
    assert record.steps.detection == "optimizer"
    assert sum(record.steps.profiled) == 4  # one warm-up + three recorded steps
    assert record.samples is not None and record.samples.host is not None
    assert len(record.samples.t_s) >= 2
    assert record.collectors["host"].available
    assert record.collectors["nvml"].available is False  # no GPU here: recorded, not fatal
    window = record.profiler
    assert window is not None and window.summary is not None
    assert len(window.summary.steps) == 3
    assert window.summary.top_ops, "the window summary lists operators"
    assert window.trace_file and (captured.parent / window.trace_file).exists()
    (loader,) = record.environment.loaders
    assert loader.iterator == "_SingleProcessDataLoaderIter"
    assert record.environment.optimizers[0].class_name == "Adam"


def _report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "torchdiag", "report", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_report_json_finds_the_stall(captured):
    out = _report(str(captured), "--format", "json", "-o", "-")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["schema"] == "torchdiag.findings/1"
    by_id = {f["id"]: f for f in doc["findings"]}
    assert "dataloader-stall" in by_id
    stall = by_id["dataloader-stall"]
    assert stall["severity"] in ("warning", "critical")
    assert 0 < stall["saving_pct_max"] <= 100
    for key in ("id", "severity", "title", "evidence", "recommendation", "saving_pct_max"):
        assert key in stall


@pytest.mark.parametrize(
    ("fmt", "marker"), [("html", "<html"), ("md", "dataloader-stall"), ("text", "dataloader-stall")]
)
def test_report_formats(captured, tmp_path, fmt, marker):
    target = tmp_path / f"report.{fmt}"
    out = _report(str(captured), "--format", fmt, "-o", str(target))
    assert out.returncode == 0, out.stderr
    assert marker in target.read_text()


def test_default_writes_html_beside_input_and_prints_summary(captured):
    out = _report(str(captured))
    assert out.returncode == 0, out.stderr
    html = captured.parent / "run.html"
    assert html.exists() and "<html" in html.read_text()
    assert "dataloader-stall" in out.stdout


def test_saved_trace_is_a_valid_report_input(captured):
    trace = next(captured.parent.glob("*.pt.trace.json.gz"))
    out = _report(str(trace), "--format", "json", "-o", "-")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["schema"] == "torchdiag.findings/1"


def _capture_sample(tmp_path: Path, name: str, *args: str) -> Path:
    out = tmp_path / name / "run.json"
    subprocess.run(
        [sys.executable, str(ROOT / "samples" / "input_bound.py"), "--output", str(out), *args],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return out


def test_diff_and_markdown_on_sample_captures(tmp_path):
    """A slow input pipeline against a fast one: diff says slower with confidence (exit 1);
    a run against itself is no change (exit 0); the Markdown names the stall.

    20 steps leave 13 steady-state steps a side (first and profiled steps excluded): enough for
    the bootstrap interval to stay clear of 1 even on a loaded machine."""
    fast = _capture_sample(tmp_path, "fast", "--steps", "20", "--rounds", "0")
    slow = _capture_sample(tmp_path, "slow", "--steps", "20", "--rounds", "12")
    cmd = [sys.executable, "-m", "torchdiag", "diff"]
    regression = subprocess.run(
        [*cmd, str(fast), str(slow), "--format", "json", "-o", "-"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert regression.returncode == 1, regression.stderr
    doc = json.loads(regression.stdout)
    assert doc["schema"] == "torchdiag.diff/1"
    same = subprocess.run(
        [*cmd, str(slow), str(slow)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert same.returncode == 0, same.stderr
    md = _report(str(slow), "--format", "md", "-o", "-", "--html-url", "https://ci.example/r.html")
    assert md.returncode == 0, md.stderr
    assert "dataloader-stall" in md.stdout
    assert "https://ci.example/r.html" in md.stdout
    assert len(md.stdout) < 65536
