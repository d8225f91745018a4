"""Rules about steadiness: uneven step times (``step-variance``), clocks held down
(``gpu-throttling``) and torch.compile recompiling (``recompiles``)."""

from __future__ import annotations

import itertools
import statistics

from torchdiag.analyze.finding import NEGLIGIBLE_SAVING_PCT, Finding, severity_for_saving
from torchdiag.analyze.registry import SkipRule, rule
from torchdiag.view.run_view import RunView
from torchdiag.view.step_rows import outlier_limit

# Fewer steps than this give no stable median and spread to judge outliers against.
MIN_STEPS_FOR_VARIANCE = 8

# NVML clock-event reasons that mean the clocks were held down, not merely idle or set by the
# administrator (nvmlClocksEventReason*: SwPowerCap, HwSlowdown, SwThermalSlowdown,
# HwThermalSlowdown, HwPowerBrakeSlowdown).
THROTTLE_REASONS = {
    0x4: "software power cap",
    0x8: "hardware slowdown",
    0x20: "software thermal slowdown",
    0x40: "hardware thermal slowdown",
    0x80: "hardware power brake",
}
_BUSY_UTILISATION = 50.0


@rule("step-variance")
def step_variance(view: RunView) -> Finding | None:
    """Steps much slower than the median: periodic stalls or one-off pauses."""
    record = view.record
    s = record.steps
    # The steady rows: profiled steps are slow by design and the warm-up (the first step and the
    # outliers right after it) pays one-off costs the report names apart; single steps only.
    rows = [
        (s.first_step[i], s.wall_ms[i], s.max_wall_ms[i])
        for i in view.steady_rows.rows
        if not s.profiled[i] and s.steps[i] == 1
    ]
    if len(rows) < MIN_STEPS_FOR_VARIANCE:
        raise SkipRule(
            f"needs at least {MIN_STEPS_FOR_VARIANCE} single, un-profiled steps (found {len(rows)})"
        )
    walls = [wall for _, wall, _ in rows]
    median = statistics.median(walls)
    limit = outlier_limit(walls)
    outliers = [(first, wall) for first, wall, _ in rows if wall > limit]
    if not outliers:
        return None
    excess = sum(wall - median for _, wall in outliers)
    saving = excess / sum(walls) * 100
    if saving < NEGLIGIBLE_SAVING_PCT:
        return None
    indices = [first for first, _ in outliers]
    period = _period(indices)
    walls_sorted = sorted(walls)
    p95 = walls_sorted[min(len(walls) - 1, int(0.95 * len(walls)))]
    evidence: dict[str, float | int | str | bool | None] = {
        "steps": len(walls),
        "median_ms": round(median, 2),
        "p95_ms": round(p95, 2),
        "max_ms": round(max(walls), 2),
        "outlier_steps": len(outliers),
        "outlier_threshold_ms": round(limit, 2),
        "first_outliers": ", ".join(str(i) for i in indices[:10]),
        "period_steps": period,
    }
    what = f"every {period} steps" if period else f"{len(outliers)} steps"
    return Finding(
        id="step-variance",
        severity=severity_for_saving(saving),
        title=f"slow outlier steps ({what}) cost {saving:.0f}% of the run",
        evidence=evidence,
        recommendation=(
            "Some steps take far longer than the median. Periodic ones are usually "
            "checkpointing, evaluation, logging or garbage collection inside the loop: move them "
            "off the critical path (async checkpoint, less frequent evaluation, gc.freeze()); "
            "irregular ones point at the input pipeline, recompilation or other processes."
        ),
        snippet=(
            "import gc\n"
            "gc.freeze()  # after model/optimizer creation: fewer full collections mid-training"
        ),
        saving_pct_max=round(saving, 1),
    )


def _period(indices: list[int]) -> int | None:
    """The spacing of outlier steps when they recur regularly (at least three times)."""
    if len(indices) < 3:
        return None
    gaps = [b - a for a, b in itertools.pairwise(indices)]
    common = statistics.mode(gaps)
    return common if common > 1 and gaps.count(common) >= 0.75 * len(gaps) else None


