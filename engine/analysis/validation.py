"""Estimates you can defend: spatial block cross-validation beside random k-fold, and a learning curve.

Embeddings are spatially autocorrelated: neighbouring pixels hold near-identical vectors. When labels cluster in
space, random folds test on near-copies of the training ground and overstate how well a model maps ground away from
the labels. Spatial block cross-validation holds out whole square blocks (GroupKFold over block ids; a feature lies
in the block of its centre), so test ground is at least a block away from most training ground. The default block
side is the embeddings' own autocorrelation range, read from their empirical variogram (Roberts et al. 2017,
Valavi et al. 2019 "blockCV"): beyond that distance two pixels are no more alike than two random ones, so a held-out
block leaks little. The learning curve refits on 10/25/50/100 % of the labelled features of each training fold.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import GAIRError
from ..io.embedding_raster import EmbeddingRaster
from .rasters import check_cancel

EQUAL_AREA_CRS = "EPSG:6933"  # metres for rasters in degrees (and other non-metre CRSs)
VARIOGRAM_PIXELS = 1500  # random pixels for the variogram: ~1.1 M pairs, a fraction of a second
VARIOGRAM_TILES = 24  # tiles they come from (each read once)
VARIOGRAM_BINS = 20
SILL_SHARE = 0.95  # the "practical range": where the variogram reaches 95 % of its sill
LEARNING_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
CLEAR_GAP = 0.05  # random minus spatial score above which the random estimate is called inflated


def metric_xy(raster: EmbeddingRaster, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(n, 2) pixel centres in metres: the raster's CRS when it is in metres, else an equal-area CRS."""
    from pyproj import CRS, Transformer

    xs, ys = raster.transform * (np.asarray(cols, np.float64) + 0.5, np.asarray(rows, np.float64) + 0.5)
    crs = CRS.from_user_input(raster.crs.to_wkt())
    if crs.is_projected and crs.axis_info and crs.axis_info[0].unit_name in ("metre", "meter"):
        return np.column_stack([xs, ys])
    to_metres = Transformer.from_crs(crs, EQUAL_AREA_CRS, always_xy=True)
    return np.column_stack(to_metres.transform(np.asarray(xs), np.asarray(ys)))


