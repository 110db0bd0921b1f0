"""ONNX export and the onnxruntime backend: parity with torch for every method and mode, dynamic batch, auto-detection,
no torch import on the ONNX path, atomic and checked export folders."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import engine
from engine.model import query as torch_query
from engine.model.onnx_export import export_onnx
from engine.runtime import field as numpy_field
from engine.runtime.grid import dense_plan, points_plan
from engine.runtime.onnx_model import GRAPHS, OnnxGAIR
from engine.runtime.protocol import GAIRModelLike

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-4  # parity with torch, relative to the largest value


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny random model with the official 12x12 token grid, saved as a bundle and exported from that path."""
    root = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    engine.save_bundle(engine.GAIRModel(engine.GAIRConfig.tiny(rs_input_size=96)), root / "bundle")
    fractions = []
    out = export_onnx(root / "bundle", root / "onnx", progress=fractions.append)
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    torch_model = engine.load_model(root / "bundle", backend="torch", device="cpu")
    return torch_model, engine.load_model(out), out


@pytest.fixture(scope="module")
def inputs(exported):
    cfg = exported[0].config
    rng = np.random.default_rng(0)
    return {
        "rs": rng.random((3, cfg.rs_channels, cfg.rs_input_size, cfg.rs_input_size), dtype=np.float32),
        "sv": rng.standard_normal((3, 3, cfg.sv_input_size, cfg.sv_input_size), dtype=np.float32),
        "lonlat": np.array([[10.25, 45.5], [-179.9, -89.0], [179.9, 89.9], [0.0, 0.0], [-73.98, 40.75]]),
    }


def test_export_folder_holds_checked_graphs_with_dynamic_batch(exported):
    import onnx

    torch_model, onnx_model, folder = exported
    expected_files = ["config.json", "query.npz", *[f for f, _, _ in GRAPHS.values()]]
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected_files)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folder left behind
    for file, input_name, _ in GRAPHS.values():
        graph = onnx.load(str(folder / file))
        assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
        batch = graph.graph.input[0].type.tensor_type.shape.dim[0]
        assert graph.graph.input[0].name == input_name and batch.dim_param == "batch"
    meta = json.loads((folder / "config.json").read_text())
    assert meta["fingerprint"] == torch_model.fingerprint == onnx_model.fingerprint
    assert onnx_model.config == torch_model.config and onnx_model.device == "cpu"


def test_auto_backend_detects_the_export(exported):
    torch_model, _, folder = exported
    model = engine.load_model(folder)
    assert isinstance(model, OnnxGAIR) and model.fingerprint == torch_model.fingerprint
    assert isinstance(engine.load_model(folder / "rs_tokens.onnx", backend="onnx"), OnnxGAIR)


@pytest.mark.parametrize("batch", [1, 3])
def test_encoders_match_torch(exported, inputs, batch):
    torch_model, onnx_model, _ = exported
    rs, sv = inputs["rs"][:batch], inputs["sv"][:batch]
    tokens = onnx_model.rs_tokens(rs)
    assert tokens.shape == (batch, 144, 32) and tokens.dtype == np.float32
    assert rel_err(tokens, torch_model.rs_tokens(rs)) < TOL
    assert rel_err(onnx_model.encode_rs(rs), torch_model.encode_rs(rs)) < TOL
    for aligned in (False, True):
        got = onnx_model.encode_sv(sv, aligned=aligned)
        assert got.shape == (batch, 32) and rel_err(got, torch_model.encode_sv(sv, aligned=aligned)) < TOL
    assert not np.allclose(onnx_model.encode_sv(sv), onnx_model.encode_sv(sv, aligned=True))


