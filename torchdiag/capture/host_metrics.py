"""Host backend for the sampler: CPU and memory of the machine, this process and its workers.

"Workers" are all descendants of the profiled process (``children(recursive=True)``): DataLoader
worker processes, and anything else the training script spawned (compile workers, for instance).
Their RSS is summed, so pages shared with the parent after ``fork`` count once per process; the
sum is an upper bound on what the workers really add.

Listing descendants means reading the status of every process on the machine (about 20 us each
on Linux), so the list is refreshed every ``worker_scan_interval_s`` rather than every sample; in
between, the workers already known are read directly and the ones that exited are dropped.
"""

from __future__ import annotations

import contextlib
import time

import psutil

from torchdiag.capture.sampler import HostReading
from torchdiag.record import CollectorStatus


class HostMetrics:
    """Reads host metrics with psutil. Construction never raises; see ``status``.

    ``Process.cpu_percent`` reports the CPU used since its previous call on the same object, so
    it is primed here and each :meth:`read` covers one sampler interval. Machine-wide CPU per
    core is computed from ``psutil.cpu_times`` deltas kept here: ``psutil.cpu_percent`` keeps its
    baseline in a module global, and calling it would reset the baseline the user's own calls
    rely on.
    """

    def __init__(self, pid: int | None = None, *, worker_scan_interval_s: float = 2.0) -> None:
        self.status = CollectorStatus(available=True)
        self.cpu_count = 0
        self.memory_total_bytes: int | None = None
        # One Process object per worker pid: cpu_percent() is a delta against the previous call
        # on the same object, so a fresh object per sample would always report 0.
        self._workers: dict[int, psutil.Process] = {}
        self._worker_scan_interval_s = worker_scan_interval_s
        self._next_worker_scan = time.monotonic() + worker_scan_interval_s
        try:
            self._process = psutil.Process(pid)
            self._core_times = psutil.cpu_times(percpu=True)
            per_core = self._core_times
            self._process.cpu_percent(None)
            for child in self._process.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    self._prime_new_worker(child)
                    self._workers[child.pid] = child
            self.cpu_count = psutil.cpu_count(logical=True) or len(per_core)
            self.memory_total_bytes = int(psutil.virtual_memory().total)
        except Exception as exc:
            self.status = CollectorStatus(
                available=False, reason=f"host: {type(exc).__name__}: {exc}"
            )

    def _per_core_percent(self) -> list[float]:
        """Busy percent of each core since the previous call (its own baseline, not psutil's)."""
        now = psutil.cpu_times(percpu=True)
        out = []
        for before, after in zip(self._core_times, now, strict=False):
            total = sum(after) - sum(before)
            idle = (after.idle + getattr(after, "iowait", 0.0)) - (
                before.idle + getattr(before, "iowait", 0.0)
            )
            out.append(
                round(min(100.0, max(0.0, 100.0 * (1.0 - idle / total))), 1) if total > 0 else 0.0
            )
        self._core_times = now
        return out

    def read(self) -> HostReading:
        """One sample; raises only if the machine-wide or own-process queries fail."""
        per_core = self._per_core_percent()
        with self._process.oneshot():
            process_cpu = self._process.cpu_percent(None)
            process_rss = self._process.memory_info().rss
        worker_count, workers_cpu, workers_rss = self._read_workers()
        memory = psutil.virtual_memory()
        return HostReading(
            cpu_pct_per_core=per_core,
            process_cpu_pct=process_cpu,
            process_rss_bytes=float(process_rss),
            worker_count=worker_count,
            workers_cpu_pct=workers_cpu,
            workers_rss_bytes=workers_rss,
            # total - available rather than psutil's "used": "used" leaves out different caches
            # on different platforms, while "available" is what a new allocation can still get.
            memory_used_bytes=float(memory.total - memory.available),
        )

    def close(self) -> None:
        """Forget the tracked workers."""
        self._workers.clear()

    def _read_workers(self) -> tuple[float | None, float | None, float | None]:
        now = time.monotonic()
        if now >= self._next_worker_scan:
            self._next_worker_scan = now + self._worker_scan_interval_s
            try:
                children = self._process.children(recursive=True)
            except psutil.Error:
                return None, None, None
        else:
            children = list(self._workers.values())
        tracked: dict[int, psutil.Process] = {}
        count = 0
        cpu_pct = 0.0
        rss = 0
        for child in children:
            known = self._workers.get(child.pid)
            try:
                # Process equality includes the creation time, so a reused pid is a new worker.
                if known is not None and known == child:
                    with known.oneshot():
                        cpu_pct += known.cpu_percent(None)
                        rss += known.memory_info().rss
                    tracked[child.pid] = known
                else:
                    cpu_pct += self._prime_new_worker(child)
                    rss += child.memory_info().rss
                    tracked[child.pid] = child
                count += 1
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue  # exited (or exited and not yet reaped) between listing and reading
            except psutil.AccessDenied:
                count += 1  # alive but unreadable (another user's process): count it only
                tracked[child.pid] = known if known is not None else child
        self._workers = tracked
        return float(count), cpu_pct, float(rss)

    @staticmethod
    def _prime_new_worker(child: psutil.Process) -> float:
        """Prime ``cpu_percent`` on a newly seen worker and return its CPU % so far.

        The worker appeared within the last interval (or at construction), so its lifetime
        average is the best estimate for this interval; ``cpu_percent`` would report 0 here.
        """
        with child.oneshot():
            child.cpu_percent(None)
            times = child.cpu_times()
            age_s = time.time() - child.create_time()
        return 100.0 * (times.user + times.system) / max(age_s, 1e-3)
