"""Make a large, valid Kineto trace by repeating a real one N times back to back.

    python benchmarks/make_synthetic_trace.py SRC OUT --times N [--compact] [--compresslevel L]

Each repetition is the source's events shifted later in time by one span (the source's extent
plus a gap), so repetitions follow each other like later profiling windows of the same run:

- ``ProfilerStep#N`` is renumbered to continue the previous repetition's steps;
- every link id (``args`` ``correlation``, ``External id``, ``Sequence number``, ``Ev Idx``,
  ``Python id`` / ``Python parent id``, and the flow events' top-level ``id``) is offset by one
  shared amount per repetition, so kernel → runtime → operator links stay consistent within a
  repetition and never collide across them (one offset for all keys keeps Kineto's "flow id ==
  correlation" equality true);
- the top-level members (``deviceProperties``, ``distributedInfo``, ...) and the ``ph: "M"``
  metadata events (process and thread names) are written once.

``OUT`` is gzip-compressed when it ends in ``.gz``, plain JSON otherwise.

Memory is bounded by the source, not by N: the source is decoded once (a few hundred MiB for a
50 MB trace), and each repetition is shifted in place and written out before the next, so only
one copy of the events and one repetition's encoded text exist at a time.
"""

from __future__ import annotations

import argparse
import gzip
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

# ``args`` members that link events to each other; offset together, see the module docstring.
LINK_ARGS = (
    "correlation",
    "External id",
    "Sequence number",
    "Ev Idx",
    "Python id",
    "Python parent id",
)
STEP_PREFIX = "ProfilerStep#"
# Flow events (``ac2g``, ``fwdbwd``) whose top-level ``id`` is a link.
FLOW_PHASES = frozenset({"s", "t", "f"})
# Between repetitions, so a step of one repetition never touches the next one's first event.
GAP_US = 1000
WRITE_BLOCK = 16 * 1024 * 1024


def read_source(path: Path) -> dict[str, Any]:
    """The whole source trace as plain Python data (gzip by magic bytes, like torchdiag)."""
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    with opener(path, "rb") as fh:
        data = fh.read()
    doc = msgspec.json.decode(data)
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        raise SystemExit(f"{path}: not a Kineto trace (an object with a traceEvents array)")
    return doc


class Plan:
    """What one repetition adds: time shift, link id offset, step renumbering."""

    def __init__(self, events: list[Any]) -> None:
        t_min, t_max = math.inf, -math.inf
        max_id = 0
        steps: list[int] = []
        for ev in events:
            if not isinstance(ev, dict):
                continue
            ts = ev.get("ts")
            if isinstance(ts, (int, float)) and ev.get("ph") != "M":
                dur = ev.get("dur")
                end = ts + dur if isinstance(dur, (int, float)) else ts
                t_min, t_max = min(t_min, ts), max(t_max, end)
            for value in _link_values(ev):
                max_id = max(max_id, value)
            name = ev.get("name")
            if isinstance(name, str) and name.startswith(STEP_PREFIX):
                number = name[len(STEP_PREFIX) :]
                if number.isdigit():
                    steps.append(int(number))
        if t_min > t_max:
            raise SystemExit("the source trace has no timed events")
        # Whole microseconds keep integer timestamps integers, as Kineto writes them.
        self.shift_us = math.ceil(t_max - t_min) + GAP_US
        # A round number makes repeated ids easy to recognise when reading the output.
        self.id_offset = 10 ** len(str(max_id + 1))
        self.step_offset = max(steps) - min(steps) + 1 if steps else 0


def _link_values(ev: dict[str, Any]) -> Iterator[int]:
    args = ev.get("args")
    if isinstance(args, dict):
        for key in LINK_ARGS:
            value = args.get(key)
            if type(value) is int:
                yield value
    if ev.get("ph") in FLOW_PHASES and type(ev.get("id")) is int:
        yield ev["id"]


