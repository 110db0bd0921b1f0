"""Float embedding blocks -> the int8 / int16 encodings of embedding rasters (see embedding_raster), in place.

The writer encodes every block of a raster: these run in reused buffers, with NaN cleaning only where it can matter,
and give the bytes of the first whole-block implementations (tests/test_embedding_raster.py keeps them).
"""
from __future__ import annotations

import math

import numpy as np

INT16_NODATA = -32768
INT16_LIMIT = 32767
INT8_NODATA = -128
INT8_LIMIT = 127


def quantise_int8(block: np.ndarray, out: np.ndarray | None = None, scratch: np.ndarray | None = None) -> np.ndarray:
    """(K, ...) float vectors (NaN = nodata) -> (K, ...) int8 unit vectors x127; -128 in every band where nodata or
    zero.

    Each value is rint(v * (127 / |vector|)) clipped to +-127, as float32. `out` (int8) and `scratch` (float32),
    flat or of the block's shape and at least as large: reused buffers (the writer's), so a block costs no fresh
    pages. Only nodata columns can hold NaN/inf (a non-zero float32 length is >= 3.7e-23, so 127/|v| is finite):
    they alone are cleaned, with the bytes a whole-block nan_to_num gave. A pixel-major block (the blender's
    (h, w, K) sums seen as (K, h, w)) is computed in its own layout and transposed once, as int8.
    """
    block = np.asarray(block, np.float32)
    norms = np.sqrt(np.einsum("k...,k...->...", block, block))  # this very call: its summation order sets the bits
    invalid = ~(np.isfinite(norms) & (norms > 0))
    factor = np.float32(INT8_LIMIT) / np.where(invalid, np.float32(1), norms)
    values, factor, bad = _working_layout(block, factor, invalid)
    scaled = np.multiply(values, factor, out=_buffer(scratch, values.shape, np.float32))
    np.rint(scaled, out=scaled)
    any_invalid = invalid.any()
    if any_invalid:
        scaled[bad] = 0.0
    np.clip(scaled, -INT8_LIMIT, INT8_LIMIT, out=scaled)
    raw = _store(scaled, values is not block, _buffer(out, block.shape, np.int8))
    if any_invalid:
        raw[:, invalid] = INT8_NODATA
    return raw


def quantise_int16(block: np.ndarray, offset: np.ndarray, scale: np.ndarray, out: np.ndarray | None = None,
                   scratch: np.ndarray | None = None) -> np.ndarray:
    """(K, ...) float vectors (NaN = nodata) -> (K, ...) int16 rint((v - offset) / scale) per band (float64),
    clipped to +-32767; -32768 in every band where any band is not finite. `out` (int16) and `scratch` (float64):
    as in `quantise_int8`, and the same handling of a pixel-major block."""
    block = np.asarray(block)
    invalid = ~np.isfinite(block).all(axis=0)
    offset, scale = np.asarray(offset, np.float64), np.asarray(scale, np.float64)
    bands = (slice(None),) + (None,) * (block.ndim - 1)
    values, offset, bad = _working_layout(block, offset[bands], invalid)
    scaled = np.subtract(values, offset, out=_buffer(scratch, values.shape, np.float64))
    np.divide(scaled, scale.reshape(offset.shape), out=scaled)
    np.rint(scaled, out=scaled)
    any_invalid = invalid.any()
    if not (block.dtype.itemsize <= 4 and np.isfinite(offset).all() and np.isfinite(scale).all()
            and (np.abs(scale) >= 1e-200).all()):
        np.nan_to_num(scaled, copy=False)  # odd constants: NaN/inf may be anywhere
    elif any_invalid:  # only there can NaN/inf be (finite float32 over such constants stays finite in float64)
        scaled[bad] = 0.0
    np.clip(scaled, -INT16_LIMIT, INT16_LIMIT, out=scaled)
    raw = _store(scaled, values is not block, _buffer(out, block.shape, np.int16))
    if any_invalid:
        raw[:, invalid] = INT16_NODATA
    return raw


def _working_layout(block: np.ndarray, per_pixel_or_band: np.ndarray, invalid: np.ndarray):
    """(values, the operand broadcast to them, index of the nodata pixels in them): the (N, K) pixel-major view of
    a block whose bands vary fastest in memory (element-wise work there is contiguous), else the block as it is.
    The operand is (...) per pixel or (K, 1, ...) per band."""
    pixels = np.moveaxis(block, 0, -1) if block.ndim >= 2 else block
    if block.ndim < 2 or block.shape[0] < 2 or not pixels.flags.c_contiguous:
        operand = per_pixel_or_band if per_pixel_or_band.ndim == block.ndim else per_pixel_or_band[None]
        return block, operand, (slice(None), invalid)
    pixels = pixels.reshape(-1, block.shape[0])
    if per_pixel_or_band.ndim == block.ndim:  # per band: (K, 1, ...) -> (1, K)
        operand = per_pixel_or_band.reshape(1, -1)
    else:  # per pixel: (...) -> (N, 1)
        operand = per_pixel_or_band.reshape(-1, 1)
    return pixels, operand, invalid.reshape(-1)


def _store(scaled: np.ndarray, pixel_major: bool, raw: np.ndarray, chunk_bytes: int = 1 << 18) -> np.ndarray:
    """Cast `scaled` into `raw` (K, ...); pixel-major (N, K) values are cast in cache-sized chunks of pixels, then
    each chunk is transposed (an int8/int16 transpose costs a fraction of a float one)."""
    if not pixel_major:
        np.copyto(raw, scaled, casting="unsafe")
        return raw
    n, k = scaled.shape
    bands = raw.reshape(k, n)
    step = max(1, chunk_bytes // (k * raw.itemsize))
    part = np.empty((min(step, n), k), raw.dtype)
    for i in range(0, n, step):
        chunk = part[:min(step, n - i)]
        np.copyto(chunk, scaled[i:i + step], casting="unsafe")
        np.copyto(bands[:, i:i + step], chunk.T)
    return raw


def _buffer(buffer: np.ndarray | None, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A C-contiguous `shape` view of the front of a reused buffer, or a fresh array without one."""
    size = math.prod(shape)
    if buffer is None or buffer.dtype != dtype or buffer.size < size or not buffer.flags.c_contiguous:
        return np.empty(shape, dtype)
    return buffer.reshape(-1)[:size].reshape(shape)
