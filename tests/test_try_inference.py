"""``torchdiag try`` on inference loops: the ``inference-mode`` fix, the model's outputs as the
numerics to compare when there is no loss, and ``batch=xK`` reported per sample and per call.

The comparison and the fix are checked in-process; one end-to-end case runs the inference sample
through ``python -m torchdiag try`` as a user would. Nothing here asserts a duration.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from viewing import render_try

import torchdiag
from torchdiag.analyze.inference import inference_mode
from torchdiag.capture.seeding import seed_everything
from torchdiag.record import MeasuredFix, OutputDigest, RunRecord
from torchdiag.trials.compare import Baseline, TryResult, compare_numerics
from torchdiag.trials.outputs import RELATIVE_ERROR_LIMIT, TOP1_FLIP_LIMIT, compare_outputs
from torchdiag.view.run_view import RunView

ROOT = Path(__file__).resolve().parent.parent


def _digest(call: int, values: list[float], *, rows: int = 0, argmax: list[int] | None = None):
    shape = [rows, len(values) // rows] if rows else [len(values)]
    return OutputDigest(call=call, shape=shape, dtype="float32", values=values, argmax=argmax)


# -- the comparison of outputs ----------------------------------------------------------------


def test_identical_outputs_are_ok():
    base = [_digest(i, [1.0, -2.0, 3.0, 0.5], rows=2, argmax=[2, 0]) for i in range(3)]
    ok, text = compare_outputs(base, list(base))
    assert ok is True
    assert "relative error 0.00%" in text and "top-1 agreement 100.0%" in text


def test_changed_predictions_are_flagged_with_the_figures():
    rows = 100
    base = [_digest(0, [0.0] * rows * 2, rows=rows, argmax=[0] * rows)]
    flipped = int(rows * TOP1_FLIP_LIMIT) + 1  # just past the limit
    head = [_digest(0, [0.0] * rows * 2, rows=rows, argmax=[1] * flipped + [0] * (rows - flipped))]
    ok, text = compare_outputs(base, head)
    assert ok is False
    assert f"{flipped} of {rows} rows changed" in text and "predictions changed" in text
    within = [_digest(0, [0.0] * rows * 2, rows=rows, argmax=[1] + [0] * (rows - 1))]
    assert compare_outputs(base, within)[0] is True  # one row in a hundred: rounding's share


def test_outputs_without_predictions_are_judged_on_relative_error():
    base = [_digest(0, [1.0, 2.0, 3.0, 4.0])]
    close = [_digest(0, [v * (1 + RELATIVE_ERROR_LIMIT / 2) for v in (1.0, 2.0, 3.0, 4.0)])]
    far = [_digest(0, [v * (1 + 2 * RELATIVE_ERROR_LIMIT) for v in (1.0, 2.0, 3.0, 4.0)])]
    assert compare_outputs(base, close)[0] is True
    ok, text = compare_outputs(base, far)
    assert ok is False and "relative error 10.00%" in text
    assert compare_outputs(base, [_digest(0, [1.0, None, 3.0, 4.0])])[0] is False  # type: ignore[list-item]


def test_outputs_of_other_shapes_are_not_compared():
    base = [_digest(0, [0.0] * 8, rows=2, argmax=[0, 0])]
    bigger = [_digest(0, [0.0] * 32, rows=8, argmax=[0] * 8)]
    ok, text = compare_outputs(base, bigger)
    assert ok is None and "not compared" in text and "2x4" in text and "8x4" in text
    assert compare_outputs([], base)[0] is None


def test_numerics_read_outputs_only_when_there_is_no_loss():
    outputs = [_digest(0, [1.0, 2.0], rows=1, argmax=[1])]
    inference = RunRecord(mode="inference", outputs=outputs)
    ok, text = compare_numerics("amp=bf16", inference, RunRecord(mode="inference", outputs=outputs))
    assert ok is True and "top-1 agreement" in text
    # A fix that feeds other inputs (repeated batches) cannot be judged on outputs either.
    assert compare_numerics("input-ceiling", inference, inference)[0] is None
    # Training keeps its loss comparison, outputs or not.
    losses = [2.0, 2.1, 1.9, 2.0, 2.05, 1.95, 2.0, 2.02]
    training = RunRecord(losses=losses, outputs=outputs)
    assert "mean loss" in compare_numerics("amp=bf16", training, training)[1]


# -- the fix, in process ----------------------------------------------------------------------


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def _infer(tmp_path: Path, mode, *, steps: int = 10, fixes=("inference-mode",)):
    model, outputs = _model().eval(), []
    with torchdiag.profile(
        tmp_path / "run.json",
        profile_steps=0,
        fixes=list(fixes),
        max_steps=steps,
        record_outputs=True,
    ) as run:
        with mode():
            for _ in range(100):
                outputs.append(model(torch.randn(4, 6)))
    assert run.record is not None
    return run.record, outputs


def test_inference_mode_applies_to_calls_made_with_grad(tmp_path):
    record, outputs = _infer(tmp_path, torch.enable_grad)
    (applied,) = record.fixes
    assert applied.applied and "inference_mode" in applied.detail
    assert all(torch.is_inference(out) for out in outputs)
    assert record.mode == "inference"
    assert [d.call for d in record.outputs] == list(range(8))  # bounded: the first 8 calls
    assert record.outputs[0].shape == [4, 3] and len(record.outputs[0].argmax or []) == 4
    # The calls ran under inference_mode: the record says so, and the rule has nothing to raise.
    calls = record.environment.model_calls
    assert calls.inference_mode >= record.steps.count > 0 and calls.grad == 0
    assert inference_mode(RunView(record)) is None


def test_inference_mode_has_nothing_to_do_without_grad(tmp_path):
    record, outputs = _infer(tmp_path, torch.no_grad)
    (applied,) = record.fixes
    assert not applied.applied and "already ran without grad" in applied.detail
    assert not any(torch.is_inference(out) for out in outputs)


def test_inference_mode_does_not_apply_to_a_training_loop(tmp_path):
    model = _model()
    with torchdiag.profile(
        tmp_path / "run.json", profile_steps=0, fixes=["inference-mode"], max_steps=4
    ) as run:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(10):
            model(torch.randn(4, 6)).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
    assert run.record is not None and run.record.status.state == "completed"
    (applied,) = run.record.fixes
    assert not applied.applied and "SGD" in applied.detail and "trains" in applied.detail


def test_a_backward_seen_later_makes_it_not_applicable(tmp_path):
    model = _model()
    with torchdiag.profile(
        tmp_path / "run.json", profile_steps=0, fixes=["inference-mode"], max_steps=4
    ) as run:
        # No optimizer: nothing tells the fix at the first call that the run trains; the
        # backward then fails, an inference_mode output having no graph to go back through.
        with pytest.raises(RuntimeError):
            model(torch.randn(4, 6)).sum().backward()
    assert run.record is not None
    (applied,) = run.record.fixes
    assert not applied.applied and "calls backward()" in applied.detail


def test_seeding_repeats_the_draws():
    seed_everything(3)
    first = (random.random(), torch.rand(3))
    seed_everything(3)
    again = (random.random(), torch.rand(3))
    assert first[0] == again[0] and torch.equal(first[1], again[1])


# -- rendering --------------------------------------------------------------------------------


def _result(fix: MeasuredFix) -> TryResult:
    base = Baseline(
        step_ms=10.0, memory_peak_bytes=None, memory_of="", findings=[], runs=1, records=[]
    )
    return TryResult(script="infer.py", steps=20, baseline=base, fixes=[fix])


def test_batch_on_inference_shows_throughput_per_sample_and_latency_per_call():
    figures = dict(
        fix="batch=x4",
        applicable=True,
        detail="batch_size 16 -> 64",
        step_ms=25.0,
        baseline_step_ms=10.0,
        speedup=1.6,
        ci95=[1.5, 1.7],
        significant=True,
        per_sample=True,
    )
    inference = MeasuredFix(**figures, inference=True)  # type: ignore[arg-type]
    for fmt in ("text", "md"):
        out = render_try(_result(inference), fmt)
        assert "1.60x (1.50-1.70) per sample" in out
        assert "latency per call 10.0 -> 25.0 ms (2.50x)" in out
        assert "learning rate" not in out
    assert json.loads(render_try(_result(inference), "json"))["fixes"][0]["inference"] is True
    training = render_try(_result(MeasuredFix(**figures)), "text")  # type: ignore[arg-type]
    assert "learning rate may need scaling" in training and "latency per call" not in training


# -- end to end -------------------------------------------------------------------------------


def test_try_inference_mode_and_bf16_on_the_inference_sample(tmp_path):
    command = [
        sys.executable, "-m", "torchdiag", "try", "--fix", "inference-mode", "--fix", "amp=bf16",
        "--steps", "12", "--skip-first", "2", "--profile-steps", "2", "--repeat", "2",
        "--output", str(tmp_path / "try"), "--format", "json",
        str(ROOT / "samples" / "inference.py"), "--output", str(tmp_path / "own.json"),
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    fixes = {f["fix"]: f for f in doc["fixes"]}
    mode, amp = fixes["inference-mode"], fixes["amp=bf16"]
    # The sample keeps grad mode on: the fix applies.
    assert mode["applicable"] is True and mode["error"] is None, mode
    for fix in (mode, amp):
        assert fix["inference"] is True and fix["runs"] == 2
        if fix is amp and not amp["applicable"]:  # CPU autocast missing: said, not hidden
            assert amp["detail"], amp
            continue
        assert fix["step_ms"] is not None and fix["baseline_step_ms"] is not None
        # Judged on the model's outputs, not on a loss the run never had.
        assert "no loss seen" not in fix["numerics"]
        assert "outputs of 8 calls" in fix["numerics"], fix
        assert fix["numerics_ok"] in (True, False)
    # inference_mode changes no arithmetic: the outputs are the baseline's.
    assert mode["numerics_ok"] is True and "relative error 0.00%" in mode["numerics"]
