"""Data-parallel training under torchdiag, one process per rank (DDP on gloo, CPU or GPU).

    torchrun --nproc_per_node=2 samples/distributed.py --output runs/ddp/
    torchrun --nproc_per_node=2 samples/distributed.py --output runs/ddp-slow/ --straggler 1
    torchdiag report runs/ddp-slow/          # one report over every rank's run.rank<R>.json

No torchdiag code is specific to distributed runs: each rank writes its own record into the
folder, and the report compares the ranks. ``--straggler R`` makes rank R sleep in every step
(a planted slow rank: the others wait for it in each all-reduce); ``--die-at N`` ends rank 1
abruptly at step N (the others' records still come out, and the report names the missing rank).
``--step-wait S`` makes every rank wait S seconds per step, as a host waits on its GPU: on a
loaded CPU-only machine it keeps the ranks' CPU work a small part of the step, so that two
identical ranks stay alike.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist

import torchdiag


class Batches(torch.utils.data.Dataset):
    """Random batches, each taking ``delay`` seconds to make (a slow input pipeline)."""

    def __init__(self, n: int, delay: float) -> None:
        self.n, self.delay = n, delay

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.delay:
            time.sleep(self.delay)
        return torch.randn(256, 512)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs/ddp/")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--straggler", type=int, default=None, help="rank that sleeps each step")
    parser.add_argument("--sleep", type=float, default=0.05, help="seconds the straggler sleeps")
    parser.add_argument(
        "--slow-input",
        action="store_true",
        help="the straggler sleeps in its DataLoader (an input stall) instead of the loop",
    )
    parser.add_argument("--die-at", type=int, default=None, help="rank 1 exits at this step")
    parser.add_argument("--hidden", type=int, default=1024, help="width of the hidden layer")
    parser.add_argument(
        "--step-wait",
        type=float,
        default=0.0,
        help="seconds every rank waits in each step, standing in for GPU work the host waits on",
    )
    parser.add_argument("--profile-steps", type=int, default=6)
    args = parser.parse_args()

    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank()
    device = (
        torch.device(f"cuda:{rank % torch.cuda.device_count()}")
        if torch.cuda.is_available()
        else torch.device("cpu")
    )
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(512, args.hidden), torch.nn.ReLU(), torch.nn.Linear(args.hidden, 10)
    ).to(device)
    model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    torch.set_num_threads(1)  # one thread per rank: ranks do not fight over the same cores

    slow_loader = args.slow_input and rank == args.straggler
    batches = torch.utils.data.DataLoader(
        Batches(args.steps, args.sleep if slow_loader else 0.0), batch_size=None
    )
    with torchdiag.profile(args.output, skip_first=4, profile_steps=args.profile_steps):
        for step, x in enumerate(batches):
            if rank == args.straggler and not slow_loader:
                time.sleep(args.sleep)
            if args.die_at is not None and rank == 1 and step == args.die_at:
                os._exit(1)  # a crash: no cleanup, no record
            if args.step_wait:
                time.sleep(args.step_wait)
            loss = model(x.to(device)).square().mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
