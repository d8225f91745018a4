"""Fault injection: whatever breaks, training goes on (or the user's exception propagates
unchanged), a record is written saying what was unavailable and why, and nothing is left behind.

conftest's autouse fixture checks after every test that no torchdiag thread, profiler, class
patch or active session remains; each test here checks the rest of that promise. NVML and GPM
faults (absent, failing at init, failing mid-run, unsupported) are in test_sampler.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import psutil
import pytest
import torch
from training import train_step

import torchdiag
from torchdiag.capture import profiler_window, sampler
from torchdiag.capture import session as session_mod
from torchdiag.record import load_record


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise ValueError("no message for you")


@pytest.mark.parametrize("inside_window", [False, True], ids=["outside-window", "in-window"])
def test_exception_whose_str_raises(tmp_path, model_opt, inside_window):
    err = UnprintableError()
    with pytest.raises(UnprintableError) as caught:
        with torchdiag.profile(tmp_path / "run.json", skip_first=1, profile_steps=3):
            for i in range(6):
                train_step(*model_opt)
                if i == (2 if inside_window else 5):
                    raise err
    assert caught.value is err
    record = load_record(tmp_path / "run.json")
    assert record.status.state == "failed"
    assert record.status.exception_type == "UnprintableError"
    assert "could not be read" in record.status.message
    assert not torch.autograd.profiler._is_profiler_enabled


def test_user_profiler_inside_the_window(tmp_path, model_opt):
    # Two profilers at once crash torch itself: torchdiag steps aside for the user's.
    with torchdiag.profile(tmp_path / "run.json", skip_first=1, profile_steps=6) as run:
        for i in range(8):
            if i == 3:
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as p:
                    train_step(*model_opt)
                assert p.key_averages()  # the user's profiler recorded their step
            else:
                train_step(*model_opt)
    record = load_record(run.path)
    assert record.steps.count == 8
    assert record.collectors["profiler"].available is False
    assert "user opened torch.profiler" in record.collectors["profiler"].reason
    assert list(tmp_path.iterdir()) == [run.path]  # no trace left half-written


def test_synchronize_raising_still_stops_the_profiler(tmp_path, model_opt, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def broken_sync() -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(torch.cuda, "synchronize", broken_sync)
    window = profiler_window.ProfilerWindowControl(
        skip_first=0, profile_steps=2, with_stack=False, trace_path=None
    )
    monkeypatch.setattr(window, "_start", lambda: _start_cpu_only(window))
    window.start_now_if_due()
    assert torch.autograd.profiler._is_profiler_enabled
    with pytest.raises(RuntimeError, match="illegal memory access"):
        window.finish()
    assert not torch.autograd.profiler._is_profiler_enabled  # stopped all the same
    assert not window.running


def _start_cpu_only(window: profiler_window.ProfilerWindowControl) -> None:
    # The real start asks for CUDA activity when CUDA "is available"; this machine has none.
    window._prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    window._prof.start()


def test_profiler_refusing_to_start(tmp_path, model_opt, monkeypatch):
    def refuse(self) -> None:
        raise RuntimeError("profiler refused to start")

    monkeypatch.setattr(torch.profiler.profile, "start", refuse)
    with torchdiag.profile(tmp_path / "run.json", skip_first=1, profile_steps=2) as run:
        for _ in range(5):
            train_step(*model_opt)
    record = load_record(run.path)
    assert record.steps.count == 5
    assert record.collectors["profiler"].available is False
    assert "refused" in record.collectors["profiler"].reason


def test_sampler_thread_dying(tmp_path, model_opt, monkeypatch):
    calls = {"n": 0}
    original = sampler.Sampler.sample_once

    def dies_on_second(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("sampler bug")
        return original(self)

    monkeypatch.setattr(sampler.Sampler, "sample_once", dies_on_second)
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0, sample_interval=0.05) as run:
        for _ in range(3):
            train_step(*model_opt)
        deadline = threading.Event()
        while calls["n"] < 2 and not deadline.wait(0.01):
            pass
    record = load_record(run.path)
    assert record.steps.count == 3
    assert record.collectors["sampler"].available is False
    assert "sampler bug" in record.collectors["sampler"].reason


def test_psutil_raising_leaves_host_unavailable(tmp_path, model_opt, monkeypatch):
    def broken(*args, **kwargs):
        raise psutil.AccessDenied(pid=os.getpid())

    monkeypatch.setattr(psutil, "cpu_times", broken)
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0) as run:
        train_step(*model_opt)
    record = load_record(run.path)
    assert record.status.state == "completed" and record.steps.count == 1
    assert record.collectors["host"].available is False


def test_interrupt_while_setting_up_leaves_nothing_installed(tmp_path, monkeypatch):
    def interrupted(self) -> None:
        raise KeyboardInterrupt

    # The profiler is prepared after the step hook, the DataLoader and autocast patches and the
    # sampler thread are in place: all of them must come off again.
    monkeypatch.setattr(session_mod.Run, "_prepare_profiler", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with torchdiag.profile(tmp_path / "run.json"):
            pass  # pragma: no cover


def test_unwritable_output_goes_to_a_named_fallback(tmp_path, model_opt):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.warns(UserWarning, match="record written to") as warned:
        with torchdiag.profile(blocker / "run.json", profile_steps=0) as run:
            train_step(*model_opt)
    assert run.path != blocker / "run.json" and run.path.is_file()
    assert str(run.path) in str(warned[0].message)
    record = load_record(run.path)
    assert record.collectors["record"].available is False
    run.path.unlink()


def test_full_disk_sends_the_record_to_the_fallback(tmp_path, model_opt, monkeypatch):
    from torchdiag import files

    real_fsync, calls = files.os.fsync, []

    def disk_full_once(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", disk_full_once)
    with pytest.warns(UserWarning, match="record written to"):
        with torchdiag.profile(tmp_path / "run.json", profile_steps=0) as run:
            train_step(*model_opt)
    assert not (tmp_path / "run.json").exists()
    assert list(tmp_path.iterdir()) == []  # no truncated record or temporary left behind
    record = load_record(run.path)
    assert "No space left" in record.collectors["record"].reason
    run.path.unlink()


def test_stale_temporaries_of_killed_runs_are_removed(tmp_path, model_opt):
    dead = _dead_pid()
    stale = tmp_path / f".run.json.{dead}.abc123.tmp"
    live = tmp_path / f".run.json.{os.getpid()}.def456.tmp"
    stale.write_text("half a record")
    live.write_text("another writer, still running")
    trace_dir = tmp_path / "tmp"
    trace_dir.mkdir()
    stale_trace = trace_dir / f"torchdiag-{dead}-x1.pt.trace.json"
    stale_trace.write_text("{")
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0):
        train_step(*model_opt)
    assert not stale.exists() and live.exists()
    assert profiler_window.remove_stale_traces(str(trace_dir)) == 1
    assert not stale_trace.exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_tiny_sample_interval_is_raised(tmp_path, model_opt):
    with pytest.warns(UserWarning, match="raised to"):
        options = torchdiag.profile(tmp_path / "run.json", sample_interval=0.001)
    assert options.sample_interval == session_mod.MIN_SAMPLE_INTERVAL_S


def test_training_on_another_thread_is_followed(tmp_path, model_opt):
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0) as run:
        worker = threading.Thread(target=lambda: [train_step(*model_opt) for _ in range(4)])
        worker.start()
        worker.join()
    record = load_record(run.path)
    assert record.steps.count == 4
    assert "thread" in record.collectors["steps"].reason


def test_nested_dataloader_wait_counts_once(tmp_path):
    inner = torch.utils.data.DataLoader(torch.arange(64.0), batch_size=4)

    class Outer(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> torch.Tensor:
            return torch.stack([b.sum() for b in inner])  # iterates another DataLoader

    loader = torch.utils.data.DataLoader(Outer(), batch_size=1)
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0) as run:
        for _ in loader:
            run.step()
    record = load_record(run.path)
    s = record.steps
    assert s.total_input_wait_s <= s.total_wall_s  # inner waits are not counted a second time
    outer, nested = record.environment.loaders
    assert (outer.dataset, outer.batches) == ("Outer", 4)
    # The nested loader's batches were part of the outer waits, not waits of their own.
    assert (nested.dataset, nested.batches, nested.wait_s) == ("Tensor", 0, 0.0)


def test_capture_leaves_psutil_cpu_percent_baseline_alone(tmp_path, model_opt, monkeypatch):
    # psutil.cpu_percent keeps its baseline in module state (per thread only since psutil 7):
    # the sampler must not call it, or a user's own cpu_percent() calls would measure from the
    # sampler's last call instead of theirs.
    calls = []
    original = psutil.cpu_percent
    monkeypatch.setattr(psutil, "cpu_percent", lambda *a, **k: calls.append(1) or original(*a, **k))
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0, sample_interval=0.05) as run:
        for _ in range(3):
            train_step(*model_opt)
        threading.Event().wait(0.15)
    assert calls == []
    samples = load_record(run.path).samples
    assert samples.sample_count >= 2 and samples.host.cpu_pct_per_core


# ---------------------------------------------------------------------------------------------
# Signals: in a subprocess, as a cluster or a user would send them.

_SCRIPT = """
import os, signal, sys, time
import torch
import torchdiag

