"""The typed event model of a Chrome / Kineto trace, and the compact storage the summary keeps.

:class:`Event` is what the decoder produces for every element of ``traceEvents``: the few fields
every analysis needs, typed, with ``args`` left undecoded (:class:`msgspec.Raw`) because most
events' arguments are never looked at. The ``*Args`` structs decode ``args`` for the few event
kinds whose arguments matter; :func:`decode_args` does that and tolerates odd values.

Nothing here keeps events: the summary turns each chunk of events into :class:`Interner` ids and
columns of numbers (:class:`~torchdiag.traces.spill.ColumnLog`), a few bytes per event instead of
a Python object, and those spill to disk past a fixed budget.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

__all__ = [
    "Event",
    "GpuArgs",
    "Interner",
    "MemoryArgs",
    "OpArgs",
    "OpTypes",
    "RuntimeArgs",
    "decode_args",
]

_EMPTY_ARGS = msgspec.Raw(b"{}")


class Event(msgspec.Struct, gc=False):
    """One trace event. Times are microseconds (Kineto writes µs whatever ``displayTimeUnit``).

    ``pid``/``tid`` are ints for real processes, threads and GPUs, and strings for Kineto's
    pseudo-tracks ("Spans", "stream 7" in early Kineto). ``gc=False``: events hold no cycles, and
    keeping hundreds of thousands of them out of the garbage collector makes decoding faster.
    """

    ph: str = ""
    cat: str = ""
    name: str = ""
    pid: int | str = 0
    tid: int | str = 0
    ts: float = 0.0
    dur: float = 0.0
    id: int | str | None = None
    args: msgspec.Raw = _EMPTY_ARGS


class OpArgs(msgspec.Struct, gc=False):
    """The arguments of a ``cpu_op`` that describe its inputs (with ``record_shapes=True``).

    Early Kineto (PyTorch 1.8) spelled the shapes ``Input dims``.
    """

    input_type: list[Any] | None = msgspec.field(name="Input type", default=None)
    input_dims: list[Any] | None = msgspec.field(name="Input Dims", default=None)
    input_dims_early: list[Any] | None = msgspec.field(name="Input dims", default=None)

    @property
    def dims(self) -> list[Any] | None:
        """The input shapes, whichever spelling the trace used."""
        return self.input_dims if self.input_dims is not None else self.input_dims_early


class OpTypes(msgspec.Struct, gc=False):
    """Only the input dtypes of a ``cpu_op``: decoded for every operator, so kept minimal."""

    input_type: list[Any] | None = msgspec.field(name="Input type", default=None)


class GpuArgs(msgspec.Struct, gc=False):
    """Kernel / memcpy / memset arguments.

    ``correlation`` links to the runtime call that launched it; ``bytes`` is a copy's size;
    ``blocks_per_sm`` (grid blocks / SMs) and ``occupancy`` (CUPTI's estimate, percent) say how
    much of the GPU a kernel could fill.
    """

    correlation: int | None = None
    bytes: int | float | None = None
    blocks_per_sm: float | None = msgspec.field(name="blocks per SM", default=None)
    occupancy: float | None = msgspec.field(name="est. achieved occupancy %", default=None)


class RuntimeArgs(msgspec.Struct, gc=False):
    """CUDA/HIP runtime or driver call arguments."""

    correlation: int | None = None


class MemoryArgs(msgspec.Struct, gc=False):
    """A ``[memory]`` instant event: allocator totals after one allocation or free."""

    total_allocated: float | None = msgspec.field(name="Total Allocated", default=None)
    total_reserved: float | None = msgspec.field(name="Total Reserved", default=None)
    device_id: int = msgspec.field(name="Device Id", default=-1)
    device_type: int = msgspec.field(name="Device Type", default=0)


_A = TypeVar("_A", bound=msgspec.Struct)
_ARG_DECODERS: dict[type, msgspec.json.Decoder[Any]] = {}


def decode_args(raw: msgspec.Raw, kind: type[_A]) -> _A | None:
    """Decode ``raw`` into ``kind``; ``None`` when the arguments are not an object of that shape.

    One malformed ``args`` (a string where a number belongs) must cost that event's detail, not
    the whole trace.
    """
    decoder = _ARG_DECODERS.get(kind)
    if decoder is None:
        decoder = _ARG_DECODERS[kind] = msgspec.json.Decoder(kind)
    try:
        decoded: _A = decoder.decode(raw)
        return decoded
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class Interner:
    """Maps strings (op and kernel names) to dense ints, so columns store 4 bytes per name."""

    __slots__ = ("ids", "names")

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.names: list[str] = []

    def intern(self, name: str) -> int:
        """The id of ``name``, assigning the next one on first sight."""
        found = self.ids.get(name)
        if found is None:
            found = self.ids[name] = len(self.names)
            self.names.append(name)
        return found

    def __len__(self) -> int:
        return len(self.names)
