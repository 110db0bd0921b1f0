"""embed_raster says what it will write before it starts (size estimate) and logs crop progress with time left."""
from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch
from rasterio.windows import Window

import engine
from engine.io.embedding_writer import EmbeddingRasterWriter
from engine.pipeline import embed_raster
from engine.pipeline.raster import (
    DEFAULT_DIMS,
    OutputEstimate,
    estimate_output_bytes,
    format_bytes,
    format_duration,
)

from .test_pipeline_raster import synthetic_s2, write_raster


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return engine.GAIRModel(engine.GAIRConfig.tiny()).eval()


def test_estimate_numbers_and_a_sentinel2_tile():
    assert estimate_output_bytes(100, 200, 8) == 100 * 200 * 8 * 4
    assert estimate_output_bytes(100, 200, 8, "int16") == 100 * 200 * 8 * 2
    tile_all = estimate_output_bytes(10980, 10980, 768)
    tile_default = estimate_output_bytes(10980, 10980, DEFAULT_DIMS)
    assert round(tile_all / 1e9) == 370 and round(tile_default / 1e9) == 31  # the numbers the help text gives
    assert DEFAULT_DIMS == 64
    assert format_bytes(370_359_244_800) == "370.4 GB" and format_bytes(999) == "999 B"
    assert format_duration(65) == "1:05" and format_duration(3725) == "1:02:05"
    text = OutputEstimate(10980, 10980, 64, "float32", 1234).describe()
    assert "10980 x 10980 px x 64 dims float32 = 30.9 GB" in text and "1234 crops" in text


def test_uncompressed_file_matches_the_estimate_exactly(tmp_path):
    height, width, dims = 96, 160, 12
    with EmbeddingRasterWriter(tmp_path / "plain.tif", width=width, height=height, crs="EPSG:32633",
                               transform=(10, 0, 500000, 0, -10, 4500000), dims=dims, model="m", tile=32,
                               compress="none") as writer:
        writer.write(Window(0, 0, width, height), np.ones((dims, height, width), np.float32))
    size = (tmp_path / "plain.tif").stat().st_size
    expected = estimate_output_bytes(height, width, dims)
    assert expected <= size <= expected + 64 * 1024  # pixel data + header, tags and tile offsets


def test_embed_raster_logs_estimate_then_crop_progress(tiny_model, tmp_path, caplog):
    src = write_raster(tmp_path / "s2.tif", synthetic_s2(160, 224, seed=2))
    out = tmp_path / "gair.tif"
    with caplog.at_level(logging.INFO, logger="engine.pipeline.raster"):
        embed_raster(src, out, tiny_model, dims=8, overlap=0.5, batch_size=5, dtype="float32", quicklook=False)
    messages = [r.getMessage() for r in caplog.records if r.name == "engine.pipeline.raster"]
    estimate = next(m for m in messages if "before compression" in m)
    assert messages.index(estimate) == 0  # said before any crop is encoded
    assert "224 x 160 px x 8 dims float32" in estimate, messages
    expected = estimate_output_bytes(160, 224, 8)
    assert format_bytes(expected) in estimate
    crops = [re.match(r"crop (\d+)/(\d+) \((\d+)%\), (\d+):(\d\d) elapsed, ~(\d+):(\d\d) left", m)
             for m in messages[1:]]
    assert all(crops) and len(crops) >= 5, messages
    done = [int(m.group(1)) for m in crops]
    total = {int(m.group(2)) for m in crops}
    assert len(total) == 1 and f"{total.pop()} crops to encode" in estimate
    assert done == sorted(done) and done[0] == 5 and done[-1] == int(crops[-1].group(2))  # first batch .. all
    assert crops[-1].group(6, 7) == ("0", "00")  # nothing left at the end
    # the real (ZSTD-compressed) file is within the estimate's order of magnitude and not larger than it
    size = out.stat().st_size
    assert 0.3 * expected < size < 1.05 * expected


def test_warns_before_the_work_when_the_disk_is_too_small(tiny_model, tmp_path, caplog, monkeypatch):
    from collections import namedtuple

    import engine.pipeline.raster as raster_module

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(raster_module.shutil, "disk_usage", lambda folder: usage(10**6, 10**6 - 1000, 1000))
    src = write_raster(tmp_path / "s2.tif", synthetic_s2(96, 96, seed=1))
    with caplog.at_level(logging.INFO, logger="engine.pipeline.raster"):
        embed_raster(src, tmp_path / "big.tif", tiny_model, dtype="float32", quicklook=False)
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert "big.tif may need up to 2.4 MB while it is written" in warning.getMessage()  # 1.2 MB, then its COG copy
    assert "only 1.0 KB free" in warning.getMessage()
    assert "fewer dims" in warning.getMessage()
    assert caplog.records.index(warning) == 1  # right after the estimate, before any crop
