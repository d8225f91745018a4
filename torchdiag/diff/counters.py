"""The exact counters of ``torchdiag diff``: their changes, and the opt-in gate on them.

Times are noisy, so the step-time gate (:func:`torchdiag.diff.is_regression`) asks for a
confident interval. The counters (:mod:`torchdiag.view.counters`) are exact: identical runs give
identical counts, so any increase is a fact, and ``--fail-on NAME`` fails on it whatever the
timing noise. ``NAME>PCT%`` allows a relative increase up to PCT percent, ``NAME>N`` an absolute
one up to N.

With several runs a side, each side's counters are its median run's (the run the breakdown and
findings compare); runs of a side that disagree on a counter are named in a note, since then the
counter is not exact for that code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import msgspec

from torchdiag.view.counters import COUNTER_NAMES
from torchdiag.view.run_view import RunView

# Floating-point slack, so 105 against 100 with ">5%" is "equal", not above.
_EPS = 1e-9
_RULE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*(?:>\s*([0-9]*\.?[0-9]+)\s*(%?))?\s*$")


class CounterChange(msgspec.Struct, kw_only=True):
    """One exact counter, BASE vs HEAD (``None`` where a side cannot tell it)."""

    name: str
    base: float | None
    head: float | None
    change: float | None


class CounterRule(msgspec.Struct, kw_only=True, frozen=True):
    """``--fail-on``: fail when ``name`` increased by more than ``limit`` (percent of BASE's
    value when ``relative``); ``limit`` 0 fails on any increase."""

    name: str
    limit: float = 0.0
    relative: bool = False

    def __str__(self) -> str:
        if not self.limit:
            return self.name
        return f"{self.name}>{self.limit:g}{'%' if self.relative else ''}"


class CounterGate(msgspec.Struct, kw_only=True):
    """One ``--fail-on`` rule and its outcome."""

    rule: str
    failed: bool
    reason: str


def parse_counter_rules(texts: Sequence[str]) -> list[CounterRule]:
    """``--fail-on`` values (each one rule or a comma list) as rules; ``ValueError`` with a
    one-line message for a malformed rule or an unknown counter."""
    rules: list[CounterRule] = []
    for text in texts:
        for part in text.split(","):
            found = _RULE.match(part)
            if not part.strip() or found is None:
                raise ValueError(f"--fail-on {part.strip()!r}: expected NAME, NAME>PCT% or NAME>N")
            name, limit, pct = found.groups()
            if name not in COUNTER_NAMES:
                raise ValueError(
                    f"--fail-on: unknown counter {name!r} (one of {', '.join(COUNTER_NAMES)})"
                )
            value = float(limit) if limit else 0.0
            if not math.isfinite(value):
                raise ValueError(f"--fail-on {part.strip()!r}: the limit must be finite")
            rules.append(CounterRule(name=name, limit=value, relative=pct == "%"))
    return rules


def counter_changes(base: RunView, head: RunView) -> list[CounterChange]:
    """Every counter of BASE's and HEAD's runs, with HEAD minus BASE where both are known."""
    rows = []
    for name in COUNTER_NAMES:
        b, h = base.counters[name], head.counters[name]
        rows.append(
            CounterChange(
                name=name, base=b, head=h, change=h - b if b is not None and h is not None else None
            )
        )
    return rows


def disagreeing_runs(side: str, views: Sequence[RunView]) -> list[str]:
    """Notes naming the counters on which the runs of one side differ (none for one run)."""
    notes = []
    for name in COUNTER_NAMES:
        values = sorted({v.counters[name] for v in views}, key=lambda x: (x is None, x or 0.0))
        if len(values) > 1:
            shown = ", ".join("n/a" if x is None else f"{x:g}" for x in values)
            notes.append(f"{side}'s runs differ in {name} ({shown}): the median run's is compared")
    return notes


def judge(rules: Sequence[CounterRule], changes: Sequence[CounterChange]) -> list[CounterGate]:
    """Each rule's outcome: failed when the counter rose beyond its limit. A counter one side
    cannot tell is not judged (it does not fail), and the reason says so."""
    by_name = {c.name: c for c in changes}
    gates = []
    for rule in rules:
        c = by_name[rule.name]
        if c.base is None or c.head is None or c.change is None:
            gates.append(
                CounterGate(
                    rule=str(rule),
                    failed=False,
                    reason=f"not judged: {rule.name} unknown"
                    + (
                        " on both sides"
                        if c.base is None and c.head is None
                        else f" on {'BASE' if c.base is None else 'HEAD'}"
                    ),
                )
            )
            continue
        # The increase allowed: a share of BASE's value, an absolute amount, or none.
        allowed = abs(c.base) * rule.limit / 100 if rule.relative else rule.limit
        failed = c.change - allowed > _EPS
        verb = "rose" if c.change > 0 else "fell" if c.change < 0 else "stayed"
        reason = f"{rule.name} {verb} {c.base:g} -> {c.head:g}; increase allowed {allowed:g}"
        gates.append(CounterGate(rule=str(rule), failed=failed, reason=reason))
    return gates
