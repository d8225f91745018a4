"""``profile(live=True)``: the live view's thread feeds a display, never breaks training, and
stops cleanly with the block."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from training import train_step

import torchdiag
from torchdiag.capture import live
from torchdiag.capture.live import LiveThread
from torchdiag.record import RunRecord, load_record

# Generous: the machine running the tests may be busy.
PATIENCE_S = 60.0


class FakeDisplay:
    """Keeps what it was shown; ``fail`` makes ``update`` raise."""

    def __init__(self, fail: bool = False, interval_s: float = 0.05) -> None:
        self.fail = fail
        self.interval_s = interval_s
        self.updates: list[RunRecord] = []
        self.closed: list[RunRecord | None] = []
        self.threads: set[str] = set()

    def update(self, record: RunRecord) -> None:
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise ValueError("the display broke")
        self.updates.append(record)

    def close(self, record: RunRecord | None) -> None:
        self.closed.append(record)


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def display(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakeDisplay]]:
    """The displays the capture makes: fakes that keep what they are shown."""
    made: list[FakeDisplay] = []

    def factory(log_interval_s: float) -> FakeDisplay:
        made.append(FakeDisplay())
        return made[-1]

    monkeypatch.setattr(live, "_factory", factory)
    yield made


def test_the_display_is_fed_the_record_so_far_off_the_training_thread(
    tmp_path, model_opt, display
) -> None:
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0, live=True) as run:
        train_step(*model_opt)
        _wait_for(lambda: any(r.steps.count >= 1 for r in display[0].updates))
        train_step(*model_opt)
    shown = display[0]
    assert shown.threads == {"torchdiag-live"}
    assert all(r.status.state == "running" for r in shown.updates)
    assert len(shown.closed) == 1 and shown.closed[0] is run.record  # the final frame
    assert run.record is not None and run.record.status.state == "completed"
    assert run.record.collectors["live"].available
    assert run.record.overhead["live_cpu_s"] >= 0.0


def test_a_failing_display_never_breaks_training(tmp_path, model_opt, monkeypatch) -> None:
    made: list[FakeDisplay] = []

    def factory(log_interval_s: float) -> FakeDisplay:
        made.append(FakeDisplay(fail=True))
        return made[-1]

    monkeypatch.setattr(live, "_factory", factory)
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0, live=True) as run:
        _wait_for(lambda: bool(made[0].closed))  # the thread gave up and released the display
        for _ in range(3):
            train_step(*model_opt)
    record = run.record
    assert record is not None and record.status.state == "completed"
    assert record.steps.count == 3
    status = record.collectors["live"]
    assert not status.available and "ValueError: the display broke" in (status.reason or "")
    assert made[0].closed == [None]  # closed once, by the thread


def test_no_display_installed_is_a_collector_not_an_error(tmp_path, model_opt, monkeypatch):
    monkeypatch.setattr(live, "_factory", None)
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0, live=True) as run:
        train_step(*model_opt)
    assert run.record is not None and run.record.status.state == "completed"
    assert not run.record.collectors["live"].available


def test_the_block_ending_by_an_exception_stops_the_live_view(tmp_path, model_opt, display):
    with (
        pytest.raises(KeyboardInterrupt),
        torchdiag.profile(tmp_path / "run.json", profile_steps=0, live=True) as run,
    ):
        train_step(*model_opt)
        raise KeyboardInterrupt
    assert run.record is not None and run.record.status.state == "interrupted"
    assert display[0].closed == [run.record]
    # (the conftest fails the test if the torchdiag-live thread outlived the block)


def test_only_rank_0_shows_the_live_view(tmp_path, model_opt, monkeypatch, display) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0, live=True) as run:
        train_step(*model_opt)
    assert display == []
    assert run.record is not None
    assert "rank 0 only" in (run.record.collectors["live"].reason or "")


def test_no_live_view_unless_asked(tmp_path, model_opt, display) -> None:
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0) as run:
        train_step(*model_opt)
    assert display == []
    assert run.record is not None and "live" not in run.record.collectors
    with pytest.raises(ValueError, match="live_log_interval"):
        torchdiag.profile(live=True, live_log_interval=0)


def test_the_thread_feeds_until_stopped_and_closes_once() -> None:
    fake = FakeDisplay()
    records = iter(range(10**9))
    thread = LiveThread(lambda: RunRecord(duration_s=float(next(records))), fake)
    thread.start()
    _wait_for(lambda: len(fake.updates) >= 3)
    final = RunRecord(name="final")
    thread.finish(final)
    thread.finish(final)
    count = len(fake.updates)
    time.sleep(0.2)
    assert len(fake.updates) == count  # no frame after the block's end
    assert fake.closed == [final]
    assert thread.error is None and thread.cpu_s >= 0.0


def test_the_package_installs_the_report_layers_display(capsys) -> None:
    from torchdiag.report.live_display import PanelDisplay

    assert live._factory is not None
    made = live.make_display(30.0)
    assert isinstance(made, PanelDisplay)
    assert made.interval_s == 30.0  # pytest's stdout is no terminal: a line every 30 s
    made.close(None)


def test_the_step_limit_and_the_loader_length_reach_the_record(tmp_path, model_opt) -> None:
    import torch

    loader = torch.utils.data.DataLoader(list(range(12)), batch_size=4)
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0, max_steps=50) as run:
        for _epoch in range(2):
            for _ in loader:
                train_step(*model_opt)
        for i, _ in enumerate(loader):
            train_step(*model_opt)
            if i == 1:
                break
    record = run.record
    assert record is not None and record.steps.limit == 50
    (info,) = record.environment.loaders
    assert (info.length, info.epochs, info.epoch_batches, info.batches) == (3, 3, 2, 8)


SCRIPT = """
import torch

model = torch.nn.Linear(8, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(20):
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    opt.zero_grad()
print("the script's own output")
"""


def test_torchdiag_run_live(tmp_path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    path = tmp_path / "run.json"
    argv = ["run", "--live", "--no-report", "--profile-steps", "0", "-o", str(path), str(script)]
    done = subprocess.run(
        [sys.executable, "-m", "torchdiag", *argv], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "the script's own output" in done.stdout
    live_status = load_record(path).collectors["live"]
    assert live_status.available, live_status.reason
    # stdout is a pipe: summary lines (the first as the block starts), the last the final
    # record's, after what the script printed.
    lines = done.stdout.splitlines()
    assert lines[0].startswith("torchdiag · train.py · running")
    assert "· completed ·" in lines[-1] and "step 20" in lines[-1]
