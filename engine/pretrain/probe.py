"""Linear probe of localized embeddings at labelled points: how much land cover a model's embedding space holds.

Each labelled point gets a crop that contains it at a random offset (as in pretraining); its embedding is the
model's query at the point (NILI etc.) or the crop mean. A standardised logistic regression is fitted on one half
of the points and scored on the other.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import GAIRError
from .data import PretrainDataset
from .manifest import Sample, read_manifest


@dataclass
class ProbeResult:
    accuracy: float
    n_train: int
    n_test: int
    classes: int


def label_samples(rasters: list[str | Path], points: list[dict], out_manifest: str | Path, ground_m: float,
                  seed: int = 1, model_config=None) -> list[Sample]:
    """Plan crops around label points (no photos) and return them as samples; labels come from the points."""
    from .build_dataset import build_manifest

    build_manifest(rasters, points, out_manifest, ground_m, seed=seed, require_photos=False, model_config=model_config)
    return read_manifest(out_manifest, require_photos=False)


@torch.no_grad()
def point_embeddings(model, samples: list[Sample], mode: str = "nili", batch_size: int = 64) -> np.ndarray:
    """(N, D) embedding of each sample's crop at its query point; mode "mean" = the crop mean."""
    from .objective import localized

    dataset = PretrainDataset(samples, model.config, train=False, photos=False)
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        rs = torch.stack([it["rs"] for it in items]).to(model.device, model.dtype)
        rel = torch.stack([it["rel_xy"] for it in items])
        out.append(localized(model, model.rs_tokens(rs), rel, mode).float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(out)


def linear_probe(features: np.ndarray, labels: list[str] | np.ndarray, seed: int = 0, train_fraction: float = 0.5,
                 repeats: int = 1) -> ProbeResult:
    """Accuracy of a standardised logistic regression on stratified held-out splits (mean over `repeats` splits)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise GAIRError("the probe needs at least two classes among the labelled points")
    scores = []
    for k in range(repeats):
        x_train, x_test, y_train, y_test = train_test_split(features, labels, train_size=train_fraction,
                                                            random_state=seed + k, stratify=labels)
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        scores.append(clf.fit(x_train, y_train).score(x_test, y_test))
    return ProbeResult(float(np.mean(scores)), len(y_train), len(y_test), len(np.unique(labels)))


@dataclass
class WorldBenchmark:
    """Probe accuracies at held-out label points of a synthetic world, before and after pretraining."""

    random: dict[str, float]  # query mode -> accuracy of the randomly initialised model
    pretrained: dict[str, float]
    bundle: Path
    train_seconds: float
    steps: int
    n_points: int


def synthetic_benchmark(out_dir: str | Path, config_path: str | Path, overrides: list[str] | None = None,
                        spec=None, modes: tuple[str, ...] = ("nili", "mean"), train_fraction: float = 0.2,
                        repeats: int = 3) -> WorldBenchmark:
    """Make a synthetic world, pretrain on its photos, and probe land cover at its label points with the random
    start and the result. out_dir receives world/, run/ (log, checkpoints, bundle) and the manifests."""
    import time

    import engine

    from ..io.vectors import read_point_table
    from .build_dataset import build_manifest
    from .config import load_config
    from .synthetic import WorldSpec, make_world
    from .train import run
    from .weights import build_start

    out = Path(out_dir)
    world = make_world(out / "world", spec or WorldSpec())
    cfg = load_config(config_path, [f'data.manifest="{out / "manifest.csv"}"', f'train.out_dir="{out / "run"}"',
                                    *(overrides or [])])
    model_config = cfg.gair_config()
    ground = model_config.crop_ground_m
    build_manifest([world.raster], read_point_table(world.photos_csv), out / "manifest.csv", ground,
                   seed=cfg.train.seed, model_config=model_config)
    points = read_point_table(world.labels_csv, path_field="")
    samples = label_samples([world.raster], points, out / "labels_manifest.csv", ground, seed=cfg.train.seed + 1,
                            model_config=model_config)
    labels = [s.label for s in samples]
    start, _ = build_start(cfg)

    def accuracies(model) -> dict[str, float]:
        return {m: linear_probe(point_embeddings(model, samples, m), labels, train_fraction=train_fraction,
                                repeats=repeats).accuracy for m in modes}

    before = accuracies(start)
    t0 = time.perf_counter()
    result = run(cfg, overwrite=True)  # the benchmark owns its folder: a second run replaces the first
    seconds = time.perf_counter() - t0
    after = accuracies(engine.load_model(result.bundle, device="cpu"))
    return WorldBenchmark(before, after, result.bundle, seconds, result.steps, len(samples))
