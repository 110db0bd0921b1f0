"""The plugin's one way to reach the engine, whether installed from the zip or run from a source checkout.

The zip carries the engine as the private package `gair_qgis._engine`, so nothing of ours becomes a top-level module
in QGIS's Python (a top-level `engine` or `processing` would shadow or clash with QGIS's own). In a source checkout
(tests, development) the repository's `engine` package is used instead. Nothing here puts a folder on sys.path.
"""
from __future__ import annotations

import importlib
from types import ModuleType

try:
    from . import _engine as engine
except ImportError:  # source checkout: the repository root is importable (pytest, scripts)
    import engine  # type: ignore[no-redef]


def engine_module(name: str) -> ModuleType:
    """An engine submodule by its dotted name inside the engine, e.g. "analysis.sampling"."""
    return importlib.import_module(f"{engine.__name__}.{name}")


def engine_attrs(module: str, *names: str):
    """Attributes of an engine submodule: one value for one name, else a tuple."""
    mod = engine_module(module)
    values = tuple(getattr(mod, name) for name in names)
    return values[0] if len(values) == 1 else values


def checkout_root() -> str | None:
    """The source checkout whose `engine` the plugin uses (its worker must run the same code), or None when the
    plugin is installed from the zip (the worker's environment then has the engine installed from the wheel)."""
    import os

    if engine.__name__ != "engine":
        return None
    return os.path.dirname(os.path.dirname(os.path.abspath(engine.__file__)))


__all__ = ["checkout_root", "engine", "engine_attrs", "engine_module"]
