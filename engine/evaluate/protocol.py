"""Frozen-feature evaluation protocol: splits, label-fraction learning curves, linear probe and kNN scores.

Everything here is numpy + scikit-learn and seeded, so a report is reproducible from its JSON settings.
Splits: "random" = stratified K folds; "blocks" = GroupKFold over square spatial blocks (no block is on both sides,
so spatial autocorrelation cannot leak labels into the test fold). Learning curves subsample each training fold to a
fraction of its labels, per class (at least one per class), several seeded repeats below 100 %.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import Cancelled, GAIRError

LEARNING_FRACTIONS = (0.01, 0.05, 0.10, 1.0)
SPLITS = ("random", "blocks")
KNN_K = 5  # small and fixed; lowered per fit to the smallest class count of the training subset (see knn)
# (train indices, their labels, test indices) -> predicted labels of the test indices
FitPredict = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
Cancel = Callable[[], bool] | None


@dataclass(frozen=True)
class ProtocolConfig:
    """How features are scored; stored in the report so a run can be repeated."""

    splits: tuple[str, ...] = ("random",)
    folds: int = 5
    block_size: float | None = None  # side of a spatial block, in the coordinates' units (metres)
    fractions: tuple[float, ...] = LEARNING_FRACTIONS
    repeats: int = 5  # subsamples per fold for fractions below 1
    knn_k: int = KNN_K
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [s for s in self.splits if s not in SPLITS]
        if bad or not self.splits:
            raise GAIRError(f"split must be one or more of {', '.join(SPLITS)}, got {', '.join(self.splits) or 'none'}")
        if "blocks" in self.splits and not (self.block_size and self.block_size > 0):
            raise GAIRError("the spatial-block split needs a block size > 0 (--block-size, in metres)")
        if self.folds < 2:
            raise GAIRError(f"folds must be at least 2, got {self.folds}")
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise GAIRError(f"label fractions must lie in (0, 1], got {list(self.fractions)}")
        if self.repeats < 1 or self.knn_k < 1:
            raise GAIRError("repeats and knn_k must be at least 1")

    def to_dict(self) -> dict:
        return asdict(self)


def block_ids(coords: np.ndarray, block_size: float) -> np.ndarray:
    """One integer id per square block of side block_size that each (x, y) falls in."""
    cells = np.floor(np.asarray(coords, np.float64) / block_size).astype(np.int64)
    _, ids = np.unique(cells, axis=0, return_inverse=True)
    return ids.reshape(-1)


def make_folds(labels: np.ndarray, split: str, config: ProtocolConfig,
               coords: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index pairs of the chosen split."""
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    labels = np.asarray(labels)
    _, counts = np.unique(labels, return_counts=True)
    if len(counts) < 2:
        raise GAIRError("evaluation needs at least two classes among the labelled samples")
    if split == "random":
        folds = min(config.folds, int(counts.min()))
        if folds < 2:
            raise GAIRError(f"a class has only {counts.min()} sample(s); each class needs at least 2 for a "
                            "stratified split. Add samples or drop that class")
        kfold = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.seed)
        return [(tr, te) for tr, te in kfold.split(np.zeros(len(labels)), labels)]
    if coords is None:
        raise GAIRError("the spatial-block split needs sample coordinates")
    groups = block_ids(coords, config.block_size)
    n_blocks = len(np.unique(groups))
    if n_blocks < 2:
        raise GAIRError(f"all samples fall in one block of {config.block_size:g} m; give a smaller --block-size")
    kfold = GroupKFold(n_splits=min(config.folds, n_blocks))
    return [(tr, te) for tr, te in kfold.split(np.zeros(len(labels)), labels, groups)]


