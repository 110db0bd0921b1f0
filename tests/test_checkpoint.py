"""Checkpoint loading is strict and explains itself; bundles round-trip; the hub path fails clearly offline."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import engine
from engine.model.checkpoint import load_official

TINY = engine.GAIRConfig.tiny()


@pytest.fixture()
def tiny_state():
    torch.manual_seed(0)
    model = engine.GAIRModel(TINY)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def test_fingerprint_is_blake2b_of_names_and_float32_bytes(tiny_state):
    """The fingerprint hashes each entry's name and float32 C-order bytes, sorted by name: bundles and rasters
    record it, so the stream is fixed (a long buffer is hashed as float32, a transposed weight in C order)."""
    import hashlib

    model, _ = tiny_state
    with torch.no_grad():
        model.imnet.weight.data = model.imnet.weight.data.t().contiguous().t()  # a non-contiguous parameter
    assert not model.imnet.weight.is_contiguous() and model.state_dict()["queue_ptr_location"].dtype == torch.long
    h = hashlib.blake2b(digest_size=8)
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode() + np.ascontiguousarray(tensor.detach().numpy(), dtype=np.float32).tobytes())
    model.invalidate_fingerprint()
    assert model.fingerprint == h.hexdigest()


def probe(model) -> np.ndarray:
    x = np.random.default_rng(0).random((1, 10, TINY.rs_input_size, TINY.rs_input_size)).astype(np.float32)
    return model.query_localized(x, [[0.5, 0.5]], [[0.0, 1.0, 1.0, 0.0]])


@pytest.mark.parametrize("wrap", ["model", "bare", "module"])
def test_official_formats_load(tmp_path, tiny_state, wrap):
    model, state = tiny_state
    if wrap == "module":
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save({"model": state, "epoch": 3} if wrap != "bare" else state, tmp_path / "ck.pth")
    loaded = load_official(tmp_path / "ck.pth", config=TINY)
    assert loaded.fingerprint == model.fingerprint
    np.testing.assert_array_equal(probe(loaded), probe(model))


def test_missing_and_mismatched_keys_are_listed(tmp_path, tiny_state):
    _, state = tiny_state
    del state["imnet.bias"]
    state["optical_proj.weight"] = torch.zeros(3, 3)
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(engine.GAIRError, match=r"missing key\(s\): imnet.bias") as info:
        load_official(tmp_path / "bad.pth", config=TINY)
    assert "optical_proj.weight: checkpoint (3, 3) vs model (32, 32)" in str(info.value)


def test_unknown_keys_are_errors_unless_allowed(tmp_path, tiny_state):
    _, state = tiny_state
    state["mystery.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(engine.GAIRError, match="unexpected key.*mystery.weight"):
        load_official(tmp_path / "extra.pth", config=TINY)
    with pytest.warns(UserWarning, match="mystery.weight"):
        model = load_official(tmp_path / "extra.pth", config=TINY, allow_unknown=True)
    assert "mystery.weight" in model.load_report.ignored


def test_training_keys_are_reported_and_ignored(tmp_path, tiny_state):
    model, state = tiny_state
    state["rs_encoder.s2_encoder.transformer.norm_out.weight"] = torch.ones(32)
    state["sv_encoder_teacher.pooler.dense.bias"] = torch.zeros(32)
    state["queue_for_rs_encoding"] = torch.zeros(32, 8)
    torch.save({"model": state}, tmp_path / "train.pth")
    with pytest.warns(UserWarning, match="ignored") as record:
        loaded = load_official(tmp_path / "train.pth", config=TINY)
    text = str(record[0].message)
    assert "norm_out" in text and "teacher" in text and "queue" in text
    assert set(loaded.load_report.ignored) == {"rs_encoder.s2_encoder.transformer.norm_out.weight",
                                               "sv_encoder_teacher.pooler.dense.bias", "queue_for_rs_encoding"}
    np.testing.assert_array_equal(probe(loaded), probe(model))


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(engine.GAIRError, match="could not read checkpoint"):
        engine.load_model(tmp_path / "junk.pth")
    with pytest.raises(engine.GAIRError, match="does not exist"):
        engine.load_model(tmp_path / "nope.pth")
    with pytest.raises(engine.GAIRError, match="not a GAIR bundle"):
        engine.load_model(tmp_path)


def test_bundle_round_trip_and_env_path(tmp_path, tiny_state, monkeypatch):
    model, _ = tiny_state
    out = engine.save_bundle(model, tmp_path / "bundle")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    loaded = engine.load_model(out, device="cpu")
    assert loaded.config == model.config and loaded.fingerprint == model.fingerprint
    np.testing.assert_array_equal(probe(loaded), probe(model))
    monkeypatch.setenv("GAIR_CHECKPOINT", str(out))
    assert engine.load_model(None).fingerprint == model.fingerprint
    (out / "model.safetensors").unlink()
    with pytest.raises(engine.GAIRError, match="not written completely"):
        engine.load_model(out)


def test_hub_download_fails_clearly_offline(tmp_path):
    code = ("import engine\nfrom engine.runtime.loading import fetch_official_checkpoint\n"
            f"fetch_official_checkpoint(cache_dir={str(tmp_path)!r})")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GAIR_CHECKPOINT": ""}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert "PingL/GAIR" in proc.stderr and "GAIR_CHECKPOINT" in proc.stderr


def test_convention_override(tmp_path, tiny_state):
    model, _ = tiny_state
    engine.save_bundle(model, tmp_path / "b")
    released = engine.load_model(tmp_path / "b", device="cpu")
    legacy = engine.load_model(tmp_path / "b", device="cpu", nili_convention="legacy")
    assert legacy.config.nili_convention == "legacy" and legacy.fingerprint == released.fingerprint
    tok = np.random.default_rng(0).random((1, TINY.rs_tokens, 32)).astype(np.float32)
    assert not np.allclose(released.query_tokens(tok, [[[0.8, 0.3]]]), legacy.query_tokens(tok, [[[0.8, 0.3]]]))
    with pytest.raises(engine.GAIRError, match="nili_convention must be one of released, legacy; got 'sideways'"):
        engine.load_model(tmp_path / "b", nili_convention="sideways")


def test_config_mistakes_are_one_line_gair_errors():
    cases = [({"embed_dim": 0}, "positive integers; got embed_dim=0"),
             ({"rs_patch_size": 7}, "multiples of their patch"),
             ({"rs_mean": (1.0,)}, "one value per band"), ({"nili_convention": "x"}, "nili_convention must be one of")]
    for overrides, message in cases:
        with pytest.raises(engine.GAIRError, match=message) as info:
            engine.GAIRConfig.tiny(**overrides)
        assert "\n" not in str(info.value)
    with pytest.raises(engine.GAIRError, match=r"unknown GAIRConfig fields \['embed_dims'\]"):
        engine.GAIRConfig.from_dict({"embed_dims": 3})
    with pytest.raises(engine.GAIRError, match="mapping"):
        engine.GAIRConfig.from_dict([768])
    assert engine.GAIRConfig.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY


def test_damaged_bundles_are_explained(tmp_path, tiny_state):
    model, _ = tiny_state
    out = engine.save_bundle(model, tmp_path / "bundle")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp file left behind
    (out / "model.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(engine.GAIRError, match="could not read .*model.safetensors"):
        engine.load_model(out, device="cpu")
    (out / "config.json").write_text("{")
    with pytest.raises(engine.GAIRError, match="not valid JSON"):
        engine.load_model(out, device="cpu")
    (out / "config.json").write_text(json.dumps({"format": "gair-bundle"}))
    with pytest.raises(engine.GAIRError, match="lacks its config or fingerprint"):
        engine.load_model(out, device="cpu")
    (out / "config.json").write_text(json.dumps({"format": "gair-onnx"}))
    with pytest.raises(engine.GAIRError, match="'gair-onnx', not 'gair-bundle': this folder is not a GAIR bundle"):
        engine.load_model(out, device="cpu")


@pytest.fixture()
def no_network(monkeypatch):
    """Every TCP connection attempt is counted and refused, as on a machine without network."""
    import socket

    attempts = []

    def refuse(address, *args, **kwargs):
        attempts.append(address)
        raise ConnectionRefusedError(f"no network in this test ({address})")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return attempts


def test_hub_fails_fast_offline_with_one_attempt(tmp_path, no_network, monkeypatch):
    import time

    import huggingface_hub

    from engine.runtime.loading import fetch_official_checkpoint

    downloads = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: downloads.append(a))
    started = time.perf_counter()
    with pytest.raises(engine.GAIRError) as info:
        fetch_official_checkpoint(cache_dir=tmp_path)
    print(f"offline failure after {time.perf_counter() - started:.2f} s")  # measured, not asserted
    assert len(no_network) == 1 and downloads == []  # one quick metadata request, no retries, no download
    message = str(info.value)
    assert "cannot be reached" in message and "PingL/GAIR" in message
    assert "GAIR settings" in message and "python -m engine fetch" in message and "\n" not in message
    monkeypatch.setenv("GAIR_CHECKPOINT", "")
    with pytest.raises(engine.GAIRError, match="cannot be reached"):
        engine.load_model(None)  # the plain engine path goes the same way
    assert len(no_network) == 2


def test_hub_offline_setting_means_no_connection_at_all(tmp_path, no_network, monkeypatch):
    from engine.runtime.loading import fetch_official_checkpoint

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set after huggingface_hub was imported: still honoured
    with pytest.raises(engine.GAIRError, match="HF_HUB_OFFLINE is set.*GAIR settings"):
        fetch_official_checkpoint(cache_dir=tmp_path)
    assert no_network == []


def _cache_checkpoint(cache_dir, content: bytes = b"weights") -> str:
    """A checkpoint in the hub cache's layout (as hf_hub_download leaves it)."""
    repo = cache_dir / "models--PingL--GAIR"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "checkpoint.pth").write_bytes(content)
    return str(snapshot / "checkpoint.pth")


