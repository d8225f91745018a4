"""Streaming decoder for torch.profiler (Kineto) and Chrome trace JSON, plain or gzip.

Traces reach gigabytes, so the file is never parsed whole. It is read in blocks; the
``traceEvents`` array is cut into chunks at element boundaries and each chunk is decoded by
msgspec into typed :class:`~torchdiag.traces.events.Event` structs, handed to the caller, and
dropped. Memory stays at about one block plus one chunk of events, whatever the file size.

Finding a boundary without a full JSON tokenizer: a candidate is a ``}`` followed by
``,`` ``{`` (next element) or by ``]`` (end of the array), whitespace allowed. A candidate inside a
string or a nested object leaves the text before it unbalanced, so ``[`` + text + ``]`` cannot
decode; we try the last candidate in the buffer and fall back to earlier ones on a decode error.
msgspec reports where malformed input went wrong, which skips every candidate past that point.

The other top-level members (``deviceProperties``, ``distributedInfo``, ``baseTimeNanoseconds``
...), before or after ``traceEvents``, are small; they are scanned for their extent and decoded
on their own into :attr:`TraceDecoder.metadata`.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import msgspec

from torchdiag.traces.events import Event

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_CHUNK_SIZE",
    "MAX_ELEMENT_BYTES",
    "NotATraceError",
    "TraceDecoder",
    "TraceError",
    "open_trace",
]

# Bytes of JSON read at once, and decoded at once. Small is faster here: 1 MiB blocks and 256 KiB
# chunks read the 54 MB public trace (benchmarks/trace_read.py) ~10% faster than 16 MiB and 4 MiB
# did, and peak at 42 instead of 77 MiB; buffers this size are reused by the allocator rather than
# mapped and faulted in afresh, and a chunk's text and its events stay in the CPU caches while
# they are decoded and folded in. Below ~512/128 KiB the per-block overhead starts to show.
DEFAULT_BLOCK_SIZE = 1024 * 1024
# Decoded events take ~4x their JSON size, so this, not the read block, is what bounds the
# memory events take.
DEFAULT_CHUNK_SIZE = 256 * 1024
# One element of traceEvents may be about this large (an event with huge args); more bytes than
# this (or than four blocks, for larger blocks) without a decodable boundary: malformed.
MAX_ELEMENT_BYTES = 64 * 1024 * 1024
# A top-level member other than traceEvents larger than this is skipped, not kept: a profiler log
# embedded as a huge array must not cost memory.
MAX_MEMBER_BYTES = 4 * 1024 * 1024
# Failed candidate decodes in one buffer before reading more data instead: each costs a parse.
_MAX_ATTEMPTS = 32

_WS = re.compile(rb"[ \t\r\n]*")
_CANDIDATE = re.compile(rb"\}[ \t\r\n]*(?:,[ \t\r\n]*(\{)|(\]))")
_STRUCTURAL = re.compile(rb'["{}\[\]]')
_IN_STRING = re.compile(rb'["\\]')
_SCALAR_END = re.compile(rb"[,}\] \t\r\n]")
_ERROR_BYTE = re.compile(r"\(byte (\d+)\)")

_EVENTS = msgspec.json.Decoder(list[Event])
_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])
_EVENT = msgspec.json.Decoder(Event)


class TraceError(ValueError):
    """A file that cannot be read as a trace: not JSON, truncated, or not a trace at all."""


class NotATraceError(TraceError):
    """Valid JSON that is not a trace (an object without ``traceEvents``, a scalar)."""


def open_trace(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for binary reading, transparently gunzipping (by magic bytes, not name)."""
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    if gzipped:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")  # the caller closes it


