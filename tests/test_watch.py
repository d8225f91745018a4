"""``torchdiag watch``: follows a record another process rewrites, and exits when the run ends."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from livedata import running_record

from torchdiag.record import RunState, save_record

FAST = ("--interval", "0.02", "--log-interval", "0.02", "--timeout", "120")


def _write_later(
    path_of_rank: dict[int, Path], steps: list[int], final: RunState
) -> threading.Thread:
    """A thread that rewrites each rank's record with ``steps`` so far, then with ``final``."""

    def write() -> None:
        for i, n in enumerate(steps):
            time.sleep(0.05)
            state: RunState = final if i == len(steps) - 1 else "running"
            for rank, path in path_of_rank.items():
                world = len(path_of_rank)
                save_record(
                    running_record(n_steps=n, state=state, rank=rank, world_size=world), path
                )

    thread = threading.Thread(target=write, name="test-writer")
    thread.start()
    return thread


def test_watch_follows_a_run_until_it_ends(tmp_path, run_cli) -> None:
    path = tmp_path / "run.json"
    save_record(running_record(n_steps=100), path)
    writer = _write_later({0: path}, [200, 300, 400, 500], "completed")
    code, out, err = run_cli("watch", str(path), *FAST)
    writer.join()
    assert code == 0, err
    lines = out.splitlines()
    assert lines, "no summary line"
    assert "· completed ·" in lines[-1] and "step 500" in lines[-1]
    assert all("· running ·" in line for line in lines[:-1])


def test_watch_a_run_folder_of_ranks(tmp_path, run_cli, monkeypatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)  # --once to a pipe: 120 columns
    paths = {rank: tmp_path / f"run.rank{rank}.json" for rank in (0, 1)}
    for rank, path in paths.items():
        save_record(running_record(n_steps=100, rank=rank, world_size=2), path)
    code, out, _ = run_cli("watch", str(tmp_path), "--once")
    assert code == 0
    assert "Rank" in out and "In collectives" in out
    writer = _write_later(paths, [200, 300], "completed")
    code, out, err = run_cli("watch", str(tmp_path), *FAST)
    writer.join()
    assert code == 0, err
    assert "· completed ·" in out.splitlines()[-1]


def test_watch_an_ended_run_shows_it_once_and_exits(tmp_path, run_cli) -> None:
    path = tmp_path / "run.json"
    save_record(running_record(n_steps=100, state="failed"), path)
    code, out, _ = run_cli("watch", str(path))
    assert code == 0
    assert len(out.splitlines()) == 1 and "· failed ·" in out


def test_watch_gives_up_after_the_timeout(tmp_path, run_cli) -> None:
    path = tmp_path / "run.json"
    save_record(running_record(n_steps=100), path)
    code, out, err = run_cli("watch", str(path), "--interval", "0.02", "--timeout", "0.1")
    assert code == 1
    assert "--timeout" in err and "· running ·" in out


def test_watch_waits_for_the_first_record_of_a_folder(tmp_path, run_cli) -> None:
    writer = _write_later({0: tmp_path / "run.json"}, [50, 100], "completed")
    code, out, err = run_cli("watch", str(tmp_path), *FAST)
    writer.join()
    assert code == 0
    assert "waiting for a run record" in err
    assert "· completed ·" in out


def test_watch_bad_input_is_one_line_and_exit_2(tmp_path, run_cli) -> None:
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    trace = tmp_path / "trace.json"
    trace.write_text('{"traceEvents": []}')
    for argv in (
        ("watch", str(tmp_path / "missing.json")),
        ("watch", str(garbage)),
        ("watch", str(trace)),
        ("watch", str(tmp_path), "--interval", "0"),
        ("watch", str(tmp_path), "--once"),  # a folder without a record
        ("watch",),
    ):
        code, _, err = run_cli(*argv)
        assert code == 2, argv
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, argv


def test_watch_ends_when_the_writer_is_gone(tmp_path, run_cli, monkeypatch) -> None:
    """A run killed without a word (kill -9) leaves a record that says running: its writer's
    process being gone ends the watch, and the panel says so."""
    monkeypatch.delenv("COLUMNS", raising=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its pid names no process now
    record = running_record(n_steps=100)
    record.environment.pid = dead.pid
    record.environment.hostname = socket.gethostname()
    path = tmp_path / "run.json"
    save_record(record, path)
    code, out, err = run_cli("watch", str(path), "--once")
    assert code == 0 and "the process is gone" in out, err
    code, out, err = run_cli("watch", str(path), "--timeout", "60")
    assert code == 0, err
    last = out.splitlines()[-1]
    assert "· running ·" in last and "the process is gone" in last
