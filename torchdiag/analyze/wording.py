"""The two questions a rule asks before it words its fix: is this an inference run, and what is
one of its steps called.

Every rule evaluates training and inference records alike (same evidence, same thresholds); only
the words and the snippet differ, because an inference loop has no loss, backward or optimizer to
change. Each rule keeps its own training and inference text beside it; this module only answers
the questions they share, so that every finding and the report's labels agree.
"""

from __future__ import annotations

from torchdiag.view.run_view import RunView


def is_inference(view: RunView) -> bool:
    """Whether the run only ran its model forward (``record.mode``): its fixes must not speak of
    a loss, a backward, a GradScaler or an optimizer."""
    return view.record.mode == "inference"


def step_noun(view: RunView) -> str:
    """What one step of the run is called: "forward call" where a step is one call of the model
    (``headline.step_is_forward_call``, a live inference loop; the report's labels say the
    same), else "step" (training, and an inference trace's ProfilerStep spans)."""
    return "forward call" if view.headline["step_is_forward_call"] else "step"
