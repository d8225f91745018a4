"""Files torchdiag writes: all-or-nothing replacement, and the leftovers of killed processes.

A record or report is written to a temporary file in the target's folder and renamed over the
target, so a reader never sees half a file and a full disk or a kill leaves the old file intact.
The temporary name carries the writer's pid; a later write removes the temporaries of writers
that no longer run (kill -9 gives a process no chance to clean up after itself).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

# Read once at import: os.umask can only be read by setting it, which is not thread-safe later.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` all at once (temporary file, fsync, rename); returns the path.

    Only a regular file is replaced. A path that is something else — ``/dev/null``,
    ``/dev/stdout``, a named pipe — is written to as it is: renaming a file over it would put a
    regular file in its place (as root, even in ``/dev``). A symbolic link is followed, so the
    file it points to is replaced and the link stays.
    """
    target = Path(path)
    if target.exists() and not target.resolve().is_file():
        with open(target, "wb") as fh:
            fh.write(data)
        return target
    target = target.resolve() if target.is_symlink() else target
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.{os.getpid()}."
    remove_stale(target.parent, f".{target.name}.", ".tmp")
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
    try:
        # mkstemp makes the file private (0600); a record or report is an ordinary file for its
        # owner's tools, so give it the permissions open() would have.
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def remove_stale(folder: str | os.PathLike[str], prefix: str, suffix: str) -> int:
    """Delete ``<prefix><pid>…<suffix>`` files in ``folder`` whose writer no longer runs.

    Returns how many were removed. Files of live processes, and names without a pid, are left.
    """
    removed = 0
    with contextlib.suppress(OSError):
        for path in Path(folder).glob(f"{prefix}*{suffix}"):
            pid = path.name[len(prefix) :].split(".", 1)[0].split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True
