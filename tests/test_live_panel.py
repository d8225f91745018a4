"""The live panel and its summary line, rendered as text: every figure is the view's."""

from __future__ import annotations

import io
import math
import sys

import pytest
from livedata import running_record
from rich.console import Console

from torchdiag.analyze.registry import Analysis, analyze
from torchdiag.record import RunRecord, RunStatus, save_record
from torchdiag.report import live_display
from torchdiag.report.live_display import PanelDisplay
from torchdiag.report.live_panel import (
    live_line,
    live_panel,
    live_views,
    panel_text,
    sparkline,
)
from torchdiag.report.verdict import (
    format_bytes,
    format_ms,
    format_number,
    format_pct,
    format_seconds,
)
from torchdiag.view.recent import MAX_ROWS, RECENT_S, recent_record
from torchdiag.view.run_view import RunView


def _frame(record: RunRecord, width: int = 120) -> tuple[str, RunView, RunView, Analysis]:
    views = live_views(record)
    analysis = analyze(views.recent)
    return panel_text(live_panel(views, analysis), width=width), views.whole, views.recent, analysis


def test_the_panel_shows_the_views_figures() -> None:
    text, whole, recent, analysis = _frame(running_record(gpus=2))
    numbers = recent.headline
    assert "torchdiag · train.py · running" in text
    assert f"step {whole.progress.steps:,}" in text
    assert f"last {format_ms(whole.step_walls[-1])}" in text
    assert f"median {format_ms(numbers['median_step_ms'])}" in text
    assert f"p95 {format_ms(numbers['p95_step_ms'])}" in text
    assert f"{format_number(numbers['samples_per_s'])} samples/s (batch 32)" in text
    assert f"{format_pct(numbers['input_wait_pct'])} of the step" in text
    assert [gpu.index for gpu in recent.gpus] == [0, 1]
    for gpu in recent.gpus:
        assert f"GPU {gpu.index}" in text
        assert f"utilisation {format_pct(gpu.utilization_pct)}" in text
        assert f"memory peak {format_bytes(gpu.memory_peak_bytes)} of 80 GiB" in text
    host = recent.host_cpu
    assert host is not None and host.machine_pct is not None and host.process_pct is not None
    assert f"{format_pct(host.machine_pct)} of 4 cores" in text
    assert f"this process {format_pct(host.process_pct)} of a core" in text
    serious = [f for f in analysis.findings if f.severity in ("critical", "warning")]
    assert serious, "the input waits should give a finding"
    for f in serious:
        assert f.id in text


def test_the_figures_are_those_of_the_last_minute() -> None:
    record = running_record(n_steps=2000, step_ms=200.0)  # ~7 min of steps, 300 a minute
    views = live_views(record)
    recent = views.recent.record
    assert views.recent is not views.whole
    assert 0 < recent.steps.count < record.steps.count
    assert recent.duration_s == pytest.approx(RECENT_S, abs=0.2)
    # The window is a record like any other: its own view gives the panel's figures.
    assert views.recent.headline["median_step_ms"] == RunView(recent).headline["median_step_ms"]
    # ... and it keeps the run's step numbering: the steps done are the run's.
    assert views.recent.progress.steps == record.steps.count == 2000
    text = panel_text(live_panel(views, None), width=120)
    assert (
        f"(last {format_seconds(round(recent.duration_s))}: {recent.steps.count:,} steps)" in text
    )
    # Before the first analysis the findings say they are coming.
    assert "the rules run in a few seconds" in text


