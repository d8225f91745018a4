"""The Lightning callback: where the record goes, steps = optimizer updates, the profiler window,
failures, joining an active capture, TensorBoard, and ``auto.install()``."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest

pl = pytest.importorskip("lightning.pytorch")
pytest.importorskip("tensorboard")

import torch  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import torchdiag  # noqa: E402
from torchdiag.capture.session import active_run  # noqa: E402
from torchdiag.integrations import auto  # noqa: E402
from torchdiag.integrations.lightning import TorchdiagCallback  # noqa: E402
from torchdiag.integrations.trackers import flat_metrics  # noqa: E402
from torchdiag.record import load_record  # noqa: E402

FAST = {"skip_first": 1, "profile_steps": 2, "sample_interval": 0.05}


class PlantedError(Exception):
    pass


class TinyModule(pl.LightningModule):
    """A linear model; counts the batches it trains on and can fail at a chosen one."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.fail_at = fail_at
        self.batches = 0

    def training_step(self, batch, batch_idx):
        if self.batches == self.fail_at:
            raise PlantedError(f"planted at batch {self.batches}")
        self.batches += 1
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader() -> DataLoader:
    data = TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
    return DataLoader(data, batch_size=4)


def _trainer(root, callbacks, **kwargs) -> pl.Trainer:
    settings = {
        "max_steps": 6,
        "accelerator": "cpu",
        "devices": 1,
        "default_root_dir": str(root),
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "num_sanity_val_steps": 0,
        "logger": False,
    }
    settings.update(kwargs)
    return pl.Trainer(callbacks=callbacks, **settings)


def test_record_in_log_dir_with_steps_and_window(tmp_path):
    logger = pl.loggers.TensorBoardLogger(str(tmp_path), name="logs")
    callback = TorchdiagCallback(**FAST)
    trainer = _trainer(tmp_path, [callback], logger=logger)
    trainer.fit(TinyModule(), _loader())

    path = tmp_path / "logs" / "version_0" / "torchdiag" / "run.json"
    assert trainer.log_dir == str(tmp_path / "logs" / "version_0")
    record = load_record(path)
    assert record.status.state == "completed"
    assert record.steps.count == trainer.global_step == 6
    assert record.steps.detection == "manual"
    assert record.profiler is not None and record.profiler.summary is not None
    # skip_first=1: step 0 warms the profiler up, steps 1 and 2 are recorded.
    assert record.steps.profiled[:4] == [True, True, True, False]

    # The run's numbers were logged to the trainer's TensorBoard logger, at its last step.
    events = EventAccumulator(str(tmp_path / "logs" / "version_0"))
    events.Reload()
    expected = flat_metrics(record)
    logged = {tag: events.Scalars(tag)[-1] for tag in events.Tags()["scalars"]}
    assert logged["torchdiag/steps"].value == 6
    assert logged["torchdiag/steps"].step == trainer.global_step
    numbers = {k: v for k, v in expected.items() if not isinstance(v, str)}
    assert set(numbers) <= set(logged)
    for key, value in numbers.items():
        assert logged[key].value == pytest.approx(value, rel=1e-6), key


def test_without_a_logger_the_record_is_in_default_root_dir(tmp_path):
    callback = TorchdiagCallback(**FAST)
    _trainer(tmp_path, [callback], max_steps=3).fit(TinyModule(), _loader())
    record = load_record(tmp_path / "torchdiag" / "run.json")
    assert record.steps.count == 3
    assert callback.record is not None and callback.record.steps.count == 3


def test_a_mistyped_option_fails_where_the_callback_is_made():
    with pytest.raises(TypeError, match="profile_step"):
        TorchdiagCallback(profile_step=3)


def test_gradient_accumulation_counts_updates_not_batches(tmp_path):
    callback = TorchdiagCallback(tmp_path / "run.json", **FAST)
    module = TinyModule()
    trainer = _trainer(tmp_path, [callback], max_steps=4, accumulate_grad_batches=2)
    trainer.fit(module, _loader())
    record = load_record(tmp_path / "run.json")
    assert module.batches == 8
    assert trainer.global_step == 4
    assert record.steps.count == 4


def test_failed_training_writes_a_failed_record_and_keeps_the_exception(tmp_path):
    callback = TorchdiagCallback(tmp_path / "run.json", **FAST)
    with pytest.raises(PlantedError, match="planted at batch 3"):
        _trainer(tmp_path, [callback]).fit(TinyModule(fail_at=3), _loader())
    record = load_record(tmp_path / "run.json")
    assert record.status.state == "failed"
    assert record.status.exception_type == "PlantedError"
    assert record.steps.count == 3
    assert active_run() is None


