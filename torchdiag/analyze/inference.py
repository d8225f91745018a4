"""Inference rules: forward passes that record autograd graphs nobody uses (``inference-mode``)."""

from __future__ import annotations

from torchdiag.analyze.finding import Finding, severity_for_saving
from torchdiag.analyze.registry import SkipRule, rule
from torchdiag.view.run_view import RunView

# Autograd's bookkeeping per operator recorded with grad mode on: a graph node, its edges and the
# tensors saved for backward. Measured at 1.7 us per op (torch.mul on a 16-element tensor, one
# thread, 2-core x86 host, torch 2.14: 3.8 us with grad mode, 2.1 us under inference_mode); an
# operator saving several tensors (convolution, batch norm) costs more, so the bound takes three
# times that. It is host time: it slows a step only while the step waits on the host.
AUTOGRAD_US_PER_OP = 5.0


@rule("inference-mode")
def inference_mode(view: RunView) -> Finding | None:
    """The model runs forward with grad mode on and no backward ever reads the graphs."""
    record = view.record
    if record.mode == "training":
        return None  # a backward (or an optimizer) reads the graphs: nothing recorded in vain
    calls = record.environment.model_calls
    if calls is None or not calls.model:
        raise SkipRule("the model's calls were not watched (a trace, or no model was called)")
    if calls.backward or record.environment.optimizers or calls.grad == 0:
        return None
    total = calls.grad + calls.no_grad + calls.inference_mode
    grad_share = calls.grad / total
    evidence: dict[str, float | int | str | bool | None] = {
        "model": calls.model,
        "calls_with_grad": calls.grad,
        "calls_no_grad": calls.no_grad,
        "calls_inference_mode": calls.inference_mode,
        "backward_calls": calls.backward,
    }
    saving = _saving_bound(view, grad_share, evidence)
    held = view.memory.allocated - calls.parameter_bytes
    if view.memory.allocated and held > 0:
        # Saved tensors live as long as the output that holds the graph: at most everything
        # allocated beyond the weights at the peak.
        evidence["activation_memory_bound_bytes"] = held
    return Finding(
        id="inference-mode",
        severity=severity_for_saving(saving),
        title=(
            f"{calls.grad} of {total} forward calls of {calls.model} record autograd graphs "
            "no backward uses"
        ),
        evidence=evidence,
        recommendation=(
            "Nothing in this run calls backward(), yet the model runs with grad mode on: every "
            "operator records a graph node and keeps its inputs alive for a backward that never "
            "comes. Run inference under torch.inference_mode() (or torch.no_grad() where the "
            "outputs are later used in autograd): less host time per operator, and activations "
            "freed as soon as the next layer has read them."
        ),
        snippet="with torch.inference_mode():\n    output = model(batch)",
        saving_pct_max=round(saving, 1),
    )


def _saving_bound(
    view: RunView,
    grad_share: float,
    evidence: dict[str, float | int | str | bool | None],
) -> float:
    """Upper bound on the share of step time (percent) autograd's bookkeeping takes: operators
    per step (every host event of the profiled steps counts, an overcount) times
    :data:`AUTOGRAD_US_PER_OP`, for the calls made with grad mode; on a GPU run no more than the
    time the GPU waits on the host. 0 without a profiler window to count operators in."""
    timing, summary = view.timing, view.summary
    if timing is None or timing.step_ms <= 0 or summary is None or not summary.steps:
        return 0.0
    ops = summary.host_events / len(summary.steps)
    bookkeeping_ms = ops * AUTOGRAD_US_PER_OP / 1e3 * grad_share
    saving = min(100.0, bookkeeping_ms / timing.step_ms * 100)
    if timing.gpu_busy_ms is not None:
        saving = min(saving, (timing.host_bound_share or 0.0) * 100)
    evidence["ops_per_step"] = round(ops, 1)
    evidence["autograd_ms_per_step_bound"] = round(bookkeeping_ms, 3)
    evidence["step_ms"] = round(timing.step_ms, 2)
    return saving
