"""The live view's thread: the record so far, handed to a display about once a second.

``profile(live=True)`` shows a panel while training runs. The panel is drawn by the report layer
(it reads the view and the rules), which the capture must not import: the display is made by a
factory the package facade installs (:func:`install_display`, as it installs the notebook hook),
and the capture only knows the small :class:`LiveDisplay` protocol.

While the block runs, everything the live view does runs on the ``torchdiag-live`` thread, never
on the training thread: taking the record so far (``Run.snapshot()``, no file written), the
figures, the rules, the drawing. Only the final frame, of the record as written, is drawn by the
thread that ends the block. A display that fails stops the live view, never training: the thread
ends, the error is kept (the run records it as collector ``live``), and the display is closed.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import traceback
from collections.abc import Callable
from typing import Protocol

from torchdiag.record import RunRecord

# How long the block's end waits for a frame being drawn before going on without it.
JOIN_TIMEOUT_S = 5.0


class LiveDisplay(Protocol):
    """What shows the live view: fed the record so far every ``interval_s`` seconds, then the
    final record once (or None, when the block ends before a record is built)."""

    @property
    def interval_s(self) -> float:
        """Seconds between updates (about one on a terminal; longer where it prints lines)."""
        ...

    def update(self, record: RunRecord) -> None:
        """Show ``record``, the record so far (``status.state == "running"``)."""
        ...

    def close(self, record: RunRecord | None) -> None:
        """Show the final record, if any, and release the terminal."""
        ...


DisplayFactory = Callable[[float], LiveDisplay]
"""Makes the display; its argument is the seconds between summary lines where the output is not a
terminal (``profile(live_log_interval=...)``)."""

_factory: DisplayFactory | None = None


def install_display(factory: DisplayFactory) -> None:
    """Set what makes the live display (the package facade installs the report layer's)."""
    global _factory
    _factory = factory


def make_display(log_interval_s: float) -> LiveDisplay:
    """A new display from the installed factory; raises RuntimeError when none is installed."""
    if _factory is None:
        raise RuntimeError("no live display installed (import torchdiag first)")
    return _factory(log_interval_s)


class LiveThread:
    """Feeds ``display`` with ``snapshot()`` every ``display.interval_s`` on its own thread.

    ``error`` is set when the snapshot or the display failed (the thread then stops);
    ``cpu_s`` is the CPU time the thread has used, torchdiag's cost of the live view.
    """

    def __init__(self, snapshot: Callable[[], RunRecord], display: LiveDisplay) -> None:
        self._snapshot = snapshot
        self._display = display
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="torchdiag-live", daemon=True)
        self._closed = False
        self._lock = threading.Lock()
        self.error: str | None = None
        self.cpu_s = 0.0

    def start(self) -> None:
        """Start the thread; the first frame is drawn at once."""
        self._thread.start()

    def stop(self) -> None:
        """Stop feeding the display (waits for a frame being drawn); safe to call twice."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(JOIN_TIMEOUT_S)

    def finish(self, record: RunRecord | None) -> None:
        """Stop the thread, then show the final ``record`` and close the display; once only.
        Raises what the display raised (the caller records it)."""
        self.stop()
        if self._claim_close():
            self._display.close(record)

    def _claim_close(self) -> bool:
        """Whether this caller is the one to close the display (the thread, after a failure, or
        the block's end: whichever comes first)."""
        with self._lock:
            first, self._closed = not self._closed, True
            return first

    def _loop(self) -> None:
        interval = max(0.05, float(self._display.interval_s))
        start = time.thread_time()
        try:
            while True:
                self._display.update(self._snapshot())
                self.cpu_s = time.thread_time() - start
                if self._stop.wait(interval):
                    return
        except Exception as err:
            self.error = f"{type(err).__name__}: {err}"
            if os.environ.get("TORCHDIAG_DEBUG"):
                traceback.print_exc()
            # Release the terminal now: the block's end may be hours away.
            if self._claim_close():
                with contextlib.suppress(Exception):
                    self._display.close(None)
        finally:
            self.cpu_s = time.thread_time() - start
