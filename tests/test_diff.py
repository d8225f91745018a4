"""``torchdiag diff``: the noise-aware comparison, its renderings and its exit status."""

from __future__ import annotations

import json
import random
import re
import statistics
from pathlib import Path

import pytest
from diffdata import NO_FINDINGS, live_record, noisy_steps
from markdown_checks import md_cells_consistent
from tracedata import H200, h200_truth
from viewing import render_diff

from torchdiag.analyze.finding import Finding
from torchdiag.analyze.registry import Analysis
from torchdiag.diff import FASTER, NO_CHANGE, SLOWER, diff_runs
from torchdiag.record import (
    BreakdownMs,
    KernelStat,
    OpStat,
    RunRecord,
    TraceStep,
    TraceSummary,
    save_record,
)
from torchdiag.view.run_view import RunView
from torchdiag.view.step_sample import bootstrap_medians, sample_median

TRACES = H200


def quick_diff(base: RunRecord, head: RunRecord, **kw):
    # The rules are not what these tests are about; an empty analysis keeps them fast.
    kw.setdefault("base_analysis", NO_FINDINGS)
    kw.setdefault("head_analysis", NO_FINDINGS)
    return diff_runs(RunView(base), RunView(head), **kw)


# ---------------------------------------------------------------------------------------------
# Statistics


def test_real_slowdown_is_slower_and_a_regression() -> None:
    base = live_record(noisy_steps(200, 100.0, seed=1))
    head = live_record(noisy_steps(200, 120.0, seed=2))
    d = quick_diff(base, head)
    assert d.verdict == SLOWER and d.regression
    assert d.interval.low is not None and d.interval.high is not None
    assert 1.05 < d.interval.low < 1.2 < d.interval.high < 1.3
    assert d.median_change_pct == pytest.approx(20, abs=3)
    assert d.throughput_change_pct == pytest.approx(100 / 1.2 - 100, abs=3)


def test_same_distribution_is_no_significant_change() -> None:
    base = live_record(noisy_steps(200, 100.0, seed=3))
    head = live_record(noisy_steps(200, 100.0, seed=4))
    d = quick_diff(base, head)
    assert d.verdict == NO_CHANGE and not d.regression
    assert d.interval.low < 1.0 < d.interval.high  # type: ignore[operator]


def test_large_spread_with_equal_medians_is_no_change() -> None:
    # ±40% noise around the same median: the means or two single steps could differ by a lot.
    base = live_record(noisy_steps(60, 100.0, seed=5, spread=0.4))
    head = live_record(noisy_steps(60, 100.0, seed=6, spread=0.4))
    d = quick_diff(base, head, threshold_pct=0.0)
    assert d.verdict == NO_CHANGE and not d.regression
    assert d.interval.high - d.interval.low > 0.15  # type: ignore[operator]


def test_faster() -> None:
    d = quick_diff(
        live_record(noisy_steps(100, 100.0, seed=7)), live_record(noisy_steps(100, 80.0, seed=8))
    )
    assert d.verdict == FASTER and not d.regression


def test_threshold_boundary() -> None:
    # No noise: the interval is the point 1.05 exactly; "beyond the threshold" is strict.
    base = live_record([100.0] * 30)
    head = live_record([105.0] * 30)
    assert quick_diff(base, head).interval.low == pytest.approx(1.05)
    assert not quick_diff(base, head, threshold_pct=5.0).regression
    assert quick_diff(base, head, threshold_pct=4.9).regression
    assert quick_diff(base, head, threshold_pct=4.9).verdict == SLOWER
    assert quick_diff(base, head, threshold_pct=5.0).verdict == SLOWER  # slower, but within


def test_real_but_unconfirmed_slowdown_passes() -> None:
    # HEAD's median is ~8% higher, but 12 very noisy steps cannot show it beyond 5%.
    base = live_record(noisy_steps(12, 100.0, seed=9, spread=0.3))
    head = live_record(noisy_steps(12, 108.0, seed=10, spread=0.3))
    d = quick_diff(base, head)
    assert not d.regression
    assert d.interval.low < 1.05  # type: ignore[operator]


