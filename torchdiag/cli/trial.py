"""``torchdiag try [--fix F ...] script.py [args...]``: rerun the script's first steps with each fix
and report what it really changed.

The script runs first as it is (the baseline), then once per fix, each in a fresh process
(``torchdiag run --max-steps N --fix F``: nothing leaks from one variant into the next), with the
same steps, profiler window and arguments. ``--fix auto`` (the default) tries the fixes behind
the baseline's own findings. The records are kept in the output folder, beside ``try.json`` and
the baseline's HTML report with its "Measured fixes" table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from torchdiag.capture.fixes import FIX_NAMES, parse_fix
from torchdiag.cli.args import Parser, UsageError, non_negative_int, positive_int
from torchdiag.cli.outputs import say_written, write_output
from torchdiag.cli.run import Target, split_argv
from torchdiag.files import atomic_write
from torchdiag.record import MeasuredFix, RunRecord, load_record
from torchdiag.sanitize import terminal_safe
from torchdiag.trials.auto import auto_fixes
from torchdiag.trials.compare import Baseline, TryResult, measure_fix

EXIT_OK = 0
# Options of this command that take a value (see torchdiag.cli.run.split_argv).
VALUED = {"--steps", "--skip-first", "--profile-steps", "--fix", "--output", "-o", "--format"}
VALUED |= {"--timeout"}
AUTO = "auto"


def add_parser(commands: argparse._SubParsersAction) -> None:
    """The ``try`` subcommand, for ``torchdiag --help`` (parsed by :func:`main`)."""
    options(
        commands.add_parser(
            "try",
            help="rerun a script's first steps with each fix and measure the real change",
            usage="torchdiag try [options] (SCRIPT | -m MODULE) [ARGS ...]",
        )
    )


def options(parser: argparse.ArgumentParser) -> None:
    """The command's own options."""
    parser.add_argument(
        "--fix",
        action="append",
        default=[],
        metavar="FIX",
        help=f"a fix to measure (repeatable; default: auto, the baseline's findings): {FIX_NAMES}",
    )
    parser.add_argument("--steps", type=positive_int, default=30, help="steps per run (default 30)")
    parser.add_argument(
        "--skip-first",
        type=non_negative_int,
        default=5,
        help="steps before the profiler window (default 5)",
    )
    parser.add_argument(
        "--profile-steps",
        type=non_negative_int,
        default=5,
        help="profiled steps per run (default 5; the baseline's findings need them)",
    )
    parser.add_argument(
        "--output", help="folder for the records and reports (default: torchdiag_try/<time>/)"
    )
    parser.add_argument(
        "--format",
        choices=("text", "json", "md"),
        default="text",
        help="what is printed: text (default), json (torchdiag.try/1) or md",
    )
    parser.add_argument(
        "-o", dest="result", default="-", help="where the result goes ('-': stdout, default)"
    )
    parser.add_argument(
        "--timeout", type=positive_int, default=3600, help="seconds each run may take (3600)"
    )


def main(argv: Sequence[str]) -> int:
    """``torchdiag try ARGV``; returns the exit status."""
    own, target = split_argv(argv, valued=VALUED)
    parser = Parser(prog="torchdiag try", usage="torchdiag try [options] (SCRIPT | -m MODULE) ...")
    options(parser)
    args = parser.parse_args(own)
    if target.script is None and target.module is None:
        raise UsageError("a script or -m MODULE is required (see 'torchdiag try --help')")
    if target.script is not None and not Path(target.script).is_file():
        raise UsageError(f"no such script: {target.script}")
    fixes = args.fix or [AUTO]
    for spec in fixes:
        if spec != AUTO:
            try:
                parse_fix(spec)
            except ValueError as err:
                raise UsageError(str(err)) from None
    folder = Path(args.output or _default_folder())
    trial = Trial(target, args, folder)
    result = trial.run(fixes)
    _write_outputs(result, trial, args)
    return EXIT_OK


