"""GAIR QGIS plugin: Processing algorithms and a similarity map tool over the GAIR engine.

Nothing here touches sys.path: the engine is reached through `engine_link` (the zip's private `gair_qgis._engine`,
or the repository's `engine` in a source checkout), so the plugin can never shadow a module of QGIS.
"""
from __future__ import annotations

import os

PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))


def resources_path(name: str) -> str:
    """Path of a file in resources/: inside the plugin folder when installed, at the repo root in a checkout."""
    inside = os.path.join(PLUGIN_DIR, "resources", name)
    return inside if os.path.exists(inside) else os.path.join(os.path.dirname(PLUGIN_DIR), "resources", name)


def classFactory(iface):  # noqa: N802  (QGIS plugin entry point name)
    """QGIS calls this to create the plugin."""
    from .plugin import GAIRPlugin

    return GAIRPlugin(iface)
