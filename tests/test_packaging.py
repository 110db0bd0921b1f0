"""The plugin zip: layout, reproducibility, clear errors, and QGIS (in-process and qgis_process) loading it."""
from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from engine import GAIRError
from tests.qgis_helpers import (
    PLUGIN,
    ROOT,
    QgisDesktop,
    QgisProcess,
    QgisProcessError,
    build_plugin_zip,
    loaded_plugin,
    unzip_plugin,
)

SOURCES = ("gair_qgis", "engine", "resources", "metadata.txt", "LICENSE")


@pytest.fixture
def source_tree(tmp_path: Path) -> Path:
    """A frozen copy of the parts the zip is made of (the checkout may change while tests run)."""
    tree = tmp_path / "src"
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.is_file():
            tree.mkdir(exist_ok=True)
            shutil.copy2(source, tree / name)
    return tree


def _zip_names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def test_zip_holds_one_self_contained_plugin_folder(source_tree: Path, tmp_path: Path) -> None:
    # Litter that must stay out of the zip.
    (source_tree / "engine" / "__pycache__").mkdir(exist_ok=True)
    (source_tree / "engine" / "__pycache__" / "config.cpython-311.pyc").write_bytes(b"\0")
    (source_tree / "gair_qgis" / "tests").mkdir(exist_ok=True)
    (source_tree / "gair_qgis" / "tests" / "test_inner.py").write_text("def test_x(): pass\n")
    (source_tree / "engine" / ".notes.swp").write_text("x")

    names = _zip_names(build_plugin_zip(tmp_path / "out" / "gair_qgis.zip", root=source_tree))

    assert names == sorted(names)
    assert {name.split("/")[0] for name in names} == {PLUGIN}
    files = {name for name in names if not name.endswith("/")}
    expected = {f"{PLUGIN}/metadata.txt", f"{PLUGIN}/__init__.py", f"{PLUGIN}/LICENSE", f"{PLUGIN}/_engine/__init__.py",
                f"{PLUGIN}/_engine/config.py", f"{PLUGIN}/_engine/errors.py"}
    expected |= {f"{PLUGIN}/resources/{p.name}" for p in (source_tree / "resources").iterdir() if p.is_file()}
    assert expected <= files
    every_engine_module = {f"{PLUGIN}/_{p.relative_to(source_tree).as_posix()}"
                           for p in (source_tree / "engine").rglob("*.py")
                           if "__pycache__" not in p.parts and "tests" not in p.parts}
    assert every_engine_module <= files
    # Nothing of ours may shadow a QGIS module: no `engine/` or `processing/` package in the plugin folder.
    assert not [n for n in names if n.startswith((f"{PLUGIN}/engine/", f"{PLUGIN}/processing/"))]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/tests/" in n or "/." in n]


def test_zip_is_byte_reproducible_with_fixed_metadata(source_tree: Path, tmp_path: Path) -> None:
    first = build_plugin_zip(tmp_path / "a.zip", root=source_tree).read_bytes()
    (source_tree / "engine" / "config.py").touch()  # a newer mtime must not change the bytes
    second = build_plugin_zip(tmp_path / "b.zip", root=source_tree).read_bytes()
    assert first == second
    with zipfile.ZipFile(tmp_path / "a.zip") as archive:
        infos = archive.infolist()
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {info.external_attr >> 16 for info in infos if not info.is_dir()} == {0o100644}
    assert not list(tmp_path.glob(".*.tmp"))  # the temp file was renamed into place


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda t: (t / "metadata.txt").write_text(
            re.sub(r"(?m)^email=.*\n", "", (t / "metadata.txt").read_text())), "lacks email"),
        (lambda t: (t / "metadata.txt").write_text(
            re.sub(r"(?m)^version=.*$", "version=9.9.9", (t / "metadata.txt").read_text())),
         "differs from engine.__version__"),
        (lambda t: shutil.copytree(t / "resources", t / "gair_qgis" / "resources"), "clashes with"),
        (lambda t: shutil.rmtree(t / "engine"), "needs _engine"),
        (lambda t: (t / "LICENSE").unlink(), "needs LICENSE"),
    ],
    ids=["missing-metadata-field", "version-mismatch", "duplicate-resources", "no-engine", "no-licence"],
)
def test_broken_tree_gives_a_clear_error_and_no_zip(source_tree, tmp_path, damage, message) -> None:
    damage(source_tree)
    output = tmp_path / "out" / "gair_qgis.zip"
    with pytest.raises(GAIRError, match=message):
        build_plugin_zip(output, root=source_tree)
    assert not output.exists()


