"""The user's cache folder: files torchdiag derived once and may reuse, never needs.

An entry is something torchdiag can always compute again (plotly.js packed for the HTML page,
compiled report templates), kept so that the next process need not. So every failure here means
"no entry": an unset home, a read-only or full disk, a damaged file. Callers then compute the
value, as they would without a cache, and the output is the same either way.

Where: ``$TORCHDIAG_CACHE_DIR`` when set (set but empty: no cache at all), else
``$XDG_CACHE_HOME/torchdiag``, else ``~/.cache/torchdiag``.

An entry is written atomically (:func:`torchdiag.files.atomic_write`), and carries its own name
and the SHA-256 of its payload in a header line, so a truncated, damaged or renamed file is told
from a good one on read and is never served.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path

from torchdiag.files import atomic_write

__all__ = ["CACHE_DIR_ENV", "cache_dir", "prune_entries", "read_entry", "write_entry"]

CACHE_DIR_ENV = "TORCHDIAG_CACHE_DIR"
"""Environment variable naming the cache folder; set but empty, it turns the cache off."""

# Bumped if the entry layout changes; a file with another first line is not an entry. The
# layout: this line, the entry's name, the payload's SHA-256 in hex, each on a line; the payload.
_MAGIC = b"torchdiag cache entry 1\n"
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def cache_dir() -> Path | None:
    """The cache folder (not necessarily existing yet), or None when there is to be none."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit is not None:
        return Path(explicit) if explicit else None
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec: a relative path in the variable is invalid and is to be ignored.
    if os.path.isabs(xdg):
        return Path(xdg) / "torchdiag"
    try:
        return Path.home() / ".cache" / "torchdiag"
    except RuntimeError:  # no home directory can be determined (no $HOME, no passwd entry)
        return None


def read_entry(name: str) -> bytes | None:
    """The payload of the entry ``name``, or None when it is absent, unreadable or damaged."""
    path = _entry_path(name)
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(_MAGIC):
        return None
    parts = data[len(_MAGIC) :].split(b"\n", 2)
    if len(parts) != 3:
        return None
    stored_name, digest, payload = parts
    if stored_name != name.encode() or digest != hashlib.sha256(payload).hexdigest().encode():
        return None
    return payload


def write_entry(name: str, payload: bytes) -> bool:
    """Store ``payload`` as the entry ``name``; whether it was stored (False: no cache now)."""
    path = _entry_path(name)
    if path is None:
        return False
    try:
        atomic_write(path, _header(name, payload) + payload)
    except OSError:
        return False
    return True


def prune_entries(pattern: str, keep: int) -> None:
    """Delete all but the ``keep`` most recently written entries whose names match ``pattern``
    (a glob); an entry that cannot be deleted is left."""
    folder = cache_dir()
    if folder is None:
        return
    with contextlib.suppress(OSError):
        entries = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for stale in entries[keep:]:
            with contextlib.suppress(OSError):
                stale.unlink()


def _entry_path(name: str) -> Path | None:
    # A plain file name: no folder, no header-breaking newline, not atomic_write's temporaries.
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a cache entry name: {name!r}")
    folder = cache_dir()
    return None if folder is None else folder / name


def _header(name: str, payload: bytes) -> bytes:
    digest = hashlib.sha256(payload).hexdigest()
    return _MAGIC + name.encode() + b"\n" + digest.encode() + b"\n"
