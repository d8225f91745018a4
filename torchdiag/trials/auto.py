"""Which fixes ``torchdiag try --fix auto`` measures: those behind the baseline's own findings."""

from __future__ import annotations

from torchdiag.analyze.registry import Analysis
from torchdiag.capture.fixes import kinds_answering

SERIOUS = ("critical", "warning")


def auto_fixes(analysis: Analysis) -> list[str]:
    """The fixes for the findings at warning or above, most valuable finding first, each once.

    Each finding's fixes come in registry order; a fix's value (the worker count, the batch
    factor) is the first suggested by any of these findings, else its default.
    """
    findings = [f for f in analysis.findings if f.severity in SERIOUS]
    evidence = [f.evidence for f in findings]
    fixes: list[str] = []
    for finding in findings:
        for kind in kinds_answering(finding.id):
            spec = kind.auto_spec(evidence)
            if spec not in fixes:
                fixes.append(spec)
    return fixes
