"""What fills memory: torch's memory categories of the live profiler window, corrected with the
model's exact state, the largest-batch estimate and their outputs (all on the CPU)."""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import torch

import torchdiag
from torchdiag.analyze.registry import analyze
from torchdiag.capture.memory_categories import correct
from torchdiag.record import (
    MEMORY_CATEGORIES,
    Environment,
    LoaderInfo,
    MeasuredFix,
    MemoryCategories,
    MemoryOp,
    ProfilerWindow,
    RunRecord,
    decode_record,
)
from torchdiag.report import html as html_report
from torchdiag.report.html import render_html
from torchdiag.report.json_report import render_json
from torchdiag.report.markdown import render_markdown
from torchdiag.view.run_view import RunView

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="module")
def _own_templates() -> Iterator[None]:
    """Render with this checkout's templates: an editable install made from another checkout
    maps ``torchdiag.report_templates`` to that checkout's folder."""
    folder = ROOT / "report_templates"
    spec = importlib.util.spec_from_file_location(
        "torchdiag.report_templates",
        folder / "__init__.py",
        submodule_search_locations=[str(folder)],
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "torchdiag.report_templates", module)
        html_report._environment.cache_clear()
        html_report._asset.cache_clear()
        yield
    html_report._environment.cache_clear()
    html_report._asset.cache_clear()


MEMORY_KEYS = {
    "peak_bytes",
    "capacity_bytes",
    "at_peak",
    "top_at_peak",
    "fixed_bytes",
    "per_sample_bytes",
    "batch_size",
    "largest_batch",
    "largest_batch_rests_on",
}


def _train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loader: object) -> None:
    for x, y in loader:  # type: ignore[attr-defined]
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


@functools.cache
def _mlp_record(folder: str) -> RunRecord:
    """Two Linear(2048, 2048) (32 MiB of parameters) trained with AdamW; the window covers two
    optimizer steps after the state exists."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(2048, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 2048)
    )
    optimizer = torch.optim.AdamW(model.parameters())
    data = torch.utils.data.TensorDataset(torch.randn(6 * 32, 2048), torch.randn(6 * 32, 2048))
    loader = torch.utils.data.DataLoader(data, batch_size=32)
    with torchdiag.profile(Path(folder) / "run.json", skip_first=2, profile_steps=2) as run:
        _train(model, optimizer, loader)
    assert run.record is not None
    return run.record


@pytest.fixture(scope="module")
def mlp_record(tmp_path_factory: pytest.TempPathFactory) -> RunRecord:
    return _mlp_record(str(tmp_path_factory.mktemp("mlp")))


def _within(value: float, truth: float, tolerance: float) -> bool:
    return abs(value - truth) <= tolerance * truth


def test_the_model_state_at_the_peak_is_exact(mlp_record: RunRecord) -> None:
    assert mlp_record.profiler is not None
    cats = mlp_record.profiler.memory_categories
    assert cats is not None, mlp_record.collectors.get("memory_categories")
    params = 2 * (2048 * 2048 + 2048) * 4
    at_peak = cats.at_peak
    assert set(at_peak) == set(MEMORY_CATEGORIES)
    assert sum(at_peak.values()) == cats.peak_bytes  # the correction keeps the sum
    assert _within(at_peak["parameter"], params, 0.10)
    assert _within(at_peak["gradient"], params, 0.10)  # the peak falls in the optimizer step
    assert _within(at_peak["optimizer_state"], 2 * params, 0.10)  # AdamW: exp_avg, exp_avg_sq
    # torch alone files more than the parameters under "parameter": what the correction is for.
    assert cats.torch_at_peak["parameter"] > 1.2 * params
    assert 0 < len(cats.t_ms) <= 400
    assert all(len(v) == len(cats.t_ms) for v in cats.timeline.values())
    assert max(sum(p) for p in zip(*cats.timeline.values(), strict=True)) == cats.peak_bytes
    assert cats.top_at_peak and len(cats.top_at_peak) <= 10
    # The record round-trips through JSON with the new fields.
    again = decode_record(mlp_record.to_json())
    assert again.profiler is not None and again.profiler.memory_categories == cats


def test_the_json_report_carries_the_memory_block(mlp_record: RunRecord) -> None:
    view = RunView(mlp_record)
    doc = json.loads(render_json(view, analyze(view)))
    memory = doc["memory"]
    assert set(memory) == MEMORY_KEYS
    assert set(memory["at_peak"]) == set(MEMORY_CATEGORIES)
    assert memory["peak_bytes"] == sum(memory["at_peak"].values())
    assert memory["batch_size"] == 32
    assert memory["capacity_bytes"] == mlp_record.environment.memory_total_bytes
    assert memory["largest_batch"] is not None and memory["largest_batch"] > 32
    assert {"name", "bytes"} <= set(memory["top_at_peak"][0])


def test_the_html_and_markdown_show_the_categories(mlp_record: RunRecord) -> None:
    view = RunView(mlp_record)
    analysis = analyze(view)
    page = render_html(view, analysis, cdn=True)
    assert "What fills memory in the profiler window" in page
    assert 'data-figure="memory_categories"' in page
    assert "Largest batch that fits (estimate)" in page
    text = render_markdown(view, analysis)
    assert "## What fills memory" in text and "| Optimizer state |" in text


def _wide_record(folder: Path, batch: int) -> RunRecord:
    """A model of small parameters and wide activations, trained with SGD at ``batch``."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 4096 // 8),
        torch.nn.ReLU(), torch.nn.Linear(4096 // 8, 64),
    )  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    data = torch.utils.data.TensorDataset(torch.randn(6 * batch, 64), torch.randn(6 * batch, 64))
    loader = torch.utils.data.DataLoader(data, batch_size=batch)
    with torchdiag.profile(folder / f"b{batch}.json", skip_first=2, profile_steps=2) as run:
        _train(model, optimizer, loader)
    assert run.record is not None
    return run.record


