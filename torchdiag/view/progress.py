"""How far a running job has got: its steps against its step limit, or through the epoch of its
training DataLoader, and the time left at the run's step time.

A running record (the live view, ``torchdiag watch``) says how many steps are done. The live view
reads progress off the record cut to its last minute: the time left is told at the step time of
the recent steps, not the mean since the start. It says how
many are to come only where something bounds them: the step limit the run was given
(``max_steps``), else the length of the DataLoader it trains on (``len(loader)``: batches per
epoch). How many epochs a script will run is not knowable from outside it, so the time left is
told to the end of the current epoch. The DataLoader it trains on is the one that gave the most
batches (evaluation loaders give fewer), and batches per step come from its batches over the
steps so far, so gradient accumulation (several batches per optimizer step) is counted right.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torchdiag.record import LoaderInfo, RunRecord

EtaTarget = Literal["limit", "epoch"]


@dataclass(frozen=True)
class Progress:
    """Steps done and, where known, the total and the seconds left.

    ``total_steps`` is the step limit; ``epoch`` (1-based), ``epoch_batches`` and
    ``epoch_length`` place the run in the current epoch of its training DataLoader (``None``
    without a loader of known length). ``eta_s`` is the time left to ``eta_to``: the step
    limit where there is one, else the end of the epoch (``None``: not known).
    """

    steps: int
    total_steps: int | None = None
    epoch: int | None = None
    epoch_batches: int | None = None
    epoch_length: int | None = None
    eta_s: float | None = None
    eta_to: EtaTarget | None = None


def training_loader(record: RunRecord) -> LoaderInfo | None:
    """The DataLoader the run trains on: the one that gave the most batches (None without)."""
    loaders = [info for info in record.environment.loaders if info.batches > 0]
    return max(loaders, key=lambda info: (info.batches, -info.loader_id), default=None)


def _steps_done(record: RunRecord) -> int:
    """Steps the run has completed: its count, or the end of its last step row where that is
    further (a record cut to its recent rows, :mod:`torchdiag.view.recent`, keeps the run's own
    step numbering but counts only the rows it kept)."""
    s = record.steps
    end = (
        s.first_step[-1] + s.steps[-1] if s.first_step and len(s.steps) == len(s.first_step) else 0
    )
    return max(s.count, end)


def run_progress(record: RunRecord, step_ms: float | None) -> Progress:
    """The run's progress; ``step_ms`` is its step time (the view's un-profiled step: of the
    recent steps, in a record cut to them), which turns the steps left into seconds."""
    done = _steps_done(record)
    limit = record.steps.limit
    loader = training_loader(record)
    epoch = epoch_batches = length = None
    if loader is not None and loader.length is not None and loader.epochs > 0:
        epoch, epoch_batches, length = loader.epochs, loader.epoch_batches, loader.length
    step_s = step_ms / 1e3 if step_ms is not None and step_ms > 0 else None
    if limit is not None:
        eta = max(0, limit - done) * step_s if step_s is not None else None
        return Progress(done, limit, epoch, epoch_batches, length, eta, "limit")
    if loader is None or length is None or epoch_batches is None or step_s is None or not done:
        return Progress(done, None, epoch, epoch_batches, length)
    batches_per_step = loader.batches / done
    steps_left = max(0, length - epoch_batches) / batches_per_step
    return Progress(done, None, epoch, epoch_batches, length, steps_left * step_s, "epoch")
