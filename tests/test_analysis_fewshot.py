"""Few-shot search: the mean-difference score, negatives pushing their look-alikes down, the coarse (decimated,
from overviews) and windowed grids, top places, errors, and the CLI."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio

from engine import Cancelled, GAIRError
from engine.analysis.fewshot import fewshot_search
from engine.analysis.pixels import read_pixels_at
from engine.analysis.synthetic import make_planted_raster, pixel_xy
from engine.cli.main import main
from engine.io.embedding_raster import EmbeddingRaster, overview_factors


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return make_planted_raster(tmp_path_factory.mktemp("fewshot") / "planted.tif", dims=24, n_targets=5, seed=3,
                               dtype="int8")


def _xy(planted, rows, cols) -> list[tuple[float, float]]:
    xs, ys = pixel_xy(planted, rows, cols)
    return list(zip(np.atleast_1d(xs).tolist(), np.atleast_1d(ys).tolist()))


def _interior(planted, cls: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of class `cls` whose 3x3 neighbourhood is all that class (clear examples, as a user clicks)."""
    c = planted.classes
    inner = np.zeros_like(c, bool)
    inner[1:-1, 1:-1] = np.all([np.roll(np.roll(c, dr, 0), dc, 1)[1:-1, 1:-1] == c[1:-1, 1:-1]
                                for dr in (-1, 0, 1) for dc in (-1, 0, 1)], axis=0)
    rows, cols = np.nonzero(inner & (c == cls))
    pick = np.random.default_rng(seed).choice(len(rows), count, replace=False)
    return rows[pick], cols[pick]


def _scores(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def test_score_is_cos_to_positive_mean_minus_cos_to_negative_mean(planted, tmp_path):
    pos = _interior(planted, 0, 3, seed=1)
    neg = _interior(planted, 1, 2, seed=2)
    result = fewshot_search(planted.path, tmp_path / "score.tif", positives=_xy(planted, *pos),
                            negatives=_xy(planted, *neg), top_k=0)
    assert (result.positives, result.negatives, result.factor) == (3, 2, 1)
    assert result.method.startswith("mean difference")
    score = _scores(result.path)
    with EmbeddingRaster(planted.path) as raster:
        unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
        p = unit(unit(read_pixels_at(raster, *pos)).mean(axis=0))
        n = unit(unit(read_pixels_at(raster, *neg)).mean(axis=0))
        rows, cols = np.array([20, 50, 90, 40]), np.array([100, 10, 64, 33])
        x = unit(read_pixels_at(raster, rows, cols))
    np.testing.assert_allclose(score[rows, cols], x @ p - x @ n, atol=1e-5)
    assert np.isnan(score[0, 0]) and result.valid_pixels == np.isfinite(score).sum()  # the nodata corner
    with rasterio.open(result.path) as ds:
        assert ds.tags()["GAIR_KIND"] == "similarity" and ds.transform == planted.transform


def _on_targets(planted, hits) -> list[bool]:
    """Whether each hit is on a planted look-alike patch (3 x 3) other than the first (the clicked one)."""
    return [bool(np.abs(planted.targets[1:] - [h.row, h.col]).max(axis=1).min() <= 1) for h in hits]


def test_a_negative_click_turns_the_search_to_the_look_alikes(planted, tmp_path):
    """Positives on a look-alike patch and on class-0 ground: their mean finds more class-0 ground. A negative on
    class-0 ground takes the ground out: the top places become the other look-alikes, class 0 falls below zero."""
    target = planted.targets[0]
    ground = _interior(planted, 0, 2, seed=3)
    positives = _xy(planted, [target[0], ground[0][0]], [target[1], ground[1][0]])
    negative = _xy(planted, [ground[0][1]], [ground[1][1]])
    only = fewshot_search(planted.path, tmp_path / "pos.tif", positives=positives, top_k=4)
    both = fewshot_search(planted.path, tmp_path / "both.tif", positives=positives, negatives=negative, top_k=4)
    assert _on_targets(planted, only.hits) == [False] * 4
    assert all(planted.classes[h.row, h.col] == 0 for h in only.hits)
    assert _on_targets(planted, both.hits) == [True] * 4
    classes, scores = planted.classes, _scores(both.path)
    assert np.nanmean(_scores(only.path)[classes == 0]) > 0.5 and np.nanmean(scores[classes == 0]) < -0.1
    ground = classes == 0
    for row, col in planted.targets:
        ground[row - 1:row + 2, col - 1:col + 2] = False
    rows, cols = planted.targets[1:].T
    assert scores[rows, cols].min() > np.nanmax(scores[ground])  # every look-alike above all of the ground


def test_top_places_are_the_planted_look_alikes_not_the_clicked_one(planted, tmp_path):
    first = planted.targets[0]
    negative = _interior(planted, 0, 1, seed=5)
    result = fewshot_search(planted.path, tmp_path / "s.tif", positives=_xy(planted, [first[0]], [first[1]]),
                            negatives=_xy(planted, *negative), top_k=4, hits_path=tmp_path / "hits.gpkg")
    found = sorted((h.row, h.col) for h in result.hits)
    assert len(found) == 4 and result.hits_path.is_file()
    for row, col in found:  # each hit is on another planted patch (3x3), none on the clicked one
        distance = np.abs(planted.targets[1:] - [row, col]).max(axis=1)
        assert distance.min() <= 1
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)


