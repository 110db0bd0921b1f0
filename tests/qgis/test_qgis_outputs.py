"""What a GIS analyst sees of the results: only embedding rasters are taken as embeddings, result layers are named
after their input and operation (unique when run twice), what loads is what one wants to look at (the quicklook
hidden, the embedding hidden under a similarity ramp), Sentinel-2 inputs in true colour, and the training report
lines up in the algorithm dialog's log without a false "HTML output" line after a failure."""
from __future__ import annotations

import random
import shutil

import numpy as np
import processing
import pytest
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsGeometry,
    QgsLayerTreeRegistryBridge,
    QgsMapLayer,
    QgsMultiBandColorRenderer,
    QgsPointXY,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputHtml,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

from gair_qgis.layers import embedding_raster_problem, is_embedding_raster
from gair_qgis.toolbox.base import require_embedding_raster

UTM17N = QgsCoordinateReferenceSystem("EPSG:32617")


def tagged_copy(source, target, kind: str) -> QgsRasterLayer:
    """A copy of the embedding raster `source` whose GAIR_KIND tag is `kind` ("" = no kind, as in older files)."""
    import rasterio

    shutil.copy(source, target)
    with rasterio.open(target, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as dataset:  # embedding rasters are COGs
        dataset.update_tags(GAIR_KIND=kind)
    layer = QgsRasterLayer(str(target), target.stem, "gdal")
    assert layer.isValid()
    return layer


def layer_names(project: QgsProject) -> list[str]:
    return sorted(layer.name() for layer in project.mapLayers().values())


def tree_node(project: QgsProject, layer):
    return project.layerTreeRoot().findLayer(layer.id())


def layers_by_source(project: QgsProject) -> dict:
    return {layer.source().split("|")[0]: layer for layer in project.mapLayers().values()}


# --- 2. only embedding rasters are embeddings -------------------------------------------------------------------
def test_only_rasters_tagged_as_embeddings_are_accepted(gair_provider, sample_embedding, sample_raster, tmp_path):
    embedding = QgsRasterLayer(str(sample_embedding), "detroit_gair", "gdal")
    assert is_embedding_raster(embedding) and require_embedding_raster(embedding) is None
    similarity = tagged_copy(sample_embedding, tmp_path / "sim.tif", "similarity")
    classes = tagged_copy(sample_embedding, tmp_path / "cls.tif", "classes")
    untagged = tagged_copy(sample_embedding, tmp_path / "old.tif", "")  # GAIR_SPACE but no kind: not trusted
    plain = QgsRasterLayer(str(sample_raster), "detroit_rs", "gdal")
    for layer in (similarity, classes, untagged, plain, None):
        assert not is_embedding_raster(layer)
    assert embedding_raster_problem(similarity) == (
        "'sim' is a GAIR similarity raster, not an embedding raster; pick the raster written by Embed raster.")
    assert "is a GAIR class raster, not an embedding raster" in embedding_raster_problem(classes)
    assert embedding_raster_problem(plain) == (
        "'detroit_rs' is not a GAIR embedding raster; create one with Embed raster first.")
    # every analysis refuses the derived raster before running, with that sentence
    centre = embedding.extent().center()
    for algorithm, extra in (("similarity_search", {"POINT": f"{centre.x()},{centre.y()} [EPSG:4326]",
                                                    "TOP_K_OUTPUT": "TEMPORARY_OUTPUT"}),
                             ("cluster_embeddings", {})):
        with pytest.raises(QgsProcessingException, match="'sim' is a GAIR similarity raster, not an embedding"):
            processing.run(f"gair:{algorithm}", {"INPUT": similarity, **extra, "OUTPUT": str(tmp_path / "o.tif")})


def test_a_similarity_result_is_not_taken_for_an_embedding(gair_provider, sample_embedding, tmp_path):
    centre = QgsRasterLayer(str(sample_embedding), "e", "gdal").extent().center()
    result = processing.run("gair:similarity_search", {
        "INPUT": str(sample_embedding), "POINT": f"{centre.x()},{centre.y()} [EPSG:4326]", "TOP_K": 0,
        "OUTPUT": str(tmp_path / "similarity.tif"), "TOP_K_OUTPUT": "TEMPORARY_OUTPUT"})
    derived = QgsRasterLayer(result["OUTPUT"], "similarity", "gdal")
    assert not is_embedding_raster(derived)
    with pytest.raises(QgsProcessingException, match="'similarity' is .*not an? (GAIR )?embedding raster"):
        processing.run("gair:cluster_embeddings", {"INPUT": derived, "OUTPUT": str(tmp_path / "c.tif")})


# --- 3. names, uniqueness and what is visible -------------------------------------------------------------------
def test_similarity_results_are_named_unique_and_hide_the_embedding(gair_provider, qgis_new_project,
                                                                     sample_embedding, tmp_path):
    project = QgsProject.instance()
    embedding = QgsRasterLayer(str(sample_embedding), "detroit_gair", "gdal")
    project.addMapLayer(embedding)
    assert tree_node(project, embedding).isVisible()
    centre = embedding.extent().center()
    parameters = {"INPUT": embedding, "POINT": f"{centre.x()},{centre.y()} [EPSG:4326]", "TOP_K": 3,
                  "OUTPUT": "TEMPORARY_OUTPUT", "TOP_K_OUTPUT": "TEMPORARY_OUTPUT"}
    first = processing.runAndLoadResults("gair:similarity_search", parameters)
    # as in the desktop when a layer of the GAIR group is selected: QGIS adds new layers at the top of that group
    group = project.layerTreeRoot().findGroup("GAIR")
    bridge = project.layerTreeRegistryBridge()
    bridge.setLayerInsertionPoint(QgsLayerTreeRegistryBridge.InsertionPoint(group, 0))
    try:
        second = processing.runAndLoadResults("gair:similarity_search", parameters)
    finally:
        bridge.setLayerInsertionPoint(QgsLayerTreeRegistryBridge.InsertionPoint(project.layerTreeRoot(), 0))
    assert layer_names(project) == ["detroit_gair", "detroit_gair similarity", "detroit_gair similarity (2)",
                                    "detroit_gair top places", "detroit_gair top places (2)"]
    loaded = layers_by_source(project)
    assert loaded[first["OUTPUT"]].name() == "detroit_gair similarity"
    assert loaded[second["TOP_K_OUTPUT"]].name() == "detroit_gair top places (2)"
    # the similarity ramp is partly transparent: the embedding below it is switched off, the results are on
    assert not tree_node(project, embedding).isVisible()
    for path in (first["OUTPUT"], first["TOP_K_OUTPUT"], second["OUTPUT"], second["TOP_K_OUTPUT"]):
        assert tree_node(project, loaded[path]).isVisible(), path
    # ranked points stay above the rasters in the GAIR group, whatever order Processing loads them in
    kinds = [type(node.layer()).__name__ for node in group.findLayers()]
    assert kinds == ["QgsVectorLayer", "QgsVectorLayer", "QgsRasterLayer", "QgsRasterLayer"]


def test_a_file_named_by_the_user_keeps_its_name(gair_provider, qgis_new_project, sample_embedding, tmp_path):
    result = processing.runAndLoadResults("gair:cluster_embeddings", {
        "INPUT": str(sample_embedding), "K": 2, "OUTPUT": str(tmp_path / "my_clusters.tif"),
        "POLYGONS": "TEMPORARY_OUTPUT"})
    loaded = layers_by_source(QgsProject.instance())
    assert loaded[result["OUTPUT"]].name() == "my_clusters"
    assert loaded[result["POLYGONS"]].name() == "detroit_gair cluster polygons (k=2)"


def test_embed_raster_loads_the_embedding_hides_the_quicklook_and_styles_the_input(gair_provider, qgis_new_project,
                                                                                   sample_raster, tmp_path):
    project = QgsProject.instance()
    source = QgsRasterLayer(str(sample_raster), "detroit_rs", "gdal")
    project.addMapLayer(source)
    renderer = source.renderer()
    assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (1, 2, 3)  # QGIS's B1/B2/B3 default
    result = processing.runAndLoadResults("gair:embed_raster", {"INPUT": source, "DIMS": 3,
                                                                "OUTPUT": "TEMPORARY_OUTPUT"})
    loaded = layers_by_source(project)
    embedding, quicklook = loaded[result["OUTPUT"]], loaded[result["QUICKLOOK"]]
    assert (embedding.name(), quicklook.name()) == ("detroit_rs embedding", "detroit_rs embedding quicklook")
    assert tree_node(project, embedding).isVisible() and not tree_node(project, quicklook).isVisible()
    assert isinstance(source.renderer(), QgsMultiBandColorRenderer)
    renderer = source.renderer()
    assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (4, 3, 2)  # B4/B3/B2 of L2A


def test_embed_raster_keeps_a_style_the_user_chose(gair_provider, qgis_new_project, sample_raster, tmp_path):
    from qgis.core import QgsSingleBandGrayRenderer

    project = QgsProject.instance()
    source = QgsRasterLayer(str(sample_raster), "detroit_rs", "gdal")
    source.setRenderer(QgsSingleBandGrayRenderer(source.dataProvider(), 8))
    project.addMapLayer(source)
    processing.runAndLoadResults("gair:embed_raster", {"INPUT": source, "DIMS": 2,
                                                       "OUTPUT": str(tmp_path / "e.tif")})
    assert isinstance(source.renderer(), QgsSingleBandGrayRenderer) and source.renderer().grayBand() == 8


# --- 5. true colour ---------------------------------------------------------------------------------------------
def write_bands(path, descriptions) -> QgsRasterLayer:
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", width=8, height=6, count=len(descriptions), dtype="uint16",
                       crs="EPSG:32617", transform=from_origin(500000, 4700000, 10, 10)) as dataset:
        dataset.write(rng.integers(0, 5000, (len(descriptions), 6, 8), dtype=np.uint16))
        for i, name in enumerate(descriptions, start=1):
            if name:
                dataset.set_band_description(i, name)
    layer = QgsRasterLayer(str(path), path.stem, "gdal")
    assert layer.isValid()
    return layer