def subsample(train: np.ndarray, labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A stratified subset of `train`: round(fraction x count) of each class, at least one."""
    if fraction >= 1:
        return train
    picked = []
    for cls in np.unique(labels[train]):
        members = train[labels[train] == cls]
        take = max(1, int(round(fraction * len(members))))
        picked.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(picked))


def linear_probe(features: np.ndarray) -> FitPredict:
    """Standardised features -> multinomial logistic regression (L2, C=1)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def fit_predict(train: np.ndarray, y: np.ndarray, test: np.ndarray) -> np.ndarray:
        if len(np.unique(y)) < 2:
            return np.full(len(test), y[0])
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        return clf.fit(features[train], y).predict(features[test])

    return fit_predict


def knn(features: np.ndarray, k: int = KNN_K) -> FitPredict:
    """k nearest neighbours by cosine distance on the raw embeddings (majority vote).

    k shrinks to the smallest class count of the training subset: with one label per class (1 % of the labels) a
    larger k would outvote the nearest neighbour by class counts alone.
    """
    from sklearn.neighbors import KNeighborsClassifier

    def fit_predict(train: np.ndarray, y: np.ndarray, test: np.ndarray) -> np.ndarray:
        smallest = int(np.unique(y, return_counts=True)[1].min())
        clf = KNeighborsClassifier(n_neighbors=max(1, min(k, smallest)), metric="cosine", algorithm="brute")
        return clf.fit(features[train], y).predict(features[test])

    return fit_predict


def feature_classifiers(features: np.ndarray, k: int = KNN_K) -> dict[str, FitPredict]:
    """The two frozen-feature classifiers every method is scored with."""
    features = np.asarray(features, np.float64)
    return {"linear": linear_probe(features), "knn": knn(features, k)}


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true), zero_division=0))


def learning_curves(methods: dict[str, dict[str, FitPredict]], labels: np.ndarray,
                    folds: list[tuple[np.ndarray, np.ndarray]], config: ProtocolConfig,
                    progress: Callable[[float], None] | None = None, cancel: Cancel = None) -> dict:
    """{method: {classifier: [one point per fraction]}}; every method sees the same folds and subsets."""
    labels = np.asarray(labels)
    plan = []  # (fraction, fold index, train subset), shared by all methods
    for f_index, fraction in enumerate(config.fractions):
        repeats = 1 if fraction >= 1 else config.repeats
        for k, (train, _) in enumerate(folds):
            for r in range(repeats):
                rng = np.random.default_rng([config.seed, f_index, k, r])
                plan.append((fraction, k, subsample(train, labels, fraction, rng)))
    total = max(1, len(plan) * sum(len(c) for c in methods.values()))
    done = 0
    out: dict = {}
    for method, classifiers in methods.items():
        out[method] = {}
        for name, fit_predict in classifiers.items():
            scores: dict[float, list[tuple[float, float, int]]] = {f: [] for f in config.fractions}
            for fraction, k, train in plan:
                check_cancel(cancel)
                test = folds[k][1]
                pred = np.asarray(fit_predict(train, labels[train], test))
                truth = labels[test]
                scores[fraction].append((float(np.mean(pred == truth)), _macro_f1(truth, pred), len(train)))
                done += 1
                if progress is not None:
                    progress(done / total)
            out[method][name] = [_summary(fraction, runs) for fraction, runs in scores.items()]
    return out


def _summary(fraction: float, runs: list[tuple[float, float, int]]) -> dict:
    acc, f1, n = (np.array(v, np.float64) for v in zip(*runs))
    return {"fraction": float(fraction), "accuracy": float(acc.mean()), "accuracy_std": float(acc.std()),
            "macro_f1": float(f1.mean()), "n_train": float(n.mean()), "runs": len(runs)}


def evaluate_features(methods: dict[str, dict[str, FitPredict]], labels: np.ndarray, config: ProtocolConfig,
                      coords: np.ndarray | None = None, progress: Callable[[float], None] | None = None,
                      cancel: Cancel = None) -> dict:
    """{split: {"folds": n, "test_sizes": [...], "methods": learning curves}} for each split of the config.

    BLAS runs on one thread: these are many small fits, which multi-threaded BLAS slows down several times over
    (measured 6x for a 100 x 32 logistic regression, more beside torch's spinning workers).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _evaluate_splits(methods, labels, config, coords, progress, cancel)


def check_cancel(cancel: Cancel) -> None:
    if cancel is not None and cancel():
        raise Cancelled("evaluation cancelled; no report was written")


def _evaluate_splits(methods, labels, config, coords, progress, cancel) -> dict:
    results = {}
    for i, split in enumerate(config.splits):
        folds = make_folds(labels, split, config, coords)

        def sub(frac: float, i: int = i) -> None:
            if progress is not None:
                progress((i + frac) / len(config.splits))

        results[split] = {"folds": len(folds), "test_sizes": [int(len(te)) for _, te in folds],
                          "methods": learning_curves(methods, labels, folds, config, sub, cancel)}
    return results