def test_location_matches_the_exact_function(exported, inputs):
    """Both backends take the Fourier phases in float64 (positions times ~5000 rad in the sigma=256 capsule would
    lose ~1e-4 in float32), so float32 models match the float64 function and each other closely."""
    torch_model, onnx_model, _ = exported
    rng = np.random.default_rng(1)
    lonlat = np.concatenate([inputs["lonlat"], np.stack([rng.uniform(-180, 180, 200), rng.uniform(-90, 90, 200)], 1)])
    with torch.no_grad():
        exact = copy.deepcopy(torch_model.location_encoder).double()(torch.from_numpy(lonlat)).numpy()
    float32 = torch_model.encode_location(lonlat)
    assert rel_err(float32, exact) < 3e-5  # was ~1e-4 with float32 phases
    for batch in (1, 3, len(lonlat)):
        got = onnx_model.encode_location(lonlat[:batch])
        assert got.shape == (batch, 32) and rel_err(got, exact[:batch]) < 1e-5
    got = onnx_model.encode_location(lonlat.astype(np.float32))
    assert rel_err(got, float32) < 3e-5


@pytest.mark.parametrize("mode", ["nili", "bilinear", "bicubic"])
def test_point_queries_match_torch(exported, inputs, mode):
    torch_model, onnx_model, _ = exported
    tokens = torch_model.rs_tokens(inputs["rs"])
    rng = np.random.default_rng(2)
    edges = [[[0, 0], [1, 1], [0.5, 0.5], [1 / 12, 0.25], [0, 1], [1, 0]]] * 3
    for rel in (rng.random((3, 1, 2)), np.concatenate([rng.random((3, 100, 2)), edges], axis=1)):  # few / many points
        got = onnx_model.query_tokens(tokens, rel, mode=mode)
        assert got.shape == (3, rel.shape[1], 32)
        assert rel_err(got, torch_model.query_tokens(tokens, rel, mode=mode)) < TOL
    bbox = np.array([[10.0, 46.0, 11.0, 45.0]] * 3)
    single = np.array([[10.5, 45.5], [10.1, 45.9], [10.99, 45.01]])
    many = rng.uniform([10, 45], [11, 46], (3, 7, 2))
    for lonlat in (single, many):
        got = onnx_model.query_localized(inputs["rs"], lonlat, bbox, mode=mode)
        assert got.shape == lonlat.shape[:-1] + (32,)
        assert rel_err(got, torch_model.query_localized(inputs["rs"], lonlat, bbox, mode=mode)) < TOL


@pytest.mark.parametrize("mode", ["nili", "bilinear", "bicubic"])
@pytest.mark.parametrize("size", [(1, 1), (3, 9), (97, 40)])
def test_dense_field_matches_torch(exported, inputs, mode, size):
    torch_model, onnx_model, _ = exported
    tokens = torch_model.rs_tokens(inputs["rs"][:2])
    got = onnx_model.dense_field(tokens, *size, mode=mode)
    assert got.shape == (2, *size, 32) and got.dtype == np.float32
    assert rel_err(got, torch_model.dense_field(tokens, *size, mode=mode)) < TOL


@pytest.mark.parametrize("convention", ["released", "legacy"])
def test_numpy_nili_mirrors_torch_in_both_conventions(convention):
    """The numpy kernel on its own, in float64 weights, against the torch reference form for both NILI conventions."""
    torch.manual_seed(0)
    imnet = torch.nn.Linear(9 * 16 + 2, 16).double()
    tokens = torch.randn(2, 144, 16, dtype=torch.float64)
    np_imnet = numpy_field.Imnet.from_linear(imnet.weight.detach().numpy(), imnet.bias.detach().numpy())
    rel = np.random.default_rng(3).random((2, 50, 2))
    centres = (np.arange(29) + 0.5) / 29, (np.arange(13) + 0.5) / 13
    grid_xy = np.stack(np.meshgrid(*centres), axis=-1).reshape(1, -1, 2).repeat(2, axis=0)
    with torch.no_grad():
        points = torch_query.nili_points(tokens, torch.from_numpy(rel), imnet, convention).numpy()
        dense = torch_query.nili_points(tokens, torch.from_numpy(grid_xy), imnet, convention).numpy()
    grid = numpy_field.nili_grid(tokens.numpy(), np_imnet, convention)
    got_dense = numpy_field.sample_dense(grid, dense_plan(13, 29, 12, "nili", convention))
    assert rel_err(got_dense.reshape(2, -1, 16), dense) < 1e-5
    assert rel_err(numpy_field.sample_points(grid, points_plan(rel, 12, "nili", convention)), points) < 1e-5