@pytest.mark.parametrize(("descriptions", "rgb"), [
    (["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"], (4, 3, 2)),  # L2A, 12 bands
    ([None] * 10, (3, 2, 1)),  # 10 bands without names: the model's B2..B12 layout
    (["B8", "B4", "B3", "B2", "B11", "B12", "B5", "B6", "B7", "B8A"], (2, 3, 4)),  # by name, any order
], ids=["l2a-12", "unnamed-10", "named-10"])
def test_true_colour_action_styles_the_active_sentinel2_raster(qgis_iface, qgis_new_project, tmp_path, descriptions,
                                                               rgb):
    import gair_qgis

    layer = write_bands(tmp_path / "s2.tif", descriptions)
    QgsProject.instance().addMapLayer(layer)
    plugin = gair_qgis.classFactory(qgis_iface)
    plugin.initGui()
    try:
        qgis_iface.setActiveLayer(layer)
        (action,) = [a for a in plugin.actions if a.text() == "Style as Sentinel-2 true colour"]
        action.trigger()
        renderer = layer.renderer()
        assert isinstance(renderer, QgsMultiBandColorRenderer)
        assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == rgb
        low, high = layer.dataProvider().cumulativeCut(rgb[0], 0.02, 0.98)
        assert renderer.redContrastEnhancement().minimumValue() == pytest.approx(low)
        assert renderer.redContrastEnhancement().maximumValue() == pytest.approx(high)
    finally:
        plugin.unload()


