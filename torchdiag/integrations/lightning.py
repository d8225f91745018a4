"""``TorchdiagCallback`` for PyTorch Lightning (``lightning.pytorch`` or ``pytorch_lightning``).

>>> from torchdiag.integrations.lightning import TorchdiagCallback  # doctest: +SKIP
>>> trainer = Trainer(callbacks=[TorchdiagCallback()])  # doctest: +SKIP

The capture starts when training starts (after the sanity check), marks one step per optimizer
update from the trainer's ``global_step`` (with ``accumulate_grad_batches=N`` a step is N
batches), and ends when training ends or fails. The record goes to
``<trainer.log_dir>/torchdiag/run.json``: the logger's version folder
(``lightning_logs/version_0/torchdiag/run.json`` with the default logger), or
``<default_root_dir>/torchdiag/run.json`` without a logger.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchdiag.integrations.trackers import log_metrics
from torchdiag.integrations.training_capture import RECORD_DIR, ProfileOptions, TrainingCapture

try:
    from lightning.pytorch import Callback
except ImportError:  # the older package name
    try:
        from pytorch_lightning import Callback
    except ImportError as err:
        raise ImportError(
            "torchdiag.integrations.lightning needs PyTorch Lightning: "
            "pip install 'torchdiag[lightning]'"
        ) from err

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from torchdiag.record import RunRecord

# The same logger class under either package name.
_TENSORBOARD_LOGGERS = (
    ("lightning.pytorch.loggers", "TensorBoardLogger"),
    ("pytorch_lightning.loggers", "TensorBoardLogger"),
)


class TorchdiagCallback(Callback):
    """Capture a Lightning training run with torchdiag.

    Args:
        output: Path of the record; ``None`` writes ``<trainer.log_dir>/torchdiag/run.json``
            (under DDP each rank writes ``run.rank<R>.json`` there).
        tensorboard: At the end, log the run's numbers and findings
            (:func:`torchdiag.integrations.trackers.flat_metrics`) to the trainer's
            TensorBoard logger, if it has one.
        **options: Any option of :class:`torchdiag.profile` (``profile_steps``, ``skip_first``,
            ``sample_interval``, ``trace``, …).

    Inside an active ``torchdiag.profile()`` (or under ``torchdiag run``) the callback opens no
    capture of its own: it marks the trainer's steps on the active one, which writes the record.
    """

    def __init__(
        self,
        output: str | os.PathLike[str] | None = None,
        *,
        tensorboard: bool = True,
        **options: Unpack[ProfileOptions],
    ) -> None:
        super().__init__()
        self.capture = TrainingCapture(output, options)
        self.tensorboard = tensorboard
        self.record: RunRecord | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Open the capture (or join the active one)."""
        self.record = None
        # log_dir is read on every rank (it is broadcast from rank 0), so every rank asks for it.
        self.capture.begin(lambda: _default_output(trainer), trainer.global_step)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """A batch that updated the weights ends a step; accumulation batches do not."""
        self.capture.mark(trainer.global_step)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Close the capture and write the record (and log it to TensorBoard)."""
        self._end(trainer, None)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Training failed or was interrupted: the record says so; the exception goes on."""
        self._end(trainer, exception)

    def _end(self, trainer: Any, exception: BaseException | None) -> None:
        main = bool(getattr(trainer, "is_global_zero", True))
        self.record = self.capture.end(exception, announce=main)
        if self.record is None or not (self.tensorboard and main):
            return
        for logger in getattr(trainer, "loggers", []):
            if _is_tensorboard(logger):
                log_metrics(self.record, logger.experiment, trainer.global_step)


def _default_output(trainer: Any) -> Path:
    folder = trainer.log_dir or trainer.default_root_dir
    return Path(folder) / RECORD_DIR / "run.json"


def _is_tensorboard(logger: Any) -> bool:
    import importlib
    import sys

    for module_name, class_name in _TENSORBOARD_LOGGERS:
        if module_name.split(".")[0] not in sys.modules:
            continue  # a package the trainer cannot be using
        cls = getattr(importlib.import_module(module_name), class_name, None)
        if cls is not None and isinstance(logger, cls):
            return True
    return False
