"""Starting points: random, a bundle, CROMA's RS encoder, GeoCLIP's location capsules (no network needed)."""
from __future__ import annotations

import math

import pytest
import torch

import engine
from engine import GAIRConfig, GAIRError
from engine.model.encoders import LocationEncoder
from engine.pretrain.config import load_config
from engine.pretrain.weights import (
    build_start,
    build_teacher,
    croma_state,
    load_geoclip,
)

SIGMAS = (2.0**0, 2.0**4, 2.0**8)


def fake_geoclip_state(seed: int = 0) -> dict:
    """GeoCLIP's location_encoder_weights.pth layout: LocEnc{i}.capsule.{0.b,1,3,5}, 512-wide heads."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i, sigma in enumerate(SIGMAS):
        p = f"LocEnc{i}."
        state[p + "capsule.0.b"] = torch.randn(256, 2, generator=g) * sigma
        for j, fan_in in ((1, 512), (3, 1024), (5, 1024)):
            state[p + f"capsule.{j}.weight"] = torch.randn(1024, fan_in, generator=g) / math.sqrt(fan_in)
            state[p + f"capsule.{j}.bias"] = torch.randn(1024, generator=g) * 0.01
        state[p + "head.0.weight"] = torch.randn(512, 1024, generator=g) / 32
        state[p + "head.0.bias"] = torch.zeros(512)
    return state


def geoclip_capsule(latlon: torch.Tensor, state: dict, i: int) -> torch.Tensor:
    """GeoCLIP's capsule i as its paper defines it, on [lat, lon] input (Equal Earth, then random Fourier features)."""
    a1, a2, a3, a4, sf = 1.340264, -0.081106, 0.000893, 0.003796, 66.50336
    sqrt3 = float(torch.tensor(3.0).sqrt())  # GeoCLIP computes sqrt(3) as a float32 tensor
    lat, lon = torch.deg2rad(latlon[:, 0].double()), torch.deg2rad(latlon[:, 1].double())
    theta = torch.asin(sqrt3 / 2 * torch.sin(lat))
    x = 2 * sqrt3 * lon * torch.cos(theta) / (3 * (9 * a4 * theta**8 + 7 * a3 * theta**6 + 3 * a2 * theta**2 + a1))
    y = a4 * theta**9 + a3 * theta**7 + a2 * theta**3 + a1 * theta
    xy = torch.stack([x, y], 1) * sf / 180
    vp = 2 * math.pi * xy @ state[f"LocEnc{i}.capsule.0.b"].double().T
    h = torch.cat([torch.cos(vp), torch.sin(vp)], 1)
    for j in (1, 3, 5):
        weight, bias = state[f"LocEnc{i}.capsule.{j}.weight"], state[f"LocEnc{i}.capsule.{j}.bias"]
        h = torch.relu(h @ weight.double().T + bias.double())
    return h


def test_geoclip_capsules_map_and_heads_start_fresh():
    state = fake_geoclip_state()
    torch.manual_seed(0)
    encoder = LocationEncoder(GAIRConfig())
    heads_before = encoder.LocEnc1.head[0].weight.clone()
    notes = load_geoclip(encoder, state)
    assert "21 capsule tensors" in notes[0] and "768" in notes[0]
    for key, value in state.items():
        if ".capsule." in key:
            assert torch.equal(encoder.state_dict()[key], value), key
    head = encoder.LocEnc1.head[0].weight
    assert head.shape == (768, 1024) and not torch.equal(head, heads_before)
    lonlat = torch.tensor([[11.35, 48.1], [-122.4, 37.8], [139.75, 35.66], [0.0, -89.0]], dtype=torch.float64)
    encoder.double()  # float64 on both sides: the 2^8-sigma Fourier phases are too large to compare in float32
    with torch.no_grad():
        from engine.model.encoders import equal_earth

        for i in range(3):
            ours = getattr(encoder, f"LocEnc{i}").capsule(equal_earth(lonlat))
            theirs = geoclip_capsule(lonlat.flip(1), state, i)  # GeoCLIP is fed [lat, lon]
            assert torch.allclose(ours, theirs, rtol=1e-9, atol=1e-9 * float(theirs.abs().max()))


def test_geoclip_mismatches_are_errors():
    state = fake_geoclip_state()
    with pytest.raises(GAIRError, match="base location encoder"):
        load_geoclip(LocationEncoder(GAIRConfig.tiny()), state)
    del state["LocEnc2.capsule.3.weight"]
    with pytest.raises(GAIRError, match="lack LocEnc2.capsule.3.weight"):
        load_geoclip(LocationEncoder(GAIRConfig()), state)
    with pytest.raises(GAIRError, match="capsules \\['LocEnc2'\\]"):
        load_geoclip(LocationEncoder(GAIRConfig(loc_sigmas=(1.0, 16.0))), fake_geoclip_state())


