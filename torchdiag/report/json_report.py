"""The findings document (``torchdiag.findings/1``): the machine-readable report.

Meant for CI and scripts (``jq '.findings[].id'``). Keys are sorted and floats are plain JSON
numbers, so the same record and analysis always give the same bytes.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from torchdiag.analyze.finding import rank_findings
from torchdiag.analyze.registry import FINDINGS_SCHEMA, Analysis, analyze
from torchdiag.record import RunRecord
from torchdiag.report.verdict import verdict
from torchdiag.view.headline import headline
from torchdiag.view.numbers import to_jsonable
from torchdiag.view.ranks import rank_figures

# The fields of a finding, in the document; listed so the schema does not drift silently if
# Finding grows a field.
FINDING_KEYS = (
    "id",
    "severity",
    "title",
    "evidence",
    "recommendation",
    "saving_pct_max",
    "saving_pct",
    "saving_pct_low",
    "alternative_to",
    "snippet",
    "docs",
)


def findings_document(record: RunRecord, analysis: Analysis | None = None) -> dict[str, Any]:
    """The ``torchdiag.findings/1`` document as plain Python data (JSON-safe: no NaN)."""
    if analysis is None:
        analysis = analyze(record)
    findings = [
        {key: getattr(f, key) for key in FINDING_KEYS} for f in rank_findings(analysis.findings)
    ]
    doc = {
        "schema": FINDINGS_SCHEMA,
        "findings": findings,
        "skipped": msgspec.to_builtins(sorted(analysis.skipped, key=lambda s: s.id)),
        "verdict": verdict(record, analysis),
        "headline": headline(record),
        "ranks": msgspec.to_builtins(rank_figures(record)),
        "missing_ranks": list(record.missing_ranks),
        "record": {
            "name": record.name,
            "source": record.source,
            "status": msgspec.to_builtins(record.status),
        },
    }
    return to_jsonable(doc)


def render_json(record: RunRecord, analysis: Analysis | None = None) -> str:
    """The findings document as JSON text: sorted keys, two-space indent, trailing newline.

    When ``analysis`` is omitted the registered rules are run on ``record``.
    """
    doc = findings_document(record, analysis)
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
