"""CSP's second stage for location encoders: classify labelled points from lon/lat alone, pretrained vs random init.

The CSP paper (Mai et al. 2023) measures pretraining by the gain of a location classifier trained on few labels
(5-100 %) from the pretrained encoder over the same architecture trained from scratch. Two classifiers:
- "probe" (default): frozen encoder -> standardised logistic regression (and cosine kNN). Deterministic and cheap,
  and it measures what pretraining put into the embedding itself, with no training budget to tune.
- "finetune": CSP's own protocol, the encoder and a linear head trained end to end with cross-entropy (Adam, full
  batch, fixed epochs, seeded). Slower; the random-init encoder gets the same budget.
Encoders: "gair" = the model's GeoCLIP-style location encoder; "gridcell" = CSP's grid-cell encoder saved by CSP
pretraining (`gridcell_location_encoder.safetensors`). The random twin is a fresh instance of the same class and
config, seeded.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np

from ..errors import GAIRError
from .points import class_labels
from .protocol import FitPredict, feature_classifiers

LOCATION_RATIOS = (0.05, 0.10, 0.20, 0.50, 1.0)
LOCATION_ENCODERS = ("gair", "gridcell")
LOCATION_METHODS = ("probe", "finetune")


def read_labelled_points(path: str | os.PathLike, class_field: str = "label", lon_field: str = "lon",
                         lat_field: str = "lat") -> tuple[np.ndarray, np.ndarray]:
    """[lon, lat] (N, 2) and class labels of a CSV with lon/lat columns or a vector layer (any CRS)."""
    path = Path(path)
    if not path.is_file():
        raise GAIRError(f"labelled points {path} not found")
    if path.suffix.lower() in (".csv", ".txt"):
        from ..io.vectors import read_point_table

        rows = read_point_table(path, lon_field, lat_field, path_field="", label_field=class_field,
                                require_label=True)
        lonlat = np.array([[r["lon"], r["lat"]] for r in rows], np.float64).reshape(-1, 2)
        labels, ok = class_labels(np.array([r["label"] for r in rows], dtype=object))
    else:
        from ..io.vectors import read_layer
        from .points import _point_xy

        layer = read_layer(path, require_crs=True)
        labels, ok = class_labels(layer.column(class_field))
        lonlat = _point_xy(layer, "EPSG:4326")
    ok &= np.isfinite(lonlat).all(axis=1) & (np.abs(lonlat[:, 1]) <= 90)
    if ok.sum() < 2:
        raise GAIRError(f"{path.name} has {int(ok.sum())} labelled points with valid coordinates; need more")
    return lonlat[ok], labels[ok].astype(str)


def lonlat_metres(lonlat: np.ndarray) -> np.ndarray:
    """[lon, lat] -> EASE-Grid 2.0 metres, for spatial blocks."""
    from pyproj import Transformer

    from .patches import EQUAL_AREA_CRS

    x, y = Transformer.from_crs("EPSG:4326", EQUAL_AREA_CRS, always_xy=True).transform(lonlat[:, 0], lonlat[:, 1])
    return np.column_stack([x, y])


def location_encoders(model, encoder: str = "gair", gridcell_path=None, seed: int = 0):
    """(pretrained, random) torch modules [lon, lat] -> embedding, of the same architecture."""
    import torch

    if encoder not in LOCATION_ENCODERS:
        raise GAIRError(f"location encoder must be one of {', '.join(LOCATION_ENCODERS)}, got {encoder!r}")
    torch.manual_seed(seed)
    if encoder == "gridcell":
        from ..pretrain.csp import GridCellEncoder, load_gridcell

        if gridcell_path is None:
            raise GAIRError("the gridcell encoder needs its file: pass --gridcell PATH "
                            "(gridcell_location_encoder.safetensors, written by CSP pretraining)")
        pretrained = load_gridcell(gridcell_path)
        return pretrained.eval(), GridCellEncoder(pretrained.config).eval()
    if not hasattr(model, "location_encoder"):
        raise GAIRError("the location protocol trains the encoder's twin in torch: load the model with the torch "
                        "backend (a checkpoint or bundle, not an ONNX export)")
    from ..model.encoders import LocationEncoder

    random = LocationEncoder(model.config).to(model.device, model.dtype)
    return model.location_encoder.eval(), random.eval()


def encode(encoder, lonlat: np.ndarray, batch: int = 4096) -> np.ndarray:
    import torch

    param = next(encoder.parameters())
    with torch.inference_mode():
        out = [encoder(torch.as_tensor(lonlat[k:k + batch], dtype=torch.float64, device=param.device)).float().cpu()
               for k in range(0, len(lonlat), batch)]
    return torch.cat(out).numpy().astype(np.float64)


def finetune_classifier(encoder, lonlat: np.ndarray, epochs: int = 100, lr: float = 1e-3,
                        seed: int = 0) -> FitPredict:
    """Encoder copy + linear head trained end to end on the training points; predicts the test points."""
    import torch
    from torch import nn

    def fit_predict(train: np.ndarray, y: np.ndarray, test: np.ndarray) -> np.ndarray:
        classes, target = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            return np.full(len(test), classes[0])
        torch.manual_seed(seed)
        net = copy.deepcopy(encoder).train()
        param = next(net.parameters())
        dim = encode(net.eval(), lonlat[:1]).shape[1]
        head = nn.Linear(dim, len(classes)).to(param.device)
        trainable = [p for p in net.parameters() if p.requires_grad] + list(head.parameters())
        optimizer = torch.optim.Adam(trainable, lr=lr)
        x = torch.as_tensor(lonlat[train], dtype=torch.float64, device=param.device)
        t = torch.as_tensor(target, device=param.device)
        net.train()
        with torch.enable_grad():
            for _ in range(epochs):
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(head(net(x).float()), t)
                loss.backward()
                optimizer.step()
        net.eval()
        with torch.inference_mode():
            xt = torch.as_tensor(lonlat[test], dtype=torch.float64, device=param.device)
            pred = head(net(xt).float()).argmax(dim=1).cpu().numpy()
        return classes[pred]

    return fit_predict


def location_methods(model, lonlat: np.ndarray, encoder: str = "gair", method: str = "probe", gridcell_path=None,
                     knn_k: int = 5, epochs: int = 100, lr: float = 1e-3,
                     seed: int = 0) -> dict[str, dict[str, FitPredict]]:
    """{"pretrained": {classifier: fit_predict}, "random": {...}} for the learning-curve protocol."""
    if method not in LOCATION_METHODS:
        raise GAIRError(f"location method must be one of {', '.join(LOCATION_METHODS)}, got {method!r}")
    pretrained, random = location_encoders(model, encoder, gridcell_path, seed)
    out = {}
    for name, enc in (("pretrained", pretrained), ("random", random)):
        if method == "probe":
            out[name] = feature_classifiers(encode(enc, lonlat), knn_k)
        else:
            out[name] = {"finetune": finetune_classifier(enc, lonlat, epochs, lr, seed)}
    return out


def gains(results: dict) -> dict:
    """{split: {classifier: [{fraction, gain}]}}: pretrained minus random accuracy at each label ratio."""
    out: dict = {}
    for split, result in results.items():
        methods = result["methods"]
        out[split] = {}
        for classifier, points in methods["pretrained"].items():
            baseline = {p["fraction"]: p["accuracy"] for p in methods["random"][classifier]}
            out[split][classifier] = [{"fraction": p["fraction"], "gain": p["accuracy"] - baseline[p["fraction"]]}
                                      for p in points]
    return out


def synthetic_world_points(out_dir: str | os.PathLike, size_px: int = 768, n_labels: int = 600,
                           seed: int = 0) -> Path:
    """Make the synthetic world (location predicts land cover) under out_dir; returns its labels CSV."""
    from ..pretrain.synthetic import WorldSpec, make_world

    world = make_world(out_dir, WorldSpec(size_px=size_px, n_photos=1, n_labels=n_labels, seed=seed))
    return world.labels_csv

