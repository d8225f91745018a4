"""A planted input stall: CPU-heavy __getitem__ in the training process (num_workers=0).

    python samples/input_bound.py --output runs/input_bound/run.json
    torchdiag report runs/input_bound/run.json      # expect dataloader-stall, dataloader-workers

The model is small, so most of each step is spent preparing the next batch. ``--workers N`` is
the fix the report recommends: N loader processes prepare batches while the model trains.
``--read-ms`` adds a wait per sample, as a read from slow storage would; ``--channels`` widens
the model (``make demo`` uses both so the fix's gain shows even on a busy 2-core machine).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import torchdiag


class SlowAugmentedImages(torch.utils.data.Dataset):
    """Random images with an expensive, CPU-bound augmentation per sample, optionally behind a
    slow read (``read_ms`` per sample, as from network storage: waiting, not computing)."""

    def __init__(self, size: int, image_size: int, rounds: int, read_ms: float = 0.0) -> None:
        self.size, self.image_size, self.rounds = size, image_size, rounds
        self.read_s = read_ms / 1000

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.read_s > 0:
            time.sleep(self.read_s)
        g = torch.Generator().manual_seed(index)
        img = torch.rand(3, self.image_size, self.image_size, generator=g)
        for _ in range(self.rounds):
            img = (img * 0.9 + 0.05).clamp(0, 1).flip(2)
            img = torch.nn.functional.avg_pool2d(img[None], 3, stride=1, padding=1)[0]
        return img, index % 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs/input_bound/run.json")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument(
        "--read-ms", type=float, default=0.0, help="simulated storage latency per sample (ms)"
    )
    parser.add_argument("--channels", type=int, default=16, help="the model's width")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        # One intra-op thread, as in each DataLoader worker: on a small shared machine the
        # augmentation's tiny pooling ops slow down many times over when two threads contend
        # for the cores, and the comparison with --workers would measure the scheduler.
        torch.set_num_threads(1)
    dataset = SlowAugmentedImages(
        args.steps * args.batch_size, args.image_size, args.rounds, args.read_ms
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    model = nn.Sequential(
        nn.Conv2d(3, args.channels, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(args.channels, 10),
    ).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)

    with torchdiag.profile(output=args.output) as run:
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
    print(f"{run.steps} steps; record written to {run.path}")


if __name__ == "__main__":
    main()
