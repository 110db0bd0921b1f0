"""The int8 CPU path: `export-onnx --int8` writes dynamically quantized encoders, backend onnx-int8 runs them; their
embeddings stay within cosine 0.999 of float32 on the real samples, and they are a space of their own."""
from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

import engine
from engine.cli.main import main
from engine.errors import GAIRError
from engine.io.space import EmbeddingSpace, check_same_space
from engine.model.onnx_export import export_onnx
from engine.pipeline import embed_raster
from engine.runtime.onnx_model import INT8_GRAPHS, int8_file

# Measured: worst pixel of the real samples 0.9997 (tiny model), worst token 0.9999 (official widths, depth 1).
MIN_COSINE = 0.999
# The same less each sample's mean embedding (what varies between pixels): mean per sample 0.9970-0.9979 (tiny);
# 0.993 with the official-size model at depth 12 (scripts/bench_embed.py, int8_cosine_centred).
MIN_CENTRED_COSINE = 0.99


def cosine(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(axis) / (np.linalg.norm(a, axis=axis) * np.linalg.norm(b, axis=axis))


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A tiny model with the official 12x12 token grid, exported with its int8 encoders through the CLI."""
    root = tmp_path_factory.mktemp("int8")
    torch.manual_seed(0)
    engine.save_bundle(engine.GAIRModel(engine.GAIRConfig.tiny(rs_input_size=96)), root / "bundle")
    assert main(["export-onnx", str(root / "bundle"), str(root / "onnx"), "--int8", "--quiet"]) == 0
    return root / "onnx"


def test_int8_export_and_backend(export):
    meta = json.loads((export / "config.json").read_text())
    assert meta["int8_graphs"] == {g: int8_file(g) for g in INT8_GRAPHS} == {
        "rs_tokens": "rs_tokens.int8.onnx", "sv": "sv.int8.onnx"}
    fp32, int8 = engine.load_model(export), engine.load_model(export, backend="onnx-int8")
    assert (fp32.backend, int8.backend) == ("onnx", "onnx-int8") and int8.fingerprint == fp32.fingerprint
    cfg = fp32.config
    rng = np.random.default_rng(3)
    x = rng.random((3, cfg.rs_channels, cfg.rs_input_size, cfg.rs_input_size), dtype=np.float32)
    tokens32, tokens8 = fp32.rs_tokens(x), int8.rs_tokens(x)
    assert not np.array_equal(tokens32, tokens8)  # the quantized graph really runs
    assert cosine(tokens32, tokens8).min() >= MIN_COSINE
    sv = rng.standard_normal((2, 3, cfg.sv_input_size, cfg.sv_input_size), dtype=np.float32)
    assert cosine(fp32.encode_sv(sv, aligned=True), int8.encode_sv(sv, aligned=True)).min() >= MIN_COSINE
    lonlat = np.array([[10.0, 45.0], [-73.9, 40.7]])
    np.testing.assert_array_equal(fp32.encode_location(lonlat), int8.encode_location(lonlat))  # stays float
    # an int8 model's vectors are close to, not the same as, float32's: a space of its own
    assert EmbeddingSpace.of_model(int8, "nili").options == {"quantization": "int8_dynamic"}
    with pytest.raises(GAIRError, match="option quantization int8_dynamic vs none"):
        check_same_space(EmbeddingSpace.of_model(int8, "nili"), EmbeddingSpace.of_model(fp32, "nili"))


def test_int8_embeddings_match_float32_on_the_real_samples(export, samples_dir, tmp_path):
    fp32, int8 = engine.load_model(export), engine.load_model(export, backend="onnx-int8")
    worst, centred = [], []
    for name in ("tokyo", "detroit", "sacramento"):
        a = embed_raster(samples_dir / f"{name}_rs.tif", tmp_path / f"{name}32.tif", fp32, dims=0, dtype="float32",
                         quicklook=False)
        b = embed_raster(samples_dir / f"{name}_rs.tif", tmp_path / f"{name}8.tif", int8, dims=0, dtype="float32",
                         quicklook=False)
        with rasterio.open(a) as ra, rasterio.open(b) as rb:
            va, vb = ra.read(), rb.read()
            assert ra.tags()["GAIR_SPACE"] != rb.tags()["GAIR_SPACE"]
        valid = np.isfinite(va).all(axis=0)
        assert valid.mean() > 0.9 and np.array_equal(valid, np.isfinite(vb).all(axis=0))
        worst.append(cosine(va[:, valid], vb[:, valid], axis=0).min())
        mean = va[:, valid].mean(axis=1, keepdims=True)  # what varies between pixels, the part analyses use
        centred.append(cosine(va[:, valid] - mean, vb[:, valid] - mean, axis=0).mean())
    assert min(worst) >= MIN_COSINE, worst
    assert min(centred) >= MIN_CENTRED_COSINE, centred


def test_official_widths_int8(tmp_path):
    """The official dimensions (768-d, 12x12 grid) at depth 1: the quantization keeps the tokens' directions."""
    torch.manual_seed(0)
    model = engine.GAIRModel(engine.GAIRConfig(rs_depth=1, sv_depth=1)).eval()
    out = export_onnx(model, tmp_path / "official", int8=True)
    int8 = engine.load_model(out, backend="onnx-int8")
    # the MLP's weights (two thirds) in int8, the attention projections in float32: 1/3 + 2/3 / 4 = 0.5 of the size
    assert (out / "rs_tokens.int8.onnx").stat().st_size < 0.6 * (out / "rs_tokens.onnx").stat().st_size
    x = np.random.default_rng(0).random((2, 10, 96, 96), dtype=np.float32)
    assert cosine(int8.rs_tokens(x), model.rs_tokens(x)).min() >= MIN_COSINE


def test_missing_int8_graphs_are_explained(tmp_path):
    torch.manual_seed(0)
    out = export_onnx(engine.GAIRModel(engine.GAIRConfig.tiny()), tmp_path / "plain")
    with pytest.raises(GAIRError, match="has no int8 encoders .* --int8"):
        engine.load_model(out, backend="onnx-int8")
    with pytest.raises(GAIRError, match="backend must be auto, torch, onnx or onnx-int8"):
        engine.load_model(out, backend="int8")
