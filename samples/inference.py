"""Inference: a small convolutional classifier called in a loop, no optimizer, under
torchdiag.profile().

    python samples/inference.py --output runs/inference/run.json
    torchdiag report runs/inference/run.json
    torchdiag run samples/inference.py            # the same loop, profiled from outside

Each call of the model is a step: the report gives the latency percentiles (p50/p95/p99) and
the throughput. As written the loop keeps grad mode on, so every forward records an autograd
graph nobody uses and the report raises ``inference-mode``; ``--inference-mode`` runs the loop
under ``torch.inference_mode()`` and the finding goes away. A few seconds on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import contextlib

import torch
from torch import nn

import torchdiag


def make_model(classes: int = 10) -> nn.Module:
    """A small conv net: enough operators per call to see autograd's bookkeeping."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, classes),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs/inference/run.json")
    parser.add_argument("--steps", type=int, default=60, help="calls of the model")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument(
        "--inference-mode", action="store_true", help="run the loop under torch.inference_mode()"
    )
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = make_model().to(device).eval()
    batches = [
        torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
        for _ in range(4)
    ]
    mode = torch.inference_mode() if args.inference_mode else contextlib.nullcontext()
    predictions = []
    with torchdiag.profile(output=args.output) as run, mode:
        for i in range(args.steps):
            logits = model(batches[i % len(batches)])
            predictions.append(logits.argmax(dim=1))
    print(f"{run.steps} steps; {len(predictions)} batches predicted; record written to {run.path}")


if __name__ == "__main__":
    main()
