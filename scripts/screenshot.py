"""Take the README screenshot from a real QGIS desktop start: the whole main window with the Processing toolbox
(GAIR group expanded), the GAIR map tool dock and a styled similarity result.

    python scripts/screenshot.py [--model PATH] [--sample detroit] [--out docs/screenshot.png]

QGIS starts on a throwaway profile with the plugin installed from the zip this checkout builds and enabled at
launch (under Xvfb when there is no DISPLAY). Inside it the sample Sentinel-2 raster is loaded, Embed raster and
Similarity search run through Processing (so names, styles and visibility are the plugin's own), the map tool dock
is opened and `iface.mainWindow().grab()` is saved. The model is --model, else $GAIR_CHECKPOINT, else a seeded
random tiny model (the image then shows the tool, not what a trained model finds; the caption says so).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "data" / "samples"

# Runs inside QGIS (--code). Inputs come from the environment; the result (or the error) goes to $GAIR_RESULT.
IN_QGIS = r'''
import json, os, traceback

import processing
import qgis.utils
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.gui import QgsProcessingToolboxTreeView
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QApplication, QDockWidget
from qgis.utils import iface

env = os.environ
width, height = (int(v) for v in env["GAIR_SHOT_SIZE"].split("x"))


def step(text):  # progress on QGIS's stdout, shown by the runner when QGIS fails or hangs
    print(f"[screenshot] {text}", flush=True)


def finish(result):
    with open(env["GAIR_RESULT"], "w") as handle:
        json.dump(result, handle)
    step("quitting")
    # not iface.actionExit(): with layers in an unsaved project QGIS asks whether to save it and waits for an answer
    QTimer.singleShot(0, lambda: QgsApplication.exit(0))


def expand_gair_group(toolbox):
    view = toolbox.findChild(QgsProcessingToolboxTreeView)
    model = view.model()
    for row in range(model.rowCount()):
        index = model.index(row, 0)
        if model.data(index, Qt.DisplayRole) == "GAIR":
            view.expand(index)
            for child in range(model.rowCount(index)):
                view.expand(model.index(child, 0, index))
            view.scrollTo(index, view.PositionAtTop)
            return True
    return False


def arrange(dock):
    window = iface.mainWindow()
    window.setGeometry(0, 0, width, height)
    for name in ("Browser", "Browser2", "Overview", "LayerOrder", "MessageLog", "ResultsViewer"):
        other = window.findChild(QDockWidget, name)
        if other is not None:
            other.hide()
    toolbox = window.findChild(QDockWidget, "ProcessingToolbox")
    toolbox.show()
    window.addDockWidget(Qt.RightDockWidgetArea, toolbox)
    window.splitDockWidget(toolbox, dock, Qt.Vertical)
    window.resizeDocks([toolbox, dock], [int(height * 0.52), int(height * 0.40)], Qt.Vertical)
    window.resizeDocks([toolbox], [int(width * 0.24)], Qt.Horizontal)
    layers = window.findChild(QDockWidget, "Layers")
    window.resizeDocks([layers], [int(width * 0.25)], Qt.Horizontal)
    return toolbox


def run():
    from gair_qgis.settings import GAIRSettings

    step("started")
    GAIRSettings(env["GAIR_SHOT_MODEL"], "auto", "cpu").save()
    project = QgsProject.instance()
    source = QgsRasterLayer(env["GAIR_SHOT_RASTER"], env["GAIR_SHOT_NAME"], "gdal")
    project.addMapLayer(source)
    embedded = processing.runAndLoadResults("gair:embed_raster", {
        "INPUT": source, "DIMS": 16, "OUTPUT": "TEMPORARY_OUTPUT"})
    step("embedded")
    embedding = next(layer for layer in project.mapLayers().values()
                     if layer.source() == embedded["OUTPUT"])
    found = processing.runAndLoadResults("gair:similarity_search", {
        "INPUT": embedding, "POINT": env["GAIR_SHOT_POINT"] + " [EPSG:4326]", "TOP_K": int(env["GAIR_SHOT_TOP_K"]),
        "OUTPUT": "TEMPORARY_OUTPUT", "TOP_K_OUTPUT": "TEMPORARY_OUTPUT"})
    step("similarity done")
    plugin = qgis.utils.plugins["gair_qgis"]
    plugin.actions[0].setChecked(True)  # the toolbar button: opens the map tool dock and arms the tool
    dock = plugin.dock
    if hasattr(dock, "layer_box"):
        dock.layer_box.setLayer(embedding)
    step("dock open")
    toolbox = arrange(dock)
    expanded = expand_gair_group(toolbox)
    similarity = next(layer for layer in project.mapLayers().values() if layer.source() == found["OUTPUT"])
    iface.setActiveLayer(similarity)
    canvas = iface.mapCanvas()
    canvas.setExtent(source.extent())
    canvas.refreshAllLayers()
    names = [layer.name() for layer in project.mapLayers().values()]

    def grab():
        step("grabbing")
        canvas.waitWhileRendering()
        step("rendered")
        QApplication.processEvents()
        image = iface.mainWindow().grab()
        saved = image.save(env["GAIR_SHOT_OUT"], "PNG")
        step(f"saved {saved}")
        finish({"saved": saved, "width": image.width(), "height": image.height(), "layers": sorted(names),
                "gair_group_expanded": expanded, "similarity": found["OUTPUT"]})

    QTimer.singleShot(2500, grab)


try:
    run()
except Exception:
    finish({"error": traceback.format_exc()})
'''


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint .pth or bundle folder (default: $GAIR_CHECKPOINT or tiny random)")
    parser.add_argument("--sample", default="detroit", help="row id in data/samples/examples.csv")
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    parser.add_argument("--size", default="1600x1000", help="main window size WIDTHxHEIGHT in pixels")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds QGIS may take")
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
        return str(Path(path).resolve()), False
    import torch

    import engine

    torch.manual_seed(0)
    return str(engine.save_bundle(engine.GAIRModel(engine.GAIRConfig.tiny()), workdir / "tiny_bundle")), True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))  # engine (for the tiny model) and tests.qgis_helpers (the desktop runner)
    from tests.qgis_helpers import PLUGIN, QgisDesktop, build_plugin_zip

    row = sample_row(args.sample)
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gair_screenshot_") as tmp:
        workdir = Path(tmp)
        path, random_model = model_path(args.model, workdir)
        desktop = QgisDesktop(workdir / "qgis", timeout=args.timeout, screen=args.size)
        desktop.install_plugin_zip(build_plugin_zip(workdir / "gair_qgis.zip"))
        desktop.enable_plugin(PLUGIN)
        code = workdir / "in_qgis.py"
        code.write_text(IN_QGIS)
        shot = workdir / "screenshot.png"
        os.environ.update(GAIR_SHOT_MODEL=path, GAIR_SHOT_RASTER=str(EXAMPLES / row["rs_image"]),
                          GAIR_SHOT_NAME=Path(row["rs_image"]).stem, GAIR_SHOT_POINT=f"{row['lon']},{row['lat']}",
                          GAIR_SHOT_TOP_K=str(args.top_k), GAIR_SHOT_SIZE=args.size, GAIR_SHOT_OUT=str(shot))
        result = desktop.run_code(code, workdir / "result.json")
        if "error" in result or not result.get("saved"):
            raise SystemExit(f"QGIS could not take the screenshot:\n{result.get('error', json.dumps(result))}")
        partial = out.with_name(f".{out.name}.tmp")
        shutil.copyfile(shot, partial)
        os.replace(partial, out)  # never a half-written PNG in docs/
    model_note = "a random tiny model (shows the tool, not a trained result)" if random_model else Path(path).name
    print(f"wrote {out} ({result['width']}x{result['height']}; model: {model_note}; layers: {result['layers']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
