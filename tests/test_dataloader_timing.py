"""DataLoader wait timing with a dataset that sleeps, single- and multi-process."""

from __future__ import annotations

import threading
import time

import pytest
import torch

import torchdiag


class SleepyDataset(torch.utils.data.Dataset):
    """Each item takes ``delay`` seconds to produce."""

    def __init__(self, n: int, delay: float) -> None:
        self.n, self.delay = n, delay

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        time.sleep(self.delay)
        return torch.full((4,), float(i))


def _train(loader, run_compute_s: float = 0.0):
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for x in loader:
        if run_compute_s:
            time.sleep(run_compute_s)
        model(x).sum().backward()
        opt.step()
        opt.zero_grad()


def test_single_process_wait_is_measured(tmp_path):
    loader = torch.utils.data.DataLoader(SleepyDataset(12, 0.01), batch_size=2)
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0) as run:
        _train(loader)
    record = run.record
    assert record.steps.count == 6
    # Two items of 10 ms per batch: at least 20 ms of waiting in every step.
    assert min(record.steps.input_wait_ms) >= 19.0
    steps = record.steps
    assert all(w <= s + 1e-9 for w, s in zip(steps.input_wait_ms, steps.wall_ms, strict=True))
    (info,) = record.environment.loaders
    assert info.num_workers == 0
    assert info.iterator == "_SingleProcessDataLoaderIter"
    assert info.batches == 6
    assert info.batch_size == 2
    assert info.dataset == "SleepyDataset"
    assert info.wait_s == pytest.approx(record.steps.total_input_wait_s, rel=0.05)


def test_multi_process_wait_is_measured(tmp_path):
    # Two workers each need 2 x 30 ms per batch while the loop spends ~1 ms per step: the loop
    # must wait for most of each batch after the prefetched ones are used up.
    loader = torch.utils.data.DataLoader(
        SleepyDataset(24, 0.03), batch_size=2, num_workers=2, prefetch_factor=1
    )
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0) as run:
        _train(loader)
    record = run.record
    (info,) = record.environment.loaders
    assert info.iterator == "_MultiProcessingDataLoaderIter"
    assert info.num_workers == 2
    assert info.prefetch_factor == 1
    assert record.steps.count == 12
    assert record.steps.total_input_wait_s / record.steps.total_wall_s > 0.5


def test_fast_loader_has_little_wait(tmp_path):
    # Relative, not a wall-clock bound: a loaded machine slows both loaders alike, and the one
    # that sleeps 20 ms per sample must show far more of its step waiting than the one that
    # does not sleep at all.
    shares = []
    for delay in (0.0, 0.02):
        loader = torch.utils.data.DataLoader(SleepyDataset(20, delay), batch_size=2)
        with torchdiag.profile(tmp_path / f"run{delay}.json", profile_steps=0) as run:
            _train(loader, run_compute_s=0.01)
        s = run.record.steps
        assert s.count == 10
        shares.append(s.total_input_wait_s / s.total_wall_s)
    fast, slow = shares
    assert fast < slow / 2


def test_iterator_created_before_the_block_is_timed(tmp_path):
    loader = torch.utils.data.DataLoader(SleepyDataset(8, 0.01), batch_size=2)
    it = iter(loader)
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0) as run:
        _train(it)
    assert run.record.steps.count == 4
    assert min(run.record.steps.input_wait_ms) >= 19.0
    assert run.record.environment.loaders[0].iterator == "_SingleProcessDataLoaderIter"


def test_waits_on_other_threads_are_not_input_wait(tmp_path):
    loader = torch.utils.data.DataLoader(SleepyDataset(8, 0.02), batch_size=2)
    batches = []
    with torchdiag.profile(tmp_path / "run.json", profile_steps=0) as run:
        t = threading.Thread(target=lambda: batches.extend(loader))
        t.start()
        t.join()
        _train(batches)
    assert run.record.steps.count == 4
    assert run.record.steps.total_input_wait_s == 0.0
