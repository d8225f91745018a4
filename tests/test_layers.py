"""Imports flow one way: _version, files, sanitize, host → record, user_cache → traces → view →
analyze → diff → trials → report → cli → the package facade.

The live capture sits beside the trace reader (it summarises its profiler window with it); the
framework integrations (callbacks, tracker output) drive the capture and read the view and the
rules, so they sit above those (beside the trials of ``torchdiag try``), and only the CLI may
import them. The package facade (``torchdiag/__init__.py``: the public API, the version, the
notebook hook) and ``__main__`` stand above everything: nothing below imports them, and the
version lives in ``_version`` at the bottom for everyone. A lower layer that imported a higher
one would make the rules depend on the renderers, or the record on the report: this test fails
on the first such import, lazy ones inside functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "torchdiag"
LAYERS = {
    "_version": 0,
    "files": 0,
    "sanitize": 0,
    "host": 0,
    "record": 1,
    "user_cache": 1,
    "traces": 2,
    "capture": 3,
    "view": 3,
    "analyze": 4,
    "diff": 5,
    "integrations": 6,
    "trials": 6,
    "report": 7,
    "report_templates": 7,
    "cli": 8,
    "__init__": 9,
    "__main__": 9,
}


def _part(module: str) -> str:
    """The layer a ``torchdiag.x.y`` module belongs to (``x``), or the facade."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return [m for m in found if m == "torchdiag" or m.startswith("torchdiag.")]


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_imports_flow_one_way(path: Path) -> None:
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    own = _part(module)
    assert own in LAYERS, f"{module}: add its package to the layer table"
    for target in _imports(path):
        layer = _part(target)
        assert LAYERS[layer] <= LAYERS[own] or layer == own, (
            f"{module} (layer {own}) imports {target} (layer {layer}): imports flow one way"
        )
        if layer != own:
            assert LAYERS[layer] < LAYERS[own], f"{module} imports {target} at the same level"


def test_every_package_is_shipped() -> None:
    """The wheel lists its packages by hand (report_templates lives outside torchdiag/): a
    package missing from that list would work in a checkout and be absent once installed."""
    import tomllib

    listed = set(
        tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"][
            "packages"
        ]
    )
    found = {
        ".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("__init__.py")
    }
    assert found <= listed, f"add to pyproject.toml [tool.setuptools] packages: {found - listed}"
