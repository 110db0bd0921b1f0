"""Crop layout geometry: coverage, overlap, flush edges, truncated crops, blend weights, ground units."""
from __future__ import annotations

import numpy as np
import pytest
from rasterio.crs import CRS

from engine import GAIRError
from engine.pipeline.tiling import CropLayout, metres_per_unit, taper


@pytest.mark.parametrize("height, width, crop, overlap", [(181, 246, 64, 0.5), (500, 1000, 224, 0.5),
                                                          (300, 700, 100, 0.25), (64, 64, 64, 0.5)])
def test_crops_cover_the_grid_with_the_overlap_asked(height, width, crop, overlap):
    layout = CropLayout(height, width, crop, crop, overlap)
    for starts, length in ((layout.row_starts, height), (layout.col_starts, width)):
        assert starts[0] == 0 and starts[-1] == length - crop  # flush with both edges, never past them
        assert np.all(np.diff(starts) <= crop - round(overlap * crop)) and np.all(np.diff(starts) > 0)
    total = np.zeros((height, width))
    for i in range(len(layout)):
        (wy, wx), (r, c) = layout.weights(i), layout.origin(i)
        total[r:r + crop, c:c + crop] += np.outer(wy, wx)
    assert total.min() > 0.2  # every pixel is covered with real weight, the grid border included


def test_half_overlap_weights_are_a_partition_of_unity_inside():
    layout = CropLayout(64 * 5, 64 * 5, 128, 128, 0.5)  # exact stride 64
    assert list(layout.col_starts) == [0, 64, 128, 192]
    total = np.zeros((320, 320))
    for i in range(len(layout)):
        (wy, wx), (r, c) = layout.weights(i), layout.origin(i)
        total[r:r + 128, c:c + 128] += np.outer(wy, wx)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_weights_vanish_at_edges_facing_neighbours_only():
    layout = CropLayout(200, 200, 100, 100, 0.5)
    wy, wx = layout.weights(0)  # top-left crop: flat on the grid border, tapered towards its neighbours
    assert wx[0] == 1 and wy[0] == 1 and wx[-1] < 1e-3 and wy[-1] < 1e-3
    wy, wx = layout.weights(len(layout) - 1)
    assert wx[0] < 1e-3 and wx[-1] == 1
    assert taper(8, 4, 4).tolist() == pytest.approx([0.038, 0.309, 0.691, 0.962, 0.962, 0.691, 0.309, 0.038],
                                                    abs=1e-3)


def test_small_grid_gets_one_truncated_crop_and_touching_finds_crops():
    layout = CropLayout(181, 246, 224, 224)
    assert (layout.crop_h, layout.crop_w, layout.shape) == (181, 224, (1, 2))
    assert list(layout.col_starts) == [0, 22]
    big = CropLayout(400, 400, 100, 100, 0.5)
    assert big.touching(0, 10, 0, 10) == [0]
    assert big.touching(60, 61, 60, 61) == [0, 1, 7, 8]
    with pytest.raises(GAIRError, match="overlap"):
        CropLayout(10, 10, 5, 5, 1.0)


def test_ground_units():
    # the real samples: EPSG:4326 with 0.0000898-degree pixels = 10 m, so 224 pixels make a crop
    assert 2240 / (8.983152841195215e-05 * metres_per_unit(CRS.from_epsg(4326))) == pytest.approx(224, abs=1e-6)
    assert metres_per_unit(CRS.from_epsg(32633)) == 1.0
    assert metres_per_unit(CRS.from_epsg(2263)) == pytest.approx(0.3048006, rel=1e-6)  # US survey feet
    with pytest.raises(GAIRError, match="no CRS"):
        metres_per_unit(None)
