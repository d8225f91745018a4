"""Render a :class:`~torchdiag.diff.RunDiff` as text (terminal, CI logs), Markdown (a PR comment)
or JSON (``torchdiag.diff/1``, for scripts).

Every format leads with the same sentence (:func:`diff_headline`) so a CI log, a PR comment and a
script see the same verdict. Names from traces are escaped for Markdown with the report's own
helpers, and every list is capped, so the Markdown stays far below GitHub's comment limit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from torchdiag.diff import FASTER, NO_CHANGE, SLOWER, FindingRef, NameDelta, RunDiff, Side
from torchdiag.report.markdown_text import MAX_NAME_CHARS, md_code, md_text
from torchdiag.report.verdict import BREAKDOWN_LABELS, format_ms, format_number, format_pct
from torchdiag.view.counters import COUNTER_LABELS

# Findings come from a fixed set of rules, but a record could be crafted with thousands.
MAX_FINDING_ROWS = 40
# Runs are listed one by one up to this many a side (their step times are the evidence).
MAX_RUN_ROWS = 20
# The longest run label shown (a label is the run's file path; its end tells runs apart).
MAX_LABEL_CHARS = 80
_PART_LABELS = {"wall": "step wall time", **BREAKDOWN_LABELS}


def render_diff_json(diff: RunDiff) -> str:
    """The ``torchdiag.diff/1`` document: sorted keys, two-space indent, no NaN."""
    doc = diff.to_jsonable()
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _estimated(diff: RunDiff) -> bool:
    return diff.base.estimated or diff.head.estimated


def _unit(diff: RunDiff) -> str:
    """What one step is called: "forward call" where both sides' steps are calls of the model
    (two live inference loops, whose step time is the latency per call), else "step"."""
    return (
        "forward call"
        if diff.base.step_is_forward_call and diff.head.step_is_forward_call
        else "step"
    )


def _step_name(diff: RunDiff) -> str:
    """What the compared step figure is: over runs, a median of measured steps, or an estimate."""
    unit = _unit(diff)
    if diff.between_runs:
        return f"{unit} over runs"
    return f"{unit} (un-profiled estimate)" if _estimated(diff) else f"median {unit}"


def _side_name(side: Side) -> str:
    runs = len(side.runs)
    return f"{_one_line(side.name)} ({runs} runs)" if runs > 1 else _one_line(side.name)


def diff_headline(diff: RunDiff) -> str:
    """One sentence: the verdict, the step change and whether it fails the threshold."""
    change = _signed_pct(diff.median_change_pct)
    step = _step_name(diff)
    if diff.verdict == SLOWER:
        line = f"HEAD is slower: {step} {change}"
    elif diff.verdict == FASTER:
        line = f"HEAD is faster: {step} {change}"
    else:
        line = f"{NO_CHANGE} in {_unit(diff)} time ({step} {change}, within the noise)"
    if diff.regression:
        line += f" — a regression beyond the {format_number(diff.threshold_pct)}% threshold"
    failing = [g.rule for g in diff.counter_gates if g.failed]
    if failing:
        line += f" — fails --fail-on {', '.join(failing)}"
    return line


def interval_sentence(diff: RunDiff) -> str:
    """The ratio, its interval and what it was computed from."""
    iv = diff.interval
    estimated = _estimated(diff)
    if diff.between_runs:
        ratio = f"HEAD/BASE {_unit(diff)} ratio over runs {_ratio(iv.ratio)}"
        runs = f"{len(diff.base.runs):,} BASE vs {len(diff.head.runs):,} HEAD runs"
        if iv.low is None or iv.high is None or iv.df is None:
            return f"{ratio}; no interval ({runs})"
        return (
            f"{ratio}, {round(100 * iv.confidence)}% CI [{_ratio(iv.low)}, {_ratio(iv.high)}] "
            f"(t-interval over runs, {iv.df:.1f} degrees of freedom; {runs})"
        )
    ratio = f"HEAD/BASE {'step' if estimated else 'median'} ratio {_ratio(iv.ratio)}"
    kind = "profiled" if estimated else "steady-state"
    steps = f"{diff.base.steps:,} BASE vs {diff.head.steps:,} HEAD {kind} {_unit(diff)}s"
    unaccounted = "one run a side: between-run variation not accounted for"
    if iv.low is None or iv.high is None:
        return f"{ratio}; no interval ({steps}; {unaccounted})"
    if estimated:
        how = (
            f"range [{_ratio(iv.low)}, {_ratio(iv.high)}] from the estimates' ranges "
            f"({steps}; {unaccounted})"
        )
    else:
        how = (
            f"{round(100 * iv.confidence)}% CI [{_ratio(iv.low)}, {_ratio(iv.high)}] (bootstrap, "
            f"{iv.resamples:,} resamples, seed {iv.seed}; {steps}; {unaccounted})"
        )
    return f"{ratio}, {how}"


def gate_sentence(diff: RunDiff) -> str:
    """Why the exit status is what it is."""
    limit = 1 + diff.threshold_pct / 100
    pct = format_number(diff.threshold_pct)
    if diff.regression and diff.between_runs:
        return (
            f"Threshold {pct}%: fails (slower with confidence: the interval lies above 1, and "
            f"the ratio {_ratio(diff.interval.ratio)} above {_ratio(limit)})"
        )
    if diff.regression:
        return f"Threshold {pct}%: fails (the whole interval lies above {_ratio(limit)})"
    return f"Threshold {pct}%: passes (slower beyond {pct}% is not shown with confidence)"


COUNTERS_TITLE = "Exact counters (identical runs repeat them: any change is real)"


def counter_gate_lines(diff: RunDiff) -> list[str]:
    """One line per ``--fail-on`` rule: whether it fails, and the counts it was judged on."""
    return [
        f"--fail-on {g.rule}: {'fails' if g.failed else 'passes'} ({g.reason})"
        for g in diff.counter_gates
    ]


def _counter_rows(diff: RunDiff) -> list[tuple[str, str, str, str]]:
    """(label, BASE, HEAD, change) of each counter either side knows, exactly."""
    return [
        (
            COUNTER_LABELS.get(c.name, c.name),
            _count(c.base),
            _count(c.head),
            "n/a" if c.change is None else ("+" if c.change > 0 else "") + _count(c.change),
        )
        for c in diff.counters
        if c.base is not None or c.head is not None
    ]


def _count(value: float | None) -> str:
    """A count in full (no rounding to significant digits: the point is that it is exact)."""
    if value is None:
        return "n/a"
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.3f}".rstrip("0")


# ---------------------------------------------------------------------------------------------
# Text


def render_diff_text(diff: RunDiff) -> str:
    """Plain text for the terminal and CI logs."""
    lines = [
        f"torchdiag diff: {_side_name(diff.base)} -> {_side_name(diff.head)}",
        diff_headline(diff),
        "  " + interval_sentence(diff),
        "  " + gate_sentence(diff),
        "",
    ]
    lines[4:4] = [f"  {line}" for line in counter_gate_lines(diff)]
    rows = [(label, b, h, c) for label, b, h, c in _key_rows(diff)]
    lines += _text_table(("", "BASE", "HEAD", "change"), rows)
    counters = _counter_rows(diff)
    if counters:
        lines += ["", COUNTERS_TITLE]
        lines += _text_table(("counter", "BASE", "HEAD", "change"), counters)
    if diff.between_runs:
        unit = _unit(diff)
        lines += ["", f"Runs (each counted once, by its {unit} time)"]
        lines += _text_table(
            ("side", unit, f"{unit}s", "run"),
            [(side, step, steps, _one_line(label)) for side, step, steps, label in _run_rows(diff)],
        )
    if diff.breakdown:
        lines += ["", f"Breakdown (mean ms per profiled {_unit(diff)})"]
        lines += _text_table(
            ("part", "BASE", "HEAD", "change"),
            [
                (
                    _PART_LABELS.get(p.part, p.part),
                    format_number(p.base_ms),
                    format_number(p.head_ms),
                    _signed(p.delta_ms),
                )
                for p in diff.breakdown
            ],
        )
    lines += ["", "Findings"]
    changes = [
        *(("new", f) for f in diff.findings.new),
        *(("resolved", f) for f in diff.findings.resolved),
        *(("persisting", f) for f in diff.findings.persisting),
    ]
    if not changes:
        lines.append("  none in either run")
    for kind, f in changes[:MAX_FINDING_ROWS]:
        lines.append(f"  {kind:10s} {_severity(f):20s} {f.id:22s} {_one_line(f.title)[:120]}")
    if len(changes) > MAX_FINDING_ROWS:
        lines.append(f"  ... and {len(changes) - MAX_FINDING_ROWS:,} more")
    for title, deltas in (("operators", diff.top_ops), ("GPU kernels", diff.top_kernels)):
        if deltas:
            lines += ["", f"Top {title} by change (total ms per {_unit(diff)})"]
            lines += _text_table(
                ("change", "BASE", "HEAD", "name"),
                [
                    (
                        _signed(d.delta_ms),
                        format_number(d.base_ms),
                        format_number(d.head_ms),
                        _one_line(d.name)[:MAX_NAME_CHARS],
                    )
                    for d in deltas
                ],
            )
    if diff.notes:
        lines += ["", *(f"note: {n}" for n in diff.notes)]
    return "\n".join(lines) + "\n"


def _text_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    # The last column is left free (names can be long); the others are padded to their widths.
    table = [tuple(head), *(tuple(r) for r in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(head) - 1)]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
        for r in table
    ]


# ---------------------------------------------------------------------------------------------
# Markdown


def render_diff_markdown(diff: RunDiff) -> str:
    """GitHub-flavoured Markdown for a pull-request comment."""
    icon = {SLOWER: "🔴" if diff.regression else "🟠", FASTER: "🟢"}.get(diff.verdict, "⚪")
    if diff.failed:
        icon = "🔴"
    out = [
        f"## torchdiag diff: {md_text(_side_name(diff.base), 120)} → "
        f"{md_text(_side_name(diff.head), 120)}\n",
        f"{icon} **{md_text(diff_headline(diff), 400)}**\n",
        f"{md_text(interval_sentence(diff), 400)}. {md_text(gate_sentence(diff), 300)}.\n",
        *(f"{md_text(line, 300)}.\n" for line in counter_gate_lines(diff)),
        _md_table(("", "BASE", "HEAD", "Change"), _key_rows(diff)),
    ]
    counters = _counter_rows(diff)
    if counters:
        out.append(f"### {COUNTERS_TITLE}\n")
        out.append(_md_table(("Counter", "BASE", "HEAD", "Change"), counters))
    if diff.between_runs:
        unit = _unit(diff)
        out.append(f"### Runs (each counted once, by its {unit} time)\n")
        rows = [
            (side, step, steps, md_code(label, MAX_LABEL_CHARS))
            for side, step, steps, label in _run_rows(diff)
        ]
        out.append(_md_table(("Side", unit.capitalize(), f"{unit.capitalize()}s", "Run"), rows))
    if diff.breakdown:
        rows = [
            (
                md_text(_PART_LABELS.get(p.part, p.part)),
                format_number(p.base_ms),
                format_number(p.head_ms),
                _signed(p.delta_ms),
            )
            for p in diff.breakdown
        ]
        out.append(f"### Step breakdown (mean ms per profiled {_unit(diff)})\n")
        out.append(_md_table(("Part", "BASE", "HEAD", "Change"), rows))
    out.append(_md_findings(diff))
    for title, deltas in (("operators", diff.top_ops), ("GPU kernels", diff.top_kernels)):
        if deltas:
            out.append(f"### Top {title} by change (total ms per {_unit(diff)})\n")
            out.append(_md_table(("Name", "BASE", "HEAD", "Change"), _md_delta_rows(deltas)))
    if diff.notes:
        out.append("".join(f"> {md_text(n, 400)}\n" for n in diff.notes))
    out.append("<sub>Made by torchdiag diff.</sub>\n")
    return "\n".join(out)


def _md_findings(diff: RunDiff) -> str:
    rows: list[tuple[str, str, str, str]] = []
    for kind, found in (
        ("new", diff.findings.new),
        ("resolved", diff.findings.resolved),
        ("persisting", diff.findings.persisting),
    ):
        rows += [
            (kind, md_text(_severity(f, "→")), md_code(f.id, 80), md_text(f.title)) for f in found
        ]
    if not rows:
        return "### Findings\n\nNo findings in either run.\n"
    table = _md_table(("Change", "Severity", "Rule", "Finding"), rows[:MAX_FINDING_ROWS])
    if len(rows) > MAX_FINDING_ROWS:
        table += f"\n... and {len(rows) - MAX_FINDING_ROWS:,} more\n"
    return "### Findings\n\n" + table


def _md_delta_rows(deltas: Sequence[NameDelta]) -> list[tuple[str, str, str, str]]:
    return [
        (
            md_code(d.name, MAX_NAME_CHARS),
            format_number(d.base_ms),
            format_number(d.head_ms),
            _signed(d.delta_ms),
        )
        for d in deltas
    ]


def _md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Shared pieces


def _key_rows(diff: RunDiff) -> list[tuple[str, str, str, str]]:
    rows = [
        (
            # A call's time is what a caller waits: its latency.
            _step_name(diff).capitalize() + (" (latency)" if _unit(diff) != "step" else ""),
            format_ms(diff.base.median_step_ms),
            format_ms(diff.head.median_step_ms),
            _signed_pct(diff.median_change_pct),
        )
    ]
    if diff.base.samples_per_s is not None or diff.head.samples_per_s is not None:
        rows.append(
            (
                "Throughput (samples/s)",
                _throughput(diff.base.samples_per_s, diff.base.batch_size),
                _throughput(diff.head.samples_per_s, diff.head.batch_size),
                _signed_pct(diff.throughput_change_pct),
            )
        )
    if diff.base.tokens_per_s is not None or diff.head.tokens_per_s is not None:
        rows.append(
            (
                "Tokens/s (generated)",
                format_number(diff.base.tokens_per_s),
                format_number(diff.head.tokens_per_s),
                _signed_pct(diff.tokens_change_pct),
            )
        )
    if diff.between_runs:
        rows.append(("Runs", f"{len(diff.base.runs):,}", f"{len(diff.head.runs):,}", ""))
    label = f"{'Profiled' if _estimated(diff) else 'Steady-state'} {_unit(diff)}s"
    rows.append((label, f"{diff.base.steps:,}", f"{diff.head.steps:,}", ""))
    return rows


def _run_rows(diff: RunDiff) -> list[tuple[str, str, str, str]]:
    """(side, step time, steps, label) for each run, BASE first; long lists are cut."""
    rows: list[tuple[str, str, str, str]] = []
    for name, side in (("BASE", diff.base), ("HEAD", diff.head)):
        for run in side.runs[:MAX_RUN_ROWS]:
            step = format_ms(run.step_ms) + (" (estimate)" if run.estimated else "")
            rows.append((name, step, f"{run.steps:,}", _tail(run.label, MAX_LABEL_CHARS)))
        if len(side.runs) > MAX_RUN_ROWS:
            rows.append((name, "", "", f"... and {len(side.runs) - MAX_RUN_ROWS:,} more"))
    return rows


def _throughput(value: float | None, batch: int | None) -> str:
    return f"{format_number(value)} (batch {batch})" if value is not None else "n/a"


def _severity(f: FindingRef, arrow: str = "->") -> str:
    if f.base_severity is not None and f.base_severity != f.severity:
        return f"{f.base_severity} {arrow} {f.severity}"
    return f.severity


def _signed(value: float) -> str:
    return ("+" if value > 0 else "") + format_number(value)


def _signed_pct(pct: float | None) -> str:
    if pct is None:
        return "n/a"
    return ("+" if pct > 0 else "") + format_pct(pct)


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _tail(text: str, limit: int) -> str:
    # A run's label is its path: the end (the file name) is what tells runs apart.
    text = _one_line(text)
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]
