"""Finding the model: the outermost module with parameters, on its first call.

The model is the first module with parameters called while no other module's call is under way
(``model(x)``, not its layers, not a parameterless loss function). ``nn.Module.__call__`` is
watched until that call and then restored, so the rest of the run pays nothing for the watching;
whoever asked (a model fix, the watch of the model's calls) adopts that one instance.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from torchdiag.capture.patching import Patches


def has_parameters(module: Any) -> bool:
    """Whether ``module`` holds parameters (a model, not a loss function or an activation)."""
    return any(True for _ in module.parameters())


def watch_for_model(patches: Patches, found: Callable[[Any], None]) -> None:
    """Patch ``nn.Module.__call__`` (recorded in ``patches``) until the model's first call.

    Then ``patches`` is restored, ``found(model)`` runs, and the call goes ahead (through
    whatever ``found`` installed on the model). ``found`` runs once.
    """
    import torch

    original_call = torch.nn.Module.__call__
    depth = threading.local()
    adopted: list[Any] = []

    def __call__(module: Any, *args: Any, **kwargs: Any) -> Any:
        level = getattr(depth, "level", 0)
        if level == 0 and not adopted and has_parameters(module):
            adopted.append(module)
            patches.restore()  # found: stop watching every module call
            found(module)
            return module(*args, **kwargs)
        depth.level = level + 1
        try:
            return original_call(module, *args, **kwargs)
        finally:
            depth.level = level

    patches.replace(torch.nn.Module, "__call__", __call__)