def test_both_backends_implement_the_protocol(exported):
    torch_model, onnx_model, _ = exported
    assert isinstance(torch_model, GAIRModelLike) and isinstance(onnx_model, GAIRModelLike)
    assert (torch_model.backend, onnx_model.backend) == ("torch", "onnx")
    assert not isinstance(onnx_model.path, GAIRModelLike) and not isinstance(None, GAIRModelLike)


@pytest.mark.parametrize("mode", ["nili", "bilinear", "bicubic"])
def test_raster_field_matches_torch(exported, inputs, mode):
    """The raster pipeline's lattice field (numpy for both backends) reads the same imnet from either."""
    from engine.io.pca import PCAProjection
    from engine.pipeline.blend import LatticeField
    from engine.pipeline.tiling import TokenLattice

    torch_model, onnx_model, _ = exported
    tokens = onnx_model.rs_tokens(inputs["rs"][:2])
    lattice = TokenLattice.for_scene(70, 80, 64, 64, torch_model.config.rs_grid, 0.0, 2.0)
    assert len(lattice) == 4
    crops = {i: tokens[i % 2] for i in range(4)}
    pca = PCAProjection.from_sample(np.random.default_rng(4).standard_normal((300, 32)), 5, "m")
    got = LatticeField(onnx_model, lattice, mode, pca).block(crops, 0, 70, 0, 80)
    assert got.shape == (5, 70, 80) and got.dtype == np.float32 and np.isfinite(got).all()
    assert rel_err(got, LatticeField(torch_model, lattice, mode, pca).block(crops, 0, 70, 0, 80)) < TOL


def test_transformer_mode_asks_for_torch_and_bad_inputs_are_explained(exported, inputs):
    _, onnx_model, _ = exported
    tokens = onnx_model.rs_tokens(inputs["rs"][:1])
    with pytest.raises(engine.GAIRError, match="backend='torch'"):
        onnx_model.query_tokens(tokens, np.full((1, 1, 2), 0.5), mode="transformer")
    with pytest.raises(engine.GAIRError, match="backend='torch'"):
        onnx_model.dense_field(tokens, 4, 4, mode="transformer")
    cases = [
        (lambda: onnx_model.dense_field(tokens, 4, 4, mode="nearest"), "unknown query mode"),
        (lambda: onnx_model.rs_tokens(np.zeros((1, 12, 96, 96))), "RS input must be"),
        (lambda: onnx_model.encode_sv(np.zeros((1, 3, 8, 8))), "street-view input must be"),
        (lambda: onnx_model.query_tokens(tokens, np.zeros((1, 2))), "rel_xy must be"),
        (lambda: onnx_model.query_tokens(tokens[:, :, :4], np.zeros((1, 1, 2))), "tokens must be"),
        (lambda: onnx_model.dense_field(tokens[:, :100], 4, 4), "tokens must be"),
        (lambda: onnx_model.encode_location(np.zeros(2)), "lonlat must be"),
    ]
    for call, message in cases:
        with pytest.raises(engine.GAIRError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


def test_incomplete_or_wrong_folders_are_explained(exported, tmp_path):
    _, _, folder = exported
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "sv.onnx").unlink()
    with pytest.raises(engine.GAIRError, match=r"missing sv\.onnx.*export-onnx"):
        engine.load_model(broken)
    with pytest.raises(engine.GAIRError, match="not an ONNX export"):
        OnnxGAIR.load(folder.parent / "bundle")
    with pytest.raises(engine.GAIRError, match="no config.json"):
        OnnxGAIR.load(tmp_path)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(engine.GAIRError, match="not valid JSON"):
        OnnxGAIR.load(broken)
    shutil.copy(folder / "sv.onnx", broken / "sv.onnx")
    meta = json.loads((folder / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**meta, "config": {**meta["config"], "embed_dim": -1}}))
    with pytest.raises(engine.GAIRError, match="positive integers"):
        OnnxGAIR.load(broken)


