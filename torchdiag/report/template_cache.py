"""Compiled report templates kept between processes, in the user's cache folder.

jinja2 compiles ``report.html`` and ``base.html`` to Python code on first use: about 50 ms of
every HTML report, for templates that change only when torchdiag does. A compiled template is
kept as an entry of :mod:`torchdiag.user_cache` (written atomically, checked by SHA-256 on read,
so a damaged file is compiled again, never loaded), and jinja2 itself checks that the template's
source is the one the code was compiled from.

The entry name carries what else decides the compiled code: the template's name and path
(jinja2's bucket key), the jinja2 and Python versions, and the environment's options
(``trim_blocks`` and the like change the generated code, and jinja2's key does not include them).
"""

from __future__ import annotations

import hashlib
import sys
from typing import Any

import jinja2
import jinja2.bccache

from torchdiag.user_cache import prune_entries, read_entry, write_entry

__all__ = ["UserCacheBytecodeCache"]

# Compiled templates kept: a few torchdiag installs side by side, a few kB each.
_KEEP_CACHED = 16
_CACHED_GLOB = "jinja-*.bc"


class UserCacheBytecodeCache(jinja2.bccache.BytecodeCache):
    """A jinja2 bytecode cache in the user's cache folder, for one environment's options."""

    def __init__(self, options: dict[str, Any]) -> None:
        runtime = f"{jinja2.__version__}|{sys.version}|{sorted(options.items())!r}"
        self._tag = hashlib.sha256(runtime.encode()).hexdigest()[:16]

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        """Fill ``bucket`` from the cache when it holds a good entry for it."""
        data = read_entry(self._name(bucket))
        if data is not None:
            # jinja2 checks its magic and the source checksum, and resets the bucket (so the
            # template is compiled) when either differs.
            bucket.bytecode_from_string(data)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        """Store ``bucket``'s freshly compiled code; a failure only means no entry."""
        if write_entry(self._name(bucket), bucket.bytecode_to_string()):
            prune_entries(_CACHED_GLOB, keep=_KEEP_CACHED)

    def _name(self, bucket: jinja2.bccache.Bucket) -> str:
        return f"jinja-{self._tag}-{bucket.key}.bc"
