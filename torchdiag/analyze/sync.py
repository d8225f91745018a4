"""``sync-points``: the host stops to wait for the GPU inside the step (a training step, or an
inference loop's forward call).

A synchronisation (``.item()``, ``.cpu()``, ``torch.cuda.synchronize()``, a blocking copy) lets
the GPU's queue run dry: the GPU then idles until the host has launched new work, while the host
sat blocked in the sync. The host's blocked time plus the GPU's idle time from the end of each
sync to the next GPU activity bound what removing the syncs wins back.
"""

from __future__ import annotations

from torchdiag.analyze.finding import NEGLIGIBLE_SAVING_PCT, Finding, severity_for_saving
from torchdiag.analyze.registry import SkipRule, rule
from torchdiag.analyze.wording import is_inference, step_noun
from torchdiag.view.run_view import RunView


@rule("sync-points")
def sync_points(view: RunView) -> Finding | None:
    """Host-device synchronisations inside steps, with the GPU idle time they cause."""
    summary = view.summary
    if summary is None or not summary.steps:
        raise SkipRule("needs a profiler window or trace with steps")
    if not summary.has_gpu:
        raise SkipRule("no GPU in the trace: nothing to synchronise with")
    n = len(summary.steps)
    syncs_per_step = sum(s.syncs for s in summary.steps) / n
    if syncs_per_step < 1.0:
        return None  # an occasional sync (logging every N steps) costs nothing per step
    timing = view.timing
    if timing is None or timing.step_ms <= 0:
        raise SkipRule("no step time")
    idle = sum(s.idle_after_sync_ms for s in summary.steps) / n
    blocked = sum(s.sync_ms for s in summary.steps) / n
    # A sync costs the host the time it is blocked (lost when the host is the bottleneck) and
    # the GPU the time it starves afterwards (lost when the GPU is): their sum bounds the cost
    # in either regime.
    saving = min(idle + blocked, timing.step_ms) / timing.step_ms * 100
    if saving < NEGLIGIBLE_SAVING_PCT:
        return None
    causes = sorted((s for s in summary.syncs if s.in_steps), key=lambda s: (-s.in_steps, s.name))
    evidence: dict[str, float | int | str | bool | None] = {
        "syncs_per_step": round(syncs_per_step, 1),
        "gpu_idle_after_syncs_ms_per_step": round(idle, 3),
        "host_blocked_in_syncs_ms_per_step": round(blocked, 3),
        "step_ms": round(timing.step_ms, 2),
    }
    for stat in causes[:4]:
        evidence[f"calls_in_steps:{stat.name}"] = stat.in_steps
    recommendation, snippet = _sync_fix(view)
    return Finding(
        id="sync-points",
        severity=severity_for_saving(saving),
        title=f"{syncs_per_step:.0f} host-device synchronisations per {step_noun(view)}",
        evidence=evidence,
        recommendation=recommendation,
        snippet=snippet,
        saving_pct_max=round(saving, 1),
    )


def _sync_fix(view: RunView) -> tuple[str, str]:
    """(recommendation, snippet): a training loop keeps its loss on the GPU and logs every N
    steps; an inference loop keeps its outputs on the GPU and copies them once, after the loop."""
    if is_inference(view):
        return (
            "Each sync drains the GPU's queue and leaves it idle until the next call's work "
            "arrives. Keep outputs on the GPU while the loop runs and copy them to the host once "
            "at the end: no .item(), .cpu(), .tolist(), .nonzero() or torch.cuda.synchronize() "
            "per call; where results must leave sooner, copy them with non_blocking=True into "
            "pinned memory.",
            "preds = []\n"
            "with torch.inference_mode():\n"
            "    for inputs in batches:\n"
            "        preds.append(model(inputs).argmax(1))  # stays on the GPU, no sync\n"
            "preds = torch.cat(preds).cpu()  # one sync, after the loop",
        )
    return (
        "Each sync drains the GPU's queue and leaves it idle until new work arrives. Keep "
        "values on the GPU (accumulate losses as tensors, log every N steps), avoid .item(), "
        ".cpu(), .tolist(), .nonzero() and torch.cuda.synchronize() in the step, and copy "
        "results with non_blocking=True into pinned memory.",
        "running_loss += loss.detach()          # stays on the GPU, no sync\n"
        "if step % 100 == 0:\n"
        "    print(running_loss.item() / 100)  # one sync every 100 steps\n"
        "    running_loss.zero_()",
    )
