"""CROMA's final norm (`norm_out`) as a model option: off = the released inference, on = the authors' training form,
loaded from the checkpoint when present, and part of the embedding-space identity."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import engine
from engine.io.space import EmbeddingSpace, check_same_space
from engine.model.checkpoint import convert_checkpoint, load_bundle, load_official
from engine.pretrain.weights import load_croma

TINY = engine.GAIRConfig.tiny()
NORMED = engine.GAIRConfig.tiny(rs_final_norm=True)
NORM_KEY = "rs_encoder.s2_encoder.transformer.norm_out."


def _crop() -> np.ndarray:
    return np.random.default_rng(0).random((2, 10, TINY.rs_input_size, TINY.rs_input_size)).astype(np.float32)


@pytest.fixture()
def trained_norm_checkpoint(tmp_path):
    """A checkpoint as the authors' training writes it: with a non-trivial norm_out."""
    torch.manual_seed(0)
    model = engine.GAIRModel(TINY)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    state[NORM_KEY + "weight"] = 1 + 0.5 * torch.rand(TINY.embed_dim, generator=gen)
    state[NORM_KEY + "bias"] = 0.3 * torch.randn(TINY.embed_dim, generator=gen)
    path = tmp_path / "ck.pth"
    torch.save({"model": state}, path)
    return model, state, path


def test_off_ignores_norm_out_and_matches_released(trained_norm_checkpoint):
    model, _, path = trained_norm_checkpoint
    with pytest.warns(UserWarning, match="norm_out"):
        loaded = load_official(path, config=TINY)
    assert not hasattr(loaded.rs_encoder.s2_encoder.transformer, "norm_out")
    np.testing.assert_array_equal(loaded.rs_tokens(_crop()), model.rs_tokens(_crop()))


def test_on_applies_norm_out_from_the_checkpoint(trained_norm_checkpoint):
    model, state, path = trained_norm_checkpoint
    loaded = load_official(path, config=NORMED)
    assert NORM_KEY + "weight" not in loaded.load_report.ignored
    raw = torch.as_tensor(model.rs_tokens(_crop()))
    expected = torch.nn.functional.layer_norm(raw, (TINY.embed_dim,), state[NORM_KEY + "weight"],
                                              state[NORM_KEY + "bias"], TINY.rs_layer_norm_eps)
    np.testing.assert_allclose(loaded.rs_tokens(_crop()), expected.numpy(), rtol=1e-5, atol=1e-5)
    # the crop embedding is the mean of the normalised tokens
    np.testing.assert_allclose(loaded.encode_rs(_crop()), expected.mean(1).numpy(), rtol=1e-5, atol=1e-5)


def test_on_without_norm_out_in_file_starts_plain_and_says_so(tmp_path):
    torch.manual_seed(0)
    torch.save(engine.GAIRModel(TINY).state_dict(), tmp_path / "plain.pth")
    with pytest.warns(UserWarning, match="rs_final_norm starts as a plain LayerNorm"):
        loaded = load_official(tmp_path / "plain.pth", config=NORMED)
    norm = loaded.rs_encoder.s2_encoder.transformer.norm_out
    assert torch.equal(norm.weight, torch.ones(TINY.embed_dim)) and torch.equal(norm.bias, torch.zeros(TINY.embed_dim))
    tokens = torch.as_tensor(loaded.rs_tokens(_crop()))
    np.testing.assert_allclose(tokens.mean(-1).numpy(), 0.0, atol=1e-5)


def test_bundle_round_trip_keeps_the_option(tmp_path, trained_norm_checkpoint):
    _, _, path = trained_norm_checkpoint
    model = load_official(path, config=NORMED)
    from engine.model.checkpoint import save_bundle

    save_bundle(model, tmp_path / "bundle")
    again = load_bundle(tmp_path / "bundle")
    assert again.config.rs_final_norm is True
    np.testing.assert_array_equal(again.encode_rs(_crop()), model.encode_rs(_crop()))


def test_option_is_part_of_the_embedding_space(trained_norm_checkpoint):
    _, _, path = trained_norm_checkpoint
    with pytest.warns(UserWarning):
        plain = load_official(path, config=TINY)
    normed = load_official(path, config=NORMED)
    assert EmbeddingSpace.of_model(plain, "nili").options == {}  # the released identity is unchanged
    a = EmbeddingSpace.of_model(normed, "nili")
    assert a.options == {"rs_final_norm": "true"}
    # same weights fingerprint aside, the option alone makes the spaces differ
    b = EmbeddingSpace(a.model, a.mode, a.convention, a.pca, {})
    assert a.id != b.id
    with pytest.raises(engine.GAIRError, match="option rs_final_norm true vs none"):
        check_same_space(a, b)


def test_croma_norm_out_copied_when_on():
    torch.manual_seed(0)
    model = engine.GAIRModel(NORMED)
    croma = {k: v.clone() for k, v in model.rs_encoder.s2_encoder.state_dict().items()}
    croma["transformer.norm_out.weight"] = torch.full((TINY.embed_dim,), 2.0)
    croma["linear_input.weight"] = torch.zeros(TINY.embed_dim, 12 * 64)
    notes = load_croma(model, croma)
    assert torch.equal(model.rs_encoder.s2_encoder.transformer.norm_out.weight, torch.full((TINY.embed_dim,), 2.0))
    assert not any("not used" in n for n in notes)


def test_convert_checkpoint_option(tmp_path, monkeypatch, trained_norm_checkpoint):
    _, state, path = trained_norm_checkpoint
    import engine.model.checkpoint as ckpt

    monkeypatch.setattr(ckpt, "GAIRConfig", lambda **kw: engine.GAIRConfig.tiny(**kw))
    model = convert_checkpoint(path, tmp_path / "b", rs_final_norm=True)
    assert model.config.rs_final_norm
    monkeypatch.undo()
    assert torch.equal(load_bundle(tmp_path / "b").rs_encoder.s2_encoder.transformer.norm_out.bias,
                       state[NORM_KEY + "bias"])


def test_rasters_with_and_without_the_final_norm_refuse_comparison(tmp_path):
    from engine.io.embedding_raster import EmbeddingRaster
    from engine.pretrain.synthetic import WorldSpec, make_world

    world = make_world(tmp_path / "w", WorldSpec(size_px=96, n_photos=1, n_labels=2, seed=0))
    torch.manual_seed(0)
    plain = engine.GAIRModel(TINY).eval()
    normed = engine.GAIRModel(NORMED).eval()
    normed.load_state_dict({**plain.state_dict(), **{k: v for k, v in normed.state_dict().items()
                                                     if "norm_out" in k}})
    a = engine.embed_raster(world.raster, tmp_path / "plain.tif", plain, dims=0)
    b = engine.embed_raster(world.raster, tmp_path / "normed.tif", normed, dims=0)
    space_a, space_b = EmbeddingRaster(a).meta.space, EmbeddingRaster(b).meta.space
    assert space_a.options == {} and space_b.options == {"rs_final_norm": "true"}
    with pytest.raises(engine.GAIRError, match="rs_final_norm"):
        check_same_space(space_a, space_b)
