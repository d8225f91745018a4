"""``torchdiag try`` results as text, Markdown or JSON, and the "Measured fixes" rows every
report shares (:func:`measured_rows`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import msgspec

from torchdiag.capture.fixes import kinds_answering, parse_fix
from torchdiag.record import EstimatePairing, MeasuredFix
from torchdiag.trials.compare import TryResult

# How each verdict of a pairing reads after its numbers.
_VERDICT_TEXT = {
    "within": "within the estimate",
    "above": "above the bound",
    "below": "below the estimate",
    "not measured": "no interval to judge by",
}


@dataclass(frozen=True)
class MeasuredRow:
    """One fix as every output shows it: the same words in the terminal, Markdown and HTML."""

    fix: str
    step: str
    speedup: str
    verdict: str
    memory: str
    numerics: str
    note: str
    # (finding, "dataloader-stall: estimated up to 8.1%; measured 20% (7–31%): above the bound")
    # for each of the baseline's findings this fix answers.
    estimates: tuple[tuple[str, str], ...] = ()


def measured_rows(fixes: list[MeasuredFix]) -> list[MeasuredRow]:
    """The display rows of measured fixes, in the order they were tried."""
    return [_row(f) for f in fixes]


def measured_for_finding(finding_id: str, fixes: list[MeasuredFix]) -> list[MeasuredRow]:
    """The measured fixes that address the rule ``finding_id`` (shown beside its estimate)."""
    names = {kind.name for kind in kinds_answering(finding_id)}
    rows = [_row(f) for f in fixes if f.fix.partition("=")[0] in names]
    # Beside a finding, only its own estimate against the measurement.
    return [replace(r, estimates=tuple(e for e in r.estimates if e[0] == finding_id)) for r in rows]


def measured_summary(row: MeasuredRow) -> str:
    """One line: ``workers=2: faster, 3.12x (1.92-3.79)``, then how each estimate of the
    row's findings fared (``; dataloader-stall: estimated up to 8.1%; measured ...``)."""
    if row.speedup == "-":
        head = f"{row.fix}: {row.verdict}"
    else:
        head = f"{row.fix}: {row.verdict}, {row.speedup}"
    return "; ".join([head, *(text for _, text in row.estimates)])


def estimate_text(pairing: EstimatePairing, *, per_sample: bool = False) -> str:
    """``dataloader-stall: estimated up to 8.1%; measured 20% (7–31%): above the bound``."""
    if pairing.stated is not None:
        low = pairing.stated_low if pairing.stated_low is not None else 0.0
        stated = f"about {_pct(pairing.stated)} ({_num(low)}–{_pct(pairing.stated_max)})"
    else:
        stated = f"up to {_pct(pairing.stated_max)}"
    if pairing.measured is None or pairing.measured_low is None or pairing.measured_high is None:
        return f"{pairing.finding}: estimated {stated}; not measured"
    unit = " per sample" if per_sample else ""
    measured = (
        f"{_pct(pairing.measured)}{unit} "
        f"({_num(pairing.measured_low)}–{_pct(pairing.measured_high)})"
    )
    return (
        f"{pairing.finding}: estimated {stated}; measured {measured}: "
        f"{_VERDICT_TEXT[pairing.verdict]}"
    )


def _pct(value: float) -> str:
    return _num(value) + "%"


def _num(value: float) -> str:
    # One decimal, as the rules state their savings: "8.1", "20", "-3.5".
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _row(fix: MeasuredFix) -> MeasuredRow:
    if fix.error is not None:
        return MeasuredRow(fix.fix, "-", "-", "the run failed", "-", "-", fix.error)
    if not fix.applicable:
        return MeasuredRow(fix.fix, "-", "-", "not applicable", "-", "-", fix.detail)
    step = "-"
    if fix.baseline_step_ms is not None and fix.step_ms is not None:
        step = f"{fix.baseline_step_ms:,.1f} -> {fix.step_ms:,.1f} ms"
    speedup, verdict = "-", "not measured"
    if fix.speedup is not None and fix.ci95 is not None:
        unit = " per sample" if fix.per_sample else ""
        speedup = f"{fix.speedup:.2f}x ({fix.ci95[0]:.2f}-{fix.ci95[1]:.2f}){unit}"
        if not fix.significant:
            verdict = "no significant change"
        elif fix.ci95[0] > 1.0:
            verdict = "faster"
        else:
            verdict = "slower"
    memory = "-"
    if fix.memory_peak_bytes and fix.baseline_memory_peak_bytes:
        memory = f"{_mib(fix.baseline_memory_peak_bytes)} -> {_mib(fix.memory_peak_bytes)}"
    numerics = {True: "ok", False: "CHANGED", None: "-"}[fix.numerics_ok]
    notes = [fix.detail]
    if fix.numerics_ok is not True and fix.numerics:
        notes.append(fix.numerics)
    if fix.compile_s is not None:
        notes.append(f"first step {fix.compile_s:.1f} s longer (compilation)")
    if fix.per_sample and fix.inference:
        # Throughput is per sample (the speedup); a server also answers per call: the latency.
        factor = parse_fix(fix.fix).batch_factor
        notes.append(f"latency per call {_latency(fix)}, each call {factor} times the samples")
    elif fix.per_sample:
        notes.append("the learning rate may need scaling with the batch")
    if fix.predicted_window_peak_bytes and fix.window_peak_bytes:
        error = fix.window_peak_bytes / fix.predicted_window_peak_bytes - 1
        notes.append(
            f"window memory peak predicted {_mib(fix.predicted_window_peak_bytes)}, measured "
            f"{_mib(fix.window_peak_bytes)} ({error:+.0%})"
        )
    estimates = tuple(
        (p.finding, estimate_text(p, per_sample=fix.per_sample)) for p in fix.estimates
    )
    return MeasuredRow(
        fix.fix, step, speedup, verdict, memory, numerics, "; ".join(notes), estimates
    )


