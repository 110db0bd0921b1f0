"""Shared test setup: QGIS must be there (hard failure in CI), seeded RNGs, the shared data, the plugin zip.

pytest-qgis starts QgsApplication before this file is imported (offscreen, see pyproject's
`qgis_gui_enabled = false`) on a profile in `<repo>/.qgis-settings`, never the user's; pytest_configure then
points QSettings/QgsSettings at a fresh temporary folder so no setting survives from one run to the next.
Tests that need QGIS request its fixtures (`qgis_app`, `qgis_processing`, `qgis_iface`, `qgis_new_project`);
engine tests run in the same pytest run.
"""
from __future__ import annotations

import csv
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = ROOT / "data" / "samples"
TEST_SEED = 0
_QGIS_FIX = "run `make test` (it installs QGIS 3.22 with apt-get and builds .venv with --system-site-packages)"
# Escape hatch for a machine without QGIS: GAIR_ALLOW_NO_QGIS=1 pytest -p no:pytest_qgis runs the engine tests
# and skips, loudly, every test that asks for a qgis_* fixture. Never honoured when CI is set.
_ALLOW_NO_QGIS = os.environ.get("GAIR_ALLOW_NO_QGIS") == "1" and not os.environ.get("CI")
# The plugin runs its jobs in an engine worker process: in tests, this Python (the project venv) is that engine.
os.environ.setdefault("GAIR_ENGINE_PYTHON", sys.executable)
os.environ.setdefault("OMP_NUM_THREADS", "2")


def _qgis_import_error() -> str | None:
    try:
        import qgis.core  # noqa: F401
    except ImportError as exc:
        return f"{exc} (python: {sys.executable})"
    return None


def pytest_configure(config: pytest.Config) -> None:
    error = _qgis_import_error()
    if error is not None and not _ALLOW_NO_QGIS:
        raise pytest.UsageError(
            f"QGIS Python bindings do not import: {error}.\nFix: {_QGIS_FIX}. "
            "QGIS tests are never skipped in CI."
        )
    if error is None:
        _use_temporary_qgis_settings(config)
    # Every CPU for torch by default; OMP_NUM_THREADS (e.g. 1 while several people share a machine) wins.
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))


def _use_temporary_qgis_settings(config: pytest.Config) -> None:
    from qgis.PyQt.QtCore import QSettings

    folder = Path(tempfile.mkdtemp(prefix="gair-qgis-settings-"))
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(folder))
    os.environ["QGIS_CUSTOM_CONFIG_PATH"] = str(folder)  # for child processes that set none of their own
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _qgis_import_error() is None:
        return
    skip = pytest.mark.skip(reason="QGIS not installed and GAIR_ALLOW_NO_QGIS=1 (never in CI)")
    for item in items:
        if any(name.startswith("qgis_") for name in getattr(item, "fixturenames", ())):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Same random streams in every test, whatever ran before it."""
    random.seed(TEST_SEED)
    np.random.seed(TEST_SEED)
    torch.manual_seed(TEST_SEED)


@pytest.fixture
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one thread avoids OpenMP workers fighting over the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The real Sentinel-2 samples the repository carries (data/samples; treat as read-only)."""
    if not SAMPLES_DIR.is_dir():
        raise pytest.UsageError(f"sample data folder not found at {SAMPLES_DIR}: the checkout is incomplete")
    return SAMPLES_DIR


@pytest.fixture(scope="session")
def examples(samples_dir: Path) -> list[dict]:
    """Rows of examples.csv: the CSV's columns (numbers as float) plus absolute `rs_path`, `sv_path` and
    `bbox` = (lon_min, lat_max, lon_max, lat_min), the order engine.query_localized takes."""
    folder = samples_dir
    csv_path = folder / "examples.csv"
    if not csv_path.is_file():
        raise pytest.UsageError(f"{csv_path} is missing: the checkout is incomplete")
    rows = []
    with csv_path.open(newline="") as handle:
        for raw in csv.DictReader(handle):
            row: dict = {key: (value if key in ("id", "rs_image", "sv_image") else float(value))
                         for key, value in raw.items()}
            row["rs_path"] = folder / row["rs_image"]
            row["sv_path"] = folder / row["sv_image"]
            row["bbox"] = (row["rs_bbox_lon_min"], row["rs_bbox_lat_max"],
                           row["rs_bbox_lon_max"], row["rs_bbox_lat_min"])
            rows.append(row)
    return rows


@pytest.fixture(scope="session")
def plugin_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dist-style gair_qgis.zip built once per run from this checkout (scripts/package_plugin.py)."""
    from tests.qgis_helpers import build_plugin_zip

    return build_plugin_zip(tmp_path_factory.mktemp("plugin_zip") / "gair_qgis.zip")


@pytest.fixture(scope="session")
def qgis_process_with_plugin(plugin_zip: Path, tmp_path_factory: pytest.TempPathFactory):
    """A `QgisProcess` whose temporary QGIS profile has the zip installed and the plugin enabled.

    Use it for `qgis_process run gair:...` end-to-end tests: `qgis_process_with_plugin.run_algorithm(...)`.
    """
    from tests.qgis_helpers import QgisProcess

    runner = QgisProcess(tmp_path_factory.mktemp("qgis_config"))
    runner.install_plugin_zip(plugin_zip)
    runner.enable_plugin("gair_qgis")
    return runner
