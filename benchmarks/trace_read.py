"""How long ``torchdiag report TRACE`` takes, and how much memory, against the floor and HTA.

    python benchmarks/trace_read.py [--sizes 1,10,100] [--repeat 5] [--hta] [--plain] [--base TREE]

Every measurement is one fresh process, started and reaped here with ``os.wait4``, so its wall
time covers interpreter start, imports and output, and its peak RSS (``ru_maxrss``) is its own,
not the running maximum over all children that ``RUSAGE_CHILDREN`` gives. Repetitions are
interleaved (every measurement once, then again) so load from other users of the machine hits
them alike; the table shows medians.

Measurements, per trace size:

- ``gunzip`` (``read`` for plain JSON): stream the file and discard it, the I/O floor;
- ``json.load``: gunzip + ``json.load`` of the whole document, what "just parsing it" costs;
  skipped where it would not fit in memory (about 6x the JSON size);
- ``report``: ``torchdiag report TRACE``, the default invocation (HTML beside the input plus the
  text summary on stdout);
- ``report-json``: ``torchdiag report TRACE --format json -o -``;
- ``report-nocache``: the default report with the user cache turned off
  (``TORCHDIAG_CACHE_DIR=""``), as a first report ever: plotly.js packed and the templates
  compiled in the process;
- ``report@base``, ``report-json@base`` (with ``--base TREE``): the same commands with another
  copy of torchdiag first on ``PYTHONPATH`` (e.g. ``git archive`` of an earlier commit), measured
  in the same interleaved rounds so that before and after see the same load;
- ``hta`` (with ``--hta``): HolisticTraceAnalysis (PyPI ``traceinsight``) loading the trace and
  computing its temporal, kernel and idle-time breakdowns. It is installed into its own venv
  (``--hta-venv``, default ``/tmp/hta-venv``), never into the project's.

Sizes: ``1`` is the trace itself (``--trace``); ``N`` > 1 is a synthetic trace of N back-to-back
copies made by ``make_synthetic_trace.py``, gzip-compressed below ``--plain-from`` and plain JSON
from there on (the 100x is ~5.4 GB either way; plain saves minutes of compression). ``--plain``
also measures a plain-JSON copy of every gzip size, so time per GB can be compared within one
encoding. Synthetic files are deleted after their size is measured unless ``--keep``.

Every torchdiag command runs once untimed before the measured rounds, as a user's second report
would: the user cache (packed plotly.js, compiled templates; a folder of this benchmark's own,
``--workdir``/user-cache, never the real one) is then filled, and Python has written the
``.pyc`` files of the tree it runs (``PYTHONDONTWRITEBYTECODE`` is dropped from the children's
environment: an installed package has its bytecode compiled at install time).

Results: a table on stdout and ``benchmarks/results/trace_read.json`` (rewritten after every
size, so a long run that is interrupted keeps what it measured).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_TRACE = Path("/work/shared/traces/external/hta/df_index_resolver.json.gz")
DEFAULT_OUT = HERE / "results" / "trace_read.json"
DEFAULT_HTA_VENV = Path("/tmp/hta-venv")
# torchdiag.user_cache.CACHE_DIR_ENV, spelled out: this script does not import torchdiag.
CACHE_DIR_ENV = "TORCHDIAG_CACHE_DIR"
HTA_PACKAGE = "traceinsight"  # the PyPI distribution that provides the ``hta`` module
BLOCK = 16 * 1024 * 1024
GB = 1e9  # time per GB uses decimal gigabytes of uncompressed JSON
# Peak memory of a full parse relative to the JSON size (json.load: 275 MiB for 54 MB; HTA a
# little more). Used only to skip runs that would not fit in this machine's memory.
JSON_LOAD_MEMORY_FACTOR = 6.0
HTA_MEMORY_FACTOR = 7.0

# The child programs. Each is a separate ``python -c`` so that it imports only what it needs.
GUNZIP_CODE = """
import gzip, sys
path = sys.argv[1]
with open(path, "rb") as probe:
    gz = probe.read(2) == b"\\x1f\\x8b"
with (gzip.open(path, "rb") if gz else open(path, "rb")) as fh:
    while fh.read(16 << 20):
        pass