def test_recent_record_cuts_steps_and_samples_alike() -> None:
    record = running_record(n_steps=2000)
    cut = recent_record(record, seconds=10.0, min_rows=5)
    s = cut.steps
    n = len(s.wall_ms)
    assert all(len(col) == n for col in (s.first_step, s.steps, s.start_s, s.input_wait_ms))
    assert s.count == sum(s.steps) == n
    assert s.total_wall_s == pytest.approx(sum(s.wall_ms) / 1e3)
    assert s.first_step[-1] == record.steps.first_step[-1]
    assert cut.samples is not None and record.samples is not None
    rows = len(cut.samples.t_s)
    assert 0 < rows < len(record.samples.t_s)
    assert cut.samples.t_s[0] >= s.start_s[0]
    assert cut.samples.host is not None
    assert len(cut.samples.host.cpu_pct_per_core) == rows
    assert all(len(g.utilization_pct) == rows for g in cut.samples.gpus)
    assert cut.samples.sample_count == rows
    # The record itself is left as it was; a short record is its own window.
    assert len(record.steps.wall_ms) == 2000
    short = running_record(n_steps=10)
    assert recent_record(short) is short
    # Fast steps: at most MAX_ROWS rows, however many a minute holds.
    fast = recent_record(running_record(n_steps=2000, step_ms=10.0))
    assert len(fast.steps.wall_ms) == MAX_ROWS


def test_progress_against_the_step_limit_and_the_epoch() -> None:
    # Every steady step 50 ms (no jitter): the ETA is the steps left times 50 ms.
    record = running_record(n_steps=400, limit=1000, length=150)
    walls = [200.0] + [50.0] * 399
    record.steps.wall_ms = walls
    view = RunView(record)
    p = view.progress
    assert (p.steps, p.total_steps, p.eta_to) == (400, 1000, "limit")
    assert p.eta_s == pytest.approx(600 * 0.050)
    assert (p.epoch, p.epoch_batches, p.epoch_length) == (3, 100, 150)
    text = panel_text(live_panel(live_views(record), None), width=120)
    assert "step 400 of 1,000 · ETA 30 s · epoch 3: batch 100 of 150" in text

    # Without a limit: the time to the epoch's end, two batches a step (accumulation).
    record = running_record(n_steps=400, length=1000)
    record.steps.wall_ms = walls
    record.environment.loaders[0].batches = 800
    record.environment.loaders[0].epoch_batches = 800
    p = RunView(record).progress
    assert p.eta_to == "epoch" and p.eta_s == pytest.approx(100 * 0.050)
    text = panel_text(live_panel(live_views(record), None), width=120)
    assert "epoch 1: batch 800 of 1,000 · ETA 5 s to the epoch's end" in text

    # A loader without a length: steps only.
    record = running_record(n_steps=400, length=None)
    p = RunView(record).progress
    assert (p.total_steps, p.epoch, p.eta_s) == (None, None, None)


def test_the_summary_line_says_the_same() -> None:
    record = running_record()
    views = live_views(record)
    analysis = analyze(views.recent)
    line = live_line(views, analysis)
    numbers = views.recent.headline
    assert "\n" not in line
    assert line.startswith("torchdiag · train.py · running")
    assert f"step {format_ms(numbers['median_step_ms'])} median" in line
    assert f"{format_ms(numbers['p95_step_ms'])} p95" in line
    assert f"input wait {format_pct(numbers['input_wait_pct'])}" in line
    assert f"GPU 0 {format_pct(views.recent.gpus[0].utilization_pct)}" in line
    serious = [f.id for f in analysis.findings if f.severity in ("critical", "warning")]
    assert "findings: " + ", ".join(serious) in line


def test_a_run_without_steps_yet() -> None:
    record = RunRecord(name="train.py", status=RunStatus(state="running"), duration_s=2.0)
    views = live_views(record)
    text = panel_text(live_panel(views, None))
    assert "waiting for the first step" in text
    assert "Findings" not in text
    assert "waiting for the first step" in live_line(views, None)


def test_throughput_without_a_batch_is_steps_per_second() -> None:
    record = running_record(n_steps=300, batch=None)
    views = live_views(record)
    step = views.recent.headline["step_ms_estimate"]
    text = panel_text(live_panel(views, None), width=120)
    assert f"{format_number(1000.0 / step)} steps/s" in text


def test_names_from_the_record_cannot_drive_the_terminal() -> None:
    record = running_record(n_steps=50, name="evil\x1b]52;c;aGk=\x07.py")
    text = panel_text(live_panel(live_views(record), None), width=120)
    assert "\x1b" not in text and "\\u001b" in text
    assert "\x1b" not in live_line(live_views(record), None)


