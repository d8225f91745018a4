"""The findings document (``torchdiag.findings/1``): the machine-readable report.

Meant for CI and scripts (``jq '.findings[].id'``). Keys are sorted and floats are plain JSON
numbers, so the same record and analysis always give the same bytes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import msgspec

from torchdiag.analyze.registry import FINDINGS_SCHEMA, Analysis
from torchdiag.report.diff_render import render_diff_json
from torchdiag.report.renderer import Renderer, RenderOptions
from torchdiag.report.trial_render import render_try_json
from torchdiag.report.verdict import verdict
from torchdiag.view.numbers import to_jsonable
from torchdiag.view.run_view import RunView

if TYPE_CHECKING:
    from torchdiag.diff import RunDiff
    from torchdiag.trials.compare import TryResult

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
    "blocking",
    "snippet",
    "docs",
)


class JsonRenderer(Renderer):
    """JSON for scripts and CI: ``torchdiag.findings/1``, ``torchdiag.diff/1``,
    ``torchdiag.try/1``."""

    def render(self, view: RunView, analysis: Analysis, options: RenderOptions) -> str:
        return render_json(view, analysis)

    def render_diff(self, diff: RunDiff, options: RenderOptions) -> str:
        return render_diff_json(diff)

    def render_try(self, result: TryResult, options: RenderOptions) -> str:
        return render_try_json(result)


RENDERER = JsonRenderer()


def findings_document(view: RunView, analysis: Analysis) -> dict[str, Any]:
    """The ``torchdiag.findings/1`` document of ``view`` as plain Python data (JSON-safe: no
    NaN)."""
    record = view.record
    findings = [{key: getattr(f, key) for key in FINDING_KEYS} for f in analysis.findings]
    doc = {
        "schema": FINDINGS_SCHEMA,
        "findings": findings,
        "skipped": msgspec.to_builtins(analysis.skipped),
        "verdict": verdict(view, analysis),
        "headline": dict(view.headline),
        "memory": view.memory_breakdown.document(),
        "ranks": msgspec.to_builtins(view.ranks),
        "missing_ranks": list(record.missing_ranks),
        "record": {
            "name": record.name,
            "source": record.source,
            "status": msgspec.to_builtins(record.status),
            # Whether the run ended; for a checkpoint of one that did not, whether its process
            # still runs ("alive", "gone", "unknown") and the sentence the other formats print.
            "ended": view.run_end.ended,
            "checkpoint_utc": record.checkpoint_utc,
            "process": view.run_end.process,
            "end_note": view.run_end.note,
        },
    }
    plain: dict[str, Any] = to_jsonable(doc)
    return plain


def render_json(view: RunView, analysis: Analysis) -> str:
    """The findings document as JSON text: sorted keys, two-space indent, trailing newline."""
    doc = findings_document(view, analysis)
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
