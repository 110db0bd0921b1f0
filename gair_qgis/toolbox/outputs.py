"""Outputs: style them once and persist it (so every later load looks the same), then let Processing load them
into the "GAIR" group when the user asked for the result to be opened."""
from __future__ import annotations

import os
from collections import deque

from qgis.core import (
    QgsMapLayer,
    QgsProcessingContext,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsVectorLayer,
)

from ..layers import gair_group
from ..styling import save_default_style

# The C++ side holds only a pointer: the Python object must stay referenced until Processing has loaded the
# results (after the algorithm instance is gone). A run adds at most a few, so the last 64 are plenty.
_RECENT_PROCESSORS: deque = deque(maxlen=64)


class GroupStylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Loads the saved default style and moves the layer into the "GAIR" group."""

    def postProcessLayer(self, layer: QgsMapLayer, context: QgsProcessingContext, feedback) -> None:  # noqa: N802
        layer.loadDefaultStyle()
        project = context.project()
        if project is None:
            return
        root = project.layerTreeRoot()
        node = root.findLayer(layer.id())
        if node is None:
            return
        group = gair_group(project)
        if node.parent() is not group:
            group.insertChildNode(0, node.clone())
            node.parent().removeChildNode(node)
        layer.triggerRepaint()


def open_layer(path: str, name: str) -> QgsMapLayer:
    layer = QgsRasterLayer(path, name, "gdal") if path.lower().endswith((".tif", ".tiff", ".png", ".vrt")) \
        else QgsVectorLayer(path, name, "ogr")
    if not layer.isValid():
        raise RuntimeError(f"GAIR wrote {path} but QGIS cannot open it")
    return layer


def finish_output(context: QgsProcessingContext, path: str, name: str, output_name: str, styler=None,
                  load: bool | None = None) -> str:
    """Apply `styler(layer)` and save it as the file's default style; then attach the GAIR post-processor when
    Processing will load the layer (load=True adds an extra output such as a quicklook to the loaded layers)."""
    if styler is not None:
        layer = open_layer(path, name)
        styler(layer)
        save_default_style(layer)
    if context.willLoadLayerOnCompletion(path):
        details = context.layerToLoadOnCompletionDetails(path)
    elif load:
        details = QgsProcessingContext.LayerDetails(name, context.project(), output_name)
        context.addLayerToLoadOnCompletion(path, details)
        details = context.layerToLoadOnCompletionDetails(path)
    else:
        return path
    processor = GroupStylePostProcessor()
    _RECENT_PROCESSORS.append(processor)
    details.setPostProcessor(processor)
    return path


def remove_file_set(path: str) -> None:
    """Delete an output: the files the engine says it consists of (sidecars, quicklook) and the style saved here."""
    from ..engine_link import engine_attrs

    output_files = engine_attrs("io.files", "output_files")
    for candidate in [*output_files(path, existing_only=False), os.path.splitext(path)[0] + ".qml"]:
        if os.path.isfile(candidate):
            try:
                os.remove(candidate)
            except OSError:
                pass
