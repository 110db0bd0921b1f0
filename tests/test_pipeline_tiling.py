"""Crop layout geometry: blend tapers, overlap limits, touching, ground units (the anchored grid itself:
tests/test_pipeline_seamless.py)."""
from __future__ import annotations

import pytest
from rasterio.crs import CRS

from engine import GAIRError
from engine.pipeline.tiling import AnchoredLayout, metres_per_unit, taper


def test_taper_and_weights_vanish_at_edges_facing_neighbours_only():
    assert taper(8, 4, 4).tolist() == pytest.approx([0.038, 0.309, 0.691, 0.962, 0.962, 0.691, 0.309, 0.038],
                                                    abs=1e-3)
    layout = AnchoredLayout(300, 300, 100, 100, 0.5, scene_h=300, scene_w=300, margin_h=10, margin_w=10)
    wy, wx = layout.weights(0)  # top-left crop: flat towards the scene's edge, tapered towards its neighbours
    assert wx[0] == 1 and wy[0] == 1 and wx[-1] < 1e-3 and wy[-1] < 1e-3
    wy, wx = layout.weights(len(layout) - 1)
    assert wx[0] < 1e-3 and wx[-1] == 1


def test_touching_finds_the_crops_with_weight_and_overlap_is_checked():
    big = AnchoredLayout(400, 400, 100, 100, 0.5)  # unbounded: crop k starts at 50 k
    assert big.origin(0) == (-50, -50)
    assert [big.origin(i) for i in big.touching(0, 1, 0, 1)] == [(-50, -50), (-50, 0), (0, -50), (0, 0)]
    assert [big.origin(i) for i in big.touching(60, 61, 60, 61)] == [(0, 0), (0, 50), (50, 0), (50, 50)]
    with pytest.raises(GAIRError, match="overlap"):
        AnchoredLayout(10, 10, 5, 5, 1.0)


def test_ground_units():
    # the real samples: EPSG:4326 with 0.0000898-degree pixels = 10 m, so 224 pixels make a crop
    assert 2240 / (8.983152841195215e-05 * metres_per_unit(CRS.from_epsg(4326))) == pytest.approx(224, abs=1e-6)
    assert metres_per_unit(CRS.from_epsg(32633)) == 1.0
    assert metres_per_unit(CRS.from_epsg(2263)) == pytest.approx(0.3048006, rel=1e-6)  # US survey feet
    with pytest.raises(GAIRError, match="no CRS"):
        metres_per_unit(None)