model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
{setup}
with torchdiag.profile(sys.argv[1], skip_first=1, profile_steps=2) as run:
    for i in range(50):
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
        if i == 3:
            {send}
            time.sleep(5)  # the signal arrives while training goes on
print("after the block")
"""


def _run_script(tmp_path, setup: str, send: str) -> tuple[subprocess.CompletedProcess, object]:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(_SCRIPT).format(setup=setup, send=send))
    out = tmp_path / "run.json"
    proc = subprocess.run(
        [sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=120
    )
    return proc, (load_record(out) if out.exists() else None)


def test_sigterm_writes_an_interrupted_record_and_ends_as_killed(tmp_path):
    proc, record = _run_script(tmp_path, "", "os.kill(os.getpid(), signal.SIGTERM)")
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert "after the block" not in proc.stdout
    assert record is not None and record.status.state == "interrupted"
    assert record.status.exception_type == "SIGTERM"
    assert record.steps.count == 4


def test_sigterm_runs_the_previous_handler(tmp_path):
    setup = "signal.signal(signal.SIGTERM, lambda s, f: sys.exit(3))"
    proc, record = _run_script(tmp_path, setup, "os.kill(os.getpid(), signal.SIGTERM)")
    assert proc.returncode == 3, proc.stderr
    assert record is not None and record.status.state == "interrupted"


def test_sigint_records_interrupted(tmp_path):
    # Python's own Ctrl-C handler, whatever the launch: a process started in the background of a
    # non-interactive shell (a CI step, say) inherits SIGINT ignored and would never see it.
    setup = "signal.signal(signal.SIGINT, signal.default_int_handler)"
    proc, record = _run_script(tmp_path, setup, "os.kill(os.getpid(), signal.SIGINT)")
    assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr
    assert record is not None and record.status.state == "interrupted"
    assert record.status.exception_type == "KeyboardInterrupt"


def test_kill_9_leaves_nothing_a_later_run_trips_over(tmp_path):
    proc, record = _run_script(tmp_path, "", "os.kill(os.getpid(), signal.SIGKILL)")
    assert proc.returncode == -signal.SIGKILL
    assert record is None  # no chance to write one
    # A later run in the same folder writes its record; the killed run left no temporaries.
    proc2, record2 = _run_script(tmp_path, "", "pass")
    assert proc2.returncode == 0 and record2.status.state == "completed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json", "train.py"]
