"""A run's numbers for experiment trackers (TensorBoard, W&B, MLflow, …).

:func:`flat_metrics` turns a record into one flat ``{name: number or text}`` dictionary any
tracker can log; :func:`log_to_tensorboard` writes it with ``torch.utils.tensorboard``. The
headline numbers are those of :attr:`torchdiag.view.run_view.RunView.headline` under the same
names as in ``torchdiag report --format json``, and the findings those of
:func:`torchdiag.analyze.registry.analyze`: a tracker shows the same numbers as the report.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Protocol

from torchdiag.analyze.registry import Analysis, analyze
from torchdiag.record import RunRecord
from torchdiag.view.run_view import RunView

PREFIX = "torchdiag/"
# Finding fields a tracker can chart across runs (the text fields stay in the report).
FINDING_NUMBERS = ("saving_pct_max", "saving_pct", "saving_pct_low")

Metric = float | int | str


class ScalarWriter(Protocol):
    """What :func:`log_to_tensorboard` needs of a writer (``SummaryWriter`` and tensorboardX's)."""

    def add_scalar(self, tag: str, scalar_value: Any, global_step: int | None = None) -> Any: ...

    def add_text(self, tag: str, text_string: str, global_step: int | None = None) -> Any: ...

    def flush(self) -> Any: ...


def flat_metrics(record: RunRecord, analysis: Analysis | None = None) -> dict[str, Metric]:
    """The run's headline numbers and findings as one flat dictionary.

    Keys: ``torchdiag/<headline key>`` (``torchdiag/step_ms_estimate``, ``torchdiag/gpu_busy_pct``,
    …; a range becomes ``…_low`` and ``…_high``; a flag 0 or 1; values the record does not have
    are left out), ``torchdiag/status``, ``torchdiag/findings/count``, and per finding
    ``torchdiag/findings/<id>/severity``, ``…/saving_pct_max``, ``…/saving_pct``,
    ``…/saving_pct_low`` and ``…/evidence/<name>``. ``analysis`` defaults to running every rule.
    """
    view = RunView(record)
    if analysis is None:
        analysis = analyze(view)
    out: dict[str, Metric] = {f"{PREFIX}status": record.status.state}
    for key, value in view.headline.items():
        if isinstance(value, list | tuple) and len(value) == 2:
            _put(out, f"{PREFIX}{key}_low", value[0])
            _put(out, f"{PREFIX}{key}_high", value[1])
        else:
            _put(out, PREFIX + key, value)
    out[f"{PREFIX}findings/count"] = len(analysis.findings)
    seen: dict[str, int] = {}
    for finding in analysis.findings:
        # No rule reports an id twice today; if one ever does, the second is kept apart.
        seen[finding.id] = seen.get(finding.id, 0) + 1
        name = finding.id if seen[finding.id] == 1 else f"{finding.id}.{seen[finding.id]}"
        base = f"{PREFIX}findings/{name}/"
        out[base + "severity"] = finding.severity
        for field in FINDING_NUMBERS:
            _put(out, base + field, getattr(finding, field))
        for key, value in finding.evidence.items():
            _put(out, f"{base}evidence/{key}", value)
    return out


def _put(out: dict[str, Metric], key: str, value: Any) -> None:
    """Store ``value`` if a tracker can take it: numbers, text, flags as 0/1; nothing else."""
    if value is None:
        return
    if isinstance(value, bool):
        out[key] = int(value)
    elif isinstance(value, int | float | str):
        out[key] = value


def log_to_tensorboard(
    record: RunRecord,
    writer_or_logdir: ScalarWriter | str | os.PathLike[str],
    *,
    step: int | None = None,
    analysis: Analysis | None = None,
) -> dict[str, Metric]:
    """Write :func:`flat_metrics` to TensorBoard: numbers as scalars, text with ``add_text``.

    ``writer_or_logdir`` is an open ``SummaryWriter`` (flushed, left open) or a log directory
    (a writer is opened there and closed). ``step`` is the global step the values are logged at
    (default: the run's step count). Returns what was written.
    """
    metrics = flat_metrics(record, analysis)
    if step is None:
        steps = metrics.get(f"{PREFIX}steps", 0)
        step = steps if isinstance(steps, int) else 0
    if isinstance(writer_or_logdir, str | os.PathLike):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError(
                "log_to_tensorboard needs TensorBoard: pip install tensorboard"
            ) from err
        with SummaryWriter(log_dir=os.fspath(writer_or_logdir)) as writer:
            _write(writer, metrics, step)
    else:
        _write(writer_or_logdir, metrics, step)
        writer_or_logdir.flush()
    return metrics


def log_metrics(
    record: RunRecord, writer_or_logdir: ScalarWriter | str | os.PathLike[str], step: int
) -> None:
    """:func:`log_to_tensorboard` for a callback at the end of training: a failure is a warning,
    never an error in the user's training."""
    try:
        log_to_tensorboard(record, writer_or_logdir, step=step)
    except Exception as err:
        warnings.warn(
            f"torchdiag: logging to TensorBoard failed ({type(err).__name__}: {err})",
            stacklevel=3,
        )


def _write(writer: ScalarWriter, metrics: dict[str, Metric], step: int) -> None:
    for key, value in metrics.items():
        if isinstance(value, str):
            writer.add_text(key, value, global_step=step)
        else:
            writer.add_scalar(key, value, global_step=step)