def test_the_peak_at_twice_the_batch_is_predicted(tmp_path: Path) -> None:
    batch = 256
    small = RunView(_wide_record(tmp_path, batch)).memory_breakdown
    big = RunView(_wide_record(tmp_path, 2 * batch)).memory_breakdown
    assert small.fixed_bytes is not None and small.per_sample_bytes is not None
    assert big.peak_bytes is not None and small.batch_size == batch
    predicted = small.predicted_peak(2 * batch)
    assert predicted == round(small.fixed_bytes + small.per_sample_bytes * 2 * batch)
    assert abs(predicted - big.peak_bytes) <= 0.15 * big.peak_bytes, (predicted, big.peak_bytes)


def test_a_measured_batch_fix_gives_a_two_point_fit() -> None:
    cats = MemoryCategories(
        device="cpu",
        peak_bytes=1000,
        at_peak={"parameter": 400, "activation": 600},
        timeline={"parameter": [400], "activation": [600]},
        t_ms=[0.0],
    )
    record = RunRecord(
        profiler=ProfilerWindow(memory_categories=cats),
        measured_fixes=[
            MeasuredFix(
                fix="batch=x2",
                applicable=True,
                memory_peak_bytes=3000,
                baseline_memory_peak_bytes=2000,
            )
        ],
    )
    record.environment.memory_total_bytes = 100_000
    record.environment.loaders = [LoaderInfo(loader_id=1, batch_size=10, batches=5)]
    breakdown = RunView(record).memory_breakdown
    assert breakdown.per_sample_bytes == 100.0  # (3000 - 2000) / (20 - 10)
    assert breakdown.fixed_bytes == 1000  # 2000 - 100 * 10
    assert breakdown.largest_batch == (90_000 - 1000) // 100
    assert "batch 10 and 20" in breakdown.largest_batch_rests_on


