"""Point queries, the dense field and the API's shapes/types, on a small random model with the official 12x12 grid."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import engine
from engine.model.query import nili_grid, nili_points, sample_points
from engine.runtime.grid import pixel_centres, points_plan


@pytest.fixture(scope="module", params=["released", "legacy"])
def model(request):
    torch.manual_seed(0)
    cfg = engine.GAIRConfig.tiny(rs_input_size=96, nili_convention=request.param)
    return engine.GAIRModel(cfg).double().eval()


@pytest.fixture(scope="module")
def tokens(model):
    torch.manual_seed(1)
    return torch.randn(2, model.config.rs_tokens, model.config.embed_dim, dtype=torch.float64)


def pixel_grid(h: int, w: int, batch: int) -> np.ndarray:
    xy = np.stack(np.meshgrid(pixel_centres(w), pixel_centres(h)), axis=-1).reshape(1, -1, 2)
    return np.repeat(xy, batch, axis=0)


# 3 and 9 put pixel centres exactly on cell boundaries; 13 and 97 are odd; 1 is a single pixel.
@pytest.mark.parametrize("size", [(1, 1), (3, 9), (13, 13), (96, 96), (97, 40)])
def test_dense_field_equals_point_query(model, tokens, size):
    h, w = size
    with torch.no_grad():
        dense = model.dense_field(tokens, h, w)
        points = nili_points(tokens, torch.from_numpy(pixel_grid(h, w, 2)), model.imnet, model.config.nili_convention)
    assert dense.shape == (2, h, w, model.config.embed_dim)
    err = (dense.reshape(2, h * w, -1) - points).abs().max() / points.abs().max()
    assert err < 1e-12


def test_projected_points_equal_reference_form(model, tokens):
    """The projected-cells kernel at arbitrary points (cell boundaries and crop edges included) is the reference."""
    rng = np.random.default_rng(0)
    edges = [[[0, 0], [1, 1], [0.5, 0.5]]] * 2, [[[1 / 12, 0.25], [0, 1], [1, 0]]] * 2
    rel = np.concatenate([rng.random((2, 50, 2)), *edges], axis=1)
    conv = model.config.nili_convention
    with torch.no_grad():
        a = nili_points(tokens, torch.from_numpy(rel), model.imnet, conv)
        grid = nili_grid(tokens, model.imnet.weight, model.imnet.bias, conv)
        b = sample_points(grid, points_plan(torch.from_numpy(rel), 12, "nili", conv))
        few, many = model.query_tokens(tokens, rel[:, :3]), model.query_tokens(tokens, rel)  # reference, kernel
    assert torch.allclose(a, b, rtol=0, atol=1e-12) and torch.allclose(a, many, rtol=0, atol=1e-12)
    assert torch.allclose(a[:, :3], few, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_interpolation_equals_grid_sample(model, tokens, mode):
    grid = torch.from_numpy(tokens.numpy().reshape(2, 12, 12, -1)).permute(0, 3, 1, 2)
    rel = pixel_grid(20, 30, 2)
    sampled = F.grid_sample(grid, torch.from_numpy(2 * rel - 1)[:, None], mode=mode, align_corners=False)
    expected = sampled[:, :, 0].transpose(1, 2)
    with torch.no_grad():
        points = model.query_tokens(tokens, rel, mode=mode)
        dense = model.dense_field(tokens, 20, 30, mode=mode).reshape(2, 600, -1)
    assert torch.allclose(points, expected, atol=1e-12) and torch.allclose(dense, expected, atol=1e-12)


def test_legacy_convention_is_released_with_axes_swapped():
    """Training-era NILI read [0,1] positions as LIIF (row, col) coordinates in [-1, 1]: x drives rows."""
    torch.manual_seed(0)
    legacy = engine.GAIRModel(engine.GAIRConfig.tiny(rs_input_size=96, nili_convention="legacy")).double()
    released = engine.GAIRModel(engine.GAIRConfig.tiny(rs_input_size=96)).double()
    released.load_state_dict(legacy.state_dict())
    with torch.no_grad():  # on a transposed grid the 3x3 neighbourhoods are transposed too
        d = 32
        feat_w = released.imnet.weight[:, : 9 * d].reshape(d, d, 3, 3).transpose(2, 3).reshape(d, 9 * d)
        released.imnet.weight[:, : 9 * d] = feat_w.clone()
    tok = torch.randn(1, 144, 32, dtype=torch.float64)
    rng = np.random.default_rng(3)
    rel = rng.random((1, 40, 2))
    with torch.no_grad():
        got = legacy.query_tokens(tok, rel)
        # legacy (x, y) == released on the transposed grid at ((x+1)/2, (y+1)/2): x picks token rows, in [-1, 1] units
        tok_t = tok.reshape(1, 12, 12, 32).transpose(1, 2).reshape(1, 144, 32)
        want = released.query_tokens(tok_t, (rel + 1) / 2)
        same_weights_released = released.query_tokens(tok, rel)
    assert torch.allclose(got, want, atol=1e-12)
    assert not torch.allclose(got, same_weights_released, atol=1e-3)


def test_numpy_in_numpy_out_and_no_grad(model):
    """numpy input: no autograd graph is built (grad off inside), numpy out, the same values as the tensor path;
    tensor input keeps autograd."""
    grad_seen = []
    hook = model.imnet.register_forward_hook(lambda mod, args, out: grad_seen.append(out.requires_grad))
    enc_hook = model.rs_encoder.register_forward_hook(lambda mod, args, out: grad_seen.append(out.requires_grad))
    try:
        x = np.random.default_rng(0).random((1, 10, 96, 96)).astype(np.float64)
        tok = model.rs_tokens(x)
        out = model.query_localized(x, [[10.5, 45.5]], [[10.0, 46.0, 11.0, 45.0]])
        assert grad_seen == [False] * 6  # rs_tokens; then rs_tokens and imnet at 4 corners in query_localized
        assert isinstance(tok, np.ndarray) and tok.shape == (1, 144, 32) and isinstance(out, np.ndarray)
        assert isinstance(model.encode_rs(x), np.ndarray) and out.shape == (1, 32)
        np.testing.assert_array_equal(out, model.query_tokens(tok, np.array([[[0.5, 0.5]]]))[:, 0])
        grad_seen.clear()
        x_t = torch.from_numpy(x)
        tok_t = model.rs_tokens(x_t)
        out_t = model.query_localized(x_t, [[10.5, 45.5]], [[10.0, 46.0, 11.0, 45.0]])
        assert grad_seen == [True] * 6 and tok_t.requires_grad and out_t.grad_fn is not None
        np.testing.assert_array_equal(tok, tok_t.detach().numpy())
        np.testing.assert_array_equal(out, out_t.detach().numpy())
        dense = model.dense_field(tok, 5, 7)
        assert isinstance(dense, np.ndarray)
        dense_t = model.dense_field(torch.from_numpy(tok), 5, 7)  # autograd kept: model weights require grad
        assert dense_t.requires_grad
        np.testing.assert_allclose(dense, dense_t.detach().numpy(), rtol=0, atol=1e-14)
    finally:
        hook.remove()
        enc_hook.remove()


def test_gradients_reach_tokens_and_imnet(model):
    tok = torch.randn(2, 144, 32, dtype=torch.float64, requires_grad=True)
    out = model.query_tokens(tok, np.full((2, 1, 2), 0.3))
    out.sum().backward()
    assert tok.grad is not None and tok.grad.abs().sum() > 0
    assert model.imnet.weight.grad is not None and model.imnet.weight.grad.abs().sum() > 0
    model.zero_grad()


def test_bad_inputs_are_explained(model, tokens):
    """Every input a user can get wrong is a one-line GAIRError naming the problem."""
    cases = [
        (lambda: model.rs_tokens(np.zeros((1, 12, 96, 96))), "RS input must be"),
        (lambda: model.encode_sv(np.zeros((1, 3, 20, 20))), "street-view input must be"),
        (lambda: model.encode_location(np.zeros(2)), "lonlat must be"),
        (lambda: model.query_tokens(tokens, np.zeros((2, 1, 2)), mode="nearest"), "unknown query mode"),
        (lambda: model.dense_field(tokens, 4, 4, mode="nearest"), "unknown query mode"),
        (lambda: model.query_tokens(tokens, np.zeros((1, 2))), "rel_xy must be"),
        (lambda: model.query_tokens(tokens[:, :, :8], np.zeros((2, 1, 2))), "tokens must be"),
        (lambda: model.dense_field(tokens[:, :100], 4, 4), "tokens must be"),
    ]
    for call, message in cases:
        with pytest.raises(engine.GAIRError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


def test_fingerprint_tracks_weights_not_dtype():
    torch.manual_seed(0)
    a = engine.GAIRModel(engine.GAIRConfig.tiny())
    b = engine.GAIRModel(engine.GAIRConfig.tiny())
    assert len(a.fingerprint) == 16 and b.fingerprint != a.fingerprint
    c = engine.GAIRModel(engine.GAIRConfig.tiny()).double()
    c.load_state_dict(a.state_dict())
    assert c.fingerprint == a.fingerprint


def test_point_queries_stay_on_the_tokens_device(model, tokens):
    """Positions given as a tensor are used as they are (no numpy round trip): taps come back as tensors."""
    rel = torch.rand(2, 60, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    plan = points_plan(rel, 12, "nili", model.config.nili_convention)
    assert isinstance(plan.rows.index, torch.Tensor) and plan.rows.weight.dtype == torch.float64
    with torch.no_grad():
        np.testing.assert_array_equal(model.query_tokens(tokens, rel).numpy(),
                                      model.query_tokens(tokens, rel.numpy()).numpy())


@pytest.mark.parametrize("mode", ["nili", "bicubic"])
def test_taps_are_the_same_from_numpy_and_torch(mode):
    """grid.py builds every tap with the same float64/float32 operations for both array kinds: bit-equal plans."""
    rel = np.concatenate([np.random.default_rng(1).random((2, 40, 2)), [[[0, 0], [1, 1], [0.5, 1 / 12]]] * 2], axis=1)
    for grid in (6, 12, 13):
        a = points_plan(rel, grid, mode, "legacy" if grid == 13 else "released")
        b = points_plan(torch.from_numpy(rel), grid, mode, "legacy" if grid == 13 else "released")
        for axis_a, axis_b in ((a.rows, b.rows), (a.cols, b.cols)):
            np.testing.assert_array_equal(axis_a.index, axis_b.index.numpy())
            np.testing.assert_array_equal(axis_a.weight, axis_b.weight.numpy())
