"""Markdown made safe from what a record or trace holds: inert text, code spans, link
destinations. Every Markdown output (run report, diff, measured fixes) writes names, titles and
messages through these, so no operator or kernel name can break a table, open HTML or mention a
GitHub user."""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

MAX_CELL_CHARS = 300
MAX_NAME_CHARS = 100

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~#!])")
_PIPE = re.compile(r"(\\*)\|")


def md_text(text: object, limit: int = MAX_CELL_CHARS) -> str:
    """Plain text made inert in Markdown and in a table cell: one line, punctuation escaped."""
    s = " ".join(str(text).split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    s = _MD_SPECIAL.sub(r"\\\1", s)
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # An "@name" in a PR comment notifies that user or team; a word joiner keeps it as text.
    return s.replace("@", "@\u2060")


def md_code(text: object, limit: int = MAX_CELL_CHARS, *, table: bool = True) -> str:
    """An inline code span: fence longer than any backticks inside; pipes escaped for a table
    cell (``table=False`` outside tables, where the escape would show as a backslash)."""
    s = " ".join(str(text).split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    if not table:
        return _code_span(s)
    # GitHub splits table rows before it parses code spans, reading "\\x" as an escaped pair: a
    # pipe needs a backslash, and backslashes already before it must be doubled, or the last of
    # them would escape the new one and leave the pipe to end the cell.
    s = _PIPE.sub(lambda m: m.group(1) * 2 + "\\|", s)
    return _code_span(s)


def _code_span(s: str) -> str:
    fence = "`" * (longest_run(s, "`") + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def md_url(url: str) -> str:
    """An http(s) URL made safe as a Markdown link destination.

    Characters that would end the destination or the link (spaces, parentheses, angle brackets,
    quotes, backticks, pipes in a table) are percent-encoded; the URL otherwise stays as given.
    Other schemes (``javascript:``, ``data:``) are refused with :class:`ValueError`.
    """
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    return quote(url.strip(), safe="/:?#[]@!$&'*+,;=%-._~")


def longest_run(s: str, ch: str) -> int:
    """The longest run of ``ch`` in ``s`` (a fence must be longer)."""
    return max((len(m) for m in re.findall(f"{re.escape(ch)}+", s)), default=0)