"""
JSON_LOAD_CODE = """
import gzip, json, sys
path = sys.argv[1]
with open(path, "rb") as probe:
    gz = probe.read(2) == b"\\x1f\\x8b"
with (gzip.open(path, "rb") if gz else open(path, "rb")) as fh:
    doc = json.load(fh)
assert len(doc["traceEvents"]) > 0
"""
HTA_CODE = """
import sys
from hta.trace_analysis import TraceAnalysis
analysis = TraceAnalysis(trace_dir=sys.argv[1])
ranks = sorted(analysis.t.traces)
analysis.get_temporal_breakdown(visualize=False)
analysis.get_gpu_kernel_breakdown(visualize=False)
analysis.get_idle_time_breakdown(ranks=ranks, visualize=False)
"""


@dataclass
class Run:
    """One process: wall seconds, peak RSS in MiB, exit status."""

    wall_s: float
    peak_mib: float
    rc: int


@dataclass
class Measurement:
    """One measurement of one trace, over its repetitions."""

    size: str
    name: str
    command: list[str]
    json_bytes: int
    file_bytes: int
    env: dict[str, str] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    skipped: str | None = None
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        """Medians and extremes of the successful runs, plus the raw runs."""
        ok = [r for r in self.runs if r.rc == 0]
        out: dict[str, Any] = {
            "size": self.size,
            "name": self.name,
            "json_bytes": self.json_bytes,
            "file_bytes": self.file_bytes,
            "command": self.command,
            "env": self.env,
            "runs": [asdict(r) for r in self.runs],
            "skipped": self.skipped,
            "error": self.error,
        }
        if ok:
            walls = [r.wall_s for r in ok]
            peaks = [r.peak_mib for r in ok]
            out.update(
                median_s=round(statistics.median(walls), 3),
                min_s=round(min(walls), 3),
                max_s=round(max(walls), 3),
                median_peak_mib=round(statistics.median(peaks), 1),
                max_peak_mib=round(max(peaks), 1),
                s_per_gb=round(statistics.median(walls) / (self.json_bytes / GB), 3),
            )
        return out


# ---------------------------------------------------------------------------------------------
# Running one process


def run_once(
    command: list[str],
    *,
    cwd: Path,
    timeout_s: float,
    log: Path,
    env: dict[str, str] | None = None,
) -> Run:
    """Run ``command`` to completion; its wall time and its own peak RSS.

    ``os.wait4`` reaps exactly this child and returns its resource usage (Linux: ``ru_maxrss``
    in KiB, the largest of the child and the descendants it waited for). ``env`` is the child's
    whole environment (default: this process's).
    """
    with open(log, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        # A timer rather than polling: a blocking wait4 ends the instant the child does.
        killer = threading.Timer(timeout_s, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return Run(wall_s=round(wall, 4), peak_mib=round(usage.ru_maxrss / 1024, 1), rc=proc.returncode)


def _tail(path: Path, n: int = 400) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return " ".join(text[-n:].split())


# ---------------------------------------------------------------------------------------------
# Traces


def is_gzip(path: Path) -> bool:
    """By magic bytes, as torchdiag decides."""
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def json_size(path: Path) -> int:
    """Bytes of JSON in ``path`` (uncompressed). Streamed: the gzip trailer wraps at 4 GiB."""
    if not is_gzip(path):
        return path.stat().st_size
    total = 0
    with gzip.open(path, "rb") as fh:
        while block := fh.read(BLOCK):
            total += len(block)
    return total


def make_synthetic(src: Path, out: Path, times: int) -> dict[str, Any]:
    """Run ``make_synthetic_trace.py``; the facts it prints (events, bytes, seconds)."""
    command = [sys.executable, str(HERE / "make_synthetic_trace.py"), str(src), str(out)]
    done = subprocess.run(
        [*command, "--times", str(times)],
        check=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    facts: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return facts


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (0 when unknown: then nothing is skipped for memory)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------------------------------------
# HTA


def ensure_hta(venv: Path) -> tuple[Path | None, str]:
    """The venv's python with ``hta`` importable, installing it on first use; or (None, why)."""
    python = venv / "bin" / "python"

    def importable() -> bool:
        return python.exists() and (
            subprocess.run(
                [str(python), "-c", "import hta.trace_analysis"], capture_output=True
            ).returncode
            == 0
        )

    if importable():
        return python, "installed"
    print(f"installing {HTA_PACKAGE} into {venv} (once) ...", file=sys.stderr)
    try:
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True, capture_output=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", HTA_PACKAGE],
            check=True,
            capture_output=True,
            timeout=1800,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        return None, f"cannot install {HTA_PACKAGE}: {exc} {detail.decode(errors='replace')[-300:]}"
    if not importable():
        return None, f"{HTA_PACKAGE} installed but 'hta.trace_analysis' does not import"
    return python, "installed"


# ---------------------------------------------------------------------------------------------
# The benchmark


def torchdiag_command() -> list[str]:
    """The console script beside this interpreter (what users run), else ``python -m``."""
    script = Path(sys.executable).parent / "torchdiag"
    return [str(script)] if script.exists() else [sys.executable, "-m", "torchdiag"]


def plan_measurements(
    size: str,
    trace: Path,
    workdir: Path,
    *,
    hta_python: Path | None,
    hta_note: str | None,
    base: Path | None = None,
) -> list[Measurement]:
    """The measurements of one trace file. Each gets its own folder for outputs."""
    json_bytes = json_size(trace)
    file_bytes = trace.stat().st_size
    # The default report writes its HTML beside the input: give it a folder of its own with a
    # link to the trace, so nothing is written next to the shared original.
    folder = workdir / f"run-{size}"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / trace.name
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(trace.resolve())
    td = torchdiag_command()
    gunzip_name = "gunzip" if is_gzip(trace) else "read"
    report = [*td, "report", str(link)]
    report_json = [*report, "--format", "json", "-o", "-"]
    entries: list[tuple[str, list[str], float | None, dict[str, str]]] = [
        (gunzip_name, [sys.executable, "-c", GUNZIP_CODE, str(link)], None, {}),
        (
            "json.load",
            [sys.executable, "-c", JSON_LOAD_CODE, str(link)],
            JSON_LOAD_MEMORY_FACTOR,
            {},
        ),
        ("report", report, None, {}),
        ("report-json", report_json, None, {}),
        ("report-nocache", report, None, {CACHE_DIR_ENV: ""}),
    ]
    if base is not None:
        # PYTHONPATH comes before the installed (editable) package, so the same console script
        # runs the base tree's torchdiag.
        base_env = {"PYTHONPATH": str(base.resolve())}
        entries.append(("report@base", report, None, base_env))
        entries.append(("report-json@base", report_json, None, base_env))
    if hta_python is not None or hta_note is not None:
        hta_dir = folder / "hta"  # HTA takes a directory of rank traces
        hta_dir.mkdir(exist_ok=True)
        hta_link = hta_dir / trace.name
        if not hta_link.is_symlink():
            hta_link.symlink_to(trace.resolve())
        python = str(hta_python) if hta_python else "hta-python"
        entries.append(("hta", [python, "-c", HTA_CODE, str(hta_dir)], HTA_MEMORY_FACTOR, {}))
    available = available_memory_bytes()
    out = []
    for name, command, factor, env in entries:
        m = Measurement(size, name, command, json_bytes, file_bytes, env=env)
        if name == "hta" and hta_python is None:
            m.skipped = hta_note
        elif factor and available and json_bytes * factor > 0.8 * available:
            m.skipped = (
                f"would need ~{json_bytes * factor / 2**30:.0f} GiB "
                f"(~{factor:.0f}x the JSON), {available / 2**30:.0f} GiB available"
            )
        out.append(m)
    return out


def child_env(workdir: Path, extra: dict[str, str]) -> dict[str, str]:
    """A child's environment: this one, its own user cache, bytecode written, plus ``extra``."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env[CACHE_DIR_ENV] = str(workdir / "user-cache")
    if "PYTHONPATH" in extra and env.get("PYTHONPATH"):
        extra = {**extra, "PYTHONPATH": extra["PYTHONPATH"] + os.pathsep + env["PYTHONPATH"]}
    env.update(extra)
    return env


def warm_up(measurements: list[Measurement], workdir: Path, timeout_s: float) -> None:
    """Run each torchdiag command once, untimed: fills the user cache, writes the .pyc files."""
    for m in measurements:
        if m.skipped or m.name in ("gunzip", "read", "json.load", "hta"):
            continue
        log = workdir / "last-stderr.txt"
        env = child_env(workdir, m.env)
        run = run_once(m.command, cwd=workdir, timeout_s=timeout_s, log=log, env=env)
        print(f"  {m.size:>9} {m.name:<16} warm-up: {run.wall_s:8.2f} s", file=sys.stderr)
        if run.rc != 0:
            m.error = f"warm-up exit status {run.rc}: {_tail(log)}"


def measure(measurements: list[Measurement], repeat: int, workdir: Path, timeout_s: float) -> None:
    """Run every measurement ``repeat`` times, interleaved; failures are kept, not raised."""
    for rep in range(repeat):
        for m in measurements:
            if m.skipped or m.error:
                continue
            log = workdir / "last-stderr.txt"
            env = child_env(workdir, m.env)
            run = run_once(m.command, cwd=workdir, timeout_s=timeout_s, log=log, env=env)
            m.runs.append(run)
            status = "ok" if run.rc == 0 else f"rc={run.rc}"
            print(
                f"  {m.size:>9} {m.name:<16} run {rep + 1}/{repeat}: "
                f"{run.wall_s:8.2f} s {run.peak_mib:8.0f} MiB {status}",
                file=sys.stderr,
                flush=True,
            )
            if run.rc != 0:
                m.error = f"exit status {run.rc}: {_tail(log)}"
        # The default report's HTML, written beside the trace link, is not kept.
        for html in workdir.glob("run-*/*.html"):
            html.unlink()


def machine_info() -> dict[str, Any]:
    """Where the numbers come from."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        rev, dirty = "", ""
    # Which torchdiag the children import (PYTHONPATH can point them at another checkout). Run
    # from / like the children run from the workdir: `python -c` puts its cwd first on sys.path.
    located = subprocess.run(
        [sys.executable, "-c", "import torchdiag.cli as c; print(c.__file__)"],
        capture_output=True,
        text=True,
        cwd="/",
    ).stdout.strip()
    return {
        "torchdiag_module": located,
        "pythonpath": os.environ.get("PYTHONPATH", ""),
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torchdiag_commit": rev + ("+local changes" if dirty else ""),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    """Medians per measurement, with ratios to json.load and HTA of the same trace."""
    by_size: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_size.setdefault(r["size"], {})[r["name"]] = r
    header = (
        f"{'trace':>9} {'measurement':<16} {'JSON GB':>8} {'median s':>9} {'peak MiB':>9} "
        f"{'s/GB':>7} {'t/json.load':>11} {'mem/json.load':>13} {'t/HTA':>6} {'mem/HTA':>7}"
    )
    print(header)
    print("-" * len(header))
    for size, named in by_size.items():
        base = named.get("json.load", {})
        hta = named.get("hta", {})
        for name, r in named.items():
            gb = r["json_bytes"] / GB
            if "median_s" not in r:
                why = r["skipped"] or r["error"] or "no successful run"
                print(f"{size:>9} {name:<16} {gb:8.3f}  -- {why}")
                continue

            def ratio(other: dict[str, Any], key: str, r: dict[str, Any] = r) -> str:
                return f"{r[key] / other[key]:.2f}" if key in other else "-"

            print(
                f"{size:>9} {name:<16} {gb:8.3f} {r['median_s']:9.2f} "
                f"{r['median_peak_mib']:9.0f} {r['s_per_gb']:7.2f} "
                f"{ratio(base, 'median_s'):>11} {ratio(base, 'median_peak_mib'):>13} "
                f"{ratio(hta, 'median_s'):>6} {ratio(hta, 'median_peak_mib'):>7}"
            )


def parse_sizes(text: str) -> list[int]:
    """``"1,10,100"`` → ``[1, 10, 100]``."""
    sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("sizes are positive integers, e.g. 1,10,100")
    return sizes


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="the 1x trace")
    parser.add_argument("--sizes", type=parse_sizes, default=[1], help="e.g. 1,10,100")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement at 1x")
    parser.add_argument(
        "--repeat-large", type=int, default=3, help="runs per measurement for sizes above 1x"
    )
    parser.add_argument(
        "--plain-from", type=int, default=100, help="synthetic sizes from this on are plain JSON"
    )
    parser.add_argument(
        "--plain", action="store_true", help="also measure plain-JSON copies of gzip sizes"
    )
    parser.add_argument("--hta", action="store_true", help="also measure HTA (own venv)")
    parser.add_argument("--hta-venv", type=Path, default=DEFAULT_HTA_VENV)
    parser.add_argument(
        "--base",
        type=Path,
        help="also measure report and report-json of this torchdiag tree (before/after)",
    )
    parser.add_argument(
        "--only", help="comma-separated measurement names (gunzip,read,json.load,report,...)"
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "td-bench")
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) synthetic traces")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per process")
    parser.add_argument("--json", type=Path, default=DEFAULT_OUT, help="results file")
    parser.add_argument(
        "--append",
        action="store_true",
        help="add to the results file's measurements (same trace size and name: replaced)",
    )
    args = parser.parse_args(argv)

    if not args.trace.exists():
        print(f"no trace at {args.trace}", file=sys.stderr)
        return 2
    if args.base is not None and not (args.base / "torchdiag" / "__init__.py").exists():
        print(f"no torchdiag package in {args.base}", file=sys.stderr)
        return 2
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    hta_python, hta_note = None, None
    if args.hta:
        hta_python, status = ensure_hta(args.hta_venv)
        hta_note = None if hta_python else f"HTA not measured: {status}"
        if hta_note:
            print(hta_note, file=sys.stderr)
    only = set(args.only.split(",")) if args.only else None

    result: dict[str, Any] = {
        "machine": machine_info(),
        "trace": str(args.trace),
        "method": (
            "one fresh process per run, reaped with os.wait4: wall time from spawn to exit, "
            "peak RSS = ru_maxrss of that process; repetitions interleaved; medians; each "
            "torchdiag command run once untimed first (user cache filled, .pyc written)"
        ),
        "base_tree": str(args.base) if args.base else None,
        "synthetic": [],
        "measurements": [],
    }
    rows: list[dict[str, Any]] = result["measurements"]
    if args.append and args.json.exists():
        # Later runs of a size are added to an earlier file; its machine facts stay alongside.
        earlier = json.loads(args.json.read_text())
        result["earlier_runs"] = [earlier["machine"], *earlier.get("earlier_runs", [])]
        result["synthetic"] = earlier.get("synthetic", [])
        rows.extend(earlier.get("measurements", []))
    for n in args.sizes:
        variants: list[tuple[str, Path, bool]] = []  # (label, path, made here)
        plain = n >= args.plain_from
        if n == 1:
            variants.append(("1x", args.trace, False))
        else:
            suffix = ".json" if plain else ".json.gz"
            variants.append((f"{n}x", workdir / f"synthetic.x{n}{suffix}", True))
        if args.plain and not plain:
            variants.append((f"{n}x-plain", workdir / f"synthetic.x{n}.json", True))
        for label, path, synthetic in variants:
            if synthetic and not (args.keep and path.exists()):
                print(f"making {path.name} ...", file=sys.stderr, flush=True)
                facts = make_synthetic(args.trace, path, n)
                facts["size"] = label
                result["synthetic"].append(facts)
            ms = plan_measurements(
                label, path, workdir, hta_python=hta_python, hta_note=hta_note, base=args.base
            )
            if only:
                ms = [m for m in ms if m.name in only]
            warm_up(ms, workdir, args.timeout)
            measure(ms, args.repeat if n == 1 else args.repeat_large, workdir, args.timeout)
            done = {(m.size, m.name) for m in ms}
            rows[:] = [r for r in rows if (r["size"], r["name"]) not in done]
            rows.extend(m.summary() for m in ms)
            if synthetic and not args.keep:
                path.unlink()
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    if not args.keep:
        for folder in workdir.glob("run-*"):  # links to traces and HTA's folders, no data
            shutil.rmtree(folder, ignore_errors=True)
        (workdir / "last-stderr.txt").unlink(missing_ok=True)
        shutil.rmtree(workdir / "user-cache", ignore_errors=True)
    print_table(rows)
    print(f"\nresults: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