def advance(events: list[Any], plan: Plan) -> None:
    """Shift ``events`` in place to the next repetition."""
    shift, offset, step_offset = plan.shift_us, plan.id_offset, plan.step_offset
    for ev in events:
        ts = ev.get("ts")
        if isinstance(ts, (int, float)) and not isinstance(ts, bool):
            ev["ts"] = ts + shift
        args = ev.get("args")
        if isinstance(args, dict):
            for key in LINK_ARGS:
                value = args.get(key)
                if type(value) is int:
                    args[key] = value + offset
        if ev.get("ph") in FLOW_PHASES and type(ev.get("id")) is int:
            ev["id"] += offset
        name = ev.get("name")
        if step_offset and isinstance(name, str) and name.startswith(STEP_PREFIX):
            number = name[len(STEP_PREFIX) :]
            if number.isdigit():
                ev["name"] = f"{STEP_PREFIX}{int(number) + step_offset}"


def encode_events(events: list[Any], *, compact: bool) -> bytes:
    """The events as the inside of a JSON array (no brackets).

    Not compact: one member per line with a one-space indent, about the size of Kineto's own
    layout, so "N times the source" is also about N times its bytes.
    """
    text = msgspec.json.encode(events)
    if not compact:
        text = msgspec.json.format(text, indent=1)
    inner = text.strip()
    return inner[1:-1].strip()


def open_output(path: Path, compresslevel: int, *, gzipped: bool) -> BinaryIO:
    """``path`` for writing, gzip-compressed or plain."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if gzipped:
        return gzip.open(path, "wb", compresslevel=compresslevel)  # type: ignore[return-value]
    return open(path, "wb", buffering=WRITE_BLOCK)


def write_synthetic(
    src: Path, out: Path, times: int, *, compact: bool = False, compresslevel: int = 6
) -> dict[str, Any]:
    """Write ``times`` repetitions of ``src`` to ``out``; a few facts about what was written."""
    if times < 1:
        raise ValueError("times must be at least 1")
    doc = read_source(src)
    events = [ev for ev in doc["traceEvents"] if isinstance(ev, dict)]
    plan = Plan(events)
    meta_events = [ev for ev in events if ev.get("ph") == "M"]
    events = [ev for ev in events if ev.get("ph") != "M"]
    # Written under another name and renamed when complete, so an interrupted run never leaves
    # a truncated file that a later benchmark would take for a finished one.
    tmp = out.with_name(out.name + ".partial")
    started = time.perf_counter()
    with open_output(tmp, compresslevel, gzipped=out.name.endswith(".gz")) as fh:
        # Top-level members in the source's order, traceEvents in its place.
        first = True
        fh.write(b"{\n")
        for key, value in doc.items():
            if not first:
                fh.write(b",\n")
            first = False
            fh.write(msgspec.json.encode(key) + b": ")
            if key != "traceEvents":
                fh.write(msgspec.json.format(msgspec.json.encode(value), indent=1))
                continue
            fh.write(b"[\n")
            if meta_events:
                fh.write(encode_events(meta_events, compact=compact))
                fh.write(b",\n")
            for rep in range(times):
                if rep:
                    advance(events, plan)
                    fh.write(b",\n")
                fh.write(encode_events(events, compact=compact))
                print(f"\r{out.name}: {rep + 1}/{times}", end="", file=sys.stderr, flush=True)
            fh.write(b"\n]")
        fh.write(b"\n}\n")
    print(file=sys.stderr)
    tmp.replace(out)
    return {
        "source": str(src),
        "output": str(out),
        "times": times,
        "events": len(meta_events) + times * len(events),
        "bytes": out.stat().st_size,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="a Kineto trace (.json or .json.gz)")
    parser.add_argument("out", type=Path, help="output trace; gzip when it ends in .gz")
    parser.add_argument("--times", type=int, required=True, help="repetitions (N)")
    parser.add_argument(
        "--compact", action="store_true", help="no whitespace between members (smaller files)"
    )
    parser.add_argument("--compresslevel", type=int, default=6, help="gzip level for .gz output")
    args = parser.parse_args(argv)
    facts = write_synthetic(
        args.src, args.out, args.times, compact=args.compact, compresslevel=args.compresslevel
    )
    print(msgspec.json.encode(facts).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
