"""The HTML report in a real browser: headless Chromium, driven over the DevTools protocol.

The string-level tests in ``test_report.py`` prove what the page *contains*; only a browser can
prove what it *does*: that plotly.js and ``report.js`` run without a console error under the
page's Content-Security-Policy, that every chart the page declares is drawn, and that markup
smuggled in through names stays text.

Chromium is driven with ``--remote-debugging-pipe`` (CDP messages as NUL-terminated JSON on file
descriptors 3 and 4), which needs only the standard library: no WebSocket client, no port, no
extra dependency. Without Chromium the tests skip, unless ``TORCHDIAG_REQUIRE_BROWSER=1`` (set by
``.ci/run``, which installs Debian's chromium), where a missing browser fails instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import html
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tracedata import H200
from viewing import analyze_record, analyzed

from torchdiag.record import (
    CollectorStatus,
    DeviceInfo,
    Environment,
    GpmSeries,
    GpuSeries,
    HostSeries,
    KernelStat,
    LoaderInfo,
    OpStat,
    OptimizerInfo,
    ProfilerWindow,
    RunRecord,
    RunStatus,
    Samples,
    StepSeries,
    TraceStep,
    TraceSummary,
)
from torchdiag.report.html import render_html
from torchdiag.report.verdict import verdict
from torchdiag.view.run_view import RunView

STALL_TRACE = H200 / "dataloader_stall_w0.pt.trace.json.gz"
STALL_SAMPLES = H200 / "dataloader_stall_w0.samples.json"

# Each payload would run script or create an element if it reached the page as markup.
PAYLOADS = (
    "</script><script>window.__pwned=1</script>",
    "<!--",
    "<img src=x onerror=window.__pwned=1>",
)
EVIL = " ".join(PAYLOADS)

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-pipe",
)
LOAD_TIMEOUT_S = 30.0
# Plotly draws asynchronously (fonts, layout passes): the page gets this long to draw everything.
DRAW_TIMEOUT_MS = 10_000

# Run inside the page: waits until every declared chart holds an <svg> (or the deadline passes),
# then describes the page. Declared charts are the elements report.js draws into.
INSPECT_JS = f"""
(async () => {{
  const charts = () => Array.from(document.querySelectorAll("[data-figure]"));
  const drawn = () => charts().filter((el) => el.querySelector("svg.main-svg") !== null);
  const deadline = Date.now() + {DRAW_TIMEOUT_MS};
  let firstChartMs = null;
  while (drawn().length < charts().length && Date.now() < deadline) {{
    if (firstChartMs === null && drawn().length > 0) firstChartMs = performance.now();
    await new Promise((resolve) => setTimeout(resolve, 10));
  }}
  if (firstChartMs === null && drawn().length > 0) firstChartMs = performance.now();
  const rect = (node) => {{
    if (!node) return null;
    const b = node.getBoundingClientRect();
    return b.width > 0 && b.height > 0 ? [b.left, b.top, b.right, b.bottom] : null;
  }};
  const chartInfo = {{}};
  for (const el of drawn()) {{
    const full = el._fullLayout || {{}};
    chartInfo[el.getAttribute("data-figure")] = {{
      legend: rect(el.querySelector("g.legend")),
      modebar: rect(el.querySelector(".modebar")),
      y_range: full.yaxis ? full.yaxis.range : null,
      y_ticks: Array.from(el.querySelectorAll(".yaxislayer-above .ytick text")).map(
        (t) => t.textContent),
      colorbar_ticks: Array.from(el.querySelectorAll(".colorbar .cbaxis text")).map(
        (t) => [t.textContent, rect(t)]),
    }};
  }}
  let island = {{}};
  try {{ island = JSON.parse(document.getElementById("torchdiag-data").textContent); }}
  catch (err) {{ island = {{ error: String(err) }}; }}
  return {{
    declared: charts().map((el) => el.getAttribute("data-figure")),
    drawn: drawn().map((el) => el.getAttribute("data-figure")),
    figures: Object.keys(island.figures || {{}}),
    plotly: typeof Plotly !== "undefined",
    pwned: typeof window.__pwned,
    img_x: document.querySelectorAll('img[src="x"]').length,
    images: document.querySelectorAll("img").length,
    scripts: document.scripts.length,
    comments: (() => {{
      const walker = document.createTreeWalker(document, NodeFilter.SHOW_COMMENT);
      let n = 0;
      while (walker.nextNode()) n++;
      return n;
    }})(),
    text: document.body.innerText,
    title: document.title,
    charts: chartInfo,
    first_chart_ms: firstChartMs,
  }};
}})()
"""


# ---------------------------------------------------------------------------------------------
# A minimal CDP client over --remote-debugging-pipe


class CdpError(RuntimeError):
    """The browser answered a command with an error, or stopped answering."""


class Browser:
    """A headless Chromium and the browser-level CDP connection to it.

    Commands are sent with :meth:`call` (optionally to an attached page's session); events that
    arrive meanwhile are kept in :attr:`events` for the caller to inspect.
    """

    def __init__(self, executable: str, user_data_dir: Path) -> None:
        cmd_read, self._cmd_write = os.pipe()  # we write commands; Chromium reads fd 3
        self._res_read, res_write = os.pipe()  # Chromium writes fd 4; we read responses

        def wire_fds() -> None:  # runs in the child between fork and exec
            # Move both ends above 10 first so that dup2 onto 3 and 4 cannot clobber the other.
            high_in = fcntl.fcntl(cmd_read, fcntl.F_DUPFD, 10)
            high_out = fcntl.fcntl(res_write, fcntl.F_DUPFD, 10)
            os.dup2(high_in, 3)  # os.dup2 makes the copies inheritable
            os.dup2(high_out, 4)

        self.proc = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Python's own descriptors are non-inheritable (PEP 446): only 0-4 reach Chromium.
            close_fds=False,
            preexec_fn=wire_fds,
        )
        os.close(cmd_read)
        os.close(res_write)
        self._buffer = b""
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> int:
        """Send one command without waiting; return its id."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._cmd_write, json.dumps(message).encode() + b"\0")
        return self._next_id

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """Send one command and wait for its answer; raise :class:`CdpError` on an error."""
        wanted = self.send(method, params, session)
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while wanted not in self._replies:
            self._pump(deadline)
        reply = self._replies.pop(wanted)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_for(self, method: str, session: str, timeout_s: float = LOAD_TIMEOUT_S) -> None:
        """Wait for the event ``method`` on ``session`` (keeping every event that arrives)."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while True:
            for event in self.events[seen:]:
                if event.get("method") == method and event.get("sessionId") == session:
                    return
            seen = len(self.events)
            self._pump(deadline)

    def _pump(self, deadline: float) -> None:
        """Receive one message: file a reply by id, keep an event, and start child frames."""
        message = self._receive(deadline)
        if "id" in message:
            self._replies[message["id"]] = message
            return
        self.events.append(message)
        params = message.get("params", {})
        if message.get("method") == "Target.attachedToTarget" and params.get("waitingForDebugger"):
            # An out-of-process frame (a sandboxed iframe is one) is held before its first
            # script until we listen to it, so none of its console errors can be missed.
            child = params["sessionId"]
            for method in ("Runtime.enable", "Log.enable", "Runtime.runIfWaitingForDebugger"):
                self.send(method, session=child)

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._res_read], [], [], max(left, 0))
            if not ready:
                raise CdpError("no answer from Chromium in time")
            chunk = os.read(self._res_read, 1 << 20)
            if not chunk:
                raise CdpError(f"Chromium closed the pipe (exit status {self.proc.poll()})")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def close(self) -> None:
        """Ask Chromium to exit, and kill it if it does not."""
        with contextlib.suppress(CdpError, OSError):  # already gone: nothing to ask
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_write)
        os.close(self._res_read)


@dataclass
class PageResult:
    """What a page did in the browser: its :data:`INSPECT_JS` answer, the same for each
    out-of-process iframe in it, and the console errors of all of them."""

    state: dict[str, Any]
    frames: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    acted: Any = None


def open_page(browser: Browser, path: Path, act: str | None = None) -> PageResult:
    """Load ``path`` in a fresh tab, let it draw, and collect its state and console errors;
    then, given ``act`` (a JavaScript expression, maybe a promise), its value as ``acted``."""
    target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
        "sessionId"
    ]
    try:
        for domain in ("Page", "Runtime", "Log"):
            browser.call(f"{domain}.enable", session=session)
        auto_attach = {"autoAttach": True, "waitForDebuggerOnStart": True, "flatten": True}
        browser.call("Target.setAutoAttach", auto_attach, session=session)
        first_event = len(browser.events)
        browser.call("Page.navigate", {"url": path.as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired", session)
        children = [
            e["params"]["sessionId"]
            for e in browser.events[first_event:]
            if e.get("method") == "Target.attachedToTarget" and e.get("sessionId") == session
        ]
        state = _inspect(browser, session)
        frames = [_inspect(browser, child) for child in children]
        acted = None if act is None else _evaluate(browser, session, act)
        sessions = {session, *children}
        errors = [
            message
            for event in browser.events[first_event:]
            if event.get("sessionId") in sessions
            for message in [_console_error(event)]
            if message is not None
        ]
        return PageResult(state=state, frames=frames, errors=errors, acted=acted)
    finally:
        browser.call("Target.closeTarget", {"targetId": target})


def _inspect(browser: Browser, session: str) -> dict[str, Any]:
    return _evaluate(browser, session, INSPECT_JS)


def _evaluate(browser: Browser, session: str, expression: str) -> Any:
    answer = browser.call(
        "Runtime.evaluate",
        {"expression": expression, "awaitPromise": True, "returnByValue": True},
        session=session,
    )
    if "exceptionDetails" in answer:
        raise CdpError(f"page script failed: {answer['exceptionDetails']}")
    return answer["result"]["value"]


def _console_error(event: dict[str, Any]) -> str | None:
    """The text of an error-level console message, uncaught exception or browser log entry."""
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        return "uncaught: " + str(details.get("exception", {}).get("description") or details)
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        return "console: " + " ".join(str(a.get("value", a)) for a in params.get("args", []))
    if method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        # Network failures and Content-Security-Policy violations arrive here.
        entry = params["entry"]
        return f"log ({entry.get('source')}): {entry.get('text')}"
    return None


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module (a launch costs about a second)."""
    executable = _chromium()
    if executable is None:
        if os.environ.get("TORCHDIAG_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is required here (TORCHDIAG_REQUIRE_BROWSER=1) but not found")
        pytest.skip("chromium is not installed (CI installs Debian's chromium)")
    with tempfile.TemporaryDirectory(prefix="torchdiag-chromium-") as profile:
        b = Browser(executable, Path(profile))
        try:
            yield b
        finally:
            b.close()


# ---------------------------------------------------------------------------------------------
# Records


def live_like_record(n_steps: int = 60) -> RunRecord:
    """A record shaped like a live CUDA capture: steps, host and GPU samples with GPM, loaders,
    an optimizer and a profiler window with a breakdown, top operators and kernels."""
    walls = [400.0 if i == 0 else 90.0 + 7 * (i % 4) for i in range(n_steps)]
    waits = [60.0 if i % 4 == 0 else 8.0 for i in range(n_steps)]
    n_rows = 40
    t_s = [0.5 * i for i in range(n_rows)]
    gpu = GpuSeries(
        index=0,
        name="NVIDIA H200",
        memory_total_bytes=141 * 1024**3,
        power_limit_w=700.0,
        utilization_pct=[None if i == 3 else 40.0 + i % 30 for i in range(n_rows)],
        memory_utilization_pct=[20.0] * n_rows,
        memory_used_bytes=[float(12 * 1024**3)] * n_rows,
        power_w=[200.0 + 3 * i for i in range(n_rows)],
        sm_clock_mhz=[1980.0] * n_rows,
        max_sm_clock_mhz=1980.0,
        temperature_c=[55.0] * n_rows,
        throttle_reasons=[0] * n_rows,
        gpm=GpmSeries(
            sm_active_pct=[45.0] * n_rows,
            sm_occupancy_pct=[25.0] * n_rows,
            tensor_active_pct=[10.0 + i % 5 for i in range(n_rows)],
            dram_bandwidth_pct=[30.0] * n_rows,
        ),
    )
    host = HostSeries(
        cpu_count=8,
        memory_total_bytes=256 * 1024**3,
        cpu_pct_per_core=[[90.0, 20.0, 15.0, 10.0, 5.0, 5.0, 5.0, 5.0]] * n_rows,
        process_cpu_pct=[100.0] * n_rows,
        process_rss_bytes=[3.0 * 1024**3] * n_rows,
        worker_count=[0.0] * n_rows,
        memory_used_bytes=[40.0 * 1024**3] * n_rows,
    )
    steps = [
        TraceStep(number=n, start_us=100_000.0 * n, duration_ms=95.0, kernels=420, launches=430)
        for n in range(10, 15)
    ]
    summary = TraceSummary(
        origin="live",
        format="chrome-trace",
        event_count=48_000,
        span_ms=480.0,
        has_gpu=True,
        device_kind="cuda",
        step_detection="profiler-step",
        steps=steps,
        kernel_count=2100,
        kernel_time_ms=210.0,
        gpu_busy_ms=230.0,
        top_ops=[
            OpStat(name="aten::convolution", calls=300, total_ms=120.0, gpu_ms=90.0),
            OpStat(name="aten::addmm", calls=50, total_ms=20.0, gpu_ms=15.0),
        ],
        top_kernels=[
            KernelStat(name="sm90_xmma_gemm", kernel_class="gemm", calls=200, total_ms=90.0),
            KernelStat(name="elementwise_kernel", kernel_class="elementwise", calls=900),
        ],
        kernel_class_ms={"gemm": 90.0, "elementwise": 30.0, "conv": 60.0},
    )
    return RunRecord(
        name="resnet50-live",
        started_utc="2026-11-27T10:00:00Z",
        ended_utc="2026-11-27T10:01:00Z",
        duration_s=60.0,
        status=RunStatus(state="completed"),
        collectors={
            "steps": CollectorStatus(available=True),
            "nvml": CollectorStatus(available=True),
        },
        steps=StepSeries(
            detection="optimizer",
            count=n_steps,
            total_wall_s=sum(walls) / 1000,
            total_input_wait_s=sum(waits) / 1000,
            first_step=list(range(n_steps)),
            steps=[1] * n_steps,
            start_s=[sum(walls[:i]) / 1000 for i in range(n_steps)],
            wall_ms=walls,
            input_wait_ms=waits,
            max_wall_ms=walls,
            profiled=[10 <= i < 15 for i in range(n_steps)],
        ),
        samples=Samples(
            sample_count=n_rows, t_s=t_s, rows_merged=[1] * n_rows, host=host, gpus=[gpu]
        ),
        environment=Environment(
            torch_version="2.14.1+cu130",
            devices=[DeviceInfo(index=0, name="NVIDIA H200", capability="9.0")],
            loaders=[LoaderInfo(loader_id=1, dataset="ImageFolder", batch_size=64, batches=60)],
            optimizers=[OptimizerInfo(class_name="SGD", foreach=True, steps=n_steps)],
        ),
        profiler=ProfilerWindow(first_step=10, steps=5, wall_s=0.48, summary=summary),
    )


def trace_record() -> RunRecord:
    """The H200 input-stall trace as ``torchdiag report`` reads it, with the sampler rows that
    were recorded beside it (so the page has every chart a live run has)."""
    from torchdiag.traces.load import record_from_traces

    record = record_from_traces(STALL_TRACE)
    if not STALL_SAMPLES.is_file():
        return record
    rows = json.loads(STALL_SAMPLES.read_text())
    t0 = rows[0]["t"]

    def gpm(i: int) -> list[float | None]:
        return [r["gpm"][i] if "gpm" in r else None for r in rows]

    gpu = GpuSeries(
        index=0,
        name="NVIDIA H200",
        utilization_pct=[r["gpu_util"] for r in rows],
        memory_utilization_pct=[r["mem_util"] for r in rows],
        memory_used_bytes=[r["mem_used"] for r in rows],
        power_w=[r["power_mw"] / 1000 for r in rows],
        sm_clock_mhz=[r["sm_clock"] for r in rows],
        gpm=GpmSeries(
            sm_active_pct=gpm(0),
            sm_occupancy_pct=gpm(1),
            tensor_active_pct=gpm(2),
            dram_bandwidth_pct=gpm(3),
            fp32_active_pct=gpm(4),
        ),
    )
    host = HostSeries(
        cpu_count=len(rows[0]["cpu_percpu"]),
        cpu_pct_per_core=[r["cpu_percpu"] for r in rows],
        process_rss_bytes=[r["rss"] for r in rows],
    )
    samples = Samples(
        sample_count=len(rows),
        t_s=[r["t"] - t0 for r in rows],
        rows_merged=[1] * len(rows),
        host=host,
        gpus=[gpu],
    )
    return msgspec.structs.replace(record, samples=samples)


def poisoned(record: RunRecord) -> RunRecord:
    """``record`` with the payloads in every name a report shows: run, status message, dataset,
    operators, kernels and kernel classes (which become chart labels)."""
    replace = msgspec.structs.replace
    summary = record.profiler.summary if record.profiler else record.traces[0]
    summary = replace(
        summary,
        top_ops=[replace(op, name=op.name + EVIL) for op in summary.top_ops],
        top_kernels=[replace(k, name=k.name + EVIL) for k in summary.top_kernels],
        kernel_class_ms={k + EVIL: v for k, v in summary.kernel_class_ms.items()},
    )
    env = replace(
        record.environment,
        loaders=[*record.environment.loaders, LoaderInfo(loader_id=99, dataset=EVIL)],
    )
    record = replace(
        record,
        name=record.name + EVIL,
        status=RunStatus(state="failed", exception_type="RuntimeError", message=EVIL),
        environment=env,
    )
    if record.profiler is not None:
        return replace(record, profiler=replace(record.profiler, summary=summary))
    return replace(record, traces=[summary, *record.traces[1:]])


def ranks_record() -> RunRecord:
    """Two ranks of a run, merged as ``torchdiag report RUN_DIR`` merges them, with the payload
    in a host name and rank 2 of 3 missing (the ranks table and chart)."""
    from torchdiag.view.ranks import merge_rank_records
    from torchdiag.view.run_view import RunView

    replace = msgspec.structs.replace
    ranks = []
    for rank in (0, 1):
        base = poisoned(live_like_record())
        env = replace(base.environment, hostname=f"node{rank}{EVIL}")
        ranks.append(replace(base, rank=rank, world_size=3, environment=env))
    return merge_rank_records([RunView(r) for r in ranks])


RECORDS = {
    "ranks-poisoned": ranks_record,
    "h200-dataloader-stall-trace": trace_record,
    "live-like": live_like_record,
    "live-like-poisoned": lambda: poisoned(live_like_record()),
    "h200-trace-poisoned": lambda: poisoned(trace_record()),
}


def build(name: str) -> RunRecord:
    """The record ``name``."""
    return RECORDS[name]()


# ---------------------------------------------------------------------------------------------
# Checks of what a page shows


def island(page: str) -> dict[str, Any]:
    """The page's chart data (its JSON island)."""
    match = re.search(r'<script type="application/json" id="torchdiag-data">(.*?)</script>', page)
    assert match is not None
    return json.loads(match.group(1))


def _overlap(a: list[float], b: list[float]) -> bool:
    """Whether two [left, top, right, bottom] rectangles share any area."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _whole(label: str) -> bool:
    return label.replace(",", "").isdigit()


def assert_charts_readable(figures: dict[str, Any], charts: dict[str, Any]) -> None:
    """What a reader would trip over, as drawn: legends under the toolbar, fractional counts,
    a heat map whose core axis runs past its rows or whose colour-bar labels collide."""
    for name, chart in charts.items():
        if chart["legend"] is not None and chart["modebar"] is not None:
            assert not _overlap(chart["legend"], chart["modebar"]), name
    for name in ("step_distribution", "input_waits"):
        if name in charts:
            assert charts[name]["y_ticks"] and all(map(_whole, charts[name]["y_ticks"])), name
    if "cpu_heatmap" in charts:
        heat = charts["cpu_heatmap"]
        cores = len(figures["cpu_heatmap"]["data"][0]["z"])
        assert heat["y_range"] == [cores - 0.5, -0.5]
        assert heat["y_ticks"][0] == "0" and all(map(_whole, heat["y_ticks"]))
        boxes = [box for _, box in heat["colorbar_ticks"] if box is not None]
        assert len(boxes) >= 2
        assert not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


# ---------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_report_runs_cleanly_in_chromium(browser: Browser, tmp_path: Path, name: str) -> None:
    record = build(name)
    analysis = analyze_record(record)
    page = render_html(RunView(record), analysis)
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    result = open_page(browser, path)
    state = result.state

    assert result.errors == [], result.errors
    assert state["plotly"], "plotly.js did not load"
    # Every chart the HTML source declares is in the DOM, has data, and was drawn as an <svg>.
    declared_in_source = re.findall(r'data-figure="([^"]+)"', page)
    assert state["declared"] == declared_in_source
    assert len(state["declared"]) >= 3, state["declared"]  # steps, breakdown, samples, ...
    # A declared chart without data would stay empty (report.js skips it). The island may hold
    # more figures than the template shows; that is the renderer's choice, not a browser fault.
    assert set(state["declared"]) <= set(state["figures"])
    assert state["drawn"] == state["declared"]
    if record.samples is not None:
        assert "samples" in state["drawn"]
    # The verdict reaches the page as text.
    assert verdict(RunView(record), analysis) in state["text"]

    # Markup from the record stayed text: nothing ran, no element or comment was created.
    assert state["pwned"] == "undefined"
    assert state["img_x"] == 0 and state["images"] == 0
    # The data island, packed plotly.js, report.js, and plotly.js as report.js unpacked it.
    assert state["scripts"] == 4
    assert_charts_readable(island(page)["figures"], state["charts"])
    assert state["comments"] == 0
    if "poisoned" in name:
        assert "<img src=x onerror=window.__pwned=1>" in state["text"]
        assert "</script><script>window.__pwned=1</script>" in state["text"]


def test_inspection_would_notice_injected_markup(browser: Browser, tmp_path: Path) -> None:
    """The checks can fail: the same payloads pasted raw into a report are caught.

    Escaping is the first defence; the page's hash-based script policy is the second: it lets
    only plotly.js and report.js run, so even raw injected scripts and inline event handlers stay
    inert (and are reported as policy violations) while the element checks still see them.
    """
    page = render_html(*analyzed(live_like_record()))
    # The payloads raw, a console error, and a fetch the page's policy must block.
    extra = f'{PAYLOADS[0]}{PAYLOADS[2]}<script>console.error("boom")</script>'
    extra += '<img src="https://example.invalid/leak.png">'
    raw = page.replace("<footer", f"<div>{extra}</div><footer", 1)
    path = tmp_path / "raw.html"
    path.write_text(raw, encoding="utf-8")
    result = open_page(browser, path)
    state = result.state
    assert state["pwned"] == "undefined"  # the policy blocked the injected script and handler
    assert state["img_x"] == 1
    assert state["scripts"] == 6
    assert not any("boom" in e for e in result.errors), result.errors
    assert any("Content Security Policy" in e for e in result.errors), result.errors


# ---------------------------------------------------------------------------------------------
# Jupyter: RunRecord._repr_html_


class _IframeFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.iframes: list[dict[str, str | None]] = []
        self.other_tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "iframe":
            self.iframes.append(dict(attrs))
        else:
            self.other_tags.append(tag)


def test_notebook_repr_is_an_isolated_iframe() -> None:
    record = poisoned(live_like_record())
    shown = record._repr_html_()
    finder = _IframeFinder()
    finder.feed(shown)
    finder.close()
    # One iframe and nothing else: the page's CSS, scripts and CSP stay out of the notebook.
    assert len(finder.iframes) == 1 and finder.other_tags == []
    frame = finder.iframes[0]
    # srcdoc decodes back to exactly the self-contained report (offline: plotly.js inlined).
    assert frame["srcdoc"] == render_html(*analyzed(record))
    assert 'id="torchdiag-plotly"' in (frame["srcdoc"] or "")
    assert "allow-scripts" in (frame["sandbox"] or "")
    assert "allow-same-origin" not in (frame["sandbox"] or "")
    # The verdict is there, escaped (twice: once by the page, once for the attribute).
    title = html.escape(html.escape(verdict(RunView(record), analyze_record(record)), quote=False))
    assert title in shown
    for payload in PAYLOADS:
        assert payload not in shown


def test_notebook_repr_draws_in_chromium(browser: Browser, tmp_path: Path) -> None:
    """The iframe as a notebook shows it: the report inside draws every chart without a console
    error, and nothing in it runs or reaches the notebook page."""
    record = poisoned(live_like_record())
    path = tmp_path / "notebook.html"
    path.write_text(
        f"<!DOCTYPE html><html><body><p>cell output:</p>{record._repr_html_()}</body></html>",
        encoding="utf-8",
    )
    result = open_page(browser, path)
    assert result.errors == [], result.errors
    outer = result.state
    assert outer["pwned"] == "undefined"
    assert outer["scripts"] == 0 and outer["img_x"] == 0 and outer["declared"] == []
    # The sandboxed iframe runs as its own (opaque-origin) frame; inspect it there.
    (inner,) = result.frames
    assert inner["plotly"] and len(inner["declared"]) >= 3
    assert inner["drawn"] == inner["declared"]
    assert inner["pwned"] == "undefined" and inner["img_x"] == 0 and inner["scripts"] == 4
    assert verdict(RunView(record), analyze_record(record)) in inner["text"]


SHOW_ALL_JS = """
(() => {
  const table = document.getElementById("ops-table");
  const rows = () => Array.from(table.tBodies[0].rows);
  const shown = () => rows().filter((r) => r.getClientRects().length > 0);
  const calls = (r) => parseFloat(r.cells[1].getAttribute("data-v"));
  const button = document.querySelector('button.show-all[data-table="ops-table"]');
  const out = { total: rows().length, folded: shown().length };
  button.click();
  out.all = shown().length;
  out.expanded = button.getAttribute("aria-expanded");
  button.click();
  out.refolded = shown().length;
  // Sorting by calls shows the rows with the most calls first, still folded.
  table.querySelector('th[data-sort="num"]').click();
  out.shown_calls = shown().map(calls);
  out.top_calls = rows().map(calls).sort((a, b) => b - a).slice(0, out.folded);
  // A filter searches the folded rows too.
  const hidden = rows().find((r) => r.getClientRects().length === 0);
  const input = document.querySelector('input.table-search[data-table="ops-table"]');
  input.value = hidden.cells[0].getAttribute("title");
  input.dispatchEvent(new Event("input"));
  out.found = shown().includes(hidden);
  input.value = "";
  input.dispatchEvent(new Event("input"));
  out.cleared = shown().length;
  return out;
})()
"""


def test_long_tables_fold_and_show_all_in_chromium(browser: Browser, tmp_path: Path) -> None:
    """The operator table shows its top rows; "show all" reveals every row, nothing is lost, and
    sorting and filtering work on all of them."""
    record = trace_record()
    path = tmp_path / "report.html"
    path.write_text(render_html(*analyzed(record)), encoding="utf-8")
    result = open_page(browser, path, act=SHOW_ALL_JS)
    assert result.errors == [], result.errors
    acted = result.acted
    assert acted["total"] == 50 and acted["folded"] == 15  # the trace has 50+ operators
    assert acted["all"] == 50 and acted["expanded"] == "true"
    assert acted["refolded"] == 15
    assert acted["shown_calls"] == acted["top_calls"]
    assert acted["found"] and acted["cleared"] == 15
