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
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import re
import zlib
from pathlib import Path

# The base85 alphabet report.js decodes (its B85 string must match): RFC 1924's with the three
# characters HTML gives a meaning, "<", ">" and "&", written as ".", "," and ":".
PACKED_ALPHABET = (
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%:()*+-;.=,?@^_`{|}~"
)
_TO_PAGE = bytes.maketrans(b"<>&", b".,:")
_FROM_PAGE = bytes.maketrans(b".,:", b"<>&")
# Level 9 packs the bundle ~3 kB smaller than the default 6 for ~0.1 s more, once per process.
_DEFLATE_LEVEL = 9


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
        path = _plotly_package_dir() / "package_data" / "plotly.min.js"
        if code:
            text: str | None = path.read_text(encoding="utf-8")
            head = text[:512] if text else ""
        else:
            text = None
            with path.open("r", encoding="utf-8") as fh:
                head = fh.read(512)
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise RuntimeError(
            "the HTML report inlines plotly.js from the 'plotly' package, which is not "
            "installed; install plotly or render with cdn=True"
        ) from exc
    match = re.search(r"plotly\.js v(\d+\.\d+\.\d+)", head)
    if match is None:
        raise RuntimeError("cannot tell the version of the installed plotly.js")
    return match.group(1), text


@functools.lru_cache(maxsize=2)
def pack(code: str) -> str:
    """``code`` as the page carries it: UTF-8, raw DEFLATE, base85 in :data:`PACKED_ALPHABET`."""
    deflate = zlib.compressobj(_DEFLATE_LEVEL, zlib.DEFLATED, -15, 9)
    data = deflate.compress(code.encode("utf-8")) + deflate.flush()
    return base64.b85encode(data).translate(_TO_PAGE).decode("ascii")


def unpack(text: str) -> str:
    """The code :func:`pack` packed (what the browser's ``report.js`` does, for tests)."""
    data = base64.b85decode(text.encode("ascii").translate(_FROM_PAGE))
    return zlib.decompress(data, -15).decode("utf-8")
