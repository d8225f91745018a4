"""Whether a run ended, and, for one that did not, whether the process writing it still runs.

A live capture checkpoints its record while the block runs (``profile(checkpoint_interval=...)``):
state ``running``, no end, ``checkpoint_utc`` the time of the checkpoint. Read later, such a
record is either a run still going (a live panel, a report taken mid-run) or one whose process
died without a word (``kill -9``, the OOM killer, a node lost). :func:`writer_process` tells
which, the one place that judges it; :func:`run_end` says it in the words every report format
uses, so HTML, Markdown, text and JSON never disagree.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from torchdiag.files import pid_alive
from torchdiag.host import is_this_host
from torchdiag.record import RunRecord, RunState

# "alive": the writer's pid runs on this host (and started before the run did); "gone": it does
# not; "unknown": the record was written on another host, or names no host or pid.
ProcessState = Literal["alive", "gone", "unknown"]

# A process that started this long after the run's recorded start is not the run's writer: its
# pid was reused (started_utc has whole seconds; clocks step a little).
_PID_REUSE_SLACK_S = 2.0

_PROCESS_WORDS: dict[ProcessState, str] = {
    "alive": "the process is still running",
    "gone": "the process is gone",
    "unknown": "cannot tell whether the process is still running",
}


@dataclass(frozen=True, slots=True)
class RunEnd:
    """How the record's run ended, as reports say it.

    ``ended`` is False for a record written while its block still ran (state ``running``);
    ``process`` then says whether its writer still runs, and ``note`` the sentence every format
    prints ("no end recorded; last checkpoint at …; the process is gone"). For a run that ended,
    ``process`` is None and ``note`` empty.
    """

    state: RunState
    ended: bool
    checkpoint_utc: str | None = None
    process: ProcessState | None = None
    note: str = ""


def writer_process(record: RunRecord) -> ProcessState:
    """Whether the process that wrote ``record`` still runs, as far as this host can tell.

    The writer is ``environment.pid`` on ``environment.hostname`` (as is, or its short hash when
    redacted). Only a record written on this host can be judged; a pid that runs but whose
    process started after the run did was reused by another program, and counts as gone.
    """
    env = record.environment
    if env.pid is None or is_this_host(env.hostname) is not True:
        return "unknown"
    if not pid_alive(env.pid) or _not_the_writer(env.pid, _timestamp(record.started_utc)):
        return "gone"
    return "alive"


def run_end(record: RunRecord) -> RunEnd:
    """The record's end, or, for a record of a run that did not end, what is known of it."""
    state = record.status.state
    if state != "running" or record.source != "live":
        return RunEnd(state=state, ended=True)
    process = writer_process(record)
    where = process_words(process, record)
    when = record.checkpoint_utc
    checkpoint = f"last checkpoint at {utc_text(when)}" if when else "no checkpoint time recorded"
    return RunEnd(
        state=state,
        ended=False,
        checkpoint_utc=when,
        process=process,
        note=f"no end recorded; {checkpoint}; {where}",
    )


def process_words(process: ProcessState, record: RunRecord) -> str:
    """``process`` in words; for a record of another host, which one."""
    words = _PROCESS_WORDS[process]
    host = record.environment.hostname
    if process == "unknown" and host and is_this_host(host) is False:
        words += f" (it ran on {host}, not on this host)"
    return words


def utc_text(iso: str) -> str:
    """An ISO 8601 UTC time as ``2026-12-06 01:50:00 UTC`` (as given when it does not parse)."""
    moment = _parse(iso)
    if moment is None:
        return iso
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _parse(iso: str) -> dt.datetime | None:
    try:
        moment = dt.datetime.fromisoformat(iso)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.timezone.utc)


def _timestamp(iso: str) -> float | None:
    moment = _parse(iso) if iso else None
    return moment.timestamp() if moment is not None else None


def _not_the_writer(pid: int, started: float | None) -> bool:
    """Whether the running pid is not the writer after all: a zombie (killed, not yet reaped by
    its parent), or a process that started after the run did (the pid was reused)."""
    try:
        import psutil

        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return True
        created = float(process.create_time())
    except Exception:  # gone meanwhile, access denied: no judgement from it
        return False
    return started is not None and created > started + _PID_REUSE_SLACK_S