def _latency(fix: MeasuredFix) -> str:
    """``12.0 -> 30.5 ms (2.54x)``: one call of the model with the fix against the baseline."""
    if fix.baseline_step_ms is None or fix.step_ms is None:
        return "not measured"
    ratio = f" ({fix.step_ms / fix.baseline_step_ms:.2f}x)" if fix.baseline_step_ms > 0 else ""
    return f"{fix.baseline_step_ms:,.1f} -> {fix.step_ms:,.1f} ms{ratio}"


def _mib(value: int) -> str:
    return f"{value / 2**20:,.0f} MiB"


_HEADER = ("fix", "step time", "speedup (95% CI)", "verdict", "memory peak", "numerics")
MEASURED_HEAD = (*_HEADER, "note")


def render_try_json(result: TryResult) -> str:
    """The result as JSON (schema ``torchdiag.try/1``)."""
    return msgspec.json.format(msgspec.json.encode(result)).decode()


def render_try_markdown(result: TryResult) -> str:
    """The result as a Markdown section: the baseline, then a table of the fixes."""
    rows = measured_rows(result.fixes)
    out = f"### Measured fixes\n\n{_md(_head(result))}\n\n"
    out += markdown_table(rows) if rows else "No fix to try.\n"
    return out + markdown_estimates(rows)


def markdown_estimates(rows: list[MeasuredRow]) -> str:
    """The findings' estimates against the measurements, one bullet each ('' when none)."""
    items = [f"- `{_md(r.fix)}`: {_md(text)}" for r in rows for _, text in r.estimates]
    if not items:
        return ""
    return "\nEstimates against measurements:\n\n" + "\n".join(items) + "\n"


def _head(result: TryResult) -> str:
    base = result.baseline
    step = f"{base.step_ms:,.1f} ms" if base.step_ms is not None else "unknown"
    findings = ", ".join(base.findings) or "none at warning level"
    return f"{result.script}: baseline step {step} over {result.steps} steps; findings: {findings}"


def markdown_table(rows: list[MeasuredRow]) -> str:
    """The measured fixes as a Markdown table (also in the run report's Markdown)."""
    lines = ["| " + " | ".join(_HEADER) + " | note |", "|" + "---|" * (len(_HEADER) + 1)]
    for r in rows:
        cells = (r.fix, r.step, r.speedup, r.verdict, r.memory, r.numerics, r.note)
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_try_text(result: TryResult) -> str:
    """The result as plain text: the baseline, then a table of the fixes and their notes."""
    from io import StringIO

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    out = StringIO()
    head, rows = _head(result), measured_rows(result.fixes)
    console = Console(file=out, width=160, color_system=None, highlight=False)
    console.print(head, markup=False)
    if not rows:
        console.print("No fix to try.")
        return out.getvalue()
    table = Table(show_edge=False, pad_edge=False)
    for title in _HEADER:
        table.add_column(title, no_wrap=True)
    for r in rows:
        cells = (r.fix, r.step, r.speedup, r.verdict, r.memory, r.numerics)
        table.add_row(*(Text(c) for c in cells))  # text from the run is never markup
    console.print(table)
    for r in rows:
        if r.note:
            console.print(Text(f"  {r.fix}: {r.note}"))
    for r in rows:
        for _, text in r.estimates:
            console.print(Text(f"  {r.fix}: {text}"))
    return out.getvalue()
