"""Drawing the live view over time: a rich ``Live`` panel on a terminal, summary lines elsewhere.

One :class:`PanelDisplay` serves the live capture (``profile(live=True)``, fed the record so far
by the capture's ``torchdiag-live`` thread) and ``torchdiag watch`` (fed the record it reads from
disk). Its cost is bounded whatever the record: on a terminal a frame about once a second, the
rules at most every :data:`ANALYSIS_INTERVAL_S` seconds (they cost more than the figures); where
the output is not a terminal (a log file, a batch scheduler) nothing is computed between the
summary lines, one every ``log_interval_s`` seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from rich.console import Console
from rich.live import Live

from torchdiag.analyze.registry import Analysis, analyze
from torchdiag.record import RunRecord
from torchdiag.report.live_panel import LiveViews, live_line, live_panel, live_views

# Seconds between frames on a terminal.
REFRESH_S = 1.0
# The rules re-run at most this often (and once more on the final record).
ANALYSIS_INTERVAL_S = 5.0


class PanelDisplay:
    """The live view on ``console``: a panel redrawn in place when ``terminal``, else one summary
    line every ``log_interval_s`` seconds (and a last one when closed).

    ``redirect``: while the panel is up, what the program prints to stdout and stderr goes above
    it instead of through it (the live capture: the training script keeps printing).
    ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        console: Console,
        *,
        terminal: bool,
        log_interval_s: float,
        redirect: bool = False,
        analysis_interval_s: float = ANALYSIS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._console = console
        self._terminal = terminal
        self._log_interval_s = log_interval_s
        self._redirect = redirect
        self._analysis_interval_s = analysis_interval_s
        self._clock = clock
        self._live: Live | None = None
        self._record: RunRecord | None = None
        self._views: LiveViews | None = None
        self._analysis: Analysis | None = None
        self._analysed_at: float | None = None
        self._analysed: RunRecord | None = None
        self._line_at: float | None = None

    @property
    def interval_s(self) -> float:
        """Seconds between updates worth making: a frame, or a summary line."""
        return REFRESH_S if self._terminal else self._log_interval_s

    def update(self, record: RunRecord, *, updated_age_s: float | None = None) -> None:
        """Show ``record`` (the record so far); ``updated_age_s``: how old it is, if not fresh."""
        now = self._clock()
        if not self._terminal:
            if self._line_at is not None and now - self._line_at < self._log_interval_s:
                return  # between lines nothing is computed
            self._line_at = now
            self._print_line(record)
            return
        views = self._views_of(record)
        stale = self._analysed_at is None or now - self._analysed_at >= self._analysis_interval_s
        if stale and self._analysed is not record:
            self._analyse(views, record, now)
        self._draw(views, now, updated_age_s)

    def close(self, record: RunRecord | None, *, updated_age_s: float | None = None) -> None:
        """Show the final ``record`` (its findings found afresh), then release the terminal."""
        if record is not None:
            if self._terminal:
                views = self._views_of(record)
                if self._analysed is not record:
                    self._analyse(views, record, self._clock())
                self._draw(views, self._clock(), updated_age_s)
            else:
                self._print_line(record)
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    # -- internals -----------------------------------------------------------------------------

    def _views_of(self, record: RunRecord) -> LiveViews:
        if self._views is None or self._record is not record:
            self._record, self._views = record, live_views(record)
        return self._views

    def _analyse(self, views: LiveViews, record: RunRecord, now: float) -> None:
        """The rules on the recent steps; nothing to find before the first step (and the first
        analysis comes as soon as there is one)."""
        self._analysed = record
        if record.steps.count:
            self._analysis, self._analysed_at = analyze(views.recent), now

    def _draw(self, views: LiveViews, now: float, updated_age_s: float | None) -> None:
        age = now - self._analysed_at if self._analysed_at is not None else None
        panel = live_panel(
            views,
            self._analysis if views.whole.record.steps.count else None,
            analysis_age_s=age,
            updated_age_s=updated_age_s,
        )
        if self._live is None:
            self._live = Live(
                panel,
                console=self._console,
                auto_refresh=False,  # drawn when fed: no second thread of rich's own
                transient=False,  # the last frame stays on screen when the run ends
                redirect_stdout=self._redirect,
                redirect_stderr=self._redirect,
            )
            self._live.start(refresh=True)
        else:
            self._live.update(panel, refresh=True)

    def _print_line(self, record: RunRecord) -> None:
        views = self._views_of(record)
        if self._analysed is not record:
            self._analyse(views, record, self._clock())
        line = live_line(views, self._analysis if record.steps.count else None)
        file = self._console.file
        file.write(line + "\n")
        file.flush()


def stream_display(
    stream: TextIO, log_interval_s: float, *, redirect: bool = False
) -> PanelDisplay:
    """A display on ``stream``: the panel where it is a terminal, summary lines otherwise."""
    console = Console(file=stream)
    terminal = console.is_terminal and not console.is_dumb_terminal
    return PanelDisplay(
        console, terminal=terminal, log_interval_s=log_interval_s, redirect=redirect
    )


def stdout_display(log_interval_s: float) -> PanelDisplay:
    """The live capture's display on stdout; what the training script prints goes above the
    panel (``profile(live=True)``)."""
    return stream_display(sys.stdout, log_interval_s, redirect=True)
