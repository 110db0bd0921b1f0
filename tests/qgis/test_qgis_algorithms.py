"""Every GAIR algorithm through processing.run on the real samples: outputs exist, are georeferenced in the
right CRS, are styled and hold sane values; memory layers in other CRSs work; cancel leaves nothing; bad inputs
give the algorithm's own message."""
from __future__ import annotations

import os
import random

import numpy as np
import processing
import pytest
from osgeo import gdal
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsPalettedRasterRenderer,
    QgsPointXY,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsSingleBandPseudoColorRenderer,
    QgsVectorFileWriter,
    QgsVectorLayer,
)

UTM17N = QgsCoordinateReferenceSystem("EPSG:32617")  # Detroit's UTM zone; the sample raster is EPSG:4326
EXPECTED = {
    "embeddings": {"embed_raster", "embed_rasters", "embed_features", "embed_photos", "embed_locations"},
    "analysis": {"cluster_embeddings", "similarity_search", "train_classifier", "apply_model",
                 "train_regressor", "classify_location", "search_by_photo", "search_by_location", "change"},
    "model": {"convert_checkpoint", "export_onnx"},
}


def read(path) -> np.ndarray:
    """All bands (rasterio: the system GDAL's numpy bridge is built for another numpy)."""
    import rasterio

    with rasterio.open(path) as dataset:
        return dataset.read()


def layer_of(path) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), "out", "gdal")
    assert layer.isValid(), path
    return layer


def memory_points(crs: QgsCoordinateReferenceSystem, extent_4326, count: int, fields: str, values,
                  seed: int = 0) -> QgsVectorLayer:
    """A memory layer of `count` points inside `extent_4326`, stored in `crs`; values(x, y) -> attribute list."""
    layer = QgsVectorLayer(f"Point?crs={crs.authid()}&{fields}", "points", "memory")
    to_crs = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:4326"), crs, QgsProject.instance())
    rng = random.Random(seed)
    features = []
    for _ in range(count):
        x = extent_4326.xMinimum() + (0.1 + 0.8 * rng.random()) * extent_4326.width()
        y = extent_4326.yMinimum() + (0.1 + 0.8 * rng.random()) * extent_4326.height()
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromPointXY(to_crs.transform(QgsPointXY(x, y))))
        feature.setAttributes(values(x, y))
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    return layer


@pytest.fixture(scope="module")
def embedding_extent(sample_embedding):
    return layer_of(sample_embedding).extent()


@pytest.fixture
def labels(embedding_extent):
    """30 points in UTM (not the raster's CRS) in a memory layer: class by side of the scene, value = x."""
    centre = embedding_extent.center().x()
    return memory_points(UTM17N, embedding_extent, 30, "field=cls:string&field=value:double",
                         lambda x, y: ["east" if x > centre else "west", (x - centre) * 1e4])


