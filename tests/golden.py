"""Builds the golden-test checkpoint from tests/data/reference (the official GAIR implementation's outputs)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

REFERENCE = Path(__file__).resolve().parent / "data" / "reference"


def reference_outputs() -> dict[str, np.ndarray]:
    with np.load(REFERENCE / "golden_reference.npz") as data:
        return {k: data[k] for k in data.files}


def golden_state_dict() -> dict[str, np.ndarray]:
    spec = importlib.util.spec_from_file_location("golden_weights", REFERENCE / "golden_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    manifest = json.loads((REFERENCE / "gair_official_manifest.json").read_text())
    ref = reference_outputs()
    kept = {k: ref[f"kept/{k}"] for k in manifest["kept"]}
    state = module.golden_state_dict(manifest, kept)
    for key, spec_ in manifest["state_dict"].items():  # integer buffers keep their dtype
        if spec_["dtype"].startswith("int"):
            state[key] = state[key].astype(np.int64)
    return state


def write_official_checkpoint(path: Path, dtype) -> Path:
    """Save the golden weights the way the official checkpoint is saved: torch.save({'model': state_dict})."""
    import torch

    state = {k: torch.from_numpy(v).to(dtype if v.dtype.kind == "f" else torch.int64)
             for k, v in golden_state_dict().items()}
    torch.save({"model": state}, path)
    return path


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))
