"""What every fix is: installed, uninstalled, and an account of what it changed."""

from __future__ import annotations

from torchdiag.capture.patching import Patches
from torchdiag.record import AppliedFix


class Fix:
    """A change applied from outside the script for the length of a capture.

    Subclasses patch in :meth:`install` through ``self.patches`` (undone by :meth:`uninstall`),
    note each change with :meth:`changed`, and may set :attr:`not_applicable` to say why nothing
    could change. :meth:`outcome` is the record's account.
    """

    spec = ""
    # Whether the fix changes how many samples a step processes (compared per sample then).
    batch_factor = 1

    def __init__(self) -> None:
        self.patches = Patches()
        self.changes: list[str] = []
        self.not_applicable: str | None = None

    @classmethod
    def from_value(cls, value: str) -> Fix:
        """The fix its spelling's ``value`` asks for (``""``: spelt without one). Fixes that
        take a value override this, and raise ``ValueError`` saying what the value should be."""
        return cls()

    def install(self) -> None:
        """Apply the fix (patch torch); called once, before the script's code runs."""
        raise NotImplementedError

    def uninstall(self) -> None:
        """Undo every patch; safe to call twice."""
        self.patches.restore()

    def changed(self, what: str) -> None:
        """Note one change (kept distinct: the same change on every step is noted once)."""
        if what not in self.changes:
            self.changes.append(what)

    def nothing_to_change(self) -> str:
        """Why the fix did not apply when it changed nothing and said no reason itself."""
        return "nothing it changes was used by the run"

    def outcome(self) -> AppliedFix:
        """Whether the fix took effect, and what it changed or why not."""
        if self.changes:
            return AppliedFix(fix=self.spec, applied=True, detail="; ".join(self.changes))
        reason = self.not_applicable or self.nothing_to_change()
        return AppliedFix(fix=self.spec, applied=False, detail=reason)
