"""Many rasters -> one embedding COG each plus a VRT mosaic, all in one embedding space (one shared PCA).

Tiles and dates reduced by different PCA fits cannot be compared or mosaicked, so the projection is fitted once, on
a sample drawn from every input (or taken from `pca_from`), and every output goes through it. Under torchrun input i
is embedded by rank i % world as a single process (`distributed.alone`): inputs, not crops, are sharded, so a rank
never waits on another within a raster and each output is written once, atomically, by one rank. The shared sample
is gathered in input order and the PCA fitted on rank 0, so the files are the same bytes as a single-process run's.

A re-run skips outputs that are finished in the same space with the same settings (the GAIR_MOSAIC_RUN tag) and
redoes the others: a killed run leaves only hidden temp files, which the next writer of that output removes. It
reuses the shared PCA when `<mosaic>.pca.json` says it was fitted on the same inputs and settings.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from ..errors import Cancelled, GAIRError
from ..io.files import atomic_path, pca_sidecar_path, quicklook_path
from ..io.guard import guarded
from ..io.pca import PCAProjection, shared_projection
from ..params import DEFAULT_DIMS
from .blend import numpy_blas_beside
from .distributed import Shard, alone, barrier, current_shard
from .raster import SAMPLE_PIXELS, as_model, embed_raster

log = logging.getLogger(__name__)

TAG_RUN = "GAIR_MOSAIC_RUN"  # hash of an output's input and settings: a re-run skips it when unchanged
PER_INPUT_TAGS = ("GAIR_SOURCE", "GAIR_SOURCE_BANDS", TAG_RUN, "GAIR_PCA")  # not copied to the mosaic VRT
MIN_SAMPLE_PER_INPUT = 256
_SUFFIXES = (".zip", ".safe", ".tif", ".tiff", ".jp2", ".vrt", ".img")


@dataclass
class MosaicResult:
    """What embed_rasters wrote: one embedding raster per input, the VRT mosaic(s) and the shared PCA sidecar."""

    outputs: list[str]
    mosaics: list[str]
    pca: str | None
    skipped: list[str] = field(default_factory=list)
    space: str = ""

    def summary(self) -> str:
        done = len(self.outputs) - len(self.skipped)
        return (f"wrote {done} embedding raster(s), skipped {len(self.skipped)} finished; mosaic "
                f"{', '.join(self.mosaics)}" + (f"; shared PCA {self.pca}" if self.pca else "")
                + f"; space {self.space}")


def read_manifest(path: str | os.PathLike) -> list[Path]:
    """One input path per line (blank lines and '#' comments skipped); relative paths start at the manifest's folder."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise GAIRError(f"cannot read the manifest {path}: {exc.strerror or exc}; give a text file with one input "
                        "path per line") from exc
    entries = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    return [p if p.is_absolute() else path.parent / p for p in map(Path, entries)]


def output_stem(input_path: str | os.PathLike) -> str:
    """`T33UUP_20230601.tif`, `S2A_...SAFE`, `S2A_...SAFE.zip` or `S2A_...SAFE/MTD_MSIL2A.xml` -> the name its
    embedding raster gets."""
    path = Path(input_path)
    name = path.parent.name if path.name.upper().startswith("MTD_") else path.name  # a product's metadata file
    while Path(name).suffix.lower() in _SUFFIXES and Path(name).stem:
        name = Path(name).stem
    return name


