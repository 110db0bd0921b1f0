"""Sample augmentations in numpy, driven by a per-sample Generator so any worker layout gives the same batch.

Crop geometry: the 8 dihedral transforms (rotations by 90 degrees, with or without a flip) move the query point with
the pixels, so the localized target stays under the photo. Crop colour: the reference's brightness/contrast jitter
on the 0..1 scaled bands. Photo: a random resized crop (ours), horizontal flip and a light colour jitter.
"""
from __future__ import annotations

import math

import numpy as np

# RGB <-> YIQ: hue is a rotation of the (I, Q) chroma plane.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def dihedral(crop: np.ndarray, rel_xy: np.ndarray, rotations: int, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rotate (C, H, W) counter-clockwise `rotations` x 90 degrees after an optional left-right flip.

    rel_xy (x from west, y from north, 0..1) follows the pixels: a flip maps x -> 1 - x; each counter-clockwise
    quarter turn maps (x, y) -> (y, 1 - x).
    """
    x, y = float(rel_xy[0]), float(rel_xy[1])
    if flip:
        crop, x = crop[:, :, ::-1], 1.0 - x
    for _ in range(rotations % 4):
        crop = np.rot90(crop, 1, axes=(1, 2))
        x, y = y, 1.0 - x
    return np.ascontiguousarray(crop), np.array([x, y], dtype=np.float64)


def rs_colour_jitter(crop: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float,
                     bands: tuple[int, ...] = (), random_order: bool = False, grey_mean: bool = False) -> np.ndarray:
    """Brightness (scale) and contrast (blend with a mean), each clipped to 0..1; crop is 0..1 scaled bands.

    Ours: all bands, brightness then contrast around the crop mean. The authors' recipe (torchvision ColorJitter on a
    3-channel slice): `bands` = (1, 2, 3), i.e. B3 B4 B5 of the 10-band stack, `random_order`, and `grey_mean`: the
    contrast centre is the mean of the ITU-R 601 grey of those three bands, as for an RGB image.
    """
    out = crop.astype(np.float32, copy=True)
    picked = list(bands) if bands else list(range(out.shape[0]))
    part = out[picked]
    order = rng.permutation(2) if random_order else np.arange(2)
    for op in order:
        if op == 0:
            part = np.clip(part * np.float32(rng.uniform(1 - brightness, 1 + brightness)), 0.0, 1.0)
        else:
            factor = np.float32(rng.uniform(1 - contrast, 1 + contrast))
            centre = np.float32(np.tensordot(_LUMA, part[:3], axes=1).mean()) if grey_mean else part.mean()
            part = np.clip((part - centre) * factor + centre, 0.0, 1.0)
    out[picked] = part
    return out


def random_resized_crop(img: np.ndarray, rng: np.random.Generator, scale: tuple[float, float],
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
    """A random window of `scale` x the photo's area and aspect in `ratio`; the model resize happens later."""
    h, w = img.shape[:2]
    if scale[0] >= 1.0:
        return img
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            return img[top:top + ch, left:left + cw]
    side = min(h, w)  # fall back to the centred square
    return img[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]


def sv_colour_jitter(img: np.ndarray, rng: np.random.Generator, strength: float, bound: float = 255.0) -> np.ndarray:
    """Brightness, contrast, saturation and hue (each +-strength, hue as a fraction of a turn) in random order.

    img: (H, W, 3) float32 0..bound. The authors' recipe applies torchvision's ColorJitter to the already normalised
    photo, whose clamp to 0..1 cuts every negative (below-mean) value: bound=1.0 on the normalised photo reproduces it.
    """
    out = img.astype(np.float32)
    for op in rng.permutation(4):
        factor = np.float32(rng.uniform(1 - strength, 1 + strength))
        if op == 0:
            out = out * factor
        elif op == 1:
            grey = np.float32((out @ _LUMA).mean())
            out = (out - grey) * factor + grey
        elif op == 2:
            grey = (out @ _LUMA)[..., None]
            out = (out - grey) * factor + grey
        else:
            angle = rng.uniform(-strength, strength) * 2 * math.pi
            cos, sin = math.cos(angle), math.sin(angle)
            rot = np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]], np.float32)
            out = out @ (_YIQ_TO_RGB @ rot @ _RGB_TO_YIQ).T
        out = np.clip(out, 0.0, bound)
    return out
