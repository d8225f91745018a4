"""``fused-optimizer``: optimizers built with ``fused=True`` where torch has a fused kernel for
them (one kernel for all parameters), else ``foreach=True`` (batched per-parameter kernels).

The constructors of torch.optim's optimizers that take ``fused`` are wrapped; an optimizer the
script already built with ``fused`` or ``foreach`` set is left as it is. Whether a fused kernel
exists depends on the parameters' device and dtype, known only when the optimizer is built: a
construction that refuses ``fused`` is retried with ``foreach``.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from torchdiag.capture.fixes.base import Fix


class FusedOptimizer(Fix):
    """``fused-optimizer`` (see the module docstring)."""

    spec = "fused-optimizer"

    def install(self) -> None:
        import torch

        for name in dir(torch.optim):
            cls = getattr(torch.optim, name)
            if not isinstance(cls, type) or not issubclass(cls, torch.optim.Optimizer):
                continue
            init = vars(cls).get("__init__")
            if init is not None and "fused" in inspect.signature(init).parameters:
                self._wrap(cls, init)

    def _wrap(self, cls: type, original: Any) -> None:
        fix = self

        @functools.wraps(original)
        def __init__(optimizer: Any, *args: Any, **kwargs: Any) -> None:
            if type(optimizer) is not cls or kwargs.get("fused") or kwargs.get("foreach"):
                if kwargs.get("fused") or kwargs.get("foreach"):
                    fix.not_applicable = f"{cls.__name__} was already built fused or foreach"
                original(optimizer, *args, **kwargs)
                return
            try:
                original(optimizer, *args, **{**kwargs, "fused": True})
                fix.changed(f"{cls.__name__}(fused=True)")
            except (RuntimeError, ValueError):  # no fused kernel for these parameters
                original(optimizer, *args, **{**kwargs, "foreach": True})
                fix.changed(f"{cls.__name__}(foreach=True): no fused kernel for its parameters")

        self.patches.replace(cls, "__init__", __init__)

    def nothing_to_change(self) -> str:
        return "the script built no torch.optim optimizer that has a fused or foreach form"
