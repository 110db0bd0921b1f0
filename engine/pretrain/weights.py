"""Where pretraining starts: random weights, a bundle or the official checkpoint, plus partial starts for the RS
encoder (a CROMA checkpoint) and the location encoder (GeoCLIP's published weights).

CROMA: its optical encoder was trained on 12 bands, ours takes 10, so `linear_input` (the patch embedding) is
re-initialised and everything else under `s2_encoder` is copied. GeoCLIP: the same capsules (Fourier matrix and
three 1024-wide layers per scale); GeoCLIP reads [lat, lon] and we read [lon, lat], but both project to the same
Equal Earth (x, y) before the capsules, so the capsule weights carry over unchanged. Its 512-wide heads do not
fit our embedding width: the heads start fresh.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import GAIRError
from ..model.checkpoint import load_torch_file
from .config import PretrainConfig


@dataclass
class StartReport:
    source: str
    queue_filled: int
    notes: list[str] = field(default_factory=list)


def croma_state(obj: dict) -> dict[str, torch.Tensor]:
    """The optical-encoder state dict inside a CROMA checkpoint: {'s2_encoder': {...}} or flat 's2_encoder.*' keys."""
    if isinstance(obj.get("s2_encoder"), dict):
        return dict(obj["s2_encoder"])
    flat = {k.split("s2_encoder.", 1)[1]: v for k, v in obj.items() if "s2_encoder." in k and hasattr(v, "shape")}
    if not flat:
        raise GAIRError("no CROMA optical encoder found: expected a 's2_encoder' entry or 's2_encoder.*' keys "
                        "(CROMA_base.pt from the CROMA authors)")
    return flat


def load_croma(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Copy a CROMA optical encoder into model.rs_encoder.s2_encoder; re-initialise linear_input. Returns notes."""
    target = model.rs_encoder.s2_encoder
    ours = target.state_dict()
    copied, unused, problems = {}, [], []
    for key, value in state.items():
        if key.startswith("linear_input."):
            continue
        if key.startswith("transformer.norm_out."):  # CROMA's final norm; GAIR's tokens are taken before it
            unused.append(key)
        elif key not in ours:
            problems.append(f"unexpected {key}")
        elif tuple(value.shape) != tuple(ours[key].shape):
            problems.append(f"{key} {tuple(value.shape)} vs ours {tuple(ours[key].shape)}")
        else:
            copied[key] = value
    problems += [f"missing {k}" for k in ours if not k.startswith("linear_input.") and k not in copied]
    if problems:
        raise GAIRError(f"the CROMA encoder does not fit this model ({model.config.embed_dim}-d, "
                        f"{model.config.rs_depth} layers): {'; '.join(problems[:6])}; use CROMA_base.pt with the base "
                        "model")
    ours.update({k: v.to(ours[k].dtype) for k, v in copied.items()})
    target.load_state_dict(ours)
    target.linear_input.reset_parameters()
    notes = [(f"CROMA: copied {len(copied)} tensors into rs_encoder.s2_encoder, re-initialised linear_input "
              f"(12 bands there, {model.config.rs_channels} here)")]
    if unused:
        notes.append(f"CROMA: not used (GAIR takes tokens before CROMA's final norm): {', '.join(unused)}")
    return notes


def load_geoclip(encoder: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Map GeoCLIP's `LocEnc{i}.capsule.*` into a location encoder's capsules; start fresh heads. Returns notes."""
    capsules = [name for name, _ in encoder.named_children()]
    ours = encoder.state_dict()
    mapped = {}
    for name in capsules:
        for key in (k for k in ours if k.startswith(f"{name}.capsule.")):
            if key not in state:
                raise GAIRError(f"GeoCLIP weights lack {key}; give geoclip/model/weights/location_encoder_weights.pth "
                                "(scripts/fetch_geoclip_weights.py extracts it)")
            if tuple(state[key].shape) != tuple(ours[key].shape):
                raise GAIRError(f"GeoCLIP {key} is {tuple(state[key].shape)}, this model's is "
                                f"{tuple(ours[key].shape)}: "
                                "GeoCLIP fits the base location encoder (256 frequencies, 1024 hidden, 3 layers)")
            mapped[key] = state[key].to(ours[key].dtype)
    extra = sorted({k.split(".")[0] for k in state} - set(capsules))
    if extra:
        raise GAIRError(f"GeoCLIP weights have capsules {extra} that this model lacks (it has {capsules}); "
                        "set model loc_sigmas to GeoCLIP's (1, 16, 256)")
    ours.update(mapped)
    encoder.load_state_dict(ours)
    widths = set()
    for name in capsules:
        for layer in getattr(encoder, name).head:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
                widths.add(layer.out_features)
    return [(f"GeoCLIP: mapped {len(mapped)} capsule tensors ({len(capsules)} scales); new {sorted(widths)}-wide heads "
             "(GeoCLIP's are 512)")]


def build_start(cfg: PretrainConfig):
    """(model on CPU in train mode, StartReport). A random start seeds torch with train.seed first."""
    import engine

    source = cfg.init.source
    if source == "random":
        torch.manual_seed(cfg.train.seed)
        model = engine.GAIRModel(cfg.gair_config())
        report = StartReport("random initialisation", 0)
    else:
        model = engine.load_model(None if source == "hub" else source, device="cpu", backend="torch")
        report = StartReport(f"weights from {source}", model.queue_for_location.shape[1])
        if cfg.model.overrides:
            report.notes.append(f"[model] overrides {cfg.model.overrides} ignored: the architecture comes from "
                                f"{source}")
    if cfg.init.reset_queue or source == "random":
        model.queue_for_location.zero_()
        model.queue_ptr_location.zero_()
        report.queue_filled = 0
    if cfg.init.croma:
        report.notes += load_croma(model, croma_state(load_torch_file(cfg.init.croma, "CROMA weights")))
    if cfg.init.geoclip:
        report.notes += load_geoclip(model.location_encoder, load_torch_file(cfg.init.geoclip, "GeoCLIP weights"))
    model.invalidate_fingerprint()  # weights changed in place
    return model.train(), report


def build_teacher(cfg: PretrainConfig, model: nn.Module) -> nn.Module | None:
    """Frozen distillation teacher: a copy of the starting weights, or the model at init.teacher."""
    if not cfg.objective.distill:
        return None
    if cfg.init.teacher:
        import engine

        teacher = engine.load_model(cfg.init.teacher, device="cpu", backend="torch")
    else:
        teacher = copy.deepcopy(model)
    teacher.eval().requires_grad_(False)
    return teacher
