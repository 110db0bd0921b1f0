"""The similarity map tool driven on a real canvas: click -> similarity layer + top-k points in the GAIR group,
more clicks add positive examples, Ctrl-click / right-click negative ones, undo and clear, saved examples train a
classifier, a large raster shows a coarse heatmap first and the view in detail after; the slider thresholds; work
runs in a QgsTask. The dock lists only embedding rasters, opens with an instruction, keeps results beside the
project, and leaves no temporary layer in the project when it shuts down."""
from __future__ import annotations

import os
import re
import time

import pytest
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
)
from qgis.gui import QgsMapMouseEvent
from qgis.PyQt.QtCore import QCoreApplication, QEvent, QPoint, Qt

from gair_qgis.layers import raster_tag


def wait_for(controller, timeout: float = 60.0) -> None:
    assert controller.wait_until_idle(timeout), "the similarity task did not finish"


def sized_canvas(qgis_iface, width: int = 400, height: int = 300):
    """The canvas at a real size (QgsMapCanvas applies a resize to its map settings after a short timer)."""
    canvas = qgis_iface.mapCanvas()
    qgis_iface.mainWindow().resize(width, height)
    qgis_iface.mainWindow().show()  # offscreen platform: nothing is displayed, but resize events are delivered
    canvas.resize(width, height)
    deadline = time.monotonic() + 5
    while canvas.mapSettings().outputSize().width() < width - 4 and time.monotonic() < deadline:  # minus frame
        QCoreApplication.processEvents()
        time.sleep(0.02)
    assert canvas.mapSettings().outputSize().width() >= width - 4
    return canvas


def click(dock, canvas, point_canvas_crs: QgsPointXY, ctrl: bool = False, right: bool = False) -> None:
    pixel = canvas.getCoordinateTransform().transform(point_canvas_crs)
    button = Qt.RightButton if right else Qt.LeftButton
    event = QgsMapMouseEvent(canvas, QEvent.MouseButtonRelease, QPoint(round(pixel.x()), round(pixel.y())),
                             button, button, Qt.ControlModifier if ctrl else Qt.NoModifier)
    dock.tool.canvasReleaseEvent(event)


@pytest.fixture
def dock(qgis_iface, qgis_new_project, gair_settings, sample_embedding):
    from gair_qgis.maptool.dock import SimilarityDock

    layer = QgsRasterLayer(str(sample_embedding), "embedding", "gdal")
    QgsProject.instance().addMapLayer(layer)
    canvas = sized_canvas(qgis_iface)
    web_mercator = QgsCoordinateReferenceSystem("EPSG:3857")  # the canvas CRS differs from the raster's (4326)
    canvas.setDestinationCrs(web_mercator)
    to_canvas = QgsCoordinateTransform(layer.crs(), web_mercator, QgsProject.instance())
    canvas.setExtent(to_canvas.transformBoundingBox(layer.extent()))
    canvas.refresh()
    widget = SimilarityDock(qgis_iface)
    widget.layer_box.setLayer(layer)
    widget.set_tool_active(True)
    yield widget, canvas, layer, to_canvas
    widget.shutdown()


def test_click_makes_similarity_layer_and_top_k_points(dock):
    widget, canvas, layer, to_canvas = dock
    controller = widget.controller
    assert canvas.mapTool() is widget.tool
    assert controller.embedding_layer is layer and not widget.embed_button.isEnabled()
    centre = layer.extent().center()
    widget.top_k.setValue(5)
    click(widget, canvas, to_canvas.transform(centre))
    assert controller.busy  # runs off the GUI thread
    wait_for(controller)

    similarity, points = controller.similarity_layer, controller.points_layer
    assert similarity is not None and points is not None, widget.status.text()
    group = QgsProject.instance().layerTreeRoot().findGroup("GAIR")
    assert {node.layerId() for node in group.findLayers()} == {similarity.id(), points.id()}
    assert similarity.crs().authid() == "EPSG:4326" and similarity.extent() == layer.extent()
    assert similarity.renderer().type() == "singlebandpseudocolor"
    assert (similarity.name(), points.name()) == ("embedding similarity", "embedding top places")
    assert points.featureCount() == 5 and points.renderer().symbol().symbolLayer(0).properties()["name"] == "star"
    # the clicked pixel (within a canvas pixel of the centre) is the most similar place: cosine 1 with itself
    (reference,) = controller.references
    assert reference.distance(centre) < 2 * layer.rasterUnitsPerPixelX()
    value, ok = similarity.dataProvider().sample(reference, 1)
    assert ok and value == pytest.approx(1.0, abs=1e-5)
    # rank 1 is not the clicked pixel: its neighbourhood (the minimum distance, 5 px) is left out of the places
    pixel = layer.rasterUnitsPerPixelX()
    for feature in points.getFeatures():
        assert feature.geometry().asPoint().distance(reference) >= 5 * pixel - 1e-9
        assert feature["score"] < 1.0 - 1e-4
    scores = [f["score"] for f in sorted(points.getFeatures(), key=lambda f: f["rank"])]
    assert scores == sorted(scores, reverse=True)
    assert widget.keep_button.isEnabled() and "Temporary" in widget.status.text()


