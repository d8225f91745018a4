"""What tests that hold a raw record need to reach the product's API, which reads a
:class:`~torchdiag.view.run_view.RunView` and its analysis."""

from __future__ import annotations

from torchdiag.analyze.registry import Analysis, analyze
from torchdiag.diff import RunDiff
from torchdiag.record import RunRecord
from torchdiag.report.formats import output_format
from torchdiag.report.renderer import RenderOptions
from torchdiag.trials.compare import TryResult
from torchdiag.view.run_view import RunView


def analyzed(record: RunRecord) -> tuple[RunView, Analysis]:
    """The record's view and its analysis, as ``torchdiag report`` makes them."""
    view = RunView(record)
    return view, analyze(view)


def analyze_record(record: RunRecord) -> Analysis:
    """Every rule run over the record's view."""
    return analyze(RunView(record))


def render_diff(diff: RunDiff, fmt: str) -> str:
    """The diff in the format named ``fmt``, through the format registry."""
    return output_format(fmt).renderer().render_diff(diff, RenderOptions())


def render_try(result: TryResult, fmt: str) -> str:
    """Measured fixes in the format named ``fmt``, through the format registry."""
    return output_format(fmt).renderer().render_try(result, RenderOptions())
