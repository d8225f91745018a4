"""The memory fixes ``torchdiag try`` measures: ``checkpointing`` and ``expandable-segments``.

Checkpointing is checked in-process on a small MLP training on the CPU: the children's forwards
run again in backward (counted by forward hooks), the losses are those of the run without it,
and the memory allocated at the step's peak is lower, read off the profiler's host memory events
(torch's CPU allocator reports every allocation to the profiler: an exact count, not a sample).
Expandable segments need a GPU: without one only the reason and the variable's composition are
checked. Nothing here asserts a duration.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
import torch

import torchdiag
from torchdiag.capture.fixes import parse_fix
from torchdiag.capture.fixes.allocator import (
    GENERIC_VARIABLE,
    VARIABLE,
    allocator_conf,
    with_expandable_segments,
)
from torchdiag.capture.fixes.checkpointing import checkpoint_segments
from torchdiag.record import AppliedFix, RunRecord
from torchdiag.trials.compare import compare_losses

WIDTH = 64


class Block(torch.nn.Module):
    """A residual MLP block whose hidden activations (4x wide) dominate the step's memory."""

    def __init__(self) -> None:
        super().__init__()
        self.up = torch.nn.Linear(WIDTH, 4 * WIDTH)
        self.down = torch.nn.Linear(4 * WIDTH, WIDTH)
        self.drop = torch.nn.Dropout(0.1)  # the recomputation must draw the same mask

    def forward(self, x: torch.Tensor, *, scale: float = 1.0, mask: torch.Tensor | None = None):
        hidden = self.drop(torch.relu(self.up(x)))
        if mask is not None:
            hidden = hidden * mask
        return x + scale * self.down(hidden)