@pytest.fixture
def learnable_labels(sample_embedding):
    """60 points in UTM whose labels are a simple function of the embedding under them: class "high"/"low" from
    the 30 highest / 30 lowest pixels of a fixed projection of the vectors, value = another fixed projection (40
    training points per fold, more than the 32 dims, so the linear value is learnable whatever the field's rank)."""
    from rasterio.windows import Window

    from engine.io.embedding_raster import EmbeddingRaster

    with EmbeddingRaster(sample_embedding) as raster:  # the vectors the analyses see (int8: dequantised, NaN nodata)
        vectors = raster.read_block(Window(0, 0, raster.width, raster.height)).astype(np.float64)
        transform = raster.transform
    valid = np.isfinite(vectors).all(axis=0)
    rng = np.random.default_rng(3)
    score = np.einsum("k,khw->hw", rng.normal(size=len(vectors)), vectors)
    value = np.einsum("k,khw->hw", rng.normal(size=len(vectors)), vectors)
    rows, cols = np.nonzero(valid)
    order = np.argsort(score[rows, cols])
    picks = np.concatenate([rng.choice(order[:len(order) // 10], 30, replace=False),
                            rng.choice(order[-len(order) // 10:], 30, replace=False)])
    layer = QgsVectorLayer(f"Point?crs={UTM17N.authid()}&field=cls:string&field=value:double", "labels", "memory")
    to_utm = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:4326"), UTM17N, QgsProject.instance())
    features = []
    for k, pick in enumerate(picks):
        row, col = int(rows[pick]), int(cols[pick])
        x, y = transform * (col + 0.5, row + 0.5)
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromPointXY(to_utm.transform(QgsPointXY(x, y))))
        feature.setAttributes(["low" if k < 30 else "high", float(value[row, col])])
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    return layer


def test_provider_groups_and_help(gair_provider):
    found = {}
    for alg in gair_provider.algorithms():
        found.setdefault(alg.groupId(), set()).add(alg.name())
        assert len(alg.shortHelpString()) > 150, alg.id()
    assert found == EXPECTED


def test_embed_raster_extent_in_another_crs_int16_pca(gair_provider, sample_raster, tmp_path):
    source = layer_of(sample_raster)
    full = source.extent()
    west_half = QgsGeometry.fromRect(full).boundingBox()
    west_half.setXMaximum(full.center().x())
    west_half.setYMinimum(full.center().y())
    utm = QgsCoordinateTransform(source.crs(), UTM17N, QgsProject.instance()).transformBoundingBox(west_half)
    extent = f"{utm.xMinimum()},{utm.xMaximum()},{utm.yMinimum()},{utm.yMaximum()} [EPSG:32617]"
    # the UTM box, back in the raster's CRS and cut to the raster, is what must be embedded
    wanted = QgsCoordinateTransform(UTM17N, source.crs(), QgsProject.instance()).transformBoundingBox(utm)
    wanted = wanted.intersect(full)
    out = tmp_path / "west.tif"
    result = processing.run("gair:embed_raster", {"INPUT": source, "EXTENT": extent, "DIMS": 4, "DTYPE": 1,
                                                  "OUTPUT": str(out)})
    assert result["OUTPUT"] == str(out)
    embedding = layer_of(out)
    assert embedding.crs() == source.crs() and embedding.bandCount() == 4
    pixel = source.rasterUnitsPerPixelX()
    got = embedding.extent()
    for side in ("xMinimum", "xMaximum", "yMinimum", "yMaximum"):
        assert getattr(got, side)() == pytest.approx(getattr(wanted, side)(), abs=1.01 * pixel), side
    assert got.width() < 0.7 * full.width() and got.height() < 0.7 * full.height()
    dataset = gdal.Open(str(out))
    assert dataset.GetMetadataItem("GAIR_DIMS") == "4" and dataset.GetRasterBand(1).DataType == gdal.GDT_Int16
    assert dataset.GetRasterBand(1).GetDescription() == "gair_000"
    assert (tmp_path / "west.pca.npz").is_file()
    values = read(out).astype(np.float64) * dataset.GetRasterBand(1).GetScale()
    assert np.isfinite(values).all() and values.std() > 0
    quicklook = layer_of(result["QUICKLOOK"])
    assert quicklook.crs() == source.crs()
    assert quicklook.extent().contains(embedding.extent().center())
    assert abs(quicklook.extent().width() - embedding.extent().width()) < 0.05 * embedding.extent().width()


def test_embed_raster_reuses_the_pca_of_another_embedding(gair_provider, sample_raster, tiny_bundle, tmp_path):
    import engine

    first = engine.embed_raster(sample_raster, tmp_path / "first.tif", str(tiny_bundle), dims=4, quicklook=False)
    out = tmp_path / "second.tif"
    processing.run("gair:embed_raster", {"INPUT": layer_of(sample_raster), "PCA_FROM": str(first),
                                         "OUTPUT": str(out)})
    tags = [gdal.Open(str(path)).GetMetadata() for path in (first, out)]
    assert tags[0]["GAIR_SPACE"] == tags[1]["GAIR_SPACE"] and tags[1]["GAIR_DIMS"] == "4"
    assert tags[1]["GAIR_PCA_SHA"] == engine.io.pca.PCAProjection.load(tmp_path / "first.pca.npz").sha


def test_cluster_gives_paletted_classes_and_polygons(gair_provider, sample_embedding, tmp_path):
    result = processing.run("gair:cluster_embeddings", {"INPUT": str(sample_embedding), "K": 3,
                                                        "OUTPUT": str(tmp_path / "c.tif"),
                                                        "POLYGONS": str(tmp_path / "c.gpkg")})
    classes = layer_of(result["OUTPUT"])
    assert classes.crs().authid() == "EPSG:4326" and classes.extent() == layer_of(sample_embedding).extent()
    assert isinstance(classes.renderer(), QgsPalettedRasterRenderer)
    assert [c.label for c in classes.renderer().classes()] == ["cluster 1", "cluster 2", "cluster 3"]
    values = read(result["OUTPUT"])
    assert set(np.unique(values)) <= {0, 1, 2, 3} and len(set(np.unique(values)) - {0}) == 3
    polygons = QgsVectorLayer(result["POLYGONS"], "p", "ogr")
    assert polygons.featureCount() > 0 and polygons.crs().authid() == "EPSG:4326"
    assert polygons.renderer().type() == "categorizedSymbol"
    assert result["K"] == 3
    # raster style, polygon style and the GeoTIFF's colour table (written by the engine) agree, class by class
    dataset = gdal.Open(result["OUTPUT"])  # kept open: the colour table lives in it
    table = dataset.GetRasterBand(1).GetColorTable()
    file_colours = [tuple(table.GetColorEntry(value)[:3]) for value in (1, 2, 3)]
    dataset = None
    assert [c.color.getRgb()[:3] for c in classes.renderer().classes()] == file_colours
    categories = polygons.renderer().categories()  # kept: each category owns the symbol read below
    assert [category.symbol().color().getRgb()[:3] for category in categories] == file_colours


def test_similarity_with_memory_reference_layer_in_utm(gair_provider, sample_embedding, embedding_extent,
                                                       tmp_path):
    reference = memory_points(UTM17N, embedding_extent, 1, "field=id:integer", lambda x, y: [1])
    result = processing.run("gair:similarity_search", {
        "INPUT": str(sample_embedding), "REFERENCE_LAYER": reference, "TOP_K": 4, "THRESHOLD": 0.9,
        "OUTPUT": str(tmp_path / "s.tif"), "TOP_K_OUTPUT": str(tmp_path / "top.gpkg"), "MASK": str(tmp_path / "m.tif")})
    similarity = layer_of(result["OUTPUT"])
    assert similarity.crs().authid() == "EPSG:4326"
    assert isinstance(similarity.renderer(), QgsSingleBandPseudoColorRenderer)
    values = read(result["OUTPUT"])[0]
    assert np.nanmax(values) == pytest.approx(1.0, abs=1e-5) and np.nanmin(values) >= -1.0 - 1e-6
    point_4326 = QgsCoordinateTransform(UTM17N, similarity.crs(), QgsProject.instance()).transform(
        next(reference.getFeatures()).geometry().asPoint())
    assert similarity.dataProvider().sample(point_4326, 1)[0] == pytest.approx(1.0, abs=1e-5)
    top = QgsVectorLayer(result["TOP_K_OUTPUT"], "top", "ogr")
    ranked = sorted(top.getFeatures(), key=lambda f: f["rank"])
    assert [f["rank"] for f in ranked] == [1, 2, 3, 4]
    assert [f["score"] for f in ranked] == sorted((f["score"] for f in ranked), reverse=True)
    assert top.crs().authid() == "EPSG:4326" and top.renderer().symbol().symbolLayer(0).properties()["name"] == "star"
    mask = read(result["MASK"])[0]
    assert set(np.unique(mask)) <= {0, 1, 255} and (mask == 1).sum() == (values >= 0.9).sum()


def test_train_apply_classifier_and_regressor(gair_provider, sample_embedding, learnable_labels, tmp_path):
    labels = learnable_labels
    result = processing.run("gair:train_classifier", {
        "INPUT": str(sample_embedding), "LABELS": labels, "FIELD": "cls", "METHOD": 0, "FOLDS": 3,
        "MODEL_OUTPUT": str(tmp_path / "m.skops"), "REPORT": str(tmp_path / "report.html"),
        "OUTPUT": str(tmp_path / "cls.tif"), "CONFIDENCE": str(tmp_path / "conf.tif")})
    classes = layer_of(result["OUTPUT"])
    assert classes.crs().authid() == "EPSG:4326"
    assert [c.label for c in classes.renderer().classes()] == ["high", "low"]
    predicted = read(result["OUTPUT"])[0]
    assert set(np.unique(predicted)) == {1, 2}
    confidence = read(result["CONFIDENCE"])[0]
    assert np.nanmin(confidence) >= 0.5 - 1e-6 and np.nanmax(confidence) <= 1.0 + 1e-6  # two classes
    assert isinstance(layer_of(result["CONFIDENCE"]).renderer(), QgsSingleBandPseudoColorRenderer)
    assert result["ACCURACY"] >= 0.95  # the classes are a linear function of the vectors
    report = (tmp_path / "report.html").read_text().lower()
    assert "accuracy" in report and "<td>high</td>" in report and "<td>low</td>" in report

    applied = processing.run("gair:apply_model", {"INPUT": str(sample_embedding),
                                                       "CLASSIFIER": result["MODEL_OUTPUT"],
                                                       "OUTPUT": str(tmp_path / "again.tif")})
    np.testing.assert_array_equal(read(applied["OUTPUT"])[0], predicted)
    assert isinstance(layer_of(applied["OUTPUT"]).renderer(), QgsPalettedRasterRenderer)

    regression = processing.run("gair:train_regressor", {
        "INPUT": str(sample_embedding), "LABELS": labels, "FIELD": "value", "METHOD": 1, "FOLDS": 3,
        "MODEL_OUTPUT": str(tmp_path / "r.skops"), "OUTPUT": str(tmp_path / "value.tif")})
    values = read(regression["OUTPUT"])[0]
    assert np.isfinite(values).all() and values.std() > 0
    assert isinstance(layer_of(regression["OUTPUT"]).renderer(), QgsSingleBandPseudoColorRenderer)
    assert regression["R2"] >= 0.95  # the values are a linear function of the vectors (ridge)


class WarningsFeedback(QgsProcessingFeedback):
    """Keeps the warnings an algorithm pushes (the engine's warnings reach the Processing log as these)."""

    def __init__(self) -> None:
        super().__init__()
        self.warnings: list[str] = []

    def pushWarning(self, warning: str) -> None:  # noqa: N802
        self.warnings.append(warning)
        super().pushWarning(warning)


def test_embed_features_locations_photos(gair_provider, tiny_bundle, sample_raster, embedding_extent, examples,
                                         labels, tmp_path):
    features = processing.run("gair:embed_features", {"INPUT": labels, "RASTER": str(sample_raster),
                                                      "OUTPUT": str(tmp_path / "f.gpkg")})
    layer = QgsVectorLayer(features["OUTPUT"], "f", "ogr")
    assert layer.crs() == UTM17N and layer.featureCount() == 30 and features["EMBEDDED"] == 30
    names = layer.fields().names()
    assert {"cls", "value", "gair_000", "gair_031", "gair_status"} <= set(names)
    toolbox_vectors = np.array([[f[f"gair_{i:03d}"] for i in range(32)] for f in layer.getFeatures()], float)
    assert np.isfinite(toolbox_vectors).all() and (np.linalg.norm(toolbox_vectors, axis=1) > 0).all()
    # the same input through the engine directly gives the same vectors
    import engine

    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    written = QgsVectorFileWriter.writeAsVectorFormatV3(labels, str(tmp_path / "labels.gpkg"),
                                                        QgsProject.instance().transformContext(), options)
    assert written[0] == QgsVectorFileWriter.NoError, written
    direct = engine.embed_features(sample_raster, tmp_path / "labels.gpkg", tmp_path / "direct.gpkg",
                                   engine.load_model(tiny_bundle, device="cpu", backend="torch"))
    direct_layer = QgsVectorLayer(str(direct.path), "direct", "ogr")
    direct_vectors = np.array([[f[f"gair_{i:03d}"] for i in range(32)] for f in direct_layer.getFeatures()], float)
    np.testing.assert_allclose(toolbox_vectors, direct_vectors, rtol=1e-6, atol=1e-7)

    locations = processing.run("gair:embed_locations", {"INPUT": labels, "OUTPUT": str(tmp_path / "l.gpkg")})
    assert locations["EMBEDDED"] == 30

    photos = QgsVectorLayer("Point?crs=EPSG:4326&field=photo:string", "photos", "memory")
    row = examples[0]
    feature = QgsFeature(photos.fields())
    feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(row["lon"], row["lat"])))
    feature["photo"] = str(row["sv_path"])
    broken = QgsFeature(photos.fields())
    broken.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(row["lon"], row["lat"])))
    broken["photo"] = "no_such_photo.jpg"
    photos.dataProvider().addFeatures([feature, broken])
    feedback = WarningsFeedback()
    result = processing.run("gair:embed_photos", {"INPUT": photos, "PHOTO_FIELD": "photo",
                                                  "OUTPUT": str(tmp_path / "p.gpkg")}, feedback=feedback)
    assert any("1 of 2 features embedded" in w and "unreadable photo" in w for w in feedback.warnings)
    assert result["EMBEDDED"] == 1
    statuses = [f["gair_status"] for f in QgsVectorLayer(result["OUTPUT"], "p", "ogr").getFeatures()]
    assert statuses[0] == "ok" and statuses[1].startswith("unreadable photo")


class CancelAfterFirstProgress(QgsProcessingFeedback):
    def __init__(self) -> None:
        super().__init__()
        self.progressChanged.connect(lambda value: value > 0 and self.cancel())


@pytest.mark.parametrize("algorithm", ["embed_raster", "cluster_embeddings", "similarity_search"])
def test_cancel_leaves_no_output(gair_provider, sample_raster, sample_embedding, embedding_extent, tmp_path,
                                 algorithm):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    centre = embedding_extent.center()
    parameters = {
        "embed_raster": {"INPUT": str(sample_raster)},
        "cluster_embeddings": {"INPUT": str(sample_embedding), "POLYGONS": str(out_dir / "p.gpkg")},
        "similarity_search": {"INPUT": str(sample_embedding), "POINT": f"{centre.x()},{centre.y()} [EPSG:4326]",
                              "TOP_K_OUTPUT": str(out_dir / "top.gpkg")},
    }[algorithm]
    parameters["OUTPUT"] = str(out_dir / "out.tif")
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run(f"gair:{algorithm}", parameters, feedback=CancelAfterFirstProgress())
    assert os.listdir(out_dir) == []


@pytest.mark.parametrize(("algorithm", "parameters", "message"), [
    ("similarity_search", {"INPUT": "{raster}", "POINT": "{centre}"}, "not a GAIR embedding raster"),
    ("similarity_search", {"INPUT": "{embedding}"}, "Give a reference point or a reference layer"),
    ("similarity_search", {"INPUT": "{embedding}", "POINT": "0,0 [EPSG:4326]"}, "outside the embedding raster"),
    ("similarity_search", {"INPUT": "{embedding}", "POINT": "{centre}", "MASK": "{tmp}/m.tif"}, "needs a threshold"),
    ("embed_raster", {"INPUT": "{embedding}"}, "B2"),
    ("embed_raster", {"INPUT": "{raster}", "EXTENT": "0,1,0,1 [EPSG:4326]"}, "does not overlap"),
    ("train_classifier", {"INPUT": "{embedding}", "LABELS": "{one_class}", "FIELD": "cls"}, "at least two"),
    ("cluster_embeddings", {"INPUT": "{raster}"}, "Embed raster first"),
    ("convert_checkpoint", {"CHECKPOINT": "{tmp}/missing.pth"}, "is not a file"),
])
def test_invalid_inputs_give_the_algorithms_message(gair_provider, sample_raster, sample_embedding,
                                                    embedding_extent, tmp_path, algorithm, parameters, message):
    one_class = memory_points(UTM17N, embedding_extent, 6, "field=cls:string", lambda x, y: ["water"])
    centre = embedding_extent.center()
    values = {"{raster}": str(sample_raster), "{embedding}": str(sample_embedding), "{tmp}": str(tmp_path),
              "{centre}": f"{centre.x()},{centre.y()} [EPSG:4326]"}
    resolved = {}
    for key, value in parameters.items():
        if value == "{one_class}":
            resolved[key] = one_class
            continue
        for token, replacement in values.items():
            value = value.replace(token, replacement)
        resolved[key] = value
    for output in gair_provider.algorithm(algorithm).destinationParameterDefinitions():
        resolved.setdefault(output.name(), str(tmp_path / "out") + {"folderDestination": ""}.get(output.type(), "")
                            if output.name() == "OUTPUT" else "TEMPORARY_OUTPUT")
    with pytest.raises(QgsProcessingException, match=message):
        processing.run(f"gair:{algorithm}", resolved)
    assert not list(tmp_path.glob("out*"))


def test_convert_refuses_a_file_that_is_not_a_gair_checkpoint(gair_provider, tmp_path):
    import torch

    bogus = tmp_path / "other.pth"
    torch.save({"model": {"encoder.weight": torch.zeros(2, 2)}}, bogus)
    with pytest.raises(QgsProcessingException, match="does not match the GAIR architecture"):
        processing.run("gair:convert_checkpoint", {"CHECKPOINT": str(bogus), "OUTPUT": str(tmp_path / "bundle")})
    assert not (tmp_path / "bundle").exists()


def test_export_onnx_then_embed_with_the_onnx_backend(gair_provider, tiny_bundle, sample_embedding, examples,
                                                      tmp_path):
    from gair_qgis.settings import GAIRSettings

    result = processing.run("gair:export_onnx", {"SOURCE": str(tiny_bundle / "config.json"),
                                                 "OUTPUT": str(tmp_path / "onnx")})
    export = tmp_path / "onnx"
    assert result["OUTPUT"] == str(export) and (export / "config.json").is_file()
    assert result["FINGERPRINT"] == gdal.Open(str(sample_embedding)).GetMetadataItem("GAIR_MODEL")
    before = GAIRSettings.load()
    try:
        GAIRSettings(str(export), "onnx", "cpu").save()
        points = QgsVectorLayer("Point?crs=EPSG:4326&field=id:integer", "p", "memory")
        feature = QgsFeature(points.fields())
        feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(examples[0]["lon"], examples[0]["lat"])))
        points.dataProvider().addFeatures([feature])
        onnx = processing.run("gair:embed_locations", {"INPUT": points, "OUTPUT": str(tmp_path / "onnx.gpkg")})
        GAIRSettings(str(tiny_bundle), "torch", "cpu").save()
        torch_run = processing.run("gair:embed_locations", {"INPUT": points, "OUTPUT": str(tmp_path / "torch.gpkg")})
    finally:
        before.save()
    vectors = [np.array([next(QgsVectorLayer(r["OUTPUT"], "v", "ogr").getFeatures())[f"gair_{i:03d}"]
                         for i in range(32)]) for r in (onnx, torch_run)]
    assert np.linalg.norm(vectors[0] - vectors[1]) < 1e-3 * np.linalg.norm(vectors[1])