def test_a_failed_run_says_so() -> None:
    record = running_record(n_steps=50, state="failed")
    record.status.exception_type, record.status.message = "RuntimeError", "boom"
    text = panel_text(live_panel(live_views(record), None), width=120)
    assert "· failed ·" in text and "RuntimeError: boom" in text


def test_the_rank_table_of_a_run_folder(tmp_path) -> None:
    from torchdiag.cli.inputs import load_rank_records

    for rank in (0, 1):
        record = running_record(n_steps=300, rank=rank, world_size=2, wait_ms=10.0 + 20 * rank)
        save_record(record, tmp_path / f"run.rank{rank}.json")
    merged = load_rank_records(tmp_path)
    assert merged is not None
    text, whole, _, _ = _frame(merged, width=140)
    assert [f.rank for f in whole.ranks] == [0, 1]
    assert "Rank" in text and "In collectives" in text
    lines = [line for line in text.splitlines() if "running" in line and "│" in line]
    assert len(lines) >= 2  # a row per rank, each "running"


def test_sparkline() -> None:
    assert sparkline([1.0, 2.0, 3.0]) == "▁▅█"
    assert sparkline([5.0, 5.0]) == "▁▁"
    assert sparkline([1.0, math.nan, 2.0]) == "▁ █"
    assert sparkline([]) == ""
    assert len(sparkline([float(i) for i in range(200)], width=10)) == 10
    # Capped at the outlier limit: a slow first step does not flatten the rest.
    assert sparkline([100.0, 1.0, 2.0, 3.0], top=3.0) == "█▁▅█"


def test_an_ended_run_has_no_time_left() -> None:
    record = running_record(n_steps=400, limit=1000, state="completed")
    assert RunView(record).progress.eta_s is not None
    text = panel_text(live_panel(live_views(record), None), width=120)
    assert "step 400 of 1,000 · epoch" in text and "ETA" not in text


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _count_analyses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    def counted(view: RunView) -> Analysis:
        calls.append(view.progress.steps)  # the run's steps, not the window's
        return analyze(view)

    monkeypatch.setattr(live_display, "analyze", counted)
    return calls


def test_the_display_redraws_in_place_and_runs_the_rules_at_most_every_few_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _count_analyses(monkeypatch)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    clock = _Clock()
    display = PanelDisplay(console, terminal=True, log_interval_s=30.0, clock=clock)
    assert display.interval_s == live_display.REFRESH_S
    for i in range(4):  # four frames within one analysis interval
        clock.now = float(i)
        display.update(running_record(n_steps=500 + i))
    assert len(calls) == 1
    clock.now = live_display.ANALYSIS_INTERVAL_S + 0.5
    display.update(running_record(n_steps=600))
    assert len(calls) == 2
    final = running_record(n_steps=700, state="completed")
    display.close(final)
    assert calls[-1] == 700  # the final record's findings, found afresh
    text = out.getvalue()
    assert "step 500" in text and "step 700" in text and "· completed ·" in text


def test_the_display_prints_a_line_every_interval_where_stdout_is_no_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _count_analyses(monkeypatch)
    out = io.StringIO()
    clock = _Clock()
    display = PanelDisplay(Console(file=out), terminal=False, log_interval_s=30.0, clock=clock)
    assert display.interval_s == 30.0
    for now, steps in ((0.0, 100), (10.0, 200), (29.0, 300), (30.0, 400), (45.0, 500)):
        clock.now = now
        display.update(running_record(n_steps=steps))
    display.close(running_record(n_steps=600, state="completed"))
    lines = out.getvalue().splitlines()
    assert [line.split("· step ")[1].split()[0] for line in lines] == ["100", "400", "600"]
    assert "· completed ·" in lines[-1]
    assert len(calls) == 3  # nothing is computed between lines


def test_closing_without_a_final_record_releases_the_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    display = PanelDisplay(console, terminal=True, log_interval_s=30.0, redirect=True)
    before = sys.stdout, sys.stderr
    display.update(running_record(n_steps=50))
    assert sys.stdout is not before[0]  # what the program prints goes above the panel
    display.close(None)
    assert (sys.stdout, sys.stderr) == before