def _default_folder() -> Path:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path("torchdiag_try") / f"{stamp}-{os.getpid()}"


class Trial:
    """The runs of one ``torchdiag try``: a baseline, then one run per fix."""

    def __init__(self, target: Target, args: argparse.Namespace, folder: Path) -> None:
        self.target, self.args, self.folder = target, args, folder
        self.baseline: RunRecord | None = None
        self.baseline_path = folder / "baseline" / "run.json"

    def run(self, fixes: Sequence[str]) -> TryResult:
        """Run the baseline and every fix; the measured result (the baseline's record, with
        its measured fixes, rewritten)."""
        from torchdiag.analyze.registry import analyze
        from torchdiag.view.memory import run_memory_peak

        baseline = self._variant("baseline", None)
        if baseline is None or baseline.status.state == "failed":
            log = self.folder / "baseline" / "output.log"
            raise UsageError(f"the script failed without any fix; its output is in {log}")
        analysis = analyze(baseline)
        specs = [s for spec in fixes for s in (auto_fixes(analysis) if spec == AUTO else [spec])]
        specs = list(dict.fromkeys(specs))
        measured: list[MeasuredFix] = []
        for spec in specs:
            record = self._variant(spec, spec)
            runs = [record] if record is not None else []
            path = self._record_path(spec)
            measured.append(measure_fix(spec, baseline, runs, records=[str(path)]))
        memory, memory_of = run_memory_peak(baseline)
        result = TryResult(
            script=self.target.label,
            steps=self.args.steps,
            baseline=Baseline(
                step_ms=_median_step_ms(baseline),
                memory_peak_bytes=memory,
                memory_of=memory_of,
                findings=[f.id for f in analysis.findings if f.severity in ("critical", "warning")],
                runs=1,
                records=[str(self.baseline_path)],
            ),
            fixes=measured,
        )
        baseline.measured_fixes = measured
        atomic_write(self.baseline_path, baseline.to_json())
        self.baseline = baseline
        return result

    def _record_path(self, name: str) -> Path:
        return self.folder / _folder_name(name) / "run.json"

    def _variant(self, name: str, fix: str | None) -> RunRecord | None:
        """Run the script once (with ``fix``, if any); its record, or None when none was written."""
        path = self._record_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "torchdiag", "run", "--no-report", "--record-loss"]
        command += ["--output", str(path), "--max-steps", str(self.args.steps)]
        command += ["--skip-first", str(self.args.skip_first)]
        command += ["--profile-steps", str(self.args.profile_steps)]
        if fix is not None:
            command += ["--fix", fix]
        if self.target.module is not None:
            command += ["-m", self.target.module]
        else:
            command += ["--", str(self.target.script)]
        command += self.target.args
        _say(f"torchdiag try: {name} ({self.args.steps} steps) ...")
        with open(path.parent / "output.log", "wb") as log:
            try:
                subprocess.run(
                    command, stdout=log, stderr=subprocess.STDOUT, timeout=self.args.timeout
                )
            except subprocess.TimeoutExpired:
                _say(f"torchdiag try: {name} ran past --timeout {self.args.timeout} s")
        try:
            return load_record(path)
        except Exception:
            return None


def _folder_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "=-._" else "_" for c in name)


def _median_step_ms(record: RunRecord) -> float | None:
    from torchdiag.diff import sample_median, step_sample

    return sample_median(step_sample(record))


def _say(text: str) -> None:
    print(terminal_safe(text), file=sys.stderr, flush=True)


def _write_outputs(result: TryResult, trial: Trial, args: argparse.Namespace) -> None:
    from torchdiag.cli.report import write_report
    from torchdiag.report.trial_render import render_try

    try_json = trial.folder / "try.json"
    atomic_write(try_json, msgspec.json.encode(result))
    write_report(trial.baseline_path, "html", str(trial.folder / "report.html"), progress=False)
    write_output(render_try(result, args.format), args.result)
    say_written("Try result", str(try_json))
