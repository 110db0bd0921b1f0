"""Every analysis command from the CLI, on a synthetic planted raster and on one built from the real S2 sample.

Shared-sample rasters: one whose "embedding" is the scaled bands through a fixed random projection (checks format
and plumbing on real geometry, EPSG:4326, real nodata), and one made by the real pipeline (`engine.embed_raster`,
PCA to 8 dims, int16) with a randomly initialised tiny GAIR model: plumbing only, not model quality.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.windows import Window

from engine.analysis.synthetic import labelled_points, make_planted_raster, pixel_xy
from engine.cli.main import main
from engine.io.embedding_writer import EmbeddingRasterWriter
from engine.io.feature_layer import embedding_tags
from engine.io.space import EmbeddingSpace
from engine.io.vectors import reproject, write_gpkg

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"


def _real_raster(folder: Path) -> tuple[Path, np.ndarray, object]:
    """16-dim deterministic feature map of the Detroit crop; returns path, NDVI and the dataset transform."""
    with rasterio.open(SAMPLES / "detroit_rs.tif") as src:
        bands = src.read().astype(np.float32)
        crs, transform = src.crs, src.transform
    nodata = (bands == 0).all(axis=0)
    scaled = bands / 10000.0
    projection = np.random.default_rng(0).normal(size=(16, bands.shape[0])).astype(np.float32)
    features = np.einsum("kb,bhw->khw", projection, scaled)
    features[:, nodata] = np.nan
    red, nir = scaled[3], scaled[7]
    ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
    path = folder / "detroit_embed.tif"
    h, w = nodata.shape
    with EmbeddingRasterWriter(path, width=w, height=h, crs=crs, transform=transform, dims=16,
                               model="s2proj-test", tile=64) as writer:
        writer.write(Window(0, 0, w, h), features)
    return path, np.where(nodata, np.nan, ndvi), transform


def _run(capsys, *argv) -> str:
    code = main([str(a) for a in argv] + ["--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _ndvi_labels(folder: Path, seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """30 vegetation + 30 built points from the Detroit crop's NDVI, stored in Web Mercator; (path, rows, cols,
    xs, ys) in the sample's pixel grid and EPSG:4326."""
    with rasterio.open(SAMPLES / "detroit_rs.tif") as src:
        bands = src.read().astype(np.float32) / 10000.0
        transform = src.transform
    ndvi = (bands[7] - bands[3]) / np.maximum(bands[7] + bands[3], 1e-6)
    ndvi[(bands == 0).all(axis=0)] = np.nan
    rng = np.random.default_rng(seed)
    veg_r, veg_c = np.nonzero(ndvi > 0.5)
    bare_r, bare_c = np.nonzero(ndvi < 0.15)
    assert len(veg_r) > 50 and len(bare_r) > 50  # the Detroit crop has parks and built-up area
    pick_v, pick_b = rng.choice(len(veg_r), 30, replace=False), rng.choice(len(bare_r), 30, replace=False)
    rows = np.concatenate([veg_r[pick_v], bare_r[pick_b]])
    cols = np.concatenate([veg_c[pick_v], bare_c[pick_b]])
    xs, ys = transform * (cols + 0.5, rows + 0.5)
    # labels stored in Web Mercator: the engine must reproject them to the raster's EPSG:4326
    merc = reproject(shapely.points(xs, ys), "EPSG:4326", "EPSG:3857")
    path = write_gpkg(folder / "labels.gpkg", merc, {"label": np.array(["vegetation"] * 30 + ["built"] * 30,
                                                                        dtype=object),
                                                     "value": ndvi[rows, cols].astype(np.float64)}, "EPSG:3857")
    return path, rows, cols, np.asarray(xs), np.asarray(ys)


