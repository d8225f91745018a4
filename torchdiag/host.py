"""This machine as a record names it: its host name, or a short hash of it when redacted.

A record keeps the host as ``host-`` and 8 hex digits of a hash by default (reports travel, and a
host name can name a person or a cluster); ranks on one host still group together, and a reader
on the same host can still tell the record was written here.
"""

from __future__ import annotations

import hashlib
import socket


def host_label(hostname: str) -> str:
    """A short, stable stand-in for the host name: ``host-`` and 8 hex digits of its hash."""
    if not hostname:
        return ""
    return "host-" + hashlib.sha256(hostname.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def is_this_host(recorded: str) -> bool | None:
    """Whether ``recorded`` (a record's ``environment.hostname``, as is or redacted) names this
    machine; ``None`` when the record names no host, or this machine's name cannot be read."""
    if not recorded:
        return None
    try:
        here = socket.gethostname()
    except OSError:
        return None
    if not here:
        return None
    return recorded in (here, host_label(here))