def test_onnx_path_never_imports_torch(exported, inputs, tmp_path):
    torch_model, _, folder = exported
    np.save(tmp_path / "rs.npy", inputs["rs"][:2])
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import numpy as np
        import engine
        import engine.pipeline.blend, engine.runtime.preprocess, engine.runtime.protocol  # the torch-free modules
        model = engine.load_model({str(folder)!r})
        assert isinstance(model, engine.GAIRModelLike)
        rs = np.load({str(tmp_path / "rs.npy")!r})
        tokens = model.rs_tokens(rs)
        from engine.pipeline.blend import LatticeField
        from engine.pipeline.tiling import TokenLattice
        lattice = TokenLattice.for_scene(15, 15, 64, 64, 12, 0.0, 2.0)
        pca = LatticeField(model, lattice, "nili", None).block({{0: tokens[0]}}, 0, 5, 0, 7)
        np.savez({str(tmp_path / "out.npz")!r}, tokens=tokens, field=model.dense_field(tokens, 5, 7), pca=pca,
                 points=model.query_tokens(tokens, np.full((2, 3, 2), 0.3)),
                 location=model.encode_location([[10.0, 45.0]]), sv=model.encode_sv(np.zeros((1, 3, 32, 32))))
        print(type(model).__name__, sys.modules["torch"])
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["OnnxGAIR", "None"]
    out = np.load(tmp_path / "out.npz")
    tokens = torch_model.rs_tokens(inputs["rs"][:2])
    assert rel_err(out["tokens"], tokens) < TOL and rel_err(out["field"], torch_model.dense_field(tokens, 5, 7)) < TOL
    inside = torch_model.dense_field(tokens[:1], 64, 64)[0, 11:16, 11:18]  # the lattice starts 11 px before the scene
    assert rel_err(out["pca"], inside.transpose(2, 0, 1)) < TOL
    assert rel_err(out["points"], torch_model.query_tokens(tokens, np.full((2, 3, 2), 0.3))) < TOL
    assert rel_err(out["sv"], torch_model.encode_sv(np.zeros((1, 3, 32, 32), np.float32))) < TOL


def test_export_is_atomic_and_replaces_only_exports(tmp_path):
    torch.manual_seed(1)
    model = engine.GAIRModel(engine.GAIRConfig.tiny())
    with pytest.raises(engine.Cancelled):
        export_onnx(model, tmp_path / "cancelled", progress=lambda f: None, cancel=lambda: True)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(engine.GAIRError, match="neither empty nor an earlier ONNX export"):
        export_onnx(model, tmp_path / "busy")
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]
    with pytest.raises(engine.GAIRError, match="opset"):
        export_onnx(model, tmp_path / "old", opset=13)
    first = export_onnx(model, tmp_path / "out", check=False)
    torch.manual_seed(2)
    other = engine.GAIRModel(engine.GAIRConfig.tiny())
    export_onnx(other, first, check=False)  # an earlier export is replaced whole
    assert engine.load_model(first).fingerprint == other.fingerprint != model.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "out"]


def test_official_widths_export_and_match(tmp_path):
    """The official dimensions (768-d, 16/12 heads, 12x12 grid, 256 Fourier features) at depth 1, to keep it fast."""
    torch.manual_seed(0)
    model = engine.GAIRModel(engine.GAIRConfig(rs_depth=1, sv_depth=1)).eval()
    onnx_model = engine.load_model(export_onnx(model, tmp_path / "official"))
    x = np.random.default_rng(0).random((2, 10, 96, 96), dtype=np.float32)
    tokens = onnx_model.rs_tokens(x)
    assert tokens.shape == (2, 144, 768) and rel_err(tokens, model.rs_tokens(x)) < TOL
    assert rel_err(onnx_model.dense_field(tokens, 20, 20), model.dense_field(tokens, 20, 20)) < TOL
    assert onnx_model.fingerprint == model.fingerprint
