"""plotly.js for the HTML report: found in the installed ``plotly`` package, versioned, and packed.

The full bundle is 4.8 MB of JavaScript; the page carries it compressed (raw DEFLATE, then
base85 text), 1.8 MB, and ``report.js`` inflates it with the browser's own
``DecompressionStream`` and runs it as an inline script before the charts draw. The page's
script policy lists the SHA-256 of the *inflated* code, so the browser runs exactly the installed
plotly.js and nothing else; the packed text itself sits in a data block
(``<script type="application/octet-stream">``), which is never executed.

Base85 rather than base64: 25% instead of 33% on top of the compressed bytes, the difference
between a page under 2 MB and one over it. The alphabet is Python's (RFC 1924) with ``<``, ``>``
and ``&`` replaced by ``.``, ``,`` and ``:``, so the text can neither open nor close a tag or a
comment inside its ``<script>`` element, and needs no escaping in an attribute (a notebook's
``srcdoc``).

Packing takes about 0.3 s of CPU (deflate at level 9, then base85 in pure Python), more than the
rest of the page together, and its result depends only on the code. So the packed text is kept
in the user's cache folder (:mod:`torchdiag.user_cache`), named by the plotly.js version, the
SHA-256 of its code and what else decides the packed bytes (this packing's format, the level, the
alphabet, the zlib library), and reused by every later report: the page is byte for byte the one
packing here would give. Without a usable cache the code is packed in memory, as before.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from torchdiag.user_cache import prune_entries, read_entry, write_entry

# The base85 alphabet report.js decodes (its B85 string must match): RFC 1924's with the three
# characters HTML gives a meaning, "<", ">" and "&", written as ".", "," and ":".
PACKED_ALPHABET = (
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%:()*+-;.=,?@^_`{|}~"
)
_TO_PAGE = bytes.maketrans(b"<>&", b".,:")
_FROM_PAGE = bytes.maketrans(b".,:", b"<>&")
# Level 9 packs the bundle ~3 kB smaller than the default 6 for ~0.1 s more, once per process.
_DEFLATE_LEVEL = 9
# Bump when pack() changes what it makes of the same code (other than through the level or the
# alphabet, which enter the cache key themselves): older cache entries are then never read.
_PACK_FORMAT = 1
# Packed bundles kept in the cache: a few plotly versions side by side (several environments
# sharing one home), each ~1.8 MB; older entries are deleted when a new one is written.
_KEEP_CACHED = 3
_CACHED_GLOB = "plotly-*.b85"


@dataclass(frozen=True)
class PackedPlotly:
    """The installed plotly.js as the page carries it."""

    version: str
    """plotly.js version, e.g. ``"4.1.1"``."""
    packed: str
    """The code as :func:`pack` packs it."""
    sha256: bytes
    """SHA-256 of the unpacked code's UTF-8: what the page's script policy admits."""


def _plotly_package_dir() -> Path:
    """The installed ``plotly`` package's folder, found without importing the package.

    ``importlib.resources.files("plotly")`` imports plotly (and with it ``importlib.metadata``),
    ~40 ms of a ~1 s report for a file we only read.
    """
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'plotly'", name="plotly")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def plotly_js(*, code: bool) -> tuple[str, str | None]:
    """(plotly.js version, its code when ``code``); read once per process."""
    try:
        path = _plotly_file()
        if code:
            text: str | None = path.read_text(encoding="utf-8")
            head = text[:512] if text else ""
        else:
            text = None
            with path.open("r", encoding="utf-8") as fh:
                head = fh.read(512)
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise _not_installed() from exc
    return _version(head), text


@functools.cache
def packed_plotly() -> PackedPlotly:
    """The installed plotly.js, packed: from the user cache when it holds this exact code packed
    this exact way, else packed here (and stored for the next process). Once per process."""
    version, data = _plotly_utf8()
    digest = hashlib.sha256(data).digest()
    name = _cache_name(version, digest)
    cached = read_entry(name)
    if cached is not None and cached.isascii():
        return PackedPlotly(version, cached.decode("ascii"), digest)
    data.decode("utf-8")  # not UTF-8: raises, as reading the file as text always did
    packed = _pack_utf8(data)
    if write_entry(name, packed.encode("ascii")):
        prune_entries(_CACHED_GLOB, keep=_KEEP_CACHED)
    return PackedPlotly(version, packed, digest)


def _plotly_utf8() -> tuple[str, bytes]:
    """(plotly.js version, the UTF-8 of the code that ``plotly_js(code=True)`` reads).

    Without a carriage return in the file (reading it as text turns those into newlines), that
    UTF-8 is the file's own bytes: reading them saves decoding 4.8 MB into a str and encoding
    it back, ~12 ms of every report. That they are valid UTF-8 is checked where they are packed
    (a cache entry is only ever written for bytes that passed).
    """
    try:
        data = _plotly_file().read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise _not_installed() from exc
    if b"\r" in data:
        version, code = plotly_js(code=True)
        assert code is not None  # plotly_js(code=True) returns the code or raises
        return version, code.encode("utf-8")
    return _version(data[:2048].decode("utf-8", "replace")[:512]), data


def _plotly_file() -> Path:
    return _plotly_package_dir() / "package_data" / "plotly.min.js"


def _version(head: str) -> str:
    match = re.search(r"plotly\.js v(\d+\.\d+\.\d+)", head)
    if match is None:
        raise RuntimeError("cannot tell the version of the installed plotly.js")
    return match.group(1)


def _not_installed() -> RuntimeError:
    return RuntimeError(
        "the HTML report inlines plotly.js from the 'plotly' package, which is not "
        "installed; install plotly or render with cdn=True"
    )


def pack(code: str) -> str:
    """``code`` as the page carries it: UTF-8, raw DEFLATE, base85 in :data:`PACKED_ALPHABET`."""
    return _pack_utf8(code.encode("utf-8"))


def _pack_utf8(data: bytes) -> str:
    deflate = zlib.compressobj(_DEFLATE_LEVEL, zlib.DEFLATED, -15, 9)
    packed = deflate.compress(data) + deflate.flush()
    return base64.b85encode(packed).translate(_TO_PAGE).decode("ascii")


def _cache_name(version: str, code_sha256: bytes) -> str:
    """The cache entry of this code packed this way. Another zlib may deflate the same input to
    other (equally valid) bytes, and a page must not depend on where its bundle came from."""
    how = repr((_PACK_FORMAT, _DEFLATE_LEVEL, PACKED_ALPHABET, zlib.ZLIB_RUNTIME_VERSION))
    tag = hashlib.sha256(how.encode()).hexdigest()[:12]
    return f"plotly-{version}-{code_sha256.hex()}-{tag}.b85"


def unpack(text: str) -> str:
    """The code :func:`pack` packed (what the browser's ``report.js`` does, for tests)."""
    data = base64.b85decode(text.encode("ascii").translate(_FROM_PAGE))
    return zlib.decompress(data, -15).decode("utf-8")
