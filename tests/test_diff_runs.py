"""``torchdiag diff`` over several runs a side: the t-interval over runs, its command line and
its renderings."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from diffdata import NO_FINDINGS, live_record, noisy_steps
from markdown_checks import md_cells_consistent
from viewing import render_diff

from torchdiag.diff import FASTER, NO_CHANGE, ONE_RUN_NOTE, SLOWER, diff_run_sets, diff_runs
from torchdiag.record import RunRecord, save_record
from torchdiag.view.run_view import RunView
from torchdiag.view.student_t import run_ratio_interval, t_cdf, t_quantile


def runs(
    medians: list[float], seed: int, *, steps: int = 60, spread: float = 0.05
) -> list[RunRecord]:
    """One live record per median: steady steps around it (``spread`` jitter, rare stalls)."""
    return [
        live_record([1.0, *noisy_steps(steps, m, seed=seed + i, spread=spread)], name="train.py")
        for i, m in enumerate(medians)
    ]


def run_medians(n: int, centre: float, seed: int, *, spread: float = 0.06) -> list[float]:
    """Per-run step times of the same code on a noisy machine: log-normal between runs."""
    rng = random.Random(seed)
    return [centre * rng.lognormvariate(0.0, spread) for _ in range(n)]


def quick(bases: list[RunRecord], heads: list[RunRecord], **kw):
    # The rules are not what these tests are about; an empty analysis keeps them fast.
    return diff_run_sets(
        [RunView(r) for r in bases],
        [RunView(r) for r in heads],
        base_analysis=NO_FINDINGS,
        head_analysis=NO_FINDINGS,
        **kw,
    )


# ---------------------------------------------------------------------------------------------
# Student's t


@pytest.mark.parametrize(
    ("df", "t975"),
    [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (10, 2.228), (30, 2.042)],
)
def test_t_quantile_matches_the_printed_tables(df: float, t975: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(t975, abs=5e-4)
    assert t_quantile(0.025, df) == pytest.approx(-t975, abs=5e-4)


def test_t_quantile_for_fractional_df_agrees_with_integrating_the_density() -> None:
    """Welch's degrees of freedom are fractional: check the CDF by another method, Simpson's
    rule on the density, at the quantile the bisection found."""
    for df in (2.3, 3.7, 5.5):
        q = t_quantile(0.975, df)
        norm = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
        n = 20_000
        h = q / n
        weights = [1 if i in (0, n) else 4 if i % 2 else 2 for i in range(n + 1)]
        area = sum(w * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i, w in enumerate(weights))
        assert 0.5 + norm * area * h / 3 == pytest.approx(0.975, abs=1e-7)
    assert t_cdf(0.0, 3.0) == 0.5
    assert t_quantile(0.975, 1e7) == pytest.approx(1.95996, abs=1e-4)


def test_run_interval_is_pooled_on_logs_with_as_many_runs_a_side() -> None:
    base, head = [100.0, 104.0, 97.0], [118.0, 112.0, 121.0]
    iv = run_ratio_interval(base, head, 0.95)
    assert iv is not None and iv.variance == "pooled"
    lb, lh = [math.log(v) for v in base], [math.log(v) for v in head]
    mb, mh = sum(lb) / 3, sum(lh) / 3
    vb = sum((v - mb) ** 2 for v in lb) / 2 / 3
    vh = sum((v - mh) ** 2 for v in lh) / 2 / 3
    df = 4.0  # 3 + 3 - 2; with equal counts the standard error is Welch's
    half = t_quantile(0.975, df) * math.sqrt(vb + vh)
    assert iv.df == pytest.approx(df)
    assert iv.ratio == pytest.approx(math.exp(mh - mb))
    assert (iv.low, iv.high) == pytest.approx((math.exp(mh - mb - half), math.exp(mh - mb + half)))


def test_run_interval_is_welch_on_logs_with_unequal_counts() -> None:
    base, head = [100.0, 104.0, 97.0, 101.0], [118.0, 112.0, 121.0]
    iv = run_ratio_interval(base, head, 0.95)
    assert iv is not None and iv.variance == "welch"
    lb, lh = [math.log(v) for v in base], [math.log(v) for v in head]
    mb, mh = sum(lb) / 4, sum(lh) / 3
    vb = sum((v - mb) ** 2 for v in lb) / 3 / 4
    vh = sum((v - mh) ** 2 for v in lh) / 2 / 3
    df = (vb + vh) ** 2 / (vb**2 / 3 + vh**2 / 2)
    half = t_quantile(0.975, df) * math.sqrt(vb + vh)
    assert iv.df == pytest.approx(df)
    assert (iv.low, iv.high) == pytest.approx((math.exp(mh - mb - half), math.exp(mh - mb + half)))


def test_run_interval_needs_a_spread_somewhere() -> None:
    assert run_ratio_interval([100.0], [110.0], 0.95) is None
    assert run_ratio_interval([100.0, 0.0], [110.0], 0.95) is None
    one_sided = run_ratio_interval([100.0], [110.0, 112.0, 108.0], 0.95)
    assert one_sided is not None and one_sided.variance == "one-sided-spread"
    assert one_sided.df == 2.0


# ---------------------------------------------------------------------------------------------
# The comparison over runs


def test_identical_runs_are_no_change() -> None:
    d = quick(runs(run_medians(3, 100.0, seed=1), 10), runs(run_medians(3, 100.0, seed=2), 20))
    assert d.between_runs and d.verdict == NO_CHANGE and not d.regression
    assert d.interval.low < 1.0 < d.interval.high  # type: ignore[operator]
    assert d.interval.df == 4.0 and "pooled" in d.interval.method


def test_planted_slowdown_across_runs_is_a_regression() -> None:
    d = quick(runs(run_medians(3, 100.0, seed=3), 30), runs(run_medians(3, 150.0, seed=4), 40))
    assert d.verdict == SLOWER and d.regression
    assert d.interval.low > 1.05  # type: ignore[operator]


def test_over_runs_a_confident_slowdown_beyond_the_threshold_fails() -> None:
    """Over runs the interval decides whether HEAD is slower and its centre by how much: an 8%
    slowdown whose interval reaches down to 1.02 fails a 5% gate; a 3% one that is just as sure
    does not, nor does a 10% ratio whose interval still reaches below 1."""
    from torchdiag.diff import RatioInterval, is_regression

    def gate(ratio: float, low: float, high: float, *, between_runs: bool = True) -> bool:
        interval = RatioInterval(ratio=ratio, low=low, high=high)
        return is_regression(interval, 5.0, between_runs=between_runs)

    assert gate(1.08, 1.02, 1.14)
    assert not gate(1.03, 1.01, 1.05)
    assert not gate(1.10, 0.98, 1.23)
    assert not gate(1.05, 1.01, 1.09)  # on the threshold is not beyond it
    # One run a side the interval omits the noise between runs: the threshold is its margin.
    assert not gate(1.08, 1.02, 1.14, between_runs=False)
    assert gate(1.08, 1.06, 1.10, between_runs=False)
    assert not gate(1.08, None, None)  # type: ignore[arg-type]


def test_faster_across_runs() -> None:
    d = quick(runs(run_medians(3, 100.0, seed=5), 50), runs(run_medians(3, 60.0, seed=6), 60))
    assert d.verdict == FASTER and not d.regression


def test_between_run_variation_is_what_a_single_pair_misses() -> None:
    """Runs of the same code whose steps are tight but whose run medians differ by ~8%: the
    lowest BASE run against the highest HEAD run is a confident 'regression' step by step, and
    no change once every run counts."""
    base = runs([96.0, 100.0, 103.0], 70, spread=0.02)
    head = runs([97.0, 101.0, 104.0], 80, spread=0.02)
    single = diff_runs(
        RunView(base[0]), RunView(head[2]), base_analysis=NO_FINDINGS, head_analysis=NO_FINDINGS
    )
    assert single.regression and not single.between_runs and ONE_RUN_NOTE in single.notes
    over_runs = quick(base, head)
    assert not over_runs.regression and over_runs.verdict == NO_CHANGE


def test_each_run_counts_once_by_its_steady_median() -> None:
    base = runs([100.0, 110.0, 90.0], 90, steps=40)
    head = runs([100.0, 105.0], 100, steps=200)  # more steps must not weigh more
    d = quick(base, head, base_labels=["b1", "b2", "b3"], head_labels=["h1", "h2"])
    got = {r.label: r.step_ms for r in (*d.base.runs, *d.head.runs)}
    assert set(got) == {"b1", "b2", "b3", "h1", "h2"}
    geo = math.exp(sum(math.log(got[k]) for k in ("b1", "b2", "b3")) / 3)
    assert d.base.median_step_ms == pytest.approx(geo)
    # One quantity: the side figures, the change and the interval's centre agree.
    assert d.interval.ratio == pytest.approx(d.head.median_step_ms / d.base.median_step_ms)  # type: ignore[operator]
    assert d.median_change_pct == pytest.approx(100 * (d.interval.ratio - 1))  # type: ignore[operator]
    assert d.base.steps == sum(r.steps for r in d.base.runs)
    # Details come from each side's median run, and the output says which.
    assert any("median runs: BASE b1, HEAD h1" in n for n in d.notes)


def test_one_run_against_several_borrows_the_spread() -> None:
    d = quick(runs([100.0], 110), runs([130.0, 127.0, 133.0], 120))
    assert d.between_runs and d.interval.df == 2.0
    assert any("taken from the other side" in n for n in d.notes)


def test_one_run_per_side_says_between_run_variation_is_not_in_it() -> None:
    base, head = runs([100.0], 130), runs([101.0], 140)
    d = diff_runs(
        RunView(base[0]), RunView(head[0]), base_analysis=NO_FINDINGS, head_analysis=NO_FINDINGS
    )
    assert not d.between_runs and ONE_RUN_NOTE in d.notes
    for fmt in ("text", "md"):
        assert "between-run variation not accounted for" in render_diff(d, fmt)
    assert ONE_RUN_NOTE in json.loads(render_diff(d, "json"))["notes"]


def test_renderings_over_runs() -> None:
    base = runs(run_medians(3, 100.0, seed=7), 150)
    head = runs(run_medians(3, 140.0, seed=8), 160)
    d = quick(base, head, base_labels=["runs/base/run1.json", "b|2", "b3"], head_labels=list("xyz"))
    text = render_diff(d, "text")
    assert text.splitlines()[0] == "torchdiag diff: train.py (3 runs) -> train.py (3 runs)"
    assert "t-interval over runs" in text and "3 BASE vs 3 HEAD runs" in text
    assert "runs/base/run1.json" in text and "not accounted for" not in text
    md = render_diff(d, "md")
    assert "### Runs (each counted once, by its step time)" in md and md_cells_consistent(md)
    doc = json.loads(render_diff(d, "json"))
    assert doc["between_runs"] is True and doc["interval"]["df"] > 0
    assert [r["label"] for r in doc["head"]["runs"]] == ["x", "y", "z"]
    assert doc["regression"] is True and doc["verdict"] == "slower"


def _forward_calls(records: list[RunRecord]) -> list[RunRecord]:
    """The records as live inference loops whose steps are calls of the model."""
    for record in records:
        record.mode = "inference"
        record.steps.detection = "forward"
    return records


@pytest.mark.parametrize("several", [False, True], ids=["one-run", "runs"])
def test_inference_loops_are_compared_per_forward_call(several: bool) -> None:
    n = 3 if several else 1
    base, head = runs(run_medians(n, 10.0, seed=9), 170), runs(run_medians(n, 14.0, seed=10), 180)
    training = render_diff(quick(base, head), "text")
    inference = quick(_forward_calls(base), _forward_calls(head))
    text, md = render_diff(inference, "text"), render_diff(inference, "md")
    # A call's time is its latency: the diff says calls where the report does.
    unit = "forward call over runs" if several else "median forward call"
    assert f"HEAD is slower: {unit}" in text and f"{unit.capitalize()} (latency)" in text
    assert "step" not in text.split("Findings")[0]
    assert "forward call" in md and md_cells_consistent(md)
    assert json.loads(render_diff(inference, "json"))["head"]["step_is_forward_call"] is True
    # Training runs keep their steps.
    assert "forward call" not in training and "step" in training.splitlines()[1]


# ---------------------------------------------------------------------------------------------
# The command line


def _save_runs(folder: Path, medians: list[float], seed: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        str(save_record(rec, folder / f"run{i + 1}.json"))
        for i, rec in enumerate(runs(medians, seed))
    ]


def test_cli_several_runs_a_side(tmp_path: Path, run_cli) -> None:
    base = _save_runs(tmp_path / "base", run_medians(3, 100.0, seed=9), 170)
    same = _save_runs(tmp_path / "same", run_medians(3, 100.0, seed=10), 180)
    slow = _save_runs(tmp_path / "slow", run_medians(3, 300.0, seed=11), 190)
    code, out, err = run_cli("diff", "--base", *base, "--head", *same)
    assert code == 0 and err == "" and "no significant change" in out
    code, out, err = run_cli("diff", "--base", *base, "--head", *slow)
    assert code == 1 and err == "" and "HEAD is slower" in out
    # Two folders of run records: the same comparison.
    code, out, _ = run_cli(
        "diff", str(tmp_path / "base"), str(tmp_path / "slow"), "--format", "json"
    )
    doc = json.loads(out)
    assert code == 1 and len(doc["base"]["runs"]) == 3 and doc["between_runs"]
    assert doc["base"]["runs"][0]["label"] == base[0]
    # Today's form, one record a side, still works.
    code, out, _ = run_cli("diff", base[0], slow[0])
    assert code == 1 and "between-run variation not accounted for" in out


def test_cli_rank_folder_stays_one_run(tmp_path: Path, run_cli) -> None:
    """A torchrun folder holds the ranks of ONE run: it is merged, not split into runs."""
    folder = tmp_path / "ddp"
    folder.mkdir()
    for rank, rec in enumerate(runs([100.0, 101.0], 200)):
        rec.rank, rec.world_size = rank, 2
        save_record(rec, folder / f"run.rank{rank}.json")
    single = _save_runs(tmp_path / "single", [100.0], 210)
    code, out, err = run_cli("diff", str(folder), single[0], "--format", "json")
    assert code == 0, err
    assert json.loads(out)["between_runs"] is False


@pytest.mark.parametrize(
    "argv",
    [
        ["diff", "--base", "{a}"],
        ["diff", "--head", "{a}"],
        ["diff", "{a}", "{a}", "--base", "{a}", "--head", "{a}"],
        ["diff", "{a}", "--head", "{a}"],
        ["diff", "--base", "--head", "{a}"],
        ["diff", "--base", "{a}", "{missing}", "--head", "{a}"],
        ["diff", "--base", "{a}", "--head", "{a}", "{bad}"],
        ["diff", "--base", "{a}", "--head", "{a}", "-o", "{a}"],
    ],
)
def test_cli_bad_input_is_one_line_and_status_2(tmp_path: Path, run_cli, argv) -> None:
    paths = {
        "a": _save_runs(tmp_path / "a", [100.0], 220)[0],
        "missing": str(tmp_path / "nope.json"),
        "bad": str(tmp_path / "bad.json"),
    }
    (tmp_path / "bad.json").write_text('{"schema": "torchdiag.run/1", "steps": {"count": "x"}}')
    code, out, err = run_cli(*(a.format(**paths) for a in argv))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("torchdiag: error: ")
    assert "Traceback" not in err
