"""Pretraining configuration: dataclasses loaded from TOML or YAML, with `section.key=value` CLI overrides.

Every weight, temperature, schedule constant and augmentation strength of the objective is a field here, so an
ablation is a config change, not a code change. Defaults reproduce the authors' training recipe.
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GAIRError
from ..pipeline.distributed import DEVICES

QUERY_MODES = ("nili", "bilinear", "bicubic", "mean")
LOCATION_NEGATIVES = ("queue", "batch", "batch+queue")
OBJECTIVES = ("gair", "csp")
CSP_ENCODERS = ("rff", "gridcell")
CSP_IMAGES = ("sv", "rs")
AMP_MODES = ("auto", "none", "bf16", "fp16")


@dataclass
class ModelSection:
    """Architecture for a random start: a GAIRConfig preset plus field overrides (ignored for file starts)."""

    preset: str = "base"  # "base" (the official dimensions) or "tiny"
    overrides: dict = field(default_factory=dict)


@dataclass
class InitSection:
    source: str = "random"  # "random" | a bundle folder | an official checkpoint .pth ("hub" = $GAIR_CHECKPOINT/hub)
    croma: str = ""  # CROMA checkpoint for the RS encoder (patch embedding re-initialised)
    geoclip: str = ""  # GeoCLIP location_encoder_weights.pth (capsules mapped, heads re-initialised)
    teacher: str = ""  # distillation teacher: "" = a frozen copy of the initial weights, or a bundle/checkpoint
    reset_queue: bool = False  # empty the location queue of a file start


@dataclass
class DataSection:
    manifest: str = ""
    bands: str = ""  # raster bands as the CLI's --bands (pipeline.bands.resolve_bands); "" = by band descriptions
    num_workers: int = 4
    rs_flip_rotate: bool = True  # ours: dihedral transforms of the crop that move the query point with it
    rs_jitter_p: float = 0.7
    rs_brightness: float = 0.2
    rs_contrast: float = 0.2
    sv_hflip_p: float = 0.5
    sv_jitter_p: float = 0.3
    sv_jitter: float = 0.1  # brightness, contrast, saturation and hue strength
    sv_crop_scale: tuple[float, float] = (0.6, 1.0)  # ours: random resized crop of the photo (area fraction)


@dataclass
class ObjectiveSection:
    name: str = "gair"  # "gair" (RS-SV-location contrastive) or "csp" (location encoder vs frozen image features)
    query_mode: str = "nili"  # nili | bilinear | bicubic | mean (no localization: the crop mean)
    rs_sv_weight: float = 1.0
    rs_sv_temperature: float = 0.07
    gather_negatives: bool = False  # RS-SV negatives from every rank (the reference used the local batch)
    sv_loc_weight: float = 1.0
    rs_loc_weight: float = 1.0
    loc_temperature: float = 0.07
    loc_negatives: str = "queue"  # queue (reference) | batch | batch+queue (GeoCLIP)
    distill: bool = False
    distill_weight: float = 0.2


@dataclass
class CSPSection:
    """CSP (Mai et al. 2023): a location encoder trained alone against frozen image features."""

    encoder: str = "rff"  # rff: the model's own location encoder; gridcell: a multi-scale sinusoidal encoder
    image: str = "sv"  # frozen features: "sv" = optical_proj(pooler), "rs" = the localized RS embedding
    train_image_projection: bool = False  # CSP's trainable image head; for "sv" this trains `optical_proj`
    inbatch_weight: float = 1.0
    inbatch_temperature: float = 1.0
    symmetric: bool = False
    randloc_weight: float = 1.0
    randloc_temperature: float = 1.0
    randloc_count: int = 1
    simcse_weight: float = 1.0
    simcse_temperature: float = 1.0
    dropout: float = 0.1
    gridcell_min_radius_deg: float = 1e-3
    gridcell_max_radius_deg: float = 360.0
    gridcell_scales: int = 32
    gridcell_hidden: int = 512
    gridcell_layers: int = 2


@dataclass
class OptimSection:
    base_lr: float = 1.5e-6  # lr = base_lr * effective batch / 256 unless `lr` is set
    lr: float = 0.0
    min_lr: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05  # none on biases and norms
    warmup_epochs: float = 10.0
    clip_grad: float = 0.0  # max global norm; 0 = off
    accum_steps: int = 1


@dataclass
class TrainSection:
    out_dir: str = "runs/gair"
    epochs: int = 100
    max_steps: int = 0  # stop after this many optimizer steps (0 = run all epochs)
    batch_size: int = 256  # per process
    amp: str = "auto"  # auto (fp16 on CUDA, as the reference; none on CPU) | none | bf16 | fp16
    compile: bool = False
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    threads: int = 0  # torch intra-op threads per process (0 = torch's default); 1 suits tiny models on CPU
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    tensorboard: bool = True  # when the tensorboard package is installed
    progress: bool = True


@dataclass
class PretrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    init: InitSection = field(default_factory=InitSection)
    data: DataSection = field(default_factory=DataSection)
    objective: ObjectiveSection = field(default_factory=ObjectiveSection)
    csp: CSPSection = field(default_factory=CSPSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)

    def validate(self) -> PretrainConfig:
        checks = [
            (self.model.preset, ("base", "tiny"), "model.preset"),
            (self.objective.name, OBJECTIVES, "objective.name"),
            (self.objective.query_mode, QUERY_MODES, "objective.query_mode"),
            (self.objective.loc_negatives, LOCATION_NEGATIVES, "objective.loc_negatives"),
            (self.csp.encoder, CSP_ENCODERS, "csp.encoder"),
            (self.csp.image, CSP_IMAGES, "csp.image"),
            (self.train.amp, AMP_MODES, "train.amp"),
            (self.train.device, DEVICES, "train.device"),
        ]
        for value, allowed, name in checks:
            if value not in allowed:
                raise GAIRError(f"{name} = {value!r} is not one of {allowed}; fix the config file or the --set option")
        positive = {
            "objective.rs_sv_temperature": self.objective.rs_sv_temperature,
            "objective.loc_temperature": self.objective.loc_temperature,
            "csp.inbatch_temperature": self.csp.inbatch_temperature,
            "csp.randloc_temperature": self.csp.randloc_temperature,
            "csp.simcse_temperature": self.csp.simcse_temperature,
            "optim.base_lr": self.optim.base_lr,
            "train.batch_size": self.train.batch_size,
            "optim.accum_steps": self.optim.accum_steps,
            "train.checkpoint_every": self.train.checkpoint_every,
            "train.log_every": self.train.log_every,
        }
        for name, value in positive.items():
            if not value > 0:
                raise GAIRError(f"{name} must be > 0, got {value}")
        if self.objective.name == "gair" and self.objective.rs_sv_weight > 0 and self.train.batch_size < 2:
            raise GAIRError("train.batch_size must be at least 2: the RS-SV loss contrasts each pair with the rest of "
                            "the batch")
        if self.optim.lr < 0 or self.optim.min_lr < 0:
            raise GAIRError("optim.lr and optim.min_lr must not be negative (optim.lr = 0 applies the base_lr rule)")
        if not 0.0 < self.data.sv_crop_scale[0] <= self.data.sv_crop_scale[1] <= 1.0:
            raise GAIRError(f"data.sv_crop_scale must satisfy 0 < min <= max <= 1, got {self.data.sv_crop_scale}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def gair_config(self):
        """The GAIRConfig of a random start."""
        from ..config import GAIRConfig

        try:
            if self.model.preset == "tiny":
                return GAIRConfig.tiny(**self.model.overrides)
            return GAIRConfig.from_dict(dict(self.model.overrides))
        except (TypeError, GAIRError) as exc:
            raise GAIRError(f"bad [model] overrides {self.model.overrides}: {exc}") from exc


def _build(cls, data: dict, where: str = ""):
    if not isinstance(data, dict):
        raise GAIRError(f"[{where}] must be a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else key
        if key not in fields:
            raise GAIRError(f"unknown option {name}; known: {', '.join(sorted(fields))}")
        default = getattr(cls(), key)
        kwargs[key] = (_build(type(default), value, name) if dataclasses.is_dataclass(default)
                       else _coerce(value, default, name))
    return cls(**kwargs)


def _coerce(value: Any, default: Any, name: str) -> Any:
    """Check a value against the default's type; ints widen to float, lists become tuples."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise GAIRError(f"{name} must be true or false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, int) and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(default, str) and isinstance(value, str):
        return value
    if isinstance(default, tuple) and isinstance(value, (list, tuple)) and len(value) == len(default):
        return tuple(_coerce(v, d, name) for v, d in zip(value, default))
    if isinstance(default, dict) and isinstance(value, dict):
        return dict(value)
    raise GAIRError(f"{name} = {value!r} has the wrong type; expected {type(default).__name__} like {default!r}")


