"""Fixes applied to a run from outside its script: ``profile(fixes=[...])``, ``torchdiag run
--fix``, and the variants ``torchdiag try`` measures.

Each fix patches torch for the duration of the capture (the DataLoader's defaults, the outermost
module's forward, a backend flag, the optimizers' constructors), counts what it changed, and says
at the end whether it took effect (:class:`~torchdiag.record.AppliedFix`). A fix that finds
nothing to change (AMP in a script without modules, channels-last on 2-D inputs) reports itself
not applied and why; it never fails the run.

The fixes there are, their spellings (:func:`parse_fix`, :data:`FIX_NAMES`) and what ``try``
needs to know about each are one registry, :data:`~torchdiag.capture.fixes.registry.FIX_KINDS`:
a new fix is a :class:`Fix` subclass and one :class:`FixKind` there.
"""

from __future__ import annotations

from torchdiag.capture.fixes.base import Fix
from torchdiag.capture.fixes.kind import Always, FixKind, FromEvidence
from torchdiag.capture.fixes.registry import (
    FIX_KINDS,
    FIX_NAMES,
    kind_of,
    kinds_answering,
    parse_fix,
)

__all__ = [
    "FIX_KINDS",
    "FIX_NAMES",
    "Always",
    "Fix",
    "FixKind",
    "FromEvidence",
    "kind_of",
    "kinds_answering",
    "parse_fix",
]