def test_against_itself() -> None:
    rec = live_record(noisy_steps(50, 100.0, seed=11))
    d = quick_diff(rec, rec)
    assert d.verdict == NO_CHANGE and not d.regression
    assert d.interval.ratio == 1.0 and d.median_change_pct == 0.0
    assert d.findings.new == [] and d.findings.resolved == []


def test_steady_steps_skip_first_and_profiled() -> None:
    walls = [900.0] + [100.0] * 10 + [300.0] * 5 + [100.0] * 10
    rec = live_record(walls, profiled=set(range(11, 16)))
    sample = RunView(rec).sample
    assert sample.n == 20 and sample.values == (100.0,)
    assert sample.excluded == "first step and profiled steps excluded"


def test_merged_rows_are_expanded_by_their_step_count() -> None:
    # Rows 2 and 3 stand for 10 steps each: the median is theirs, not the middle row's.
    rec = live_record([500.0, 90.0, 110.0, 200.0], counts=[1, 10, 10, 1])
    sample = RunView(rec).sample
    assert sample.n == 21  # first row (step 0) left out
    assert sample_median(sample) == 110.0
    assert statistics.median([90.0] * 10 + [110.0] * 10 + [200.0]) == 110.0


@pytest.mark.parametrize("n", [7, 8])
def test_order_statistic_bootstrap_matches_brute_force(n: int) -> None:
    """The Beta-order-statistic draw has the distribution of a naive resample-and-sort one."""
    values = noisy_steps(n, 100.0, seed=12, spread=0.2)
    sample = RunView(live_record([1.0, *values])).sample
    fast = sorted(bootstrap_medians(sample, 20_000, random.Random(1)))
    rng = random.Random(2)
    slow = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(20_000))
    for q in (0.025, 0.25, 0.5, 0.75, 0.975):
        i = int(q * (len(fast) - 1))
        assert fast[i] == pytest.approx(slow[i], rel=0.01), q


def test_too_few_steps_gives_no_interval() -> None:
    d = quick_diff(live_record([1.0, 100.0]), live_record([1.0, 300.0]))
    assert d.interval.low is None and d.verdict == NO_CHANGE and not d.regression
    assert any("too few" in n for n in d.notes)


def test_deterministic() -> None:
    base = live_record(noisy_steps(80, 100.0, seed=13))
    head = live_record(noisy_steps(80, 103.0, seed=14))
    assert render_diff(quick_diff(base, head), "json") == render_diff(
        quick_diff(base, head), "json"
    )


# ---------------------------------------------------------------------------------------------
# Breakdown, findings, ops and kernels


def summary(compute: float, op_ms: dict[str, float], kernel_ms: dict[str, float]) -> TraceSummary:
    steps = [
        TraceStep(
            number=i,
            start_us=0.0,
            duration_ms=compute + 5,
            breakdown=BreakdownMs(wall=compute + 5, compute=compute, host_runtime=5.0),
        )
        for i in range(1, 5)
    ]
    return TraceSummary(
        steps=steps,
        top_ops=[OpStat(name=k, total_ms=v * 4) for k, v in op_ms.items()],
        top_kernels=[KernelStat(name=k, total_ms=v * 4) for k, v in kernel_ms.items()],
    )


def finding(fid: str, severity: str = "warning") -> Finding:
    return Finding(id=fid, severity=severity, title=f"{fid} title", evidence={}, recommendation="")  # type: ignore[arg-type]


