"""The per-rank table every format shows for a distributed run: the same rows, the same words."""

from __future__ import annotations

import statistics

from torchdiag.report.verdict import format_ms, format_pct
from torchdiag.view.run_view import RunView

RANK_HEAD = [
    "Rank",
    "Host",
    "State",
    "Its findings",
    "Step",
    "Own work",
    "In collectives",
    "Input wait",
]
# Columns from this one on are numbers (right-aligned).
RANK_NUMBERS_FROM = 4


def rank_rows(view: RunView) -> list[list[str]]:
    """One row per rank (empty for a single-process run)."""
    return [
        [
            str(f.rank),
            f.host or "—",
            f.state or "—",
            ", ".join(f.findings) or "—",
            format_ms(f.step_ms),
            format_ms(f.own_ms),
            format_ms(f.comm_ms),
            format_ms(f.input_wait_ms),
        ]
        for f in view.ranks
    ]


def ranks_note(view: RunView) -> str:
    """The spread of the ranks' own work per step, and the ranks that left no record."""
    record = view.record
    figures = [f for f in view.ranks if f.own_ms is not None]
    parts = []
    if len(figures) >= 2:
        own = [f.own_ms or 0.0 for f in figures]
        median = statistics.median(own)
        spread = 100 * (max(own) - min(own)) / median if median else 0.0
        parts.append(
            f"{len(figures)} ranks; own work per step (the step less time in collectives) from "
            f"{format_ms(min(own))} to {format_ms(max(own))}, a spread of {format_pct(spread)} "
            "of the median"
        )
    if record.missing_ranks:
        missing = ", ".join(str(r) for r in record.missing_ranks)
        parts.append(f"no record from rank{'s' if len(record.missing_ranks) > 1 else ''} {missing}")
    return "; ".join(parts)
