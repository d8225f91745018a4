"""Seeding a run's random number generators, so that runs of the same script see the same data.

``torchdiag try`` compares a fix's outputs with the baseline's on an inference run; outputs are
comparable only when both runs had the same weights and the same inputs. A script that seeds
itself does so after this and wins; one that does not still draws the same numbers in every run.
"""

from __future__ import annotations

import importlib.util
import random


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, torch (every device) and numpy where it is installed."""
    random.seed(seed)
    import torch

    torch.manual_seed(seed)  # seeds every CUDA device too
    if importlib.util.find_spec("numpy") is not None:
        import numpy

        numpy.random.seed(seed)
