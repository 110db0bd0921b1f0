"""The evaluation protocol itself: folds, spatial blocks, stratified label fractions, probe and kNN scoring."""
from __future__ import annotations

import numpy as np
import pytest

from engine.errors import GAIRError
from engine.evaluate.protocol import (
    ProtocolConfig,
    block_ids,
    evaluate_features,
    feature_classifiers,
    make_folds,
    subsample,
)


def test_spatial_block_folds_never_share_a_block_and_cover_every_sample() -> None:
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 10_000, (300, 2))
    labels = rng.integers(0, 3, 300)
    config = ProtocolConfig(splits=("blocks",), block_size=2500.0, folds=4)
    blocks = block_ids(coords, 2500.0)
    assert len(np.unique(blocks)) == 16
    folds = make_folds(labels, "blocks", config, coords)
    assert len(folds) == 4
    tested = np.concatenate([te for _, te in folds])
    assert sorted(tested.tolist()) == list(range(300))
    for train, test in folds:
        assert not set(blocks[train]) & set(blocks[test])
        assert not set(train) & set(test)


def test_random_folds_are_stratified_and_seeded() -> None:
    labels = np.repeat(["a", "b", "c"], [50, 30, 20])
    config = ProtocolConfig(folds=5, seed=3)
    folds = make_folds(labels, "random", config)
    for _, test in folds:
        _, counts = np.unique(labels[test], return_counts=True)
        assert counts.tolist() == [10, 6, 4]
    again = make_folds(labels, "random", config)
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again))
    with pytest.raises(GAIRError, match="only 1 sample"):
        make_folds(np.array(["a", "a", "b"]), "random", config)
    with pytest.raises(GAIRError, match="one block"):
        make_folds(labels, "blocks", ProtocolConfig(splits=("blocks",), block_size=1e9), np.zeros((100, 2)))


def test_subsample_keeps_each_class_at_the_fraction_with_at_least_one() -> None:
    labels = np.repeat([0, 1, 2], [200, 40, 3])
    train = np.arange(len(labels))
    rng = np.random.default_rng(0)
    picked = subsample(train, labels, 0.05, rng)
    assert np.bincount(labels[picked]).tolist() == [10, 2, 1]
    assert len(set(picked.tolist())) == len(picked)
    assert (subsample(train, labels, 1.0, rng) == train).all()


def test_probe_and_knn_score_separable_features_perfectly_and_noise_at_chance() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2, 3], 40)
    centres = rng.standard_normal((4, 16)) * 4
    separable = centres[labels] + rng.standard_normal((160, 16))
    noise = rng.standard_normal((160, 16))
    config = ProtocolConfig(fractions=(0.05, 1.0), folds=4, repeats=3)
    result = evaluate_features({"signal": feature_classifiers(separable, 5), "noise": feature_classifiers(noise, 5)},
                               labels, config)["random"]
    assert result["folds"] == 4 and result["test_sizes"] == [40, 40, 40, 40]
    for classifier in ("linear", "knn"):
        low, full = result["methods"]["signal"][classifier]
        assert low["fraction"] == 0.05 and low["n_train"] == 8 and low["runs"] == 12  # 2 labels per class
        assert full["runs"] == 4 and full["n_train"] == 120
        assert full["accuracy"] > 0.97 and low["accuracy"] > 0.8
        assert result["methods"]["noise"][classifier][-1]["accuracy"] < 0.4
        assert 0 <= full["macro_f1"] <= 1 and full["accuracy_std"] >= 0


def test_protocol_settings_are_checked() -> None:
    with pytest.raises(GAIRError, match="split must be"):
        ProtocolConfig(splits=("kfold",))
    with pytest.raises(GAIRError, match="fractions"):
        ProtocolConfig(fractions=(0.0, 1.0))
    with pytest.raises(GAIRError, match="folds"):
        ProtocolConfig(folds=1)