def test_breakdown_findings_and_name_deltas() -> None:
    evil = "aten::evil|`x`<b>"
    base = live_record(
        noisy_steps(40, 50.0, seed=15),
        summary=summary(40.0, {"aten::mm": 10.0, "aten::gone": 3.0}, {"gemm": 20.0}),
    )
    head = live_record(
        noisy_steps(40, 60.0, seed=16),
        summary=summary(50.0, {"aten::mm": 12.0, evil: 7.0}, {"gemm": 29.0}),
    )
    d = diff_runs(
        RunView(base),
        RunView(head),
        base_analysis=Analysis(findings=[finding("a"), finding("b", "info")], skipped=[]),
        head_analysis=Analysis(findings=[finding("b", "critical"), finding("c")], skipped=[]),
    )
    parts = {p.part: p for p in d.breakdown or []}
    assert parts["compute"].base_ms == 40.0 and parts["compute"].delta_ms == 10.0
    assert parts["host_runtime"].delta_ms == 0.0 and "memcpy" not in parts
    assert [f.id for f in d.findings.new] == ["c"]
    assert [f.id for f in d.findings.resolved] == ["a"]
    (kept,) = d.findings.persisting
    assert (kept.id, kept.base_severity, kept.severity) == ("b", "info", "critical")
    assert [(o.name, o.delta_ms) for o in d.top_ops] == [
        (evil, 7.0),
        ("aten::gone", -3.0),
        ("aten::mm", 2.0),
    ]
    assert [(k.name, k.delta_ms) for k in d.top_kernels] == [("gemm", 9.0)]

    md = render_diff(d, "md")
    assert "| `aten::evil\\|`x`<b>` |" not in md  # the raw name would break the table
    assert md_cells_consistent(md)
    assert "critical" in md and "info → critical" in md
    assert "### Step breakdown" in md and "| compute | 40 | 50 | +10 |" in md
    text = render_diff(d, "text")
    assert "resolved" in text and "aten::gone" in text and "+10" in text


# ---------------------------------------------------------------------------------------------
# Formats and the command line


def test_formats() -> None:
    base = live_record(noisy_steps(50, 100.0, seed=17), name="base-run")
    head = live_record(noisy_steps(50, 125.0, seed=18), name="head-run")
    d = quick_diff(base, head)
    doc = json.loads(render_diff(d, "json"))
    assert doc["schema"] == "torchdiag.diff/1"
    assert doc["verdict"] == "slower" and doc["regression"] is True
    assert set(doc) >= {"base", "head", "interval", "breakdown", "findings", "top_ops"}
    # Throughput is the report's figure (batch over the steady mean step), not a second one.
    assert doc["base"]["samples_per_s"] == pytest.approx(RunView(base).headline["samples_per_s"])
    text = render_diff(d, "json")
    assert text == json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"

    md = render_diff(d, "md")
    assert md.startswith("## torchdiag diff: base-run → head-run\n")
    assert "**HEAD is slower: median step +" in md and "95% CI \\[" in md
    assert "| Median step |" in md and "| Throughput (samples/s) |" in md
    assert md_cells_consistent(md) and len(md) < 10_000

    txt = render_diff(d, "text")
    assert txt.splitlines()[1].startswith("HEAD is slower: median step +")
    assert "Threshold 5%: fails" in txt
    with pytest.raises(KeyError, match="unknown format 'pdf'"):
        render_diff(d, "pdf")


def _save(tmp_path: Path, name: str, rec: RunRecord) -> str:
    return str(save_record(rec, tmp_path / f"{name}.json"))


def test_cli_exit_codes(tmp_path: Path, run_cli) -> None:
    base = _save(tmp_path, "base", live_record(noisy_steps(200, 100.0, seed=1)))
    slow = _save(tmp_path, "slow", live_record(noisy_steps(200, 120.0, seed=2)))
    same = _save(tmp_path, "same", live_record(noisy_steps(200, 100.0, seed=4)))
    code, out, err = run_cli("diff", base, slow)
    assert code == 1 and err == "" and "HEAD is slower" in out
    code, out, _ = run_cli("diff", base, same)
    assert code == 0 and "no significant change" in out
    assert run_cli("diff", base, slow, "--threshold", "50")[0] == 0
    assert run_cli("diff", base, base)[0] == 0
    target = tmp_path / "out" / "diff.md"
    code, out, _ = run_cli("diff", base, slow, "--format", "md", "-o", str(target))
    assert code == 1 and out == "" and target.read_text().startswith("## torchdiag diff")
    code, out, _ = run_cli("diff", base, slow, "--format", "json")
    assert code == 1 and json.loads(out)["schema"] == "torchdiag.diff/1"


