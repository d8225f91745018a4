"""Hostile and broken input to the command line: one line and exit 2, or a sane report; never a
hang, a traceback, a partial file, an overwritten input or escape codes reaching the terminal."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from tracedata import h200_trace, small_trace

from torchdiag import files
from torchdiag.record import RunRecord, StepSeries, save_record


def _one_line_error(code: int, out: str, err: str) -> None:
    assert code == 2 and out == "", (code, out, err)
    assert err.count("\n") == 1 and err.startswith("torchdiag: error: "), err
    assert "Traceback" not in err


def test_fifo_is_refused_without_blocking(tmp_path, run_cli):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    _one_line_error(*run_cli("report", str(fifo), "--format", "json", "-o", "-"))


@pytest.mark.parametrize("argv", [["report", ""], ["report", " "], ["diff", "{trace}", ""]])
def test_empty_paths_are_refused(tmp_path, run_cli, argv, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty path must not mean "the current folder"
    trace = small_trace(tmp_path, "t.pt.trace.json")
    code, out, err = run_cli(*(a.format(trace=trace) for a in argv))
    _one_line_error(code, out, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == [trace.name]


def test_symlink_loop_is_named(tmp_path, run_cli):
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop)
    code, out, err = run_cli("report", str(loop))
    _one_line_error(code, out, err)
    assert "symbolic links" in err


def test_output_equal_to_input_is_refused(tmp_path, run_cli):
    trace = small_trace(tmp_path, "t.pt.trace.json")
    before = trace.read_bytes()
    _one_line_error(*run_cli("report", str(trace), "-o", str(trace)))
    assert trace.read_bytes() == before


def test_non_utf8_file_name_still_reports(tmp_path, run_cli):
    name = os.fsdecode(b"trace-\xff\xfe.json")
    trace = small_trace(tmp_path, name)
    out_html = tmp_path / "report.html"
    code, _, err = run_cli("report", str(trace), "-o", str(out_html))
    assert code == 0, err
    page = out_html.read_text(encoding="utf-8")
    assert "trace-\ufffd\ufffd.json" in page


def test_failed_write_leaves_no_partial_report(tmp_path, run_cli, monkeypatch):
    trace = small_trace(tmp_path, "t.pt.trace.json")
    target = tmp_path / "report.html"
    target.write_text("the previous report")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", disk_full)
    _one_line_error(*run_cli("report", str(trace), "-o", str(target)))
    assert target.read_text() == "the previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", trace.name]


@pytest.mark.parametrize("value", [-1000.0, float("inf"), 2.0**63, float("nan")])
def test_absurd_durations_in_a_record_are_refused(tmp_path, run_cli, value):
    steps = StepSeries(
        detection="manual",
        count=3,
        total_wall_s=0.3,
        first_step=[0, 1, 2],
        steps=[1, 1, 1],
        start_s=[0, 0.1, 0.2],
        wall_ms=[100.0, value, 100.0],
        input_wait_ms=[0.0] * 3,
        max_wall_ms=[100.0] * 3,
        profiled=[False] * 3,
    )
    path = tmp_path / "run.json"
    path.write_bytes(RunRecord(steps=steps).to_json().replace(b"Infinity", b"1e999"))
    code, out, err = run_cli("report", str(path), "--format", "json", "-o", "-")
    _one_line_error(code, out, err)
    assert "steps.wall_ms[1]" in err or "not valid JSON" in err or "invalid" in err
    good = tmp_path / "good.json"
    save_record(RunRecord(steps=StepSeries(**{**_fields(steps), "wall_ms": [100.0] * 3})), good)
    code, _, err = run_cli("diff", str(good), str(path))
    _one_line_error(code, "", err)


def _fields(struct) -> dict:
    return {f: getattr(struct, f) for f in struct.__struct_fields__}


def test_trace_containing_the_record_schema_text_is_a_trace(tmp_path, run_cli):
    trace = small_trace(tmp_path, note='"schema": "torchdiag.run/1"')
    code, out, err = run_cli("report", str(trace), "--format", "json", "-o", "-")
    assert code == 0, err
    assert json.loads(out)["record"]["source"] == "trace"


@pytest.mark.parametrize("base", [10**30, 1e30, -(10**20), "soon"])
def test_absurd_base_time_keeps_the_trace(tmp_path, run_cli, base):
    trace = small_trace(tmp_path, baseTimeNanoseconds=base)
    code, out, err = run_cli("report", str(trace), "--format", "json", "-o", "-")
    assert code == 0, err
    assert json.loads(out)["headline"]["steps"] == 4


def test_one_unreadable_file_in_a_directory_is_skipped(tmp_path, run_cli, monkeypatch):
    folder = tmp_path / "ranks"
    folder.mkdir()
    for rank in (0, 1):
        data = gzip.decompress(h200_trace("transformer_amp").read_bytes())
        (folder / f"rank{rank}.pt.trace.json").write_bytes(data)
    from torchdiag.traces import load

    original = load.open_trace

    def unreadable(path, *args, **kwargs):
        if Path(path).name.startswith("rank1"):
            raise PermissionError(13, "Permission denied", str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(load, "open_trace", unreadable)
    code, out, err = run_cli("report", str(folder), "--format", "json", "-o", "-")
    assert code == 0, err
    assert json.loads(out)["headline"]["steps"] == 4


ESCAPES = "\x1b[2J\x1b]0;pwned\x07\x1b]52;c;cHduZWQ=\x07\x1b]8;;http://x\x1b\\link\x9b31m"


@pytest.mark.parametrize("fmt", ["text", "md", "json"])
def test_escape_sequences_never_reach_the_terminal(tmp_path, run_cli, fmt):
    trace = small_trace(tmp_path, f"name{ESCAPES[:4]}.json", op=f"evil{ESCAPES}")
    code, out, err = run_cli("report", str(trace), "--format", fmt, "-o", "-")
    assert code == 0, err
    assert not any(ch in out for ch in "\x1b\x07\x9b"), repr(out[:200])
    if fmt == "json":
        json.loads(out)  # still valid JSON
    code, out, err = run_cli("diff", str(trace), str(trace))
    assert code == 0 and not any(ch in out + err for ch in "\x1b\x07\x9b")


@pytest.mark.parametrize("jobs", ["0", "-2", "many"])
def test_bad_jobs_count_is_refused(tmp_path, run_cli, jobs):
    trace = small_trace(tmp_path, "t.pt.trace.json")
    _one_line_error(*run_cli("report", str(trace), "--jobs", jobs))
