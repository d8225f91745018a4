"""The one place analyzers are registered, and the function that runs them all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from torchdiag.analyze.finding import Finding, Skipped, rank_findings
from torchdiag.view.run_view import RunView

FINDINGS_SCHEMA = "torchdiag.findings/1"
DOCS_BASE = "docs/rules.md"


class SkipRule(Exception):
    """Raised by a rule when the record lacks the data it needs; the message says what."""


RuleFn = Callable[[RunView], "Finding | list[Finding] | None"]


@dataclass(frozen=True)
class Rule:
    """A registered analyzer: a stable id (see RULES.md) and a pure function of a run's view."""

    id: str
    fn: RuleFn


_RULES: dict[str, Rule] = {}


def rule(rule_id: str) -> Callable[[RuleFn], RuleFn]:
    """Register ``fn`` as the analyzer for ``rule_id``."""

    def register(fn: RuleFn) -> RuleFn:
        if rule_id in _RULES:
            raise ValueError(f"rule {rule_id!r} registered twice")
        _RULES[rule_id] = Rule(rule_id, fn)
        return fn

    return register


def registered_rules() -> list[Rule]:
    """All rules, in id order (imports the rule modules on first use)."""
    _load_rule_modules()
    return [_RULES[k] for k in sorted(_RULES)]


class Analysis(msgspec.Struct, kw_only=True):
    """Result of running every rule over one record: findings ranked most valuable first
    (:func:`~torchdiag.analyze.finding.rank_findings`), skipped rules by id. Both orders are
    set on construction, so every reader takes them as they are."""

    findings: list[Finding]
    skipped: list[Skipped]

    def __post_init__(self) -> None:
        self.findings = rank_findings(self.findings)
        self.skipped = sorted(self.skipped, key=lambda s: s.id)

    def to_json_dict(self) -> dict[str, Any]:
        """The ``torchdiag.findings/1`` document (see the CLI's ``--format json``)."""
        return {
            "schema": FINDINGS_SCHEMA,
            "findings": msgspec.to_builtins(self.findings),
            "skipped": msgspec.to_builtins(self.skipped),
        }


def analyze(view: RunView) -> Analysis:
    """Run every registered rule over ``view``; findings ranked by possible saving.

    Rules are pure functions of the view. A rule that raises :class:`SkipRule` is listed as
    skipped with its reason.
    """
    findings: list[Finding] = []
    skipped: list[Skipped] = []
    for r in registered_rules():
        try:
            out = r.fn(view)
        except SkipRule as why:
            skipped.append(Skipped(id=r.id, reason=str(why)))
            continue
        if out is None:
            continue
        for f in out if isinstance(out, list) else [out]:
            if not f.docs:
                f.docs = f"{DOCS_BASE}#{f.id}"
            findings.append(f)
    return Analysis(findings=findings, skipped=skipped)


def _load_rule_modules() -> None:
    # Importing a family module registers its rules; listed here so there is one place to look.
    from torchdiag.analyze import (  # noqa: F401
        communication,
        compute,
        host,
        inference,
        input_pipeline,
        memory,
        out_of_memory,
        parallelism,
        stability,
        straggler,
        sync,
    )
