"""Check that two trees of torchdiag read every test trace into identical output.

    python benchmarks/reader_identity.py --base /path/to/old/tree [--spill-rows 512]

For every trace under ``tests/data`` (the H200 captures and the external traces), each tree runs
in its own fresh process (``PYTHONPATH`` set to the tree) and produces:

- the TraceSummary that ``read_trace`` returns, encoded as JSON;
- the JSON report, ``torchdiag report TRACE --format json -o -``.

Both are compared byte for byte between the base tree and this one. With ``--spill-rows N`` the
summary of this tree is also produced with the reader's spill budget forced down to ``N`` rows,
so that its columns go through temporary files and the external merge, and compared too.
Exit status 0 when everything is identical, 1 otherwise (the differing files are listed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"

_SUMMARY = """
import sys, msgspec
from torchdiag.traces import summary
if len(sys.argv) > 2:
    summary.DEFAULT_SPILL_ROWS = int(sys.argv[2])
from torchdiag.traces.load import read_trace
sys.stdout.buffer.write(msgspec.json.encode(read_trace(sys.argv[1])))
"""


def trace_files() -> list[Path]:
    """Every trace file of the test data."""
    return sorted(
        p
        for p in DATA.rglob("*")
        if p.is_file() and p.name.endswith((".json", ".json.gz")) and _is_trace(p)
    )


def _is_trace(path: Path) -> bool:
    # The H200 captures ship sampler files and a summary beside their traces.
    return not path.name.endswith((".samples.json", "summary.json"))


def _run(tree: Path, args: list[str]) -> bytes:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(
        [sys.executable, *args], env=env, cwd=tree, capture_output=True, check=False
    )
    if done.returncode != 0:
        return b"exit status %d: " % done.returncode + done.stderr[-2000:]
    return done.stdout


def outputs(tree: Path, trace: Path, spill_rows: int | None = None) -> dict[str, bytes]:
    """The summary and the JSON report of ``trace`` read by the torchdiag in ``tree``."""
    extra = [str(spill_rows)] if spill_rows is not None else []
    out = {"summary": _run(tree, ["-c", _SUMMARY, str(trace), *extra])}
    if spill_rows is None:
        out["report"] = _run(
            tree, ["-m", "torchdiag", "report", str(trace), "--format", "json", "-o", "-"]
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="tree with the old torchdiag")
    parser.add_argument("--spill-rows", type=int, help="also compare with this spill budget")
    args = parser.parse_args(argv)
    differ = []
    for trace in trace_files():
        name = str(trace.relative_to(REPO))
        base = outputs(args.base.resolve(), trace)
        mine = outputs(REPO, trace)
        if args.spill_rows is not None:
            mine["summary-spilled"] = outputs(REPO, trace, args.spill_rows)["summary"]
            base["summary-spilled"] = base["summary"]
        bad = [k for k in base if base[k] != mine[k]]
        print(f"{'DIFFERENT' if bad else 'identical'}  {name}  {' '.join(bad)}", flush=True)
        if bad:
            differ.append(name)
    print(f"{len(differ)} of {len(trace_files())} traces differ")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
