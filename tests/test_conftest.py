"""The shared test setup itself: data fixtures, seeding, thread count, QGIS isolation."""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from tests.conftest import ROOT, TEST_SEED


def test_examples_are_the_three_real_crops(examples: list[dict], samples_dir: Path) -> None:
    assert samples_dir == ROOT / "data" / "samples"
    assert [row["id"] for row in examples] == ["detroit", "sacramento", "tokyo"]
    for row in examples:
        assert row["rs_path"].is_file() and row["sv_path"].is_file()
        lon_min, lat_max, lon_max, lat_min = row["bbox"]
        # The photo was taken inside the crop the reference model saw.
        assert lon_min < row["lon"] < lon_max and lat_min < row["lat"] < lat_max
        assert lon_max - lon_min < 0.05 and lat_max - lat_min < 0.05


def _draw() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_every_test_starts_from_the_same_seed() -> None:
    first = _draw()
    random.seed(TEST_SEED)
    np.random.seed(TEST_SEED)
    torch.manual_seed(TEST_SEED)
    assert _draw() == first


def test_torch_uses_the_configured_threads() -> None:
    assert torch.get_num_threads() == int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count())


def test_qgis_runs_offscreen_on_temporary_settings(qgis_app) -> None:
    from qgis.core import QgsSettings

    assert os.environ["QT_QPA_PLATFORM"] == "offscreen"
    settings = QgsSettings()
    settings.setValue("gair_tests/probe", 1)
    settings.sync()
    settings_file = Path(settings.fileName()).resolve()
    assert settings_file.is_relative_to(Path(tempfile.gettempdir()).resolve())
    assert not settings_file.is_relative_to(Path.home() / ".local" / "share" / "QGIS")
    assert not settings_file.is_relative_to(ROOT)
