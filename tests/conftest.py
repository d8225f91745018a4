"""Shared fixtures: every test must leave no sampler thread, profiler or patch behind."""

from __future__ import annotations

import threading

import pytest


@pytest.fixture(autouse=True)
def no_capture_leaks():
    """Fail a test that leaves torchdiag threads, an active profiler or class patches behind."""
    before = {t.ident for t in threading.enumerate()}
    yield
    leaked = [
        t.name
        for t in threading.enumerate()
        if t.ident not in before and t.name.startswith("torchdiag") and t.is_alive()
    ]
    assert not leaked, f"torchdiag threads left running: {leaked}"
    import sys

    if "torch" in sys.modules:
        import torch

        assert not torch.autograd.profiler._is_profiler_enabled, "a profiler was left running"
        from torch.utils.data import dataloader as dl

        assert "__next__" in vars(dl._BaseDataLoaderIter)
        assert dl._BaseDataLoaderIter.__next__.__module__ == "torch.utils.data.dataloader"
        assert dl.DataLoader.__iter__.__module__ == "torch.utils.data.dataloader"
        autocast = torch.amp.autocast_mode.autocast
        assert autocast.__enter__.__module__ == "torch.amp.autocast_mode"
    from torchdiag.capture import session

    assert session._active is None, "a torchdiag.profile() session is still marked active"
