"""Every fix there is (:data:`FIX_KINDS`), and reading a fix from its spelling.

The command line's list of fixes, ``torchdiag try``'s automatic choice and its comparison, the
report's "measured" column beside each finding, docs/rules.md and the README's list of fixes all
read this registry (tests/test_fix_kinds.py keeps the docs equal to it). Its order is the order
of every list of fixes, and of the fixes ``--fix auto`` tries for one finding.
"""

from __future__ import annotations

import os

from torchdiag.capture.fixes.allocator import ExpandableSegments
from torchdiag.capture.fixes.base import Fix
from torchdiag.capture.fixes.checkpointing import Checkpointing
from torchdiag.capture.fixes.flags import CudnnBenchmark, Tf32
from torchdiag.capture.fixes.inference import InferenceMode
from torchdiag.capture.fixes.kind import Always, FixKind, FromEvidence
from torchdiag.capture.fixes.loader import (
    BatchMultiplier,
    InputCeiling,
    PersistentWorkers,
    PinMemory,
    Prefetch,
    Workers,
)
from torchdiag.capture.fixes.model import Amp, ChannelsLast, Compile
from torchdiag.capture.fixes.optimizer import FusedOptimizer


def default_workers() -> int:
    """Workers to try when no finding suggests a number: half the cores, 2 to 8."""
    return max(2, min(8, (os.cpu_count() or 2) // 2))


FIX_KINDS: tuple[FixKind, ...] = (
    FixKind(
        "input-ceiling",
        InputCeiling,
        "every DataLoader serves its first few batches again and again: the most any "
        "input-pipeline fix can give",
        answers=("dataloader-stall",),
        loss_note="not compared: the batches repeat",
    ),
    FixKind(
        "workers",
        Workers,
        "every DataLoader loads in N worker processes",
        value="N",
        answers=("dataloader-stall", "dataloader-workers"),
        auto_value=FromEvidence("suggested_num_workers", default=default_workers),
    ),
    FixKind(
        "pin-memory",
        PinMemory,
        "batches in page-locked memory: faster, asynchronous copies to the GPU",
        answers=("pin-memory",),
        needs_gpu=True,
    ),
    FixKind(
        "persistent-workers",
        PersistentWorkers,
        "DataLoader worker processes survive from one epoch to the next",
    ),
    FixKind("prefetch", Prefetch, "each DataLoader worker keeps N batches ready", value="N"),
    FixKind(
        "batch",
        BatchMultiplier,
        "every DataLoader's batch size multiplied by K, compared per sample (the learning "
        "rate may need scaling)",
        value="xK",
        answers=("small-batch",),
        auto_value=FromEvidence("batch_factor", default=2, form="x{}"),
    ),
    FixKind(
        "amp",
        Amp,
        "the outermost module's forward under autocast, GradScaler for fp16 on a GPU",
        value="bf16|fp16",
        answers=("no-amp",),
        auto_value=Always("bf16"),
    ),
    FixKind(
        "tf32",
        Tf32,
        "float32 matrix multiplications and convolutions on tensor cores",
        answers=("tf32-disabled",),
        needs_gpu=True,
    ),
    FixKind(
        "cudnn-benchmark",
        CudnnBenchmark,
        "cuDNN times its convolution algorithms and keeps the fastest",
        answers=("cudnn-benchmark",),
        needs_gpu=True,
    ),
    FixKind(
        "channels-last",
        ChannelsLast,
        "the model's weights and its 4-D inputs in channels-last memory format",
        answers=("channels-last",),
    ),
    FixKind(
        "fused-optimizer",
        FusedOptimizer,
        "optimizers built with `fused=True`, else `foreach=True`",
        answers=("optimizer-not-fused",),
    ),
    FixKind(
        "compile",
        Compile,
        "the outermost module compiled in place; its first step's extra time reported apart",
        answers=("cpu-bound", "launch-overhead"),
        first_step_one_off_cost=True,
    ),
    FixKind(
        "inference-mode",
        InferenceMode,
        "the outermost module's calls under `torch.inference_mode()` (not applicable when the "
        "run calls backward or its calls already run without grad); judged on its outputs",
        answers=("inference-mode",),
    ),
    FixKind(
        "checkpointing",
        Checkpointing,
        "the outermost module's children with parameters under activation checkpointing: "
        "activations recomputed in backward, not kept (typically about 30% more step time)",
        answers=("memory-pressure",),
    ),
    FixKind(
        "expandable-segments",
        ExpandableSegments,
        "`PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True` (added to the options already set): "
        "the CUDA allocator grows segments in place, against fragmentation",
        answers=("memory-pressure",),
        needs_gpu=True,
    ),
)
# For --help and for error messages: "input-ceiling, workers=N, pin-memory, ...".
FIX_NAMES = ", ".join(kind.spelling for kind in FIX_KINDS)
_BY_NAME = {kind.name: kind for kind in FIX_KINDS}


def parse_fix(spec: str) -> Fix:
    """The fix a spelling names; raises ``ValueError`` (one line, listing the fixes) if none."""
    name, has_value, value = spec.strip().partition("=")
    kind = _BY_NAME.get(name)
    if kind is None:
        raise ValueError(f"unknown fix {spec!r}; fixes: {FIX_NAMES}")
    if kind.takes_value != bool(has_value):
        form = f"{name}=VALUE" if kind.takes_value else name
        raise ValueError(f"fix {spec!r} is spelled {form}; fixes: {FIX_NAMES}")
    return kind.build(value)


def kind_of(spec: str) -> FixKind | None:
    """The kind of fix a spelling names (its value unchecked), or None when it names none."""
    return _BY_NAME.get(spec.strip().partition("=")[0])


def kinds_answering(finding_id: str) -> tuple[FixKind, ...]:
    """The fixes that answer findings of the rule ``finding_id``, in registry order."""
    return tuple(kind for kind in FIX_KINDS if finding_id in kind.answers)
