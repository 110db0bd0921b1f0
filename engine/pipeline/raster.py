"""Raster -> continuous embedding raster: crops on one token lattice, encoded in batches, one NILI pass per pixel.

Work goes block by block (output blocks aligned with the GeoTIFF tiles) with crop tokens cached only until their
last block is done, so memory is bounded by the block size, not by the raster. See docs/ENGINE_API.md.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import Cancelled, GAIRError
from ..io.blocks import block_windows
from ..io.embedding_raster import DTYPES
from ..io.embedding_writer import EmbeddingRasterWriter, int16_scale_offset
from ..io.files import PAM, quicklook_path
from ..io.guard import guarded
from ..io.pca import PCAProjection, shared_projection
from ..io.space import model_options
from ..params import DEFAULT_DIMS, FIELD_MODES
from ..params.operations import MIN_VALID, RASTER_OVERLAP
from ..runtime.protocol import GAIRModelLike
from .blend import LatticeField, numpy_blas_beside
from .distributed import Shard, barrier, current_shard, gather_batches
from .quicklook import Quicklook
from .source import OutputGrid, SourceRaster
from .tiling import TokenLattice

Progress = Callable[[float], None] | None
Cancel = Callable[[], bool] | None

log = logging.getLogger(__name__)

PROGRESS_STEPS = 10  # crop progress is logged at every 10% of the crops (and after the first batch)

TILE = 256
BLOCK_BUDGET_BYTES = 128 * 2**20   # the field of one output block
SAMPLE_CROPS, SAMPLE_PIXELS = 16, 16384
# The lattice starts this many token cells before the raster (the scene mirrored there): a border pixel reads cells
# of real (mirrored) context, at least half a cell inside its crop (1.5 is the least NILI's 3 x 3 neighbourhoods allow)
EDGE_MARGIN_CELLS = 2.0


def estimate_output_bytes(height: int, width: int, dims: int, dtype: str = "float32") -> int:
    """Uncompressed size of an embedding raster's pixel data: pixels x dims x bytes per value."""
    return int(height) * int(width) * int(dims) * int(np.dtype(dtype).itemsize)


def format_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return ""  # unreachable


@dataclass(frozen=True)
class OutputEstimate:
    """What an embed_raster run will write and encode, known before any crop is encoded."""

    height: int
    width: int
    dims: int
    dtype: str
    crops: int

    @property
    def bytes(self) -> int:
        return estimate_output_bytes(self.height, self.width, self.dims, self.dtype)

    def describe(self) -> str:
        return (f"{self.width} x {self.height} px x {self.dims} dims {self.dtype} = {format_bytes(self.bytes)} "
                + ("before compression (int8 tiles are stored plain: that is the file size)" if self.dtype == "int8"
                   else "before compression (it typically saves 20-30%)") + f"; {self.crops} crops to encode")


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def as_model(model, device: str = "auto", backend: str = "auto"):
    """A loaded model (torch or ONNX backend) as it is; a path or None goes through engine.load_model."""
    if isinstance(model, GAIRModelLike):
        return model
    from ..runtime.loading import load_model

    return load_model(model, device=device, backend=backend)


def default_batch_size(model) -> int:
    """Crops per encoder call: 8 fill a CPU's cores with little memory; a GPU wants more."""
    return 32 if str(model.device).startswith("cuda") else 8


