"""``checkpointing``: activation checkpointing on the outermost module's children.

Each child of the outermost module that holds parameters runs under
``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``: its forward keeps only its inputs,
and backward recomputes the rest. The activations inside the children are freed between forward
and backward, at the price of running their forwards again (about a third more step time for a
typical model: backward is about twice the forward).

Why the children, and only those with parameters: they are the model's natural segments, and a
child without parameters (an activation, a pooling) keeps little that recomputation would free.
A model with fewer than two such children is not applicable: checkpointing a single segment
recomputes the whole forward during backward and holds all its activations again, so the peak
does not fall. A wrapper whose parameters are all in one child (``DistributedDataParallel``'s
``module``, a compiled module's ``_orig_mod``, a ``Sequential`` around one stack) is looked
through to the first level that has two.

The numerics are those of the run without the fix: the recomputation restores the random state
(``preserve_rng_state``), so dropout draws the same masks. One known difference is left as it is:
a child that updates buffers in its forward (batch norm's running statistics) updates them again
when recomputed; the loss does not depend on them in training.
"""

from __future__ import annotations

import functools
from typing import Any

from torchdiag.capture.fixes.model import OutermostModuleFix
from torchdiag.record import AppliedFix

# How many of the checkpointed children the detail names before it only counts the rest.
NAMED_CHILDREN = 4


def _has_parameters(module: Any) -> bool:
    return any(True for _ in module.parameters())


def _callable_children(module: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """The children of ``module`` that hold parameters, by dotted name, with containers that
    are never called themselves (``ModuleList``, ``ModuleDict``: no forward of their own)
    replaced by their members: wrapping a container's forward would change nothing."""
    import torch

    found: list[tuple[str, Any]] = []
    for name, child in module.named_children():
        if not _has_parameters(child):
            continue
        dotted = f"{prefix}{name}"
        if type(child).forward is torch.nn.Module.forward:  # a container: never called
            found.extend(_callable_children(child, f"{dotted}."))
        else:
            found.append((dotted, child))
    return found


def checkpoint_segments(model: Any) -> tuple[str, list[tuple[str, Any]]]:
    """The children to checkpoint, by dotted name, and the path to the module that holds them
    (``""``: the model itself). Looks through a module whose only child with parameters is
    one; the list may have fewer than two children (the caller says why that does not apply)."""
    path: list[str] = []
    module = model
    while True:
        children = _callable_children(module)
        if len(children) != 1:
            break
        name, module = children[0]
        path.append(name)
    prefix = ".".join(path)
    return prefix, [(f"{prefix}.{n}" if prefix else n, c) for n, c in children]


class Checkpointing(OutermostModuleFix):
    """``checkpointing`` (see the module docstring)."""

    spec = "checkpointing"

    def __init__(self) -> None:
        super().__init__()
        self.model_name = ""
        self.checkpointed: list[str] = []  # children whose forward ran under checkpoint
        self.calls_without_grad = 0

    def apply(self, model: Any) -> None:
        self.model_name = type(model).__name__
        where, children = checkpoint_segments(model)
        if len(children) < 2:
            holder = f"{self.model_name}.{where}" if where else self.model_name
            # Single children were looked through: none is left with parameters.
            self.not_applicable = (
                f"{holder} holds its parameters itself, not in 2 or more child modules: "
                "checkpointing it as one segment recomputes the whole forward in backward and "
                "holds its activations again, so the peak does not fall"
            )
            return
        for name, child in children:
            self._wrap(name, child)

    def _wrap(self, name: str, child: Any) -> None:
        import torch
        from torch.utils.checkpoint import checkpoint

        # The forward as it is now (a bound method, or a fix's wrapper): checkpoint recomputes
        # this one, so module hooks run once, the forward's body twice.
        original = child.forward
        fix = self

        @functools.wraps(original)
        def forward(*args: Any, **kwargs: Any) -> Any:
            if not torch.is_grad_enabled():  # no graph is recorded: nothing to free
                fix.calls_without_grad += 1
                return original(*args, **kwargs)
            if name not in fix.checkpointed:
                fix.checkpointed.append(name)
            # Non-reentrant: keyword and non-tensor arguments pass through, and inputs that do
            # not require grad (the batch) still give the parameters their gradients.
            return checkpoint(original, *args, use_reentrant=False, **kwargs)

        child.forward = forward

    def outcome(self) -> AppliedFix:
        """The children whose activations were recomputed, or why there were none."""
        if self.checkpointed:
            named = ", ".join(self.checkpointed[:NAMED_CHILDREN])
            more = len(self.checkpointed) - NAMED_CHILDREN
            if more > 0:
                named += f" and {more} more"
            return AppliedFix(
                fix=self.spec,
                applied=True,
                detail=f"{len(self.checkpointed)} modules in {self.model_name} checkpointed "
                f"({named}): their activations recomputed in backward, not kept",
            )
        if self.not_applicable is None and self.calls_without_grad:
            return AppliedFix(
                fix=self.spec,
                applied=False,
                detail=f"the model's children ran {self.calls_without_grad} times, all without "
                "grad (no_grad or inference_mode): no activations are kept to free",
            )
        return super().outcome()
