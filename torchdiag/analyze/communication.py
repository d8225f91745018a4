"""``comm-bound``: collectives take a large share of the step and run while the GPU does nothing
else.

Data-parallel training (DDP, FSDP) exchanges gradients or parameters with collectives (NCCL or
RCCL kernels on a GPU). Overlapped with the backward pass they cost little; exposed — run while no
compute kernel runs — they add straight to the step. NCCL kernels also spin while they wait for
slower ranks, so a straggler elsewhere shows up here as communication.
"""

from __future__ import annotations

from torchdiag.analyze.finding import NEGLIGIBLE_SAVING_PCT, Finding, severity_for_saving
from torchdiag.analyze.registry import SkipRule, rule
from torchdiag.view.run_view import RunView
from torchdiag.view.step_model import step_evidence


@rule("comm-bound")
def comm_bound(view: RunView) -> Finding | None:
    """Communication kernels exposed (not overlapped with compute) for a share of the step."""
    record = view.record
    summary = view.summary
    if summary is None or not summary.steps:
        raise SkipRule("needs a profiler window or trace with steps")
    if not summary.has_gpu:
        raise SkipRule("no GPU activity: collectives are seen as GPU kernels")
    timing = view.timing
    if timing is None or timing.step_ms <= 0:
        raise SkipRule("no step time")
    if timing.comm_ms <= 0:
        return None  # no collectives ran in the steps
    exposed = timing.exposed_comm_ms
    # Perfect overlap hides exposed communication behind compute: at most its own share.
    saving = min(exposed, timing.step_ms) / timing.step_ms * 100
    if saving < NEGLIGIBLE_SAVING_PCT:
        return None
    share = timing.comm_ms / timing.step_ms * 100
    overlap = timing.comm_overlap_ms / timing.comm_ms * 100
    fsdp = summary.markers.get("FullyShardedDataParallel", 0) > 0
    evidence: dict[str, float | int | str | bool | None] = {
        **step_evidence(timing),
        "communication_ms_per_step": round(timing.comm_ms, 2),
        "communication_share_pct": round(share, 1),
        "hidden_behind_compute_pct": round(overlap, 1),
        "exposed_communication_ms_per_step": round(exposed, 2),
        "world_size": summary.world_size or record.world_size,
        "backend": summary.backend,
        "parallelism": "FSDP"
        if fsdp
        else "DDP"
        if summary.markers.get("DistributedDataParallel")
        else None,
    }
    advice = (
        "Prefetch the next shard while computing: FSDP(backward_prefetch=BackwardPrefetch."
        "BACKWARD_PRE, forward_prefetch=True), and keep limit_all_gathers on."
        if fsdp
        else "Let DDP overlap the all-reduce with the backward pass: larger gradient buckets "
        "(bucket_cap_mb), gradient_as_bucket_view=True, static_graph=True when the graph does not "
        "change; with gradient accumulation, skip the all-reduce on all but the last micro-batch "
        "(no_sync)."
    )
    return Finding(
        id="comm-bound",
        severity=severity_for_saving(saving),
        title=f"collectives take {share:.0f}% of each step, {overlap:.0f}% of it hidden by compute",
        evidence=evidence,
        recommendation=(
            advice + " NCCL kernels also spin while they wait for slower ranks: compare the ranks' "
            "step times (a straggler shows up here as communication)."
        ),
        snippet=(
            "model = torch.nn.parallel.DistributedDataParallel(\n"
            "    model, device_ids=[local_rank], bucket_cap_mb=100,\n"
            "    gradient_as_bucket_view=True, static_graph=True,\n"
            ")\n"
            "with model.no_sync():            # micro-batches before the last: no all-reduce\n"
            "    loss_fn(model(x), y).backward()"
        ),
        saving_pct_max=round(saving, 1),
    )
