"""The renderer contract: what every output format implements.

A format renders up to three documents: the report of one run (``render``: the run's view and
its analysis), the comparison of two (``render_diff``) and the fixes ``torchdiag try`` measured
(``render_try``). A renderer implements those its format can show; which it shows is declared
once, in :mod:`torchdiag.report.formats`, where every format is registered. Rendering is pure
and deterministic: the same inputs give the same text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from torchdiag.analyze.registry import Analysis
    from torchdiag.diff import RunDiff
    from torchdiag.trials.compare import TryResult
    from torchdiag.view.run_view import RunView

Document = Literal["run", "diff", "try"]


@dataclass(frozen=True)
class RenderOptions:
    """What a user may choose about an output beside its format.

    ``cdn``: HTML loads plotly.js from its CDN instead of carrying it. ``html_url``: Markdown
    links the full HTML report at this http(s) URL. ``width``: text is wrapped to this many
    columns. A format ignores the options that do not apply to it.
    """

    cdn: bool = False
    html_url: str | None = None
    width: int = 100


class Renderer:
    """One output format's rendering of the documents it shows (see the module docstring).

    A format that does not show a document leaves its method as is: asking for it is a
    programming error, since the registry says which documents each format shows.
    """

    def render(self, view: RunView, analysis: Analysis, options: RenderOptions) -> str:
        """The report of one run: its view and its analysis."""
        raise NotImplementedError(f"{type(self).__name__} does not render a run report")

    def render_diff(self, diff: RunDiff, options: RenderOptions) -> str:
        """The comparison of two runs (or two sets of runs)."""
        raise NotImplementedError(f"{type(self).__name__} does not render a diff")

    def render_try(self, result: TryResult, options: RenderOptions) -> str:
        """The fixes ``torchdiag try`` measured."""
        raise NotImplementedError(f"{type(self).__name__} does not render measured fixes")
