"""configs/authors.toml holds the authors' values; ours/base/tiny load; the new [data] and [model] keys work."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import engine
from engine import GAIRError
from engine.pretrain.__main__ import main as pretrain_alias
from engine.pretrain.augment import _LUMA, rs_colour_jitter, sv_colour_jitter
from engine.pretrain.config import load_config
from engine.pretrain.data import resize_antialiased
from engine.pretrain.weights import apply_photo_settings, hf_vit_init
from engine.runtime.preprocess import resize_bicubic

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_authors_config_has_the_authors_values():
    cfg = load_config(CONFIGS / "authors.toml")
    o, opt, t, d, m, i = cfg.objective, cfg.optim, cfg.train, cfg.data, cfg.model, cfg.init
    assert (o.distill, o.distill_weight, o.rs_sv_temperature, o.loc_temperature) == (True, 0.2, 0.07, 0.07)
    assert (o.loc_negatives, o.gather_negatives, o.query_mode) == ("queue", False, "nili")
    assert (t.epochs, t.batch_size, opt.warmup_epochs, opt.base_lr, opt.min_lr) == (300, 256, 10.0, 1.5e-6, 1e-14)
    assert (opt.betas, opt.weight_decay, opt.clip_grad, opt.accum_steps, opt.lr) == ((0.9, 0.95), 0.05, 0.0, 96, 0.0)
    assert (d.rs_flip_rotate, d.rs_jitter_p, d.rs_brightness, d.rs_contrast) == (False, 0.7, 0.2, 0.2)
    assert (d.rs_jitter_bands, d.rs_jitter_random_order, d.rs_contrast_grey_mean) == ((1, 2, 3), True, True)
    assert (d.sv_hflip_p, d.sv_jitter_p, d.sv_jitter, d.sv_crop_scale) == (0.5, 0.3, 0.1, (1.0, 1.0))
    assert d.sv_jitter_normalised and d.resize_antialias and d.rs_pairing == "city-tile"
    assert (m.sv_attention_dropout, m.sv_init) == (0.1, "hf")
    gair = cfg.gair_config()
    assert gair.rs_final_norm and gair.queue_size == 4096 and gair.rs_input_size == 96 and gair.embed_dim == 768
    assert i.croma and i.sv_teacher and not i.teacher  # CROMA start, its copy as RS teacher, the in21k photo teacher


def test_ours_and_base_are_the_project_recipe_and_not_called_the_authors():
    ours, base = load_config(CONFIGS / "ours.toml"), load_config(CONFIGS / "base.toml")
    for cfg in (ours, base):
        assert cfg.data.rs_flip_rotate and not cfg.data.resize_antialias and not cfg.gair_config().rs_final_norm
        assert cfg.optim.accum_steps == 1 and cfg.train.epochs == 100 and not cfg.objective.distill
        assert cfg.data.rs_pairing == "crop"
    header = (CONFIGS / "base.toml").read_text().split("\n[")[0]
    assert "NOT the authors'" in header and "authors.toml" in header
    assert load_config(CONFIGS / "tiny.toml").gair_config().embed_dim == 32


def test_print_config_shows_the_authors_values(capsys):
    assert pretrain_alias(["--config", str(CONFIGS / "authors.toml"), "--print-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["objective"]["distill"] is True and shown["train"]["epochs"] == 300
    assert shown["optim"]["accum_steps"] == 96 and shown["data"]["rs_jitter_bands"] == [1, 2, 3]
    assert shown["model"]["overrides"]["rs_final_norm"] is True


def test_config_checks_the_new_keys():
    with pytest.raises(GAIRError, match="rs_contrast_grey_mean needs exactly 3"):
        load_config(None, ["data.rs_contrast_grey_mean=true", "data.rs_jitter_bands=[1, 2]"])
    with pytest.raises(GAIRError, match="model.sv_init"):
        load_config(None, ["model.sv_init=\"jax\""])
    with pytest.raises(GAIRError, match="sv_attention_dropout"):
        load_config(None, ["model.sv_attention_dropout=1.5"])
    assert load_config(None, ["data.rs_jitter_bands=[0, 4, 5, 9]"]).data.rs_jitter_bands == (0, 4, 5, 9)


def test_rs_jitter_on_three_bands_in_random_order_around_the_grey_mean():
    crop = np.random.default_rng(0).uniform(0.2, 0.6, (10, 6, 6)).astype(np.float32)
    orders = set()
    for seed in range(40):
        out = rs_colour_jitter(crop, np.random.default_rng(seed), 0.2, 0.2, (1, 2, 3), True, True)
        np.testing.assert_array_equal(out[[0, 4, 5, 6, 7, 8, 9]], crop[[0, 4, 5, 6, 7, 8, 9]])  # others untouched
        rng = np.random.default_rng(seed)  # the same draws, by hand
        order = tuple(rng.permutation(2))
        orders.add(order)
        part = crop[1:4].copy()
        for op in order:
            if op == 0:
                part = np.clip(part * np.float32(rng.uniform(0.8, 1.2)), 0, 1)
            else:
                factor = np.float32(rng.uniform(0.8, 1.2))
                grey = np.float32((_LUMA[:, None, None] * part).sum(0).mean())  # ITU-R 601 grey of B3 B4 B5
                part = np.clip((part - grey) * factor + grey, 0, 1)
        np.testing.assert_allclose(out[1:4], part, rtol=1e-6, atol=1e-6)
    assert orders == {(0, 1), (1, 0)}


def test_photo_jitter_on_the_normalised_tensor_clamps_below_mean_values():
    norm = np.random.default_rng(0).normal(0, 1, (8, 8, 3)).astype(np.float32)  # a normalised photo: half negative
    out = sv_colour_jitter(norm, np.random.default_rng(1), 0.1, bound=1.0)
    assert out.min() >= 0.0 and out.max() <= 1.0
    clamped = np.isin(out, (0.0, 1.0)).mean()
    assert clamped > 0.3  # the normalised values outside 0..1 (about half are negative, 16 % above 1) are cut
    assert np.isin(sv_colour_jitter(norm * 0.1 + 0.5, np.random.default_rng(1), 0.1, bound=1.0), (0.0, 1.0)).mean() == 0


def test_antialiased_resize_filters_what_the_inference_resize_aliases():
    checker = (np.indices((224, 224)).sum(0) % 2).astype(np.float32)[None, None]  # Nyquist-rate pattern
    plain = resize_bicubic(checker, 96, 96)
    smooth = resize_antialiased(checker, 96)
    assert smooth.shape == plain.shape == (1, 1, 96, 96)
    assert smooth.std() < 0.05 < plain.std()
    assert smooth.mean() == pytest.approx(0.5, abs=0.02)
    flat = np.full((1, 2, 50, 50), 0.3, np.float32)
    np.testing.assert_allclose(resize_antialiased(flat, 20), 0.3, atol=1e-6)


def test_photo_attention_dropout_and_hf_init():
    torch.manual_seed(0)
    cfg_model = engine.GAIRConfig.tiny()
    model = engine.GAIRModel(cfg_model).train()
    cfg = load_config(None, ["model.sv_attention_dropout=0.5", "model.sv_init=\"hf\"", "model.preset=\"tiny\""])
    notes = apply_photo_settings(cfg, model)
    assert any("dropout 0.5" in n for n in notes) and any("Hugging Face" in n for n in notes)
    x = torch.rand(2, 3, cfg_model.sv_input_size, cfg_model.sv_input_size)
    torch.manual_seed(1)
    a = model.encode_sv(x)
    b = model.encode_sv(x)
    assert not torch.allclose(a, b)  # dropout active in training
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.encode_sv(x), model.encode_sv(x))
    sv = model.sv_encoder
    weights = torch.cat([m.weight.flatten() for m in sv.modules() if isinstance(m, torch.nn.Linear)])
    assert weights.std().item() == pytest.approx(0.02, rel=0.1)
    assert all(m.bias.abs().max() == 0 for m in sv.modules() if isinstance(m, torch.nn.Linear))
    assert sv.embeddings.cls_token.std().item() == pytest.approx(0.02, rel=0.5)
    assert sv.embeddings.position_embeddings.std().item() == pytest.approx(0.02, rel=0.2)
    fresh = engine.GAIRModel(cfg_model)
    assert fresh.sv_encoder.embeddings.cls_token.abs().max() == 0  # without the option: PyTorch default, zero cls
    hf_vit_init(fresh.sv_encoder)
    assert fresh.sv_encoder.embeddings.cls_token.abs().max() > 0


def test_dataset_applies_the_authors_resize_and_photo_jitter(tmp_path):
    from engine.io.vectors import read_point_table
    from engine.pretrain.build_dataset import build_manifest
    from engine.pretrain.config import DataSection
    from engine.pretrain.data import PretrainDataset
    from engine.pretrain.manifest import read_manifest
    from engine.pretrain.synthetic import WorldSpec, make_world
    from engine.runtime.preprocess import preprocess_rs, scale_rs

    tiny = engine.GAIRConfig.tiny()
    world = make_world(tmp_path, WorldSpec(size_px=128, n_photos=12, n_labels=4, seed=1))
    build_manifest([world.raster], read_point_table(world.photos_csv), tmp_path / "m.csv", tiny.crop_ground_m, seed=0)
    samples = read_manifest(tmp_path / "m.csv")
    authors = DataSection(rs_flip_rotate=False, rs_jitter_p=0.0, resize_antialias=True, sv_crop_scale=(1.0, 1.0),
                          sv_hflip_p=0.0, sv_jitter_p=1.0, sv_jitter_normalised=True, num_workers=0)
    ds = PretrainDataset(samples, tiny, authors, train=True, seed=0)
    item = ds[(0, 1)]
    raw = ds._rasters.read(samples[1].rs_path, samples[1].window)
    np.testing.assert_allclose(item["rs"].numpy(), resize_antialiased(scale_rs(raw[None], tiny), 48)[0], atol=1e-6)
    assert not np.allclose(item["rs"].numpy(), preprocess_rs(raw, tiny)[0], atol=1e-3)  # 64 -> 48 px: aliasing differs
    assert item["sv"].min() >= 0 and item["sv"].max() <= 1  # the jitter's clamp on the normalised photo
    plain = PretrainDataset(samples, tiny, authors, train=False, seed=0)[(0, 1)]
    np.testing.assert_array_equal(plain["rs"].numpy(), preprocess_rs(raw, tiny)[0])  # evaluation: the inference resize
    assert plain["sv"].min() < 0


def test_city_tile_pairing_draws_a_whole_tile_of_the_folder(tmp_path):
    import rasterio
    from pyproj import Transformer

    from engine.io.vectors import read_point_table
    from engine.pretrain.build_dataset import build_manifest
    from engine.pretrain.config import DataSection
    from engine.pretrain.data import PretrainDataset
    from engine.pretrain.manifest import read_manifest
    from engine.pretrain.synthetic import WorldSpec, make_world
    from engine.runtime.preprocess import preprocess_rs

    tiny = engine.GAIRConfig.tiny()
    world = make_world(tmp_path / "w", WorldSpec(size_px=128, n_photos=12, n_labels=4, seed=1))
    build_manifest([world.raster], read_point_table(world.photos_csv), tmp_path / "m.csv", tiny.crop_ground_m, seed=0,
                   crops_dir=tmp_path / "city")  # one folder of tiles = one city
    samples = read_manifest(tmp_path / "m.csv")
    off = dict(rs_flip_rotate=False, rs_jitter_p=0.0, sv_jitter_p=0.0, num_workers=0)
    ds = PretrainDataset(samples, tiny, DataSection(rs_pairing="city-tile", **off), train=True, seed=0)
    tiles = sorted({s.rs_path for s in samples})
    drawn = set()
    for epoch in range(12):
        item = ds[(epoch, 3)]
        match = [t for t in tiles if np.array_equal(item["rs"].numpy(), preprocess_rs(ds._rasters.read(t, None),
                                                                                      tiny)[0])]
        assert len(match) == 1  # a whole tile of the city, resized to the model input
        drawn.add(match[0])
        with rasterio.open(match[0]) as src:
            b = src.bounds
            x, y = Transformer.from_crs("EPSG:4326", src.crs, always_xy=True).transform(samples[3].lon, samples[3].lat)
        expected = np.clip([(x - b.left) / (b.right - b.left), (b.top - y) / (b.top - b.bottom)], 0, 1)
        np.testing.assert_allclose(item["rel_xy"].numpy(), expected, atol=1e-9)
    assert len(drawn) > 3  # redrawn on every load
    fixed = PretrainDataset(samples, tiny, DataSection(**off), train=True, seed=0)[(0, 3)]
    assert fixed["rel_xy"].tolist() == [samples[3].query_x, samples[3].query_y]  # default: the photo's own crop
    with pytest.raises(GAIRError, match="data.rs_pairing"):
        load_config(None, ['data.rs_pairing="anywhere"'])
