"""Checkpoints of the record while the block runs, and the record ``kill -9`` leaves behind.

No test waits a fixed time: each polls for the file or the condition it needs, with a generous
deadline, so a busy machine only makes it slower.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import msgspec
import pytest
from training import train_step

import torchdiag
from torchdiag.analyze.registry import analyze
from torchdiag.capture import session as session_mod
from torchdiag.capture.checkpoint import MIN_INTERVAL_S, THREAD_NAME, CheckpointWriter
from torchdiag.host import host_label
from torchdiag.record import (
    Environment,
    RunRecord,
    RunStatus,
    decode_record,
    load_record,
    save_record,
)
from torchdiag.report.formats import FORMATS
from torchdiag.report.renderer import RenderOptions
from torchdiag.view.run_end import writer_process
from torchdiag.view.run_view import RunView

T = TypeVar("T")

DEADLINE_S = 180.0  # a loaded 2-core machine starts torch and the profiler slowly

LONG = """
import time
import torch

model = torch.nn.Linear(8, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
while True:  # until killed
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    opt.zero_grad()
    time.sleep(0.005)
"""


def _poll(condition: Callable[[], T | None], what: str, timeout: float = DEADLINE_S) -> T:
    """``condition()`` once it is truthy; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def _record_or_none(path: Path) -> RunRecord | None:
    try:
        return load_record(path)
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------
# kill -9


def test_kill_9_leaves_a_record_that_report_reads_as_not_ended(tmp_path, run_cli):
    script = tmp_path / "long.py"
    script.write_text(textwrap.dedent(LONG))
    path = tmp_path / "out" / "run.json"
    log = (tmp_path / "stderr.txt").open("w")
    command = [sys.executable, "-m", "torchdiag", "run", "--checkpoint-interval", "0.3"]
    command += ["--skip-first", "1", "--profile-steps", "2", "--output", str(path), str(script)]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log)
    try:

        def checkpointed() -> RunRecord | None:
            if proc.poll() is not None:
                pytest.fail(f"the script exited ({proc.returncode}): {_text(tmp_path)}")
            record = _record_or_none(path)
            if record is None or record.profiler is None or record.steps.count < 5:
                return None
            return record if record.overhead.get("checkpoint_count", 0) >= 3 else None

        seen = _poll(checkpointed, "three checkpoints after the profiler window")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        log.close()
    assert proc.returncode == -signal.SIGKILL

    record = load_record(path)  # the last checkpoint: whole, never half-written
    assert record.status.state == "running"
    assert record.ended_utc is None and record.checkpoint_utc
    assert record.environment.pid == proc.pid
    assert record.steps.count >= seen.steps.count > 0
    # Every checkpointed step is in the rows, and the rows are whole.
    assert sum(record.steps.steps) == record.steps.count
    assert len(record.steps.wall_ms) == len(record.steps.steps) == len(record.steps.first_step)
    # The profiler window exported before the kill is kept.
    assert record.profiler is not None and record.profiler.summary is not None
    assert record.profiler.summary.steps
    assert record.collectors["checkpoint"].available
    assert writer_process(record) == "gone"

    for fmt in ("text", "md"):
        code, out, err = run_cli("report", str(path), "--format", fmt, "-o", "-")
        assert code == 0, err
        out = " ".join(out.split())  # as read, however the text wraps
        assert "no end recorded" in out and "the process is gone" in out, fmt
        assert "last checkpoint at" in out
    html = tmp_path / "report.html"
    code, _, err = run_cli("report", str(path), "-o", str(html))
    assert code == 0, err
    page = html.read_text()
    assert "Run did not end" in page and "the process is gone" in page
    code, out, err = run_cli("report", str(path), "--format", "json", "-o", "-")
    assert code == 0, err
    doc = json.loads(out)["record"]
    assert doc["ended"] is False and doc["process"] == "gone"
    assert doc["checkpoint_utc"] == record.checkpoint_utc


def _text(folder: Path) -> str:
    return (folder / "stderr.txt").read_text()[-2000:]


# ---------------------------------------------------------------------------------------------
# The session