def fake_croma(cfg: GAIRConfig, seed: int = 1) -> dict:
    """CROMA_base.pt layout: {'s2_encoder': ViT state (12-band patch embedding, final norm), 's2_GAP_FFN': ...}."""
    torch.manual_seed(seed)
    vit = engine.GAIRModel(cfg).rs_encoder.s2_encoder.state_dict()
    d = cfg.embed_dim
    vit["linear_input.weight"] = torch.randn(d, 12 * cfg.rs_patch_size**2)
    vit["transformer.norm_out.weight"] = torch.ones(d)
    vit["transformer.norm_out.bias"] = torch.zeros(d)
    return {"s2_encoder": vit, "s2_GAP_FFN": {"0.weight": torch.ones(d)}, "s1_encoder": {}}


def test_croma_start_copies_the_encoder_and_reinitialises_the_patch_embedding(tmp_path):
    cfg = GAIRConfig.tiny()
    croma = fake_croma(cfg)
    path = tmp_path / "CROMA_base.pt"
    torch.save(croma, path)
    model, report = build_start(load_config("configs/tiny.toml", [f'init.croma="{path}"']))
    ours = model.rs_encoder.s2_encoder.state_dict()
    for key, value in croma["s2_encoder"].items():
        if key.startswith("transformer.layers."):
            assert torch.equal(ours[key], value), key
    assert ours["linear_input.weight"].shape == (32, 640)
    assert any("re-initialised linear_input" in n for n in report.notes)
    assert any("transformer.norm_out.weight" in n for n in report.notes)  # reported, not silently dropped
    flat = {f"s2_encoder.{k}": v for k, v in croma["s2_encoder"].items()}
    assert croma_state(flat).keys() == croma["s2_encoder"].keys()
    with pytest.raises(GAIRError, match="no CROMA optical encoder"):
        croma_state({"model": {}})
    torch.save(fake_croma(GAIRConfig.tiny(rs_depth=3)), path)
    with pytest.raises(GAIRError, match="does not fit"):
        build_start(load_config("configs/tiny.toml", [f'init.croma="{path}"']))


def test_random_and_bundle_starts(tmp_path):
    cfg = load_config("configs/tiny.toml", ["train.seed=4"])
    a, report = build_start(cfg)
    b, _ = build_start(cfg)
    assert report.queue_filled == 0 and float(a.queue_for_location.abs().sum()) == 0.0
    assert a.fingerprint == b.fingerprint and a.training
    a.queue_for_location.fill_(1.0)
    a.invalidate_fingerprint()
    engine.save_bundle(a, tmp_path / "bundle")
    bundle = f'init.source="{tmp_path / "bundle"}"'
    c, report = build_start(load_config("configs/tiny.toml", [bundle, "model.embed_dim=64"]))
    assert report.queue_filled == c.config.queue_size and c.fingerprint == a.fingerprint
    assert any("ignored" in n for n in report.notes)
    _, report = build_start(load_config("configs/tiny.toml", [bundle, "init.reset_queue=true"]))
    assert report.queue_filled == 0
    teacher = build_teacher(load_config("configs/tiny.toml", ["objective.distill=true"]), c)
    assert teacher is not c and not any(p.requires_grad for p in teacher.parameters())
    assert build_teacher(cfg, c) is None


def test_weight_files_are_read_without_running_pickled_code(tmp_path):
    """One loader (weights_only) for CROMA, GeoCLIP and training checkpoints; errors name what and which file."""
    import datetime

    from engine.pretrain.state import load_checkpoint

    with pytest.raises(GAIRError, match=r"CROMA weights .*none\.pt not found"):
        build_start(load_config("configs/tiny.toml", [f'init.croma="{tmp_path / "none.pt"}"']))
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"when": datetime.date(2024, 1, 1)}, unsafe)  # any non-tensor global is refused by weights_only
    with pytest.raises(GAIRError, match=r"could not read GeoCLIP weights .*unsafe\.pt"):
        build_start(load_config("configs/tiny.toml", [f'init.geoclip="{unsafe}"']))
    with pytest.raises(GAIRError, match="could not read training checkpoint"):
        load_checkpoint(unsafe)
    plain = tmp_path / "plain.pt"
    torch.save({"step": 3}, plain)
    with pytest.raises(GAIRError, match="is not a pretraining checkpoint"):
        load_checkpoint(plain)
