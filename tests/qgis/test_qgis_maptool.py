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


# --- few-shot: positive and negative examples on a planted raster (known look-alikes and ground classes) ---------
@pytest.fixture
def planted_dock(qgis_iface, qgis_new_project, gair_settings, tmp_path):
    from engine.analysis.synthetic import make_planted_raster
    from gair_qgis.maptool.dock import SimilarityDock

    planted = make_planted_raster(tmp_path / "planted.tif", dims=24, n_targets=5, seed=3, dtype="int8")
    layer = QgsRasterLayer(str(planted.path), "planted", "gdal")
    QgsProject.instance().addMapLayer(layer)
    canvas = sized_canvas(qgis_iface)
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(layer.extent())
    canvas.refresh()
    widget = SimilarityDock(qgis_iface)
    widget.layer_box.setLayer(layer)
    widget.set_tool_active(True)
    yield widget, canvas, layer, planted
    widget.shutdown()


def _at(planted, row: int, col: int) -> QgsPointXY:
    from engine.analysis.synthetic import pixel_xy

    x, y = pixel_xy(planted, row, col)
    return QgsPointXY(float(x), float(y))


def _ground(planted, count: int) -> list[tuple[int, int]]:
    """Class-0 pixels deep inside their region (5 x 5 all class 0), away from the look-alike patches."""
    import numpy as np

    c = planted.classes
    inner = np.zeros_like(c, bool)
    inner[2:-2, 2:-2] = np.all([np.roll(np.roll(c, dr, 0), dc, 1)[2:-2, 2:-2] == 0
                                for dr in range(-2, 3) for dc in range(-2, 3)], axis=0)
    for row, col in planted.targets:
        inner[max(row - 6, 0):row + 7, max(col - 6, 0):col + 7] = False
    rows, cols = np.nonzero(inner)
    pick = np.random.default_rng(7).choice(len(rows), count, replace=False)
    return [(int(rows[i]), int(cols[i])) for i in pick]


def _places(controller) -> list[tuple[int, int]]:
    return [(f["row"], f["col"]) for f in sorted(controller.points_layer.getFeatures(), key=lambda f: f["rank"])]


def _on_targets(planted, places) -> list[bool]:
    import numpy as np

    return [bool(np.abs(planted.targets[1:] - place).max(axis=1).min() <= 1) for place in places]


def test_negative_clicks_turn_the_search_and_undo_clear(planted_dock):
    """A look-alike patch and class-0 ground as positives find more ground; a Ctrl-click and a right click on other
    ground (negatives) push the ground below zero and the top places onto the other look-alikes. Undo goes back
    click by click, to no result at all; clear forgets everything."""
    widget, canvas, layer, planted = planted_dock
    controller = widget.controller
    widget.top_k.setValue(4)
    ground = _ground(planted, 3)
    click(widget, canvas, _at(planted, *planted.targets[0]))
    wait_for(controller)
    click(widget, canvas, _at(planted, *ground[0]))
    wait_for(controller)
    assert widget.undo_button.isEnabled() and widget.save_examples_button.isEnabled()
    assert _on_targets(planted, _places(controller)) == [False] * 4
    probe = _at(planted, *ground[2])  # ground nobody clicked
    positives_only = controller.similarity_layer.dataProvider().sample(probe, 1)[0]
    assert positives_only > 0.5

    click(widget, canvas, _at(planted, *ground[1]), ctrl=True)
    wait_for(controller)
    assert (len(controller.references), len(controller.negatives)) == (2, 1)
    assert _on_targets(planted, _places(controller)) == [True] * 4
    with_negative = controller.similarity_layer.dataProvider().sample(probe, 1)[0]
    assert with_negative < 0 and "2 positive, 1 negative" in widget.status.text()
    click(widget, canvas, _at(planted, *ground[2]), right=True)  # a right click is a negative too
    wait_for(controller)
    assert (len(controller.references), len(controller.negatives)) == (2, 2)
    assert controller.similarity_layer.dataProvider().sample(probe, 1)[0] < with_negative

    widget.undo_button.click()
    wait_for(controller)
    widget.undo_button.click()
    wait_for(controller)
    assert (len(controller.references), len(controller.negatives)) == (2, 0)
    assert controller.similarity_layer.dataProvider().sample(probe, 1)[0] == pytest.approx(positives_only, abs=1e-6)
    widget.undo_button.click()
    widget.undo_button.click()
    wait_for(controller)
    assert controller.references == [] and controller.similarity_layer is None and not widget.undo_button.isEnabled()
    assert QgsProject.instance().layerTreeRoot().findGroup("GAIR").findLayers() == []

    click(widget, canvas, _at(planted, *ground[1]), ctrl=True)  # a negative alone: nothing to search for yet
    assert not controller.busy and "positive example first" in widget.status.text()
    click(widget, canvas, _at(planted, *planted.targets[0]))
    wait_for(controller)
    assert controller.similarity_layer is not None
    controller.clear()
    assert controller.examples.items == [] and controller.similarity_layer is None
    assert not widget.save_examples_button.isEnabled()


