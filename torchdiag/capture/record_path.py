"""Where a run's record goes: the path asked for, a rank's own name, a fallback when unwritable."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from torchdiag.record import DistributedInfo

DEFAULT_DIR = "torchdiag_runs"


def resolve_output(
    output: str | os.PathLike[str] | None, dist: DistributedInfo, started: dt.datetime
) -> Path:
    """The record's path: ``output`` (a folder gets ``run.json``), or a new run folder under
    :data:`DEFAULT_DIR`; under torch.distributed each rank's file is ``<stem>.rank<R>.json``."""
    distributed = dist.world_size > 1
    if output is None:
        folder = Path(DEFAULT_DIR) / _run_dir_name(started, distributed)
        path = folder / "run.json"
    else:
        path = Path(output)
        if path.is_dir() or str(output).endswith(("/", os.sep)):
            path = path / "run.json"
    if distributed:
        path = path.with_name(f"{stem(path)}.rank{dist.rank}{path.suffix or '.json'}")
    return path


def _run_dir_name(started: dt.datetime, distributed: bool) -> str:
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    if not distributed:
        return f"{stamp}-{os.getpid()}"
    # Every rank must pick the same directory without talking to the others: torchrun's run id
    # when it was given one, else the launcher's pid and port, shared by the ranks it started.
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    if run_id and run_id != "none":
        return f"torchrun-{run_id}"
    return f"torchrun-{os.getppid()}-{os.environ.get('MASTER_PORT', '0')}"


def stem(path: Path) -> str:
    """The file name without its last suffix."""
    return path.name[: -len(path.suffix)] if path.suffix else path.name


def fallback_path(path: Path) -> Path:
    """Where a record goes when its own path cannot be written: the system's temporary folder,
    named for the run so it can be found (the warning says where)."""
    import tempfile

    return Path(tempfile.gettempdir()) / f"torchdiag-fallback-{os.getpid()}-{path.name}"


def failed_path(err: BaseException) -> str:
    """The failed path of an OSError, else the error's text."""
    return str(getattr(err, "filename", None) or err)