def test_true_colour_action_explains_a_raster_that_is_not_sentinel2(qgis_iface, qgis_new_project, sample_embedding,
                                                                    tmp_path):
    from qgis.core import Qgis

    import gair_qgis

    not_s2 = write_bands(tmp_path / "rgb.tif", ["red", "green", "nir"])
    embedding = QgsRasterLayer(str(sample_embedding), "emb", "gdal")  # embedding dims are not reflectances
    QgsProject.instance().addMapLayers([not_s2, embedding])
    plugin = gair_qgis.classFactory(qgis_iface)
    plugin.initGui()
    try:
        for layer in (not_s2, embedding):
            before = layer.renderer().type(), layer.renderer().usesBands()
            qgis_iface.messageBar().clear_messages()
            qgis_iface.setActiveLayer(layer)
            assert plugin.style_active_as_true_colour() is False
            assert (layer.renderer().type(), layer.renderer().usesBands()) == before
            (message,) = qgis_iface.messageBar().get_messages(Qgis.Warning)
            assert f"'{layer.name()}' is not a Sentinel-2 raster" in message
    finally:
        plugin.unload()


# --- 4. the training report in the algorithm dialog -------------------------------------------------------------
@pytest.fixture
def two_class_labels(sample_embedding):
    extent = QgsRasterLayer(str(sample_embedding), "e", "gdal").extent()
    layer = QgsVectorLayer("Point?crs=EPSG:4326&field=cls:string", "labels", "memory")
    rng = random.Random(0)
    features = []
    for _ in range(24):
        x = extent.xMinimum() + (0.1 + 0.8 * rng.random()) * extent.width()
        y = extent.yMinimum() + (0.1 + 0.8 * rng.random()) * extent.height()
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(x, y)))
        feature.setAttributes(["east" if x > extent.center().x() else "west"])
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    return layer


def run_in_dialog(qgis_iface, algorithm_id: str, parameters: dict, timeout_s: float = 300.0):
    """Run an algorithm from its real Processing dialog (a background task, as a user's Run click does) and return
    the dialog once it has finished."""
    import time

    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from qgis.core import QgsApplication
    from qgis.gui import QgsBrowserGuiModel
    from qgis.PyQt.QtCore import QCoreApplication

    if not isinstance(qgis_iface.browserModel(), QgsBrowserGuiModel):  # pytest-qgis's iface has none
        model = QgsBrowserGuiModel()
        qgis_iface.browserModel = lambda: model
    # the dialog's widgets pick layers from the project, as a user does
    QgsProject.instance().addMapLayers([v for v in parameters.values() if isinstance(v, QgsMapLayer)])
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
    dialog = AlgorithmDialog(algorithm, parent=qgis_iface.mainWindow())
    dialog.mainWidget().setParameters(parameters)
    finished = []
    dialog.algorithmFinished.connect(lambda ok, results: finished.append(ok))
    dialog.runAlgorithm()
    deadline = time.monotonic() + timeout_s
    while not finished:  # the task runs in a worker thread; its completion is delivered by the event loop
        assert time.monotonic() < deadline, "the algorithm did not finish: " + log_text(dialog).toPlainText() + \
            " | ".join(item.text() for item in dialog.messageBar().items())
        QCoreApplication.processEvents()
        time.sleep(0.01)
    return dialog


