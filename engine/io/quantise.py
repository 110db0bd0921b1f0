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
    """(K, ...) float vectors (NaN = nodata) -> int8 unit vectors x127; -128 in every band where nodata or zero.

    Each value is rint(v * (127 / |vector|)) clipped to +-127, as float32. `out` (int8) and `scratch` (float32),
    of the block's shape or flat and at least as large: reused buffers (the writer's), so a block costs no fresh
    pages. Only nodata columns can hold NaN/inf (a non-zero float32 length is >= 3.7e-23, so 127/|v| is finite):
    they alone are cleaned, with the bytes a whole-block nan_to_num gave.
    """
    block = np.asarray(block, np.float32)
    norms = np.sqrt(np.einsum("k...,k...->...", block, block))
    invalid = ~(np.isfinite(norms) & (norms > 0))
    factor = np.float32(INT8_LIMIT) / np.where(invalid, np.float32(1), norms)
    scaled = np.multiply(block, factor, out=_buffer(scratch, block.shape, np.float32))
    np.rint(scaled, out=scaled)
    any_invalid = invalid.any()
    if any_invalid:
        scaled[:, invalid] = 0.0
    np.clip(scaled, -INT8_LIMIT, INT8_LIMIT, out=scaled)
    raw = _buffer(out, block.shape, np.int8)
    np.copyto(raw, scaled, casting="unsafe")
    if any_invalid:
        raw[:, invalid] = INT8_NODATA
    return raw


def quantise_int16(block: np.ndarray, offset: np.ndarray, scale: np.ndarray, out: np.ndarray | None = None,
                   scratch: np.ndarray | None = None) -> np.ndarray:
    """(K, ...) float vectors (NaN = nodata) -> int16 rint((v - offset) / scale) per band (float64), clipped to
    +-32767; -32768 in every band where any band is not finite. `out` (int16) and `scratch` (float64): as in
    `quantise_int8`."""
    block = np.asarray(block)
    invalid = ~np.isfinite(block).all(axis=0)
    bands = (slice(None),) + (None,) * (block.ndim - 1)
    offset, scale = np.asarray(offset, np.float64), np.asarray(scale, np.float64)
    scaled = np.subtract(block, offset[bands], out=_buffer(scratch, block.shape, np.float64))
    np.divide(scaled, scale[bands], out=scaled)
    np.rint(scaled, out=scaled)
    any_invalid = invalid.any()
    if not (block.dtype.itemsize <= 4 and np.isfinite(offset).all() and np.isfinite(scale).all()
            and (np.abs(scale) >= 1e-200).all()):
        np.nan_to_num(scaled, copy=False)  # odd constants: NaN/inf may be anywhere
    elif any_invalid:  # only there can NaN/inf be (finite float32 over such constants stays finite in float64)
        scaled[:, invalid] = 0.0
    np.clip(scaled, -INT16_LIMIT, INT16_LIMIT, out=scaled)
    raw = _buffer(out, block.shape, np.int16)
    np.copyto(raw, scaled, casting="unsafe")
    if any_invalid:
        raw[:, invalid] = INT16_NODATA
    return raw


def _buffer(buffer: np.ndarray | None, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A C-contiguous `shape` view of the front of a reused buffer, or a fresh array without one."""
    size = math.prod(shape)
    if buffer is None or buffer.dtype != dtype or buffer.size < size or not buffer.flags.c_contiguous:
        return np.empty(shape, dtype)
    return buffer.reshape(-1)[:size].reshape(shape)
