"""The reference preprocessing of Sentinel-2 crops and street-view photos, in numpy (no torch needed).

Sentinel-2: raw digital numbers (no BOA offset) mapped per band from mean - 2 std .. mean + 2 std to 0..255 in
float32, clipped and truncated to 8 bits, divided by 255, then resized bicubically (PyTorch's `F.interpolate`
semantics, align_corners=False, no antialias) to the model's input size. Photos: (v - mean) / std per channel, then
the same bicubic resize.
"""
from __future__ import annotations

import functools
import warnings

import numpy as np

from ..config import GAIRConfig
from ..errors import GAIRError
from ..io.read_errors import check_readable_file
from .grid import CUBIC_A

# 12-band L2A order B1 B2 B3 B4 B5 B6 B7 B8 B8A B9 B11 B12 -> the model's 10 bands (the reference's own pick).
L2A_12_TO_MODEL = (1, 2, 3, 4, 5, 6, 7, 8, 10, 11)
# 13-band L1C order B1 .. B8 B8A B9 B10 B11 B12 -> picked by band identity (B11, B12), not by the 12-band indices.
L1C_13_TO_MODEL = (1, 2, 3, 4, 5, 6, 7, 8, 11, 12)


def _cubic_f32(t: np.ndarray) -> np.ndarray:
    """Weights of the taps at offsets -1, 0, 1, 2 (Keys kernel, a = -0.75), in PyTorch's float32 operation order."""
    a, one = np.float32(CUBIC_A), np.float32(1.0)

    def near(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + one

    def far(d):   # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    rest = one - t
    return np.stack([far(t + one), near(t), near(rest), far(rest + one)], axis=-1)


@functools.lru_cache(maxsize=64)
def bicubic_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices (4, n_out) and float32 weights (4, n_out) of PyTorch's bicubic resize (align_corners=False).

    Positions and weights follow PyTorch's CPU kernel in float32: float64 arithmetic moves results by up to 1e-5,
    more than the 1e-6 the reference check allows.
    """
    scale = np.float32(n_in) / np.float32(n_out)
    # PyTorch's compiled kernel fuses scale * (i + 0.5) - 0.5 into one multiply-add: a single float32 rounding.
    src = (np.float64(scale) * (np.arange(n_out, dtype=np.float64) + 0.5) - 0.5).astype(np.float32)
    base = np.minimum(np.floor(src), n_in - 1)
    weights = _cubic_f32(np.clip(src - base, 0, 1).astype(np.float32)).T
    index = np.stack([np.clip(base + o, 0, n_in - 1) for o in (-1, 0, 1, 2)]).astype(np.int64)
    index.flags.writeable = weights.flags.writeable = False  # shared through the cache
    return index, weights


def _resize_axis(array: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """One separable pass, accumulating the four taps in float32 in PyTorch's order."""
    index, weights = bicubic_taps(array.shape[axis], n_out)
    shape = [1] * array.ndim
    shape[axis] = n_out
    out = np.take(array, index[0], axis=axis) * weights[0].reshape(shape)
    for k in range(1, 4):
        out += np.take(array, index[k], axis=axis) * weights[k].reshape(shape)
    return out


def resize_bicubic(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize the last two axes bicubically (columns first, then rows, as PyTorch); float32 out."""
    arr = array.astype(np.float32, copy=False)
    if arr.shape[-2:] == (height, width):
        return arr
    return _resize_axis(_resize_axis(arr, width, arr.ndim - 1), height, arr.ndim - 2)


def select_model_bands(array: np.ndarray) -> np.ndarray:
    """(B, C, H, W) with C = 10 (model order), 12 (L2A) or 13 (L1C) -> (B, 10, H, W)."""
    c = array.shape[1]
    if c == 10:
        return array
    if c == 12:
        return array[:, list(L2A_12_TO_MODEL)]
    if c == 13:
        return array[:, list(L1C_13_TO_MODEL)]
    raise GAIRError(
        f"expected 10 bands (B2 B3 B4 B5 B6 B7 B8 B8A B11 B12), 12 (L2A) or 13 (L1C), got {c}; "
        "select the bands first (engine.pipeline maps bands by their descriptions)"
    )


def scale_rs(array: np.ndarray, config: GAIRConfig | None = None) -> np.ndarray:
    """Raw DN (B, 10, H, W) -> float32 0..1 in 1/255 steps, exactly as the reference quantises."""
    cfg = config or GAIRConfig()
    mean = np.asarray(cfg.rs_mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(cfg.rs_std, dtype=np.float32).reshape(1, -1, 1, 1)
    low, high = mean - np.float32(2.0) * std, mean + np.float32(2.0) * std
    scaled = (array.astype(np.float32, copy=False) - low) / (high - low) * np.float32(255.0)
    return np.clip(scaled, 0.0, 255.0).astype(np.uint8).astype(np.float32) / np.float32(255.0)


def preprocess_rs(array: np.ndarray, config: GAIRConfig | None = None) -> np.ndarray:
    """Raw Sentinel-2 crop(s) (C, H, W) or (B, C, H, W) -> float32 (B, 10, S, S) model input."""
    cfg = config or GAIRConfig()
    arr = np.asarray(array)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise GAIRError(f"expected a (C, H, W) or (B, C, H, W) Sentinel-2 array, got shape {arr.shape}")
    scaled = scale_rs(select_model_bands(arr), cfg)
    return resize_bicubic(scaled, cfg.rs_input_size, cfg.rs_input_size)


def preprocess_sv(array: np.ndarray, config: GAIRConfig | None = None) -> np.ndarray:
    """An RGB photo (H, W, 3) (or (3, H, W)) with 0..255 values -> float32 (1, 3, S, S) model input."""
    cfg = config or GAIRConfig()
    img = np.asarray(array)
    if img.ndim != 3:
        raise GAIRError(f"expected an RGB image (H, W, 3), got shape {img.shape}")
    if img.shape[-1] != 3 and img.shape[0] == 3:
        img = np.moveaxis(img, 0, -1)
    if img.shape[-1] != 3:
        raise GAIRError(f"expected 3 colour channels (RGB), got shape {img.shape}; convert the photo to RGB")
    norm = (img.astype(np.float32) - np.asarray(cfg.sv_mean, np.float32)) / np.asarray(cfg.sv_std, np.float32)
    return resize_bicubic(np.moveaxis(norm, -1, 0)[None], cfg.sv_input_size, cfg.sv_input_size)


MAX_PHOTO_PIXELS = 40_000_000  # 40 Mpix: above any camera photo; a 12000 x 12000 PNG bomb would take GBs decoded


def load_photo(path, max_pixels: int = MAX_PHOTO_PIXELS) -> np.ndarray:
    """Read a photo as (H, W, 3) uint8 RGB with Pillow: regular files only (a FIFO would block forever), and the
    size in its header checked before anything is decoded (a small file can decode to gigabytes)."""
    from PIL import Image

    path = check_readable_file(path, "photo")
    limit = f"above the {max_pixels / 1e6:.0f} Mpix GAIR decodes; downscale it (GAIR uses 224 px)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked here, below
        try:
            img = Image.open(path)
        except Image.DecompressionBombError as exc:
            raise GAIRError(f"photo {path.name} is {limit} ({exc})") from exc
    with img:
        width, height = img.size
        if width * height > max_pixels:
            raise GAIRError(f"photo {path.name} is {width} x {height} px ({width * height / 1e6:.0f} Mpix), {limit}")
        return np.asarray(img.convert("RGB"))
