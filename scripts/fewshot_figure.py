"""Take the README picture of few-shot search in the map tool: the GAIR similarity dock and its canvas after two
positive clicks and one negative click, on a planted raster whose look-alike patches are known.

    python scripts/fewshot_figure.py [--out docs/fewshot.png]

Runs QGIS's widgets on the offscreen platform (no desktop, no display): a map canvas and the plugin's dock in a
window, the clicks sent through the dock's map tool, the jobs run by the engine worker (this Python, this checkout),
then the window is grabbed. The raster is synthetic (engine.analysis.synthetic: class regions plus small patches of
a distinct "look-alike" vector), so the picture shows what the clicks do, not what a trained model finds.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "fewshot.png"))
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("GAIR_ENGINE_PYTHON", sys.executable)
    sys.path.insert(0, str(ROOT))
    from qgis.core import QgsApplication, QgsPointXY, QgsProject, QgsRasterLayer
    from qgis.gui import QgsLayerTreeMapCanvasBridge, QgsMapCanvas, QgsMapMouseEvent
    from qgis.PyQt.QtCore import QEvent, QPoint, Qt
    from qgis.PyQt.QtWidgets import QMainWindow

    app = QgsApplication([], True)
    app.initQgis()
    from engine.analysis.synthetic import make_planted_raster, pixel_xy
    from gair_qgis.engine_jobs import stop_engine
    from gair_qgis.maptool.dock import SimilarityDock

    with tempfile.TemporaryDirectory(prefix="gair_fewshot_") as tmp:
        planted = make_planted_raster(Path(tmp) / "planted.tif", dims=24, height=192, width=256, regions=40,
                                      n_targets=8, target_patch=5, seed=3, dtype="int8")
        layer = QgsRasterLayer(str(planted.path), "planted embedding", "gdal")
        QgsProject.instance().addMapLayer(layer)
        window = QMainWindow()
        canvas = QgsMapCanvas()
        window.setCentralWidget(canvas)
        bridge = QgsLayerTreeMapCanvasBridge(QgsProject.instance().layerTreeRoot(), canvas)  # layers on the canvas
        iface = SimpleNamespace(mapCanvas=lambda: canvas, mainWindow=lambda: window)
        dock = SimilarityDock(iface)
        window.addDockWidget(Qt.RightDockWidgetArea, dock)
        window.resize(1280, 800)
        window.show()
        app.processEvents()
        canvas.setDestinationCrs(layer.crs())
        canvas.setExtent(layer.extent())
        dock.layer_box.setLayer(layer)
        QgsProject.instance().layerTreeRoot().findLayer(layer.id()).setItemVisibilityChecked(False)  # heatmap only
        dock.top_k.setValue(7)
        dock.set_tool_active(True)
        controller = dock.controller
        ground = [(int(r), int(c)) for r, c in zip(*(planted.classes == planted.classes[40, 40]).nonzero())]
        clicks = [(tuple(planted.targets[0]), False), (ground[len(ground) // 3], False),
                  (ground[2 * len(ground) // 3], True)]
        for (row, col), negative in clicks:
            x, y = pixel_xy(planted, row, col)
            pixel = canvas.getCoordinateTransform().transform(QgsPointXY(float(x), float(y)))
            button = Qt.RightButton if negative else Qt.LeftButton
            dock.tool.canvasReleaseEvent(QgsMapMouseEvent(canvas, QEvent.MouseButtonRelease,
                                                          QPoint(round(pixel.x()), round(pixel.y())), button, button))
            if not controller.wait_until_idle(120):
                raise SystemExit("the few-shot search did not finish")
        canvas.refreshAllLayers()
        canvas.waitWhileRendering()
        app.processEvents()
        image = window.grab()
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.tmp.png")
        if not image.save(str(partial), "PNG"):
            raise SystemExit(f"could not write {partial}")
        os.replace(partial, out)
        print(f"wrote {out} ({image.width()}x{image.height()}); {dock.status.text()}")
        dock.shutdown()
        del bridge
        stop_engine()
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
