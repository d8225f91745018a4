"""Fixes applied to a run from outside its script: ``profile(fixes=[...])``, ``torchdiag run
--fix``, and the variants ``torchdiag try`` measures.

Each fix patches torch for the duration of the capture (the DataLoader's defaults, the outermost
module's forward, a backend flag, the optimizers' constructors), counts what it changed, and says
at the end whether it took effect (:class:`~torchdiag.record.AppliedFix`). A fix that finds
nothing to change (AMP in a script without modules, channels-last on 2-D inputs) reports itself
not applied and why; it never fails the run.

Spellings (:func:`parse_fix`): ``input-ceiling``, ``workers=N``, ``pin-memory``,
``persistent-workers``, ``prefetch=N``, ``batch=xK``, ``amp=bf16`` / ``amp=fp16``, ``tf32``,
``cudnn-benchmark``, ``channels-last``, ``fused-optimizer``, ``compile``.
"""

from __future__ import annotations

from collections.abc import Callable

from torchdiag.capture.fixes.base import Fix
from torchdiag.capture.fixes.flags import CudnnBenchmark, Tf32
from torchdiag.capture.fixes.loader import (
    BatchMultiplier,
    InputCeiling,
    PersistentWorkers,
    PinMemory,
    Prefetch,
    Workers,
)
from torchdiag.capture.fixes.model import Amp, ChannelsLast, Compile
from torchdiag.capture.fixes.optimizer import FusedOptimizer

__all__ = ["FIX_NAMES", "Fix", "parse_fix"]

# name -> (takes a value, constructor from the value)
_FIXES: dict[str, tuple[bool, Callable[[str], Fix]]] = {
    "input-ceiling": (False, lambda _: InputCeiling()),
    "workers": (True, lambda v: Workers(_count(v, "workers"))),
    "pin-memory": (False, lambda _: PinMemory()),
    "persistent-workers": (False, lambda _: PersistentWorkers()),
    "prefetch": (True, lambda v: Prefetch(_count(v, "prefetch"))),
    "batch": (True, lambda v: BatchMultiplier(_factor(v))),
    "amp": (True, lambda v: Amp(_amp_dtype(v))),
    "tf32": (False, lambda _: Tf32()),
    "cudnn-benchmark": (False, lambda _: CudnnBenchmark()),
    "channels-last": (False, lambda _: ChannelsLast()),
    "fused-optimizer": (False, lambda _: FusedOptimizer()),
    "compile": (False, lambda _: Compile()),
}
FIX_NAMES = (
    "input-ceiling, workers=N, pin-memory, persistent-workers, prefetch=N, batch=xK, "
    "amp=bf16|fp16, tf32, cudnn-benchmark, channels-last, fused-optimizer, compile"
)


def parse_fix(spec: str) -> Fix:
    """The fix a spelling names; raises ``ValueError`` (one line, listing the fixes) if none."""
    name, has_value, value = spec.strip().partition("=")
    known = _FIXES.get(name)
    if known is None:
        raise ValueError(f"unknown fix {spec!r}; fixes: {FIX_NAMES}")
    takes_value, make = known
    if takes_value != bool(has_value):
        form = f"{name}=VALUE" if takes_value else name
        raise ValueError(f"fix {spec!r} is spelled {form}; fixes: {FIX_NAMES}")
    return make(value)


def _count(value: str, name: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{name}=N needs a whole number of at least 1, not {value!r}")
    return int(value)


def _factor(value: str) -> int:
    digits = value.removeprefix("x")
    if not digits.isdigit() or int(digits) < 2:
        raise ValueError(f"batch=xK needs a whole factor of at least 2 (batch=x2), not {value!r}")
    return int(digits)


def _amp_dtype(value: str) -> str:
    if value not in ("bf16", "fp16"):
        raise ValueError(f"amp= takes bf16 or fp16, not {value!r}")
    return value