def test_zero_turns_checkpoints_off(tmp_path, model_opt):
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0, checkpoint_interval=0) as run:
        train_step(*model_opt)
        assert run._checkpoints is None
        assert not [t for t in threading.enumerate() if t.name == THREAD_NAME]
        assert not run.path.exists()
    record = load_record(run.path)
    assert record.status.state == "completed"
    assert "checkpoint" not in record.collectors
    assert "checkpoint_s" not in record.overhead


def test_the_final_record_replaces_the_checkpoints(tmp_path, model_opt):
    path = tmp_path / "run.json"
    with torchdiag.profile(path, profile_steps=0, checkpoint_interval=MIN_INTERVAL_S) as run:

        def checkpoint() -> RunRecord | None:
            train_step(*model_opt)
            return _record_or_none(path)

        running = _poll(checkpoint, "a checkpoint")
        train_step(*model_opt)
    assert running.status.state == "running"
    assert running.checkpoint_utc and running.ended_utc is None
    record = load_record(path)
    assert record.status.state == "completed"
    assert record.checkpoint_utc is None and record.ended_utc
    assert record.steps.count == run.steps > running.steps.count
    assert record.collectors["checkpoint"].available
    assert record.overhead["checkpoint_count"] >= 1
    assert record.overhead["checkpoint_s"] > 0


def test_a_failing_checkpoint_never_breaks_the_run(tmp_path, model_opt, monkeypatch):
    def broken(self: session_mod.Run) -> RunRecord:
        raise RuntimeError("planted snapshot failure")

    monkeypatch.setattr(session_mod.Run, "snapshot", broken)
    path = tmp_path / "run.json"
    with torchdiag.profile(path, profile_steps=0, checkpoint_interval=MIN_INTERVAL_S) as run:

        def failed_twice() -> bool:
            train_step(*model_opt)
            writer = run._checkpoints
            return writer is not None and writer.failed >= 2

        _poll(failed_twice, "two failed checkpoints")
        assert not path.exists()
    record = load_record(path)
    assert record.status.state == "completed"
    assert record.steps.count == run.steps
    status = record.collectors["checkpoint"]
    assert status.available is False
    assert "planted snapshot failure" in (status.reason or "")


def test_an_unwritable_checkpoint_is_counted_and_said(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    writer = CheckpointWriter(RunRecord, blocker / "run.json", 60)
    assert writer.write() is False
    assert writer.write() is False
    assert writer.failed == 2 and writer.written == 0
    status = writer.status()
    assert status.available is False
    assert "2 of 2 checkpoints" in (status.reason or "")


def test_a_checkpoint_in_flight_never_lands_after_stop(tmp_path):
    """The final record must win: a snapshot taken before the block ended is dropped."""
    path = tmp_path / "run.json"
    entered, release = threading.Event(), threading.Event()

    def slow_snapshot() -> RunRecord:
        entered.set()
        release.wait(DEADLINE_S)
        return RunRecord(name="stale")

    writer = CheckpointWriter(slow_snapshot, path, 60)
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(writer.write()))
    thread.start()
    assert entered.wait(DEADLINE_S)
    writer.stop()
    save_record(RunRecord(name="final", status=RunStatus(state="completed")), path)
    release.set()
    thread.join(DEADLINE_S)
    assert results == [False]
    assert load_record(path).name == "final"
    assert writer.write() is False  # and nothing after


def test_snapshot_from_another_thread_is_the_run_so_far(tmp_path, model_opt):
    snapshots: list[RunRecord] = []
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0, checkpoint_interval=0) as run:
        for _ in range(3):
            train_step(*model_opt)
        thread = threading.Thread(target=lambda: snapshots.append(run.snapshot()))
        thread.start()
        thread.join(DEADLINE_S)
    (snapshot,) = snapshots
    assert snapshot.status.state == "running"
    assert snapshot.ended_utc is None and snapshot.checkpoint_utc
    assert snapshot.steps.count == 3
    assert snapshot.environment.torch_version and snapshot.environment.pid == os.getpid()
    assert snapshot.samples is not None
    assert decode_record(snapshot.to_json()) == snapshot  # a valid record as it stands
    assert run.snapshot() is run.record  # once the block has ended: the final record