@pytest.mark.parametrize("dtype", ["int8", "float32", "int16"])
def test_max_pixels_scores_a_decimated_grid_from_overviews(tmp_path, dtype):
    big = make_planted_raster(tmp_path / "big.tif", dims=8, height=1024, width=1152, regions=40, n_targets=6,
                              target_patch=5, seed=2, dtype=dtype, tile=256)
    with EmbeddingRaster(big.path) as raster:
        assert raster.overview_factors() == overview_factors(1152, 1024) == [4, 16]
    pos = _xy(big, [big.targets[0][0]], [big.targets[0][1]])
    full = fewshot_search(big.path, tmp_path / "full.tif", positives=pos, top_k=3)
    coarse = fewshot_search(big.path, tmp_path / "coarse.tif", positives=pos, top_k=3, max_pixels=256 * 288,
                            hits_path=tmp_path / "coarse.gpkg")
    assert (coarse.factor, coarse.width, coarse.height) == (4, 288, 256)
    fine, rough = _scores(full.path), _scores(coarse.path)
    with rasterio.open(coarse.path) as ds:
        assert ds.transform.a == 4 * big.transform.a and ds.bounds == rasterio.open(full.path).bounds
    blocks = fine.reshape(256, 4, 288, 4).transpose(0, 2, 1, 3).reshape(256, 288, 16)
    # every coarse pixel is the full-resolution score of one pixel of its 4 x 4 block (nearest, no blending)
    finite = np.isfinite(rough)
    gap = np.nanmin(np.abs(blocks[finite] - rough[finite][:, None]), axis=1)
    assert finite.mean() > 0.99 and np.all(gap < 1e-5)
    # the top places, full and coarse, are on the other planted patches (5 x 5: every one holds a coarse pixel;
    # a coarse place is its 4 x 4 block's centre)
    for hits, tolerance in ((full.hits, 2), (coarse.hits, 2 + 2)):
        assert all(np.abs(big.targets[1:] - [h.row, h.col]).max(axis=1).min() <= tolerance for h in hits)
    # a window at full resolution: the same scores as the whole run there
    x0, y1 = big.transform * (300, 200)
    x1, y0 = big.transform * (620, 456)
    window = fewshot_search(big.path, tmp_path / "window.tif", positives=pos, top_k=0, extent=(x0, y0, x1, y1))
    assert window.window == (300, 200, 320, 256) and window.factor == 1
    np.testing.assert_array_equal(_scores(window.path), fine[200:456, 300:620])