def test_clicks_add_references_slider_thresholds_clear_removes(dock):
    widget, canvas, layer, to_canvas = dock
    controller = widget.controller
    extent = layer.extent()
    first = QgsPointXY(extent.xMinimum() + 0.3 * extent.width(), extent.yMinimum() + 0.5 * extent.height())
    second = QgsPointXY(extent.xMinimum() + 0.7 * extent.width(), extent.yMinimum() + 0.5 * extent.height())
    click(widget, canvas, to_canvas.transform(first))
    wait_for(controller)
    click(widget, canvas, to_canvas.transform(second))
    wait_for(controller)
    assert len(controller.references) == 2
    assert [p.x() for p in controller.references] == pytest.approx([first.x(), second.x()],
                                                                    abs=layer.rasterUnitsPerPixelX())
    similarity = controller.similarity_layer
    both = [similarity.dataProvider().sample(p, 1)[0] for p in (first, second)]
    assert all(v < 1.0 for v in both)  # compared with the mean of two references, neither is identical
    assert len(QgsProject.instance().layerTreeRoot().findGroup("GAIR").findLayers()) == 2  # replaced, not piled up

    widget.slider.setValue(80)
    ramp = similarity.renderer().shader().rasterShaderFunction()
    low, high = similarity.dataProvider().bandStatistics(1).minimumValue, \
        similarity.dataProvider().bandStatistics(1).maximumValue
    assert ramp.clip() and ramp.minimumValue() == pytest.approx(low + 0.8 * (high - low), rel=1e-6)
    assert "≥" in widget.threshold_label.text()

    replaced = similarity.id()
    widget.undo_button.click()  # the last click goes: one reference again
    wait_for(controller)
    assert len(controller.references) == 1 and controller.references[0].x() == pytest.approx(
        first.x(), abs=layer.rasterUnitsPerPixelX())
    assert replaced not in QgsProject.instance().mapLayers()  # a new result replaced it
    assert controller.similarity_layer.dataProvider().sample(controller.references[0], 1)[0] == pytest.approx(
        1.0, abs=1e-5)

    controller.clear()
    assert controller.similarity_layer is None and controller.references == []
    assert QgsProject.instance().layerTreeRoot().findGroup("GAIR").findLayers() == []


def test_click_outside_raster_explains(dock):
    widget, canvas, layer, to_canvas = dock
    outside = QgsPointXY(layer.extent().xMaximum() + layer.extent().width(), layer.extent().center().y())
    canvas.setExtent(canvas.extent().buffered(canvas.extent().width() * 2))
    click(widget, canvas, to_canvas.transform(outside))
    assert not widget.controller.busy
    assert "outside" in widget.status.text()
    # nothing was searched: no reference, no result layer, nothing added to the project
    assert widget.controller.references == [] and widget.controller.similarity_layer is None
    group = QgsProject.instance().layerTreeRoot().findGroup("GAIR")
    assert group is None or group.findLayers() == []


