"""Run a script as it is and with each fix, each run a fresh process, and measure every fix.

Each run is ``python -m torchdiag run --max-steps N --fix F --record-loss --record-outputs
--seed 0 ... SCRIPT ARGS``: the same steps, profiler window, arguments and random seed for every
variant (a script that does not seed itself still sees the same weights and data in every run, so
an inference run's outputs can be compared), nothing carried from one process into the next.
Runs are interleaved in rounds (baseline, fix 1, fix 2, ..., baseline, ...), so a machine that
drifts over the minutes drifts for every variant alike.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from torchdiag.analyze.registry import analyze
from torchdiag.capture.fixes import parse_fix
from torchdiag.files import atomic_write
from torchdiag.record import RunRecord, load_record
from torchdiag.trials.auto import auto_fixes
from torchdiag.trials.compare import Baseline, TryResult, baseline_step_ms, measure_fix
from torchdiag.view.run_view import RunView

AUTO = "auto"
DEFAULT_STEPS = 30
DEFAULT_REPEAT = 3
BASELINE = "baseline"
SAMPLE_INTERVAL_S = 0.1
# Every run starts from this seed (random, torch, numpy), before the script's own seeding.
SEED = 0


class TrialError(Exception):
    """The script could not be measured at all (it fails without any fix)."""


@dataclass(frozen=True)
class TrialSettings:
    """How each run goes: steps, the profiler window, rounds, and the per-run time limit."""

    steps: int = DEFAULT_STEPS
    skip_first: int = 5
    profile_steps: int = 5
    repeat: int = DEFAULT_REPEAT
    timeout_s: float = 3600.0


def try_fixes(
    script: str | os.PathLike[str] | None = None,
    args: Sequence[str] = (),
    *,
    module: str | None = None,
    fixes: Sequence[str] = (AUTO,),
    settings: TrialSettings | None = None,
    output: str | os.PathLike[str] | None = None,
    on_run: Callable[[str, int, int], None] | None = None,
) -> TryResult:
    """Measure what each fix changes in ``script`` (or ``-m module``) run with ``args``.

    ``fixes`` are spellings such as ``"workers=2"`` or ``"amp=bf16"``; ``"auto"`` stands for the
    fixes behind the baseline's own findings. The records go to ``output`` (default
    ``torchdiag_try/<time>-<pid>/``): ``baseline/run1.json`` (with its ``measured_fixes``),
    ``<fix>/run<R>.json``, each run's output in ``output<R>.log``, and ``try.json``.
    ``on_run(name, round, rounds)`` is called before each run. Raises ``ValueError`` for a
    misspelt fix and :class:`TrialError` when the script fails without any fix.
    """
    if (script is None) == (module is None):
        raise ValueError("give a script or a module, not both")
    for spec in fixes:
        if spec != AUTO:
            parse_fix(spec)
    target = ["-m", module] if module is not None else ["--", os.fspath(script or "")]
    trial = _Trial([*target, *args], settings or TrialSettings(), _folder(output), on_run)
    name = module if module is not None else Path(os.fspath(script or "")).name
    result = trial.run(name, fixes)
    atomic_write(trial.folder / "try.json", msgspec.json.encode(result))
    return result


def _folder(output: str | os.PathLike[str] | None) -> Path:
    if output is not None:
        return Path(output)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path("torchdiag_try") / f"{stamp}-{os.getpid()}"


def baseline_record_path(folder: Path) -> Path:
    """Where the baseline's record, with the measured fixes, is kept."""
    return folder / BASELINE / "run1.json"


class _Trial:
    def __init__(
        self,
        target: list[str],
        settings: TrialSettings,
        folder: Path,
        on_run: Callable[[str, int, int], None] | None,
    ) -> None:
        self.target, self.settings, self.folder, self.on_run = target, settings, folder, on_run

    def run(self, script_name: str, fixes: Sequence[str]) -> TryResult:
        first = self._variant(BASELINE, 1)
        if first is None or first.status.state == "failed":
            log = self.folder / BASELINE / "output1.log"
            raise TrialError(f"the script failed without any fix; its output is in {log}")
        first_view = RunView(first)
        analysis = analyze(first_view)
        specs = [s for spec in fixes for s in (auto_fixes(analysis) if spec == AUTO else [spec])]
        specs = list(dict.fromkeys(specs))
        runs: dict[str, list[RunView]] = {BASELINE: [first_view]}
        paths: dict[str, list[str]] = {BASELINE: [str(self._path(BASELINE, 1))]}
        for round_ in range(1, self.settings.repeat + 1):
            for name in ([] if round_ == 1 else [BASELINE]) + specs:
                record = self._variant(name, round_)
                if record is not None:
                    runs.setdefault(name, []).append(RunView(record))
                    paths.setdefault(name, []).append(str(self._path(name, round_)))
        baselines = [v for v in runs[BASELINE] if v.record.status.state != "failed"]
        measured = [
            measure_fix(
                spec,
                baselines,
                runs.get(spec, []),
                records=paths.get(spec, []),
                findings=analysis.findings,
            )
            for spec in specs
        ]
        memory, memory_of = first_view.run_memory_peak
        first.measured_fixes = measured
        atomic_write(baseline_record_path(self.folder), first.to_json())
        return TryResult(
            script=script_name,
            steps=self.settings.steps,
            baseline=Baseline(
                step_ms=baseline_step_ms(baselines),
                memory_peak_bytes=memory,
                memory_of=memory_of,
                findings=[f.id for f in analysis.findings if f.severity in ("critical", "warning")],
                runs=len(baselines),
                records=paths[BASELINE],
            ),
            fixes=measured,
        )

    def _path(self, name: str, round_: int) -> Path:
        safe = "".join(c if c.isalnum() or c in "=-._" else "_" for c in name)
        return self.folder / safe / f"run{round_}.json"

    def _variant(self, name: str, round_: int) -> RunRecord | None:
        """Run the script once (with the fix ``name``, unless the baseline); its record, or None
        when the run wrote none (killed, timed out)."""
        path = self._path(name, round_)
        path.parent.mkdir(parents=True, exist_ok=True)
        s = self.settings
        command = [sys.executable, "-m", "torchdiag", "run", "--no-report", "--record-loss"]
        command += ["--record-outputs", "--seed", str(SEED)]
        command += ["--output", str(path), "--max-steps", str(s.steps)]
        command += ["--skip-first", str(s.skip_first), "--profile-steps", str(s.profile_steps)]
        # Short runs: sample often enough to see the DataLoader workers' memory.
        command += ["--sample-interval", str(SAMPLE_INTERVAL_S)]
        if name != BASELINE:
            command += ["--fix", name]
        if self.on_run is not None:
            self.on_run(name, round_, s.repeat)
        path.unlink(missing_ok=True)  # a record left by an earlier try is not this run's
        with open(path.parent / f"output{round_}.log", "wb") as log:
            try:
                subprocess.run(
                    [*command, *self.target],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=s.timeout_s,
                )
            except subprocess.TimeoutExpired:
                log.write(f"\ntorchdiag try: stopped after {s.timeout_s:g} s\n".encode())
        try:
            return load_record(path)
        except Exception:
            return None