class Net(torch.nn.Module):
    """Blocks in a ModuleList (a container never called itself) and a head: five segments."""

    def __init__(self, blocks: int = 4) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(Block() for _ in range(blocks))
        self.head = torch.nn.Linear(WIDTH, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            # Keyword and non-tensor arguments: checkpoint must pass them through.
            x = block(x, scale=0.5, mask=None)
        return self.head(x)


def _train(
    fixes: list[str], tmp_path: Path, *, steps: int = 4, model: torch.nn.Module | None = None
) -> tuple[RunRecord, dict[str, int], int]:
    """Train ``model`` (a seeded :class:`Net`) for ``steps``; the record, how often each block's
    ``up`` layer ran, and the bytes allocated at the peak of the last step over its start."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = model or Net()
    calls: dict[str, int] = {}

    def counter(name: str):
        def count(*_: object) -> None:
            calls[name] += 1

        return count

    for name, module in model.named_modules():
        if name.endswith(".up"):
            calls[name] = 0
            module.register_forward_hook(counter(name))
    x, y = torch.randn(256, WIDTH), torch.randint(0, 2, (256,))
    peak = 0
    with torchdiag.profile(
        tmp_path / "run.json", profile_steps=0, fixes=fixes, record_loss=True
    ) as run:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(steps):
            if step == steps - 1:
                peak = _step_peak_bytes(model, optimizer, x, y, tmp_path)
            else:
                _step(model, optimizer, x, y)
    assert run.record is not None
    return run.record, calls, peak


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x, y) -> None:
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    optimizer.zero_grad()


def _step_peak_bytes(model, optimizer, x, y, tmp_path: Path) -> int:
    """One step under the profiler with memory events: the most host memory the allocator held
    during it, over what it held when the step began."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _step(model, optimizer, x, y)
    trace = tmp_path / "step.json"
    prof.export_chrome_trace(str(trace))
    events = [e.get("args", {}) for e in json.loads(trace.read_text())["traceEvents"]]
    host = [a for a in events if "Total Allocated" in a and a.get("Device Type") == 0]
    assert host, "the profiler recorded no host memory events"
    # The level before the first event: its total less what that event allocated.
    start = host[0]["Total Allocated"] - host[0]["Bytes"]
    return max(a["Total Allocated"] for a in host) - start


def _outcome(record: RunRecord, spec: str) -> AppliedFix:
    return next(f for f in record.fixes if f.fix == spec)


# -- checkpointing ----------------------------------------------------------------------------


def test_checkpointing_recomputes_the_children_keeps_the_loss_and_lowers_the_peak(tmp_path):
    steps = 4
    base, base_calls, base_peak = _train([], tmp_path / "base", steps=steps)
    fixed, fixed_calls, fixed_peak = _train(["checkpointing"], tmp_path / "fix", steps=steps)
    outcome = _outcome(fixed, "checkpointing")
    assert outcome.applied, outcome.detail
    assert "5 modules in Net checkpointed" in outcome.detail and "blocks.0" in outcome.detail
    # Module hooks run once per call; the forward's body runs again in backward, so the hook of
    # a layer inside a checkpointed block fires twice per step.
    assert set(base_calls.values()) == {steps}
    assert set(fixed_calls.values()) == {2 * steps}
    # Same seed, same dropout masks (the recomputation restores the random state): the same
    # losses, which try's comparison accepts.
    assert fixed.losses == pytest.approx(base.losses, rel=1e-6, abs=0)
    assert compare_losses("checkpointing", base.losses, fixed.losses)[0] is True
    # The blocks' hidden activations are no longer kept from forward to backward.
    assert 0 < fixed_peak < 0.8 * base_peak, (base_peak, fixed_peak)


def test_checkpointing_needs_two_children_with_parameters(tmp_path):
    record, _, _ = _train(["checkpointing"], tmp_path, model=torch.nn.Sequential(Block()))
    outcome = _outcome(record, "checkpointing")
    # Looked through the Sequential into the block: two layers there, so it applies...
    assert outcome.applied and "0.up" in outcome.detail
    record, _, _ = _train(
        ["checkpointing"], tmp_path, model=torch.nn.Sequential(torch.nn.Linear(WIDTH, 2))
    )
    outcome = _outcome(record, "checkpointing")
    # ...but one layer alone is a single segment: nothing to free at the peak.
    assert not outcome.applied
    assert "Sequential.0 holds its parameters itself, not in 2 or more" in outcome.detail
    assert "the peak does not fall" in outcome.detail


def test_checkpointing_looks_through_wrappers_and_containers():
    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = Net(blocks=2)
            self.act = torch.nn.ReLU()  # no parameters: not a segment

    where, children = checkpoint_segments(Wrapper())
    assert where == "inner"
    assert [name for name, _ in children] == ["inner.blocks.0", "inner.blocks.1", "inner.head"]


def test_checkpointing_does_nothing_without_grad(tmp_path):
    torch.manual_seed(0)
    model = Net(blocks=2)
    calls = 0

    def count(*_: object) -> None:
        nonlocal calls
        calls += 1

    model.blocks[0].up.register_forward_hook(count)
    with (
        torchdiag.profile(tmp_path / "run.json", profile_steps=0, fixes=["checkpointing"]) as run,
        torch.no_grad(),
    ):
        for _ in range(3):
            model(torch.randn(8, WIDTH))
    assert run.record is not None
    outcome = _outcome(run.record, "checkpointing")
    assert not outcome.applied and "all without grad" in outcome.detail
    assert calls == 3  # run once each: nothing recomputed


# -- expandable segments ----------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens without a GPU")
def test_expandable_segments_is_not_applicable_without_a_gpu(monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    fix = parse_fix("expandable-segments")
    fix.install()
    fix.uninstall()
    outcome = fix.outcome()
    assert not outcome.applied and "no CUDA device" in outcome.detail
    assert VARIABLE not in os.environ  # nothing set on the way


def test_expandable_segments_keeps_the_options_already_set():
    assert with_expandable_segments(None) == "expandable_segments:True"
    assert with_expandable_segments(" ") == "expandable_segments:True"
    assert (
        with_expandable_segments("max_split_size_mb:128")
        == "max_split_size_mb:128,expandable_segments:True"
    )
    assert with_expandable_segments("a:1,") == "a:1,expandable_segments:True"
    # Already set either way: the user's choice stands.
    assert with_expandable_segments("expandable_segments:False") == "expandable_segments:False"
    assert with_expandable_segments("a:1, expandable_segments:True") == (
        "a:1, expandable_segments:True"
    )
    # The CUDA variable wins over the generic one, as in torch's allocator.
    assert allocator_conf({GENERIC_VARIABLE: "a:1"}) == "a:1"
    assert allocator_conf({GENERIC_VARIABLE: "a:1", VARIABLE: "b:2"}) == "b:2"
    assert allocator_conf({}) is None


def test_expandable_segments_on_a_gpu_sets_and_restores_the_variable(monkeypatch):
    """What the fix does where CUDA is there, with torch's settings call recorded instead."""
    settings: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch._C, "_accelerator_setAllocatorSettings", settings.append)
    monkeypatch.setenv(VARIABLE, "max_split_size_mb:128")
    fix = parse_fix("expandable-segments")
    fix.install()
    assert os.environ[VARIABLE] == "max_split_size_mb:128,expandable_segments:True"
    assert settings == ["expandable_segments:True"]
    fix.uninstall()
    assert os.environ[VARIABLE] == "max_split_size_mb:128"
    assert settings[-1] == "expandable_segments:False"
    outcome = fix.outcome()
    assert outcome.applied and "expandable_segments:True" in outcome.detail

    monkeypatch.setenv(VARIABLE, "expandable_segments:False")
    fix = parse_fix("expandable-segments")
    fix.install()
    fix.uninstall()
    outcome = fix.outcome()
    assert not outcome.applied and "already sets expandable_segments:False" in outcome.detail


# -- end to end -------------------------------------------------------------------------------

SCRIPT = """
import torch

torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Linear(32, 128), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(128, 2)
)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
x, y = torch.randn(64, 32), torch.randint(0, 2, (64,))
for _ in range(12):
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    optimizer.zero_grad()
"""


def test_try_measures_checkpointing_without_flagging_its_numerics(tmp_path):
    """Through ``try_fixes``: each variant a fresh ``torchdiag run`` process, as ``try`` runs."""
    from torchdiag.trials.runner import TrialSettings, try_fixes

    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT))
    settings = TrialSettings(steps=10, skip_first=1, profile_steps=2, repeat=1, timeout_s=300)
    result = try_fixes(
        script,
        fixes=["checkpointing", "expandable-segments"],
        settings=settings,
        output=tmp_path / "try",
    )
    fixes = {f.fix: f for f in result.fixes}
    checkpointing = fixes["checkpointing"]
    assert checkpointing.applicable, checkpointing.detail
    assert checkpointing.numerics_ok is True, checkpointing.numerics
    assert checkpointing.memory_peak_bytes
    if not torch.cuda.is_available():
        expandable = fixes["expandable-segments"]
        assert expandable.applicable is False and "no CUDA device" in expandable.detail