def test_saved_examples_train_a_classifier(planted_dock, tmp_path):
    """Save examples writes the clicks with their labels; Train classifier (in the engine worker) takes the layer
    with its class field and maps the unclicked look-alikes to the positives' class."""
    import rasterio

    from engine.analysis.rasters import read_class_names
    from gair_qgis.engine_jobs import run_job

    widget, canvas, layer, planted = planted_dock
    for row, col in planted.targets[:3]:
        click(widget, canvas, _at(planted, row, col))
        wait_for(widget.controller)
    for row, col in _ground(planted, 3):
        click(widget, canvas, _at(planted, row, col), ctrl=True)
        wait_for(widget.controller)
    widget.class_name.setText("lookalike")
    path = str(tmp_path / "examples.gpkg")
    widget.choose_examples_path = lambda: path
    saved = widget.save_examples()
    assert saved is not None and saved.isValid() and QgsProject.instance().mapLayer(saved.id()) is saved
    rows = sorted((f["label"], f["class"]) for f in saved.getFeatures())
    assert rows == [("negative", "other")] * 3 + [("positive", "lookalike")] * 3
    assert saved.crs() == layer.crs() and not list(tmp_path.glob("*.part*"))

    result = run_job("train_classifier", {"raster_path": str(planted.path), "labels_path": path,
                                          "class_field": "class", "model_path": str(tmp_path / "model.skops"),
                                          "folds": 3, "output_path": str(tmp_path / "classes.tif")})
    assert result["features"] == 6
    names = read_class_names(tmp_path / "classes.tif")
    assert sorted(names) == ["lookalike", "other"]
    with rasterio.open(tmp_path / "classes.tif") as ds:
        classes = ds.read(1)
    for row, col in planted.targets[3:]:  # never clicked
        assert names[classes[row, col] - 1] == "lookalike"
    assert names[classes[_ground(planted, 4)[3]] - 1] == "other"


