"""The labelled diagnosis cases: real traces with a known planted cause, and what must be found."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tracedata import EXTERNAL, H200


@dataclass(frozen=True)
class Case:
    """A trace and the finding ids expected at warning or critical (empty: a healthy run)."""

    name: str
    path: Path
    expected: frozenset[str]


CASES = [
    Case("healthy_resnet_amp", H200 / "healthy_resnet_amp.pt.trace.json.gz", frozenset()),
    Case("transformer_amp", H200 / "transformer_amp.pt.trace.json.gz", frozenset()),
    Case("resnet_fp32", H200 / "resnet_fp32.pt.trace.json.gz", frozenset({"no-amp"})),
    Case("transformer_fp32", H200 / "transformer_fp32.pt.trace.json.gz", frozenset({"no-amp"})),
    Case(
        "resnet_small_batch",
        H200 / "resnet_small_batch.pt.trace.json.gz",
        frozenset({"small-batch"}),
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
    ),
    Case(
        "tiny_mlp_launch_bound",
        H200 / "tiny_mlp_launch_bound.pt.trace.json.gz",
        frozenset({"cpu-bound"}),
    ),
    Case(
        "kineto/resnet50_num_workers_0",
        EXTERNAL / "kineto" / "resnet50_num_workers_0__worker0.pt.trace.json.gz",
        frozenset({"dataloader-stall", "dataloader-workers"}),
    ),
]
