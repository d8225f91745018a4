"""A tiny training step the capture tests share."""

from __future__ import annotations

import torch


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    """One optimizer step of a small model on random data."""
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    opt.zero_grad()