def test_large_raster_coarse_heatmap_first_then_the_view_in_detail(planted_dock, tmp_path):
    """Above full_pixels the first heatmap is a coarse one of the whole raster (every f-th pixel), then the view
    in detail; zooming in refines the new view at full resolution, with the engine's own scores."""
    import numpy as np
    import rasterio

    from engine.analysis.fewshot import fewshot_search

    widget, canvas, layer, planted = planted_dock
    controller = widget.controller
    controller.full_pixels, controller.coarse_pixels = 3000, 800  # the planted raster has 12288
    controller.view_pixels = 3000  # as a canvas of 3000 pixels would
    stages = []
    controller.heatmap_ready.connect(lambda stage: stages.append((stage, controller.similarity_layer.width(),
                                                                  controller.detail_layer is not None)))
    target = planted.targets[1]
    click(widget, canvas, _at(planted, *planted.targets[0]))
    wait_for(controller)
    assert stages == [("coarse", 32, False), ("detail", 32, True)]  # 128 x 96 px every 4th: 32 x 24
    coarse = controller.similarity_layer
    assert (coarse.width(), coarse.height()) == (32, 24) and coarse.extent() == layer.extent()
    detail = controller.detail_layer
    assert controller.detail_extent[1] == 3 and detail.width() < layer.width()  # the whole view: > 3000 px
    group = QgsProject.instance().layerTreeRoot().findGroup("GAIR")
    assert [node.layerId() for node in group.findLayers()] == [controller.points_layer.id(), detail.id(), coarse.id()]

    pixel = layer.rasterUnitsPerPixelX()
    centre = _at(planted, *target)
    from qgis.core import QgsRectangle

    canvas.setExtent(QgsRectangle(centre.x() - 20 * pixel, centre.y() - 15 * pixel, centre.x() + 20 * pixel,
                                  centre.y() + 15 * pixel))  # zoomed in: ~40 x 30 px in view
    deadline = time.monotonic() + 10
    while len(stages) < 3 and time.monotonic() < deadline:
        QCoreApplication.processEvents()
        time.sleep(0.02)
        wait_for(controller)
    assert [s[0] for s in stages] == ["coarse", "detail", "detail"]
    in_view = canvas.extent().intersect(layer.extent())  # the view reaches past the raster's top edge
    assert controller.detail_extent[1] == 1 and controller.detail_layer.extent().contains(in_view)
    assert controller.similarity_layer is coarse  # the coarse map stays below for panning
    full = fewshot_search(planted.path, tmp_path / "full.tif", positives=[(p.x(), p.y()) for p in
                                                                          controller.references], top_k=0)
    with rasterio.open(full.path) as ds:
        expected = ds.read(1)[target[0], target[1]]
    value, ok = controller.detail_layer.dataProvider().sample(centre, 1)
    assert ok and value == pytest.approx(float(expected), abs=1e-6) and np.isfinite(expected)

    canvas.setExtent(canvas.extent())  # the same view again: already in full detail, nothing runs
    QCoreApplication.processEvents()
    time.sleep(0.4)
    QCoreApplication.processEvents()
    assert not controller.busy and len(stages) == 3


def test_official_model_download_is_asked_on_the_gui_thread_before_the_task(
        qgis_iface, qgis_new_project, gair_settings, sample_raster, monkeypatch):
    """Embedding with the official checkpoint (no model set) and no copy of it: the question comes on the GUI
    thread before any task starts; No -> nothing runs; Yes -> the task runs with the consent given."""
    import threading

    from qgis.PyQt.QtCore import QThread
    from qgis.PyQt.QtWidgets import QApplication

    from gair_qgis import engine_calls, settings
    from gair_qgis.maptool import jobs
    from gair_qgis.maptool.dock import SimilarityDock

    settings.GAIRSettings("", "torch", "cpu").save()  # no model: the official checkpoint
    monkeypatch.delenv("GAIR_CHECKPOINT", raising=False)
    monkeypatch.setattr(settings, "download_allowed_setting", lambda: False)
    gui = QApplication.instance().thread()
    jobs_run, asked, embedded = [], [], []
    monkeypatch.setattr(jobs, "run_job", lambda op, values: jobs_run.append(op) or {"cached": False,
                                                                                       "describe": "1.2 GB"})
    monkeypatch.setattr(settings, "_can_ask", lambda: QThread.currentThread() == gui)
    answer = [False]
    monkeypatch.setattr(settings, "ask_download", lambda describe: asked.append(
        (describe, QThread.currentThread() == gui)) or answer[0])

    def fake_embed(*args, **kwargs):
        embedded.append((threading.current_thread() is threading.main_thread(), settings.download_allowed()))
        raise RuntimeError("stopped here by the test")

    monkeypatch.setattr(engine_calls, "run_embed_raster", fake_embed)
    source = QgsRasterLayer(str(sample_raster), "s2", "gdal")
    QgsProject.instance().addMapLayer(source)
    canvas = sized_canvas(qgis_iface)
    canvas.setDestinationCrs(source.crs())
    canvas.setExtent(source.extent())
    widget = SimilarityDock(qgis_iface)
    try:
        widget.source_box.setLayer(source)
        widget.embed_button.click()
        assert asked == [("1.2 GB", True)] and jobs_run == ["official_checkpoint"]
        assert not widget.controller.busy and embedded == []  # declined: no task
        assert "official checkpoint (1.2 GB) is not downloaded" in widget.status.text()

        answer[0] = True
        widget.embed_button.click()
        assert asked[-1] == ("1.2 GB", True) and "fetch_official_checkpoint" not in jobs_run  # not on this thread
        assert widget.controller.busy
        wait_for(widget.controller)
        assert embedded == [(False, True)]  # in the task, with the consent given
        assert "stopped here by the test" in widget.status.text()
    finally:
        settings._download_consent.clear()
        gair_settings.save()  # a session fixture: the next tests use the tiny bundle again
        widget.shutdown()


