"""The token lattice: crop positions, blend weights summing to one on every cell, which crops a window reads,
ground units (the field it gives: tests/test_pipeline_raster.py, tests/test_pipeline_seamless.py)."""
from __future__ import annotations

import numpy as np
import pytest
from rasterio.crs import CRS

from engine import GAIRError
from engine.pipeline.tiling import LatticeAxis, TokenLattice, metres_per_unit, taper

AXES = [LatticeAxis(scene, crop, cells, overlap, margin)
        for scene in (15, 150, 230, 1000)
        for crop, cells, margin in ((64, 6, 22), (224, 12, 38))
        for overlap in range(cells // 2 + 1)]


def test_taper():
    assert taper(8, 4, 4).tolist() == pytest.approx([0.038, 0.309, 0.691, 0.962, 0.962, 0.691, 0.309, 0.038],
                                                    abs=1e-3)
    assert taper(5, 0, 0).tolist() == [1.0] * 5


@pytest.mark.parametrize("axis", AXES, ids=str)
def test_every_cell_the_scene_reads_has_unit_weight_from_few_crops(axis):
    total, crops = np.zeros(axis.end + axis.cells), np.zeros(axis.end + axis.cells)
    for k in range(axis.count):
        first = axis.first_cell(k)
        assert first >= 0 and axis.start(k) < axis.scene  # no crop lies wholly past the raster
        total[first:first + axis.cells] += axis.weights(k)
        crops[first:first + axis.cells] += 1
    # the two ramps of a shared stretch sum to one; where the pulled-back last crop meets two crops, blend_tokens
    # divides by the total
    pairs = crops[:axis.end] <= 2
    np.testing.assert_allclose(total[:axis.end][pairs], 1.0, atol=1e-6)
    assert (total[:axis.end] > 0.5).all()
    if axis.count > 1:  # one crop fewer would leave cells without a token
        assert (axis.count - 2) * axis.stride + axis.cells < axis.end
    assert axis.start(0) == -axis.margin and axis.weights(0)[0] == 1.0 and axis.weights(axis.count - 1)[-1] == 1.0


@pytest.mark.parametrize("axis", AXES[::5], ids=str)
def test_crops_for_are_the_crops_covering_the_cells(axis):
    rng = np.random.default_rng(0)
    for a in rng.integers(0, axis.end, 20):
        b = int(rng.integers(a + 1, axis.end + 1))
        brute = [k for k in range(axis.count)
                 if axis.first_cell(k) < b and axis.first_cell(k) + axis.cells > a]
        assert sorted(axis.crops_for(int(a), b)) == brute


def test_a_window_reads_cells_of_the_lattice_only_and_crops_start_on_whole_pixels():
    lattice = TokenLattice.for_scene(1000, 700, 224, 224, 12, 0.0, 2.0)
    assert lattice.shape == (5, 4) and lattice.rows.margin == 38 and lattice.rows.cell == pytest.approx(224 / 12)
    assert [lattice.rows.start(k) for k in range(5)] == [-38, 186, 410, 634, 821]  # the last pulled back
    a, b, c, d = lattice.cells_for(0, 1000, 0, 700)
    assert a == c == 0 and b == lattice.rows.end and d == lattice.cols.end
    window = lattice.touching(400, 420, 300, 310)  # crops of rows 1-2 (joint at 410), column 1
    assert window == [1 * 4 + 1, 2 * 4 + 1]
    quarter = TokenLattice.for_scene(1000, 700, 224, 224, 12, 0.25, 2.0)
    assert quarter.rows.stride == 9 and quarter.rows.start(1) == 168 - 38


def test_bad_lattices_are_refused():
    with pytest.raises(GAIRError, match="overlap"):
        TokenLattice.for_scene(100, 100, 64, 64, 6, 1.0, 2.0)
    with pytest.raises(GAIRError, match="1.5 cells"):
        TokenLattice.for_scene(100, 100, 64, 64, 6, 0.0, 1.0)


def test_ground_units():
    # the real samples: EPSG:4326 with 0.0000898-degree pixels = 10 m, so 224 pixels make a crop
    assert 2240 / (8.983152841195215e-05 * metres_per_unit(CRS.from_epsg(4326))) == pytest.approx(224, abs=1e-6)
    assert metres_per_unit(CRS.from_epsg(32633)) == 1.0
    assert metres_per_unit(CRS.from_epsg(2263)) == pytest.approx(0.3048006, rel=1e-6)  # US survey feet
    with pytest.raises(GAIRError, match="no CRS"):
        metres_per_unit(None)