@rule("gpu-throttling")
def gpu_throttling(view: RunView) -> Finding | None:
    """SM clocks held below their maximum by power or heat while the GPU was busy."""
    record = view.record
    samples = record.samples
    if samples is None or not samples.gpus:
        raise SkipRule("needs NVML samples (a live capture on a GPU)")
    worst: tuple[float, dict[str, float | int | str | bool | None]] | None = None
    for gpu in samples.gpus:
        if not gpu.max_sm_clock_mhz:
            continue
        busy = throttled = 0
        lost = 0.0
        reasons = 0
        for util, clock, bits in zip(
            gpu.utilization_pct, gpu.sm_clock_mhz, gpu.throttle_reasons, strict=False
        ):
            if util is None or util < _BUSY_UTILISATION or clock is None:
                continue
            busy += 1
            held = (bits or 0) & sum(THROTTLE_REASONS)
            if held:
                throttled += 1
                reasons |= held
                lost += max(0.0, 1.0 - clock / gpu.max_sm_clock_mhz)
        if busy == 0 or throttled == 0:
            continue
        # Work at a lower clock takes proportionally longer; restoring the clock saves at most
        # the lost fraction during the throttled share of busy time.
        saving = lost / busy * 100
        temps = [t for t in gpu.temperature_c if t is not None]
        power = [p for p in gpu.power_w if p is not None]
        evidence: dict[str, float | int | str | bool | None] = {
            "gpu": gpu.index,
            "busy_samples_throttled_pct": round(throttled / busy * 100, 1),
            "mean_clock_loss_pct": round(saving, 1),
            "max_sm_clock_mhz": gpu.max_sm_clock_mhz,
            "reasons": ", ".join(v for k, v in THROTTLE_REASONS.items() if reasons & k),
            "max_temperature_c": max(temps) if temps else None,
            "max_power_w": round(max(power), 1) if power else None,
            "power_limit_w": gpu.power_limit_w,
        }
        if worst is None or saving > worst[0]:
            worst = (saving, evidence)
    if worst is None:
        return None
    saving, evidence = worst
    if saving < NEGLIGIBLE_SAVING_PCT:
        return None
    return Finding(
        id="gpu-throttling",
        severity=severity_for_saving(saving),
        title=f"GPU {evidence['gpu']} clocks held down ({evidence['reasons']})",
        evidence=evidence,
        recommendation=(
            "The GPU ran below its maximum SM clock while busy because of power or temperature "
            "limits. Check cooling and airflow, the power limit (nvidia-smi -q -d POWER), and "
            "other jobs sharing the GPU or its power budget."
        ),
        snippet="nvidia-smi -q -d PERFORMANCE,POWER,TEMPERATURE",
        saving_pct_max=round(saving, 1),
    )


@rule("recompiles")
def recompiles(view: RunView) -> Finding | None:
    """torch.compile recompiled or fell back to eager at graph breaks."""
    record = view.record
    env = record.environment
    if env.compile_used is None and not env.dynamo_counters:
        raise SkipRule("torch.compile counters are only known from a live capture")
    if not env.compile_used:
        return None
    counters = env.dynamo_counters
    breaks = sum(counters.get("graph_break", {}).values())
    recompiled = sum(counters.get("recompiles", {}).values())
    graphs = counters.get("stats", {}).get("unique_graphs", 0)
    frames = counters.get("frames", {})
    if breaks == 0 and recompiled == 0:
        return None
    top_breaks = sorted(counters.get("graph_break", {}).items(), key=lambda kv: -kv[1])[:3]
    evidence: dict[str, float | int | str | bool | None] = {
        "graph_breaks": breaks,
        "recompiles": recompiled,
        "unique_graphs": graphs,
        "frames_compiled": frames.get("ok"),
    }
    for reason, count in top_breaks:
        evidence[f"break:{reason[:80]}"] = count
    # Compilation time is not in the record, so no saving can be promised; slow steps it causes
    # show up under step-variance with their measured cost.
    return Finding(
        id="recompiles",
        severity="info",
        title=f"torch.compile: {breaks} graph breaks, {recompiled} recompiles",
        evidence=evidence,
        recommendation=(
            "Graph breaks run the code between compiled graphs eagerly; recompiles pay "
            "compilation again (often for changing shapes). Inspect them with "
            "TORCH_LOGS=graph_breaks,recompiles, mark dynamic dimensions, or remove data-"
            "dependent Python control flow from the compiled region."
        ),
        snippet="TORCH_LOGS=graph_breaks,recompiles python train.py",
        saving_pct_max=0.0,
    )
