"""Planted-cause training and inference scenarios run live under ``torchdiag.profile()`` on a GPU.

    python scripts/gpu_scenarios.py [--out DIR] [--steps 20]

Each scenario plants one cause (fp32 math, a tiny batch, syncs every step, a starved loader, a
launch-bound MLP, fp32 batch scoring without an optimizer) or none; the live capture must report
the planted cause at warning or critical and nothing at warning on the healthy ones. The training
scenarios produced the reference H200 traces in ../shared/traces/h200 (see LABELS.md). Prints
PASS/FAIL per scenario; results land in
``DIR/gpu_scenarios.json``. Part of the prepared GPU check (``make gpu-check``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torchdiag  # noqa: E402
from torchdiag.analyze.registry import analyze  # noqa: E402
from torchdiag.view.run_view import RunView  # noqa: E402

Step = Callable[[], None]


def _resnet(batch: int, amp: bool, channels_last: bool) -> Step:
    import torchvision  # type: ignore[import-untyped]

    model = torchvision.models.resnet18(num_classes=100).cuda()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 224, 224, device="cuda").to(memory_format=fmt)
    y = torch.randint(0, 100, (batch,), device="cuda")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()

    return step


def _transformer(amp: bool, sync: bool) -> Step:
    layer = nn.TransformerEncoderLayer(1024, 16, 4096, batch_first=True)
    model = nn.TransformerEncoder(layer, 6).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(16, 512, 1024, device="cuda")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = model(x).float().pow(2).mean()
        loss.backward()
        opt.step()
        if sync:
            loss.item()
            model.layers[0].linear1.weight.grad.norm().cpu()
            torch.cuda.synchronize()

    return step


class _AugmentedImages(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    def __len__(self) -> int:
        return 1_000_000

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = torch.rand(3, 224, 224)
        for _ in range(3):
            img = (img * 0.9 + 0.05).clamp(0, 1).flip(2)
        return img, i % 100


def _stalled_loader() -> Step:
    import torchvision

    model = torchvision.models.resnet18(num_classes=100).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    it = iter(torch.utils.data.DataLoader(_AugmentedImages(), batch_size=64, num_workers=0))

    def step() -> None:
        x, y = next(it)
        x, y = x.cuda(), y.cuda()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()

    return step


def _resnet50_inference() -> Step:
    """Batch scoring in fp32: no optimizer, so each call of the model is one step."""
    import torchvision

    model = torchvision.models.resnet50(num_classes=1000).cuda().eval()
    x = torch.randn(64, 3, 224, 224, device="cuda")

    def step() -> None:
        with torch.inference_mode():
            model(x)

    return step


def _tiny_mlp() -> Step:
    model = nn.Sequential(*[nn.Sequential(nn.Linear(128, 128), nn.GELU()) for _ in range(40)])
    model = model.cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=False)
    x = torch.randn(16, 128, device="cuda")

    def step() -> None:
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()

    return step


SCENARIOS: dict[str, tuple[Callable[[], Step], set[str]]] = {
    "healthy_resnet_amp": (lambda: _resnet(256, True, True), set()),
    "resnet_fp32": (lambda: _resnet(256, False, False), {"no-amp"}),
    "resnet_small_batch": (lambda: _resnet(4, True, True), {"small-batch"}),
    "transformer_amp": (lambda: _transformer(True, False), set()),
    "transformer_fp32": (lambda: _transformer(False, False), {"no-amp"}),
    "transformer_sync_each_step": (lambda: _transformer(True, True), {"sync-points"}),
    "dataloader_stall_w0": (_stalled_loader, {"dataloader-stall", "dataloader-workers"}),
    "tiny_mlp_launch_bound": (_tiny_mlp, {"cpu-bound"}),
    "resnet50_fp32_inference": (_resnet50_inference, {"no-amp"}),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--only", nargs="*", help="scenario names to run")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("FAIL no CUDA device")
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    failures = 0
    for name, (make, expected) in SCENARIOS.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        step = make()
        for _ in range(3):  # warm-up outside the capture (cuDNN, allocator)
            step()
        torch.cuda.synchronize()
        record_path = args.out / "scenarios" / f"{name}.json"
        with torchdiag.profile(record_path, skip_first=8, profile_steps=4, name=name) as run:
            for _ in range(args.steps):
                step()
        torch.cuda.synchronize()
        record = run.record
        if record is None:  # the capture failed to write its record: say so, go on
            print(f"FAIL {name}: no record", flush=True)
            failures += 1
            continue
        analysis = analyze(RunView(record))
        flagged = {f.id for f in analysis.findings if f.severity in ("warning", "critical")}
        ok = expected <= flagged and (expected or not flagged)
        failures += not ok
        results[name] = {
            "expected": sorted(expected),
            "flagged": sorted(flagged),
            "all": [[f.id, f.severity, f.saving_pct_max] for f in analysis.findings],
            "median_step_ms": sorted(record.steps.wall_ms)[len(record.steps.wall_ms) // 2],
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(
            f"{'PASS' if ok else 'FAIL'} {name}: expected {sorted(expected)} "
            f"flagged {sorted(flagged)}",
            flush=True,
        )
        del step
        torch.cuda.empty_cache()
    (args.out / "gpu_scenarios.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