class _RasterJob:
    """State of one embed_raster run: which crops exist, which are encoded, and their tokens until the last block
    that reads them."""

    def __init__(self, model, src: SourceRaster, grid: OutputGrid, lattice: TokenLattice, keep: np.ndarray,
                 dims: int, mode: str, batch_size: int, shard: Shard, progress: Progress, cancel: Cancel) -> None:
        self.model, self.src, self.grid, self.lattice, self.keep = model, src, grid, lattice, keep
        self.dims, self.mode, self.batch_size, self.shard = dims, mode, max(1, int(batch_size)), shard
        self.progress, self.cancel = progress, cancel
        self.encoded: set[int] = set()
        self.tokens: dict[int, np.ndarray] = {}
        # output blocks: tile multiples whose field and mask fit the budget
        side = int(math.sqrt(BLOCK_BUDGET_BYTES / (4 * (dims + 1)))) // TILE * TILE
        self.block_side = min(max(TILE, side), 8 * TILE)
        self.blocks = block_windows(grid.height, grid.width, self.block_side, self.block_side)
        self.work_total = int(keep.sum()) + len(self.blocks)
        self.work_done = 0
        self.crops_total, self.crops_done, self.next_log = int(keep.sum()), 0, 1
        self.started = time.monotonic()

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled("embedding cancelled; no output was written")

    def report(self, units: int = 1) -> None:
        self.work_done += units
        if self.progress is not None and self.shard.is_main:
            self.progress(min(1.0, self.work_done / max(1, self.work_total)))

    def log_crops(self, count: int) -> None:
        """Log "crop i/n, ~m:ss left" after the first batch, at every PROGRESS_STEPS-th of the crops and the last."""
        self.crops_done += count
        if not self.shard.is_main or (self.crops_done < self.next_log and self.crops_done < self.crops_total):
            return
        done, total = self.crops_done, max(1, self.crops_total)
        elapsed = time.monotonic() - self.started
        left = elapsed / done * max(0, total - done)
        log.info(f"crop {done}/{total} ({done / total:.0%}), {format_duration(elapsed)} elapsed, "
                 f"~{format_duration(left)} left")
        step = math.ceil(total / PROGRESS_STEPS)
        self.next_log = (done // step + 1) * step

    def crop_window(self, index: int):
        row0, col0 = self.lattice.origin(index)
        return self.src.window_of(self.grid, row0 - self.grid.row_off, col0 - self.grid.col_off,
                                  self.lattice.rows.crop, self.lattice.cols.crop)

    def encode(self, ids: list[int]) -> None:
        """Make tokens of `ids` available on rank 0 (crops not yet encoded, in global batches over the ranks)."""
        from ..runtime.preprocess import preprocess_rs

        todo = [i for i in ids if i not in self.encoded]
        batches = [todo[k:k + self.batch_size] for k in range(0, len(todo), self.batch_size)]
        cfg = self.model.config

        def run(j: int) -> np.ndarray:
            self.check_cancel()
            crops = np.stack([self.src.read(self.crop_window(i))[0] for i in batches[j]])
            return np.asarray(self.model.rs_tokens(preprocess_rs(crops, cfg)), dtype=np.float32)

        for j, tokens in gather_batches(self.shard, [len(b) for b in batches], (cfg.rs_tokens, cfg.embed_dim), run):
            self.tokens.update(zip(batches[j], tokens))
            self.report(len(batches[j]))
            self.log_crops(len(batches[j]))
            self.check_cancel()
        self.encoded.update(todo)

    def sample(self, seed: int) -> np.ndarray | None:
        """(N, D) model-space pixels from up to SAMPLE_CROPS valid crops spread over the raster (rank 0 only)."""
        kept = np.flatnonzero(self.keep)
        picks = np.unique(np.rint(np.linspace(0, len(kept) - 1, min(SAMPLE_CROPS, len(kept)))).astype(int))
        chosen = [int(kept[p]) for p in picks]
        self.encode(chosen)
        if not self.shard.is_main:
            return None
        rng = np.random.default_rng(seed)
        per_crop, rows = max(64, SAMPLE_PIXELS // len(chosen)), []
        h, w = self.lattice.rows.crop, self.lattice.cols.crop
        for i in chosen:  # the crop's own field at random valid pixel centres (a point query, no dense field)
            valid = np.flatnonzero(self.src.valid(self.crop_window(i), (h, w)))
            if len(valid):
                pick = np.sort(rng.choice(valid, size=min(per_crop, len(valid)), replace=False))
                rel = np.stack([(pick % w + 0.5) / w, (pick // w + 0.5) / h], axis=-1)[None]
                rows.append(np.asarray(self.model.query_tokens(self.tokens[i][None], rel, mode=self.mode))[0])
        if not rows:
            raise GAIRError(f"{Path(self.src.path).name}: no valid pixels in the crops sampled for scaling/PCA")
        return np.concatenate(rows)

    def block_crops(self) -> list[list[int]]:
        """For every output block, the kept crops whose tokens its pixels read."""
        r0, c0 = self.grid.row_off, self.grid.col_off
        return [[i for i in self.lattice.touching(r0 + int(w.row_off), r0 + int(w.row_off) + int(w.height),
                                                  c0 + int(w.col_off), c0 + int(w.col_off) + int(w.width))
                 if self.keep[i]] for w in self.blocks]

    def run_blocks(self, writer, pca: PCAProjection | None, quicklook: Quicklook | None) -> None:
        """Compute and write every block (rank 0); all ranks walk the blocks to encode their share of the crops."""
        field = LatticeField(self.model, self.lattice, self.mode, pca) if self.shard.is_main else None
        needs = self.block_crops()
        last_block = {i: b for b, ids in enumerate(needs) for i in ids}  # tokens are dropped after it
        for b, window in enumerate(self.blocks):
            self.check_cancel()
            row0, col0, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
            self.encode(needs[b])
            if field is not None:
                r, c = row0 + self.grid.row_off, col0 + self.grid.col_off
                block = field.block({i: self.tokens[i] for i in needs[b]}, r, r + h, c, c + w)
                valid = self.src.valid(self.src.window_of(self.grid, row0, col0, h, w), (h, w))
                block[:, ~valid] = np.nan
                writer.write(window, block)
                if quicklook is not None:
                    quicklook.add(block, row0, col0)
            for i in needs[b]:
                if last_block[i] == b:
                    self.tokens.pop(i, None)
            self.report()


def raster_lattice(grid: OutputGrid, crop_h: int, crop_w: int, overlap: float, cells: int) -> TokenLattice:
    """The crops of an output grid's raster on its lattice (see EDGE_MARGIN_CELLS; `cells` tokens per crop side)."""
    return TokenLattice.for_scene(grid.scene_height, grid.scene_width, crop_h, crop_w, cells, overlap,
                                  EDGE_MARGIN_CELLS)


def _kept_crops(src: SourceRaster, grid: OutputGrid, lattice: TokenLattice, min_valid: float) -> np.ndarray:
    """Crops to encode: those whose part inside the raster has valid data, at least min_valid of it (on a coarse
    validity map of the whole file, so the choice does not depend on the extent), and the nodata-only crops beside
    them, whose cells the valid pixels near them read; an empty extent -> clear error."""
    if not src.extent_valid():
        raise GAIRError(f"{Path(src.path).name} holds only nodata in the model's bands "
                        f"(nodata value {src.ds.nodata}) in the area asked; nothing to embed. Check the file, its "
                        "nodata setting or the extent")
    cover = src.coverage()
    sy, sx = cover.shape[0] / src.ds.height * grid.factor_y, cover.shape[1] / src.ds.width * grid.factor_x
    crop_h, crop_w = lattice.rows.crop, lattice.cols.crop
    share = np.zeros(len(lattice))
    for i in range(len(lattice)):
        r0, c0 = lattice.origin(i)
        a, c = min(cover.shape[0] - 1, max(0, int(r0 * sy))), min(cover.shape[1] - 1, max(0, int(c0 * sx)))
        b, d = max(a + 1, math.ceil((r0 + crop_h) * sy)), max(c + 1, math.ceil((c0 + crop_w) * sx))
        share[i] = cover[a:b, c:d].mean()
    share = share.reshape(lattice.shape)
    keep = (share > 0) & (share >= min_valid)
    if not keep.any():
        raise GAIRError(f"no crop of {Path(src.path).name} is at least {min_valid:.0%} valid data; the valid area is "
                        "too small or too scattered for the model's crops")
    beside = np.zeros_like(keep)
    padded = np.pad(keep, 1)
    for dr in range(3):
        for dc in range(3):
            beside |= padded[dr:dr + keep.shape[0], dc:dc + keep.shape[1]]
    return (keep | (beside & (share == 0))).ravel()


def _log_estimate(estimate: OutputEstimate, output_path: Path) -> None:
    """Say what the run will write before it starts, and warn when it cannot fit on the disk."""
    log.info(f"{output_path.name}: {estimate.describe()}")
    folder = output_path.parent if output_path.parent.exists() else Path.cwd()
    free, needed = shutil.disk_usage(folder).free, 2 * estimate.bytes  # the tiled file, then its COG copy
    if needed > free:
        log.warning(f"{output_path.name} may need up to {format_bytes(needed)} while it is written (the raster, "
                    f"then its cloud-optimized copy) but {folder} has only {format_bytes(free)} free; keep fewer "
                    "dims, use int16 or a larger pixel size")


@guarded
def embed_raster(input_path: str | os.PathLike, output_path: str | os.PathLike, model=None, *, extent=None,
                 extent_crs=None, bands=None, pixel_size_m: float | None = None, dims: int | None = DEFAULT_DIMS,
                 dtype: str = "int8", mode: str = "nili", overlap: float = RASTER_OVERLAP,
                 batch_size: int | None = None, min_valid: float = MIN_VALID, quicklook: bool = True, seed: int = 0,
                 radiometric_offset: float | None = None, mask_clouds: bool = False,
                 pca_from: PCAProjection | str | os.PathLike | None = None, tags: dict | None = None,
                 progress: Progress = None, cancel: Cancel = None) -> Path:
    """Embed a Sentinel-2 raster into a continuous GAIR field (GeoTIFF, one band per dim); returns the output path.

    input_path: a raster, a Sentinel-2 product (.SAFE, .zip), a folder or list of band files (pipeline.products).
    extent: (xmin, ymin, xmax, ymax) in extent_crs (default: the raster's CRS): the output covers that box with
    whole pixels of the raster's grid; crops sit on one lattice of token cells anchored at the raster's origin
    (pipeline.tiling) and read the raster past the box, so a pixel gets the same embedding whatever the extent (and
    the scene is mirrored past the raster's own edge: no border frame). bands: see pipeline.bands.resolve_bands.
    pixel_size_m: output pixel size (default: the input's; the grid of that size anchored at the raster's origin).
    dims: reduce to this many principal components (sidecar `<stem>.pca.npz`); None, 0 or at least the model's dims
    keep every dim.
    overlap: fraction of a crop shared with the next one, in whole token cells. The default 0 (crops abut; NILI
    reads neighbouring crops' cells across the joint) encodes a whole tile's pixels ~1.04 times, for a seam figure
    (pipeline.quality) of ~1.1 with official-size weights and a cosine of 0.9998 to a 0.75-overlap field (README,
    "Seamless rasters").
    min_valid: crops with less valid data are skipped (default 0: every crop with a valid pixel).
    radiometric_offset: the offset the input's values carry
    (-1000: raw DN of baseline >= 04.00; default: from the product's metadata). mask_clouds: L2A SCL cloud, shadow,
    snow, nodata and saturated pixels become nodata. Under torchrun, crops are sharded over the ranks and rank 0
    writes. The raster is tiled (256 px), with internal overviews from a megapixel up. pca_from: reduce through
    this projection (a .pca.npz, an embedding raster or a PCAProjection) instead of fitting one, so several rasters
    share one space; dims then follow it. tags: extra GeoTIFF tags.
    """
    if mode not in FIELD_MODES:
        raise GAIRError(f"query mode for a raster must be one of {FIELD_MODES}, got {mode!r}"
                        + (" (it runs a transformer per pixel; use it for points with embed-points)"
                           if mode == "transformer" else ""))
    if dtype not in DTYPES:
        raise GAIRError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    model = as_model(model)
    cfg, shard, output_path = model.config, current_shard(), Path(output_path)
    if mode == "nili" and cfg.nili_convention != "released":
        raise GAIRError(f"a raster field needs the released NILI convention; this model is loaded with "
                        f"{cfg.nili_convention!r} (its crops read only part of their token grid, which does not tile): "
                        "load it without nili_convention, or embed points with embed-points")
    if dims is not None and int(dims) < 0:
        raise GAIRError(f"dims must be at least 1 (or 0 for all {cfg.embed_dim}), got {dims}")
    shared = shared_projection(pca_from, model.fingerprint, cfg.embed_dim) if pca_from is not None else None
    if shared is not None:
        if dims is not None and int(dims) not in (DEFAULT_DIMS, shared.dims):
            raise GAIRError(f"--dims {dims} differs from the {shared.dims} dims of the --pca-from projection; leave "
                            "--dims out (it follows the projection)")
        dims = shared.dims
    if dims is not None and (int(dims) == 0 or int(dims) >= cfg.embed_dim):
        dims = None  # nothing to reduce: the model's own space
    with numpy_blas_beside(model), SourceRaster(input_path, cfg, bands, extent, extent_crs,
                                                     radiometric_offset=radiometric_offset,
                                                     mask_clouds=mask_clouds) as src:
        grid = src.output_grid(pixel_size_m)
        crop_h, crop_w = src.crop_size_px(grid.res_m)
        if min(crop_h, crop_w) < 4:
            raise GAIRError(f"pixel size {grid.res_m[0]:g} m is too coarse: a crop ({cfg.crop_ground_m:g} m) must "
                            "span at least 4 output pixels; choose a smaller --pixel-size")
        lattice = raster_lattice(grid, crop_h, crop_w, overlap, cfg.rs_grid)
        out_dims = int(dims) if dims is not None else cfg.embed_dim
        keep = _kept_crops(src, grid, lattice, min_valid)
        if shard.is_main:
            _log_estimate(OutputEstimate(grid.height, grid.width, out_dims, dtype, int(keep.sum())), output_path)
        job = _RasterJob(model, src, grid, lattice, keep, out_dims, mode,
                         batch_size or default_batch_size(model), shard, progress, cancel)
        sample = job.sample(seed)
        pca = scale = offset = look = None
        if shard.is_main:
            if dims is not None:
                pca = shared or PCAProjection.from_sample(sample, out_dims, model.fingerprint, seed)
                sample = pca.transform(sample)
            if dtype == "int16":
                scale, offset = int16_scale_offset(sample)
            look = Quicklook(grid.height, grid.width, sample, first_three=pca is not None) if quicklook else None
        writer = (EmbeddingRasterWriter(output_path, width=grid.width, height=grid.height, crs=src.ds.crs,
                                        transform=grid.transform, dims=out_dims, model=model.fingerprint,
                                        query_mode=mode, nili_convention=cfg.nili_convention,
                                        options=model_options(cfg), crop_pixels=cfg.crop_pixels,
                                        crop_ground_m=cfg.crop_ground_m, dtype=dtype, pca=pca, scale=scale,
                                        offset=offset, tile=TILE, overviews=True,
                                        extra_tags={"GAIR_OVERLAP": repr(float(overlap)),
                                                    "GAIR_SOURCE": Path(src.path).name,
                                                    "GAIR_SOURCE_BANDS": ",".join(map(str, src.indexes)),
                                                    **(tags or {})})
                  if shard.is_main else nullcontext())
        with writer:
            job.run_blocks(writer, pca, look)
            job.check_cancel()
        if look is not None:
            look.save(quicklook_path(output_path), src.ds.crs, grid.transform)
        elif shard.is_main:  # a quicklook of an older run of this name would show another raster
            for stale in (quicklook_path(output_path), Path(str(quicklook_path(output_path)) + PAM)):
                stale.unlink(missing_ok=True)
    barrier(shard)
    return output_path
