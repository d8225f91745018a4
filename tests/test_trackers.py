"""Tracker output: flat_metrics carries the headline's and the findings' own numbers, and
log_to_tensorboard writes them where TensorBoard reads them."""

from __future__ import annotations

import pytest
from tracedata import h200_trace
from viewing import analyze_record

from torchdiag.integrations.trackers import flat_metrics, log_to_tensorboard
from torchdiag.traces.load import record_from_traces
from torchdiag.view.run_view import RunView


@pytest.fixture(scope="module")
def fp32_record():
    """A real H200 trace whose planted cause is fp32 matrix math (``no-amp``)."""
    return record_from_traces(h200_trace("resnet_fp32"))


def test_headline_numbers_are_the_headline(fp32_record):
    numbers = RunView(fp32_record).headline
    metrics = flat_metrics(fp32_record)
    for key, value in numbers.items():
        if value is None:
            assert f"torchdiag/{key}" not in metrics
        elif isinstance(value, bool):
            assert metrics[f"torchdiag/{key}"] == int(value)
        elif isinstance(value, list):
            assert metrics[f"torchdiag/{key}_low"] == value[0]
            assert metrics[f"torchdiag/{key}_high"] == value[1]
        else:
            assert metrics[f"torchdiag/{key}"] == value
    assert metrics["torchdiag/step_ms_estimate"] > 0
    assert metrics["torchdiag/status"] == fp32_record.status.state


def test_findings_are_the_analysis(fp32_record):
    analysis = analyze_record(fp32_record)
    metrics = flat_metrics(fp32_record, analysis)
    assert metrics["torchdiag/findings/count"] == len(analysis.findings)
    by_id = {f.id: f for f in analysis.findings}
    no_amp = by_id["no-amp"]  # the trace's planted cause
    assert metrics["torchdiag/findings/no-amp/saving_pct_max"] == no_amp.saving_pct_max
    assert metrics["torchdiag/findings/no-amp/severity"] == no_amp.severity
    if no_amp.saving_pct is not None:
        assert metrics["torchdiag/findings/no-amp/saving_pct"] == no_amp.saving_pct
    for finding in analysis.findings:
        for key, value in finding.evidence.items():
            name = f"torchdiag/findings/{finding.id}/evidence/{key}"
            if value is None:
                assert name not in metrics
            else:
                assert metrics[name] == (int(value) if isinstance(value, bool) else value)
    # Every value is something a tracker takes.
    assert all(isinstance(v, int | float | str) for v in metrics.values())
    assert not any(isinstance(v, bool) for v in metrics.values())


def test_log_to_tensorboard_logdir(fp32_record, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    written = log_to_tensorboard(fp32_record, tmp_path, step=7)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = events.Tags()
    numbers = {k: v for k, v in written.items() if not isinstance(v, str)}
    assert set(tags["scalars"]) == set(numbers)
    for key, value in numbers.items():
        [event] = events.Scalars(key)
        assert event.step == 7
        assert event.value == pytest.approx(value, rel=1e-6)
    texts = {k for k, v in written.items() if isinstance(v, str)}
    assert {"torchdiag/status", "torchdiag/findings/no-amp/severity"} <= texts
    # add_text is stored as a tensor summary per tag.
    assert texts <= {t.removesuffix("/text_summary") for t in tags["tensors"]}


class RecordingWriter:
    """A writer that keeps what it was given (the SummaryWriter interface the function uses)."""

    def __init__(self) -> None:
        self.scalars: dict[str, tuple[float, int | None]] = {}
        self.texts: dict[str, tuple[str, int | None]] = {}
        self.flushed = 0

    def add_scalar(self, tag, scalar_value, global_step=None):
        self.scalars[tag] = (scalar_value, global_step)

    def add_text(self, tag, text_string, global_step=None):
        self.texts[tag] = (text_string, global_step)

    def flush(self):
        self.flushed += 1


def test_log_to_an_open_writer_at_the_run_step_count(fp32_record):
    writer = RecordingWriter()
    written = log_to_tensorboard(fp32_record, writer)
    steps = RunView(fp32_record).headline["steps"]
    assert writer.scalars["torchdiag/steps"] == (steps, steps)
    assert writer.flushed == 1
    assert len(writer.scalars) + len(writer.texts) == len(written)