def config_from_dict(data: dict) -> PretrainConfig:
    """Sections as in the file: [model] keys other than `preset` are GAIRConfig overrides."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    model = data.get("model")
    if isinstance(model, dict):
        preset = model.pop("preset", "base")
        overrides = dict(model.pop("overrides", {}))
        overrides.update(model)
        data["model"] = {"preset": preset, "overrides": overrides}
    return _build(PretrainConfig, data).validate()


def _parse_value(text: str) -> Any:
    """TOML value syntax (1e-3, true, [0.9, 0.95], "x"); anything else is a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict, overrides: list[str], values: dict[str, Any] | None = None) -> dict:
    """`section.key=value` strings (TOML values) and {dotted key: python value} into the raw config tree."""
    items = [(item.partition("=")[0], item.partition("=")[2], item) for item in overrides if "=" in item]
    bad = [item for item in overrides if "=" not in item]
    if bad:
        raise GAIRError(f"override {bad[0]!r} must look like section.key=value, e.g. optim.lr=1e-3")
    typed = [(key, _parse_value(text.strip()), item) for key, text, item in items]
    typed += [(key, value, key) for key, value in (values or {}).items() if value is not None]
    for key, value, item in typed:
        parts = key.strip().split(".")
        if len(parts) < 2 or not all(parts):
            raise GAIRError(f"override {item!r} must name section.key, e.g. optim.lr=1e-3")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise GAIRError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = value
    return data


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise GAIRError(f"config file {path} not found; see configs/tiny.toml and configs/base.toml")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text) or {}
        return tomllib.loads(text)
    except Exception as exc:  # tomllib/yaml errors carry the line number
        raise GAIRError(f"cannot parse {path}: {exc}") from exc


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                values: dict[str, Any] | None = None) -> PretrainConfig:
    """Config file (TOML or YAML; none = defaults), then `section.key=value` overrides, then typed `values`.

    Relative paths are taken from the working directory, as any command-line path.
    """
    data = read_config_file(path) if path else {}
    return config_from_dict(apply_overrides(data, list(overrides or []), values))
