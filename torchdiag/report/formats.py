"""Every output format, registered once: ``report``, ``diff`` and ``try`` (and their ``--format``
choices, default file names and messages) all read this list.

Adding a format is one module with a ``RENDERER`` (a :class:`~torchdiag.report.renderer.Renderer`)
and one line in :data:`FORMATS`. A format's module is imported only when something is rendered in
it, so listing the formats (``torchdiag --help``) loads no renderer.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from torchdiag.report.renderer import Document, Renderer


@dataclass(frozen=True)
class OutputFormat:
    """One output format.

    ``name`` is its ``--format`` value, ``label`` what messages call it ("HTML report: ...");
    ``suffix`` ends the file a report is written to by default, and ``media_type`` is what a
    server or CI artifact should call it. ``documents`` are those it renders, ``module`` holds
    its ``RENDERER``.
    """

    name: str
    label: str
    suffix: str
    media_type: str
    documents: frozenset[Document]
    module: str

    def renderer(self) -> Renderer:
        """The format's renderer (its module is imported on first use)."""
        renderer = importlib.import_module(self.module).RENDERER
        assert isinstance(renderer, Renderer), f"{self.module}.RENDERER is not a Renderer"
        return renderer


_RUN: frozenset[Document] = frozenset({"run"})
_ALL: frozenset[Document] = frozenset({"run", "diff", "try"})

FORMATS: tuple[OutputFormat, ...] = (
    OutputFormat("html", "HTML", ".html", "text/html", _RUN, "torchdiag.report.html"),
    OutputFormat("md", "Markdown", ".md", "text/markdown", _ALL, "torchdiag.report.markdown"),
    OutputFormat(
        "json", "JSON", ".findings.json", "application/json", _ALL, "torchdiag.report.json_report"
    ),
    OutputFormat("text", "Text", ".txt", "text/plain", _ALL, "torchdiag.report.text"),
)


def output_format(name: str) -> OutputFormat:
    """The format called ``name``; ``KeyError`` names the known ones."""
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise KeyError(f"unknown format {name!r} (one of {', '.join(f.name for f in FORMATS)})")


def format_names(document: Document) -> tuple[str, ...]:
    """The ``--format`` choices of a command that writes ``document``, in registry order."""
    return tuple(f.name for f in FORMATS if document in f.documents)
