"""Time every wait on a DataLoader and note each loader's settings.

``_BaseDataLoaderIter.__next__`` is the one method every DataLoader iterator (single-process and
multi-process) goes through, so wrapping it measures the time the training thread is blocked on
the next batch whatever the worker count. Waits on other threads (a prefetching thread, say) do
not block the step and are not counted as input wait.

The process's CPU time is read around each wait too. A loader without workers prepares the batch
in the training process during the wait, so CPU time against the wait's wall time tells a load
that computes (decoding, augmenting: it needs a core per worker) from one that waits (reads from
storage or the network: workers overlap such waits without needing cores of their own).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from torchdiag.capture.patching import Patches
from torchdiag.record import LoaderInfo


class DataLoaderWatch:
    """Installs the DataLoader hooks and accumulates per-loader statistics."""

    def __init__(self, on_wait: Callable[[float], None], *, thread_id: int | None = None) -> None:
        self._on_wait = on_wait
        self._thread_id = thread_id if thread_id is not None else threading.get_ident()
        self._patches = Patches()
        # A dataset may iterate another DataLoader inside __getitem__: only the outermost wait
        # blocked the step, the inner ones are part of it.
        self._depth = threading.local()
        self._loaders: dict[int, LoaderInfo] = {}
        # iterator id -> loader id; iterators of persistent-worker loaders are reused across epochs
        self._iter_owner: dict[int, int] = {}

    def install(self) -> None:
        """Patch the DataLoader classes (imports torch)."""
        from torch.utils.data import dataloader as dl

        watch = self
        original_iter = dl.DataLoader.__iter__
        original_next = dl._BaseDataLoaderIter.__next__

        def __iter__(loader: Any) -> Any:
            it = original_iter(loader)
            watch._note_loader(loader, it)
            return it

        def __next__(it: Any) -> Any:
            depth = getattr(watch._depth, "n", 0)
            if depth:
                return original_next(it)
            watch._depth.n = 1
            cpu_start = time.process_time()
            start = time.perf_counter()
            got_batch = False
            try:
                batch = original_next(it)
                got_batch = True
            finally:
                # The end of an epoch (StopIteration) still blocked the loop, but it is no batch.
                watch._depth.n = 0
                wall = time.perf_counter() - start
                watch._note_wait(it, wall, time.process_time() - cpu_start, got_batch=got_batch)
            return batch

        self._patches.replace(dl.DataLoader, "__iter__", __iter__)
        self._patches.replace(dl._BaseDataLoaderIter, "__next__", __next__)

    def follow_thread(self, thread_id: int) -> None:
        """Count waits on ``thread_id`` from now on (the thread that trains)."""
        self._thread_id = thread_id

    def uninstall(self) -> None:
        """Restore the original methods."""
        self._patches.restore()

    def loaders(self) -> list[LoaderInfo]:
        """Settings and totals of each loader iterated inside the block, in order of first use."""
        return sorted(self._loaders.values(), key=lambda info: info.loader_id)

    def _note_loader(self, loader: Any, it: Any) -> None:
        key = id(loader)
        info = self._loaders.get(key)
        if info is None:
            info = LoaderInfo(
                loader_id=len(self._loaders),
                dataset=type(loader.dataset).__name__,
                batch_size=loader.batch_size,
                num_workers=int(loader.num_workers),
                pin_memory=bool(loader.pin_memory),
                persistent_workers=bool(getattr(loader, "persistent_workers", False)),
                prefetch_factor=getattr(loader, "prefetch_factor", None),
                drop_last=bool(loader.drop_last),
            )
            self._loaders[key] = info
        info.iterator = type(it).__name__
        # A new iterator is a new epoch: the live view tells progress through it.
        info.epochs += 1
        info.epoch_batches = 0
        info.length = _length(loader)
        self._iter_owner[id(it)] = key

    def _note_wait(self, it: Any, seconds: float, cpu_seconds: float, *, got_batch: bool) -> None:
        if threading.get_ident() != self._thread_id:
            return
        self._on_wait(seconds)
        key = self._iter_owner.get(id(it))
        if key is None:
            # An iterator made before the block began: attribute it by its own settings.
            key = id(it)
            self._iter_owner[key] = key
            self._loaders[key] = LoaderInfo(
                loader_id=len(self._loaders),
                dataset=type(getattr(it, "_dataset", None)).__name__,
                num_workers=int(getattr(it, "_num_workers", 0)),
                pin_memory=bool(getattr(it, "_pin_memory", False)),
                persistent_workers=bool(getattr(it, "_persistent_workers", False)),
                prefetch_factor=getattr(it, "_prefetch_factor", None),
                drop_last=bool(getattr(it, "_drop_last", False)),
                iterator=type(it).__name__,
            )
        info = self._loaders[key]
        info.batches += int(got_batch)
        info.epoch_batches += int(got_batch)
        info.wait_s += seconds
        info.wait_cpu_s = (info.wait_cpu_s or 0.0) + cpu_seconds


def _length(loader: Any) -> int | None:
    """Batches in one epoch of ``loader`` (``len(loader)``), or None when it has no length.

    An IterableDataset without ``__len__`` raises TypeError; a user's ``__len__`` may raise
    anything, and must not stop the epoch from starting.
    """
    try:
        length = len(loader)
    except Exception:
        return None
    return length if length > 0 else None
