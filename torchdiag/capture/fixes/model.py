"""Model fixes: mixed precision, channels-last memory format, torch.compile.

Each applies to the *outermost* module the script calls: the first module with parameters that is
called while no other module's call is under way (``model(x)``, not its layers, not a loss
function without parameters). ``nn.Module.__call__`` is watched until that module is found, then
restored (:mod:`torchdiag.capture.model_finder`); the fix is applied to that instance only (its
``forward``, its weights), so the rest of the run pays nothing for the watching.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from torchdiag.capture.fixes.base import Fix
from torchdiag.capture.loss_watch import UNSCALED
from torchdiag.capture.model_finder import watch_for_model


class OutermostModuleFix(Fix):
    """A fix applied once to the outermost module the script calls (see the module docstring)."""

    def install(self) -> None:
        watch_for_model(self.patches, self._adopt)

    def _adopt(self, model: Any) -> None:
        try:
            self.apply(model)
        except Exception as err:  # a fix that cannot apply must not fail the run
            self.not_applicable = f"{type(err).__name__}: {err}"

    def apply(self, model: Any) -> None:
        """Apply the fix to the outermost module (called once, on its first call)."""
        raise NotImplementedError

    def nothing_to_change(self) -> str:
        return "the script called no nn.Module with parameters"


def _device_type(model: Any) -> str:
    device_type: str = next(model.parameters()).device.type
    return device_type


class Amp(OutermostModuleFix):
    """``amp=bf16`` / ``amp=fp16``: the outermost module's forward runs under ``torch.autocast``;
    with fp16 on a GPU the loss is scaled (``GradScaler``) and the optimizer steps through it."""

    def __init__(self, dtype: str) -> None:
        super().__init__()
        self.dtype_name = dtype
        self.spec = f"amp={dtype}"
        self._scaler_patches: Any = None

    @classmethod
    def from_value(cls, value: str) -> Fix:
        if value not in ("bf16", "fp16"):
            raise ValueError(f"amp= takes bf16 or fp16, not {value!r}")
        return cls(value)

    def apply(self, model: Any) -> None:
        import torch

        device_type = _device_type(model)
        dtype = torch.bfloat16 if self.dtype_name == "bf16" else torch.float16
        original = model.forward
        fix = self

        @functools.wraps(original)
        def forward(*args: Any, **kwargs: Any) -> Any:
            if torch.is_autocast_enabled(device_type):
                fix.not_applicable = "the script already runs its model under autocast"
                return original(*args, **kwargs)
            fix.changed(f"{type(model).__name__}.forward under autocast({device_type}, {dtype})")
            with torch.autocast(device_type, dtype=dtype):
                return original(*args, **kwargs)

        model.forward = forward
        if dtype is torch.float16 and device_type == "cuda":
            self._scale_losses(torch.amp.GradScaler("cuda"))

    def _scale_losses(self, scaler: Any) -> None:
        """fp16 gradients underflow without loss scaling: scale each backward, step through the
        scaler. (A script that clips gradients would clip scaled ones: say so in the detail.)"""
        import torch

        # Held as plain callables: torch's own annotations of these are incomplete.
        backward: Callable[..., Any] = torch.Tensor.backward
        step: Callable[..., Any] = torch.optim.Optimizer.step
        inside = threading.local()

        def scaled_backward(tensor: Any, *args: Any, **kwargs: Any) -> Any:
            if tensor.numel() == 1 and tensor.requires_grad:
                scaled = scaler.scale(tensor)
                setattr(scaled, UNSCALED, tensor)  # the loss as the script computed it
                tensor = scaled
            return backward(tensor, *args, **kwargs)

        def scaled_step(optimizer: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(inside, "yes", False):
                return step(optimizer, *args, **kwargs)
            inside.yes = True
            try:
                result = scaler.step(optimizer, *args, **kwargs)
                scaler.update()
                return result
            finally:
                inside.yes = False

        self.patches.replace(torch.Tensor, "backward", scaled_backward)
        self.patches.replace(torch.optim.Optimizer, "step", scaled_step)
        self.changed("losses scaled with GradScaler (gradient clipping would see scaled values)")


class ChannelsLast(OutermostModuleFix):
    """``channels-last``: the model's weights and its 4-D inputs in channels-last memory format
    (what tensor-core convolutions want)."""

    spec = "channels-last"

    def apply(self, model: Any) -> None:
        import torch

        if not any(p.dim() == 4 for p in model.parameters()):
            self.not_applicable = "the model has no 4-D (convolution) weights"
            return
        model.to(memory_format=torch.channels_last)
        self.changed(f"{type(model).__name__} weights in channels_last")
        original = model.forward
        fix = self

        def convert(value: Any) -> Any:
            if isinstance(value, torch.Tensor) and value.dim() == 4:
                fix.changed("4-D inputs in channels_last")
                return value.contiguous(memory_format=torch.channels_last)
            return value

        @functools.wraps(original)
        def forward(*args: Any, **kwargs: Any) -> Any:
            args = tuple(convert(a) for a in args)
            kwargs = {k: convert(v) for k, v in kwargs.items()}
            return original(*args, **kwargs)

        model.forward = forward


class Compile(OutermostModuleFix):
    """``compile``: the outermost module compiled in place (``nn.Module.compile``); the first
    steps then include the compilation (``torchdiag try`` reports that time apart)."""

    spec = "compile"

    def apply(self, model: Any) -> None:
        model.compile()
        self.changed(f"{type(model).__name__} compiled with torch.compile")
