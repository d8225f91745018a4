"""Quickstart: train torchvision's resnet18 on FakeData under torchdiag.profile().

    python samples/quickstart.py --output runs/quickstart/run.json
    torchdiag report runs/quickstart/run.json

A healthy run: batches come from worker processes, so the report should raise no input warning.
Uses the GPU (with bf16 autocast and channels_last) when there is one; about a minute on 2 CPU
cores otherwise.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import torchvision
from torchvision import transforms

import torchdiag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs/quickstart/run.json")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trace", action="store_true", help="keep the raw profiler trace")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    dataset = torchvision.datasets.FakeData(
        size=args.steps * args.batch_size,
        image_size=(3, args.image_size, args.image_size),
        num_classes=10,
        transform=transforms.ToTensor(),
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        pin_memory=device == "cuda",
        drop_last=True,
    )
    model = torchvision.models.resnet18(num_classes=10).to(device)
    memory_format = torch.channels_last if device == "cuda" else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    with torchdiag.profile(output=args.output, trace=args.trace) as run:
        for images, labels in loader:
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            labels = labels.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
    print(f"{run.steps} steps; record written to {run.path}")


if __name__ == "__main__":
    main()
