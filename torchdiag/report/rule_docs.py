"""Each rule's documentation, embedded in the HTML report beside its findings.

A report is often opened far from the repository (a CI artifact, a mail attachment), where a
``docs/rules.md#id`` reference leads nowhere. The package ships a copy of ``docs/rules.md`` as data
(``torchdiag/report_templates/rules.md``; a test keeps it identical to the docs), and the page
shows the rule's own section — what it finds, the evidence, threshold and why, exceptions, the
fix — in a collapsible block under each finding.

The Markdown is rendered by markdown-it-py (CommonMark) with raw HTML off, so every character of
the text is escaped; links and images are rendered as their text, so the page links nothing.
"""

from __future__ import annotations

import functools
import importlib.resources
import re

from markdown_it import MarkdownIt

TEMPLATES_PACKAGE = "torchdiag.report_templates"
RULES_DOC = "rules.md"
# A rule's section starts at "### <rule id>" and runs to the next heading of level 2 or 3.
_RULE_HEADING = re.compile(r"^### ([a-z0-9][a-z0-9-]*)\s*$", re.M)
_NEXT_HEADING = re.compile(r"^#{2,3} ", re.M)


@functools.cache
def _sections() -> dict[str, str]:
    """Rule id -> the Markdown of its section (heading excluded)."""
    text = (importlib.resources.files(TEMPLATES_PACKAGE) / RULES_DOC).read_text(encoding="utf-8")
    out: dict[str, str] = {}
    for match in _RULE_HEADING.finditer(text):
        rest = text[match.end() :]
        end = _NEXT_HEADING.search(rest)
        out[match.group(1)] = (rest[: end.start()] if end else rest).strip()
    return out


@functools.cache
def _renderer() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False}).disable(["image", "autolink"])
    # Links keep their text and lose the address: the page must not point anywhere.
    md.add_render_rule("link_open", lambda *_: "")
    md.add_render_rule("link_close", lambda *_: "")
    return md


def documented_rules() -> list[str]:
    """The ids of the rules the shipped documentation has a section for."""
    return sorted(_sections())


def rule_doc_html(rule_id: str) -> str | None:
    """The documentation of ``rule_id`` as escaped HTML, or ``None`` when it has no section."""
    section = _sections().get(rule_id)
    if not section:
        return None
    html: str = _renderer().render(section)
    return html
