"""Notice mixed precision in use: autocast regions entered and GradScaler scaling.

Autocast is entered inside the training step and has exited again by the time a step ends, so
its state cannot be read at step boundaries; wrapping ``autocast.__enter__`` sees every region.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchdiag.capture.patching import Patches
from torchdiag.record import AutocastInfo


class AmpWatch:
    """Counts enabled autocast regions by device type and dtype, and GradScaler use."""

    def __init__(self) -> None:
        self._patches = Patches()
        self.entered = 0
        self.device_types: set[str] = set()
        self.dtypes: set[str] = set()
        self.grad_scaler = False

    def install(self) -> None:
        """Patch ``torch.amp.autocast`` and ``GradScaler.scale`` (imports torch)."""
        import torch

        watch = self
        autocast_cls = torch.amp.autocast_mode.autocast
        original_enter: Callable[..., Any] = autocast_cls.__enter__

        def __enter__(ac: Any) -> Any:
            result = original_enter(ac)
            if getattr(ac, "_enabled", False):
                watch.entered += 1
                watch.device_types.add(str(getattr(ac, "device", "")))
                watch.dtypes.add(str(getattr(ac, "fast_dtype", "")).replace("torch.", ""))
            return result

        self._patches.replace(autocast_cls, "__enter__", __enter__)

        scaler_cls = getattr(getattr(torch.amp, "grad_scaler", None), "GradScaler", None)
        if scaler_cls is not None:
            original_scale = scaler_cls.scale

            def scale(scaler: Any, outputs: Any) -> Any:
                if scaler.is_enabled():
                    watch.grad_scaler = True
                return original_scale(scaler, outputs)

            self._patches.replace(scaler_cls, "scale", scale)

    def uninstall(self) -> None:
        """Restore the original methods."""
        self._patches.restore()

    def info(self) -> AutocastInfo:
        """What was seen, sorted for stable output."""
        return AutocastInfo(
            entered=self.entered,
            device_types=sorted(self.device_types),
            dtypes=sorted(self.dtypes),
            grad_scaler=self.grad_scaler,
        )
