"""One view of a run: every number derived from a record, computed at most once.

Rules (``analyze``), ``diff``, ``try`` and every renderer read a :class:`RunView`, never the
derivations behind it, so a quantity has one value however many outputs show it. Each derived
figure is a cached property: the first reader computes it, every later one reads the same
object, and a figure no output asks for costs nothing. The derivations themselves live in this
package's modules, one concept each; outside this package nothing calls them (tests/test_view.py
checks both).
"""

from __future__ import annotations

from functools import cached_property
from types import MappingProxyType
from typing import Any

from torchdiag.record import RankFigures, RunRecord, TraceSummary

# Modules, not their functions: a derivation is looked up where it is defined, so a test can
# count its calls (tests/test_view.py).
from torchdiag.view import counters as _counters
from torchdiag.view import headline as _headline
from torchdiag.view import memory as _memory
from torchdiag.view import memory_breakdown as _breakdown
from torchdiag.view import progress as _progress
from torchdiag.view import ranks as _ranks
from torchdiag.view import run_end as _run_end
from torchdiag.view import samples as _samples
from torchdiag.view import steady as _steady
from torchdiag.view import step_model as _model
from torchdiag.view import step_rows as _rows
from torchdiag.view import step_sample as _sample
from torchdiag.view.progress import Progress
from torchdiag.view.samples import GpuUse, HostCpu
from torchdiag.view.steady import SteadyRows, SteadySteps
from torchdiag.view.step_model import StepTime
from torchdiag.view.step_rows import StepQuantiles, StepRows, WallStats
from torchdiag.view.step_sample import StepSample


