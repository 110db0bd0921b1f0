"""Outputs: style them once and persist it (so every later load looks the same), then let Processing load them
into the "GAIR" group, named after their input and operation, when the user asked for the result to be opened."""
from __future__ import annotations

import os
from collections import deque

from qgis.core import (
    QgsMapLayer,
    QgsProcessingContext,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingUtils,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

from ..layers import gair_group
from ..styling import save_default_style, true_color_renderer

# The C++ side holds only a pointer: the Python object must stay referenced until Processing has loaded the
# results (after the algorithm instance is gone). A run adds at most a few, so the last 64 are plenty.
_RECENT_PROCESSORS: deque = deque(maxlen=64)


def source_path(layer: QgsMapLayer) -> str:
    """Normalised file path of a layer (without the |layername=... part) for comparing layers by file."""
    return os.path.normcase(os.path.realpath(layer.source().split("|")[0]))


def output_layer_name(input_name: str, operation: str) -> str:
    """"detroit_emb similarity": the input a result came from and what was done, instead of the parameter label."""
    return f"{input_name} {operation}".strip()


def unique_layer_name(project: QgsProject, name: str, layer: QgsMapLayer | None = None) -> str:
    """`name`, or `name (2)`, `name (3)`... when another layer of the project already has it."""
    taken = {other.name() for other in project.mapLayers().values() if other is not layer}
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name} ({number})", number + 1
    return candidate


def is_default_multiband_style(layer: QgsRasterLayer) -> bool:
    """True while a raster still shows QGIS's default bands 1/2/3 (nobody styled it)."""
    renderer = layer.renderer()
    return renderer is not None and renderer.type() == "multibandcolor" and \
        (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (1, 2, 3)


class GroupStylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Runs on the main thread once Processing has loaded a result: loads the saved default style, names the layer
    (`name`, made unique in the project), moves it into the "GAIR" group (vectors on top), sets its visibility,
    hides the layers whose files are in `hide_sources` (a similarity ramp must not blend with the embedding it was
    computed from) and gives the Sentinel-2 layers in `true_colour_sources` the true-colour style while they
    still have QGIS's default one."""

    def __init__(self, name: str | None = None, visible: bool = True, hide_sources=(), true_colour_sources=()):
        super().__init__()
        self.name, self.visible = name, visible
        self.hide_sources = {os.path.normcase(os.path.realpath(p)) for p in hide_sources}
        self.true_colour_sources = {os.path.normcase(os.path.realpath(p)) for p in true_colour_sources}

    def postProcessLayer(self, layer: QgsMapLayer, context: QgsProcessingContext, feedback) -> None:  # noqa: N802
        layer.loadDefaultStyle()
        project = context.project()
        if project is None:
            return
        if self.name:
            layer.setName(unique_layer_name(project, self.name, layer))
        root = project.layerTreeRoot()
        node = root.findLayer(layer.id())
        if node is None:
            return
        group = gair_group(project)
        # QGIS may already have put the layer into the group (at its insertion point, e.g. above the selected
        # layer): place it anyway. The clone goes in before the original leaves, so the layer never leaves the
        # layer tree (which would remove it from the project).
        others = [child for child in group.children() if child is not node]
        position = self._position(others, layer)
        before = others[position] if position < len(others) else None
        group.insertChildNode(group.children().index(before) if before is not None else len(group.children()),
                              node.clone())
        node.parent().removeChildNode(node)
        node = root.findLayer(layer.id())
        node.setItemVisibilityChecked(self.visible)
        for other in project.mapLayers().values():
            if other is layer:
                continue
            path = source_path(other)
            other_node = root.findLayer(other.id())
            if path in self.hide_sources and other_node is not None:
                other_node.setItemVisibilityChecked(False)
            if path in self.true_colour_sources and isinstance(other, QgsRasterLayer) \
                    and is_default_multiband_style(other) and true_color_renderer(other):
                other.triggerRepaint()
        layer.triggerRepaint()

    @staticmethod
    def _position(children: list, layer: QgsMapLayer) -> int:
        """Vector results go on top; rasters below the vector layers at the top of the group."""
        if isinstance(layer, QgsVectorLayer):
            return 0
        index = 0
        while index < len(children) and isinstance(getattr(children[index], "layer", lambda: None)(),
                                                   QgsVectorLayer):
            index += 1
        return index


def open_layer(path: str, name: str) -> QgsMapLayer:
    layer = QgsRasterLayer(path, name, "gdal") if path.lower().endswith((".tif", ".tiff", ".png", ".vrt")) \
        else QgsVectorLayer(path, name, "ogr")
    if not layer.isValid():
        raise RuntimeError(f"GAIR wrote {path} but QGIS cannot open it")
    return layer


def is_temporary_output(path: str) -> bool:
    """True for outputs Processing wrote to its temporary folder (the user gave no file name)."""
    folder = os.path.normcase(os.path.realpath(QgsProcessingUtils.tempFolder()))
    return os.path.normcase(os.path.realpath(path)).startswith(folder + os.sep)


def finish_output(context: QgsProcessingContext, path: str, name: str, output_name: str, styler=None,
                  load: bool | None = None, *, visible: bool = True, hide_sources=(), true_colour_sources=()) -> str:
    """Apply `styler(layer)` and save it as the file's default style; then attach the GAIR post-processor when
    Processing will load the layer (load=True adds an extra output such as a quicklook to the loaded layers).

    `name` (see output_layer_name) names temporary outputs; a file the user named keeps its file name as the layer
    name. `visible`, `hide_sources` and `true_colour_sources`: see GroupStylePostProcessor."""
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
    layer_name = name if is_temporary_output(path) else os.path.splitext(os.path.basename(path))[0]
    details.name, details.forceName = layer_name, True
    processor = GroupStylePostProcessor(layer_name, visible, hide_sources, true_colour_sources)
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