class TraceDecoder:
    """Incremental reader of one trace stream.

    Iterate :meth:`chunks` for lists of events in file order; ``on_block`` is called after each
    block is read (once per ``block_size`` bytes of JSON). Once :meth:`chunks` is exhausted,
    :attr:`metadata` holds the other top-level members and :attr:`form` says whether the file
    was an object (``"object"``, Kineto) or a bare event array (``"array"``).
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        on_block: Callable[[], None] | None = None,
    ) -> None:
        if block_size < 1 or chunk_size < 1:
            raise ValueError("block_size and chunk_size must be positive")
        self._stream = stream
        # Called after every block read: the caller's hook for progress reporting.
        self._on_block = on_block
        self._block_size = block_size
        self._chunk_size = chunk_size
        self._buf = b""
        self._pos = 0
        self._base = 0  # file offset of _buf[0], for error messages
        self._eof = False
        self.metadata: dict[str, Any] = {}
        self.form = ""
        self.has_trace_events = False
        self.skipped_members: list[str] = []
        self.invalid_events = 0
        self.trailing_data = False

    # -- public ----------------------------------------------------------------------------

    def chunks(self) -> Iterator[list[Event]]:
        """Yield the ``traceEvents`` elements as lists of events, chunk by chunk, in file order."""
        first = self._peek()
        if first == b"\xef":  # a UTF-8 byte order mark, as some Windows tools write
            while len(self._buf) - self._pos < 3 and self._fill():
                pass
            if self._buf.startswith(b"\xef\xbb\xbf", self._pos):
                self._pos += 3
                first = self._peek()
        if first == b"[":
            self.form = "array"
            self.has_trace_events = True
            self._pos += 1
            yield from self._array()
        elif first == b"{":
            self.form = "object"
            yield from self._object()
            if not self.has_trace_events:
                raise NotATraceError("a JSON object without a 'traceEvents' member")
        elif first is None:
            raise TraceError("the file is empty")
        else:
            raise NotATraceError("not a JSON trace (expected '{' or '[' at the start)")
        self.trailing_data = self._peek() is not None

    # -- buffer ----------------------------------------------------------------------------

    def _fill(self) -> bool:
        """Append one block to the buffer, dropping what is consumed; False at end of file."""
        if self._eof:
            return False
        # Let go of the consumed part before reading, so old and new blocks never coexist.
        rest = self._buf[self._pos :]
        self._base += self._pos
        self._buf = b""
        self._pos = 0
        try:
            block = self._stream.read(self._block_size)
        except (OSError, EOFError, zlib.error) as exc:
            raise TraceError(f"cannot read the trace: {exc}") from None
        if not block:
            self._buf = rest
            self._eof = True
            return False
        self._buf = rest + block if rest else block
        if self._on_block is not None:
            self._on_block()
        return True

    def _peek(self) -> bytes | None:
        """Skip whitespace; the next byte (not consumed), or None at end of file."""
        while True:
            self._pos = _WS.match(self._buf, self._pos).end()  # type: ignore[union-attr]
            if self._pos < len(self._buf):
                return self._buf[self._pos : self._pos + 1]
            if not self._fill():
                return None

    def _expect(self, char: bytes, where: str) -> None:
        found = self._peek()
        if found != char:
            got = "end of file" if found is None else repr(found.decode("latin-1"))
            raise TraceError(
                f"malformed JSON at byte {self._offset()}: expected {char.decode()!r} {where}, "
                f"got {got}"
            )
        self._pos += 1

    def _offset(self) -> int:
        return self._base + self._pos

    # -- top level -------------------------------------------------------------------------

    def _object(self) -> Iterator[list[Event]]:
        self._pos += 1  # the '{'
        if self._peek() == b"}":
            self._pos += 1
            return
        while True:
            if self._peek() != b'"':
                raise TraceError(f"malformed JSON at byte {self._offset()}: expected a member name")
            key = self._decode_member(self._take_value(MAX_MEMBER_BYTES), "a member name")
            self._expect(b":", f"after {key!r}")
            if self._peek() is None:
                raise TraceError(f"the trace is truncated (no value for {key!r})")
            if key == "traceEvents" and self._buf[self._pos : self._pos + 1] == b"[":
                self.has_trace_events = True
                self._pos += 1
                yield from self._array()
            else:
                raw = self._take_value(MAX_MEMBER_BYTES)
                if raw is None:
                    self.skipped_members.append(key)
                else:
                    self.metadata[key] = self._decode_member(raw, repr(key))
            sep = self._peek()
            if sep == b"}":
                self._pos += 1
                return
            self._expect(b",", "between members")

    def _decode_member(self, raw: bytes | None, what: str) -> Any:
        if raw is None:
            raise TraceError(f"{what} is implausibly large")
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise TraceError(f"malformed JSON in {what}: {exc}") from None

    def _take_value(self, limit: int) -> bytes | None:
        """Consume one JSON value; its bytes, or None (discarded) when longer than ``limit``.

        A small scanner that only tracks strings and nesting depth; msgspec does the real parse.
        """
        pieces: list[bytes] = []
        kept = 0
        keep = True
        start = self._pos
        lead = self._buf[start : start + 1]
        in_string = lead == b'"'
        scalar = lead not in (b'"', b"{", b"[")
        escaped = False
        depth = 0
        i = start + 1 if in_string else start
        while True:
            buf = self._buf
            end = -1
            while i < len(buf):
                if in_string:
                    if escaped:
                        escaped = False
                        i += 1
                        continue
                    m = _IN_STRING.search(buf, i)
                    if m is None:
                        i = len(buf)
                        break
                    i = m.end()
                    if buf[m.start()] == 0x5C:  # backslash: the next byte is escaped
                        escaped = True
                    else:
                        in_string = False
                        if depth == 0:
                            end = i
                            break
                elif scalar:
                    m = _SCALAR_END.search(buf, i)
                    if m is None:
                        i = len(buf)
                        break
                    end = m.start()
                    break
                else:
                    m = _STRUCTURAL.search(buf, i)
                    if m is None:
                        i = len(buf)
                        break
                    i = m.end()
                    c = buf[m.start()]
                    if c == 0x22:
                        in_string = True
                    elif c in (0x7B, 0x5B):
                        depth += 1
                    else:
                        depth -= 1
                        if depth == 0:
                            end = i
                            break
            if end >= 0:
                piece = buf[self._pos : end]
                self._pos = end
                if not keep or kept + len(piece) > limit:
                    return None
                pieces.append(piece)
                return b"".join(pieces)
            # The value runs past the buffer: keep (or drop) what we have and read on.
            piece = buf[self._pos :]
            self._pos = len(buf)
            if keep:
                kept += len(piece)
                if kept > limit:
                    keep = False
                    pieces.clear()
                else:
                    pieces.append(piece)
            if not self._fill():
                if scalar:
                    return b"".join(pieces) if keep else None
                raise TraceError("the trace is truncated (a JSON value is not closed)")
            i = 0

    # -- the event array -------------------------------------------------------------------

    def _array(self) -> Iterator[list[Event]]:
        if self._peek() == b"]":
            self._pos += 1
            return
        while True:
            decoded = self._decode_chunk()
            if decoded is None:
                pending = len(self._buf) - self._pos
                if not self._fill():
                    raise TraceError(
                        f"the traceEvents array is truncated or malformed after byte "
                        f"{self._offset()}"
                    )
                if pending > max(4 * self._block_size, MAX_ELEMENT_BYTES) + (1 << 20):
                    raise TraceError(
                        f"no decodable event boundary in {pending} bytes after byte "
                        f"{self._offset()}: malformed traceEvents"
                    )
                continue
            events, ended = decoded
            if events:
                yield events
            if ended:
                return

    def _decode_chunk(self) -> tuple[list[Event], bool] | None:
        """Decode the elements before the last good boundary within one chunk of the buffer.

        Returns the events and whether the array ended, or None when the buffer holds no
        complete element yet (the caller reads more).
        """
        buf, start = self._buf, self._pos
        window_end = min(len(buf), start + self._chunk_size)
        floor, limit = start, window_end
        bound = len(buf)  # candidates at or past this are known to fail
        widened = window_end >= bound
        malformed: str | None = None
        for _ in range(_MAX_ATTEMPTS):
            m = _last_candidate(buf, floor, min(limit, bound))
            if m is None:
                if not widened and window_end < bound:
                    # An element larger than a chunk: look past the window, once.
                    floor, limit, widened = window_end, bound, True
                    continue
                if malformed is not None:
                    raise TraceError(malformed)
                return None
            cut = m.start()
            text = b"".join((b"[", memoryview(buf)[start : cut + 1], b"]"))
            try:
                events = self._decode_events(text)
            except msgspec.DecodeError as exc:
                where = _ERROR_BYTE.search(str(exc))
                if where is None:  # truncated: the cut went through a string or an object
                    limit = cut
                    continue
                # text[k] is buf[start + k - 1]; every candidate at or past it fails the same
                # way. An error well before the end of the text is not a wrong cut: either the
                # end of the array followed by other members, or bad JSON.
                at = int(where.group(1))
                bound = min(bound, start + at - 1)
                limit = min(cut, bound)
                if at < len(text) - 2:
                    reason = _ERROR_BYTE.sub("", str(exc)).strip()
                    malformed = f"malformed JSON at byte {self._base + start + at - 1}: {reason}"
                continue
            if m.group(1) is not None:  # "}, {": the next element starts at the '{'
                self._pos = m.start(1)
                return events, False
            self._pos = m.end()  # "}]": the array is complete
            return events, True
        return None

    def _decode_events(self, text: bytes) -> list[Event]:
        """Decode a wrapped chunk; elements that are not events are dropped and counted."""
        try:
            return _EVENTS.decode(text)
        except msgspec.ValidationError:
            pass
        events: list[Event] = []
        for raw in _RAW_LIST.decode(text):
            try:
                events.append(_EVENT.decode(raw))
            except msgspec.ValidationError:
                self.invalid_events += 1
        return events


def _last_candidate(buf: bytes, lo: int, hi: int) -> re.Match[bytes] | None:
    """The last ``}`` in ``buf[lo:hi]`` followed by ``,{`` or ``]`` (whitespace allowed)."""
    cut = buf.rfind(b"}", lo, hi)
    while cut >= 0:
        m = _CANDIDATE.match(buf, cut)
        if m is not None:
            return m
        cut = buf.rfind(b"}", lo, cut)
    return None
