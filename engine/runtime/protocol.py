"""The model interface every backend implements (torch GAIRModel, onnxruntime OnnxGAIR), and its input checks.

Pipelines take any `GAIRModelLike`: numpy in, numpy out, the same shapes and errors on both backends. The checks
below are shared so a wrong input gets the same one-line GAIRError from either.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..config import GAIRConfig
from ..errors import GAIRError

# fn(tokens (B, G*G, D), height, width) -> (B, height, width, K) float32: a crop's field in a projected space


@runtime_checkable
class GAIRModelLike(Protocol):
    """What the pipelines use of a model. `fingerprint` names the weights; `backend` is "torch" or "onnx"."""

    config: GAIRConfig
    backend: str
    fingerprint: str
    device: Any

    def rs_tokens(self, x) -> Any:
        """(B, C, S, S) preprocessed crops -> (B, G*G, D) tokens, row-major, row 0 at the north edge."""

    def encode_rs(self, x) -> Any:
        """(B, C, S, S) -> (B, D) crop embedding (mean of the tokens)."""

    def encode_sv(self, x, aligned: bool = False) -> Any:
        """(B, 3, S, S) preprocessed photos -> (B, D)."""

    def encode_location(self, lonlat) -> Any:
        """(B, 2) [lon, lat] degrees -> (B, D)."""

    def query_tokens(self, tokens, rel_xy, mode: str = "nili") -> Any:
        """(B, G*G, D) tokens at rel_xy (B, N, 2) (x from west, y from north, 0..1) -> (B, N, D)."""

    def query_localized(self, x, lonlat, bbox, mode: str = "nili") -> Any:
        """Crops x at [lon, lat] inside bbox [lon_min, lat_max, lon_max, lat_min] -> (B, D) or (B, N, D)."""

    def dense_field(self, tokens, height: int, width: int, mode: str = "nili") -> Any:
        """(B, G*G, D) tokens -> (B, H, W, D) at the pixel centres of an H x W grid over each crop."""


def check_rs_input(shape: tuple, cfg: GAIRConfig) -> None:
    expected = (cfg.rs_channels, cfg.rs_input_size, cfg.rs_input_size)
    if len(shape) != 4 or tuple(shape[1:]) != expected:
        raise GAIRError(f"RS input must be (B, {expected[0]}, {expected[1]}, {expected[2]}) after preprocess_rs; "
                        f"got {tuple(shape)}")


def check_sv_input(shape: tuple, cfg: GAIRConfig) -> None:
    s = cfg.sv_input_size
    if len(shape) != 4 or tuple(shape[1:]) != (3, s, s):
        raise GAIRError(f"street-view input must be (B, 3, {s}, {s}) after preprocess_sv; got {tuple(shape)}")


def check_lonlat(shape: tuple) -> None:
    if len(shape) != 2 or shape[1] != 2:
        raise GAIRError(f"lonlat must be (B, 2) [lon, lat] degrees; got {tuple(shape)}")


def check_tokens(shape: tuple, cfg: GAIRConfig) -> None:
    if len(shape) != 3 or tuple(shape[1:]) != (cfg.rs_tokens, cfg.embed_dim):
        raise GAIRError(f"tokens must be (B, {cfg.rs_tokens}, {cfg.embed_dim}) from rs_tokens; got {tuple(shape)}")


def check_positions(shape: tuple, batch: int) -> None:
    if len(shape) != 3 or shape[0] != batch or shape[2] != 2:
        raise GAIRError(f"rel_xy must be (B, N, 2) with B={batch}; got {tuple(shape)}")