def test_source_raster_embeds_visible_extent_then_searches(qgis_iface, qgis_new_project, gair_settings,
                                                          sample_raster, tiny_bundle, tmp_path):
    from gair_qgis.maptool.dock import SimilarityDock

    source = QgsRasterLayer(str(sample_raster), "s2", "gdal")
    QgsProject.instance().addMapLayer(source)
    canvas = sized_canvas(qgis_iface)
    canvas.setDestinationCrs(source.crs())
    extent = source.extent()
    canvas.setExtent(extent.buffered(-0.2 * extent.width()))  # zoomed in: only part of the raster is in view
    widget = SimilarityDock(qgis_iface)
    try:
        assert source not in widget.listed_layers() and source in widget.listed_layers(widget.source_box)
        assert not widget.embed_button.isEnabled()
        widget.source_box.setLayer(source)
        assert widget.controller.embedding_layer is None and widget.embed_button.isEnabled()
        widget.model.setFilePath(str(tiny_bundle / "config.json"))  # a bundle is picked through its config.json
        messages, percents = [], []
        widget.controller.status.connect(messages.append)
        widget.controller.progress.connect(percents.append)
        widget.embed_button.click()
        wait_for(widget.controller, 120)
        # the engine's size estimate and crop progress reach the dock's status line; the bar shows percent
        assert any("before compression" in m for m in messages), messages
        assert any(re.fullmatch(r"crop \d+/\d+ \(\d+%\), \d+:\d\d elapsed, ~\d+:\d\d left", m) for m in messages)
        assert percents and max(percents) == 100.0 and widget.progress.maximum() == 100
        embedding = widget.controller.embedding_layer
        assert embedding is not None, widget.status.text()
        assert embedding.width() < source.width()  # only the visible extent was embedded
        assert canvas.extent().contains(embedding.extent().center())
        assert widget.layer_box.currentLayer() is embedding and embedding in widget.listed_layers()
        import json

        fingerprint = json.loads((tiny_bundle / "config.json").read_text())["fingerprint"]
        assert raster_tag(embedding.source(), "GAIR_MODEL") == fingerprint
        widget.set_tool_active(True)
        click(widget, canvas, embedding.extent().center())
        wait_for(widget.controller)
        assert widget.controller.similarity_layer is not None and widget.controller.points_layer.featureCount() > 0
        # keeping results also keeps the embedding made here (with its quicklook), under new names
        widget.choose_folder = lambda: str(tmp_path / "kept")
        kept = [os.path.basename(p) for p in widget.keep_results()]
        assert kept == ["gair_embedding.tif", "gair_embedding_similarity.tif", "gair_embedding_top_places.gpkg"]
        assert (tmp_path / "kept" / "gair_embedding.quicklook.png").is_file()
        assert not list((tmp_path / "kept").glob("*.part"))
        assert embedding.source() == str(tmp_path / "kept" / "gair_embedding.tif") and embedding.isValid()
        assert widget.controller.temporary_layers() == []
    finally:
        widget.shutdown()


def test_dock_opens_with_an_instruction_and_lists_only_embedding_rasters(qgis_iface, qgis_new_project,
                                                                        gair_settings, sample_embedding,
                                                                        sample_raster):
    from gair_qgis.maptool.controller import INSTRUCTION
    from gair_qgis.maptool.dock import SimilarityDock

    project = QgsProject.instance()
    embedding = QgsRasterLayer(str(sample_embedding), "embedding", "gdal")
    source = QgsRasterLayer(str(sample_raster), "s2", "gdal")
    project.addMapLayers([embedding, source])
    widget = SimilarityDock(qgis_iface)
    try:
        assert widget.status.text() == INSTRUCTION and "Cleared" not in widget.status.text()
        assert widget.listed_layers() == [embedding] and widget.listed_layers(widget.source_box) == [source]
        assert widget.controller.embedding_layer is None and not widget.keep_button.isEnabled()
        widget.layer_box.setLayer(embedding)
        assert widget.status.text().startswith("Click the map on embedding")
        # a derived raster (the similarity output) carries GAIR tags but is no embedding: in neither list
        canvas = sized_canvas(qgis_iface)
        canvas.setDestinationCrs(embedding.crs())
        canvas.setExtent(embedding.extent())
        centre = embedding.extent().center()
        widget.controller.examples.add(centre, centre, positive=True)
        widget.controller.run_search()
        wait_for(widget.controller)
        similarity = widget.controller.similarity_layer
        assert similarity is not None and project.mapLayer(similarity.id()) is not None
        assert similarity not in widget.listed_layers() and similarity not in widget.listed_layers(widget.source_box)
        assert widget.listed_layers() == [embedding]
    finally:
        widget.shutdown()


def _search(widget, canvas, layer, to_canvas) -> None:
    click(widget, canvas, to_canvas.transform(layer.extent().center()))
    wait_for(widget.controller)
    assert widget.controller.similarity_layer is not None, widget.status.text()


