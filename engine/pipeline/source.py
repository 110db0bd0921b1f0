"""The input Sentinel-2 raster: validation, the model's band pick, and reads of crops at the model's ground sampling.

Reads return digital numbers on the scale the reference statistics describe (reflectance x 10000, no offset: a
product's BOA_ADD_OFFSET is added, see pipeline.products) in the model's band order, with nodata pixels set to 0 as
the reference sees them, plus a validity mask. Products, band folders and lists of band files are opened as one
virtual stack (pipeline.products); with `mask_clouds` the L2A scene classification masks the output's validity.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import numpy as np

from ..config import GAIRConfig
from ..errors import GAIRError
from ..io.read_errors import raster_read_errors
from .bands import band_labels, resolve_bands
from .products import CLOUD_CLASSES, find_stack, raster_offset, stack_vrt, warn_unknown_offset
from .tiling import metres_per_unit

log = logging.getLogger(__name__)

DARK_SHARE = 0.01  # of blue values below 1000 that shows a raster carries no +1000 offset
# A pixel size within this fraction of the model's is read as it is (no resampling), as the reference does.
NATIVE_TOLERANCE = 0.02


@dataclass(frozen=True)
class OutputGrid:
    """The output pixel grid over the extent: `factor` input pixels per output pixel per axis, its pixels aligned with
    the grid of the same pixel size anchored at the input raster's origin, `row_off`/`col_off` pixels into it."""

    width: int
    height: int
    transform: object  # affine.Affine
    factor_x: float
    factor_y: float
    res_m: tuple[float, float]  # output pixel size on the ground (x, y), metres
    row_off: int = 0
    col_off: int = 0
    scene_height: int = 0  # the whole raster's size on this grid
    scene_width: int = 0