def log_text(dialog):
    from qgis.PyQt.QtWidgets import QTextEdit

    return dialog.findChild(QTextEdit, "txtLog")


def column_ends(line: str, metrics) -> list[float]:
    """Pixel x where each run of digits ends (the right edge of each right-aligned number column)."""
    ends = [i + 1 for i, char in enumerate(line) if char.isdigit() and (i + 1 == len(line) or
                                                                      not line[i + 1].isdigit() and line[i + 1] != ".")]
    return [metrics.horizontalAdvance(line[:end]) for end in ends]


def test_the_classifier_report_lines_up_in_the_dialog_log(gair_provider, qgis_iface, qgis_new_project, sample_embedding,
                                                          two_class_labels, tmp_path):
    from qgis.PyQt.QtGui import QFontMetricsF, QTextCursor

    dialog = run_in_dialog(qgis_iface, "gair:train_classifier", {
        "INPUT": QgsRasterLayer(str(sample_embedding), "e", "gdal"), "LABELS": two_class_labels, "FIELD": "cls",
        "FOLDS": 3, "MODEL_OUTPUT": str(tmp_path / "m.skops"), "REPORT": str(tmp_path / "report.html"),
        "OUTPUT": str(tmp_path / "classes.tif")})
    log = log_text(dialog)
    text = log.toPlainText()
    assert (tmp_path / "report.html").is_file() and "Execution completed" in text
    assert "HTML output has been generated" not in text  # the report is a file output, not an HTML output
    # The log joins a message's lines with U+2028 and draws them in the UI's proportional font: the number columns
    # of the per-class table and of the confusion matrix must end at the same pixel on every row, in that font.
    (block,) = [b for b in _blocks(log.document()) if "Confusion matrix" in b.text()]
    lines = block.text().split("\u2028")
    cursor = QTextCursor(block)
    cursor.movePosition(QTextCursor.EndOfBlock)
    metrics = QFontMetricsF(cursor.charFormat().font())
    per_class = lines[lines.index("Per class: precision, recall, F1, support, class.") + 1:][:2]
    matrix_start = next(i for i, line in enumerate(lines) if line.startswith("Confusion matrix"))
    matrix = lines[matrix_start + 1:matrix_start + 4]
    assert [line.split()[-1] for line in per_class] == ["east", "west"]
    assert [line.split()[-1] for line in matrix[1:]] == ["east", "west"]
    for table, columns in ((per_class, 5), (matrix, 2)):
        edges = [column_ends(line, metrics) for line in table]
        assert all(len(row) >= columns for row in edges), table
        for row in edges[1:]:
            assert row[:columns] == pytest.approx(edges[0][:columns], abs=0.01), table
    dialog.close()


def _blocks(document):
    block = document.begin()
    while block.isValid():
        yield block
        block = block.next()


def test_a_failed_training_does_not_announce_html_output(gair_provider, qgis_iface, qgis_new_project, sample_embedding,
                                                        tmp_path):
    algorithm = gair_provider.algorithm("train_classifier")
    report = algorithm.outputDefinition("REPORT")
    assert isinstance(report, QgsProcessingOutputFile) and not isinstance(report, QgsProcessingOutputHtml)
    assert not algorithm.hasHtmlOutputs()
    far_away = QgsVectorLayer("Point?crs=EPSG:4326&field=cls:string", "labels", "memory")  # no pixel under any
    features = []
    for i, name in enumerate(("a", "b", "a", "b")):
        feature = QgsFeature(far_away.fields())
        feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(10.0 + i, 10.0)))
        feature.setAttributes([name])
        features.append(feature)
    far_away.dataProvider().addFeatures(features)
    dialog = run_in_dialog(qgis_iface, "gair:train_classifier", {
        "INPUT": QgsRasterLayer(str(sample_embedding), "e", "gdal"), "LABELS": far_away, "FIELD": "cls",
        "FOLDS": 2, "MODEL_OUTPUT": str(tmp_path / "m.skops"), "REPORT": str(tmp_path / "report.html"),
        "OUTPUT": str(tmp_path / "classes.tif")})
    text = log_text(dialog).toPlainText()
    assert "Execution failed" in text
    assert "HTML output has been generated" not in text
    assert not list(tmp_path.iterdir())
    dialog.close()
