"""``torchdiag run``: an unmodified script profiled, with python's own semantics kept.

Each case runs ``python -m torchdiag run ...`` in a fresh process, as a user would: the launcher
changes ``sys.argv`` and ``sys.path`` and starts a capture, none of which may leak into pytest.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from torchdiag.cli.command import valued_options
from torchdiag.cli.run import RunCommand, split_argv
from torchdiag.record import load_record

ROOT = Path(__file__).resolve().parent.parent

# A training script that knows nothing of torchdiag; it reports what python gave it.
PLAIN = """
import json, sys
import torch

def main():
    steps = int(sys.argv[sys.argv.index("--steps") + 1])
    model = torch.nn.Linear(64, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        loss = model(torch.randn(16, 64)).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    with open(sys.argv[sys.argv.index("--seen") + 1], "w") as f:
        json.dump({"name": __name__, "argv": sys.argv, "path0": sys.path[0]}, f)
    code = sys.argv[sys.argv.index("--exit") + 1] if "--exit" in sys.argv else None
    if code == "raise":
        raise ValueError("boom from the script")
    if code is not None:
        sys.exit(int(code))

if __name__ == "__main__":
    main()
"""


def _torchdiag_run(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torchdiag", "run", *argv]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "scripts" / "train_plain.py"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(PLAIN))
    return path


def _options(out: Path) -> list[str]:
    return ["--output", str(out / "run.json"), "--skip-first", "1", "--profile-steps", "2"]


def test_unmodified_script_is_profiled_and_reported(script, tmp_path):
    out = tmp_path / "out"
    seen = tmp_path / "seen.json"
    proc = _torchdiag_run(
        *_options(out), str(script), "--steps", "6", "--seen", str(seen), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    record = load_record(out / "run.json")
    assert record.steps.count == 6
    assert record.status.state == "completed"
    assert record.name == "train_plain.py"
    assert record.profiler is not None and record.profiler.summary.steps  # the window ran
    # The summary is printed and the HTML written beside the record; the CLI says where.
    assert "train_plain.py" in proc.stdout
    assert f"HTML report: {out / 'run.html'}" in proc.stderr
    assert (out / "run.html").stat().st_size > 0
    # The script saw what `python scripts/train_plain.py ...` would have given it.
    got = json.loads(seen.read_text())
    assert got["name"] == "__main__"
    assert got["argv"] == [str(script), "--steps", "6", "--seen", str(seen)]
    assert Path(got["path0"]) == script.parent.resolve()
    # No profiler C++ log on the way (kineto's start/stop lines, a driver-less CUDA probe).
    assert "USDT" not in proc.stderr and "gpuGetDeviceCount" not in proc.stderr


@pytest.mark.parametrize(("code", "state"), [("0", "completed"), ("3", "interrupted")])
def test_the_scripts_exit_status_is_kept(script, tmp_path, code, state):
    out = tmp_path / "out"
    args = ["--steps", "3", "--seen", str(tmp_path / "seen.json"), "--exit", code]
    proc = _torchdiag_run(*_options(out), "--no-report", str(script), *args, cwd=tmp_path)
    assert proc.returncode == int(code), proc.stderr
    assert load_record(out / "run.json").status.state == state


def test_the_scripts_exception_is_printed_as_python_would(script, tmp_path):
    out = tmp_path / "out"
    args = ["--steps", "3", "--seen", str(tmp_path / "seen.json"), "--exit", "raise"]
    proc = _torchdiag_run(*_options(out), str(script), *args, cwd=tmp_path)
    assert proc.returncode == 1
    traceback = proc.stderr[proc.stderr.index("Traceback (most recent call last):") :]
    first_frame = traceback.splitlines()[1]
    assert str(script) in first_frame  # the launcher's own frames are left out
    assert "torchdiag" not in traceback.replace(str(tmp_path), "")
    assert traceback.rstrip().endswith("ValueError: boom from the script")
    record = load_record(out / "run.json")
    assert record.status.state == "failed"
    assert record.status.exception_type == "ValueError"
    assert (out / "run.html").is_file()  # a failed run is still reported


def test_dash_m_runs_a_module_like_python(tmp_path):
    package = tmp_path / "proj" / "trainer"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "main.py").write_text(textwrap.dedent(PLAIN))
    out, seen = tmp_path / "out", tmp_path / "seen.json"
    proc = _torchdiag_run(
        *_options(out),
        "-m",
        "trainer.main",
        "--steps",
        "4",
        "--seen",
        str(seen),
        cwd=package.parent,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(seen.read_text())
    assert got["name"] == "__main__"
    assert got["argv"][0] == str(package / "main.py")
    assert Path(got["path0"]) == package.parent
    record = load_record(out / "run.json")
    assert record.steps.count == 4 and record.name == "trainer.main"


def test_a_script_that_profiles_itself_joins_the_run(tmp_path):
    out = tmp_path / "out"
    sample = ROOT / "samples" / "input_bound.py"
    own = tmp_path / "own" / "run.json"
    sample_args = ["--steps", "10", "--batch-size", "8", "--rounds", "4", "--output", str(own)]
    proc = _torchdiag_run(*_options(out), str(sample), *sample_args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "joins the run already profiling it" in proc.stderr
    assert not own.exists()  # one run, one record: the launcher's
    record = load_record(out / "run.json")
    assert record.steps.count == 10
    assert "dataloader-stall" in proc.stdout  # the planted cause, found on an unmodified sample


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "a script or -m MODULE is required"),
        (["no_such_script.py"], "no such script: no_such_script.py"),
        (["--profile-steps", "x", "s.py"], "--profile-steps"),
        (["-m"], "-m needs a module name"),
    ],
)
def test_bad_usage_is_one_line_and_status_2(run_cli, argv, message):
    code, _, err = run_cli("run", *argv)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_options_after_the_script_belong_to_the_script():
    valued = valued_options(RunCommand().parser())
    assert {"-o", "--output", "--fix", "--max-steps"} <= valued and "--trace" not in valued
    own, target = split_argv(
        ["--output", "x.json", "train.py", "--output", "y", "-m", "z"], valued=valued
    )
    assert own == ["--output", "x.json"]
    assert (target.script, target.module, target.args) == (
        "train.py",
        None,
        ["--output", "y", "-m", "z"],
    )
    own, target = split_argv(["--trace", "-m", "pkg.train", "--lr", "3"], valued=valued)
    assert own == ["--trace"] and target.module == "pkg.train" and target.args == ["--lr", "3"]
    own, target = split_argv(["--", "-weird-name.py", "a"], valued=valued)
    assert own == [] and target.script == "-weird-name.py" and target.args == ["a"]


LIGHTNING_SCRIPT = """
import torch
import lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset

class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

if __name__ == "__main__":
    data = DataLoader(TensorDataset(torch.randn(64, 4), torch.randn(64, 1)), batch_size=4)
    trainer = pl.Trainer(
        max_steps=5, accumulate_grad_batches=2, accelerator="cpu", devices=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        default_root_dir=".",
    )
    trainer.fit(Tiny(), data)
"""


def test_a_lightning_script_gets_its_steps_from_the_trainer(tmp_path):
    pytest.importorskip("lightning.pytorch")
    script = tmp_path / "train_lightning.py"
    script.write_text(textwrap.dedent(LIGHTNING_SCRIPT))
    out = tmp_path / "out"
    proc = _torchdiag_run(*_options(out), "--no-report", str(script), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = load_record(out / "run.json")
    # 5 optimizer updates of 2 batches each: the trainer's steps, not its 10 batches; one
    # capture only (the callback marked steps on the launcher's run, wrote no record of its own).
    assert record.steps.count == 5
    assert not list(tmp_path.rglob("torchdiag/run.json"))
