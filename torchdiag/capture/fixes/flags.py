"""Backend flags: TF32 matrix math and cuDNN autotuning (both CUDA only).

The flags are torch's module-level settings (``torch.backends...``), set through their own
setters and set back to the script's values at the end, not patched as attributes.
"""

from __future__ import annotations

from typing import Any

from torchdiag.capture.fixes.base import Fix


class CudaFlagFix(Fix):
    """A fix that turns backend flags on; not applicable without a CUDA device."""

    def __init__(self) -> None:
        super().__init__()
        self._restore: list[tuple[Any, str, Any]] = []

    def flags(self) -> list[tuple[Any, str, str]]:
        """(owner, attribute, name as the user would write it) of each flag to turn on."""
        raise NotImplementedError

    def install(self) -> None:
        import torch

        if not torch.cuda.is_available():
            self.not_applicable = "no CUDA device: the flag only affects CUDA kernels"
            return
        for owner, attribute, spelled in self.flags():
            before = getattr(owner, attribute)
            if not before:
                setattr(owner, attribute, True)
                self._restore.append((owner, attribute, before))
                self.changed(f"{spelled} = True")
        if not self.changes:
            self.not_applicable = "already on"

    def uninstall(self) -> None:
        while self._restore:
            owner, attribute, before = self._restore.pop()
            setattr(owner, attribute, before)


class Tf32(CudaFlagFix):
    """``tf32``: float32 matrix multiplications and convolutions on tensor cores (TF32)."""

    spec = "tf32"

    def flags(self) -> list[tuple[Any, str, str]]:
        import torch

        return [
            (torch.backends.cuda.matmul, "allow_tf32", "torch.backends.cuda.matmul.allow_tf32"),
            (torch.backends.cudnn, "allow_tf32", "torch.backends.cudnn.allow_tf32"),
        ]


class CudnnBenchmark(CudaFlagFix):
    """``cudnn-benchmark``: cuDNN times its convolution algorithms and keeps the fastest."""

    spec = "cudnn-benchmark"

    def flags(self) -> list[tuple[Any, str, str]]:
        import torch

        return [(torch.backends.cudnn, "benchmark", "torch.backends.cudnn.benchmark")]