def test_a_record_without_categories_renders_without_the_section() -> None:
    record = RunRecord(name="old", profiler=ProfilerWindow())
    # An older record's JSON, without the field, reads as None.
    old = json.loads(record.to_json())
    del old["profiler"]["memory_categories"]
    record = decode_record(json.dumps(old))
    assert record.profiler is not None and record.profiler.memory_categories is None
    view = RunView(record)
    analysis = analyze(view)
    memory = json.loads(render_json(view, analysis))["memory"]
    assert set(memory) == MEMORY_KEYS
    assert memory["peak_bytes"] is None and memory["at_peak"] is None
    assert memory["largest_batch"] is None and memory["top_at_peak"] == []
    assert "What fills memory" not in render_html(view, analysis, cdn=True)
    assert "What fills memory" not in render_markdown(view, analysis)


def test_operator_names_are_escaped_in_html(mlp_record: RunRecord) -> None:
    record = msgspec.structs.replace(mlp_record)
    assert record.profiler is not None and record.profiler.memory_categories is not None
    cats = msgspec.structs.replace(record.profiler.memory_categories)
    cats.top_at_peak = [MemoryOp(name="<script>x</script>", bytes=5)]
    record.profiler = msgspec.structs.replace(record.profiler, memory_categories=cats)
    page = render_html(RunView(record), analyze(RunView(record)), cdn=True)
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page


def test_the_correction_keeps_the_sum_and_bounds() -> None:
    torch_at_peak = dict.fromkeys(MEMORY_CATEGORIES, 0)
    torch_at_peak.update(parameter=112, gradient=32, activation=16, input=1)
    exact = {"parameter": 32, "gradient": 32, "optimizer_state": 64}
    out, moved = correct(torch_at_peak, exact)
    assert out["parameter"] == 32 and out["optimizer_state"] == 64 and out["gradient"] == 32
    assert out["unknown"] == 16 == moved
    assert sum(out.values()) == sum(torch_at_peak.values())
    # A peak before the state exists: the pool bounds what can be state.
    early = dict.fromkeys(MEMORY_CATEGORIES, 0)
    early.update(parameter=32, activation=50)
    out, _ = correct(early, exact)
    assert out["parameter"] == 32 and out["optimizer_state"] == 0 and out["gradient"] == 0
    assert sum(out.values()) == 82


def test_a_window_too_large_to_categorise_is_said_so_and_costs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchdiag.capture import profiler_window

    monkeypatch.setattr(profiler_window, "MAX_CATEGORISED_EVENTS", 10)
    model = torch.nn.Linear(8, 8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with torchdiag.profile(tmp_path / "run.json", skip_first=1, profile_steps=2) as run:
        for _ in range(5):
            model(torch.randn(4, 8)).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
    record = run.record
    assert record is not None and record.profiler is not None
    assert record.profiler.memory_categories is None
    status = record.collectors["memory_categories"]
    assert not status.available and "host events" in (status.reason or "")
    assert "memory_categories_s" not in record.overhead
    assert RunView(record).memory_breakdown.at_peak is None


def test_the_categories_cost_is_recorded_apart(mlp_record: RunRecord) -> None:
    spent = mlp_record.overhead["memory_categories_s"]
    assert 0 < spent <= mlp_record.overhead["profiler_export_s"]


def test_an_inference_peak_beyond_the_weights_grows_with_the_batch() -> None:
    # Without a backward, torch files the data flowing through the model as unknown.
    at_peak = dict.fromkeys(MEMORY_CATEGORIES, 0) | {"parameter": 1_000, "unknown": 16_000}
    cats = MemoryCategories(device="cpu", peak_bytes=17_000, at_peak=at_peak)
    record = RunRecord(
        mode="inference",
        profiler=ProfilerWindow(memory_categories=cats),
        environment=Environment(
            loaders=[LoaderInfo(loader_id=0, batch_size=16, batches=10)],
            memory_total_bytes=1_000_000,
        ),
    )
    breakdown = RunView(record).memory_breakdown
    assert breakdown.fixed_bytes == 1_000 and breakdown.per_sample_bytes == 1_000
    assert breakdown.largest_batch == (900_000 - 1_000) // 1_000
    assert "unknown memory as growing" in breakdown.largest_batch_rests_on
    training = RunView(msgspec.structs.replace(record, mode="training")).memory_breakdown
    assert training.fixed_bytes == 17_000 and training.per_sample_bytes == 0
