"""Shared fixtures: every test must leave no sampler thread, profiler or patch behind."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def private_user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """torchdiag's user cache (packed plotly.js, compiled templates) in a temporary folder for
    the whole session, subprocesses included: tests never read or write the real one."""
    from torchdiag.user_cache import CACHE_DIR_ENV

    before = os.environ.get(CACHE_DIR_ENV)
    os.environ[CACHE_DIR_ENV] = str(tmp_path_factory.mktemp("user-cache"))
    yield Path(os.environ[CACHE_DIR_ENV])
    if before is None:
        os.environ.pop(CACHE_DIR_ENV, None)
    else:
        os.environ[CACHE_DIR_ENV] = before


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


@pytest.fixture
def model_opt():
    """A tiny model and its optimizer."""
    import torch

    model = torch.nn.Linear(4, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


@pytest.fixture
def run_cli(capsys):
    """``run_cli(*argv) -> (exit status, stdout, stderr)`` of ``torchdiag`` in-process."""
    from torchdiag.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


# The input-bound sample as the demo runs it: each sample waits on a read (1.5 ms, not CPU work)
# and the model has about half that work. A loader that waits takes no core while it waits, so
# the dataloader-workers finding (workers that overlap the reads) holds however busy the cores
# are. With its default, the samples computed in the loader, what workers can win depends on how
# much computing the machine's cores have left, which other jobs decide.
SAMPLE_ARGS = {"input_bound.py": ["--read-ms", "1.5", "--rounds", "0", "--channels", "128"]}


@pytest.fixture(scope="session")
def live_sample_record(tmp_path_factory):
    """``live_sample_record("input_bound.py")``: the record of a short live CPU capture of that
    sample (16 steps, :data:`SAMPLE_ARGS`), captured once per test session and shared by the
    tests that read it."""
    pytest.importorskip("torchvision")
    captured: dict[str, Path] = {}

    def capture(sample: str) -> Path:
        if sample not in captured:
            path = tmp_path_factory.mktemp(sample.removesuffix(".py")) / "run.json"
            command = [sys.executable, str(ROOT / "samples" / sample), "--output", str(path)]
            subprocess.run(
                [*command, "--steps", "16", *SAMPLE_ARGS.get(sample, [])],
                check=True,
                timeout=300,
                capture_output=True,
            )
            captured[sample] = path
        return captured[sample]

    return capture


def pytest_terminal_summary(terminalreporter):
    """Print the step-model calibration table and the diagnosis suite's table when they ran."""
    _calibration_table(terminalreporter)
    _diagnosis_table(terminalreporter)


def _calibration_table(terminalreporter):
    try:
        from test_calibration import CALIBRATION, KNOWN_OFF, TOLERANCE
    except ImportError:
        return
    if not CALIBRATION:
        return
    write = terminalreporter.write_line
    write("")
    write("step model against un-profiled step times (H200 reference traces)")
    write(
        f"  {'trace':28s} {'real ms':>8s} {'model ms':>9s} {'error':>7s}  {'range ms':17s} "
        "in range  bound"
    )
    write("  (range: reference cost fitted without the trace; aims at 90% coverage)")
    errors = []
    held = 0
    for name, (real, model, low, high, bound, inside) in sorted(CALIBRATION.items()):
        err = 100 * (model / real - 1)
        mark = "  (known off: see test_calibration.KNOWN_OFF)" if name in KNOWN_OFF else ""
        if name not in KNOWN_OFF:
            errors.append(abs(err))
        held += inside
        write(
            f"  {name:28s} {real:8.1f} {model:9.1f} {err:+6.1f}%  "
            f"{low:7.1f}–{high:<8.1f} {'yes' if inside else 'NO':8s}  {bound}{mark}"
        )
    if errors:
        write(
            f"  median error {sorted(errors)[len(errors) // 2]:.1f}%, largest {max(errors):.1f}% "
            f"on {len(errors)} traces (limit {100 * TOLERANCE:.0f}%); truth in range on "
            f"{held} of {len(CALIBRATION)}"
        )


def _diagnosis_table(terminalreporter):
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
        f"{extra} further findings on faulty runs (each with its reason in diagnosis_cases.py)"
    )