def test_export_onnx_int8_sets_the_int8_backend(gair_provider, tiny_bundle, tmp_path):
    from gair_qgis.settings import GAIRSettings

    before = GAIRSettings.load()
    try:
        processing.run("gair:export_onnx", {"SOURCE": str(tiny_bundle / "config.json"), "INT8": True,
                                            "SET_DEFAULT": True, "OUTPUT": str(tmp_path / "onnx")})
        assert GAIRSettings.load().backend == "onnx-int8"
    finally:
        before.save()
    assert (tmp_path / "onnx" / "rs_tokens.int8.onnx").is_file() and (tmp_path / "onnx" / "sv.int8.onnx").is_file()


def test_results_loaded_by_processing_land_styled_in_the_gair_group(gair_provider, qgis_new_project,
                                                                    sample_embedding, tmp_path):
    result = processing.runAndLoadResults("gair:cluster_embeddings", {
        "INPUT": str(sample_embedding), "K": 2, "OUTPUT": str(tmp_path / "c.tif"),
        "POLYGONS": str(tmp_path / "c.gpkg")})
    group = QgsProject.instance().layerTreeRoot().findGroup("GAIR")
    layers = {node.layer().source().split("|")[0]: node.layer() for node in group.findLayers()}
    assert set(layers) == {result["OUTPUT"], result["POLYGONS"]}
    assert [c.label for c in layers[result["OUTPUT"]].renderer().classes()] == ["cluster 1", "cluster 2"]
    assert layers[result["POLYGONS"]].renderer().type() == "categorizedSymbol"