def test_search_by_photo_and_by_location_buttons(dock, tiny_bundle, examples, tmp_path):
    """The photo button (file dialog -> job -> heatmap + top places) and the location button (then a click) give the
    engine operations' own results, with the model of the settings (the raster's)."""
    import numpy as np
    import rasterio

    from gair_qgis.engine_jobs import run_job

    widget, canvas, layer, to_canvas = dock
    controller = widget.controller
    assert widget.photo_button.isVisibleTo(widget) and widget.location_button.isVisibleTo(widget)
    click(widget, canvas, to_canvas.transform(layer.extent().center()))  # an example first: the photo replaces it
    wait_for(controller)
    photo = next(r for r in examples if r["id"] == "detroit")["sv_path"]
    widget.choose_photo = lambda: str(photo)
    widget.photo_button.click()
    assert controller.busy, widget.status.text()
    wait_for(controller, 120)
    assert controller.similarity_layer is not None and controller.points_layer is not None, widget.status.text()
    assert controller.examples.items == [] and "detroit_sv.jpg" in widget.status.text()
    expected = run_job("search_by_photo", {"raster_path": layer.source(), "out_path": str(tmp_path / "photo.tif"),
                                           "photos": [str(photo)], "top_k": 0, "model": str(tiny_bundle),
                                           "device": "cpu"})
    with rasterio.open(expected["path"]) as want, rasterio.open(controller.similarity_layer.source()) as got:
        np.testing.assert_array_equal(got.read(1), want.read(1))

    widget.location_button.click()
    assert controller.location_mode
    centre = layer.extent().center()
    click(widget, canvas, to_canvas.transform(centre))
    assert not controller.location_mode and controller.examples.items == []  # a location, not an example
    wait_for(controller, 120)
    assert not widget.location_button.isChecked() and "location embedding" in widget.status.text()
    op, query = controller.last_query
    (x, y), = query["locations"]
    assert op == "search_by_location" and (x, y) == pytest.approx((centre.x(), centre.y()),
                                                                   abs=2 * layer.rasterUnitsPerPixelX())
    expected = run_job("search_by_location", {"raster_path": layer.source(), "out_path": str(tmp_path / "loc.tif"),
                                              "locations": [[x, y]], "locations_crs": "EPSG:4326", "top_k": 0,
                                              "model": str(tiny_bundle), "device": "cpu"})
    with rasterio.open(expected["path"]) as want, rasterio.open(controller.similarity_layer.source()) as got:
        np.testing.assert_allclose(got.read(1), want.read(1), atol=1e-5)
