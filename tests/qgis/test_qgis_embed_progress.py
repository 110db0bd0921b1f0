"""Embed raster in QGIS: the Processing log gets the output size estimate before the work and per-crop progress
("crop i/n, ~m:ss left") while it runs; the default keeps DEFAULT_DIMS principal components (all of a smaller model)."""
from __future__ import annotations

import re

import processing
import rasterio
from qgis.core import QgsProcessingFeedback


class RecordingFeedback(QgsProcessingFeedback):
    """Keeps what an algorithm tells the user, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, object]] = []

    def pushInfo(self, info: str) -> None:  # noqa: N802
        self.events.append(("info", info))
        super().pushInfo(info)

    def setProgressText(self, text: str) -> None:  # noqa: N802
        self.events.append(("text", text))
        super().setProgressText(text)

    def pushWarning(self, warning: str) -> None:  # noqa: N802
        self.events.append(("warning", warning))
        super().pushWarning(warning)


def test_embed_raster_reports_estimate_then_crop_progress(gair_provider, sample_raster, tmp_path):
    feedback = RecordingFeedback()
    out = tmp_path / "detroit_gair.tif"
    percents: list[float] = []
    feedback.progressChanged.connect(percents.append)
    processing.run("gair:embed_raster", {"INPUT": str(sample_raster), "DIMS": 8, "DTYPE": 0, "OUTPUT": str(out)},
                   feedback=feedback)  # DTYPE 0: float32 (4 bytes a value in the estimate below)
    with rasterio.open(out) as dataset:
        height, width, count = dataset.height, dataset.width, dataset.count
    assert count == 8
    infos = [text for kind, text in feedback.events if kind == "info"]
    estimate = next(text for text in infos if "before compression" in text)
    assert f"{width} x {height} px x 8 dims float32" in estimate
    size_mb = width * height * 8 * 4 / 1e6
    assert f"{size_mb:.1f} MB" in estimate
    crops = int(re.search(r"(\d+) crops to encode", estimate).group(1))
    texts = [text for kind, text in feedback.events if kind == "text"]
    pattern = re.compile(rf"crop (\d+)/{crops} \(\d+%\), \d+:\d\d elapsed, ~\d+:\d\d left")
    assert texts and all(pattern.fullmatch(t) for t in texts), texts
    counts = [int(pattern.fullmatch(t).group(1)) for t in texts]
    assert counts == sorted(counts) and counts[-1] == crops
    first_crop = next(i for i, (kind, text) in enumerate(feedback.events) if kind == "text")
    assert feedback.events.index(("info", estimate)) < first_crop  # the size is known before any crop
    assert percents and percents == sorted(percents) and percents[-1] == 100.0


def test_default_dims_keep_all_of_a_smaller_model(gair_provider, sample_raster, tmp_path):
    """The tiny test model has 32 dims, fewer than the default 64: the default keeps them all (no PCA)."""
    import engine.pipeline.raster
    from engine.params import DEFAULT_DIMS

    algorithm = gair_provider.algorithm("embed_raster")
    assert algorithm.parameterDefinition("DIMS").defaultValue() == DEFAULT_DIMS == engine.pipeline.raster.DEFAULT_DIMS
    assert DEFAULT_DIMS == 64
    feedback = RecordingFeedback()
    out = tmp_path / "all.tif"
    processing.run("gair:embed_raster", {"INPUT": str(sample_raster), "OUTPUT": str(out)}, feedback=feedback)
    with rasterio.open(out) as dataset:
        assert dataset.count == 32 and dataset.tags()["GAIR_DIMS"] == "32"
    assert not (tmp_path / "all.pca.npz").exists()
