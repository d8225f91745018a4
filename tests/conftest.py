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


def pytest_terminal_summary(terminalreporter):
    """Print the diagnosis suite's precision/recall table when it ran."""
    try:
        from test_diagnosis import SCOREBOARD
    except ImportError:
        return
    if not SCOREBOARD:
        return
    write = terminalreporter.write_line
    write("")
    write("diagnosis suite (warning or critical counts as flagged)")
    write(f"  {'case':34s} {'expected':38s} {'flagged':50s}")
    hits = expected_total = flagged_total = healthy_alarms = 0
    for name, (expected, found) in sorted(SCOREBOARD.items()):
        wanted = ",".join(sorted(expected)) or "-"
        flagged = ",".join(sorted(found)) or "-"
        write(f"  {name:34s} {wanted:38s} {flagged:50s}")
        hits += len(expected & found)
        expected_total += len(expected)
        if expected:
            flagged_total += len(found)
        else:
            healthy_alarms += len(found)
    recall = hits / expected_total if expected_total else 1.0
    # Precision over labelled causes: extra findings on a faulty run may be true second causes,
    # so they are listed but only warnings on healthy runs count as false alarms.
    precision = hits / (hits + healthy_alarms) if hits + healthy_alarms else 1.0
    extra = flagged_total - hits
    write(
        f"  recall {recall:.2f} ({hits}/{expected_total} planted causes), precision "
        f"{precision:.2f} ({healthy_alarms} warnings on healthy runs), "
        f"{extra} further findings on faulty runs"
    )
