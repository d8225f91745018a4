"""Each rule's documentation, embedded in the HTML report beside its findings.

A report is often opened far from the repository (a CI artifact, a mail attachment), where a
``docs/rules.md#id`` reference leads nowhere. The package ships a copy of ``docs/rules.md`` as data
(``torchdiag/report_templates/rules.md``; a test keeps it identical to the docs), and the page
shows the rule's own section — what it finds, the evidence, threshold and why, exceptions, the
fix — in a collapsible block under each finding.

The Markdown is rendered by markdown-it-py (CommonMark) with raw HTML off, so every character of
the text is escaped; links and images are rendered as their text, so the page links nothing.

Every section is rendered at once and kept in the user's cache (:mod:`torchdiag.user_cache`),
keyed by the shipped text, how it is rendered and the installed markdown-it-py: a report then
neither imports markdown-it-py (~15 ms) nor renders (~10 ms), and its bytes are the same as with
a fresh rendering.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import importlib.util
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from torchdiag.user_cache import prune_entries, read_entry, write_entry

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

TEMPLATES_PACKAGE = "torchdiag.report_templates"
RULES_DOC = "rules.md"
# Bumped when _renderer() renders differently: the cache key must change with it.
_RENDERING = "commonmark, html off, no images or autolinks, links as text; 1"
_CACHED_GLOB = "rule-docs-*.json"
# A rule's section starts at "### <rule id>" and runs to the next heading of level 2 or 3.
_RULE_HEADING = re.compile(r"^### ([a-z0-9][a-z0-9-]*)\s*$", re.M)
_NEXT_HEADING = re.compile(r"^#{2,3} ", re.M)


@functools.cache
def _text() -> str:
    return (importlib.resources.files(TEMPLATES_PACKAGE) / RULES_DOC).read_text(encoding="utf-8")


@functools.cache
def _sections() -> dict[str, str]:
    """Rule id -> the Markdown of its section (heading excluded)."""
    text = _text()
    out: dict[str, str] = {}
    for match in _RULE_HEADING.finditer(text):
        rest = text[match.end() :]
        end = _NEXT_HEADING.search(rest)
        out[match.group(1)] = (rest[: end.start()] if end else rest).strip()
    return out


@functools.cache
def _renderer() -> MarkdownIt:
    from markdown_it import MarkdownIt

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
    return _rendered().get(rule_id)


@functools.cache
def _rendered() -> dict[str, str]:
    """Rule id -> its section as HTML: from the user's cache, else rendered (and kept)."""
    name = _cache_name()
    cached = read_entry(name) if name is not None else None
    if cached is not None:
        try:
            loaded = json.loads(cached)
        except ValueError:
            loaded = None
        if isinstance(loaded, dict) and all(isinstance(v, str) for v in loaded.values()):
            return loaded
    rendered = {rule: render_section(text) for rule, text in _sections().items() if text}
    if name is not None and write_entry(name, json.dumps(rendered, sort_keys=True).encode()):
        prune_entries(_CACHED_GLOB, keep=4)
    return rendered


def render_section(markdown: str) -> str:
    """A section of the docs as HTML: every character escaped, links as their text, no images."""
    html: str = _renderer().render(markdown)
    return html


def _cache_name() -> str | None:
    """The cache entry of this rendering: the shipped text, the rendering settings and the
    installed markdown-it-py (its distribution's name and version, found without importing it);
    ``None`` when the installation cannot be told, and the docs are rendered afresh."""
    spec = importlib.util.find_spec("markdown_it")
    if spec is None or spec.origin is None:
        return None
    site = Path(spec.origin).parent.parent
    dists = sorted(p.name for p in site.glob("markdown_it_py-*.dist-info"))
    if len(dists) != 1:
        return None
    key = "\n".join((_RENDERING, dists[0], str(site), _text()))
    return f"rule-docs-{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"
