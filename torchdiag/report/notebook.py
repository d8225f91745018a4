"""The report inside Jupyter: a loaded record displays as its own report.

``torchdiag`` installs :func:`notebook_html` as ``RunRecord._repr_html_`` when imported, so the
record model never reaches up into the renderers.
"""

from __future__ import annotations

import html

from torchdiag.analyze.registry import analyze
from torchdiag.record import RunRecord
from torchdiag.report.html import render_html
from torchdiag.view.run_view import RunView


def notebook_html(record: RunRecord) -> str:
    """The self-contained page inside a sandboxed ``<iframe>``.

    The full page (plotly.js inlined) keeps a notebook readable offline and when shared.
    Inlined into the notebook's own DOM it would bring its stylesheet, its
    Content-Security-Policy and its scripts along, which notebooks sanitise, break or leak
    into neighbouring cells; ``srcdoc`` keeps it a separate document. ``sandbox`` without
    ``allow-same-origin`` gives it an opaque origin, so nothing in it can reach the notebook.
    Every ``&<>"'`` is escaped, so the attribute holds the page verbatim and the cell output
    itself contains no markup but the iframe tag.
    """
    view = RunView(record)
    page = render_html(view, analyze(view))
    title = html.escape(f"torchdiag report: {record.name}", quote=True)
    return (
        f'<iframe title="{title}" srcdoc="{html.escape(page, quote=True)}" '
        'sandbox="allow-scripts allow-downloads" '
        'style="width: 100%; height: 760px; border: 1px solid #d0d7de; resize: vertical">'
        "</iframe>"
    )
