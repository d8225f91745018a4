"""Step detection and timing: optimizer hook, manual marking, gradient accumulation, bounds."""

from __future__ import annotations

import pytest
import torch

import torchdiag
from torchdiag.capture.steps import StepTimer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _tiny_model():
    model = torch.nn.Linear(4, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def _train_step(model, optimizer):
    loss = model(torch.randn(2, 4)).sum()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def test_timer_measures_wall_and_wait_with_fake_clock():
    clock = FakeClock()
    timer = StepTimer(clock=clock)
    for wall, wait in [(0.010, 0.002), (0.020, 0.005), (0.030, 0.0)]:
        timer.add_input_wait(wait)
        clock.now += wall
        timer.boundary("manual")
    s = timer.series()
    assert s.count == 3
    assert s.wall_ms == pytest.approx([10, 20, 30])
    assert s.input_wait_ms == pytest.approx([2, 5, 0])
    assert s.start_s == pytest.approx([0.0, 0.010, 0.030])
    assert s.total_wall_s == pytest.approx(0.060)
    assert s.detection == "manual"


def test_wait_never_exceeds_step():
    clock = FakeClock()
    timer = StepTimer(clock=clock)
    timer.add_input_wait(5.0)
    clock.now += 1.0
    timer.boundary("manual")
    assert timer.series().input_wait_ms == [pytest.approx(1000.0)]


def test_series_is_bounded_and_preserves_totals():
    clock = FakeClock()
    timer = StepTimer(max_rows=8, clock=clock)
    walls = [0.001 * (i + 1) for i in range(1000)]
    for w in walls:
        clock.now += w
        timer.boundary("optimizer")
    s = timer.series()
    assert s.count == 1000
    assert len(s.steps) <= 8
    assert sum(s.steps) == 1000
    assert s.first_step[0] == 0
    assert all(b == a + n for a, b, n in zip(s.first_step, s.first_step[1:], s.steps, strict=False))
    mean_of_rows = sum(w * n for w, n in zip(s.wall_ms, s.steps, strict=False)) / 1000
    assert mean_of_rows == pytest.approx(sum(walls) / 1000 * 1e3)
    assert max(s.max_wall_ms) == pytest.approx(1000.0)


def test_snapshot_does_not_disturb_later_rows():
    clock = FakeClock()
    timer = StepTimer(max_rows=4, clock=clock)
    for _ in range(5):
        clock.now += 0.01
        timer.boundary("optimizer")
    first = timer.series()
    for _ in range(11):
        clock.now += 0.01
        timer.boundary("optimizer")
    second = timer.series()
    assert sum(first.steps) == 5
    assert sum(second.steps) == 16 and second.count == 16


def test_optimizer_steps_are_detected(tmp_path):
    model, optimizer = _tiny_model()
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0) as run:
        for _ in range(7):
            _train_step(model, optimizer)
    assert run.steps == 7
    assert run.record.steps.detection == "optimizer"
    assert run.record.environment.optimizers[0].class_name == "SGD"
    assert run.record.environment.optimizers[0].steps == 7


def test_gradient_accumulation_counts_optimizer_steps(tmp_path):
    model, optimizer = _tiny_model()
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0) as run:
        for i in range(12):
            model(torch.randn(2, 4)).sum().backward()
            if (i + 1) % 4 == 0:
                optimizer.step()
                optimizer.zero_grad()
    assert run.steps == 3


def test_two_optimizers_per_iteration_count_once(tmp_path):
    gen, opt_g = _tiny_model()
    disc, opt_d = _tiny_model()
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0) as run:
        for _ in range(5):
            _train_step(disc, opt_d)
            _train_step(gen, opt_g)
    assert run.steps == 5
    assert {o.class_name for o in run.record.environment.optimizers} == {"SGD"}
    assert len(run.record.environment.optimizers) == 2


def test_manual_steps_override_optimizer_detection(tmp_path):
    model, optimizer = _tiny_model()
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0) as run:
        for i in range(6):
            _train_step(model, optimizer)
            if i % 2 == 1:
                run.step()
    assert run.steps == 3
    assert run.record.steps.detection == "manual"


def test_optimizer_steps_after_the_block_are_not_counted(tmp_path):
    model, optimizer = _tiny_model()
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0) as run:
        _train_step(model, optimizer)
    _train_step(model, optimizer)
    assert run.steps == 1