def test_cli_writes_the_zip(tmp_path: Path) -> None:
    output = tmp_path / "dist" / "gair_qgis.zip"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "package_plugin.py"), "--output", str(output)],
                            capture_output=True, text=True, check=True, timeout=60)
    assert f"wrote {output}" in result.stdout
    assert f"{PLUGIN}/metadata.txt" in _zip_names(output)


def test_qgis_loads_plugin_installed_from_zip(qgis_iface, plugin_zip: Path, tmp_path: Path) -> None:
    from qgis.core import QgsApplication

    plugins_dir = tmp_path / "profiles" / "default" / "python" / "plugins"
    plugin_dir = unzip_plugin(plugin_zip, plugins_dir)
    registry = QgsApplication.processingRegistry()
    with loaded_plugin(plugins_dir) as plugin:
        assert Path(sys.modules[PLUGIN].__file__).parent == plugin_dir
        # Self-contained and private: the plugin reaches its bundled engine as gair_qgis._engine, never as a
        # top-level module, and puts nothing of its own on sys.path (a top-level `processing` broke QGIS).
        link = importlib.import_module(f"{PLUGIN}.engine_link")
        assert link.engine.__name__ == f"{PLUGIN}._engine"
        assert Path(link.engine.__file__).parent == plugin_dir / "_engine"
        assert str(plugin_dir) not in sys.path
        assert "engine" not in sys.modules or Path(sys.modules["engine"].__file__).parent == ROOT / "engine"
        import processing
        assert hasattr(processing, "run") and Path(processing.__file__).parent.parent != plugin_dir
        assert type(plugin).__module__.startswith(PLUGIN)
        assert registry.providerById("gair") is not None
    assert registry.providerById("gair") is None


def test_qgis_process_lists_and_loads_plugin(qgis_process_with_plugin) -> None:
    runner = qgis_process_with_plugin
    assert runner.plugins().get(PLUGIN) is True, "qgis_process did not load the enabled plugin"
    text = runner.run("plugins").stdout
    assert re.search(rf"^\* {PLUGIN}$", text, re.MULTILINE), text
    # The provider comes from the zip installed in the private profile; its algorithms carry the gair: prefix.
    assert all(alg.startswith("gair:") for alg in runner.algorithm_ids("gair"))
    # QGIS's own Processing still starts with the plugin enabled at launch: a plugin that shadowed the `processing`
    # module left 0 gdal: algorithms (QGIS alone lists 56 in 3.22).
    assert len(runner.algorithm_ids("gdal")) >= 50
    assert len(runner.algorithm_ids("native")) >= 200


def test_qgis_process_helper_runs_algorithms_and_reports_failures(tmp_path: Path) -> None:
    import rasterio

    runner = QgisProcess(tmp_path / "config")
    output = tmp_path / "constant.tif"
    results = runner.run_algorithm("native:createconstantrasterlayer", EXTENT="0,1,0,1 [EPSG:4326]",
                                   TARGET_CRS="EPSG:4326", PIXEL_SIZE=0.25, NUMBER=3, OUTPUT=output)
    assert results == {"OUTPUT": str(output)}
    with rasterio.open(output) as raster:
        assert raster.shape == (4, 4) and raster.read(1).tolist() == [[3] * 4] * 4
    with pytest.raises(QgisProcessError, match="PIXEL_SIZE"):
        runner.run_algorithm("native:createconstantrasterlayer", EXTENT="0,1,0,1", OUTPUT=tmp_path / "bad.tif")


# Runs inside the QGIS desktop (--code) once the main window is up: what a user sees after a start with the plugin
# enabled, written as JSON to $GAIR_RESULT; then QGIS quits the way a user quits it (plugins are unloaded).
DESKTOP_PROBE = """
import json, os, traceback

import qgis.utils
from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QDockWidget, QTabWidget
from qgis.utils import iface


def probe():
    import processing

    window = iface.mainWindow()
    registry = QgsApplication.processingRegistry()
    log = window.findChild(QDockWidget, "MessageLog").findChild(QTabWidget)
    gair = registry.providerById("gair")
    menu = [a.menu() for a in iface.pluginMenu().actions() if a.menu() is not None and a.text() == "&GAIR"]
    return {
        "toolbox_dock": window.findChild(QDockWidget, "ProcessingToolbox") is not None,
        "providers": sorted(p.id() for p in registry.providers()),
        "gdal_algorithms": len(registry.providerById("gdal").algorithms()) if registry.providerById("gdal") else 0,
        "gair_algorithms": sorted(a.id() for a in gair.algorithms()) if gair else [],
        "processing_file": processing.__file__,
        "processing_run": callable(getattr(processing, "run", None)),
        "plugins": sorted(qgis.utils.plugins),
        "gair_menu": [a.text() for a in menu[0].actions()] if menu else [],
        "log": {log.tabText(i): log.widget(i).toPlainText() for i in range(log.count())},
        "message_bar": [[int(item.level()), item.title(), item.text()] for item in iface.messageBar().items()],
    }


try:
    result = probe()
except Exception:
    result = {"probe_error": traceback.format_exc()}
with open(os.environ["GAIR_RESULT"], "w") as handle:
    json.dump(result, handle)
QTimer.singleShot(0, iface.actionExit().trigger)
"""


