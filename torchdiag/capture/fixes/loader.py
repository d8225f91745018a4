"""DataLoader fixes: more workers, pinned memory, persistent workers, deeper prefetching, a bigger
batch, and the input ceiling (cached batches replayed: the most any input-pipeline fix can give).

The settings are overridden where every DataLoader is built, ``DataLoader.__init__``: the
script's own arguments are bound to the constructor's signature, changed, and passed on, so a
loader built with positional arguments is covered too.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Iterator
from typing import Any

from torchdiag.capture.fixes.base import Fix


class LoaderSettingFix(Fix):
    """A fix that changes a DataLoader's constructor arguments (see :meth:`adjust`)."""

    def install(self) -> None:
        from torch.utils.data import DataLoader

        original = DataLoader.__init__
        signature = inspect.signature(inspect.unwrap(original))
        fix = self

        @functools.wraps(original)
        def __init__(loader: Any, *args: Any, **kwargs: Any) -> None:
            call: tuple[list[Any], dict[str, Any]] = ([loader, *args], kwargs)
            try:
                bound = signature.bind(loader, *args, **kwargs)
                bound.apply_defaults()
                fix.adjust(bound.arguments)
                call = _call_args(signature, bound)
            except Exception as err:  # arguments we cannot read are left as the script gave them
                fix.not_applicable = f"could not read a DataLoader's arguments ({err})"
            original(*call[0], **call[1])

        self.patches.replace(DataLoader, "__init__", __init__)

    def adjust(self, arguments: dict[str, Any]) -> None:
        """Change the bound constructor ``arguments`` in place, noting each change."""
        raise NotImplementedError

    def nothing_to_change(self) -> str:
        return "the script built no DataLoader"


def _call_args(
    signature: inspect.Signature, bound: inspect.BoundArguments
) -> tuple[list[Any], dict[str, Any]]:
    """Positional and keyword arguments for ``bound``, keyword-only ones by keyword."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            args.extend(value)
        elif kind is inspect.Parameter.VAR_KEYWORD:
            kwargs.update(value)
        elif kind is inspect.Parameter.KEYWORD_ONLY:
            kwargs[name] = value
        else:
            args.append(value)
    return args, kwargs


class Workers(LoaderSettingFix):
    """``workers=N``: every DataLoader loads in N worker processes."""

    def __init__(self, workers: int) -> None:
        super().__init__()
        self.workers = workers
        self.spec = f"workers={workers}"

    @classmethod
    def from_value(cls, value: str) -> Fix:
        return cls(_count(value, "workers"))

    def adjust(self, arguments: dict[str, Any]) -> None:
        before = arguments.get("num_workers") or 0
        if before != self.workers:
            arguments["num_workers"] = self.workers
            self.changed(f"num_workers {before} -> {self.workers}")
        elif not self.changes:
            self.not_applicable = f"the DataLoader already had num_workers={before}"


class PinMemory(LoaderSettingFix):
    """``pin-memory``: batches come in page-locked memory (faster, asynchronous copies to a GPU)."""

    spec = "pin-memory"

    def install(self) -> None:
        import torch

        if not torch.cuda.is_available():
            self.not_applicable = "no CUDA device: pinned memory only speeds up copies to a GPU"
            return
        super().install()

    def adjust(self, arguments: dict[str, Any]) -> None:
        if not arguments.get("pin_memory"):
            arguments["pin_memory"] = True
            self.changed("pin_memory False -> True")
        elif not self.changes:
            self.not_applicable = "the DataLoader already pinned memory"


class WorkerSettingFix(LoaderSettingFix):
    """A setting that only exists with worker processes (``num_workers`` > 0)."""

    def adjust(self, arguments: dict[str, Any]) -> None:
        if not arguments.get("num_workers"):
            if not self.changes:
                self.not_applicable = "the DataLoader has no worker processes (num_workers=0)"
            return
        self.adjust_workers(arguments)

    def adjust_workers(self, arguments: dict[str, Any]) -> None:
        """Change the arguments of a loader that has workers."""
        raise NotImplementedError


class PersistentWorkers(WorkerSettingFix):
    """``persistent-workers``: worker processes survive from one epoch to the next."""

    spec = "persistent-workers"

    def adjust_workers(self, arguments: dict[str, Any]) -> None:
        if not arguments.get("persistent_workers"):
            arguments["persistent_workers"] = True
            self.changed("persistent_workers False -> True")


class Prefetch(WorkerSettingFix):
    """``prefetch=N``: each worker keeps N batches ready."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.spec = f"prefetch={factor}"

    @classmethod
    def from_value(cls, value: str) -> Fix:
        return cls(_count(value, "prefetch"))

    def adjust_workers(self, arguments: dict[str, Any]) -> None:
        before = arguments.get("prefetch_factor")
        if before != self.factor:
            arguments["prefetch_factor"] = self.factor
            self.changed(f"prefetch_factor {before if before is not None else 2} -> {self.factor}")


