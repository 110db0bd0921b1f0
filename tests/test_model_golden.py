"""Golden test: our model, loaded through the user-facing loader, computes the official GAIR functions."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

import engine
from tests.golden import REFERENCE, reference_outputs, rel_err, write_official_checkpoint

EXAMPLES = REFERENCE.parents[2] / "data" / "samples"
CITIES = ("detroit", "sacramento", "tokyo")
MODES = {"nili": "localized_nili", "bilinear": "localized_bilinear", "bicubic": "localized_bicubic",
         "transformer": "query_transformer"}


@pytest.fixture(scope="module")
def ref():
    return reference_outputs()


@pytest.fixture(scope="module")
def golden_checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("golden")
    paths = {dtype: write_official_checkpoint(folder / f"checkpoint_{str(dtype)[6:]}.pth", dtype)
             for dtype in (torch.float64, torch.float32)}
    yield paths
    for path in paths.values():
        path.unlink()


@pytest.fixture(scope="module", params=[torch.float64, torch.float32], ids=["float64", "float32"])
def golden_model(request, golden_checkpoints):
    dtype = request.param
    model = engine.load_model(golden_checkpoints[dtype], device="cpu", dtype=dtype)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    return model, tol


def test_cli_convert_gives_the_same_model(golden_checkpoints, ref, tmp_path):
    from engine.cli.main import main

    path = golden_checkpoints[torch.float32]
    assert main(["convert-checkpoint", str(path), str(tmp_path / "bundle")]) == 0
    bundle = engine.load_model(tmp_path / "bundle", device="cpu")
    official = engine.load_model(path, device="cpu")
    assert bundle.fingerprint == official.fingerprint
    sv = ref["input/sv"][:1].astype(np.float32)
    np.testing.assert_array_equal(bundle.encode_sv(sv), official.encode_sv(sv))
    assert rel_err(bundle.encode_sv(sv), ref["out/sv"][:1]) < 1e-4


def test_encoders_match_reference(golden_model, ref):
    model, tol = golden_model
    rs = ref["input/rs"]
    errors = {
        "rs_tokens": rel_err(model.rs_tokens(rs), ref["out/rs_tokens"]),
        "rs_global": rel_err(model.encode_rs(rs), ref["out/rs_global"]),
        "sv": rel_err(model.encode_sv(ref["input/sv"]), ref["out/sv"]),
        "loc_world": rel_err(model.encode_location(ref["input/world_lonlat"]), ref["out/loc_world"]),
        "loc_query": rel_err(model.encode_location(ref["input/query_lonlat"].reshape(-1, 2)),
                             ref["out/loc_query"].reshape(10, -1)),
    }
    assert max(errors.values()) < tol, errors


@pytest.mark.parametrize("mode", list(MODES))
def test_localized_queries_match_reference(golden_model, ref, mode):
    model, tol = golden_model
    out = model.query_localized(ref["input/rs"], ref["input/query_lonlat"], ref["input/bbox"], mode=mode)
    assert out.shape == (2, 5, model.config.embed_dim)
    assert rel_err(out, ref[f"out/{MODES[mode]}"]) < tol


def test_real_samples_end_to_end(golden_model, ref):
    """From the GeoTIFFs and JPEGs through our preprocessing to the reference embeddings."""
    model, tol = golden_model
    tol = max(tol, 1e-4)  # preprocessing is float32 (within 1e-6 of the reference), so embeddings are too
    rs = np.concatenate([engine.preprocess_rs(rasterio.open(EXAMPLES / f"{c}_rs.tif").read()) for c in CITIES])
    photos = [engine.runtime.preprocess.load_photo(EXAMPLES / f"{c}_sv.jpg") for c in CITIES]
    sv = np.concatenate([engine.preprocess_sv(photo) for photo in photos])
    np_dtype = np.float64 if model.dtype == torch.float64 else np.float32
    rs, sv = rs.astype(np_dtype), sv.astype(np_dtype)
    assert rel_err(model.encode_rs(rs), ref["examples/rs_global"]) < tol
    assert rel_err(model.encode_sv(sv), ref["examples/sv"]) < tol
    assert rel_err(model.encode_location(ref["examples/lonlat"]), ref["examples/loc"]) < tol
    local = model.query_localized(rs, ref["examples/lonlat"], ref["examples/bbox"])
    assert rel_err(local, ref["examples/localized_nili"]) < tol


@pytest.mark.parametrize("city", range(3), ids=CITIES)
def test_preprocessing_matches_reference(ref, city):
    name = CITIES[city]
    rs = engine.preprocess_rs(rasterio.open(EXAMPLES / f"{name}_rs.tif").read())
    sv = engine.preprocess_sv(engine.runtime.preprocess.load_photo(EXAMPLES / f"{name}_sv.jpg"))
    assert rs.dtype == np.float32 and rs.shape == (1, 10, 96, 96)
    assert rel_err(rs[0], ref["examples/rs_preprocessed"][city]) < 1e-6
    assert rel_err(sv[0], ref["examples/sv_preprocessed"][city]) < 1e-6
