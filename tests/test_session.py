"""The capture session: failure path, re-entry, no-op mode, decorator, file naming, collectors."""

from __future__ import annotations

import json

import pytest
import torch
from training import train_step

import torchdiag
from torchdiag.capture import session as session_mod
from torchdiag.record import DistributedInfo, load_record


class PlantedError(Exception):
    pass


def test_exception_passes_through_and_record_says_failed(tmp_path, model_opt):
    err = PlantedError("boom <at> step 3")
    with (
        pytest.raises(PlantedError) as caught,
        torchdiag.profile(tmp_path / "run.json", profile_steps=0),
    ):
        for i in range(5):
            train_step(*model_opt)
            if i == 2:
                raise err
    assert caught.value is err  # the very same object, unchanged
    record = load_record(tmp_path / "run.json")
    assert record.status.state == "failed"
    assert record.status.exception_type == "PlantedError"
    assert record.status.message == "boom <at> step 3"
    assert record.steps.count == 3


def test_keyboard_interrupt_is_recorded_as_interrupted(tmp_path, model_opt):
    with (
        pytest.raises(KeyboardInterrupt),
        torchdiag.profile(tmp_path / "run.json", profile_steps=0),
    ):
        train_step(*model_opt)
        raise KeyboardInterrupt
    assert load_record(tmp_path / "run.json").status.state == "interrupted"


def test_completed_run(tmp_path, model_opt):
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0) as run:
        train_step(*model_opt)
    record = load_record(run.path)
    assert record.status.state == "completed"
    assert record.source == "live"
    assert record.environment.torch_version == str(torch.__version__)
    assert record.collectors["profiler"].available is False
    assert "profile_steps=0" in record.collectors["profiler"].reason


def test_reentry_is_refused_with_a_clear_message(tmp_path):
    with (
        torchdiag.profile(tmp_path / "a.json", profile_steps=0),
        pytest.raises(RuntimeError, match="already active"),
    ):
        with torchdiag.profile(tmp_path / "b.json", profile_steps=0):
            pass
    assert (tmp_path / "a.json").exists()
    assert not (tmp_path / "b.json").exists()


def test_active_run_is_the_open_capture(tmp_path):
    assert session_mod.active_run() is None
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0) as run:
        assert session_mod.active_run() is run
    assert session_mod.active_run() is None
    with torchdiag.profile(enabled=False):
        assert session_mod.active_run() is None  # a no-op capture is nothing to join


def test_steps_marked_manually_from_the_start_are_counted_once(tmp_path, model_opt):
    """A framework callback marks each step after the optimizer hook has seen it; with the
    profiler window open from the first step, declaring manual marking up front keeps the first
    step from being counted by both."""
    with torchdiag.profile(
        tmp_path / "run.json", skip_first=1, profile_steps=1, sample_interval=0.05
    ) as run:
        run.mark_steps_manually()
        for _ in range(3):
            train_step(*model_opt)
            run.step()
    assert run.record is not None
    assert run.record.steps.count == 3
    assert run.record.steps.detection == "manual"
    assert run.record.steps.profiled == [True, True, False]


def test_disabled_is_a_true_noop(tmp_path, model_opt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    original = torch.utils.data.DataLoader.__iter__
    with torchdiag.profile(enabled=False) as run:
        assert torch.utils.data.DataLoader.__iter__ is original
        train_step(*model_opt)
        run.step()
    assert run.record is None
    assert run.steps == 0
    assert list(tmp_path.iterdir()) == []


def test_decorator_form_runs_each_call(tmp_path, model_opt):
    calls = []

    @torchdiag.profile(tmp_path / "run.json", profile_steps=0)
    def train(n):
        for _ in range(n):
            train_step(*model_opt)
        calls.append(n)
        return "done"

    assert train(2) == "done"
    assert load_record(tmp_path / "run.json").steps.count == 2
    assert train(3) == "done"
    assert load_record(tmp_path / "run.json").steps.count == 3
    assert calls == [2, 3]


def test_default_output_directory(tmp_path, monkeypatch, model_opt):
    monkeypatch.chdir(tmp_path)
    with torchdiag.profile(profile_steps=0) as run:
        train_step(*model_opt)
    assert run.path.name == "run.json"
    assert run.path.parent.parent.name == "torchdiag_runs"
    assert (tmp_path / run.path).exists()


def test_ranks_write_their_own_files(tmp_path, monkeypatch):
    import datetime as dt
    from pathlib import Path

    from torchdiag.capture.record_path import resolve_output

    started = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job7")
    paths = {resolve_output(None, DistributedInfo(rank=r, world_size=4), started) for r in range(4)}
    assert len(paths) == 4
    assert {p.parent for p in paths} == {Path("torchdiag_runs/torchrun-job7")}
    assert {p.name for p in paths} == {f"run.rank{r}.json" for r in range(4)}
    explicit = resolve_output(
        tmp_path / "exp" / "run.json", DistributedInfo(rank=2, world_size=4), started
    )
    assert explicit == tmp_path / "exp" / "run.rank2.json"
    single = resolve_output(tmp_path / "r.json", DistributedInfo(), started)
    assert single == tmp_path / "r.json"


def test_rank_from_launcher_environment(tmp_path, monkeypatch, model_opt):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0) as run:
        train_step(*model_opt)
    assert run.path == tmp_path / "run.rank1.json"
    record = load_record(run.path)
    assert (record.rank, record.world_size) == (1, 2)
    assert record.environment.distributed.local_rank == 1


def test_failing_collector_is_recorded_and_training_goes_on(tmp_path, model_opt, monkeypatch):
    def broken(*_a, **_k):
        raise RuntimeError("no sampler for you")

    monkeypatch.setattr("torchdiag.capture.sampler.create_sampler", broken)
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0) as run:
        train_step(*model_opt)
    record = load_record(run.path)
    assert record.status.state == "completed"
    assert record.collectors["sampler"].available is False
    assert "no sampler for you" in record.collectors["sampler"].reason
    assert record.steps.count == 1


def test_profiler_already_active_is_recorded(tmp_path, model_opt):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        with torchdiag.profile(tmp_path / "run.json", skip_first=0, profile_steps=2) as run:
            for _ in range(3):
                train_step(*model_opt)
    record = load_record(run.path)
    assert record.collectors["profiler"].available is False
    assert "active" in record.collectors["profiler"].reason
    assert record.steps.count == 3


def test_unwritable_output_warns_but_never_raises(tmp_path, model_opt):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.warns(UserWarning, match="could not write"):
        with torchdiag.profile(blocker / "run.json", profile_steps=0) as run:
            train_step(*model_opt)
    run.path.unlink()  # the named fallback (test_faults checks where it goes)


def test_autocast_and_environment_flags(tmp_path, model_opt):
    model, opt = model_opt
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0) as run:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(torch.randn(2, 4)).float().sum()
        loss.backward()
        opt.step()
    env = json.loads((tmp_path / "run.json").read_text())["environment"]
    assert env["autocast"]["dtypes"] == ["bfloat16"]
    assert env["autocast"]["entered"] == 1
    assert env["parameters"]["elements"] == 5
    assert env["cudnn_benchmark"] is False
    assert env["cpu_count_logical"] >= 1
    assert run.record.environment.compile_used is not True
