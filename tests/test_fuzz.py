"""Bad-input fuzzing: real traces and records, mutated by hypothesis, fed to ``torchdiag report``.

Every case must end in exit 0 with sane numbers (finite, non-negative, shares within 0–100%) or
exit 2 with one line on stderr; never a traceback, and never a partial output file. Deterministic
(``derandomize``) so CI runs the same cases every time; 1,100 cases in all.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tracedata import h200_trace

from torchdiag.cli import main
from torchdiag.traces.load import record_from_traces

SETTINGS = dict(
    deadline=None,  # no wall-clock limits in tests: CI machines are loaded
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ESC = "\x1b]0;x\x07\x1b[2J"

# Values a field may be replaced with: wrong types, extremes, escapes, nothing.
WEIRD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([-1e300, 1e300, -1.0, 0.0, 1e-300, 2.0**63, -(2.0**63)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["", ESC, "ProfilerStep#", "ProfilerStep#-1", "ProfilerStep#99999999999"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
EVENT_FIELDS = ["ph", "cat", "name", "pid", "tid", "ts", "dur", "args", "id"]


@functools.cache
def _seed_trace() -> dict[str, Any]:
    """A real H200 trace cut to its first two profiled steps' first events (fast to read)."""
    doc = json.loads(gzip.decompress(h200_trace("tiny_mlp_launch_bound").read_bytes()))
    events = doc["traceEvents"]
    steps = sorted(
        (e for e in events if str(e.get("name", "")).startswith("ProfilerStep#")),
        key=lambda e: e["ts"],
    )[:2]
    start = steps[0]["ts"]
    end = max(s["ts"] + s["dur"] for s in steps)
    timed = [e for e in events if e.get("ph") != "M" and "ts" in e and start <= e["ts"] <= end]
    timed.sort(key=lambda e: e["ts"])
    kept = [e for e in events if e.get("ph") == "M"] + steps + timed[:600]
    return {**{k: v for k, v in doc.items() if k != "traceEvents"}, "traceEvents": kept}


@functools.cache
def _seed_record() -> str:
    return record_from_traces(h200_trace("tiny_mlp_launch_bound")).to_json().decode()


def _run(path: Path, out: Path | None) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    argv = ["report", str(path), "--no-progress"]
    argv += ["-o", str(out)] if out is not None else ["--format", "json", "-o", "-"]
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    return code, stdout.getvalue(), stderr.getvalue()


def _check(path: Path, html: bool) -> None:
    out = path.with_name("report.html") if html else None
    code, stdout, stderr = _run(path, out)
    assert code in (0, 2), (code, stderr)
    assert "Traceback" not in stderr
    if code == 2:
        assert stdout == "" and stderr.count("\n") == 1, stderr
        assert stderr.startswith("torchdiag: error: ")
        assert out is None or not out.exists(), "a partial report was left"
        return
    if out is not None:
        assert out.read_text(encoding="utf-8").rstrip().endswith("</html>")
        out.unlink()
        return
    doc = json.loads(stdout)
    numbers = doc["headline"]
    for key, value in numbers.items():
        if isinstance(value, float):
            assert math.isfinite(value) and value >= 0, (key, value)
    for key in ("gpu_busy_pct", "input_wait_pct"):
        if numbers[key] is not None:
            assert 0 <= numbers[key] <= 100, (key, numbers[key])
    for finding in doc["findings"]:
        assert 0 <= finding["saving_pct_max"] <= 100, finding


@settings(max_examples=600, **SETTINGS)
@given(
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.sampled_from(EVENT_FIELDS), WEIRD), max_size=6
    ),
    top=st.dictionaries(
        st.sampled_from(["baseTimeNanoseconds", "deviceProperties", "distributedInfo", "schema"]),
        WEIRD,
        max_size=2,
    ),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
    gz=st.booleans(),
    html=st.booleans(),
)
def test_mutated_traces(edits, top, cut, gz, html):
    doc = json.loads(json.dumps(_seed_trace()))
    events = doc["traceEvents"]
    for index, field, value in edits:
        events[index % len(events)][field] = value
    doc.update(top)
    data = json.dumps(doc).encode()
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("t.pt.trace.json.gz" if gz else "t.pt.trace.json")
        path.write_bytes(gzip.compress(data) if gz else data)
        _check(path, html)


def _leaves(node: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _leaves(v, (*path, k))] or [path]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _leaves(v, (*path, i))] or [path]
    return [path]


@settings(max_examples=500, **SETTINGS)
@given(
    edits=st.lists(st.tuples(st.integers(min_value=0), WEIRD), min_size=1, max_size=4),
    html=st.booleans(),
)
def test_mutated_records(edits, html):
    doc = json.loads(_seed_record())
    for index, value in edits:
        leaves = [p for p in _leaves(doc) if p and p[0] != "schema"]
        target = leaves[index % len(leaves)]
        node = doc
        for key in target[:-1]:
            node = node[key]
        node[target[-1]] = value
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.json"
        path.write_text(json.dumps(doc))
        _check(path, html)
