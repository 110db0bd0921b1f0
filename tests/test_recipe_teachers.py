"""Distillation teachers from local files: ViT-B/16 in21k in Hugging Face names, CROMA's released encoder."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import engine
from engine import GAIRError
from engine.pretrain.config import load_config
from engine.pretrain.teachers import load_hf_vit, read_weights
from engine.pretrain.weights import build_start, build_teacher

TINY_SET = ["model.preset=\"tiny\"", "objective.distill=true"]


def hf_vit_state(seed: int = 3, prefix: str = "") -> dict[str, torch.Tensor]:
    """A tiny ViT state dict in Hugging Face names (as ViTModel / ViTForImageClassification save it)."""
    torch.manual_seed(seed)
    encoder = engine.GAIRModel(engine.GAIRConfig.tiny()).sv_encoder
    state = {f"{prefix}{k}": torch.randn_like(v) for k, v in encoder.state_dict().items()}
    if prefix:
        state["classifier.weight"] = torch.zeros(5, 32)  # a head the teacher does not use
    return state


def croma_state(seed: int = 4) -> dict:
    torch.manual_seed(seed)
    s2 = engine.GAIRModel(engine.GAIRConfig.tiny()).rs_encoder.s2_encoder
    state = {k: torch.randn_like(v) for k, v in s2.state_dict().items() if not k.startswith("linear_input.")}
    state["linear_input.weight"], state["linear_input.bias"] = torch.zeros(32, 12 * 64), torch.zeros(32)
    return {"s2_encoder": state}


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "vit-prefix"])
def test_photo_teacher_loads_hf_names_from_local_files(tmp_path, fmt):
    state = hf_vit_state(prefix="vit." if fmt == "vit-prefix" else "")
    path = tmp_path / ("model.safetensors" if fmt == "safetensors" else "pytorch_model.bin")
    save_file(state, str(path)) if fmt == "safetensors" else torch.save(state, path)
    encoder = engine.GAIRModel(engine.GAIRConfig.tiny()).sv_encoder
    notes = load_hf_vit(encoder, read_weights(path, "photo teacher"), str(path))
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, state[("vit." if fmt == "vit-prefix" else "") + key]), key
    assert ("not used" in notes[0]) == (fmt == "vit-prefix")


def test_photo_teacher_errors_are_clear(tmp_path):
    encoder = engine.GAIRModel(engine.GAIRConfig.tiny()).sv_encoder
    with pytest.raises(GAIRError, match="not found; download google/vit-base-patch16-224-in21k"):
        read_weights(tmp_path / "absent.safetensors", "photo teacher")
    state = hf_vit_state()
    del state["pooler.dense.weight"]
    with pytest.raises(GAIRError, match="missing pooler.dense.weight"):
        load_hf_vit(encoder, state, "x.safetensors")
    state = hf_vit_state()
    state["embeddings.cls_token"] = torch.zeros(1, 1, 768)
    with pytest.raises(GAIRError, match=r"embeddings.cls_token \(1, 1, 768\) vs \(1, 1, 32\)"):
        load_hf_vit(encoder, state, "x.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(GAIRError, match="could not read photo teacher"):
        read_weights(tmp_path / "junk.safetensors", "photo teacher")


def test_build_teacher_from_both_files(tmp_path):
    save_file(hf_vit_state(), str(tmp_path / "vit.safetensors"))
    torch.save(croma_state(), tmp_path / "CROMA_base.pt")
    cfg = load_config(None, [*TINY_SET, f"init.sv_teacher=\"{tmp_path / 'vit.safetensors'}\"",
                             f"init.rs_teacher=\"{tmp_path / 'CROMA_base.pt'}\""])
    model, _ = build_start(cfg)
    teacher = build_teacher(cfg, model)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    vit = hf_vit_state()
    assert all(torch.equal(v, vit[k]) for k, v in teacher.sv_encoder.state_dict().items())
    croma = croma_state()["s2_encoder"]
    s2 = teacher.rs_encoder.s2_encoder
    assert torch.equal(s2.transformer.layers[0][0].to_qkv.weight, croma["transformer.layers.0.0.to_qkv.weight"])
    # 12 CROMA bands vs 10 here: the teacher shares the student's patch embedding, as the authors' deep copy
    assert torch.equal(s2.linear_input.weight, model.rs_encoder.s2_encoder.linear_input.weight)
    # the student is untouched
    assert not torch.equal(model.sv_encoder.pooler.dense.weight, teacher.sv_encoder.pooler.dense.weight)


def test_missing_teacher_files_are_clear_errors(tmp_path):
    cfg = load_config(None, [*TINY_SET, f"init.sv_teacher=\"{tmp_path / 'none.safetensors'}\""])
    model, _ = build_start(cfg)
    with pytest.raises(GAIRError, match="photo teacher .* not found"):
        build_teacher(cfg, model)
    cfg = load_config(None, [*TINY_SET, f"init.rs_teacher=\"{tmp_path / 'none.pt'}\""])
    with pytest.raises(GAIRError, match="RS teacher \\(CROMA\\) .* not found"):
        build_teacher(cfg, model)