class SourceRaster:
    """An open input raster checked for what the pipeline needs (CRS, north-up grid, the model's bands).

    With an `extent` (xmin, ymin, xmax, ymax in `extent_crs`, default the raster's CRS) the source is the window of
    whole input pixels covering that box: geometry and reads are relative to it and nothing outside it is read.
    """

    def __init__(self, path, config: GAIRConfig, bands=None, extent=None, extent_crs=None, *,
                 radiometric_offset: float | None = None, mask_clouds: bool = False) -> None:
        import rasterio

        stack = find_stack(path)
        if stack is not None:
            self.path = stack.path
        else:
            self.path = str(path[0] if isinstance(path, (list, tuple)) and len(path) == 1 else path)
        self.config = config
        self._memfile, self.scl_index = None, None
        with raster_read_errors(self.path, opening=True):
            if stack is not None:
                from rasterio.io import MemoryFile

                xml = stack_vrt(stack, config.rs_bands, with_scl=mask_clouds)
                self._memfile = MemoryFile(xml.encode(), ext=".vrt")
                self.ds = self._memfile.open()
            else:
                self.ds = rasterio.open(self.path)
        try:
            t = self.ds.transform
            if self.ds.crs is None:
                raise GAIRError(f"{os.path.basename(self.path)} has no CRS, so its pixels cannot be placed on the "
                                "ground; assign one (gdal_edit.py -a_srs EPSG:32633 file.tif, or in QGIS: "
                                "Layer > Set CRS, then export) and retry")
            if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
                raise GAIRError(f"{os.path.basename(self.path)} is rotated or not north-up ({t}); warp it to a "
                                "north-up grid first (gdalwarp input.tif output.tif)")
            self.metres_per_unit = metres_per_unit(self.ds.crs)
            self.res_m = (t.a * self.metres_per_unit, -t.e * self.metres_per_unit)
            if stack is not None:
                if bands:
                    raise GAIRError(f"{stack.name}: the bands of a product or of band files are found by their file "
                                    "names; drop --bands (it is for multi-band rasters)")
                self.indexes = list(range(1, len(config.rs_bands) + 1))
                self.scl_index = len(config.rs_bands) + 1 if mask_clouds else None
            else:
                labels = band_labels(self.ds)
                self.indexes = [i + 1 for i in resolve_bands(labels, config.rs_bands, bands)]
                if mask_clouds:
                    self.scl_index = self._scl_band(labels)
            self.offsets = self._offsets(stack, radiometric_offset)
            self.area = self._window(extent, extent_crs)
            self.transform = self.ds.window_transform(self.area)
        except Exception:
            self.close()
            raise

    def _below_offset(self, grid: int = 8, side: int = 64) -> bool:
        """Whether the first model band (blue) has values below 1000 often: with the +1000 offset still in they would
        be negative reflectance, which is rare; without it dark ground (water, vegetation) is mostly below 1000.

        Read in grid x grid small windows spread over the raster: a decimated read of a whole-tile stack would
        decode every tile (and, pixel-interleaved, every band: ~3 GB) for 65k values.
        """
        from rasterio.windows import Window

        h, w = min(side, self.ds.height), min(side, self.ds.width)
        rows = np.unique(np.linspace(0, self.ds.height - h, grid).astype(int))
        cols = np.unique(np.linspace(0, self.ds.width - w, grid).astype(int))
        with raster_read_errors(self.path):
            values = np.concatenate([self.ds.read(self.indexes[0], window=Window(c, r, w, h), masked=True).compressed()
                                     for r in rows for c in cols])
        return values.size > 0 and float(np.mean(values < 1000)) >= DARK_SHARE

    def _scl_band(self, labels) -> int:
        """1-based index of a stacked raster's SCL band (described 'SCL'), for mask_clouds."""
        for i, label in enumerate(labels):
            if (label or "").strip().upper() in ("SCL", "SCENE CLASSIFICATION"):
                return i + 1
        raise GAIRError(f"{os.path.basename(self.path)} has no SCL band, so clouds cannot be masked; give the L2A "
                        "product (.SAFE/.zip), a folder of band files with its *_SCL_20m.jp2, or drop --mask-clouds")

    def _offsets(self, stack, stated: float | None) -> np.ndarray | None:
        """Per model band offset added to the DN (None: none), from the option, the product or the raster's tags."""
        name = os.path.basename(self.path.rstrip("/"))
        if stated is not None:
            values, why = [float(stated)] * len(self.config.rs_bands), "stated"
        elif stack is not None and stack.offsets is not None:
            values, why = [stack.offsets.get(b, 0.0) for b in self.config.rs_bands], stack.offset_source
        else:
            offset, why = raster_offset(self.ds.tags()) if stack is None else (None, "")
            if offset is None and self._below_offset():
                offset, why = 0.0, f"{DARK_SHARE:.0%} or more of its {self.config.rs_bands[0]} values are below 1000"
            if offset is None:
                warn_unknown_offset(name)
                offset, why = 0.0, "assumed"
            values = [offset] * len(self.config.rs_bands)
        # an applied offset is worth a line of the run's log; none is the ordinary case
        log.log(logging.INFO if any(values) else logging.DEBUG,
                f"{name}: radiometric offset {' '.join(sorted({f'{v:g}' for v in values}))} ({why})")
        return np.asarray(values, dtype=np.float32) if any(values) else None

    def _window(self, extent, extent_crs):
        """The whole-pixel window of the input covering `extent` (the full raster without one)."""
        from rasterio.warp import transform_bounds
        from rasterio.windows import Window, from_bounds

        full = Window(0, 0, self.ds.width, self.ds.height)
        if extent is None:
            return full
        xmin, ymin, xmax, ymax = (float(v) for v in extent)
        if not (xmin < xmax and ymin < ymax):
            raise GAIRError(f"extent {extent} is empty; give xmin ymin xmax ymax with xmin < xmax and ymin < ymax")
        if extent_crs is not None:
            try:
                xmin, ymin, xmax, ymax = transform_bounds(extent_crs, self.ds.crs, xmin, ymin, xmax, ymax,
                                                          densify_pts=21)
            except Exception as exc:  # noqa: BLE001 - pyproj/rasterio CRS errors: the user's CRS string is wrong
                raise GAIRError(f"cannot use the extent's CRS {str(extent_crs)[:80]!r}: {exc}") from exc
        box = from_bounds(xmin, ymin, xmax, ymax, self.ds.transform)
        col0, row0 = max(0, math.floor(box.col_off + 1e-6)), max(0, math.floor(box.row_off + 1e-6))
        col1 = min(self.ds.width, math.ceil(box.col_off + box.width - 1e-6))
        row1 = min(self.ds.height, math.ceil(box.row_off + box.height - 1e-6))
        if col1 <= col0 or row1 <= row0:
            raise GAIRError(f"the extent does not overlap {os.path.basename(self.path)}; choose an extent inside it")
        return Window(col0, row0, col1 - col0, row1 - row0) if (col0, row0, col1, row1) != (
            0, 0, self.ds.width, self.ds.height) else full

    def _shift(self, window):
        """A window relative to the extent -> the same window in the input file."""
        if self.area.col_off == 0 and self.area.row_off == 0:
            return window
        from rasterio.windows import Window

        return Window(window.col_off + self.area.col_off, window.row_off + self.area.row_off, window.width,
                      window.height)

    # -- geometry --------------------------------------------------------------------------------------------
    @property
    def width(self) -> int:
        return int(self.area.width)

    @property
    def height(self) -> int:
        return int(self.area.height)

    def crop_size_px(self, res_m: tuple[float, float] | None = None, ground_m: float | None = None) -> tuple[int, int]:
        """(rows, cols) of one crop of `ground_m` (default: the model's crop) on a grid of res_m (default: native).

        The one crop-size rule of inference and pretraining. Ground size is in the CRS's metres per unit
        (tiling.metres_per_unit): on EPSG:4326 that is the equatorial degree, so a "10 m" export (0.0000898 deg
        pixels, as the official samples) gets 224 pixels per crop at any latitude, as the reference cuts them.
        """
        res_m = res_m or self.res_m
        ground = self.config.crop_ground_m if ground_m is None else ground_m
        return max(1, int(round(ground / res_m[1]))), max(1, int(round(ground / res_m[0])))

    def output_grid(self, pixel_size_m: float | None = None) -> OutputGrid:
        """The input grid over the extent, or the grid of `pixel_size_m` pixels anchored at the raster's origin (so
        any extent gets the same pixels) whose whole pixels cover the extent (never past the input's edge)."""
        from affine import Affine

        row_off, col_off = int(self.area.row_off), int(self.area.col_off)
        if pixel_size_m is None:
            return OutputGrid(self.width, self.height, self.transform, 1.0, 1.0, self.res_m, row_off, col_off,
                              self.ds.height, self.ds.width)
        if not pixel_size_m > 0:
            raise GAIRError(f"pixel size must be positive metres, got {pixel_size_m}")
        fx, fy = pixel_size_m / self.res_m[0], pixel_size_m / self.res_m[1]
        full_w, full_h = int(math.floor(self.ds.width / fx + 1e-9)), int(math.floor(self.ds.height / fy + 1e-9))
        col0, row0 = int(math.floor(col_off / fx + 1e-9)), int(math.floor(row_off / fy + 1e-9))
        col1 = min(full_w, int(math.ceil((col_off + self.width) / fx - 1e-9)))
        row1 = min(full_h, int(math.ceil((row_off + self.height) / fy - 1e-9)))
        if col1 <= col0 or row1 <= row0:
            raise GAIRError(f"pixel size {pixel_size_m} m is larger than the raster ({self.width * self.res_m[0]:.0f}"
                            f" x {self.height * self.res_m[1]:.0f} m)")
        t = self.ds.transform
        transform = Affine(t.a * fx, 0.0, t.c + col0 * t.a * fx, 0.0, t.e * fy, t.f + row0 * t.e * fy)
        return OutputGrid(col1 - col0, row1 - row0, transform, fx, fy, (pixel_size_m, pixel_size_m), row0, col0,
                          full_h, full_w)

    def window_of(self, grid: OutputGrid, row0: float, col0: float, rows: float, cols: float):
        """The input window (relative to the extent, float offsets allowed, possibly reaching past it and past the
        raster) under the grid's output pixels [row0, row0+rows) x [col0, col0+cols)."""
        from rasterio.windows import Window

        return Window((col0 + grid.col_off) * grid.factor_x - self.area.col_off,
                      (row0 + grid.row_off) * grid.factor_y - self.area.row_off,
                      cols * grid.factor_x, rows * grid.factor_y)

    def model_shape(self, window) -> tuple[int, int]:
        """Pixels at the model's ground sampling over an input window (the window's own size when it is native)."""
        gsd = self.config.gsd_m
        sy, sx = self.res_m[1] / gsd, self.res_m[0] / gsd
        if abs(sx - 1) <= NATIVE_TOLERANCE and abs(sy - 1) <= NATIVE_TOLERANCE:
            sx = sy = 1.0
        return max(1, int(round(window.height * sy))), max(1, int(round(window.width * sx)))

    # -- reading ---------------------------------------------------------------------------------------------
    def _resampling(self, window, out_shape):
        from rasterio.enums import Resampling

        native = (window.height == out_shape[0] and window.width == out_shape[1]
                  and float(window.col_off).is_integer() and float(window.row_off).is_integer())
        if native:
            return Resampling.nearest
        return Resampling.average if out_shape[0] < window.height else Resampling.bilinear

    def _inside(self, window, shape: tuple[int, int]):
        """The part of a file window inside the raster, the out_shape of that part and the (top, bottom), (left,
        right) pixels of `shape` outside it: a window past the raster's edge is read there and padded."""
        from rasterio.windows import Window

        def axis(off: float, size: float, limit: int, n: int) -> tuple[float, float, int, int]:
            lo, hi = max(0.0, off), min(float(limit), off + size)
            if hi <= lo:
                raise GAIRError(f"a crop of {os.path.basename(self.path)} falls outside the raster ({self.ds.width} x "
                                f"{self.ds.height} px)")
            before = min(n - 1, max(0, int(round((lo - off) * n / size))))
            after = min(n - 1 - before, max(0, int(round((off + size - hi) * n / size))))
            return lo, hi, before, after

        c0, c1, left, right = axis(float(window.col_off), float(window.width), self.ds.width, shape[1])
        r0, r1, top, bottom = axis(float(window.row_off), float(window.height), self.ds.height, shape[0])
        inner = (shape[0] - top - bottom, shape[1] - left - right)
        return Window(c0, r0, c1 - c0, r1 - r0), inner, ((top, bottom), (left, right))

    def read(self, window, out_shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(10, h, w) float32 raw DN in model band order (nodata -> 0) and (h, w) validity, over an input window.

        The window may reach past the extent (the raster's data there is read: context for the extent's border)
        and past the raster itself: the scene is mirrored there (reflect padding), which gives border crops a
        plausible scene instead of a frame of zeros.
        """
        shape = out_shape or self.model_shape(window)
        window, inner, pad = self._inside(self._shift(window), shape)
        resampling = self._resampling(window, inner)
        n = len(self.indexes)
        with raster_read_errors(self.path):
            data = self.ds.read(self.indexes, window=window, out_shape=(n, *inner), resampling=resampling,
                                out_dtype=np.float32)
            masks = self.ds.read_masks(self.indexes, window=window, out_shape=(n, *inner), resampling=resampling)
        band_ok = (masks > 0) & np.isfinite(data)
        if self.offsets is not None:  # to the reference's scale; clipped at 0 as harmonized collections store it
            data += self.offsets[:, None, None]
            np.maximum(data, 0.0, out=data)
        data[~band_ok] = 0.0
        valid = band_ok.any(axis=0)
        if any(map(any, pad)):
            data, valid = np.pad(data, ((0, 0), *pad), mode="reflect"), np.pad(valid, pad, mode="reflect")
        return data, valid

    def valid(self, window, out_shape: tuple[int, int], clouds: bool = True) -> np.ndarray:
        """(h, w) validity (any model band not nodata; with mask_clouds and `clouds`, not a masked SCL class)
        sampled at out_shape pixel centres over an input window (mirrored past the raster's edge, as `read`)."""
        from rasterio.enums import Resampling

        window, inner, pad = self._inside(self._shift(window), out_shape)
        valid = np.zeros(inner, dtype=bool)
        with raster_read_errors(self.path):
            for index in self.indexes:  # band by band: one (h, w) mask in memory, not ten
                valid |= self.ds.read_masks(index, window=window, out_shape=inner,
                                            resampling=Resampling.nearest) > 0
            if clouds and self.scl_index is not None:
                scl = self.ds.read(self.scl_index, window=window, out_shape=inner, resampling=Resampling.nearest)
                valid &= ~np.isin(scl, CLOUD_CLASSES)
        return np.pad(valid, pad, mode="reflect") if any(map(any, pad)) else valid

    def coverage(self, max_side: int = 1024) -> np.ndarray:
        """A coarse (at most max_side pixels a side) validity map of the whole input file (not only the extent),
        for skipping empty crops the same way whatever the extent."""
        from rasterio.windows import Window

        step = max(1, math.ceil(max(self.ds.width, self.ds.height) / max_side))
        shape = (max(1, self.ds.height // step), max(1, self.ds.width // step))
        # cloudy crops are still read (their pixels are masked in the output)
        return self.valid(Window(-self.area.col_off, -self.area.row_off, self.ds.width, self.ds.height), shape,
                          clouds=False)

    def extent_valid(self) -> bool:
        """Whether the extent holds any valid pixel (coarsely)."""
        from rasterio.windows import Window

        step = max(1, math.ceil(max(self.width, self.height) / 1024))
        return bool(self.valid(Window(0, 0, self.width, self.height),
                               (max(1, self.height // step), max(1, self.width // step)), clouds=False).any())

    def close(self) -> None:
        if getattr(self, "ds", None) is not None:
            self.ds.close()
        if self._memfile is not None:
            self._memfile.close()

    def __enter__(self) -> SourceRaster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