class BatchMultiplier(LoaderSettingFix):
    """``batch=xK``: every DataLoader's batch size multiplied by K (steps then compare per sample;
    the learning rate may need scaling with it)."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.batch_factor = factor
        self.spec = f"batch=x{factor}"

    @classmethod
    def from_value(cls, value: str) -> Fix:
        digits = value.removeprefix("x")
        if not digits.isdigit() or int(digits) < 2:
            raise ValueError(
                f"batch=xK needs a whole factor of at least 2 (batch=x2), not {value!r}"
            )
        return cls(int(digits))

    def adjust(self, arguments: dict[str, Any]) -> None:
        size = arguments.get("batch_size")
        if arguments.get("batch_sampler") is not None or not isinstance(size, int):
            if not self.changes:
                self.not_applicable = "the DataLoader's batches come from a batch_sampler or are "
                self.not_applicable += "not batched by it (batch_size=None)"
            return
        arguments["batch_size"] = size * self.batch_factor
        self.changed(f"batch_size {size} -> {size * self.batch_factor}")


def _count(value: str, name: str) -> int:
    """The ``N`` of ``name=N``: a whole number of at least 1."""
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{name}=N needs a whole number of at least 1, not {value!r}")
    return int(value)


# Batches fetched for real before the replay starts: a few, so that the replay is not of one
# batch whose tensors might be special (the first, padded, say).
CACHED_BATCHES = 4


class InputCeiling(Fix):
    """``input-ceiling``: each DataLoader serves its first few batches again and again.

    Loading then costs nothing but the iteration itself, so the step time measured is the floor
    that any faster input pipeline could reach: the most a loader fix can save. An epoch keeps
    its length (``len(loader)`` batches). The batches repeat, so the loss is not comparable.
    """

    spec = "input-ceiling"

    def install(self) -> None:
        from torch.utils.data import DataLoader

        original = DataLoader.__iter__
        cache: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()
        fix = self

        @functools.wraps(original)
        def __iter__(loader: Any) -> Iterator[Any]:
            try:
                length = len(loader)
            except TypeError:
                fix.not_applicable = "the DataLoader has no length (an IterableDataset)"
                return original(loader)
            cached = cache.get(loader)
            if cached:  # a later epoch: replay from the start, nothing fetched
                return fix._replay(iter(()), cached, length)
            return fix._replay(original(loader), cache.setdefault(loader, []), length)

        self.patches.replace(DataLoader, "__iter__", __iter__)

    def _replay(self, real: Iterator[Any], cached: list[Any], length: int) -> Iterator[Any]:
        # The batches are fetched before the first is served: all of that lands in the first
        # step (which comparisons leave out), and every later step is a replay.
        for batch in real:
            cached.append(batch)
            if len(cached) >= min(CACHED_BATCHES, length):
                break
        del real  # the rest of the epoch is replayed: its workers may stop
        if not cached:
            return
        self.changed(f"batches after the first {len(cached)} replayed from memory")
        for served in range(length):
            yield cached[served % len(cached)]

    def nothing_to_change(self) -> str:
        return "the script iterated no DataLoader"
