"""Exact counters in ``torchdiag diff`` and the ``--fail-on`` gate on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from diffdata import NO_FINDINGS, live_record, noisy_steps
from markdown_checks import md_cells_consistent
from viewing import render_diff

from torchdiag.diff import diff_run_sets, diff_runs
from torchdiag.diff.counters import parse_counter_rules
from torchdiag.record import (
    CopyStat,
    Environment,
    MemoryTimeline,
    RunRecord,
    TraceStep,
    TraceSummary,
    save_record,
)
from torchdiag.view.counters import COUNTER_NAMES
from torchdiag.view.run_view import RunView

JSON_NAMES = [
    "kernels_per_step",
    "cpu_ops_per_step",
    "syncs_per_step",
    "h2d_bytes_per_step",
    "d2h_bytes_per_step",
    "allocator_peak_bytes",
    "graph_breaks",
    "recompiles",
]


def summary(syncs: int, *, kernels: int = 120, steps: int = 6) -> TraceSummary:
    """A profiled GPU window of ``steps`` steps, each with ``syncs`` syncs and ``kernels``
    launches; the first step does one-off work (more of everything) that the medians ignore."""
    return TraceSummary(
        has_gpu=True,
        steps=[
            TraceStep(
                number=i,
                start_us=10_000.0 * i,
                duration_ms=10.0,
                launches=kernels + (50 if i == 0 else 0),
                kernels=kernels,
                ops=300 + (40 if i == 0 else 0),
                syncs=syncs + (2 if i == 0 else 0),
            )
            for i in range(steps)
        ],
        copies=[
            CopyStat(name="Memcpy HtoD (Pinned -> Device)", direction="HtoD", bytes=6 * 4096),
            CopyStat(name="Memcpy DtoH (Device -> Pageable)", direction="DtoH", bytes=6 * 4),
        ],
        memory=[MemoryTimeline(peak_allocated_bytes=1_234_567_890, peak_reserved_bytes=2**31)],
    )


def record(syncs: int, seed: int, **kw: int) -> RunRecord:
    return live_record(noisy_steps(60, 100.0, seed=seed), summary=summary(syncs, **kw))


def quick(base: RunRecord, head: RunRecord, rules: str = "") -> object:
    return diff_runs(
        RunView(base),
        RunView(head),
        base_analysis=NO_FINDINGS,
        head_analysis=NO_FINDINGS,
        fail_on=parse_counter_rules([rules] if rules else []),
    )


def test_the_counters_of_a_view() -> None:
    counters = RunView(record(2, seed=1)).counters
    assert tuple(counters) == COUNTER_NAMES
    assert counters["kernels_per_step"] == 120  # the median: step 0's extra 50 left out
    assert counters["cpu_ops_per_step"] == 300
    assert counters["syncs_per_step"] == 2
    assert counters["h2d_bytes_per_step"] == 4096 and counters["d2h_bytes_per_step"] == 4
    assert counters["allocator_peak_bytes"] == 1_234_567_890
    # A live record without torch.compile: no graph breaks; a trace cannot tell them.
    assert counters["graph_breaks"] is None and counters["recompiles"] is None
    compiled = record(2, seed=1)
    compiled.environment = Environment(
        compile_used=True, dynamo_counters={"graph_break": {"a": 2, "b": 1}, "recompiles": {"x": 4}}
    )
    assert RunView(compiled).counters["graph_breaks"] == 3
    assert RunView(compiled).counters["recompiles"] == 4
    assert set(RunView(live_record([100.0] * 5)).counters.values()) == {None}


def test_one_more_sync_per_step_is_flagged_whatever_the_timing() -> None:
    # Same step-time distribution (no time regression), one more sync in every step.
    d = quick(record(2, seed=1), record(3, seed=2), "syncs_per_step")
    assert not d.regression and d.failed  # type: ignore[attr-defined]
    doc = json.loads(render_diff(d, "json"))  # type: ignore[arg-type]
    rows = {c["name"]: c for c in doc["counters"]}
    assert rows["syncs_per_step"] == {
        "name": "syncs_per_step",
        "base": 2.0,
        "head": 3.0,
        "change": 1.0,
    }
    assert doc["failed"] is True and doc["counter_gates"][0]["failed"] is True
    txt = render_diff(d, "text")  # type: ignore[arg-type]
    assert "fails --fail-on syncs_per_step" in txt.splitlines()[1]
    assert "Host-device syncs per step     2              3              +1" in txt
    md = render_diff(d, "md")  # type: ignore[arg-type]
    assert "| Host-device syncs per step | 2 | 3 | +1 |" in md and md_cells_consistent(md)
    assert md.count("🔴") == 1


def test_identical_runs_show_zero_change_and_pass() -> None:
    rules = ",".join(JSON_NAMES)
    d = quick(record(2, seed=1), record(2, seed=1), rules)
    doc = json.loads(render_diff(d, "json"))  # type: ignore[arg-type]
    assert [c["name"] for c in doc["counters"]] == JSON_NAMES
    for c in doc["counters"]:
        assert set(c) == {"name", "base", "head", "change"}
        assert c["change"] == (None if c["base"] is None else 0)
    assert doc["failed"] is False and not any(g["failed"] for g in doc["counter_gates"])
    # Unknown counters (no torch.compile figures in either record) are not judged.
    assert "not judged" in doc["counter_gates"][-1]["reason"]


def test_threshold_forms() -> None:
    base, head = record(2, seed=1, kernels=100), record(2, seed=2, kernels=105)
    assert not quick(base, head, "kernels_per_step>5%").failed  # type: ignore[attr-defined]
    assert quick(base, head, "kernels_per_step>4%").failed  # type: ignore[attr-defined]
    assert not quick(base, head, "kernels_per_step>5").failed  # type: ignore[attr-defined]
    assert quick(base, head, "kernels_per_step>4.5").failed  # type: ignore[attr-defined]
    # Fewer kernels never fails.
    assert not quick(head, base, "kernels_per_step").failed  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", ["sync_per_step", "syncs_per_step>", "syncs_per_step>x%", ","])
def test_bad_rules_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="--fail-on"):
        parse_counter_rules([bad])


def test_several_runs_a_side_use_the_median_run_and_name_disagreement() -> None:
    bases = [RunView(record(2, seed=s)) for s in (1, 2, 3)]
    heads = [RunView(record(3, seed=s)) for s in (4, 5)] + [RunView(record(4, seed=6))]
    d = diff_run_sets(
        bases,
        heads,
        base_analysis=NO_FINDINGS,
        head_analysis=NO_FINDINGS,
        fail_on=parse_counter_rules(["syncs_per_step"]),
    )
    syncs = next(c for c in d.counters if c.name == "syncs_per_step")
    assert syncs.base == 2 and syncs.head in (3, 4) and d.failed
    assert any("HEAD's runs differ in syncs_per_step" in n for n in d.notes)
    assert not any("BASE's runs differ" in n for n in d.notes)


def _save(tmp_path: Path, name: str, rec: RunRecord) -> str:
    return str(save_record(rec, tmp_path / f"{name}.json"))


def test_cli_fail_on(tmp_path: Path, run_cli) -> None:
    base = _save(tmp_path, "base", record(2, seed=1))
    head = _save(tmp_path, "head", record(3, seed=2))
    assert run_cli("diff", base, head)[0] == 0  # no time regression, no gate asked for
    code, out, _ = run_cli("diff", base, head, "--fail-on", "syncs_per_step", "--format", "json")
    assert code == 1 and json.loads(out)["failed"] is True
    code, _, _ = run_cli("diff", base, head, "--fail-on", "kernels_per_step", "--fail-on", "x>1%")
    assert code == 2
    code, out, err = run_cli("diff", base, head, "--fail-on", "syncs_per_stp")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "unknown counter 'syncs_per_stp'" in err
    assert run_cli("diff", base, base, "--fail-on", "syncs_per_step,kernels_per_step")[0] == 0


def test_real_traces_that_differ_in_syncs(run_cli) -> None:
    h200 = Path(__file__).parent / "data" / "h200"
    amp = str(h200 / "transformer_amp.pt.trace.json.gz")
    sync = str(h200 / "transformer_sync_each_step.pt.trace.json.gz")
    code, out, err = run_cli(
        "diff", amp, sync, "--format", "json", "--no-progress", "--fail-on", "syncs_per_step"
    )
    assert code == 1, err
    rows = {c["name"]: c for c in json.loads(out)["counters"]}
    assert rows["syncs_per_step"]["change"] > 0
    code, out, err = run_cli(
        "diff", amp, amp, "--format", "json", "--no-progress", "--fail-on", ",".join(JSON_NAMES)
    )
    assert code == 0, err
    assert all(c["change"] in (0, None) for c in json.loads(out)["counters"])
