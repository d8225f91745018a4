"""``install()``: every Lightning and Hugging Face ``Trainer`` created afterwards gets a
``TorchdiagCallback``, with no change to the user's script.

The ``Trainer`` classes are patched where they are defined (``lightning.pytorch.trainer.trainer``,
``pytorch_lightning.trainer.trainer``, ``transformers.trainer``): right away for a framework
already imported, otherwise the moment its module is first imported
(:class:`~torchdiag.capture.import_hook.PatchOnImport`). The patched ``__init__`` runs the
original and adds one callback if the trainer has none. Under ``torchdiag run`` the script runs
inside ``torchdiag.profile()``, so these callbacks mark the trainer's steps on that capture.
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

from torchdiag.capture.import_hook import PatchOnImport
from torchdiag.capture.patching import Patches

_LOCK = threading.Lock()
_installed: _Installation | None = None


def install() -> Callable[[], None]:
    """Add a ``TorchdiagCallback`` to every Lightning and Hugging Face ``Trainer`` created from
    now on (unless one was passed); returns a function that undoes it.

    Calling it again while installed changes nothing (its undo does nothing either).
    """
    global _installed
    with _LOCK:
        if _installed is not None:
            return lambda: None
        installation = _Installation()
        _installed = installation
    installation.start()
    return installation.undo


def _add_lightning_callback(trainer: Any) -> None:
    from torchdiag.integrations.lightning import TorchdiagCallback

    if not any(isinstance(cb, TorchdiagCallback) for cb in trainer.callbacks):
        trainer.callbacks.append(TorchdiagCallback())


def _add_hf_callback(trainer: Any) -> None:
    from torchdiag.integrations.hf import TorchdiagCallback

    if not any(isinstance(cb, TorchdiagCallback) for cb in trainer.callback_handler.callbacks):
        trainer.add_callback(TorchdiagCallback())


# Module defining a Trainer class -> how to add the callback to one of its instances.
TARGETS: dict[str, Callable[[Any], None]] = {
    "lightning.pytorch.trainer.trainer": _add_lightning_callback,
    "pytorch_lightning.trainer.trainer": _add_lightning_callback,
    "transformers.trainer": _add_hf_callback,
}


class _Installation:
    """The patches and the import hook of one ``install()``."""

    def __init__(self) -> None:
        self.patches = Patches()
        self.finder = PatchOnImport(TARGETS, self.patch)
        self.lock = threading.Lock()

    def start(self) -> None:
        self.finder.install()

    def patch(self, module: ModuleType) -> None:
        """Make ``module.Trainer`` add the callback; a failure is a warning, never an error."""
        add = TARGETS[module.__name__]
        try:
            with self.lock:
                trainer_class = module.Trainer
                original = trainer_class.__init__
                if getattr(original, "__torchdiag_adds__", False):
                    return
                self.patches.replace(trainer_class, "__init__", _adding_init(original, add))
        except Exception as err:
            warnings.warn(f"torchdiag: cannot hook {module.__name__}.Trainer ({err})", stacklevel=2)

    def undo(self) -> None:
        """Remove the import hook and restore every patched ``Trainer``."""
        global _installed
        with _LOCK:
            if _installed is self:
                _installed = None
        self.finder.uninstall()
        with self.lock:
            self.patches.restore()


def _adding_init(original: Any, add: Callable[[Any], None]) -> Any:
    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        try:
            add(self)
        except Exception as err:  # the trainer works without torchdiag
            warnings.warn(f"torchdiag: no callback added ({err})", stacklevel=2)

    __init__.__torchdiag_adds__ = True  # type: ignore[attr-defined]
    return __init__