def test_inside_an_active_capture_steps_go_to_it(tmp_path):
    callback = TorchdiagCallback()
    with torchdiag.profile(tmp_path / "outer.json", **FAST) as run:
        trainer = _trainer(tmp_path, [callback], max_steps=5, accumulate_grad_batches=2)
        trainer.fit(TinyModule(), _loader())
        assert run.steps == trainer.global_step == 5
        assert active_run() is run
    assert callback.record is None
    assert not (tmp_path / "torchdiag").exists()  # no second record
    record = load_record(tmp_path / "outer.json")
    assert record.steps.count == 5
    assert record.steps.detection == "manual"


def test_joining_with_own_options_warns_they_are_unused(tmp_path):
    callback = TorchdiagCallback(tmp_path / "inner.json")
    with torchdiag.profile(tmp_path / "outer.json", profile_steps=0):
        with pytest.warns(UserWarning, match="already active"):
            _trainer(tmp_path, [callback], max_steps=2).fit(TinyModule(), _loader())
    assert not (tmp_path / "inner.json").exists()


def test_pytorch_lightning_package_name(tmp_path):
    """The callback works with a Trainer of the older ``pytorch_lightning`` package as well."""
    ptl = pytest.importorskip("pytorch_lightning")

    class Module(ptl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    callback = TorchdiagCallback(tmp_path / "run.json", **FAST)
    trainer = ptl.Trainer(
        max_steps=4,
        accumulate_grad_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[callback],
    )
    trainer.fit(Module(), _loader())
    assert load_record(tmp_path / "run.json").steps.count == trainer.global_step == 4


def test_auto_install_adds_exactly_one_callback(tmp_path):
    undo = auto.install()
    try:
        added = _trainer(tmp_path, None)
        own = TorchdiagCallback()
        passed = _trainer(tmp_path, [own])
    finally:
        undo()
    after = _trainer(tmp_path, None)
    assert [type(c) for c in added.callbacks].count(TorchdiagCallback) == 1
    assert [c for c in passed.callbacks if isinstance(c, TorchdiagCallback)] == [own]
    assert not any(isinstance(c, TorchdiagCallback) for c in after.callbacks)


def test_auto_install_before_lightning_is_imported(tmp_path):
    """The launcher's order: install(), then the script imports Lightning and trains inside
    torchdiag.profile(); the trainer's steps go to that capture."""
    script = textwrap.dedent(
        f"""
        import sys
        from torchdiag.integrations import auto
        undo = auto.install()
        assert "lightning" not in sys.modules
        import torch, torchdiag
        with torchdiag.profile({str(tmp_path / "run.json")!r}, profile_steps=0) as run:
            import lightning.pytorch as pl
            from torchdiag.integrations.lightning import TorchdiagCallback
            class M(pl.LightningModule):
                def __init__(self):
                    super().__init__()
                    self.layer = torch.nn.Linear(4, 1)
                def training_step(self, batch, i):
                    return self.layer(batch[0]).pow(2).mean()
                def configure_optimizers(self):
                    return torch.optim.SGD(self.parameters(), lr=0.1)
            data = torch.utils.data.TensorDataset(torch.randn(16, 4))
            trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False,
                                 enable_progress_bar=False, enable_model_summary=False,
                                 default_root_dir={str(tmp_path)!r})
            ours = [c for c in trainer.callbacks if isinstance(c, TorchdiagCallback)]
            assert len(ours) == 1, trainer.callbacks
            trainer.fit(M(), torch.utils.data.DataLoader(data, batch_size=4))
        undo()
        assert "__torchdiag_adds__" not in vars(pl.Trainer.__init__)
        print("steps", run.record.steps.count, trainer.global_step)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "steps 3 3" in done.stdout
    assert load_record(tmp_path / "run.json").steps.count == 3


def test_module_names_the_extra_when_lightning_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.setitem(sys.modules, "pytorch_lightning", None)
    monkeypatch.delitem(sys.modules, "torchdiag.integrations.lightning")
    with pytest.raises(ImportError, match=r"pip install 'torchdiag\[lightning\]'"):
        importlib.import_module("torchdiag.integrations.lightning")