def startup_problems(result: dict) -> list[str]:
    """What is wrong with a QGIS start, as seen by DESKTOP_PROBE (empty: a clean start with GAIR loaded)."""
    problems = [result["probe_error"]] if "probe_error" in result else []
    if problems:
        return problems
    if not result["toolbox_dock"]:
        problems.append("no Processing toolbox dock")
    if not {"gdal", "native", "gair"} <= set(result["providers"]):
        problems.append(f"providers: {result['providers']}")
    if result["gdal_algorithms"] < 50:
        problems.append(f"{result['gdal_algorithms']} gdal algorithms")
    if not result["processing_run"] or not result["processing_file"].startswith("/usr/share/qgis/python/plugins/"):
        problems.append(f"`processing` is {result['processing_file']}, not QGIS's")
    if not {"processing", PLUGIN} <= set(result["plugins"]):
        problems.append(f"plugins started: {result['plugins']}")
    for tab, text in result["log"].items():
        if tab == "Python error" or "Traceback" in text or "Couldn't load plugin" in text:
            problems.append(f"log {tab}: {text[-2000:]}")
    problems += [f"message bar: {title}: {text}" for level, title, text in result["message_bar"] if level >= 2]
    return problems


@pytest.fixture(scope="module")
def desktop_with_plugin(plugin_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> QgisDesktop:
    desktop = QgisDesktop(tmp_path_factory.mktemp("qgis_desktop"))
    desktop.install_plugin_zip(plugin_zip)
    desktop.enable_plugin(PLUGIN)
    return desktop


def test_qgis_desktop_starts_cleanly_with_the_plugin_enabled(desktop_with_plugin: QgisDesktop, tmp_path: Path):
    code = tmp_path / "probe.py"
    code.write_text(DESKTOP_PROBE)
    result = desktop_with_plugin.run_code(code, tmp_path / "result.json")
    assert startup_problems(result) == []
    assert "Loaded GAIR (package: gair_qgis)" in result["log"]["Plugins"]
    assert {"gair:embed_raster", "gair:similarity_search", "gair:cluster_embeddings"} <= set(
        result["gair_algorithms"])
    assert result["gair_menu"][:4] == ["GAIR similarity map tool", "GAIR settings…", "Set up engine…",
                                       "Style as Sentinel-2 true colour"]


def test_desktop_check_sees_a_plugin_that_shadows_processing(desktop_with_plugin: QgisDesktop, tmp_path: Path):
    """The check above can fail: a plugin that puts its folder on sys.path and ships a `processing` package (the
    bug of issue 10) is reported (QGIS's Processing does not start, gdal: algorithms are gone)."""
    broken = QgisDesktop(tmp_path / "profiles")
    plugin_dir = broken.plugins_dir / PLUGIN
    shutil.copytree(desktop_with_plugin.plugins_dir / PLUGIN, plugin_dir)
    (plugin_dir / "processing").mkdir()
    (plugin_dir / "processing" / "__init__.py").write_text("# shadows QGIS's processing plugin\n")
    init = plugin_dir / "__init__.py"
    init.write_text(init.read_text() + "\nimport sys\nsys.path.insert(0, PLUGIN_DIR)\n")
    broken.enable_plugin(PLUGIN)
    code = tmp_path / "probe.py"
    code.write_text(DESKTOP_PROBE)
    problems = startup_problems(broken.run_code(code, tmp_path / "result.json", timeout=120))
    assert "0 gdal algorithms" in problems and "no Processing toolbox dock" in problems
    assert any(p.endswith("not QGIS's") for p in problems)
    assert any("module 'processing' has no attribute 'classFactory'" in p for p in problems), problems
