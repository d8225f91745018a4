"""The Hugging Face Trainer callback: record in ``output_dir``, steps = optimizer updates, the
profiler window, failures, joining an active capture, TensorBoard, and ``auto.install()``."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded; make sure nothing tries
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import torch  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

import torchdiag  # noqa: E402
from torchdiag.capture.session import active_run  # noqa: E402
from torchdiag.integrations import auto  # noqa: E402
from torchdiag.integrations.hf import TorchdiagCallback  # noqa: E402
from torchdiag.integrations.trackers import flat_metrics  # noqa: E402
from torchdiag.record import load_record  # noqa: E402

FAST = {"skip_first": 1, "profile_steps": 2, "sample_interval": 0.05}


class PlantedError(Exception):
    pass


class Pairs(Dataset):
    """64 fixed (x, label) pairs as the dicts the Trainer collates."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        return {"x": torch.randn(4, generator=g), "labels": torch.randn(1, generator=g)}


class TinyModel(torch.nn.Module):
    """A linear model returning ``{"loss": ...}``; counts forwards and can fail at one."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.fail_at = fail_at
        self.forwards = 0

    def forward(self, x, labels=None):
        if self.forwards == self.fail_at:
            raise PlantedError(f"planted at forward {self.forwards}")
        self.forwards += 1
        out = self.layer(x)
        return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}


def _trainer(tmp_path, callbacks, model=None, **kwargs) -> transformers.Trainer:
    settings = {
        "output_dir": str(tmp_path / "out"),
        "use_cpu": True,
        "report_to": [],
        "max_steps": 5,
        "per_device_train_batch_size": 4,
        "save_strategy": "no",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    settings.update(kwargs)
    args = transformers.TrainingArguments(**settings)
    return transformers.Trainer(
        model=model or TinyModel(), args=args, train_dataset=Pairs(), callbacks=callbacks
    )


def test_record_in_output_dir_with_updates_as_steps(tmp_path, capsys):
    model = TinyModel()
    callback = TorchdiagCallback(**FAST)
    trainer = _trainer(tmp_path, [callback], model=model, gradient_accumulation_steps=2)
    trainer.train()

    path = tmp_path / "out" / "torchdiag" / "run.json"
    record = load_record(path)
    assert record.status.state == "completed"
    assert model.forwards == 10  # two batches per update
    assert record.steps.count == trainer.state.global_step == 5
    assert record.steps.detection == "manual"
    assert record.profiler is not None and record.profiler.summary is not None
    assert record.steps.profiled == [True, True, True, False, False]
    assert f"record written to {path}" in capsys.readouterr().err


def test_failed_training_writes_a_failed_record_and_keeps_the_exception(tmp_path):
    callback = TorchdiagCallback(tmp_path / "run.json", **FAST)
    trainer = _trainer(tmp_path, [callback], model=TinyModel(fail_at=3))
    with pytest.raises(PlantedError, match="planted at forward 3"):
        trainer.train()
    record = load_record(tmp_path / "run.json")
    assert record.status.state == "failed"
    assert record.status.exception_type == "PlantedError"
    assert record.steps.count == 3
    assert active_run() is None


class Interrupting(TinyModel):
    def forward(self, x, labels=None):
        if self.forwards == 2:
            raise KeyboardInterrupt
        return super().forward(x, labels)


def test_interrupted_training_is_recorded_as_interrupted(tmp_path):
    callback = TorchdiagCallback(tmp_path / "run.json", profile_steps=0)
    with pytest.raises(KeyboardInterrupt):
        _trainer(tmp_path, [callback], model=Interrupting()).train()
    record = load_record(tmp_path / "run.json")
    assert record.status.state == "interrupted"
    assert record.status.exception_type == "KeyboardInterrupt"
    assert record.steps.count == 2


def test_inside_an_active_capture_steps_go_to_it(tmp_path):
    callback = TorchdiagCallback()
    with torchdiag.profile(tmp_path / "outer.json", **FAST) as run:
        trainer = _trainer(tmp_path, [callback], gradient_accumulation_steps=2)
        trainer.train()
        assert run.steps == trainer.state.global_step == 5
    assert callback.record is None
    assert not (tmp_path / "out" / "torchdiag").exists()  # no second record
    assert load_record(tmp_path / "outer.json").steps.count == 5


def test_tensorboard_when_report_to_includes_it(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    callback = TorchdiagCallback(tmp_path / "run.json", **FAST)
    trainer = _trainer(tmp_path, [callback], report_to=["tensorboard"], logging_steps=1)
    trainer.train()
    # The folder the Trainer's own TensorBoard callback chose: output_dir/runs/<time>_<host>.
    [logdir] = (tmp_path / "out" / "runs").iterdir()
    events = EventAccumulator(str(logdir))
    events.Reload()
    expected = flat_metrics(load_record(tmp_path / "run.json"))
    scalars = set(events.Tags()["scalars"])
    numbers = {k: v for k, v in expected.items() if not isinstance(v, str)}
    assert set(numbers) <= scalars
    assert "train/loss" in scalars  # beside the Trainer's own logs
    step = events.Scalars("torchdiag/step_ms_estimate")[-1]
    assert step.step == trainer.state.global_step
    assert step.value == pytest.approx(expected["torchdiag/step_ms_estimate"], rel=1e-6)


def test_no_tensorboard_output_without_report_to(tmp_path):
    callback = TorchdiagCallback(tmp_path / "run.json", **FAST)
    _trainer(tmp_path, [callback]).train()
    assert (tmp_path / "run.json").exists()
    assert not list(tmp_path.rglob("events.out.tfevents*"))


def test_auto_install_adds_exactly_one_callback(tmp_path):
    undo = auto.install()
    try:
        added = _trainer(tmp_path, None)
        own = TorchdiagCallback()
        passed = _trainer(tmp_path, [own])
    finally:
        undo()
    after = _trainer(tmp_path, None)

    def ours(trainer):
        return [c for c in trainer.callback_handler.callbacks if isinstance(c, TorchdiagCallback)]

    assert len(ours(added)) == 1
    assert ours(passed) == [own]
    assert ours(after) == []


def test_auto_install_before_transformers_is_imported(tmp_path):
    """install() first, then the script imports transformers (lazily, as it does) and trains
    inside torchdiag.profile(): one callback, marking steps on that capture."""
    script = textwrap.dedent(
        f"""
        import sys
        from torchdiag.integrations import auto
        undo = auto.install()
        assert "transformers.trainer" not in sys.modules
        import torch, torchdiag
        import transformers
        from torchdiag.integrations.hf import TorchdiagCallback
        class Data(torch.utils.data.Dataset):
            def __len__(self): return 16
            def __getitem__(self, i): return {{"x": torch.ones(4) * i}}
        class Model(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.layer = torch.nn.Linear(4, 1)
            def forward(self, x): return {{"loss": self.layer(x).pow(2).mean()}}
        with torchdiag.profile({str(tmp_path / "run.json")!r}, profile_steps=0) as run:
            args = transformers.TrainingArguments(output_dir={str(tmp_path)!r}, use_cpu=True,
                report_to=[], max_steps=3, per_device_train_batch_size=4, save_strategy="no",
                disable_tqdm=True)
            trainer = transformers.Trainer(model=Model(), args=args, train_dataset=Data())
            ours = [c for c in trainer.callback_handler.callbacks
                    if isinstance(c, TorchdiagCallback)]
            assert len(ours) == 1, trainer.callback_handler.callbacks
            trainer.train()
        undo()
        print("steps", run.record.steps.count, trainer.state.global_step)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "steps 3 3" in done.stdout


def test_module_names_the_extra_when_transformers_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.delitem(sys.modules, "torchdiag.integrations.hf")
    with pytest.raises(ImportError, match=r"pip install 'torchdiag\[hf\]'"):
        importlib.import_module("torchdiag.integrations.hf")
