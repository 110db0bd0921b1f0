"""GAIR QGIS plugin: Processing algorithms and a similarity map tool over the GAIR engine.

The engine ships inside the plugin zip at `gair_qgis/engine/`; in a source checkout it is the repo's top-level
`engine` package. Either way it must be importable as `engine` before anything else in the plugin imports it.
"""
from __future__ import annotations

import os
import sys

PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))


def _make_engine_importable() -> None:
    """Prefer the engine bundled in the plugin folder (it matches this plugin's version)."""
    if os.path.isdir(os.path.join(PLUGIN_DIR, "engine")):
        if PLUGIN_DIR not in sys.path:
            sys.path.insert(0, PLUGIN_DIR)
        return
    try:
        import engine  # noqa: F401  (source checkout: repo root already on sys.path)
    except ImportError:
        repo_root = os.path.dirname(PLUGIN_DIR)
        if os.path.isdir(os.path.join(repo_root, "engine")) and repo_root not in sys.path:
            sys.path.append(repo_root)


_make_engine_importable()


def resources_path(name: str) -> str:
    """Path of a file in resources/: inside the plugin folder when installed, at the repo root in a checkout."""
    inside = os.path.join(PLUGIN_DIR, "resources", name)
    return inside if os.path.exists(inside) else os.path.join(os.path.dirname(PLUGIN_DIR), "resources", name)


def classFactory(iface):  # noqa: N802  (QGIS plugin entry point name)
    """QGIS calls this to create the plugin."""
    from .plugin import GAIRPlugin

    return GAIRPlugin(iface)