def _run_all(capsys, folder: Path, raster: Path, labels: Path, ref_xy: tuple[float, float], ref_crs: str,
             embedding_layer: Path) -> dict:
    """Run each command; return what the tests check."""
    out = {}
    out["cluster"] = _run(capsys, "cluster-embeddings", raster, folder / "clusters.tif", "--k", 4, "--auto-k",
                          "--sample-size", 3000, "--polygons", folder / "clusters.gpkg", "--sieve", 4)
    out["similarity"] = _run(capsys, "similarity-search", raster, folder / "sim.tif", "--point", *ref_xy,
                             "--points-crs", ref_crs, "--top-k", 3, "--threshold", 0.95, "--mask", folder / "mask.tif",
                             "--hits", folder / "hits.gpkg")
    out["classify"] = _run(capsys, "train-classifier", raster, labels, "--field", "label", "--model-output",
                           folder / "m.joblib", "--folds", 3, "--report", folder / "report.json", "--report",
                           folder / "report.html", "--output", folder / "classes.tif", "--confidence",
                           folder / "conf.tif")
    out["apply"] = _run(capsys, "apply-model", raster, folder / "m.joblib", folder / "classes2.tif")
    out["regress"] = _run(capsys, "train-regressor", raster, labels, "--field", "value", "--model-output",
                          folder / "r.joblib", "--method", "ridge", "--folds", 3, "--output", folder / "pred.tif")
    out["rank"] = _run(capsys, "rank-features", embedding_layer, folder / "ranked.gpkg", "--reference-fid", 1)
    out["report"] = json.loads((folder / "report.json").read_text())
    for name in ("clusters.tif", "clusters.gpkg", "sim.tif", "mask.tif", "hits.gpkg", "m.joblib", "report.html",
                 "classes.tif", "conf.tif", "classes2.tif", "r.joblib", "pred.tif", "ranked.gpkg"):
        assert (folder / name).is_file(), name
    with rasterio.open(folder / "classes.tif") as a, rasterio.open(folder / "classes2.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))
    return out


def _embedding_layer(path: Path, vectors: np.ndarray, xs, ys, crs, model: str) -> Path:
    fields = {f"gair_{i:03d}": vectors[:, i].astype(np.float64) for i in range(vectors.shape[1])}
    tags = embedding_tags(EmbeddingSpace(model, "nili", "released"), vectors.shape[1], vectors.shape[1], "rs")
    return write_gpkg(path, shapely.points(xs, ys), fields, crs, layer="embeddings", layer_metadata=tags)


def test_cli_on_synthetic_planted_raster(tmp_path, capsys):
    planted = make_planted_raster(tmp_path / "planted.tif", dims=16, noise=0.5, seed=4)
    rows, cols, labels = labelled_points(planted, 12, seed=1)
    xs, ys = pixel_xy(planted, rows, cols)
    names = np.array(["a", "b", "c", "d"], dtype=object)[labels]
    write_gpkg(tmp_path / "labels.gpkg", shapely.points(xs, ys),
               {"label": names, "value": planted.score[rows, cols]}, planted.crs)
    tr, tc = planted.targets.T
    with rasterio.open(planted.path) as ds:
        vectors = ds.read()[:, tr, tc].T
    layer = _embedding_layer(tmp_path / "emb.gpkg", vectors, *pixel_xy(planted, tr, tc), planted.crs,
                             "synthetic0000")
    rx, ry = pixel_xy(planted, tr[:1], tc[:1])
    out = _run_all(capsys, tmp_path, planted.path, tmp_path / "labels.gpkg", (rx[0], ry[0]), planted.crs, layer)
    assert "k=4" in out["cluster"]
    hit_rows = [line for line in out["similarity"].splitlines() if line.strip().startswith("#")]
    assert len(hit_rows) == 3 and not any(f"(row {tr[0]}, col {tc[0]})" in row for row in hit_rows)  # left out
    assert out["report"]["overall_accuracy"] > 0.9
    assert "R^2" in out["regress"] and float(out["regress"].split("R^2")[1].split()[0]) > 0.9
    assert "fid 1 " in out["rank"].splitlines()[1]


def test_cli_on_real_sample_raster_plumbing(tmp_path, capsys):
    raster, ndvi, transform = _real_raster(tmp_path)
    labels, rows, cols, xs, ys = _ndvi_labels(tmp_path)
    with rasterio.open(raster) as ds:
        vectors = ds.read()[:, rows[:5], cols[:5]].T
    layer = _embedding_layer(tmp_path / "emb.gpkg", vectors, xs[:5], ys[:5], "EPSG:4326", "s2proj-test")
    out = _run_all(capsys, tmp_path, raster, labels, (xs[0], ys[0]), "EPSG:4326", layer)
    first_hit = next(line for line in out["similarity"].splitlines() if line.strip().startswith("#1 "))
    assert f"(row {rows[0]}, col {cols[0]})" not in first_hit and "score 1.0000" not in first_hit  # not itself
    assert out["report"]["overall_accuracy"] > 0.85  # NDVI classes from linear band features: easy, but real
    with rasterio.open(tmp_path / "classes.tif") as ds:
        classes = ds.read(1)
        assert ds.crs.to_epsg() == 4326 and ds.transform == transform
    assert np.array_equal(classes == 0, np.isnan(ndvi))


def test_cli_on_pipeline_raster_plumbing(tmp_path, capsys):
    """A PCA-reduced int16 raster from engine.embed_raster, references from engine.embed_features (full dims)."""
    import torch

    import engine

    torch.manual_seed(0)
    model = engine.GAIRModel(engine.GAIRConfig.tiny())
    raster = engine.embed_raster(SAMPLES / "detroit_rs.tif", tmp_path / "gair.tif", model, dims=8, dtype="int16",
                                 overlap=0.0, quicklook=False)
    labels, _, _, xs, ys = _ndvi_labels(tmp_path)
    points = engine.embed_features(SAMPLES / "detroit_rs.tif", labels, tmp_path / "emb.gpkg", model, overlap=0.0)
    out = _run_all(capsys, tmp_path, raster, labels, (xs[0], ys[0]), "EPSG:4326", Path(points.path))
    assert "score 1.0000" not in next(line for line in out["similarity"].splitlines() if line.strip().startswith("#1 "))
    assert out["report"]["overall_accuracy"] > 0.6  # random weights: plumbing, yet better than chance (0.5)
    ref = main(["similarity-search", str(raster), str(tmp_path / "ref.tif"), "--reference-layer", str(points.path),
                "--aggregate", "max", "--top-k", "0", "--quiet"])  # full-dims vectors projected through the PCA
    assert ref == 0 and "60 reference(s)" in capsys.readouterr().out
    with rasterio.open(tmp_path / "ref.tif") as ds:
        sim = ds.read(1)
    assert np.nanmax(sim) > 0.9  # projected references find pixels like themselves


def test_cli_reports_bad_input_as_one_line(tmp_path, capsys):
    planted = make_planted_raster(tmp_path / "p.tif", dims=8, n_targets=0)
    write_gpkg(tmp_path / "nocrs.gpkg", shapely.points([1.0], [2.0]), {"label": np.array(["a"], dtype=object)}, None)
    code = main(["train-classifier", str(planted.path), str(tmp_path / "nocrs.gpkg"), "--field", "label",
                 "--model-output",
                 str(tmp_path / "m.joblib"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "no CRS" in err and err.count("\n") == 1
