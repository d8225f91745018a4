"""Checkpoints of the record while the block runs: what ``kill -9`` leaves behind.

Nothing runs in a process killed by SIGKILL (or the OOM killer, or a lost node), so a record
written only when the block ends is never written at all. A daemon thread named
``torchdiag-checkpoint`` therefore rewrites the record every ``interval_s`` seconds with a
snapshot of the run so far (state ``running``, ``checkpoint_utc`` the time of the snapshot), all
at once (:func:`torchdiag.record.save_record`): a reader sees the last whole checkpoint, never
half of one, and a kill mid-write leaves the previous one.

The final record must win: :meth:`CheckpointWriter.stop` returns only once no checkpoint can be
written any more, so the record written at the block's end is never replaced by an older
snapshot still in flight. A checkpoint that fails (the snapshot raised, the disk is full) is
counted and said in the collector status; training never sees it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from torchdiag.record import CollectorStatus, RunRecord, save_record

THREAD_NAME = "torchdiag-checkpoint"
DEFAULT_INTERVAL_S = 60.0
# A checkpoint costs a snapshot, its encoding and a write (docs/performance.md): more often than
# this would cost a run more than it protects.
MIN_INTERVAL_S = 0.1


class CheckpointWriter:
    """Writes ``snapshot()`` to ``path`` every ``interval_s`` seconds on a daemon thread.

    ``written`` and ``failed`` count the checkpoints, ``seconds`` is their total cost (snapshot,
    encoding and write, in wall time), ``last_error`` the latest failure.
    """

    def __init__(self, snapshot: Callable[[], RunRecord], path: Path, interval_s: float) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.interval_s = float(interval_s)
        self.path = path
        self._snapshot = snapshot
        # Held while a checkpoint is written and by stop(): once stop() has it, nothing is
        # written again, so a snapshot taken before the block ended cannot land after the end.
        self._write_lock = threading.Lock()
        self._closed = False
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0
        self.failed = 0
        self.seconds = 0.0
        self.last_error: str | None = None

    def start(self) -> None:
        """Start the thread; the first checkpoint comes one interval from now."""
        if self._thread is not None or self._closed:
            return
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def write(self) -> bool:
        """Write one checkpoint now; returns whether it was written. Never raises."""
        t0 = time.perf_counter()
        try:
            if self._closed:
                return False
            record = self._snapshot()
            with self._write_lock:
                if self._closed:
                    return False
                save_record(record, self.path)
        except Exception as err:  # never into training: counted and said in the collector
            self.failed += 1
            self.last_error = f"{type(err).__name__}: {err}"
            return False
        finally:
            self.seconds += time.perf_counter() - t0
        self.written += 1
        return True

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread; once this returns, no checkpoint is written again.

        Waits ``timeout`` seconds for a snapshot in progress, then for a write in progress (a
        write cannot be abandoned halfway: its rename would land after the final record).
        """
        self._stop_event.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._write_lock:
            self._closed = True

    def status(self) -> CollectorStatus:
        """The ``checkpoint`` collector: how often, how many, and the latest failure."""
        every = f"every {self.interval_s:g} s"
        if self.failed:
            return CollectorStatus(
                available=False,
                reason=f"{self.failed} of {self.failed + self.written} checkpoints ({every}) "
                f"failed; the latest: {self.last_error}",
            )
        return CollectorStatus(
            available=True, reason=f"{every}; {self.written} written to {self.path.name}"
        )

    def _run(self) -> None:
        next_due = time.monotonic() + self.interval_s
        while not self._stop_event.wait(max(0.0, next_due - time.monotonic())):
            self.write()
            next_due += self.interval_s
            now = time.monotonic()
            if next_due <= now:
                # A checkpoint took longer than the interval: skip the missed ticks, no burst.
                next_due = now + self.interval_s
