"""Recognise an allocation failure that ended the block, and say what was in use at the time.

PyTorch reports running out of memory in a few ways: ``torch.OutOfMemoryError`` (CUDA; its
message says what was requested and what the device held), a ``RuntimeError`` from the CPU
allocator ("DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes"), and
Python's own ``MemoryError``. :func:`describe` turns the exception into the record's
:class:`~torchdiag.record.OutOfMemory`; parsing is pure (:func:`parse_message`) so the formats
are tested without a GPU.

On CUDA, by the time the exception reaches the end of the block the stack has unwound and the
failing call's temporaries are freed: the allocator's figures then understate what was in use.
:class:`OomObserver` hooks the caching allocator's out-of-memory observer, which runs inside
the failing allocation, and keeps the allocator's statistics of that moment.
"""

from __future__ import annotations

import contextlib
import linecache
import os
import re
import sys
import sysconfig
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from torchdiag.record import OutOfMemory, SourceLine

_UNIT = {"B": 1, "bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
_SIZE = r"([\d.]+) ?(bytes|B|KiB|MiB|GiB|TiB)"

_CPU = re.compile(r"DefaultCPUAllocator: can't allocate memory: you tried to allocate (\d+) bytes")
_CUDA = re.compile(r"CUDA out of memory")
_TRIED = re.compile(r"Tried to allocate " + _SIZE)
# torch >= 2.1: "GPU 0 has a total capacity of 79.10 GiB of which 3.19 MiB is free."
_CAPACITY = re.compile(r"GPU (\d+) has a total capacity of " + _SIZE + " of which " + _SIZE)
_PROCESS = re.compile(r"this process has " + _SIZE + " memory in use")
_BY_TORCH = re.compile(_SIZE + " is allocated by PyTorch")
_UNALLOCATED = re.compile(_SIZE + " is reserved by PyTorch but unallocated")
# torch < 2.1: "(GPU 0; 15.78 GiB total capacity; 14.56 GiB already allocated; 1.44 MiB free;
# 14.59 GiB reserved in total by PyTorch)"
_OLD = re.compile(
    r"\(GPU (\d+); "
    + _SIZE
    + " total capacity; "
    + _SIZE
    + " already allocated; "
    + _SIZE
    + " free; "
    + _SIZE
    + " reserved in total by PyTorch"
)
# numpy's MemoryError: "Unable to allocate 32.0 TiB for an array with shape ..."
_NUMPY = re.compile(r"Unable to allocate " + _SIZE)


def _size(number: str, unit: str) -> int:
    return int(float(number) * _UNIT[unit])


def is_out_of_memory(exc_type: type[BaseException] | None, message: str) -> bool:
    """Whether an exception is an allocation failure: by class (``OutOfMemoryError`` in any
    module, ``MemoryError``) or, for the CPU allocator's plain ``RuntimeError``, by message."""
    if exc_type is None or not issubclass(exc_type, Exception):
        return False
    if issubclass(exc_type, MemoryError):
        return True
    if any(cls.__name__ == "OutOfMemoryError" for cls in exc_type.__mro__):
        return True
    return bool(_CPU.search(message) or _CUDA.search(message))


def parse_message(message: str, *, cuda_class: bool = False) -> OutOfMemory:
    """What an allocator's message says: the device, the request and, on CUDA, the device's
    figures. ``cuda_class``: the exception was a ``torch.OutOfMemoryError`` (CUDA's)."""
    m = _CPU.search(message)
    if m:
        return OutOfMemory(device="cpu", requested_bytes=int(m.group(1)))
    if cuda_class or _CUDA.search(message):
        oom = OutOfMemory(device="cuda")
        if m := _TRIED.search(message):
            oom.requested_bytes = _size(*m.groups())
        if m := _CAPACITY.search(message):
            oom.device = f"cuda:{m.group(1)}"
            oom.capacity_bytes = _size(m.group(2), m.group(3))
            oom.free_bytes = _size(m.group(4), m.group(5))
        if m := _PROCESS.search(message):
            oom.process_bytes = _size(*m.groups())
        if m := _BY_TORCH.search(message):
            oom.allocated_bytes = _size(*m.groups())
            if u := _UNALLOCATED.search(message):
                oom.reserved_bytes = oom.allocated_bytes + _size(*u.groups())
        if m := _OLD.search(message):
            oom.device = f"cuda:{m.group(1)}"
            oom.capacity_bytes = _size(m.group(2), m.group(3))
            oom.allocated_bytes = _size(m.group(4), m.group(5))
            oom.free_bytes = _size(m.group(6), m.group(7))
            oom.reserved_bytes = _size(m.group(8), m.group(9))
        return oom
    oom = OutOfMemory(device="cpu")  # MemoryError: Python's or numpy's, host memory
    if m := _NUMPY.search(message):
        oom.requested_bytes = _size(*m.groups())
    return oom


# -- where it failed --------------------------------------------------------------------------


def _library_dirs() -> tuple[str, ...]:
    """Folders whose frames are not the user's code: torch, torchdiag, the standard library and
    installed packages."""
    dirs = {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    torch_dir = _torch_dir()
    if torch_dir is not None:
        dirs.add(torch_dir.rstrip(os.sep))
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            dirs.add(os.path.abspath(path))
    return tuple(d + os.sep for d in dirs)


def _torch_dir() -> str | None:
    torch = sys.modules.get("torch")
    file = getattr(torch, "__file__", None)
    return os.path.dirname(os.path.abspath(file)) + os.sep if file else None


def failing_path(tb: TracebackType | None, *, redact: bool) -> tuple[SourceLine | None, str | None]:
    """The innermost frame of the user's code on the failing path, and the innermost PyTorch
    Python function (``torch.nn.functional.linear``) below it, where there is one.

    ``redact`` keeps the file's name only (a folder can name a person, as in the record's
    command line)."""
    library, torch_dir = _library_dirs(), _torch_dir()
    user: SourceLine | None = None
    innermost: SourceLine | None = None
    operator: str | None = None
    while tb is not None:
        code = tb.tb_frame.f_code
        path = os.path.abspath(code.co_filename)
        line = SourceLine(
            file=os.path.basename(path) if redact else path,
            line=tb.tb_lineno,
            function=code.co_name,
            code=linecache.getline(code.co_filename, tb.tb_lineno).strip(),
        )
        innermost = line
        if torch_dir is not None and path.startswith(torch_dir):
            module = tb.tb_frame.f_globals.get("__name__", "torch")
            operator = f"{module}.{code.co_name}"
        elif not path.startswith(library) and not code.co_filename.startswith("<frozen"):
            user, operator = line, None  # torch frames above the user's frame are not the op
        tb = tb.tb_next
    return user or innermost, operator


# -- what was in use ----------------------------------------------------------------------------


def host_figures(oom: OutOfMemory) -> None:
    """The host's memory now: total, available, and this process's resident memory."""
    import psutil

    vm = psutil.virtual_memory()
    oom.capacity_bytes = int(vm.total)
    oom.free_bytes = int(vm.available)
    oom.process_bytes = int(psutil.Process().memory_info().rss)


def cuda_figures(device: int) -> dict[str, int]:
    """The caching allocator's figures for ``device`` (bytes)."""
    import torch

    stats = torch.cuda.memory_stats(device)
    return {
        "allocated_bytes": int(stats.get("allocated_bytes.all.current", 0)),
        "reserved_bytes": int(stats.get("reserved_bytes.all.current", 0)),
        "inactive_split_bytes": int(stats.get("inactive_split_bytes.all.current", 0)),
    }


class Observation:
    """What the allocator's observer saw inside the failing allocation."""

    def __init__(self, device: int, requested: int, total: int, free: int) -> None:
        self.device = device
        self.requested = requested
        self.total = total
        self.free = free
        self.figures: dict[str, int] = {}


# The allocator keeps every observer attached for the life of the process (there is no detach):
# one trampoline is attached once and forwards to the active block's observer, or to nothing.
_lock = threading.Lock()
_target: Callable[[int, int, int, int], None] | None = None
_attached = False


def _trampoline(device: int, requested: int, total: int, free: int) -> None:
    target = _target
    if target is None:
        return
    # Never raise into the allocator: the out-of-memory error itself must surface.
    with contextlib.suppress(BaseException):
        target(device, requested, total, free)


class OomObserver:
    """Keeps the CUDA allocator's state at an out-of-memory error, read before the stack
    unwinds. A no-op (with a reason) where the build or the machine has no CUDA."""

    def __init__(self) -> None:
        self.observation: Observation | None = None

    def on_oom(self, device: int, requested: int, total: int, free: int) -> None:
        """The allocator's callback: (device, requested bytes, device total, device free)."""
        seen = Observation(int(device), int(requested), int(total), int(free))
        # Where the statistics fail, the observer's own figures still say what was asked.
        with contextlib.suppress(Exception):
            seen.figures = cuda_figures(seen.device)
        self.observation = seen  # the latest: an OOM the script caught and retried is replaced

    def install(self) -> bool:
        """Route the allocator's out-of-memory callback here (attached on CUDA's first use
        when CUDA is not initialised yet). False where there is nothing to observe: a build
        without the observer, or no CUDA device."""
        global _target, _attached
        import torch

        cuda: Any = torch.cuda  # partly untyped
        attach: Any = getattr(torch._C, "_cuda_attach_out_of_memory_observer", None)
        if attach is None or not cuda.is_available():
            return False
        with _lock:
            _target = self.on_oom
            if _attached:
                return True
            if cuda.is_initialized():
                attach(_trampoline)
            else:
                # The allocator has no per-device state before CUDA starts, and attaching then
                # would be lost: queue it for CUDA's lazy initialisation.
                cuda._lazy_call(lambda: attach(_trampoline))
            _attached = True
        return True

    def uninstall(self) -> None:
        """Stop forwarding: the trampoline stays attached (it cannot be removed) and idles."""
        global _target
        with _lock:
            if _target == self.on_oom:
                _target = None


def describe(
    exc: BaseException,
    *,
    observation: Observation | None,
    redact: bool,
    step: int | None,
    in_window: bool,
) -> OutOfMemory:
    """The record's account of an out-of-memory exception: the request, where it failed and
    what was in use (the observer's figures where it saw the failure, else read now)."""
    message = str(exc)
    cuda_class = any(
        cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__
    ) and not _CPU.search(message)
    oom = parse_message(message, cuda_class=cuda_class)
    oom.source, oom.operator = failing_path(exc.__traceback__, redact=redact)
    oom.step, oom.in_profiler_window = step, in_window
    if oom.device == "cpu":
        with contextlib.suppress(Exception):  # psutil missing or refused: the message's stay
            host_figures(oom)
        return oom
    if observation is not None:
        oom.observed = "allocator"
        oom.device = f"cuda:{observation.device}"
        oom.requested_bytes = oom.requested_bytes or observation.requested
        oom.capacity_bytes = oom.capacity_bytes or observation.total or None
        oom.free_bytes = observation.free
        figures = observation.figures
    else:
        index = int(oom.device.partition(":")[2] or 0)
        try:
            figures = cuda_figures(index)
        except Exception:
            figures = {}
        # Read after the unwind, these understate the failure's moment: keep the message's.
        figures = {k: v for k, v in figures.items() if getattr(oom, k) is None}
    for key, value in figures.items():
        setattr(oom, key, value)
    return oom
