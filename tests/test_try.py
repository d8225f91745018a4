"""``torchdiag try``: fixes applied from outside the script, measured by rerunning it.

The end-to-end cases run the real samples (short) through ``python -m torchdiag try`` in a fresh
process, as a user would. The fixes themselves are checked in-process on a small training loop.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from viewing import render_try

import torchdiag
from torchdiag.capture.fixes import parse_fix
from torchdiag.record import (
    AppliedFix,
    Environment,
    LoaderInfo,
    MeasuredFix,
    MemoryCategories,
    ProfilerWindow,
    RunRecord,
    StepSeries,
    load_record,
)
from torchdiag.trials.compare import Baseline, TryResult, compare_losses, measure_fix
from torchdiag.view.run_view import RunView

ROOT = Path(__file__).resolve().parent.parent


def _try(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torchdiag", "try", *argv]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)


def _fix(doc: dict, spec: str) -> dict:
    return next(f for f in doc["fixes"] if f["fix"] == spec)


def test_more_workers_measured_faster_on_the_input_bound_sample(tmp_path):
    out = tmp_path / "try"
    # Each sample waits on a slow read (not computation), so two workers hide the wait even on
    # a busy 2-core machine; three runs a side: the interval is over runs.
    sample = [str(ROOT / "samples" / "input_bound.py"), "--batch-size", "8", "--rounds", "0"]
    sample += ["--read-ms", "2", "--steps", "40", "--output", str(tmp_path / "own.json")]
    proc = _try(
        "--fix", "workers=2", "--steps", "20", "--repeat", "3", "--output", str(out),
        "--format", "json", *sample, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "torchdiag.try/1"
    assert "dataloader-stall" in doc["baseline"]["findings"]
    workers = _fix(doc, "workers=2")
    assert workers["applicable"] and workers["detail"] == "num_workers 0 -> 2"
    low, high = workers["ci95"]
    assert 1.0 < low <= workers["speedup"] <= high  # the interval excludes 1: measured faster
    assert workers["significant"] and workers["numerics_ok"] is True
    assert workers["memory_peak_bytes"] > 0 and workers["runs"] == 3
    assert doc["baseline"]["runs"] == 3
    # The records are kept beside the report, and the report shows the measured table.
    for path in (*doc["baseline"]["records"], *workers["records"]):
        assert load_record(path).status.state == "completed"
    baseline = load_record(doc["baseline"]["records"][0])
    assert [m.fix for m in baseline.measured_fixes] == ["workers=2"]
    page = (out / "report.html").read_text()
    assert "Measured fixes" in page and "workers=2" in page
    assert (out / "try.json").is_file()


def test_input_ceiling_on_the_quickstart_is_measured_with_an_honest_interval(tmp_path):
    """The ceiling removes the loader's work (FakeData makes every image in the training
    process): a real but small saving whose significance depends on how steady the machine is,
    so the test holds the measurement to its own interval, not to a verdict."""
    pytest.importorskip("torchvision")
    sample = [str(ROOT / "samples" / "quickstart.py"), "--batch-size", "8", "--image-size", "32"]
    proc = _try(
        "--fix", "input-ceiling", "--steps", "24", "--repeat", "2", "--output",
        str(tmp_path / "try"), "--format", "json", *sample, "--steps", "40", "--workers", "0",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ceiling = _fix(json.loads(proc.stdout), "input-ceiling")
    assert ceiling["applicable"], ceiling["detail"]
    low, high = ceiling["ci95"]
    assert low <= ceiling["speedup"] <= high
    assert ceiling["significant"] == (low > 1.0 or high < 1.0), ceiling
    assert ceiling["numerics_ok"] is None  # replayed batches: the loss is not compared


MODULELESS = """
import torch
w = torch.zeros(8, requires_grad=True)
opt = torch.optim.SGD([w], lr=0.1)
for _ in range(12):
    loss = ((w - torch.randn(8)) ** 2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
"""


def test_fixes_that_cannot_apply_are_reported_not_failed(tmp_path):
    script = tmp_path / "no_modules.py"
    script.write_text(textwrap.dedent(MODULELESS))
    proc = _try(
        "--fix", "amp=bf16", "--fix", "channels-last", "--fix", "tf32", "--steps", "10",
        "--skip-first", "1", "--profile-steps", "2", "--output", str(tmp_path / "try"),
        "--format", "json", str(script), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    for spec in ("amp=bf16", "channels-last", "tf32"):
        fix = _fix(doc, spec)
        assert fix["applicable"] is False and fix["error"] is None
        assert fix["detail"] and fix["speedup"] is None
    assert "no nn.Module" in _fix(doc, "amp=bf16")["detail"]
    assert "no CUDA device" in _fix(doc, "tf32")["detail"]


def test_bad_fix_is_a_usage_error(run_cli, tmp_path):
    code, _, err = run_cli("try", "--fix", "warp-drive", str(tmp_path / "x.py"))
    assert code == 2 and "unknown fix 'warp-drive'" in err


# -- the fixes, in-process -------------------------------------------------------------------------


class Convnet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Linear(4 * 6 * 6, 2)
        self.formats: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.formats.append(x.is_contiguous(memory_format=torch.channels_last))
        self.dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        return self.head(self.conv(x).flatten(1))


def _train(fixes: list[str], tmp_path: Path, *, steps: int = 6, batch_size: int = 4) -> tuple:
    data = TensorDataset(torch.randn(64, 3, 8, 8), torch.randint(0, 2, (64,)))
    model = Convnet()
    loss_fn = torch.nn.CrossEntropyLoss()
    seen_batches: list[int] = []
    with torchdiag.profile(
        tmp_path / "run.json", profile_steps=0, fixes=fixes, max_steps=steps, record_loss=True
    ) as run:
        optimizer = torch.optim.Adam(model.parameters())
        for _ in range(100):
            for x, y in DataLoader(data, batch_size=batch_size):
                seen_batches.append(len(x))
                loss = loss_fn(model(x), y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
    assert run.record is not None
    return run.record, model, optimizer, seen_batches


def test_max_steps_ends_the_block_as_completed(tmp_path):
    record, _, _, batches = _train([], tmp_path, steps=5)
    assert record.steps.count == 5 and len(batches) == 5
    assert record.status.state == "completed"
    assert len(record.losses) == 5 and all(v is not None for v in record.losses)


def test_model_fixes_apply_to_the_outermost_module_only(tmp_path):
    record, model, _, _ = _train(["amp=bf16", "channels-last"], tmp_path)
    applied = {f.fix: f for f in record.fixes}
    assert applied["amp=bf16"].applied and "Convnet.forward" in applied["amp=bf16"].detail
    assert model.dtype is torch.bfloat16  # the forward ran under autocast
    assert applied["channels-last"].applied and all(model.formats)
    # Everything is undone afterwards: a plain call is neither autocast nor converted.
    assert torch.nn.Module.__call__ is torch.nn.Module._wrapped_call_impl


def test_loader_and_optimizer_fixes(tmp_path):
    record, _, optimizer, batches = _train(["batch=x2", "fused-optimizer"], tmp_path)
    applied = {f.fix: f for f in record.fixes}
    assert applied["batch=x2"].detail == "batch_size 4 -> 8" and set(batches) == {8}
    assert applied["fused-optimizer"].applied
    assert optimizer.defaults.get("fused") or optimizer.defaults.get("foreach")


def test_a_fix_with_nothing_to_change_says_why(tmp_path):
    record, _, _, _ = _train(["persistent-workers", "prefetch=4"], tmp_path)
    for fix in record.fixes:
        assert not fix.applied and "num_workers=0" in fix.detail


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("workers", "is spelled workers=VALUE"),
        ("workers=0", "at least 1"),
        ("batch=x1", "at least 2"),
        ("amp=fp8", "bf16 or fp16"),
        ("tf32=1", "is spelled tf32"),
    ],
)
def test_fix_spellings(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_fix(spec)


# -- the comparison ---------------------------------------------------------------------------


def test_losses_compared_within_their_noise():
    steady = [2.0, 2.1, 1.9, 2.0, 2.05, 1.95, 2.0, 2.02]
    assert compare_losses("workers=2", steady, [v + 0.01 for v in steady])[0] is True
    assert compare_losses("workers=2", steady, [v * 3 for v in steady])[0] is False
    assert compare_losses("amp=fp16", steady, [*steady[:-1], None])[0] is False
    assert compare_losses("input-ceiling", steady, steady)[0] is None
    assert compare_losses("workers=2", steady, [])[0] is None


def test_text_and_markdown_show_the_same_row():
    from torchdiag.trials.compare import Baseline, TryResult

    fix = MeasuredFix(
        fix="workers=2",
        applicable=True,
        detail="num_workers 0 -> 2",
        step_ms=50.0,
        baseline_step_ms=100.0,
        speedup=2.0,
        ci95=[1.8, 2.2],
        significant=True,
        numerics_ok=True,
    )
    result = TryResult(
        script="train.py",
        steps=30,
        baseline=Baseline(
            step_ms=100.0, memory_peak_bytes=None, memory_of="", findings=[], runs=1, records=[]
        ),
        fixes=[fix],
    )
    for fmt in ("text", "md"):
        out = render_try(result, fmt)
        assert "100.0 -> 50.0 ms" in out and "2.00x (1.80-2.20)" in out and "faster" in out
    assert json.loads(render_try(result, "json"))["fixes"][0]["speedup"] == 2.0
    assert isinstance(RunRecord().measured_fixes, list)


def test_the_command_line_defaults_are_the_runners():
    from torchdiag.cli import trial
    from torchdiag.trials import runner

    assert (trial.DEFAULT_STEPS, trial.DEFAULT_REPEAT, trial.AUTO) == (
        runner.DEFAULT_STEPS,
        runner.DEFAULT_REPEAT,
        runner.AUTO,
    )
    assert torchdiag.try_fixes is runner.try_fixes


def _categorised_run(batch: int, activation: int, fix: str | None = None) -> RunRecord:
    """A live record at ``batch`` whose window peak is 100 bytes of parameters plus
    ``activation`` bytes, with 30 steady steps of 10 ms."""
    walls = [50.0] + [10.0] * 30
    n = len(walls)
    steps = StepSeries(
        detection="optimizer",
        count=n,
        total_wall_s=sum(walls) / 1e3,
        first_step=list(range(n)),
        steps=[1] * n,
        start_s=[i * 0.01 for i in range(n)],
        wall_ms=walls,
        input_wait_ms=[0.0] * n,
        max_wall_ms=walls,
        profiled=[False] * n,
    )
    at_peak = {"parameter": 100, "activation": activation}
    window = ProfilerWindow(
        memory_categories=MemoryCategories(peak_bytes=sum(at_peak.values()), at_peak=at_peak)
    )
    return RunRecord(
        source="live",
        steps=steps,
        profiler=window,
        environment=Environment(loaders=[LoaderInfo(loader_id=0, batch_size=batch, batches=n)]),
        fixes=[AppliedFix(fix=fix, applied=True, detail="batch")] if fix else [],
    )


def test_a_batch_change_reports_the_predicted_against_the_measured_window_peak():
    baseline = RunView(_categorised_run(4, 400))
    doubled = RunView(_categorised_run(8, 780, fix="batch=x2"))
    measured = measure_fix("batch=x2", [baseline], [doubled])
    # Predicted from the baseline: 100 fixed + 100 per sample x 8 = 900; measured 880.
    assert measured.predicted_window_peak_bytes == 900
    assert measured.window_peak_bytes == 880
    held = {k: v for k, v in (measured.memory_at_peak or {}).items() if v}
    assert held == {"parameter": 100, "activation": 780}
    baseline_figures = Baseline(
        step_ms=10.0, memory_peak_bytes=None, memory_of="", findings=[], runs=1, records=[]
    )
    result = TryResult(script="train.py", steps=30, baseline=baseline_figures, fixes=[measured])
    row = render_try(result, "text")
    assert "window memory peak predicted" in row and "(-2%)" in row