def test_keep_results_beside_the_saved_project_survives_shutdown_and_reopening(dock, tmp_path):
    widget, canvas, layer, to_canvas = dock
    controller, project = widget.controller, QgsProject.instance()
    project_file = tmp_path / "study" / "area.qgz"
    project_file.parent.mkdir()
    assert project.write(str(project_file))
    _search(widget, canvas, layer, to_canvas)
    similarity, points = controller.similarity_layer, controller.points_layer
    before = similarity.dataProvider().sample(controller.references[0], 1)[0]
    count = points.featureCount()
    assert controller.temporary_layers() and all(
        lyr.source().startswith(controller.workdir) for lyr in (similarity, points))

    widget.choose_folder = lambda: pytest.fail("a saved project keeps results beside itself")
    kept = widget.keep_results()
    folder = project_file.parent
    assert kept == [str(folder / "detroit_gair_similarity.tif"), str(folder / "detroit_gair_top_places.gpkg")]
    assert all(os.path.isfile(path) for path in kept)
    assert similarity.source() == kept[0] and points.source().split("|")[0] == kept[1]
    assert similarity.isValid() and points.isValid() and points.featureCount() == count
    assert similarity.renderer().type() == "singlebandpseudocolor"  # the style stays
    assert similarity.dataProvider().sample(controller.references[0], 1)[0] == pytest.approx(before)
    assert not widget.keep_button.isEnabled() and controller.temporary_layers() == []

    _search(widget, canvas, layer, to_canvas)  # a new temporary result; the kept layers stay
    assert project.mapLayer(similarity.id()) is similarity and len(controller.temporary_layers()) == 2
    second = widget.keep_results()
    assert second == [str(folder / "detroit_gair_similarity_2.tif"), str(folder / "detroit_gair_top_places_2.gpkg")]

    _search(widget, canvas, layer, to_canvas)  # this one is not kept
    temporary = {lyr.id() for lyr in controller.temporary_layers()}
    assert len(temporary) == 2
    assert project.write(str(project_file))
    workdir = controller.workdir
    widget.shutdown()
    assert not os.path.exists(workdir)
    assert not temporary & set(project.mapLayers())  # unkept layers left the project with their folder
    assert project.mapLayer(similarity.id()) is similarity  # kept ones stay
    assert project.write(str(project_file))

    embedding_source = layer.source()
    project.clear()
    assert project.read(str(project_file))
    layers = project.mapLayers().values()
    sources = sorted(lyr.source().split("|")[0] for lyr in layers)
    assert all(lyr.isValid() for lyr in layers)  # nothing in the project points at a missing file
    assert sorted(kept + second) == sorted(s for s in sources if s != embedding_source)


def test_keep_results_of_an_unsaved_project_asks_for_a_folder(dock, tmp_path):
    widget, canvas, layer, to_canvas = dock
    _search(widget, canvas, layer, to_canvas)
    asked = []
    widget.choose_folder = lambda: asked.append(True) or ""
    assert widget.keep_results() == [] and asked == [True]  # cancelled: nothing written, still temporary
    assert widget.keep_button.isEnabled() and len(widget.controller.temporary_layers()) == 2
    widget.choose_folder = lambda: str(tmp_path / "kept")
    kept = widget.keep_results()
    assert [os.path.basename(p) for p in kept] == ["detroit_gair_similarity.tif", "detroit_gair_top_places.gpkg"]
    assert all(os.path.dirname(p) == str(tmp_path / "kept") for p in kept)
    written = sorted(os.listdir(tmp_path / "kept"))
    assert [name for name in written if not name.endswith(".aux.xml")] == sorted(os.path.basename(p) for p in kept)


def test_saved_project_leaves_out_unkept_temporary_layers(dock, tmp_path):
    widget, canvas, layer, to_canvas = dock
    project = QgsProject.instance()
    _search(widget, canvas, layer, to_canvas)
    temporary = widget.controller.temporary_layers()
    assert len(temporary) == 2
    project_file = tmp_path / "area.qgs"
    assert project.write(str(project_file))
    text = project_file.read_text()
    leftovers = [line.strip() for line in text.splitlines() if widget.controller.workdir in line]
    assert leftovers == [] and "gair_maptool_" not in text and "detroit_gair.tif" in text  # nothing temporary
    assert "without 2 temporary GAIR layer(s)" in widget.status.text()
    assert all(project.mapLayer(lyr.id()) is lyr for lyr in temporary)  # still on the map for this session
    embedding_id = layer.id()
    project.clear()
    assert project.read(str(project_file))
    assert list(project.mapLayers()) == [embedding_id] and project.mapLayer(embedding_id).isValid()
    tree_ids = [node.layerId() for node in project.layerTreeRoot().findLayers()]
    assert tree_ids == [embedding_id]  # no dangling layer-tree entries either


def test_closing_the_project_with_results_on_the_map(dock):
    """A new project while the dock shows results: QGIS removes the layers, the tool forgets them (it used to
    remove them a second time from inside the removal, which crashed QGIS)."""
    widget, canvas, layer, to_canvas = dock
    _search(widget, canvas, layer, to_canvas)
    QgsProject.instance().clear()
    controller = widget.controller
    assert controller.embedding_layer is None and controller.similarity_layer is None
    assert controller.references == [] and not widget.keep_button.isEnabled()
    assert widget.listed_layers() == []