def variogram_sample(raster: EmbeddingRaster, seed: int = 0, cancel=None) -> tuple[np.ndarray, ...]:
    """(vectors, rows, cols) of ~VARIOGRAM_PIXELS valid pixels from at most VARIOGRAM_TILES random tiles: pairs
    within a tile give the short distances, pairs across tiles the long ones, and a whole Sentinel-2 tile costs a
    few dozen tile reads, not one per pixel."""
    windows = raster.windows()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(windows))
    per_tile = max(VARIOGRAM_PIXELS // min(len(windows), VARIOGRAM_TILES), 1)
    vectors, rows, cols = [], [], []
    for index in order[:2 * VARIOGRAM_TILES]:
        check_cancel(cancel, "measuring the embeddings' autocorrelation")
        window = windows[index]
        block = raster.read_block(window).reshape(raster.dims, -1)
        valid = np.flatnonzero(np.isfinite(block).all(axis=0))
        if len(valid) == 0:
            continue
        pick = rng.choice(valid, size=min(per_tile, len(valid)), replace=False)
        vectors.append(block[:, pick].T)
        rows.append(pick // int(window.width) + int(window.row_off))
        cols.append(pick % int(window.width) + int(window.col_off))
        if len(vectors) == VARIOGRAM_TILES:
            break
    if not vectors:
        raise GAIRError(f"{raster.path.name} has no valid pixels")
    return np.concatenate(vectors), np.concatenate(rows), np.concatenate(cols)


def autocorrelation_range(raster: EmbeddingRaster, seed: int = 0, cancel=None) -> dict:
    """The empirical variogram of the unit embedding vectors over pixel pairs (variogram_sample) and its practical
    range: the shortest distance at which the semivariance reaches 95 % of the sill (the mean over all pairs).
    `range_m` is None when the embeddings stay correlated across half the raster."""
    from scipy.spatial.distance import pdist

    vectors, rows, cols = variogram_sample(raster, seed, cancel)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-30)
    distance = pdist(metric_xy(raster, rows, cols))
    semivariance = 0.5 * pdist(unit, "sqeuclidean")
    sill = float(semivariance.mean())
    edges = np.linspace(0.0, distance.max() / 2, VARIOGRAM_BINS + 1)
    which = np.digitize(distance, edges) - 1
    inside = (which >= 0) & (which < VARIOGRAM_BINS)
    counts = np.bincount(which[inside], minlength=VARIOGRAM_BINS)
    gamma = np.bincount(which[inside], weights=semivariance[inside], minlength=VARIOGRAM_BINS) / np.maximum(counts, 1)
    reached = np.flatnonzero((gamma >= SILL_SHARE * sill) & (counts > 0))
    range_m = float(edges[reached[0] + 1]) if len(reached) else None
    return {"range_m": range_m, "sill": sill, "pixels": int(len(unit)),
            "variogram": [{"distance_m": float((edges[i] + edges[i + 1]) / 2), "semivariance": float(gamma[i]),
                           "pairs": int(counts[i])} for i in range(VARIOGRAM_BINS)]}


def feature_blocks(xy: np.ndarray, groups: np.ndarray, block_m: float) -> np.ndarray:
    """Per sample, the id of the square block of side block_m holding its feature's centre (a polygon's pixels
    stay in one block, so it is never on both sides)."""
    owners, inverse = np.unique(groups, return_inverse=True)
    centres = np.zeros((len(owners), 2))
    np.add.at(centres, inverse, xy)
    centres /= np.bincount(inverse)[:, None]
    cells = np.floor(centres / block_m).astype(np.int64)
    _, block_of_feature = np.unique(cells, axis=0, return_inverse=True)
    return block_of_feature.reshape(-1)[inverse]


def median_neighbour_distance(xy: np.ndarray, groups: np.ndarray) -> float | None:
    """Median distance from each labelled feature's centre to the nearest other one (how clustered labels are)."""
    from scipy.spatial import cKDTree

    owners, inverse = np.unique(groups, return_inverse=True)
    if len(owners) < 2:
        return None
    centres = np.zeros((len(owners), 2))
    np.add.at(centres, inverse, xy)
    centres /= np.bincount(inverse)[:, None]
    distances, _ = cKDTree(centres).query(centres, k=2)
    return float(np.median(distances[:, 1]))


def learning_curve(fit_predict: Callable, y: np.ndarray, groups: np.ndarray, folds: list, score: Callable,
                   classification: bool, seed: int, cancel=None, all_labels: np.ndarray | None = None) -> list[dict]:
    """Score of the pooled out-of-fold predictions when each training fold keeps only a fraction of its labelled
    features (per class for classifiers, at least one each); the test folds stay whole. `all_labels`: the
    predictions of these folds with every label, when already made (the 100 % point)."""
    rng = np.random.default_rng(seed)
    points = []
    for fraction in LEARNING_FRACTIONS:
        if fraction >= 1 and all_labels is not None:
            kept = np.mean([len(np.unique(groups[train])) for train, _ in folds])
            points.append({"fraction": fraction, "features": int(kept), **score(y, all_labels)})
            continue
        predicted = np.empty_like(y, dtype=np.float64 if not classification else y.dtype)
        kept_features = []
        for train, test in folds:
            check_cancel(cancel, "computing the learning curve")
            chosen = _subsample_features(train, y, groups, fraction, classification, rng)
            kept_features.append(len(np.unique(groups[chosen])))
            predicted[test] = fit_predict(chosen, test)
        points.append({"fraction": fraction, "features": int(np.mean(kept_features)), **score(y, predicted)})
    return points


def _subsample_features(train: np.ndarray, y: np.ndarray, groups: np.ndarray, fraction: float,
                        classification: bool, rng: np.random.Generator) -> np.ndarray:
    if fraction >= 1:
        return train
    strata = [train[y[train] == c] for c in np.unique(y[train])] if classification else [train]
    kept = []
    for members in strata:
        features = np.unique(groups[members])
        take = max(1 if classification else 2, int(round(fraction * len(features))))
        kept.append(rng.choice(features, size=min(take, len(features)), replace=False))
    return train[np.isin(groups[train], np.concatenate(kept))]


def verdict(random_score: float, spatial: dict, metric: str, range_m: float | None,
            neighbour_m: float | None) -> tuple[str, str]:
    """Which estimate to trust ("spatial" or "random") and why, in one paragraph."""
    if "unavailable" in spatial:
        return "random", (f"Only the random estimate is available ({spatial['unavailable']}). It is optimistic "
                          "when labels cluster in space: check it on labels from other places.")
    gap = random_score - spatial[metric]
    near = (f"labelled features lie closer to each other (median {neighbour_m:.0f} m) than the embeddings' "
            f"autocorrelation range ({range_m:.0f} m)" if neighbour_m is not None and range_m is not None
            and neighbour_m < range_m else "labels cluster in space")
    if gap > CLEAR_GAP:
        return "spatial", (f"Trust the spatial block estimate ({metric} {spatial[metric]:.3f}), not the random one "
                           f"({random_score:.3f}): {near}, so random folds test on near-copies of training ground "
                           f"and overstate the {metric} by {gap:.3f}. The spatial estimate is what to expect on "
                           "ground away from your labels.")
    return "spatial", (f"The two estimates agree ({metric} {random_score:.3f} random, {spatial[metric]:.3f} spatial): "
                       "nearby labels do not inflate the random estimate much. Quote the spatial one, the "
                       "conservative estimate for ground away from your labels.")


def spatial_block_size(raster: EmbeddingRaster, xy: np.ndarray, block_km: float | None, seed: int,
                       cancel=None) -> tuple[float | None, str, dict | None]:
    """(block side in metres or None, where it comes from, the variogram when it was measured)."""
    if block_km is not None:
        return (block_km * 1000.0, "given", None) if block_km > 0 else (None, "turned off (block size 0)", None)
    variogram = autocorrelation_range(raster, seed, cancel)
    if variogram["range_m"] is not None:
        return variogram["range_m"], "the embeddings' autocorrelation range", variogram
    extent = float(np.ptp(xy, axis=0).max())
    return (extent / 4 or None, "a quarter of the labels' extent (the embeddings stay correlated across half the "
            "raster, so no shorter range was found)", variogram)


def defend_estimates(raster: EmbeddingRaster, data, y: np.ndarray, how, folds: int, seed: int,
                     block_km: float | None, with_learning_curve: bool, random_predicted: np.ndarray,
                     cancel=None) -> dict:
    """The report's `validation` section: random and spatial block estimates, the learning curve, and which
    estimate to trust with the reason. `how` is the task's classify.Estimation."""
    from sklearn.model_selection import GroupKFold, cross_val_predict

    xy = metric_xy(raster, data.rows, data.cols)
    classification = how.task == "classification"
    random_folds = list(how.splitter(folds, seed).split(data.vectors, y, data.groups))
    block_m, source, variogram = spatial_block_size(raster, xy, block_km, seed, cancel)
    spatial: dict = {"block_m": block_m, "block_source": source}
    spatial_folds, spatial_predicted = None, None
    if block_m is None:
        spatial["unavailable"] = source
    else:
        blocks = feature_blocks(xy, data.groups, block_m)
        spatial["blocks"] = int(len(np.unique(blocks)))
        if spatial["blocks"] < 2:
            spatial["unavailable"] = (f"all labelled features fall in one block of {block_m:.0f} m; give a smaller "
                                      "block size")
        else:
            spatial_folds = list(GroupKFold(n_splits=min(folds, spatial["blocks"])).split(data.vectors, y, blocks))
            check_cancel(cancel, "cross-validating by spatial blocks")
            try:
                spatial_predicted = cross_val_predict(how.estimator(len(y), seed), data.vectors, y,
                                                      cv=spatial_folds)
                spatial.update(folds=len(spatial_folds), **how.scores(y, spatial_predicted))
            except ValueError as exc:  # e.g. a training fold left with one class
                spatial["unavailable"], spatial_folds = f"a spatial fold cannot be fitted: {exc}", None
    random = {"folds": len(random_folds), **how.scores(y, random_predicted)}
    neighbour = median_neighbour_distance(xy, data.groups)
    range_m = variogram["range_m"] if variogram else None
    trust, why = verdict(random[how.metric], spatial, how.metric, range_m, neighbour)
    section = {"metric": how.metric, "random": random, "spatial": spatial, "trust": trust, "why": why,
               "median_neighbour_distance_m": neighbour, "autocorrelation_range_m": range_m,
               "variogram": variogram["variogram"] if variogram else None}
    if with_learning_curve:
        split_name, split, full = (("spatial", spatial_folds, spatial_predicted) if spatial_folds
                                   else ("random", random_folds, random_predicted))

        def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
            return how.estimator(len(train), seed).fit(data.vectors[train], y[train]).predict(data.vectors[test])

        try:
            points = learning_curve(fit_predict, y, data.groups, split, how.scores, classification, seed, cancel,
                                    all_labels=full)
            section["learning_curve"] = {"split": split_name, "points": points}
        except ValueError as exc:
            section["learning_curve"] = {"split": split_name, "unavailable": str(exc)}
    return section
