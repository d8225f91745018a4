"""Checks on Markdown output shared by the report and diff tests."""

from __future__ import annotations


def md_cells_consistent(md: str) -> bool:
    """Every table's rows split into the same number of cells, the way GitHub splits them: a
    backslash escapes the next character, whatever it is, and an unescaped pipe ends a cell."""
    widths: list[int] = []
    for line in [*md.splitlines(), ""]:
        if line.startswith("|"):
            cells, i = 0, 0
            while i < len(line):
                if line[i] == "\\":
                    i += 2
                    continue
                cells += line[i] == "|"
                i += 1
            widths.append(cells)
        elif widths:
            if len(set(widths)) != 1:
                return False
            widths = []
    return True
