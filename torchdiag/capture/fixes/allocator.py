"""``expandable-segments``: the CUDA caching allocator grows its segments in place
(``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``) instead of reserving new blocks of the
sizes it was asked for, which keeps memory that varies in size from step to step (sequence
lengths, the last batch) from fragmenting the reserve.

The allocator reads the variable when CUDA starts. ``torchdiag try`` starts each run as a new
process and the fix installs before the script's code runs, but torchdiag's own look at the
devices may already have started CUDA by then: so the variable is set (for the script, and for
any process it starts) and the setting is also handed to the running allocator through torch's
allocator-settings call, which governs every segment reserved from then on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

from torchdiag.capture.fixes.base import Fix

VARIABLE = "PYTORCH_CUDA_ALLOC_CONF"
# Newer torch also reads this one, but the CUDA-specific variable wins where both are set.
GENERIC_VARIABLE = "PYTORCH_ALLOC_CONF"
OPTION = "expandable_segments"
SETTING = f"{OPTION}:True"


def _options(conf: str) -> dict[str, str]:
    """``"a:1, b:2"`` as ``{"a": "1", "b": "2"}``."""
    pairs = (item.partition(":") for item in conf.split(","))
    return {key.strip(): value.strip() for key, _, value in pairs if key.strip()}


def allocator_conf(environ: Mapping[str, str]) -> str | None:
    """The allocator configuration in effect for ``environ``: the CUDA variable, else the
    generic one, else None."""
    if VARIABLE in environ:
        return environ[VARIABLE]
    return environ.get(GENERIC_VARIABLE)


def with_expandable_segments(conf: str | None) -> str:
    """``conf`` with expandable segments on: appended after the options already there, or
    ``conf`` as it is where it already sets them (``False`` included: the user's choice)."""
    if not conf or not conf.strip():
        return SETTING
    if OPTION in _options(conf):
        return conf
    return f"{conf.rstrip().rstrip(',')},{SETTING}"


class ExpandableSegments(Fix):
    """``expandable-segments`` (see the module docstring); not applicable without CUDA."""

    spec = "expandable-segments"

    def __init__(self) -> None:
        super().__init__()
        self._environ_before: str | None = None
        self._turned_on = False

    def install(self) -> None:
        import torch

        if not torch.cuda.is_available():
            self.not_applicable = "no CUDA device: the setting only affects the CUDA allocator"
            return
        conf = allocator_conf(os.environ)
        options = _options(conf or "")
        if OPTION in options:
            self.not_applicable = f"the run's environment already sets {OPTION}:{options[OPTION]}"
            return
        if options.get("backend") == "cudaMallocAsync":
            self.not_applicable = "the cudaMallocAsync backend has no expandable segments"
            return
        self._environ_before = os.environ.get(VARIABLE)
        os.environ[VARIABLE] = with_expandable_segments(conf)
        self._turned_on = True
        self.changed(f"{VARIABLE}={os.environ[VARIABLE]}")
        try:
            _set_allocator_settings(SETTING)
        except Exception as err:  # the variable still holds wherever CUDA has not started
            self.changed(f"the running allocator refused the setting ({type(err).__name__})")

    def uninstall(self) -> None:
        if not self._turned_on:
            return
        self._turned_on = False
        if self._environ_before is None:
            os.environ.pop(VARIABLE, None)
        else:
            os.environ[VARIABLE] = self._environ_before
        # Segments reserved from now on are ordinary again; expandable ones already reserved
        # stay as they are (the allocator tracks the kind per segment).
        with contextlib.suppress(Exception):  # refused at install: nothing to undo
            _set_allocator_settings(f"{OPTION}:False")


def _set_allocator_settings(settings: str) -> None:
    """Hand ``settings`` to the running allocator: ``torch._C._accelerator_setAllocatorSettings``
    in newer torch, ``torch.cuda.memory._set_allocator_settings`` before it."""
    import torch

    setter = getattr(torch._C, "_accelerator_setAllocatorSettings", None)
    if setter is None:
        setter = getattr(torch.cuda.memory, "_set_allocator_settings", None)
    if setter is not None:
        setter(settings)