class RunView:
    """The derived figures of one record (treat the record as read-only once viewed).

    The view is immutable: attributes cannot be set or deleted; cached figures are computed on
    first access.
    """

    __slots__ = ("__dict__", "record")

    record: RunRecord

    def __init__(self, record: RunRecord) -> None:
        object.__setattr__(self, "record", record)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"RunView is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"RunView is immutable: cannot delete {name!r}")

    def __repr__(self) -> str:
        return f"RunView({self.record.name or self.record.source!r})"

    # -- the trace and the step model ------------------------------------------------------

    @cached_property
    def summary(self) -> TraceSummary | None:
        """The trace summary every rule and output describes: the live window, else the slowest
        rank's trace."""
        return _model.primary_summary(self.record)

    @cached_property
    def steady_rows(self) -> SteadyRows:
        """The step rows of the steady state: warm-up and profiled steps left out, the warm-up
        named."""
        return _steady.steady_rows(self.record)

    @cached_property
    def steady(self) -> SteadySteps:
        """Totals over the steady-state steps (warm-up and profiled steps left out)."""
        return _steady.steady_steps(self.record, self.steady_rows)

    @cached_property
    def timing(self) -> StepTime | None:
        """The un-profiled step and what occupied it (``None`` without steps)."""
        return _model.step_time(self.record, self.summary, self.steady, self.gpu_util_share)

    @cached_property
    def sample(self) -> StepSample:
        """The steady-state step times as a sample (median, bootstrap) for ``diff``."""
        return _sample.step_sample(self.record, self.summary, self.steady_rows)

    # -- step rows ---------------------------------------------------------------------------

    @cached_property
    def rows(self) -> StepRows:
        """The step rows every step statistic is taken over."""
        return _rows.step_rows(self.record, self.summary)

    @cached_property
    def step_numbers(self) -> list[int]:
        """The first step number of every step row."""
        return _rows.step_numbers(self.record, self.summary)

    @cached_property
    def step_walls(self) -> list[float]:
        """Wall ms of every step row (NaN where missing)."""
        return _rows.step_walls(self.rows)

    @cached_property
    def step_waits(self) -> list[float]:
        """Input wait ms of every step row."""
        return _rows.step_waits(self.record, self.summary)

    @cached_property
    def wall_stats(self) -> WallStats | None:
        """Quantiles, mean, maximum and outliers of the step rows."""
        return _rows.wall_stats(self.rows, self.step_numbers, self.quantiles)

    @cached_property
    def quantiles(self) -> StepQuantiles:
        """p50/p95/p99 step time: over every row of a training run, over the steady rows (no
        warm-up call, no profiled call) of an inference run."""
        rows = _rows.percentile_rows(self.record, self.rows, self.steady_rows.rows)
        return _rows.step_quantiles(rows)

    @cached_property
    def profiled_range(self) -> tuple[int, int] | None:
        """(first, last) number of the steps torch.profiler recorded."""
        return _rows.profiled_step_range(self.record, self.summary)

    @cached_property
    def profiler_warmup_steps(self) -> list[int]:
        """Steps that ran under the profiler before its recorded ones (discarded warm-up)."""
        return _rows.profiler_warmup_steps(self.record, self.profiled_range)

    @cached_property
    def profiled_numbers(self) -> list[int]:
        """The primary summary's steps in the record's own numbering."""
        if self.summary is None:
            return []
        return _rows.trace_step_numbers(self.record, self.summary)

    # -- device, batch, memory ---------------------------------------------------------------

    @cached_property
    def batch(self) -> tuple[int | None, str | None]:
        """(batch size, where it came from), or ``(None, None)``."""
        return _model.batch_size(self.record, self.summary)

    @cached_property
    def capability(self) -> float | None:
        """Compute capability of the first device."""
        return _model.device_capability(self.record, self.summary)

    @cached_property
    def device_memory_bytes(self) -> int | None:
        """Total memory of the first device."""
        return _model.device_memory_bytes(self.record, self.summary)

    @cached_property
    def gpu_util_share(self) -> float | None:
        """Mean NVML utilisation over sampled GPUs (0-1)."""
        return _samples.mean_gpu_busy_share(self.record)

    @cached_property
    def gpus(self) -> list[GpuUse]:
        """Each sampled GPU's mean utilisation and memory peak."""
        return _samples.gpu_use(self.record)

    @cached_property
    def host_cpu(self) -> HostCpu | None:
        """The host's mean CPU use (all cores, and this process), from the samples."""
        return _samples.host_cpu(self.record)

    @cached_property
    def tensor_active_pct(self) -> float | None:
        """Mean GPM tensor-core activity over sampled GPUs (percent)."""
        return _samples.mean_gpm_tensor_pct(self.record)

    @cached_property
    def memory(self) -> _memory.MemoryPeaks:
        """Peak GPU memory by source."""
        return _memory.memory_peaks(self.record, self.summary)

    @cached_property
    def run_memory_peak(self) -> tuple[int | None, str]:
        """The memory the run needed at its peak, and of what (GPU, else host and workers)."""
        return _memory.run_memory_peak(self.memory, _memory.host_peak_bytes(self.record))

    @cached_property
    def memory_breakdown(self) -> _breakdown.MemoryBreakdown:
        """The memory peak of the profiler window by category, and the largest batch estimate."""
        return _breakdown.memory_breakdown(self.record, self.batch[0], self.device_memory_bytes)

    # -- what every output shows -------------------------------------------------------------

    @cached_property
    def headline(self) -> MappingProxyType[str, Any]:
        """The key numbers every output shows (read-only; see
        :func:`torchdiag.view.headline.headline`)."""
        return MappingProxyType(_headline.headline(self))

    @cached_property
    def counters(self) -> MappingProxyType[str, float | None]:
        """The exact counters (kernels, operators, syncs, bytes per step, allocator peak ...),
        ``None`` where the record cannot tell one (see :mod:`torchdiag.view.counters`)."""
        return MappingProxyType(
            _counters.run_counters(self.record, self.summary, self.memory.allocated)
        )

    @cached_property
    def progress(self) -> Progress:
        """Steps done, and the total and time left where the run's step limit or its training
        DataLoader's length tells them (at the un-profiled step time)."""
        timing = self.timing
        return _progress.run_progress(self.record, timing.step_ms if timing is not None else None)

    @cached_property
    def ranks(self) -> list[RankFigures]:
        """Every rank's figures ([] for a single process)."""
        return _ranks.rank_figures(self.record)

    @cached_property
    def run_end(self) -> _run_end.RunEnd:
        """Whether the run ended; for a checkpoint of one that did not, whether its process still
        runs, judged once so that every output says the same (see
        :mod:`torchdiag.view.run_end`)."""
        return _run_end.run_end(self.record)