def _input_list(inputs: Sequence, manifest) -> list[Path]:
    paths = [Path(p) for p in (inputs or ())] + (read_manifest(manifest) if manifest else [])
    if not paths:
        raise GAIRError("no input rasters: give them as arguments or in a --manifest file (one path per line)")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise GAIRError(f"input(s) not found: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    stems: dict[str, Path] = {}
    for p in paths:
        other = stems.setdefault(output_stem(p), p)
        if other != p:
            raise GAIRError(f"{other} and {p} would both be written as {output_stem(p)}.tif; rename one, or embed "
                            "them into different output folders")
    return paths


def _gather(shard: Shard, mine: dict) -> dict:
    """Merge every rank's {index: value} (each index owned by one rank) on all ranks."""
    if shard.world_size == 1:
        return mine
    import torch.distributed as dist

    parts: list = [None] * shard.world_size
    dist.all_gather_object(parts, mine)
    return {k: v for part in parts for k, v in part.items()}


def _broadcast(shard: Shard, value):
    if shard.world_size == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _sample_input(path: Path, model, options: dict, seed: int, rows: int, batch_size: int | None,
                  cancel) -> np.ndarray:
    """(N, D) model-space pixels of one input: its own embed_raster sample (spread-out crops), cut to `rows`."""
    from .raster import MIN_VALID, RASTER_OVERLAP, _kept_crops, _RasterJob, default_batch_size, raster_lattice
    from .source import SourceRaster

    cfg = model.config
    accepted = inspect.signature(SourceRaster.__init__).parameters  # product options: radiometric offset, clouds
    reading = {k: v for k, v in options.items() if k in accepted and k not in ("bands", "extent", "extent_crs")}
    with numpy_blas_beside(model), SourceRaster(path, cfg, options.get("bands"), options.get("extent"),
                                                options.get("extent_crs"), **reading) as src:
        grid = src.output_grid(options.get("pixel_size_m"))
        crop_h, crop_w = src.crop_size_px(grid.res_m)
        lattice = raster_lattice(grid, crop_h, crop_w, options.get("overlap", RASTER_OVERLAP), cfg.rs_grid)
        keep = _kept_crops(src, grid, lattice, options.get("min_valid", MIN_VALID))
        job = _RasterJob(model, src, grid, lattice, keep, cfg.embed_dim, options.get("mode", "nili"),
                         batch_size or default_batch_size(model), Shard(), None, cancel)
        sample = job.sample(seed)
    if len(sample) > rows:
        sample = sample[np.sort(np.random.default_rng(seed).choice(len(sample), rows, replace=False))]
    return sample


def _run_tag(path: Path, options: dict, dims, dtype: str, seed: int) -> str:
    """Hash of what makes an output: the input (name and size) and every setting."""
    stat = path.stat() if path.is_file() else None
    skip = ("input_path", "output_path", "model", "dims", "dtype", "seed", "batch_size", "quicklook", "pca_from",
            "tags", "progress", "cancel")
    settings = {name: p.default for name, p in inspect.signature(embed_raster).parameters.items() if name not in skip}
    settings.update(options)  # given or default, a setting hashes the same (the CLI passes every one)
    what = {"input": path.name, "size": stat.st_size if stat else None, "dims": dims, "dtype": dtype, "seed": seed,
            "options": {k: settings[k] for k in sorted(settings)}}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fitted_before(folder: Path, name: str, sample_key: str) -> PCAProjection | None:
    """The shared PCA an earlier run fitted on the same inputs and settings (`<name>.pca.json` names its sample)."""
    try:
        record = json.loads((folder / f"{name}.pca.json").read_text())
        pca = PCAProjection.load(folder / f"{name}.pca.npz")
    except (OSError, ValueError, GAIRError):
        return None
    if record.get("sample") != sample_key or record.get("pca") != pca.sha:
        return None
    log.info(f"{name}.pca.npz: fitted by an earlier run on the same inputs, reused")
    return pca


def _finished(output: Path, run_tag: str, pca: PCAProjection | None, model, quicklook: bool) -> bool:
    """The output exists, is a complete embedding raster of this run's settings and space (PCA sidecar included)."""
    from ..io.embedding_raster import EmbeddingRaster

    if not output.is_file() or (quicklook and not quicklook_path(output).is_file()):
        return False
    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    try:
        with EmbeddingRaster(output) as raster:
            space = raster.meta.space
        with rasterio.open(output) as ds:  # a file cut short (a copy, a full disk) lacks its last tiles
            tags = ds.tags()
            block_h, block_w = ds.block_shapes[-1]
            ds.read(ds.count, window=Window((ds.width - 1) // block_w * block_w, (ds.height - 1) // block_h * block_h,
                                            1, 1))
    except (GAIRError, OSError, RasterioError) as exc:
        log.info(f"{output.name} is redone: {exc}")
        return False
    return (tags.get(TAG_RUN) == run_tag and space.model == model.fingerprint
            and space.pca == (pca.sha if pca is not None else ""))


@guarded
def embed_rasters(inputs: Sequence[str | os.PathLike] | None = None, output_dir: str | os.PathLike | None = None,
                  model=None, *, manifest: str | os.PathLike | None = None,
                  pca_from: PCAProjection | str | os.PathLike | None = None, dims: int | None = DEFAULT_DIMS,
                  dtype: str = "int8", seed: int = 0, batch_size: int | None = None, mosaic_name: str = "mosaic",
                  quicklook: bool = True, progress: Callable[[float], None] | None = None,
                  cancel: Callable[[], bool] | None = None, **options) -> MosaicResult:
    """Embed every input (paths, and/or a manifest file) into `output_dir`/<input stem>.tif plus `<mosaic_name>.vrt`.

    One PCA for all (fitted on a sample from every input, or `pca_from`), saved as `<mosaic_name>.pca.npz`.
    `options` are embed_raster's (extent, bands, pixel_size_m, mode, overlap, min_valid...). Under torchrun input
    i is embedded by rank i % world; rank 0 writes the mosaic. Returns what was written and what was skipped.
    """
    if output_dir is None:
        raise GAIRError("give an output folder for the embedding rasters and their mosaic")
    if dtype == "int16":
        raise GAIRError("a mosaic needs one encoding for all its rasters, but int16 scales are fitted per raster; "
                        "use int8 (the default) or float32")
    paths = _input_list(inputs, manifest)
    out_dir, shard = Path(output_dir), current_shard()
    model = as_model(model)
    cfg = model.config
    mine = [i for i in range(len(paths)) if i % shard.world_size == shard.rank]
    steps = len(mine) + 1
    report = (lambda done: progress(min(1.0, done / steps))) if progress is not None and shard.is_main else None

    def check_cancel() -> None:
        if cancel is not None and cancel():
            raise Cancelled("embedding cancelled; finished rasters are kept, the one under way was not written")

    reduce = dims is not None and 0 < int(dims) < cfg.embed_dim
    pca = None
    if pca_from is not None:
        pca = shared_projection(pca_from, model.fingerprint, cfg.embed_dim)
        if dims is not None and int(dims) not in (DEFAULT_DIMS, pca.dims):
            raise GAIRError(f"--dims {dims} differs from the {pca.dims} dims of the --pca-from projection; leave "
                            "--dims out (it follows the projection)")
    elif reduce:
        # a re-run over the same inputs and settings reuses the PCA it fitted (no new sample)
        sample_key = hashlib.sha256(json.dumps([model.fingerprint, int(dims), seed, len(paths), *[
            _run_tag(p, options, int(dims), "", seed) for p in paths]]).encode()).hexdigest()[:16]
        pca = _broadcast(shard, _fitted_before(out_dir, mosaic_name, sample_key) if shard.is_main else None)
    if reduce and pca is None:
        rows = max(MIN_SAMPLE_PER_INPUT, SAMPLE_PIXELS // len(paths))
        with alone():
            samples = {i: _sample_input(paths[i], model, options, seed, rows, batch_size, cancel) for i in mine}
        samples = _gather(shard, samples)
        if shard.is_main:  # one BLAS thread, as inside embed_raster: the same bits whatever ran before
            pooled = np.concatenate([samples[i] for i in range(len(paths))])
            with numpy_blas_beside(model):
                pca = PCAProjection.from_sample(pooled, int(dims), model.fingerprint, seed)
        pca = _broadcast(shard, pca)
    if report:
        report(1)
    out_dir.mkdir(parents=True, exist_ok=True)
    if pca is not None and shard.is_main:
        pca.save(out_dir / f"{mosaic_name}.pca.npz")
        if pca_from is None:
            with atomic_path(out_dir / f"{mosaic_name}.pca.json", ".json") as tmp:
                Path(tmp).write_text(json.dumps({"sample": sample_key, "pca": pca.sha}))

    outputs = [out_dir / f"{output_stem(p)}.tif" for p in paths]
    skipped = {}
    for step, i in enumerate(mine, start=2):
        check_cancel()
        tag = _run_tag(paths[i], options, pca.dims if pca else dims, dtype, seed)
        if _finished(outputs[i], tag, pca, model, quicklook):
            log.info(f"{outputs[i].name}: finished in an earlier run, skipped")
            skipped[i] = True
        else:
            log.info(f"input {i + 1}/{len(paths)}: {paths[i].name} -> {outputs[i].name}")
            with alone():
                embed_raster(paths[i], outputs[i], model, dims=pca.dims if pca else 0, dtype=dtype, seed=seed,
                             batch_size=batch_size, quicklook=quicklook, pca_from=pca, tags={TAG_RUN: tag},
                             cancel=cancel, **options)
        if report:
            report(step)
    skipped = _gather(shard, skipped)
    barrier(shard)
    mosaics = write_mosaics(outputs, out_dir, mosaic_name, pca) if shard.is_main else []
    barrier(shard)
    space = ""
    if shard.is_main:
        from ..io.embedding_raster import EmbeddingRaster

        with EmbeddingRaster(outputs[0]) as first:
            space = first.meta.space.id
    return MosaicResult([str(p) for p in outputs], [str(p) for p in mosaics],
                        str(out_dir / f"{mosaic_name}.pca.npz") if pca is not None else None,
                        [str(outputs[i]) for i in sorted(skipped)], space)


def write_mosaics(rasters: Sequence[Path], folder: Path, name: str, pca: PCAProjection | None) -> list[Path]:
    """One VRT per CRS and pixel size (GDAL mosaics one grid): `<name>.vrt`, or `<name>_<EPSG>_<res>m.vrt` when the
    inputs span several UTM zones or resolutions. Every raster must be in one embedding space."""
    import rasterio

    groups: dict[tuple, list] = {}
    space = None
    for path in rasters:
        with rasterio.open(path) as ds:
            tags = ds.tags()
            if space is not None and tags.get("GAIR_SPACE") != space:
                raise GAIRError(f"{path.name} is in embedding space {tags.get('GAIR_SPACE')}, not {space} like the "
                                "others; a mosaic needs one space: embed them again in one run")
            space = tags.get("GAIR_SPACE")
            t = ds.transform
            if t.b != 0 or t.d != 0 or t.e >= 0:
                raise GAIRError(f"{path.name} is not north-up; a mosaic needs north-up rasters")
            key = (ds.crs.to_wkt(), round(t.a, 9), round(-t.e, 9))
            groups.setdefault(key, []).append((path, ds.width, ds.height, t, ds.count, ds.dtypes[0], ds.nodata,
                                               ds.block_shapes[0], ds.descriptions, tags))
    written = []
    for (wkt, res_x, _), members in groups.items():
        suffix = ""
        if len(groups) > 1:
            epsg = rasterio.crs.CRS.from_wkt(wkt).to_epsg()
            suffix = f"_{epsg or abs(hash(wkt)) % 10**6}_{res_x:g}m"
        vrt = folder / f"{name}{suffix}.vrt"
        _write_vrt(vrt, wkt, members, pca)
        written.append(vrt)
    return written


def _write_vrt(vrt: Path, wkt: str, members: list, pca: PCAProjection | None) -> None:
    """A mosaic VRT of same-grid rasters (the later one wins where valid pixels overlap), with the GAIR tags and
    band names of the rasters and their PCA sidecar beside it, so it opens as an embedding raster itself.

    int8 rasters make an Int8 VRT, which needs GDAL >= 3.7 to open (rasterio's wheels have it; a QGIS on an older
    GDAL shows the tiles, not the mosaic): GDAL before 3.7 reads the tiles as unsigned bytes, and GDAL 3.7+ would
    clamp Int8 tiles into a Byte VRT, so no one VRT serves both."""
    t0 = members[0][3]
    res_x, res_y = t0.a, -t0.e
    x0 = min(m[3].c for m in members)
    y1 = max(m[3].f for m in members)
    x1 = max(m[3].c + m[1] * res_x for m in members)
    y0 = min(m[3].f - m[2] * res_y for m in members)
    width, height = round((x1 - x0) / res_x), round((y1 - y0) / res_y)
    _, _, _, _, count, dtype, nodata, (block_y, block_x), descriptions, tags = members[0]
    vrt_type = {"int8": "Int8", "float32": "Float32", "uint8": "Byte", "int16": "Int16"}[dtype]
    nodata_text = "nan" if nodata is None or np.isnan(nodata) else repr(int(nodata) if dtype != "float32" else nodata)
    meta = {k: v for k, v in tags.items() if k not in PER_INPUT_TAGS}
    meta["GAIR_PCA"] = pca_sidecar_path(vrt).name if pca is not None else ""
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
             f'  <SRS dataAxisToSRSAxisMapping="1,2">{escape(wkt)}</SRS>',
             f"  <GeoTransform>{x0!r}, {res_x!r}, 0.0, {y1!r}, 0.0, {-res_y!r}</GeoTransform>",
             "  <Metadata>", *[f"    <MDI key={quoteattr(k)}>{escape(v)}</MDI>" for k, v in sorted(meta.items())],
             "  </Metadata>"]
    for band in range(1, count + 1):
        lines += [f'  <VRTRasterBand dataType="{vrt_type}" band="{band}">',
                  f"    <Description>{escape(descriptions[band - 1] or '')}</Description>",
                  f"    <NoDataValue>{nodata_text}</NoDataValue>"]
        if vrt_type == "Byte":  # GDAL < 3.7 (no Int8 type): int8 tiles are signed bytes, and so is the mosaic
            lines.append('    <Metadata domain="IMAGE_STRUCTURE"><MDI key="PIXELTYPE">SIGNEDBYTE</MDI></Metadata>')
        for path, w, h, t, *_ in members:
            xoff, yoff = (t.c - x0) / res_x, (y1 - t.f) / res_y
            lines += ["    <ComplexSource>",
                      f'      <SourceFilename relativeToVRT="1">{escape(os.path.relpath(path, vrt.parent))}'
                      "</SourceFilename>",
                      f"      <SourceBand>{band}</SourceBand>",
                      f'      <SourceProperties RasterXSize="{w}" RasterYSize="{h}" DataType="{vrt_type}" '
                      f'BlockXSize="{block_x}" BlockYSize="{block_y}" />',
                      f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}" />',
                      f'      <DstRect xOff="{xoff:.10g}" yOff="{yoff:.10g}" xSize="{w}" ySize="{h}" />',
                      f"      <NODATA>{nodata_text}</NODATA>",
                      "    </ComplexSource>"]
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>\n")
    if pca is not None:
        pca.save(pca_sidecar_path(vrt))
    else:
        pca_sidecar_path(vrt).unlink(missing_ok=True)
    with atomic_path(vrt, ".vrt") as tmp:
        Path(tmp).write_text("\n".join(lines))
