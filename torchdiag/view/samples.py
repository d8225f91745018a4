"""Means over the background sampler's GPU series, weighted by the raw samples each row holds."""

from __future__ import annotations

from torchdiag.record import RunRecord
from torchdiag.view.numbers import finite


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
    weighted = total = 0.0
    for gpu in samples.gpus:
        if gpu.gpm is None:
            continue
        for value, n in zip(gpu.gpm.tensor_active_pct, samples.rows_merged, strict=False):
            if finite(value) and n > 0:
                weighted += value * n
                total += n
    return weighted / total if total else None
