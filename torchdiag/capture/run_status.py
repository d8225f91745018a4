"""How a ``profile()`` block ended, as the record's :class:`~torchdiag.record.RunStatus`."""

from __future__ import annotations

from torchdiag.record import RunStatus


class StepLimitReached(BaseException):
    """Raised at the end of step ``max_steps`` to leave the training code; the ``profile()``
    block that asked for it catches it. A BaseException, so ``except Exception`` in the training
    code does not stop it."""


class SIGTERM(BaseException):
    """Stands for SIGTERM in the record's status (the run was stopped, it did not fail)."""


def unprintable_status(exc_type: type[BaseException] | None) -> RunStatus:
    """The status when even describing the exception failed."""
    name = getattr(exc_type, "__qualname__", "exception")
    if exc_type is None:
        return RunStatus(state="completed")
    failed = issubclass(exc_type, Exception)
    return RunStatus(
        state="failed" if failed else "interrupted",
        exception_type=name,
        message="<message could not be read>",
    )


def status_for(exc_type: type[BaseException] | None, exc: BaseException | None) -> RunStatus:
    """``completed``; ``failed`` for an ``Exception``; ``interrupted`` for the rest (Ctrl-C,
    ``SystemExit``, SIGTERM): the run was stopped, it did not fail."""
    if exc_type is None:
        return RunStatus(state="completed")
    try:
        message = str(exc) if exc is not None else ""
    except BaseException:  # an exception whose __str__ raises: say so, keep the type
        message = "<message could not be read>"
    if len(message) > 2000:
        message = message[:2000] + "…"
    if issubclass(exc_type, Exception):
        return RunStatus(state="failed", exception_type=exc_type.__qualname__, message=message)
    # KeyboardInterrupt, SystemExit and friends: the run was stopped, it did not fail.
    return RunStatus(state="interrupted", exception_type=exc_type.__qualname__, message=message)