@pytest.fixture
def engine_in_this_process(monkeypatch):
    """Jobs run by the worker's JobRunner inside the test's own process (not a worker process), so that a
    monkeypatch of the engine reaches them; messages and errors as the worker client gives them."""
    from engine.service.jobs import JobRunner
    from gair_qgis import engine_jobs

    runner = JobRunner()

    def run_job(op, params, progress=None, log=None, cancel=None):
        message = runner.run("in-process", op, params, lambda message: None)
        if message["type"] == "error":
            raise engine_jobs.EngineFailure(message["kind"], message["message"])
        return message["result"]

    monkeypatch.setattr(engine_jobs, "run_job", run_job)


def test_convert_checkpoint_to_bundle_and_set_it_as_the_model(gair_provider, tmp_path, monkeypatch,
                                                              engine_in_this_process):
    import torch

    import engine
    import engine.model.checkpoint
    from gair_qgis.settings import GAIRSettings

    # an official-format checkpoint ({"model": state_dict}) of the tiny architecture, read as the official one
    # (by a job in this process: the monkeypatch does not reach a worker process)
    monkeypatch.setattr(engine.model.checkpoint, "GAIRConfig", engine.GAIRConfig.tiny)
    torch.manual_seed(1)
    model = engine.GAIRModel(engine.GAIRConfig.tiny())
    torch.save({"model": model.state_dict()}, tmp_path / "checkpoint.pth")
    before = GAIRSettings.load()
    try:
        result = processing.run("gair:convert_checkpoint", {"CHECKPOINT": str(tmp_path / "checkpoint.pth"),
                                                       "CONVENTION": 1, "SET_DEFAULT": True,
                                                       "OUTPUT": str(tmp_path / "bundle")})
        assert result["FINGERPRINT"] == model.fingerprint
        assert GAIRSettings.load().model_path == str(tmp_path / "bundle")
    finally:
        before.save()
        monkeypatch.undo()
    bundle = engine.load_model(tmp_path / "bundle", device="cpu", backend="torch")
    assert bundle.fingerprint == model.fingerprint and bundle.config.nili_convention == "legacy"
