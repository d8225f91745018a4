"""torchdiag: profile a PyTorch training run and say, with numbers, what holds it back.

>>> import torchdiag
>>> with torchdiag.profile(output="runs/exp1/run.json") as run:  # doctest: +SKIP
...     train()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torchdiag._version import __version__
from torchdiag.record import RecordError, RunRecord, load_record

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these are imported on first use
    from torchdiag.capture.session import profile
    from torchdiag.trials.runner import try_fixes


def _repr_html_(record: RunRecord) -> str:
    """The record's report, for Jupyter (rendered on display, not at import)."""
    from torchdiag.report.notebook import notebook_html

    return notebook_html(record)


RunRecord._repr_html_ = _repr_html_  # type: ignore[attr-defined]

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