def test_snapshots_taken_while_steps_are_marked_are_whole(tmp_path):
    """The step series is read under the timer's lock: however the rows are merged meanwhile,
    a snapshot's columns line up and account for every step it counts."""
    snapshots: list[RunRecord] = []
    done = threading.Event()

    def snapshot_until_done(run: session_mod.Run) -> None:
        while not done.is_set():
            snapshots.append(run.snapshot())

    with torchdiag.profile(tmp_path / "run.json", profile_steps=0, checkpoint_interval=0) as run:
        reader = threading.Thread(target=snapshot_until_done, args=(run,))
        reader.start()
        try:
            _poll(lambda: snapshots, "a first snapshot")
            for _ in range(6000):  # three times the rows kept: merged twice
                run.step()
        finally:
            done.set()
            reader.join(DEADLINE_S)
    assert snapshots
    for snapshot in snapshots:
        steps = snapshot.steps
        assert sum(steps.steps) == steps.count
        assert len(steps.wall_ms) == len(steps.first_step) == len(steps.steps)


def test_a_snapshot_reads_no_losses_from_the_device(tmp_path, model_opt):
    path = tmp_path / "run.json"
    with torchdiag.profile(path, profile_steps=0, record_loss=True, checkpoint_interval=0) as run:
        train_step(*model_opt)
        snapshot = run.snapshot()
    assert snapshot.losses == []
    assert len(load_record(path).losses) == 1


def test_checkpoint_interval_is_checked():
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="checkpoint_interval"):
            torchdiag.profile(checkpoint_interval=bad)
    with pytest.warns(UserWarning, match="checkpoint_interval"):
        options = torchdiag.profile(checkpoint_interval=MIN_INTERVAL_S / 10)
    assert options.checkpoint_interval == MIN_INTERVAL_S
    assert torchdiag.profile().checkpoint_interval == 60


@pytest.mark.parametrize("value", ["-1", "abc", "nan"])
def test_run_rejects_a_bad_checkpoint_interval(run_cli, value):
    code, _, err = run_cli("run", "--checkpoint-interval", value, "train.py")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "checkpoint-interval" in err


# ---------------------------------------------------------------------------------------------
# Whether the writer still runs, and what reports say


def _running(**env: object) -> RunRecord:
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return RunRecord(
        name="killed.py",
        started_utc=started,
        checkpoint_utc="2026-12-06T01:52:10+00:00",
        status=RunStatus(state="running"),
        environment=msgspec.convert(env, Environment),
    )


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_writer_process_tells_alive_gone_and_unknown():
    here = socket.gethostname()
    assert writer_process(_running(pid=os.getpid(), hostname=host_label(here))) == "alive"
    assert writer_process(_running(pid=os.getpid(), hostname=here)) == "alive"
    assert writer_process(_running(pid=_dead_pid(), hostname=host_label(here))) == "gone"
    assert writer_process(_running(pid=os.getpid(), hostname="host-00000000")) == "unknown"
    assert writer_process(_running(hostname=host_label(here))) == "unknown"  # no pid
    reused = _running(pid=os.getpid(), hostname=host_label(here))
    reused.started_utc = "2000-01-01T00:00:00+00:00"  # this process started long after
    assert writer_process(reused) == "gone"


def test_run_end_of_records_that_ended_and_did_not():
    here = host_label(socket.gethostname())
    end = RunView(_running(pid=_dead_pid(), hostname=here)).run_end
    assert end.ended is False and end.process == "gone"
    assert end.note == (
        "no end recorded; last checkpoint at 2026-12-06 01:52:10 UTC; the process is gone"
    )
    alive = RunView(_running(pid=os.getpid(), hostname=here)).run_end
    assert alive.note.endswith("; the process is still running")
    other = RunView(_running(pid=1, hostname="host-00000000")).run_end
    assert "cannot tell" in other.note and "host-00000000" in other.note
    finished = RunRecord(status=RunStatus(state="completed"))
    assert RunView(finished).run_end.ended and RunView(finished).run_end.note == ""


def test_every_format_says_a_killed_run_did_not_end():
    record = _running(pid=_dead_pid(), hostname=host_label(socket.gethostname()))
    view = RunView(record)
    analysis = analyze(view)
    for fmt in FORMATS:
        out = " ".join(fmt.renderer().render(view, analysis, RenderOptions(cdn=True)).split())
        assert "no end recorded" in out, fmt.name
        assert "the process is gone" in out, fmt.name
