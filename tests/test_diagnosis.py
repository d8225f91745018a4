"""The diagnosis suite: every planted cause found at warning or above, healthy runs left alone.

Runs the full analysis on the labelled real traces (../shared/traces) and on live CPU captures of
the samples. The precision/recall table is printed at the end of the test session.
"""

from __future__ import annotations

import pytest
from diagnosis_cases import CASES, Case

from torchdiag.analyze.registry import analyze
from torchdiag.traces.load import record_from_traces

SCOREBOARD: dict[str, tuple[frozenset[str], frozenset[str]]] = {}


def _flagged(case: Case) -> frozenset[str]:
    if not case.path.exists():
        pytest.skip(f"{case.path} is not available (the shared traces live beside the repo)")
    analysis = analyze(record_from_traces(case.path))
    return frozenset(f.id for f in analysis.findings if f.severity in ("warning", "critical"))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_planted_cause_is_found(case: Case):
    found = _flagged(case)
    SCOREBOARD[case.name] = (case.expected, found)
    missing = case.expected - found
    assert not missing, f"{case.name}: expected {sorted(case.expected)}, got {sorted(found)}"
    if not case.expected:
        assert not found, f"{case.name} is healthy but got warnings: {sorted(found)}"
