"""torchdiag: profile a PyTorch training run and say, with numbers, what holds it back.

>>> import torchdiag
>>> with torchdiag.profile(output="runs/exp1/run.json") as run:  # doctest: +SKIP
...     train()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torchdiag._version import __version__
from torchdiag.capture import live as _live
from torchdiag.record import RecordError, RunRecord, load_record

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these are imported on first use
    from torchdiag.capture.session import profile
    from torchdiag.trials.runner import try_fixes


def _repr_html_(record: RunRecord) -> str:
    """The record's report, for Jupyter (rendered on display, not at import)."""
    from torchdiag.report.notebook import notebook_html

    return notebook_html(record)


RunRecord._repr_html_ = _repr_html_  # type: ignore[attr-defined]


def _live_display(log_interval_s: float) -> _live.LiveDisplay:
    """The live panel of ``profile(live=True)`` on stdout (made when a live block starts)."""
    from torchdiag.report.live_display import stdout_display

    return stdout_display(log_interval_s)


# The capture draws its live view through this factory: the panel is the report layer's, which
# the capture may not import (torchdiag.capture.live imports neither torch nor rich).
_live.install_display(_live_display)

__all__ = ["RecordError", "RunRecord", "__version__", "load_record", "profile", "try_fixes"]


def __getattr__(name: str) -> Any:
    # The capture side imports torch; keep `import torchdiag` (and so `torchdiag report`) free of it
    # until a capture is actually asked for.
    if name == "profile":
        from torchdiag.capture.session import profile

        return profile
    if name == "try_fixes":
        from torchdiag.trials.runner import try_fixes

        return try_fixes
    raise AttributeError(f"module 'torchdiag' has no attribute {name!r}")
