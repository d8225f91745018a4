"""Findings: what an analyzer concludes, with the numbers behind it and a fix."""

from __future__ import annotations

from typing import Literal

import msgspec

Severity = Literal["critical", "warning", "info"]

SEVERITY_ORDER: dict[str, int] = {"critical": 0, "warning": 1, "info": 2}

# A finding's severity follows from the share of step time that fixing it could save (Amdahl: a
# cause can save at most its own share). These bands match what users feel: 20% of every step is
# a lost fifth of the GPU budget (critical); 5% is worth a change (warning); less is a note.
CRITICAL_SAVING_PCT = 20.0
WARNING_SAVING_PCT = 5.0
# Below this a possible saving is within the noise of step-time measurement: no finding.
NEGLIGIBLE_SAVING_PCT = 1.0


def severity_for_saving(saving_pct: float) -> Severity:
    """Severity of a finding whose fix could save ``saving_pct`` percent of step time."""
    if saving_pct >= CRITICAL_SAVING_PCT:
        return "critical"
    if saving_pct >= WARNING_SAVING_PCT:
        return "warning"
    return "info"


class Finding(msgspec.Struct, kw_only=True):
    """One diagnosis.

    ``evidence`` holds the numbers the rule used (name -> value), so a reader can check the
    reasoning; ``recommendation`` says what to change and ``snippet`` is code to paste.
    ``saving_pct_max`` is an upper bound on the share of step time (percent) the fix could remove;
    ``saving_pct``, where the rule can model the fix, the expected share (between a low estimate
    and the bound). ``alternative_to`` names a finding that claims the same time: fix one or the
    other, the two savings do not add up. ``blocking``: the run failed because of this (it ran
    out of memory, say): no step-time saving measures it, and it leads every ranking.
    """

    id: str
    severity: Severity
    title: str
    evidence: dict[str, float | int | str | bool | None]
    recommendation: str
    snippet: str = ""
    saving_pct_max: float = 0.0
    saving_pct: float | None = None
    saving_pct_low: float | None = None
    alternative_to: str | None = None
    blocking: bool = False
    docs: str = ""


class Skipped(msgspec.Struct, kw_only=True):
    """A rule that could not run on this record, and why (it never guesses)."""

    id: str
    reason: str


def rank_findings(findings: list[Finding]) -> list[Finding]:
    """Most valuable first: what stopped the run (``blocking``), then by possible saving, then
    severity, then id (stable output)."""
    return sorted(
        findings,
        key=lambda f: (
            not f.blocking,
            -round(f.saving_pct_max, 3),
            SEVERITY_ORDER[f.severity],
            f.id,
        ),
    )
