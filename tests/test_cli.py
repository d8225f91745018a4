"""Command-line errors: one line on stderr, exit status 2, no traceback."""

from __future__ import annotations

import gzip
import io
import json
import sys
import time

import pytest
from tracedata import small_trace

from torchdiag.cli import main
from torchdiag.cli import progress as cli


def _one_line_error(err: str) -> None:
    assert err.count("\n") == 1, err
    assert err.startswith("torchdiag: error: ")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json at all",
        b'{"schema": "torchdiag.run/1", "steps": {"count": "x"}}',
        b'{"schema": "torchdiag.run/7"}',
        b"[1, 2, 3]",
        b'{"traceEvents": "nope"}',
    ],
)
def test_bad_files_give_one_line_and_status_2(tmp_path, run_cli, content):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    code, _, err = run_cli("report", str(bad), "--format", "json", "-o", "-")
    assert code == 2
    _one_line_error(err)


def test_corrupt_gzip(tmp_path, run_cli):
    bad = tmp_path / "t.json.gz"
    bad.write_bytes(gzip.compress(b'{"traceEvents": [{"ph": "X", "na')[:-7])
    code, _, err = run_cli("report", str(bad), "--format", "json", "-o", "-")
    assert code == 2
    _one_line_error(err)


def test_missing_file(tmp_path, run_cli):
    code, _, err = run_cli("report", str(tmp_path / "nope.json"))
    assert code == 2
    _one_line_error(err)
    assert "nope.json" in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["report"],
        ["frobnicate"],
        ["report", "x.json", "--format", "pdf"],
        ["report", "--bogus"],
    ],
)
def test_usage_errors(run_cli, argv):
    code, _, err = run_cli(*argv)
    assert code == 2
    _one_line_error(err)


# -- progress bar while reading a trace ------------------------------------------------------


class _Terminal(io.StringIO):
    """A captured stderr that says it is a terminal, as an interactive shell's is."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _capable_terminal(monkeypatch):
    """The environment of an interactive shell, whatever the one running the tests says.

    rich draws no live display on a terminal declared dumb or non-interactive, so the tests that
    expect a bar would depend on how they were started.
    """
    monkeypatch.setenv("TERM", "xterm-256color")
    for name in ("TTY_INTERACTIVE", "TTY_COMPATIBLE", "NO_COLOR", "FORCE_COLOR", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def slow_reader(monkeypatch):
    """Replace the trace reader with one that reports progress slowly; returns its call log."""
    import torchdiag.traces.load as load

    real = load.record_from_traces
    calls: list[object] = []

    def fake(path, *, progress=None, jobs=None):
        calls.append(progress)
        if progress is not None:
            total = 3 << 20
            for done in range(0, total + 1, 1 << 20):
                progress(done, total)
                time.sleep(0.15)
        return real(path)

    monkeypatch.setattr(load, "record_from_traces", fake)
    monkeypatch.setattr(cli, "PROGRESS_DELAY_S", 0.2)
    return calls


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path, run_cli, slow_reader):
    trace = small_trace(tmp_path, steps=3)
    code, out, err = run_cli("report", str(trace), "--format", "text")
    assert code == 0
    assert err == ""
    assert slow_reader == [None]  # not even asked for
    assert "torchdiag: tiny.pt.trace.json" in out


def test_progress_bar_appears_on_a_terminal_for_a_slow_read(
    tmp_path, monkeypatch, capsys, slow_reader
):
    trace = small_trace(tmp_path, steps=3)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["report", str(trace), "--format", "text"]) == 0
    shown = terminal.getvalue()
    assert "reading trace" in shown
    assert "3.1 MB" in shown  # the total, in rich's DownloadColumn units
    out = capsys.readouterr().out
    assert out.startswith("torchdiag: tiny.pt.trace.json")  # stdout untouched by the bar


def test_progress_bar_waits_for_the_delay(tmp_path, monkeypatch, slow_reader):
    trace = small_trace(tmp_path, steps=3)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(cli, "PROGRESS_DELAY_S", 60.0)  # the read ends long before
    assert main(["report", str(trace), "--format", "text", "-o", str(tmp_path / "r.txt")]) == 0
    assert slow_reader and slow_reader[0] is not None
    # No bar: only the line that says where the report went.
    assert terminal.getvalue() == f"Text report: {tmp_path / 'r.txt'}\n"


@pytest.mark.parametrize(
    "extra", [["--format", "json", "-o", "-"], ["--format", "text", "--no-progress"]]
)
def test_no_progress_bar_for_json_on_stdout_or_when_declined(
    tmp_path, monkeypatch, capsys, slow_reader, extra
):
    trace = small_trace(tmp_path, steps=3)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["report", str(trace), *extra]) == 0
    assert terminal.getvalue() == ""
    assert slow_reader == [None]
    if "json" in extra:
        json.loads(capsys.readouterr().out)  # stdout is the document alone


def test_progress_bar_with_unknown_total():
    terminal = _Terminal()
    bar = cli.ReadProgress(terminal, delay_s=0.0)
    bar(5 << 20, None)
    bar(6 << 20, None)
    bar.close()
    assert bar.shown
    assert "reading trace" in terminal.getvalue()
