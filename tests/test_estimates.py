"""A finding's stated saving against the saving ``torchdiag try`` measured for its fix: the
classification, the conversion of a speedup to a saving, and the pairing in every output."""

from __future__ import annotations

import json

import pytest
from viewing import render_try

from torchdiag.analyze.finding import Finding
from torchdiag.record import EstimatePairing, MeasuredFix
from torchdiag.report.trial_render import (
    estimate_text,
    measured_for_finding,
    measured_summary,
)
from torchdiag.trials.compare import Baseline, TryResult
from torchdiag.trials.estimates import classify, measured_saving, pair_estimates


def _finding(
    fid: str, bound: float, expected: float | None = None, low: float | None = None
) -> Finding:
    return Finding(
        id=fid,
        severity="warning",
        title=fid,
        evidence={},
        recommendation="",
        saving_pct_max=bound,
        saving_pct=expected,
        saving_pct_low=low,
    )


def _fix(spec: str, speedup: float | None, ci95: list[float] | None, **kw: object) -> MeasuredFix:
    return MeasuredFix(
        fix=spec,
        applicable=True,
        speedup=speedup,
        ci95=ci95,
        significant=ci95 is not None,
        step_ms=80.0,
        baseline_step_ms=100.0,
        **kw,  # type: ignore[arg-type]
    )


def test_a_speedup_is_the_share_of_step_time_removed():
    saving, low, high = measured_saving(1.25, [1.07, 1.45])
    assert saving == pytest.approx(20.0)
    assert low == pytest.approx(100 * (1 - 1 / 1.07))
    assert high == pytest.approx(100 * (1 - 1 / 1.45))
    # A slowdown is a negative saving; no interval, nothing to score.
    assert measured_saving(0.8, [0.7, 0.9])[0] == pytest.approx(-25.0)
    assert measured_saving(1.25, None) == (None, None, None)
    assert measured_saving(None, None) == (None, None, None)


@pytest.mark.parametrize(
    ("low", "bound", "measured", "verdict"),
    [
        (None, 8.1, (6.5, 31.0), "within"),  # the issue's 1.25x (1.07-1.45) overlaps 8.1%
        (None, 8.1, (9.0, 31.0), "above"),  # wholly above: the bound was not one
        (None, 8.1, (-2.0, 3.0), "within"),  # no significant change, 0 is in the range
        (None, 8.1, (-9.0, -1.0), "below"),  # slower, though the rule promised no loss
        (10.0, 30.0, (2.0, 8.0), "below"),  # under the stated low end
        (10.0, 30.0, (25.0, 40.0), "within"),
        (10.0, 30.0, (None, None), "not measured"),
    ],
)
def test_classification(low, bound, measured, verdict):
    assert classify(low, bound, *measured) == verdict


def test_pairings_are_the_findings_the_fix_answers():
    findings = [
        _finding("dataloader-stall", 8.1),
        _finding("dataloader-workers", 50.0, expected=40.0, low=35.0),
        _finding("no-amp", 50.0),  # answered by amp, not by workers
        _finding("memory-pressure", 0.0),  # states no step-time saving
    ]
    pairings = pair_estimates(_fix("workers=2", 1.25, [1.12, 1.45]), findings)
    assert [(p.finding, p.verdict) for p in pairings] == [
        ("dataloader-stall", "above"),
        ("dataloader-workers", "below"),
    ]
    stall = pairings[0]
    assert stall.stated_max == 8.1 and stall.stated is None and stall.stated_low is None
    assert stall.measured == 20.0 and stall.measured_low == pytest.approx(10.71, abs=0.01)
    # Nothing measured, nothing paired; measured without an interval: paired, not scored.
    failed = MeasuredFix(fix="workers=2", applicable=True, error="RuntimeError: boom")
    assert pair_estimates(failed, findings) == []
    assert pair_estimates(MeasuredFix(fix="workers=2", applicable=False), findings) == []
    unscored = pair_estimates(_fix("workers=2", None, None), findings)
    assert [p.verdict for p in unscored] == ["not measured", "not measured"]


def test_measure_fix_pairs_the_findings_it_is_given():
    from torchdiag.trials.compare import measure_fix

    # Without runs nothing is measured, and nothing is paired.
    fix = measure_fix("workers=2", [], [], findings=[_finding("dataloader-stall", 8.1)])
    assert fix.estimates == []


def test_the_text_reads_as_the_issue_asks():
    pairing = EstimatePairing(
        finding="dataloader-stall",
        stated_max=8.1,
        measured=20.0,
        measured_low=10.71,
        measured_high=31.03,
        verdict="above",
    )
    assert estimate_text(pairing) == (
        "dataloader-stall: estimated up to 8.1%; measured 20% (10.7–31%): above the bound"
    )
    modelled = EstimatePairing(
        finding="small-batch", stated_low=5.0, stated=12.0, stated_max=20.0, verdict="not measured"
    )
    assert estimate_text(modelled, per_sample=True) == (
        "small-batch: estimated about 12% (5–20%); not measured"
    )


def _result() -> TryResult:
    fix = _fix("workers=2", 1.25, [1.12, 1.45])
    fix.estimates = pair_estimates(
        fix, [_finding("dataloader-stall", 8.1), _finding("dataloader-workers", 25.0)]
    )
    baseline = Baseline(
        step_ms=100.0,
        memory_peak_bytes=None,
        memory_of="",
        findings=["dataloader-stall"],
        runs=1,
        records=[],
    )
    return TryResult(script="train.py", steps=30, baseline=baseline, fixes=[fix])


def test_every_try_output_carries_the_pairing():
    result = _result()
    expected = "dataloader-stall: estimated up to 8.1%; measured 20% (10.7–31%): above the bound"
    within = "dataloader-workers: estimated up to 25%; measured 20% (10.7–31%): within the estimate"
    for fmt in ("text", "md"):
        out = render_try(result, fmt)
        assert expected in out and within in out, out
    doc = json.loads(render_try(result, "json"))
    pairings = doc["fixes"][0]["estimates"]
    assert [p["verdict"] for p in pairings] == ["above", "within"]
    assert pairings[0]["stated_max"] == 8.1 and pairings[0]["measured"] == 20.0


def test_beside_a_finding_the_report_shows_its_own_estimate():
    rows = measured_for_finding("dataloader-stall", _result().fixes)
    summary = measured_summary(rows[0])
    assert summary.startswith("workers=2: faster, 1.25x (1.12-1.45)")
    assert "dataloader-stall: estimated up to 8.1%" in summary
    assert "dataloader-workers" not in summary