def test_extent_in_another_crs_and_small_rasters_have_no_overviews(planted, tmp_path):
    from pyproj import Transformer

    with EmbeddingRaster(planted.path) as raster:
        assert raster.overview_factors() == []  # under a megapixel: nothing to decimate
    to_lonlat = Transformer.from_crs(planted.crs, "EPSG:4326", always_xy=True)
    (x0, x1), (y0, y1) = to_lonlat.transform(*planted.transform * (np.array([40, 80]), np.array([70, 30])))
    result = fewshot_search(planted.path, tmp_path / "w.tif", positives=_xy(planted, [50], [60]), top_k=0,
                            extent=(x0, y0, x1, y1), extent_crs="EPSG:4326")
    col, row, width, height = result.window
    assert 38 <= col <= 40 and 28 <= row <= 30 and 80 <= col + width <= 82 and 70 <= row + height <= 72


def test_a_whole_raster_beyond_memory_is_streamed_with_the_same_scores_and_places(planted, tmp_path, monkeypatch):
    import engine.analysis.fewshot as fewshot

    pos, neg = _xy(planted, [planted.targets[0][0]], [planted.targets[0][1]]), _xy(planted, [50], [60])
    kept = fewshot_search(planted.path, tmp_path / "memory.tif", positives=pos, negatives=neg, top_k=4)
    monkeypatch.setattr(fewshot, "MAX_WINDOW_PIXELS", 1000)  # the planted raster has 12288 pixels
    streamed = fewshot_search(planted.path, tmp_path / "streamed.tif", positives=pos, negatives=neg, top_k=4,
                              hits_path=tmp_path / "streamed.gpkg")
    np.testing.assert_array_equal(_scores(streamed.path), _scores(kept.path))
    assert [(h.row, h.col, h.score) for h in streamed.hits] == [(h.row, h.col, h.score) for h in kept.hits]
    assert streamed.valid_pixels == kept.valid_pixels and streamed.hits_path.is_file()
    with pytest.raises(GAIRError, match="too many to score at once"):  # a window or a decimation is kept in memory
        fewshot_search(planted.path, tmp_path / "window.tif", positives=pos, extent=planted.transform * (0, 96)
                       + planted.transform * (100, 0))
    assert not (tmp_path / "window.tif").exists()


def test_refusals_and_cancel(planted, tmp_path):
    same = _xy(planted, [50], [60])
    with pytest.raises(GAIRError, match="same mean"):
        fewshot_search(planted.path, tmp_path / "a.tif", positives=same, negatives=same)
    with pytest.raises(GAIRError, match="positive"):
        fewshot_search(planted.path, tmp_path / "a.tif", positives=[])
    with pytest.raises(GAIRError, match="nodata"):
        fewshot_search(planted.path, tmp_path / "a.tif", positives=same, negatives=_xy(planted, [1], [1]))
    with pytest.raises(GAIRError, match="does not overlap"):
        fewshot_search(planted.path, tmp_path / "a.tif", positives=same, extent=(0, 0, 10, 10))
    with pytest.raises(Cancelled):
        fewshot_search(planted.path, tmp_path / "a.tif", positives=same, cancel=lambda: True)
    assert list(tmp_path.iterdir()) == []  # nothing written by any of them


def test_cli_fewshot_search(planted, tmp_path, capsys):
    (px, py), (nx, ny) = _xy(planted, [planted.targets[0][0], 50], [planted.targets[0][1], 60])
    out = tmp_path / "cli.tif"
    code = main(["fewshot-search", str(planted.path), str(out), "--positive", str(px), str(py), "--negative", str(nx),
                 str(ny), "--top-k", "3", "--hits", str(tmp_path / "h.gpkg"), "--quiet"])
    stdout = capsys.readouterr().out
    assert code == 0 and out.is_file() and (tmp_path / "h.gpkg").is_file()
    assert "1 positive, 1 negative example(s); mean difference" in stdout and stdout.count(" score ") == 3
