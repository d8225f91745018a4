"""Patching a module the moment it is first imported, without importing it ourselves.

Importing a framework (transformers, Lightning) takes seconds: torchdiag never does it on the
user's behalf. A module already imported is patched right away; for one not imported yet, a
``sys.meta_path`` finder lets the normal loader run when the user's code imports it, then hands
the executed module to a callback.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable, Collection, Sequence
from types import ModuleType
from typing import Any


class PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for a module in ``names`` it asks the finders after it for the spec
    and wraps the loader, so ``patch(module)`` runs once the module has executed.

    :meth:`install` puts it first on ``sys.meta_path`` (and patches the modules already
    imported); :meth:`uninstall` takes it off: a module imported after that is left alone.
    """

    def __init__(self, names: Collection[str], patch: Callable[[ModuleType], None]) -> None:
        self.names = frozenset(names)
        self.patch = patch

    @property
    def installed(self) -> bool:
        """Whether the hook is on ``sys.meta_path``."""
        return self in sys.meta_path

    def install(self) -> None:
        """Hook future imports of ``names``, and patch those already imported."""
        sys.meta_path.insert(0, self)
        for name in sorted(self.names):
            module = sys.modules.get(name)
            if module is not None:
                self.patch(module)

    def uninstall(self) -> None:
        """Stop hooking imports (safe to call twice)."""
        if self in sys.meta_path:
            sys.meta_path.remove(self)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        spec.loader = _PatchingLoader(loader, self)
        return spec


class _PatchingLoader(importlib.abc.Loader):
    """Runs the real loader, puts it back on the module, then patches the module."""

    def __init__(self, loader: Any, hook: PatchOnImport) -> None:
        self.loader = loader
        self.hook = hook

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self.loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The real loader answers get_source, resources and reloads from here on.
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        if self.hook.installed:  # not undone meanwhile
            self.hook.patch(module)
