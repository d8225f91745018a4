"""``TorchdiagCallback`` for the Hugging Face ``transformers.Trainer``.

>>> from torchdiag.integrations.hf import TorchdiagCallback  # doctest: +SKIP
>>> trainer = Trainer(model, args, callbacks=[TorchdiagCallback()])  # doctest: +SKIP

The capture starts at ``on_train_begin``, marks one step per ``on_step_end`` (one optimizer update:
with ``gradient_accumulation_steps=N`` a step is N batches) and ends at ``on_train_end``. The record
goes to ``<args.output_dir>/torchdiag/run.json``.

A ``TrainerCallback`` hears of no exception, so creating the callback wraps
``transformers.Trainer.train`` once per process: when ``train()`` raises, each torchdiag callback
of that trainer writes its record as failed (or interrupted) and the exception goes on unchanged.
The wrapper does nothing for trainers without one.
"""

from __future__ import annotations

import functools
import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchdiag.integrations.trackers import log_metrics
from torchdiag.integrations.training_capture import RECORD_DIR, ProfileOptions, TrainingCapture

try:
    import transformers
    from transformers import TrainerCallback
except ImportError as err:
    raise ImportError(
        "torchdiag.integrations.hf needs transformers: pip install 'torchdiag[hf]'"
    ) from err

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from torchdiag.record import RunRecord

_WRAPPED = "__torchdiag_outcome__"


class TorchdiagCallback(TrainerCallback):
    """Capture a Hugging Face Trainer's training run with torchdiag.

    Args:
        output: Path of the record; ``None`` writes ``<args.output_dir>/torchdiag/run.json``
            (under torch.distributed each rank writes ``run.rank<R>.json`` there).
        tensorboard: At the end, when ``args.report_to`` includes TensorBoard, log the run's
            numbers and findings (:func:`torchdiag.integrations.trackers.flat_metrics`) into the
            Trainer's TensorBoard log folder.
        **options: Any option of :class:`torchdiag.profile` (``profile_steps``, ``skip_first``,
            ``sample_interval``, ``trace``, …).

    Inside an active ``torchdiag.profile()`` (or under ``torchdiag run``) the callback opens no
    capture of its own: it marks the trainer's steps on the active one, which writes the record.
    Only the main process prints.
    """

    def __init__(
        self,
        output: str | os.PathLike[str] | None = None,
        *,
        tensorboard: bool = True,
        **options: Unpack[ProfileOptions],
    ) -> None:
        self.capture = TrainingCapture(output, options)
        self.tensorboard = tensorboard
        self.record: RunRecord | None = None
        # Set by the wrapped Trainer.train (for its TensorBoard folder); weak: never keeps a
        # trainer alive.
        self.trainer: weakref.ref[Any] | None = None
        wrap_train_for_outcome()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Open the capture (or join the active one)."""
        self.record = None
        self.capture.begin(
            lambda: Path(args.output_dir) / RECORD_DIR / "run.json", state.global_step
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """One optimizer update ended: one step."""
        self.capture.mark(state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Close the capture, write the record (and log it to TensorBoard)."""
        main = bool(state.is_world_process_zero)
        self.record = self.capture.end(None, announce=main)
        if self.record is None or not (self.tensorboard and main):
            return
        logdir = _tensorboard_dir(args, self.trainer() if self.trainer is not None else None)
        if logdir is not None:
            log_metrics(self.record, logdir, state.global_step)

    def training_failed(self, exception: BaseException, main: bool) -> None:
        """Write the record as failed (``Exception``) or interrupted (anything else)."""
        self.record = self.capture.end(exception, announce=main)


def _tensorboard_dir(args: Any, trainer: Any) -> str | None:
    """The folder the Trainer's own TensorBoard callback writes to, when it reports there."""
    report_to = args.report_to if isinstance(args.report_to, list) else [args.report_to]
    if "tensorboard" not in report_to and "all" not in report_to:
        return None
    if trainer is not None:
        for callback in trainer.callback_handler.callbacks:
            logdir = getattr(callback, "logging_dir", None)
            if type(callback).__name__ == "TensorBoardCallback" and logdir:
                return str(logdir)
    return os.environ.get("TENSORBOARD_LOGGING_DIR")


def wrap_train_for_outcome() -> None:
    """Wrap ``transformers.Trainer.train`` (once) so a failed training writes a failed record."""
    trainer_class = transformers.Trainer
    original = trainer_class.train
    if getattr(original, _WRAPPED, False):
        return

    @functools.wraps(original)
    def train(self: Any, *args: Any, **kwargs: Any) -> Any:
        ours = _callbacks_of(self)
        for callback in ours:
            callback.trainer = weakref.ref(self)
        try:
            return original(self, *args, **kwargs)
        except BaseException as exc:
            main = bool(getattr(getattr(self, "state", None), "is_world_process_zero", True))
            for callback in ours:
                callback.training_failed(exc, main)
            raise

    setattr(train, _WRAPPED, True)
    trainer_class.train = train


def _callbacks_of(trainer: Any) -> list[TorchdiagCallback]:
    handler = getattr(trainer, "callback_handler", None)
    callbacks = getattr(handler, "callbacks", [])
    return [cb for cb in callbacks if isinstance(cb, TorchdiagCallback)]
