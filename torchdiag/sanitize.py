"""Text from outside — file names, trace and model names — made safe to write and to print."""

from __future__ import annotations


def safe_text(text: str) -> str:
    """``text`` as valid Unicode: undecodable bytes of a file name (lone surrogates) become
    U+FFFD, so the name can be written to UTF-8 reports."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# Shown as \uXXXX: the same spelling JSON uses, so JSON output stays valid JSON.
_CONTROL = {c: f"\\u{c:04x}" for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))}
del _CONTROL[0x09], _CONTROL[0x0A]  # tab and newline lay text out; every other control acts


def terminal_safe(text: str) -> str:
    """``text`` with control characters shown, not obeyed (``ESC`` becomes ``\\u001b``).

    Names from a trace or a model can carry escape sequences that clear the screen, retitle the
    window, write the clipboard (OSC 52) or plant links (OSC 8) when printed to a terminal.
    """
    return text.translate(_CONTROL)