@pytest.mark.parametrize(
    "argv",
    [
        ["diff"],
        ["diff", "only-one.json"],
        ["diff", "{base}", "{base}", "--threshold", "-1"],
        ["diff", "{base}", "{base}", "--threshold", "lots"],
        ["diff", "{base}", "{base}", "--format", "html"],
        ["diff", "{base}", "{missing}"],
        ["diff", "{bad}", "{base}"],
    ],
)
def test_cli_bad_input_is_one_line_and_status_2(tmp_path: Path, run_cli, argv) -> None:
    paths = {
        "base": _save(tmp_path, "base", live_record(noisy_steps(20, 100.0, seed=1))),
        "missing": str(tmp_path / "nope.json"),
        "bad": str(tmp_path / "bad.json"),
    }
    (tmp_path / "bad.json").write_text('{"schema": "torchdiag.run/1", "steps": {"count": "x"}}')
    code, out, err = run_cli(*(a.format(**paths) for a in argv))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("torchdiag: error: ")
    assert "Traceback" not in err


def test_cli_on_real_traces_fp32_is_slower(run_cli) -> None:
    amp = str(TRACES / "transformer_amp.pt.trace.json.gz")
    fp32 = str(TRACES / "transformer_fp32.pt.trace.json.gz")
    code, out, err = run_cli("diff", amp, fp32, "--format", "json", "--no-progress")
    assert code == 1, err
    doc = json.loads(out)
    assert doc["verdict"] == "slower" and doc["regression"] is True
    assert doc["interval"]["low"] > 1.05
    assert {f["id"] for f in doc["findings"]["new"]} >= {"no-amp"}
    compute = next(p for p in doc["breakdown"] if p["part"] == "compute")
    assert compute["delta_ms"] > 0
    # The reverse direction is faster, and passes.
    code, out, _ = run_cli("diff", fp32, amp, "--no-progress")
    assert code == 0 and re.search(r"HEAD is faster", out)


@pytest.mark.parametrize(
    ("base", "head"),
    [("healthy_resnet_amp", "resnet_fp32"), ("transformer_amp", "transformer_fp32")],
)
def test_traces_compare_on_calibrated_estimates(run_cli, base, head) -> None:
    """A profiled trace is compared on its un-profiled step estimate: both fp32 runs are caught
    as slowdowns, with a ratio that holds the real one (un-profiled steps, summary.json)."""
    truth = h200_truth()
    real = truth[head]["step_ms_noprof"] / truth[base]["step_ms_noprof"]
    code, out, err = run_cli(
        "diff",
        str(TRACES / f"{base}.pt.trace.json.gz"),
        str(TRACES / f"{head}.pt.trace.json.gz"),
        "--format",
        "json",
        "--no-progress",
    )
    assert code == 1, err
    doc = json.loads(out)
    assert doc["regression"] is True and doc["interval"]["resamples"] == 0
    assert doc["base"]["estimated"] and doc["head"]["estimated"] and doc["head"]["steps"] == 4
    assert doc["interval"]["ratio"] == pytest.approx(real, rel=0.10)
    assert any("4 profiled steps" in n for n in doc["notes"])


@pytest.mark.parametrize("name", ["resnet_fp32", "transformer_amp", "dataloader_stall_w0"])
def test_trace_against_itself_is_no_change(run_cli, name) -> None:
    path = str(TRACES / f"{name}.pt.trace.json.gz")
    code, out, err = run_cli("diff", path, path, "--format", "json", "--no-progress")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["verdict"] == "no significant change" and doc["interval"]["ratio"] == 1.0
