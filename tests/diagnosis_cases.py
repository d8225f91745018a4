"""The labelled diagnosis cases: real traces with a known planted cause, and what must be found."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tracedata import EXTERNAL, H200


@dataclass(frozen=True)
class Case:
    """A trace, the finding ids expected at warning or critical (empty: a healthy run), and the
    further warnings it rightly raises, each with the reason it is right."""

    name: str
    path: Path
    expected: frozenset[str]
    also_right: dict[str, str] = field(default_factory=dict)


_HOST_BOUND_SMALL = {
    "cpu-bound": "the GPU is busy 1.6 ms of a 10.6 ms step: it waits on the host",
    "launch-overhead": "79% of its kernels finish faster than their launch (batch 4)",
}

CASES = [
    Case("healthy_resnet_amp", H200 / "healthy_resnet_amp.pt.trace.json.gz", frozenset()),
    Case("transformer_amp", H200 / "transformer_amp.pt.trace.json.gz", frozenset()),
    Case("resnet_fp32", H200 / "resnet_fp32.pt.trace.json.gz", frozenset({"no-amp"})),
    Case("transformer_fp32", H200 / "transformer_fp32.pt.trace.json.gz", frozenset({"no-amp"})),
    Case(
        "resnet_small_batch",
        H200 / "resnet_small_batch.pt.trace.json.gz",
        frozenset({"small-batch"}),
        _HOST_BOUND_SMALL,
    ),
    Case(
        "transformer_sync_each_step",
        H200 / "transformer_sync_each_step.pt.trace.json.gz",
        frozenset({"sync-points"}),
    ),
    Case(
        "dataloader_stall_w0",
        H200 / "dataloader_stall_w0.pt.trace.json.gz",
        frozenset({"dataloader-stall", "dataloader-workers"}),
        {"pin-memory": "its loader has pin_memory=False: the labels name it a lesser finding"},
    ),
    Case(
        "tiny_mlp_launch_bound",
        H200 / "tiny_mlp_launch_bound.pt.trace.json.gz",
        frozenset({"cpu-bound", "optimizer-not-fused"}),
        {
            "launch-overhead": "95% of its kernels finish faster than their launch: the labels "
            "call it launch-bound",
            "small-batch": "batch 16 keeps 14% of the GPU in use; a larger batch spreads the "
            "fixed host time over more samples",
        },
    ),
    Case(
        "kineto/resnet50_num_workers_0",
        EXTERNAL / "kineto" / "resnet50_num_workers_0__worker0.pt.trace.json.gz",
        frozenset({"dataloader-stall", "dataloader-workers"}),
        {"no-amp": "fp32 ResNet-50 training on a V100 (tensor cores) without autocast"},
    ),
]
