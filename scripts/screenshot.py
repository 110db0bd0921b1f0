"""Render the README screenshot offscreen: a Sentinel-2 sample in true colour, the similarity map to a clicked
point and the top-k most similar places, exactly as the GAIR map tool produces them.

    python scripts/screenshot.py [--model PATH] [--sample detroit] [--out docs/screenshot.png]

The model is --model, else $GAIR_CHECKPOINT, else a seeded random tiny model (the image then shows the
tool, not what a trained model finds).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "data" / "samples"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint .pth or bundle folder (default: $GAIR_CHECKPOINT or tiny random)")
    parser.add_argument("--sample", default="detroit", help="row id in data/samples/examples.csv")
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    parser.add_argument("--size", default="1200x900", help="image size WIDTHxHEIGHT in pixels")
    parser.add_argument("--top-k", type=int, default=10)
    return parser.parse_args(argv)


def sample_row(sample: str) -> dict:
    with (EXAMPLES / "examples.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["id"] == sample:
                return row
    raise SystemExit(f"no sample {sample!r} in {EXAMPLES / 'examples.csv'}")


def model_path(explicit: str | None, workdir: Path) -> tuple[str, bool]:
    """(path, is_random_tiny)."""
    path = explicit or os.environ.get("GAIR_CHECKPOINT")
    if path:
        return path, False
    import torch

    import engine

    torch.manual_seed(0)
    return str(engine.save_bundle(engine.GAIRModel(engine.GAIRConfig.tiny()), workdir / "tiny_bundle")), True


def reference_layer(point, crs):
    """A magenta cross where the user clicked (the map tool shows it as a canvas marker)."""
    from qgis.core import (
        QgsFeature,
        QgsGeometry,
        QgsMarkerSymbol,
        QgsSingleSymbolRenderer,
        QgsVectorLayer,
    )

    layer = QgsVectorLayer(f"Point?crs={crs.authid()}", "reference", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromPointXY(point))
    layer.dataProvider().addFeatures([feature])
    symbol = QgsMarkerSymbol.createSimple({"name": "cross2", "color": "#ff00ff", "outline_color": "#ff00ff",
                                           "outline_width": "1.2", "size": "7"})
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    return layer


def render(layers, extent, crs, size, caption: str, out: Path) -> None:
    from qgis.core import QgsMapRendererCustomPainterJob, QgsMapSettings
    from qgis.PyQt.QtCore import QRectF, QSize, Qt
    from qgis.PyQt.QtGui import QColor, QFont, QImage, QPainter

    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(crs)
    settings.setOutputSize(QSize(*size))
    settings.setExtent(extent)
    settings.setBackgroundColor(QColor("#202020"))
    settings.setFlag(QgsMapSettings.Antialiasing, True)
    settings.setFlag(QgsMapSettings.DrawLabeling, True)
    image = QImage(QSize(*size), QImage.Format_ARGB32_Premultiplied)
    image.fill(QColor("#202020"))
    painter = QPainter(image)
    job = QgsMapRendererCustomPainterJob(settings, painter)
    job.start()
    job.waitForFinished()
    band = QRectF(0, size[1] - 44, size[0], 44)
    painter.fillRect(band, QColor(0, 0, 0, 170))
    painter.setPen(QColor("white"))
    painter.setFont(QFont("DejaVu Sans", 11))
    painter.drawText(band.adjusted(14, 0, -14, 0), Qt.AlignVCenter | Qt.AlignLeft, caption)
    painter.end()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    if not image.save(str(tmp), "PNG"):
        raise SystemExit(f"could not write {tmp}")
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from qgis.core import (
        QgsApplication,
        QgsCoordinateTransform,
        QgsPointXY,
        QgsProject,
        QgsRasterLayer,
    )
    from qgis.gui import QgsMapCanvas

    app = QgsApplication([], True)
    app.initQgis()
    from gair_qgis.maptool.controller import SimilarityController
    from gair_qgis.engine_calls import run_embed_raster
    from gair_qgis.settings import GAIRSettings
    from gair_qgis.styling import true_color_renderer

    row = sample_row(args.sample)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="gair_screenshot_") as tmp:
        workdir = Path(tmp)
        path, random_model = model_path(args.model, workdir)
        previous = GAIRSettings.load()
        GAIRSettings(path, "auto", "auto").save()
        try:
            source = QgsRasterLayer(str(EXAMPLES / row["rs_image"]), "Sentinel-2", "gdal")
            if not true_color_renderer(source):
                raise SystemExit(f"{row['rs_image']} does not name the B4/B3/B2 bands")
            embedding_path = run_embed_raster(source.source(), str(workdir / "embedding.tif"), model=path)
            embedding = QgsRasterLayer(embedding_path, "GAIR embedding", "gdal")
            project = QgsProject.instance()
            project.addMapLayers([source, embedding])

            canvas = QgsMapCanvas()
            canvas.resize(*size)
            canvas.setDestinationCrs(source.crs())
            canvas.setExtent(source.extent())
            controller = SimilarityController(canvas, project)
            controller.top_k = args.top_k
            controller.set_embedding_layer(embedding)
            clicked = QgsPointXY(float(row["lon"]), float(row["lat"]))  # the street-view photo's spot
            to_canvas = QgsCoordinateTransform(embedding.crs(), canvas.mapSettings().destinationCrs(), project)
            controller.handle_click(to_canvas.transform(clicked), additive=False)
            if not controller.wait_until_idle(600):
                raise SystemExit("the similarity search did not finish in time")
            if controller.similarity_layer is None:
                raise SystemExit("the map tool produced no similarity layer")
            # threshold at the 60th percentile (as the dock's slider would): the imagery shows where unlike
            threshold, _ = controller.similarity_layer.dataProvider().cumulativeCut(1, 0.6, 1.0)
            controller.set_threshold(threshold)
            layers = [reference_layer(clicked, embedding.crs()), controller.points_layer,
                      controller.similarity_layer, source]
            model_note = "random tiny model (demo of the tool)" if random_model else f"model {Path(path).name}"
            caption = (f"GAIR map tool, Sentinel-2 {row['id']}: similarity to the clicked point (magenta), "
                       f"top-{args.top_k} places (stars); {model_note}")
            render(layers, source.extent(), source.crs(), size, caption, Path(args.out))
            controller.shutdown()
        finally:
            previous.save()
            QgsProject.instance().removeAllMapLayers()
    print(f"wrote {args.out}")
    app.exitQgis()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
