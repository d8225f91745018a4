"""How a report over many ranks scales: 256 rank records, and 256 rank traces.

    python benchmarks/rank_merge.py [--ranks 256] [--repeat 3]

Both inputs are made from real ones: the records from a real trace's record (one per rank, the
rank and world size set, step times spread ±10%), the traces from HolisticTraceAnalysis' two
sampled rank traces (tests/data/external/hta, ``distributedInfo.rank`` set per copy). Each
measurement is one fresh ``torchdiag report DIR --format json`` process: wall time from spawn to
exit and its peak RSS (``ru_maxrss`` via os.wait4), medians over interleaved repetitions. Trace
folders are read with ``--jobs 1`` and with the machine's cores. Results go to
benchmarks/results/rank_merge.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [
    ROOT / "tests" / "data" / "external" / "hta" / f"trace_filter__sampled_rank-{r}.json.gz"
    for r in (0, 1)
]
OUT = ROOT / "benchmarks" / "results" / "rank_merge.json"


def make_records(folder: Path, ranks: int) -> None:
    """``run.rank<R>.json`` for every rank, from the record of a real rank trace."""
    sys.path.insert(0, str(ROOT))
    from torchdiag.traces.load import record_from_traces

    base = json.loads(record_from_traces(SOURCES[0]).to_json())
    rng = random.Random(7)
    for rank in range(ranks):
        doc = json.loads(json.dumps(base))
        doc["rank"], doc["world_size"] = rank, ranks
        scale = rng.uniform(0.9, 1.1)
        doc["steps"]["wall_ms"] = [w * scale for w in doc["steps"]["wall_ms"]]
        (folder / f"run.rank{rank}.json").write_text(json.dumps(doc))


def make_traces(folder: Path, ranks: int) -> None:
    """A copy of a real rank trace per rank, its ``distributedInfo`` naming that rank."""
    docs = [json.loads(gzip.decompress(p.read_bytes())) for p in SOURCES]
    for rank in range(ranks):
        doc = docs[rank % 2]
        doc["distributedInfo"] = {
            **doc.get("distributedInfo", {}),
            "rank": rank,
            "world_size": ranks,
        }
        data = json.dumps(doc).encode()
        (folder / f"rank{rank}.pt.trace.json.gz").write_bytes(gzip.compress(data, 1))


def run_once(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one fresh process."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        error = proc.stderr.read().decode() if proc.stderr is not None else ""
        raise RuntimeError(f"{command} failed: {error[-500:]}")
    # ru_maxrss as os.wait4 reports it for the report process; each pool worker reads one trace
    # at a time into a summary and holds no events afterwards.
    return wall, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "torchdiag", "report"]
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        records, traces = Path(tmp) / "records", Path(tmp) / "traces"
        records.mkdir()
        traces.mkdir()
        make_records(records, args.ranks)
        make_traces(traces, args.ranks)
        json_out = ["--format", "json", "-o", os.devnull]
        measurements = {
            "records": [*cli, str(records), *json_out],
            "traces, --jobs 1": [*cli, str(traces), *json_out, "--jobs", "1"],
            f"traces, --jobs {cores}": [*cli, str(traces), *json_out, "--jobs", str(cores)],
        }
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in measurements}
        for _ in range(args.repeat):
            for name, command in measurements.items():
                runs[name].append(run_once(command))
        sizes = {
            "records_bytes": sum(p.stat().st_size for p in records.iterdir()),
            "traces_bytes": sum(p.stat().st_size for p in traces.iterdir()),
        }
    results = {
        "machine": {
            "cores": cores,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "ranks": args.ranks,
        **sizes,
        "measurements": {
            name: {
                "median_s": round(statistics.median(w for w, _ in r), 2),
                "median_peak_mib": round(statistics.median(m for _, m in r), 1),
                "runs": [{"wall_s": round(w, 3), "peak_mib": round(m, 1)} for w, m in r],
            }
            for name, r in runs.items()
        },
    }
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    for name, m in results["measurements"].items():
        print(f"{name:24s} {m['median_s']:7.2f} s {m['median_peak_mib']:8.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
