"""The registry of fixes (``FIX_KINDS``): every kind consistent with its class, ``--fix auto``'s
choice read from it, and the docs that list fixes kept equal to it."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import torch

from torchdiag.analyze.finding import Finding, Severity
from torchdiag.analyze.registry import Analysis, registered_rules
from torchdiag.capture.fixes import (
    FIX_KINDS,
    FIX_NAMES,
    Always,
    FixKind,
    FromEvidence,
    kind_of,
    kinds_answering,
    parse_fix,
)
from torchdiag.capture.fixes.loader import Workers
from torchdiag.capture.fixes.registry import default_workers
from torchdiag.trials.auto import auto_fixes

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 100  # the README's line width


def _examples(kind: FixKind) -> list[str]:
    """Spellings of ``kind`` with real values: each word of ``bf16|fp16``; capital letters (whole
    numbers, per FixKind.value) as 3."""
    if kind.value is None:
        return [kind.name]
    return [f"{kind.name}={re.sub('[A-Z]', '3', word)}" for word in kind.value.split("|")]


@pytest.mark.parametrize("kind", FIX_KINDS, ids=lambda k: k.name)
def test_each_kind_builds_the_fix_it_spells(kind: FixKind) -> None:
    for spec in _examples(kind):
        fix = parse_fix(spec)
        assert isinstance(fix, kind.fix_class) and fix.spec == spec
        assert kind_of(spec) is kind
    assert kind.spelling in FIX_NAMES.split(", ")


def test_names_are_unique_and_listed_in_registry_order() -> None:
    names = [kind.name for kind in FIX_KINDS]
    assert len(set(names)) == len(names)
    assert [s.partition("=")[0] for s in FIX_NAMES.split(", ")] == names
    assert kind_of("no-such-fix") is None


def test_only_the_batch_fix_is_compared_per_sample() -> None:
    factors = {spec: parse_fix(spec).batch_factor for k in FIX_KINDS for spec in _examples(k)}
    assert {spec: f for spec, f in factors.items() if f != 1} == {"batch=x3": 3}


def test_the_findings_a_fix_answers_are_rules() -> None:
    rules = {r.id for r in registered_rules()}
    for kind in FIX_KINDS:
        assert set(kind.answers) <= rules, kind.name


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens without a GPU")
@pytest.mark.parametrize("kind", [k for k in FIX_KINDS if k.needs_gpu], ids=lambda k: k.name)
def test_a_fix_that_needs_a_gpu_is_not_applicable_without_one(kind: FixKind) -> None:
    for spec in _examples(kind):
        fix = parse_fix(spec)
        fix.install()
        fix.uninstall()
        outcome = fix.outcome()
        assert not outcome.applied and "no CUDA device" in outcome.detail


def test_a_kind_that_cannot_be_chosen_fails_at_definition() -> None:
    with pytest.raises(ValueError, match="takes no value"):
        FixKind("x", Workers, "", auto_value=Always("1"))
    with pytest.raises(ValueError, match="no value"):
        FixKind("x", Workers, "", value="N", answers=("dataloader-workers",))


# -- --fix auto -------------------------------------------------------------------------------


def _finding(
    rule: str, severity: Severity = "warning", saving: float = 0.0, **numbers: int
) -> Finding:
    evidence: dict[str, float | int | str | bool | None] = dict(numbers)
    return Finding(
        id=rule,
        severity=severity,
        title=rule,
        evidence=evidence,
        recommendation="",
        saving_pct_max=saving,
    )


def test_auto_tries_each_findings_fixes_once_in_order_with_suggested_values() -> None:
    # An analysis holds its findings most valuable first (by possible saving).
    findings = [
        _finding("dataloader-stall", saving=40.0),
        _finding("small-batch", "critical", saving=30.0, batch_factor=4),
        _finding("dataloader-workers", saving=20.0, suggested_num_workers=3),
        _finding("cpu-bound", saving=10.0),
        _finding("launch-overhead", saving=8.0),
        _finding("no-amp", "info", saving=50.0),  # below warning: not tried
    ]
    fixes = auto_fixes(Analysis(findings=findings, skipped=[]))
    assert fixes == ["input-ceiling", "workers=3", "batch=x4", "compile"]


def test_auto_values_default_without_a_suggestion() -> None:
    findings = [
        _finding("small-batch", saving=30.0),
        _finding("dataloader-workers", saving=20.0),
        _finding("no-amp", saving=10.0),
    ]
    fixes = auto_fixes(Analysis(findings=findings, skipped=[]))
    assert fixes == ["batch=x2", f"workers={default_workers()}", "amp=bf16"]
    assert FromEvidence("k", default=2).choose([{"k": True}, {"k": 0}, {"k": 5}]) == "5"


# -- the docs that list fixes -----------------------------------------------------------------


def test_each_rule_says_which_fix_try_measures() -> None:
    """docs/rules.md: a rule's "Measured by" line names exactly the fixes that answer it."""
    docs = (ROOT / "docs" / "rules.md").read_text()
    for rule in sorted({r.id for r in registered_rules()}):
        section = docs[docs.index(f"### {rule}\n") :].split("\n### ")[0]
        lines = [x for x in section.splitlines() if x.startswith("- **Measured by")]
        kinds = kinds_answering(rule)
        expected = ", ".join(f"`--fix {kind.auto_spelling}`" for kind in kinds)
        expected_lines = [f"- **Measured by `torchdiag try`:** {expected}."] if kinds else []
        assert lines == expected_lines, rule


def _readme_fix_list() -> list[str]:
    """The README's list of fixes, an item a line (wrapped items joined back)."""
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("\nFixes (`--fix`") :].split("\n\n")[1]
    return [" ".join(item.split()) for item in block.split("\n- ")]


def _wanted_readme_item(kind: FixKind) -> str:
    text = f"- `{kind.spelling}`: {kind.summary}"
    if kind.loss_note:
        text += f"; loss {kind.loss_note}"
    if kind.needs_gpu:
        text += "; needs a GPU"
    return text


def test_the_readme_lists_the_registry() -> None:
    wanted = [_wanted_readme_item(kind) for kind in FIX_KINDS]
    block = "\n".join(textwrap.fill(w, WIDTH, subsequent_indent="  ") for w in wanted)
    found = [item if item.startswith("- ") else f"- {item}" for item in _readme_fix_list()]
    assert found == [" ".join(w.split()) for w in wanted], f"the README's list should be:\n{block}"