def test_cached_checkpoint_is_used_without_network(tmp_path, no_network, monkeypatch):
    from engine.runtime.loading import fetch_official_checkpoint, official_checkpoint_info

    path = _cache_checkpoint(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert str(fetch_official_checkpoint(cache_dir=tmp_path, allow_download=False)) == path
    info = official_checkpoint_info(cache_dir=tmp_path)
    assert str(info.cached) == path and info.size == len(b"weights")
    assert no_network == []


def test_hub_size_is_reported_before_downloading_and_consent_is_needed(tmp_path, monkeypatch, caplog):
    import logging
    from types import SimpleNamespace

    import huggingface_hub

    import engine.runtime.loading as loading
    from engine.runtime.loading import fetch_official_checkpoint

    events = []
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(loading, "_check_reachable", lambda endpoint, timeout: events.append(("reach", timeout)))
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata",
                        lambda url, timeout, retry_on_errors: events.append(("head", timeout, retry_on_errors))
                        or SimpleNamespace(size=1_634_000_000))

    def download(repo, filename, cache_dir, etag_timeout):
        events.append(("download", [r.getMessage() for r in caplog.records]))
        return _cache_checkpoint(tmp_path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(engine.GAIRError, match=r"checkpoint.pth from the hub repo PingL/GAIR \(1.6 GB\) needs your "
                                               "consent"):
        fetch_official_checkpoint(cache_dir=tmp_path, allow_download=False)
    assert events == [("reach", 5.0), ("head", 5.0, False)]  # a short timeout, no retries
    with caplog.at_level(logging.INFO, logger="engine.runtime.loading"):
        path = fetch_official_checkpoint(cache_dir=tmp_path)
    assert path.name == "checkpoint.pth" and path.is_file()
    assert events[-1][0] == "download"
    assert any("downloading checkpoint.pth from the hub repo PingL/GAIR (1.6 GB)" in m for m in events[-1][1])


def test_describe_model_of_a_bundle(tmp_path, tiny_state):
    from engine.runtime.loading import describe_model

    model, _ = tiny_state
    engine.save_bundle(model, tmp_path / "pre", source="engine.pretrain (random init, 120 steps)")
    loaded = engine.load_model(tmp_path / "pre", device="cpu")
    info = describe_model(loaded)
    assert info["dims"] == 32 and info["training_steps"] == 120 and info["fingerprint"] == loaded.fingerprint
    assert info["source"] == str(tmp_path / "pre") and info["origin"].startswith("engine.pretrain")
    assert (info["backend"], info["device"], info["kind"]) == ("torch", "cpu", "GAIR bundle")
    assert info["description"] == "GAIR bundle, 32-d, pretrained 120 steps"
    torch.save({"model": model.state_dict()}, tmp_path / "checkpoint.pth")
    official = describe_model(load_official(tmp_path / "checkpoint.pth", TINY))
    assert official["kind"] == "official GAIR checkpoint" and official["training_steps"] is None
    assert official["source"] == str(tmp_path / "checkpoint.pth") and official["dims"] == 32


def test_info_command_describes_the_model(tmp_path, tiny_state, capsys):
    import json

    from engine.cli.main import main

    model, _ = tiny_state
    engine.save_bundle(model, tmp_path / "b", source="engine.pretrain (random init, 7 steps)")
    assert main(["info", str(tmp_path / "b")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["dims"], info["training_steps"], info["backend"], info["device"]) == (32, 7, "torch", "cpu")
    assert info["fingerprint"] == model.fingerprint and info["source"] == str(tmp_path / "b")


def test_describe_model_of_an_onnx_export_reads_its_bundle(tmp_path, tiny_state):
    from engine.model.onnx_export import export_onnx
    from engine.runtime.loading import describe_model

    model, _ = tiny_state
    bundle = engine.save_bundle(model, tmp_path / "b", source="engine.pretrain (random init, 9 steps)")
    export = export_onnx(str(bundle), tmp_path / "onnx")
    info = describe_model(engine.load_model(export, backend="onnx", device="cpu"))
    assert (info["kind"], info["backend"], info["device"], info["dims"]) == ("ONNX export", "onnx", "cpu", 32)
    assert info["origin"] == str(bundle) and info["training_steps"] == 9 and info["fingerprint"] == model.fingerprint
