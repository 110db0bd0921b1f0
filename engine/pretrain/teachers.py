"""Distillation teachers from their released files, without the `transformers` package.

Photo: google/vit-base-patch16-224-in21k (the authors' `ViTModel.from_pretrained`), as `model.safetensors` or
`pytorch_model.bin` in Hugging Face names (`embeddings.*`, `encoder.layer.N.*`, `layernorm.*`, `pooler.*`, with or
without a `vit.` prefix); our street-view encoder uses the same names, so the file maps key for key. RS: CROMA's
released optical encoder (`CROMA_base.pt`); GAIR's RS teacher is CROMA as the authors loaded it, a 10-band copy.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..errors import GAIRError
from ..model.checkpoint import load_torch_file

HF_PREFIXES = ("vit.", "model.", "module.")
_HF_HINT = ("download google/vit-base-patch16-224-in21k's model.safetensors (or pytorch_model.bin) where there is "
            "network and give its path as init.sv_teacher")


def read_weights(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a PyTorch file (bare or {'state_dict'|'model': ...})."""
    path = Path(path)
    if not path.is_file():
        raise GAIRError(f"{what} {path} not found; {_HF_HINT}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise GAIRError(f"could not read {what} {path} ({exc}); {_HF_HINT}") from exc
    obj = load_torch_file(path, what, f"; {_HF_HINT}")
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise GAIRError(f"{what} {path} holds no state dict; {_HF_HINT}")
    return obj


def load_hf_vit(encoder: nn.Module, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Load a Hugging Face ViT state dict into a street-view encoder strictly (pooler included). Returns notes."""
    ours = encoder.state_dict()
    mapped = {}
    for key, value in state.items():
        name = next((key[len(p):] for p in HF_PREFIXES if key.startswith(p)), key)
        if name in ours:
            mapped[name] = value
    missing = [k for k in ours if k not in mapped]
    wrong = [f"{k} {tuple(mapped[k].shape)} vs {tuple(ours[k].shape)}" for k in mapped
             if tuple(mapped[k].shape) != tuple(ours[k].shape)]
    if missing or wrong:
        detail = "; ".join([f"missing {', '.join(missing[:4])}"] * bool(missing) + wrong[:4])
        raise GAIRError(f"{source} is not a ViT-B/16 in Hugging Face names that fits this photo encoder ({detail}); "
                        f"{_HF_HINT}")
    encoder.load_state_dict({k: v.to(ours[k].dtype) for k, v in mapped.items()})
    unused = len(state) - len(mapped)
    return [f"photo teacher: {len(mapped)} tensors from {source}" + (f", {unused} not used (heads)" if unused else "")]


def load_croma_teacher(teacher: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """The teacher's RS encoder from a CROMA optical encoder (as the student's CROMA start). Returns notes."""
    from .weights import load_croma

    return [f"RS teacher: {note}" for note in load_croma(teacher, state)]
