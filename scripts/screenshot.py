"""Take the README screenshots from a real QGIS desktop start:

- `--shot main` (docs/screenshot.png): the whole main window with the Processing toolbox (GAIR group expanded), the
  GAIR map tool dock and a styled similarity result;
- `--shot setup` (docs/setup_engine.png): Plugins > GAIR > Set up engine… after a real set-up into the throwaway
  profile, offline: the engine wheel this checkout builds, PyTorch left out (no network needed);
- `--shot progress` (docs/job_progress.png): the Processing dialog of Embed raster while the engine worker runs it.

    python scripts/screenshot.py [--shot main|setup|progress] [--model PATH] [--sample detroit] [--out PNG]

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

# What every script run inside QGIS starts with: imports, `step` (progress on QGIS's stdout, shown by the runner when
# QGIS fails or hangs) and `finish` (the result, or the error, to $GAIR_RESULT, then quit: not iface.actionExit(),
# which asks whether to save an unsaved project and waits for an answer).
PRELUDE = r'''
import json, os, traceback

import processing
import qgis.utils
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.gui import QgsProcessingToolboxTreeView
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QApplication, QDockWidget, QProgressBar
from qgis.utils import iface

env = os.environ


def step(text):
    print(f"[screenshot] {text}", flush=True)


def finish(result):
    with open(env["GAIR_RESULT"], "w") as handle:
        json.dump(result, handle)
    step("quitting")
    QTimer.singleShot(0, lambda: QgsApplication.exit(0))
'''
# ... and ends with: run(), any error reported through finish().
EPILOGUE = r'''

try:
    run()
except Exception:
    finish({"error": traceback.format_exc()})
'''

# Runs inside QGIS (--code). Inputs come from the environment; the result (or the error) goes to $GAIR_RESULT.
IN_QGIS = PRELUDE + r'''
width, height = (int(v) for v in env["GAIR_SHOT_SIZE"].split("x"))


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

''' + EPILOGUE


# Runs inside QGIS for --shot setup: the real dialog, a real (offline) set-up, the dialog grabbed when it is done.
SETUP_IN_QGIS = PRELUDE + r'''

def run():
    from gair_qgis import engine_setup
    from gair_qgis.engine_setup_dialog import EngineSetupDialog

    wheels = env["GAIR_SHOT_WHEELS"]
    python = engine_setup.find_python([(env["GAIR_SHOT_PYTHON"], "QGIS's own Python")])
    dialog = EngineSetupDialog(iface.mainWindow(), plan_options={
        "python": python, "install_torch": False, "pip_options": ("--no-index", "--find-links", wheels, "--no-deps"),
        "system_site_packages": True, "upgrade_pip": False,
        "engine": next(os.path.join(wheels, n) for n in os.listdir(wheels) if n.endswith(".whl"))})
    dialog.resize(900, 640)
    dialog.show()
    if dialog.plan is None:
        return finish({"error": "no set-up plan: " + dialog.plan_label.text()})
    print("[screenshot] set-up started", flush=True)
    dialog.start_button.click()
    timer = QTimer()

    def poll():
        if dialog.result is None:
            return
        timer.stop()
        image = dialog.grab()
        finish({"saved": image.save(env["GAIR_SHOT_OUT"], "PNG"), "width": image.width(),
                "height": image.height(), "status": dialog.status.text()})

    timer.timeout.connect(poll)
    timer.start(300)
    globals()["_keep"] = (dialog, timer)

''' + EPILOGUE

# Runs inside QGIS for --shot progress: Embed raster's own Processing dialog, grabbed while the engine reports progress.
PROGRESS_IN_QGIS = PRELUDE + r'''

def run():
    from gair_qgis.settings import GAIRSettings

    GAIRSettings(env["GAIR_SHOT_MODEL"], "auto", "cpu").save()
    source = QgsRasterLayer(env["GAIR_SHOT_RASTER"], env["GAIR_SHOT_NAME"], "gdal")
    QgsProject.instance().addMapLayer(source)
    dialog = processing.createAlgorithmDialog("gair:embed_raster", {"INPUT": source, "DIMS": 16,
                                                                    "OUTPUT": env["GAIR_SHOT_EMBEDDING"]})
    dialog.resize(1000, 640)
    dialog.show()
    bar = dialog.findChild(QProgressBar)
    seen, grabbed = [], {}
    timer = QTimer()

    def poll():
        value = bar.value()
        seen.append(value)
        if not grabbed and 30 <= value < 100:  # mid-job: the engine's progress and log lines are in the dialog
            grabbed["image"] = dialog.grab()
            grabbed["at"] = value
        if os.path.exists(env["GAIR_SHOT_EMBEDDING"]) and value in (0, 100) and len(seen) > 3:
            timer.stop()
            image = grabbed.get("image") or dialog.grab()
            finish({"saved": image.save(env["GAIR_SHOT_OUT"], "PNG"), "width": image.width(),
                    "height": image.height(), "progress_at_grab": grabbed.get("at", value),
                    "progress_seen": sorted(set(seen))})

    timer.timeout.connect(poll)
    timer.start(50)
    QTimer.singleShot(200, dialog.runAlgorithm)
    globals()["_keep"] = (dialog, timer)

''' + EPILOGUE
DEFAULT_OUT = {"main": "screenshot.png", "setup": "setup_engine.png", "progress": "job_progress.png"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint .pth or bundle folder (default: $GAIR_CHECKPOINT or tiny random)")
    parser.add_argument("--sample", default="detroit", help="row id in data/samples/examples.csv")
    parser.add_argument("--shot", choices=sorted(DEFAULT_OUT), default="main", help="which screenshot to take")
    parser.add_argument("--out", default=None, help="PNG to write (default: docs/ + the shot's file name)")
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


def build_engine_wheel(out: Path) -> Path:
    """A wheel of this checkout's engine (no dependencies, no network), built from a copy of the sources."""
    import subprocess

    source = out.parent / "wheel_source"
    source.mkdir(parents=True)
    for name in ("engine", "pyproject.toml", "README.md", "LICENSE"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source),
                    "-w", str(out)], check=True)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))  # engine (for the tiny model) and tests.qgis_helpers (the desktop runner)
    from tests.qgis_helpers import PLUGIN, QgisDesktop, build_plugin_zip

    row = sample_row(args.sample)
    out = Path(args.out or ROOT / "docs" / DEFAULT_OUT[args.shot]).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gair_screenshot_") as tmp:
        workdir = Path(tmp)
        path, random_model = model_path(args.model, workdir)
        desktop = QgisDesktop(workdir / "qgis", timeout=args.timeout, screen=args.size)
        desktop.install_plugin_zip(build_plugin_zip(workdir / "gair_qgis.zip"))
        desktop.enable_plugin(PLUGIN)
        code = workdir / "in_qgis.py"
        code.write_text({"main": IN_QGIS, "setup": SETUP_IN_QGIS, "progress": PROGRESS_IN_QGIS}[args.shot])
        shot = workdir / "screenshot.png"
        os.environ.update(GAIR_SHOT_MODEL=path, GAIR_SHOT_RASTER=str(EXAMPLES / row["rs_image"]),
                          GAIR_SHOT_NAME=Path(row["rs_image"]).stem, GAIR_SHOT_POINT=f"{row['lon']},{row['lat']}",
                          GAIR_SHOT_TOP_K=str(args.top_k), GAIR_SHOT_SIZE=args.size, GAIR_SHOT_OUT=str(shot),
                          GAIR_SHOT_EMBEDDING=str(workdir / "embedding.tif"))
        os.environ.setdefault("GAIR_ENGINE_PYTHON", sys.executable)  # the worker's Python (jobs need torch there)
        if args.shot == "setup":
            os.environ.pop("GAIR_ENGINE_PYTHON")  # the dialog sets up the profile's own engine
            os.environ.update(GAIR_SHOT_WHEELS=str(build_engine_wheel(workdir / "wheels")),
                              GAIR_SHOT_PYTHON="/usr/bin/python3" if os.path.isfile("/usr/bin/python3")
                              else sys.executable, PIP_CONFIG_FILE=os.devnull)
            os.environ.pop("PIP_FIND_LINKS", None)
        result = desktop.run_code(code, workdir / "result.json")
        if "error" in result or not result.get("saved"):
            raise SystemExit(f"QGIS could not take the screenshot:\n{result.get('error', json.dumps(result))}")
        partial = out.with_name(f".{out.name}.tmp")
        shutil.copyfile(shot, partial)
        os.replace(partial, out)  # never a half-written PNG in docs/
    model_note = "a random tiny model (shows the tool, not a trained result)" if random_model else Path(path).name
    details = {k: v for k, v in result.items() if k not in ("saved", "width", "height")}
    print(f"wrote {out} ({result['width']}x{result['height']}; model: {model_note}; {details})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
