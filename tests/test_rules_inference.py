"""The rules that apply to inference runs, on inference records and their training twins.

Each case builds a record with the constructed-record builders of test_rules.py and
test_input_rules.py, once as it is (a training run) and once marked as an inference run
(``record.mode``; for a live loop whose steps are forward calls, ``steps.detection``). The rule
must fire on both with the same evidence, savings and severity (the thresholds do not depend on
the mode), the training finding keeping its training fix and the inference finding speaking of
an inference loop: no loss, backward, GradScaler, optimizer or learning rate.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from test_input_rules import _record as _input_record
from test_rules import (
    _conv_math,
    _conv_ops,
    _device,
    _finding,
    _fp32_math,
    _half_conv_math,
    _launches,
    _live,
    _pageable,
    _samples,
    _small_batch_summary,
    _summary,
    _sync_summary,
    _trace,
)

from torchdiag.analyze.finding import Finding
from torchdiag.record import (
    Environment,
    GpmSeries,
    GpuSeries,
    LoaderInfo,
    MathStats,
    RunRecord,
)

# Words that belong to a training loop's fix only.
TRAINING_WORDS = ("backward", "optimizer", "gradscaler", "loss", "learning rate", "training")


def _inference(record: RunRecord, *, forward_calls: bool = False) -> RunRecord:
    """``record`` as an inference run; ``forward_calls``: its steps are calls of the model (a live
    loop without run.step(), as the capture detects it)."""
    record.mode = "inference"
    if forward_calls:
        record.steps.detection = "forward"
    return record


def _fix_text(f: Finding) -> str:
    return (f.recommendation + "\n" + f.snippet).lower()


def _tf32_record() -> RunRecord:
    math = MathStats(eligible_ms=600.0, non_tensor_core_ms=400.0, tensor_core_ms=200.0)
    env = Environment(devices=[_device()], tf32_matmul=False, tf32_cudnn=True)
    return _trace(_summary(math=math), env)


def _cudnn_record() -> RunRecord:
    env = Environment(devices=[_device()], cudnn_benchmark=False)
    return _live(summary=_summary(math=_conv_math(30.0), top_ops=_conv_ops()), env=env)


def _launch_record() -> RunRecord:
    return _trace(_summary(host_ms=60.0, gpu_busy_ms=20.0, launches=1000, launch=_launches()))


def _loader_batch_record() -> RunRecord:
    """A live run whose batch comes from its DataLoader, with GPM SM activity at 20%."""
    gpu = GpuSeries(index=0, utilization_pct=[100.0] * 4, gpm=GpmSeries(sm_active_pct=[20.0] * 4))
    env = Environment(devices=[_device()], loaders=[LoaderInfo(loader_id=0, batch_size=16)])
    return _live(summary=_summary(batch_size=999), samples=_samples(gpu), env=env)


@dataclass(frozen=True)
class Case:
    """A rule, a record it fires on, and what its training and inference fixes must say."""

    rule: str
    record: Callable[[], RunRecord]
    training: tuple[str, ...]
    inference: tuple[str, ...]
    forward_calls: bool = False


CASES = [
    Case(
        "no-amp",
        lambda: _trace(_summary(math=_fp32_math(60.0))),
        training=("loss.backward()", "torch.autocast(device_type='cuda', dtype=torch.bfloat16)"),
        inference=(
            "model = model.to(torch.bfloat16)",
            "inputs.to(torch.bfloat16)",
            "torch.inference_mode(), torch.autocast('cuda', dtype=torch.bfloat16)",
            "torchdiag try --fix amp=bf16",
            "outputs",
        ),
    ),
    Case(
        "no-amp",
        lambda: _trace(_summary(capability="7.5", math=_fp32_math(60.0))),
        training=("GradScaler", "torch.float16"),
        inference=("model = model.to(torch.float16)", "--fix amp=fp16"),
    ),
    Case(
        "tf32-disabled",
        _tf32_record,
        training=("allow_tf32 = True",),
        inference=("allow_tf32 = True", "--fix tf32", "outputs"),
    ),
    Case(
        "channels-last",
        lambda: _trace(_summary(math=_half_conv_math(150.0))),
        training=("memory_format=torch.channels_last",),
        inference=("memory_format=torch.channels_last",),
    ),
    Case(
        "cudnn-benchmark",
        _cudnn_record,
        training=("cudnn.benchmark = True", "change every step"),
        inference=("cudnn.benchmark = True", "change every forward call", "warm the model up"),
        forward_calls=True,
    ),
    Case(
        "cpu-bound",
        lambda: _trace(_summary(host_ms=90.0, gpu_busy_ms=30.0)),
        training=("per-step Python", "mode='reduce-overhead'"),
        inference=("CUDA graph", "mode='reduce-overhead'", "with torch.inference_mode():"),
    ),
    Case(
        "cpu-bound",
        lambda: _live(samples=_samples(GpuSeries(index=0, utilization_pct=[30.0] * 4))),
        training=("of each step",),
        inference=("of each forward call", "with torch.inference_mode():"),
        forward_calls=True,
    ),
    Case(
        "launch-overhead",
        _launch_record,
        training=("foreach/fused optimizers",),
        inference=("CUDA graph", "mode='reduce-overhead'", "with torch.inference_mode():"),
    ),
    Case(
        "small-batch",
        lambda: _trace(_small_batch_summary(batch_size=8)),
        training=("learning rate", "batch_size=32"),
        inference=("samples/s", "latency", "torch.stack(requests[:32])", "--fix batch=x4"),
    ),
    Case(
        "small-batch",
        _loader_batch_record,
        training=("learning rate",),
        inference=("DataLoader(dataset, batch_size=32", "each forward call takes"),
        forward_calls=True,
    ),
    Case(
        "sync-points",
        lambda: _trace(_sync_summary()),
        training=("loss.detach()", "per step"),
        inference=("torch.cat(preds).cpu()", "preds.append(model(inputs).argmax(1))", "per step"),
    ),
    Case(
        "sync-points",
        lambda: _live(summary=_sync_summary()),
        training=("per step",),
        inference=("per forward call", "once at the end"),
        forward_calls=True,
    ),
    Case(
        "pin-memory",
        lambda: _trace(_summary(copies=_pageable(100.0))),
        training=("pin_memory=True",),
        inference=("pin_memory=True", "non_blocking=True"),
    ),
    Case(
        "dataloader-stall",
        lambda: _input_record(100.0, 60.0),
        training=("training loop", "shuffle=True"),
        inference=("evaluation loop", "shuffle=False", "of each forward call"),
        forward_calls=True,
    ),
    Case(
        "dataloader-workers",
        lambda: _input_record(100.0, 60.0),
        training=("training process", "model trains"),
        inference=("main process", "model runs", "shuffle=False"),
    ),
]


def _said(f: Finding) -> str:
    return "\n".join((f.title, f.recommendation, f.snippet))


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{c.rule}-{'calls' if c.forward_calls else 'steps'}" for c in CASES]
)
def test_rule_fires_on_inference_with_inference_fix(case: Case) -> None:
    training = _finding(case.record(), case.rule)
    inference = _finding(_inference(case.record(), forward_calls=case.forward_calls), case.rule)
    # The mode changes the words, never the diagnosis.
    assert inference.evidence == training.evidence
    assert (inference.saving_pct_max, inference.saving_pct, inference.saving_pct_low) == (
        training.saving_pct_max,
        training.saving_pct,
        training.saving_pct_low,
    )
    assert inference.severity == training.severity
    for text in case.training:
        assert text in _said(training), f"{text!r} not in the training finding"
    for text in case.inference:
        assert text in _said(inference), f"{text!r} not in the inference finding"
    fix = _fix_text(inference)
    assert not [w for w in TRAINING_WORDS if w in fix], fix


def test_inference_small_batch_states_throughput_and_latency_from_its_numbers() -> None:
    f = _finding(_inference(_trace(_small_batch_summary(batch_size=8))), "small-batch")
    step_ms, batch, factor = f.evidence["step_ms"], 8, f.evidence["batch_factor"]
    assert (step_ms, factor) == (95.0, 4)
    # The call at batch 32 takes 4 times the samples' shorter time each (the expected saving).
    call_ms = step_ms * factor * (1 - f.saving_pct / 100)
    said = re.search(
        r"from about ([\d,]+) to ([\d,]+) samples/s.*takes about ([\d.,]+) ms instead of "
        r"([\d.,]+) ms",
        f.recommendation,
    )
    assert said, f.recommendation
    before, after, new_ms, old_ms = (float(g.replace(",", "")) for g in said.groups())
    assert before == pytest.approx(batch * 1e3 / step_ms, abs=0.5)
    assert old_ms == pytest.approx(step_ms)
    # saving_pct is rounded to 0.1 (0.19 ms of a 380 ms batch), the text to 0.1 ms.
    assert new_ms == pytest.approx(call_ms, abs=0.25)
    assert after == pytest.approx(batch * factor * 1e3 / call_ms, rel=0.01)
    assert after > before and new_ms > old_ms  # more throughput, longer calls


def test_inference_trace_steps_keep_the_word_step() -> None:
    # An inference trace's steps are its ProfilerStep spans, which may hold several calls.
    f = _finding(_inference(_trace(_summary(host_ms=90.0, gpu_busy_ms=30.0))), "cpu-bound")
    assert f.title.endswith("of each step")
