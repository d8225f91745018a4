"""What a kind of fix is, apart from how it patches torch: its spelling, the findings it answers,
how ``torchdiag try --fix auto`` picks its value, and how its runs are compared.

:class:`~torchdiag.capture.fixes.base.Fix` subclasses do the patching; a :class:`FixKind` names
one of them and says everything else, so that the command line, ``try``'s choice and comparison,
the report and the docs all read one description (the registry,
:data:`torchdiag.capture.fixes.registry.FIX_KINDS`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from torchdiag.capture.fixes.base import Fix

# What a finding's evidence is to the choice of a value: numbers (and words) by name. Plain
# mappings, so that this layer need not import the rules' Finding.
Evidence: TypeAlias = Sequence[Mapping[str, object]]


@dataclass(frozen=True)
class FromEvidence:
    """``--fix auto`` takes the value from the findings' evidence: the first whole number of at
    least 1 under :attr:`key` (in the order of the findings), else :attr:`default`; written
    into :attr:`form` (``"x{}"`` gives ``x4``)."""

    key: str
    default: int | Callable[[], int]
    form: str = "{}"

    def choose(self, evidence: Evidence) -> str:
        """The value for findings with this ``evidence`` (one mapping per finding)."""
        for numbers in evidence:
            value = numbers.get(self.key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                return self.form.format(value)
        default = self.default if isinstance(self.default, int) else self.default()
        return self.form.format(default)


@dataclass(frozen=True)
class Always:
    """``--fix auto`` always takes this value (``amp=bf16``: the dtype that needs no loss
    scaling)."""

    value: str

    def choose(self, evidence: Evidence) -> str:
        """The value, whatever the evidence."""
        return self.value


AutoValue: TypeAlias = FromEvidence | Always


@dataclass(frozen=True)
class FixKind:
    """One kind of fix, as spelt on the command line (``workers=N``) and measured by ``try``.

    Adding a fix is a :class:`~torchdiag.capture.fixes.base.Fix` subclass and one of these in
    :data:`~torchdiag.capture.fixes.registry.FIX_KINDS`.
    """

    # The spelling's name, before any ``=``.
    name: str
    # The class that applies it; built with ``fix_class.from_value(value)``.
    fix_class: type[Fix]
    # One line of Markdown for the README's list of fixes.
    summary: str
    # How its value is spelt (``N``, ``xK``, ``bf16|fp16``: capital letters stand for whole
    # numbers, ``|`` separates the words it takes), or None for a fix spelt without a value.
    value: str | None = None
    # The ids of the findings it answers: ``try --fix auto`` tries it when one of them is at
    # warning or above, and the report shows its measurement beside them.
    answers: tuple[str, ...] = ()
    # How ``try --fix auto`` picks its value (needed when it takes one and answers findings).
    auto_value: AutoValue | None = None
    # Why its losses cannot be compared with the baseline's (None: they can); on a run without
    # losses the same reason keeps its outputs from being compared (they saw other inputs).
    loss_note: str | None = None
    # It changes nothing without a CUDA device (the run then reports it not applicable).
    needs_gpu: bool = False
    # Its first step holds a one-off cost (compilation), which ``try`` reports apart.
    first_step_one_off_cost: bool = False

    def __post_init__(self) -> None:
        # A mistake in a registry entry fails at import, not when a run first picks the fix.
        if self.value is None and self.auto_value is not None:
            raise ValueError(f"fix {self.name!r} takes no value, so --fix auto cannot pick one")
        if self.value is not None and self.answers and self.auto_value is None:
            raise ValueError(f"fix {self.name!r} answers findings but --fix auto has no value")

    @property
    def takes_value(self) -> bool:
        """Whether it is spelt ``name=VALUE``."""
        return self.value is not None

    @property
    def spelling(self) -> str:
        """How it is written, with its value's form: ``workers=N``, ``tf32``."""
        return self.name if self.value is None else f"{self.name}={self.value}"

    @property
    def auto_spelling(self) -> str:
        """How the docs write what ``--fix auto`` tries: the value it always takes
        (``amp=bf16``), else the form of one chosen per run (``workers=N``)."""
        if isinstance(self.auto_value, Always):
            return f"{self.name}={self.auto_value.value}"
        return self.spelling

    def build(self, value: str) -> Fix:
        """The fix with ``value`` (``""`` when it takes none); ``ValueError`` if it is wrong."""
        return self.fix_class.from_value(value)

    def auto_spec(self, evidence: Evidence) -> str:
        """The spelling ``--fix auto`` tries for findings with this ``evidence``."""
        if self.auto_value is None:
            return self.name
        return f"{self.name}={self.auto_value.choose(evidence)}"
