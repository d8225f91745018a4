"""Temporary, reversible replacement of attributes on torch classes.

Capture hooks a few methods (``DataLoader.__iter__``, ``_BaseDataLoaderIter.__next__``,
``autocast.__enter__``) for the duration of a ``profile()`` block. Patching the class, not
instances, also covers iterators and autocast objects created before the block began.
"""

from __future__ import annotations

from typing import Any


class Patches:
    """A stack of attribute replacements undone in reverse order by :meth:`restore`."""

    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any, bool]] = []

    def replace(self, owner: Any, name: str, new: Any) -> Any:
        """Set ``owner.name = new``; returns the previous value (to call through to)."""
        had_own = name in vars(owner)
        old = getattr(owner, name)
        self._saved.append((owner, name, vars(owner).get(name), had_own))
        setattr(owner, name, new)
        return old

    def restore(self) -> None:
        """Undo every replacement; safe to call twice."""
        while self._saved:
            owner, name, old, had_own = self._saved.pop()
            if had_own:
                setattr(owner, name, old)
            else:
                delattr(owner, name)
