"""One config dataclass for every GAIR dimension, so tiny test models share the official code path."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import GAIRError

S2_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
# Reference scaling: each band is mapped from mean +- 2 std to 0..1 (then quantised to 8 bits).
S2_MEAN = (1172.9397, 1378.0846, 1509.3327, 1750.0275, 2073.2758, 2207.3283, 2245.1629, 2284.6384, 2231.7283, 1899.1932)
S2_STD = (706.6250, 720.1862, 783.1424, 707.1962, 714.2782, 748.1827, 852.3585, 762.0849, 690.0165, 669.9036)
SV_MEAN = (135.47184384, 142.28621995, 145.12271992)
SV_STD = (59.19978436, 59.35279219, 72.02295734)
QUERY_MODES = ("nili", "bilinear", "bicubic", "transformer")
NILI_CONVENTIONS = ("released", "legacy")


@dataclass(frozen=True)
class GAIRConfig:
    """Architecture, band list, normalisation and crop geometry of a GAIR model.

    Defaults are the official checkpoint's. `crop_pixels` source pixels of `gsd_m` metres make one crop
    (the reference cuts 224 x 224 pixels of 10 m and resizes them to `rs_input_size`).
    """

    embed_dim: int = 768
    # remote-sensing encoder (CROMA-style optical ViT with 2-D ALiBi)
    rs_bands: tuple[str, ...] = S2_BANDS
    rs_input_size: int = 96
    rs_patch_size: int = 8
    rs_depth: int = 12
    rs_heads: int = 16
    rs_mlp_ratio: int = 4
    rs_layer_norm_eps: float = 1e-5
    rs_head_classes: int = 10
    rs_mean: tuple[float, ...] = S2_MEAN
    rs_std: tuple[float, ...] = S2_STD
    # street-view encoder (ViT-B/16 with CLS token and pooler)
    sv_input_size: int = 224
    sv_patch_size: int = 16
    sv_depth: int = 12
    sv_heads: int = 12
    sv_mlp_dim: int = 3072
    sv_layer_norm_eps: float = 1e-12
    sv_mean: tuple[float, ...] = SV_MEAN
    sv_std: tuple[float, ...] = SV_STD
    # location encoder (random-Fourier-feature capsules on Equal Earth)
    loc_sigmas: tuple[float, ...] = (2.0**0, 2.0**4, 2.0**8)
    loc_frequencies: int = 256
    loc_hidden: int = 1024
    loc_layers: int = 3
    # query transformer (`nerf_fn`) and training state
    query_depth: int = 2
    query_heads: int = 8
    queue_size: int = 4096
    # crop geometry on the ground
    crop_pixels: int = 224
    gsd_m: float = 10.0
    nili_convention: str = "released"
    version: int = 1
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        sizes = ("embed_dim", "rs_input_size", "rs_patch_size", "sv_input_size", "sv_patch_size", "crop_pixels")
        bad = [f"{name}={getattr(self, name)!r}" for name in sizes
               if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0]
        if bad:
            raise GAIRError(f"GAIRConfig sizes must be positive integers; got {', '.join(bad)}")
        if self.rs_input_size % self.rs_patch_size or self.sv_input_size % self.sv_patch_size:
            raise GAIRError(f"GAIRConfig input sizes must be multiples of their patch sizes; got rs "
                            f"{self.rs_input_size}/{self.rs_patch_size}, sv {self.sv_input_size}/{self.sv_patch_size}")
        if len(self.rs_mean) != len(self.rs_bands) or len(self.rs_std) != len(self.rs_bands):
            raise GAIRError(f"GAIRConfig rs_mean/rs_std need one value per band in rs_bands ({len(self.rs_bands)}); "
                            f"got {len(self.rs_mean)} and {len(self.rs_std)}")
        if self.nili_convention not in NILI_CONVENTIONS:
            raise GAIRError(f"nili_convention must be one of {', '.join(NILI_CONVENTIONS)}; "
                            f"got {self.nili_convention!r}")

    @property
    def rs_channels(self) -> int:
        return len(self.rs_bands)

    @property
    def rs_grid(self) -> int:
        return self.rs_input_size // self.rs_patch_size

    @property
    def rs_tokens(self) -> int:
        return self.rs_grid**2

    @property
    def sv_grid(self) -> int:
        return self.sv_input_size // self.sv_patch_size

    @property
    def imnet_in(self) -> int:
        return self.embed_dim * 9 + 2

    @property
    def crop_ground_m(self) -> float:
        """Side of one crop on the ground, metres."""
        return self.crop_pixels * self.gsd_m

    @classmethod
    def tiny(cls, **overrides) -> GAIRConfig:
        """A few-hundred-thousand-parameter model for tests and CPU pretraining."""
        base = dict(
            embed_dim=32, rs_input_size=48, rs_patch_size=8, rs_depth=2, rs_heads=4,
            sv_input_size=32, sv_patch_size=8, sv_depth=2, sv_heads=4, sv_mlp_dim=64,
            loc_frequencies=16, loc_hidden=64, query_heads=4, queue_size=256, crop_pixels=64,
        )
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GAIRConfig:
        """The inverse of to_dict (JSON lists become tuples); unknown fields are an error, not ignored."""
        if not isinstance(data, dict):
            raise GAIRError(f"a GAIRConfig must be a mapping of field names to values; got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise GAIRError(f"unknown GAIRConfig fields {unknown}; known: {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
