"""``inference-mode``: the outermost module's calls run under ``torch.inference_mode()``.

What can be known when the model is first called, and what only later:

* an optimizer already built over the model's parameters says the script trains: the fix does
  not apply (``inference_mode`` outputs cannot be backpropagated);
* a call made with grad mode already off (``no_grad`` or ``inference_mode``) is left as it is,
  and a run whose every call was such has nothing for the fix to change;
* a ``backward()`` (or ``torch.autograd.grad``) is seen only when it happens: from then on the
  calls run as the script wrote them and the fix reports itself not applicable. A backward
  through an output made under ``inference_mode`` fails, so such a run may end with the error.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

from torchdiag.capture.fixes.model import OutermostModuleFix
from torchdiag.capture.patching import Patches
from torchdiag.record import AppliedFix


class InferenceMode(OutermostModuleFix):
    """``inference-mode``: the model's grad-mode calls run under ``torch.inference_mode()``."""

    spec = "inference-mode"

    def __init__(self) -> None:
        super().__init__()
        # Watched for the whole run: the base class restores ``self.patches`` once the model is
        # found, and these must outlive that.
        self._watch = Patches()
        self._optimizers: list[weakref.ref[Any]] = []
        self.backward_seen = False
        self.calls_changed = 0
        self.calls_without_grad = 0

    def install(self) -> None:
        import torch

        super().install()
        fix = self
        optimizers = self._optimizers
        init: Callable[..., Any] = torch.optim.Optimizer.__init__

        @functools.wraps(init)
        def optimizer_init(optimizer: Any, *args: Any, **kwargs: Any) -> None:
            optimizers.append(weakref.ref(optimizer))
            init(optimizer, *args, **kwargs)

        def noted(original: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(original)
            def call(*args: Any, **kwargs: Any) -> Any:
                fix.backward_seen = True
                return original(*args, **kwargs)

            return call

        self._watch.replace(torch.optim.Optimizer, "__init__", optimizer_init)
        self._watch.replace(torch.autograd, "backward", noted(torch.autograd.backward))
        self._watch.replace(torch.autograd, "grad", noted(torch.autograd.grad))

    def uninstall(self) -> None:
        super().uninstall()
        self._watch.restore()

    def apply(self, model: Any) -> None:
        import torch

        mine = {id(p) for p in model.parameters()}
        for ref in self._optimizers:
            optimizer = ref()
            groups = getattr(optimizer, "param_groups", None) or []
            if any(id(p) in mine for group in groups for p in group.get("params", ())):
                self.not_applicable = (
                    f"the script built {type(optimizer).__name__} over the model's parameters: "
                    "it trains, and backward needs the graphs inference_mode does not record"
                )
                return
        original = model.forward
        fix = self

        @functools.wraps(original)
        def forward(*args: Any, **kwargs: Any) -> Any:
            if fix.backward_seen:  # the run trains after all: run as written from here on
                return original(*args, **kwargs)
            if not torch.is_grad_enabled():
                fix.calls_without_grad += 1
                return original(*args, **kwargs)
            fix.calls_changed += 1
            fix.changed(f"{type(model).__name__}.forward under torch.inference_mode()")
            with torch.inference_mode():
                return original(*args, **kwargs)

        model.forward = forward

    def outcome(self) -> AppliedFix:
        """Not applicable once a backward was seen, whatever calls ran before it; otherwise
        what changed, with the count of calls left as they were. A reason found when the model
        was first called (an optimizer over it) comes first: the backward it led to is expected."""
        if self.not_applicable is not None and not self.changes:
            return super().outcome()
        if self.backward_seen:
            return AppliedFix(
                fix=self.spec,
                applied=False,
                detail="the run calls backward(): it needs the graphs inference_mode does not "
                "record (a backward through an inference_mode output fails)",
            )
        if self.calls_changed == 0 and self.calls_without_grad:
            return AppliedFix(
                fix=self.spec,
                applied=False,
                detail=f"the model's {self.calls_without_grad} calls already ran without grad "
                "(no_grad or inference_mode)",
            )
        outcome = super().outcome()
        if outcome.applied and self.calls_without_grad:
            outcome.detail += (
                f" ({self.calls_changed} calls; {self.calls_without_grad} already ran without grad)"
            )
        return outcome
