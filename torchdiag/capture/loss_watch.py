"""The training loss, as the scalars ``backward()`` is called on.

``torchdiag try`` asks whether a fix kept the numerics: it compares the losses of the runs with
and without it. The loss is whatever scalar tensor the script calls ``backward()`` on; it is kept
detached on its device and read only when the run ends, so watching it adds no synchronisation
to the step (``.item()`` per step would wait for the GPU every time).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torchdiag.capture.patching import Patches

LOSS_LIMIT = 512
# A fix that scales the loss before backward() (fp16 loss scaling) leaves the loss as the
# script computed it on the scaled tensor under this name: that is the loss to keep.
UNSCALED = "_torchdiag_unscaled_loss"


class LossWatch:
    """Keeps the first :data:`LOSS_LIMIT` scalar losses ``Tensor.backward()`` is called on."""

    def __init__(self, limit: int = LOSS_LIMIT) -> None:
        self._patches = Patches()
        self._limit = limit
        self._kept: list[Any] = []

    def install(self) -> None:
        """Patch ``torch.Tensor.backward`` (imports torch)."""
        import torch

        kept, limit = self._kept, self._limit
        original: Callable[..., Any] = torch.Tensor.backward

        def backward(tensor: Any, *args: Any, **kwargs: Any) -> Any:
            if len(kept) < limit and tensor.numel() == 1:
                loss = getattr(tensor, UNSCALED, tensor)
                kept.append(loss.detach().clone())  # clone: the script may change it in place
            return original(tensor, *args, **kwargs)

        self._patches.replace(torch.Tensor, "backward", backward)

    def uninstall(self) -> None:
        """Restore ``Tensor.backward``."""
        self._patches.restore()

    def losses(self) -> list[float | None]:
        """The losses as floats (None where not finite); reads the device once."""
        if not self._kept:
            return []
        import torch

        values = torch.stack([t.reshape(()).float() for t in self._kept]).cpu().tolist()
        return [v if math.isfinite(v) else None for v in values]
