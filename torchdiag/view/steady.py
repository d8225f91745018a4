"""Steady-state step figures that several rules share.

Rules judge the steps a user's training normally runs: steps inside the profiler window are slowed
by the profiler (2-3x on the reference H200 traces) and the first step pays one-off costs (worker
start-up, cuDNN autotuning, compilation), so both are left out whenever other steps remain.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchdiag.record import RunRecord
from torchdiag.view.numbers import finite


@dataclass(frozen=True)
class SteadySteps:
    """Totals over the steady-state steps of a record."""

    steps: int
    wall_s: float
    input_wait_s: float
    excluded: str

    @property
    def input_wait_share(self) -> float:
        """Fraction of step time spent blocked on the next batch."""
        return self.input_wait_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def mean_step_ms(self) -> float:
        """Mean wall time of a steady-state step."""
        return self.wall_s / self.steps * 1e3 if self.steps else 0.0


def steady_steps(record: RunRecord) -> SteadySteps:
    """Sum the step rows that are neither the first step nor profiled (fall back gracefully)."""
    s = record.steps
    rows = range(len(s.steps))
    keep = [i for i in rows if not s.profiled[i] and s.first_step[i] > 0]
    excluded = "first step and profiled steps excluded"
    if not keep:
        keep = [i for i in rows if s.first_step[i] > 0] or list(rows)
        excluded = "first step excluded" if len(keep) < len(s.steps) else "all steps used"
    steps = sum(s.steps[i] for i in keep)
    wall = sum(s.wall_ms[i] * s.steps[i] for i in keep) / 1e3
    wait = sum(s.input_wait_ms[i] * s.steps[i] for i in keep) / 1e3
    return SteadySteps(steps=steps, wall_s=wall, input_wait_s=wait, excluded=excluded)


def mean_gpu_busy_share(record: RunRecord) -> float | None:
    """Mean NVML utilisation over sampled GPUs (0-1), or None without GPU samples.

    NVML utilisation only says a kernel was running; it is an upper bound on useful GPU work and
    so a safe input to bounds on what removing GPU idle time could save.
    """
    if record.samples is None or not record.samples.gpus:
        return None
    # Each row is the mean of rows_merged[i] raw samples: weight it accordingly.
    weighted = total = 0.0
    for gpu in record.samples.gpus:
        for value, n in zip(gpu.utilization_pct, record.samples.rows_merged, strict=False):
            if finite(value) and n > 0:
                weighted += value * n
                total += n
    return weighted / total / 100.0 if total else None


def mean_gpm_tensor_pct(record: RunRecord) -> float | None:
    """Mean GPM tensor-core activity over sampled GPUs (percent), or None without GPM."""
    samples = record.samples
    if samples is None:
        return None
    values = [v for gpu in samples.gpus if gpu.gpm for v in gpu.gpm.tensor_active_pct if finite(v)]
    return sum(values) / len(values) if values else None
