"""Sentinel-2 inputs as users have them -> one virtual stack of the model's bands on the 10 m grid.

Accepted: a product (`.SAFE` folder, its `.zip`, its `MTD_MSIL2A.xml`/`MTD_MSIL1C.xml`, or the GDAL subdataset name
QGIS gives a product layer, `SENTINEL2_L2A:/path/MTD_MSIL2A.xml:10m:EPSG_32633`), a folder of single-band files
(`B02.tif`, `T33UUP_20240501T100031_B02_10m.jp2`, ...) or a list of such files. Bands are found by name, never by
position. The stack is a GDAL VRT written as XML (read by rasterio, so the rest of the pipeline is unchanged; no file
is written and GDAL's Python bindings, which may be another GDAL than rasterio's, are not needed).

Resampling: 20 m (and 60 m) bands go onto the 10 m grid by NEAREST neighbour. That is what the model was fed: the
reference's own Sentinel-2 crops (data/samples, exported from Earth Engine, which resamples by nearest neighbour)
show the 20 m bands as 2 x 2 blocks of equal pixels (50-62 % of neighbouring pixels equal, against 19-26 % in the
10 m bands), so bilinear or cubic would hand the model smoother textures than it learnt from. Nearest also keeps
every value a real measurement (no mixing across nodata or cloud edges).

Radiometry: see `radiometric_offset_of` and README "Sentinel-2 products". The model's fixed band statistics
(engine.config S2_MEAN/S2_STD) describe surface reflectance x 10000 with no offset: the scale of products with
processing baseline < 04.00 and of "harmonized" collections (Earth Engine's COPERNICUS/S2_SR_HARMONIZED, where the
reference samples come from: 1 % of the baseline-05.10 Tokyo sample's B5 and B12 pixels are below 45, impossible
with the +1000 offset still in). So a product's BOA_ADD_OFFSET / RADIO_ADD_OFFSET (-1000 from baseline 04.00) is
added, clipped at 0 as the harmonized collections store it: the same ground gives the same model input whatever the
baseline.
"""
from __future__ import annotations

import logging
import os
import re
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from html import escape
from pathlib import Path

from ..errors import GAIRError
from .bands import S2_ALL, s2_band_id

log = logging.getLogger(__name__)

# SCL classes that become nodata with mask_clouds: 0 no data, 1 saturated/defective, 3 cloud shadow, 8/9 cloud
# (medium/high probability), 10 thin cirrus, 11 snow/ice.
CLOUD_CLASSES = (0, 1, 3, 8, 9, 10, 11)
BAND_SUFFIXES = (".jp2", ".tif", ".tiff")
# Every product generated from this day on has processing baseline >= 04.00 (with the -1000 offset).
OFFSET_SINCE = date(2022, 1, 25)
DEFAULT_OFFSET = -1000.0
_MTD = re.compile(r"(?:^|/)(MTD_MSIL(1C|2A)|[^/]*MTD_SAFL(1C|2A)[^/]*)\.xml$", re.IGNORECASE)
_RES = re.compile(r"_(\d{2})m(?:\.|$)", re.IGNORECASE)
_SCL = re.compile(r"(?:^|[_.-])SCL(?:[_.-]|$)", re.IGNORECASE)
_SENSING = re.compile(r"(?:^|_)T\d{2}[A-Z]{3}_(\d{8})T\d{6}_", re.IGNORECASE)
_BASELINE_IN_NAME = re.compile(r"_N(\d{2})(\d{2})_")


@dataclass
class StackSpec:
    """What a product, folder or list of band files holds: one file per band, the offset and the cloud mask."""

    name: str  # what the user gave, for messages and tags
    path: str  # the product, folder or (band files) their folder
    files: dict[str, str]  # band id ('B2'...) -> GDAL path of its file
    scl: str | None = None  # GDAL path of the L2A scene classification
    offsets: dict[str, float] | None = None  # per band id; None: not known
    offset_source: str = ""
    baseline: str | None = None
    level: str | None = None  # "L2A" / "L1C" when known
    nodata: dict[str, float | None] = field(default_factory=dict)


def _baseline_tuple(text: str | None) -> tuple[int, int] | None:
    match = re.match(r"\s*(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


# -- metadata --------------------------------------------------------------------------------------------------
def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_product_metadata(xml: bytes, name: str) -> tuple[str | None, str | None, dict[str, float] | None]:
    """(level, processing baseline, per-band offsets or None) from MTD_MSIL2A.xml / MTD_MSIL1C.xml."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise GAIRError(f"{name}: its metadata file is not valid XML ({exc}); download the product again") from exc
    level = "L2A" if "2A" in _local(root.tag) else "L1C" if "1C" in _local(root.tag) else None
    baseline = None
    band_names: dict[str, str] = {}
    offsets: dict[str, float] = {}
    for element in root.iter():
        tag = _local(element.tag)
        if tag == "PROCESSING_BASELINE" and element.text:
            baseline = element.text.strip()
        elif tag == "PROCESSING_LEVEL" and element.text and level is None:
            level = "L2A" if "2A" in element.text else "L1C" if "1C" in element.text else None
        elif tag == "Spectral_Information" and element.get("bandId") is not None:
            band_names[element.get("bandId")] = s2_band_id(element.get("physicalBand")) or ""
        elif tag in ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET") and element.text:
            offsets[element.get("band_id", "")] = float(element.text)
    by_band = {}
    for band_id, value in offsets.items():
        band = band_names.get(band_id) or (S2_ALL[int(band_id)] if band_id.isdigit() and int(band_id) < 13 else None)
        if band:
            by_band[band] = value
    return level, baseline, (by_band or None)


def _offsets_from(spec: StackSpec, level, baseline, offsets) -> None:
    """Offsets of a product: its metadata's list; else none before baseline 04.00; else unknown."""
    spec.level, spec.baseline = level or spec.level, baseline or spec.baseline
    key = "BOA_ADD_OFFSET" if spec.level == "L2A" else "RADIO_ADD_OFFSET"
    version = _baseline_tuple(spec.baseline)
    if offsets:
        spec.offsets, spec.offset_source = offsets, f"{key} of the product metadata (baseline {spec.baseline})"
    elif version is not None and version < (4, 0):
        spec.offsets = {}
        spec.offset_source = f"processing baseline {spec.baseline} (< 04.00: no offset)"
    elif version is not None:
        spec.offsets = dict.fromkeys(S2_ALL, DEFAULT_OFFSET)
        spec.offset_source = f"processing baseline {spec.baseline} (>= 04.00; no {key} list: the standard -1000)"


# -- finding band files ----------------------------------------------------------------------------------------
def _name_resolution(name: str) -> float:
    match = _RES.search(name)
    return float(match.group(1)) if match else 0.0


def _is_band_name(name: str) -> bool:
    return name.lower().endswith(BAND_SUFFIXES) and not name.upper().startswith("MSK_")


def _pick_bands(names: Sequence[tuple[str, str]], where: str) -> tuple[dict[str, str], str | None]:
    """(band id -> path, SCL path) from (file name, path) pairs: the finest resolution of each band."""
    chosen: dict[str, tuple[float, str, str]] = {}
    scl: tuple[float, str] | None = None
    for name, path in names:
        stem = name.rsplit(".", 1)[0]
        res = _name_resolution(name)
        if _SCL.search(stem):
            if scl is None or abs(res - 20) < abs(scl[0] - 20):  # the 20 m SCL is the native one
                scl = (res, path)
            continue
        band = s2_band_id(stem)
        if band is None:
            continue
        if band in chosen and chosen[band][0] == res:
            raise GAIRError(f"{where}: two files for band {band} ({chosen[band][1]} and {name}); keep one")
        if band not in chosen or res < chosen[band][0]:
            chosen[band] = (res, name, path)
    return {band: path for band, (_, _, path) in chosen.items()}, (scl[1] if scl else None)


def _product_members(members: Sequence[str], root: str) -> list[tuple[str, str]]:
    """(file name, member) of the band images of a product: GRANULE/<one granule>/IMG_DATA[/R10m..]/*."""
    images = [m for m in members if m.startswith(root) and "/IMG_DATA/" in m and _is_band_name(m.rsplit("/", 1)[-1])]
    granules = sorted({m[len(root):].split("/")[1] for m in images if m[len(root):].startswith("GRANULE/")})
    if len(granules) > 1:
        raise GAIRError(f"the product holds {len(granules)} granules ({', '.join(granules[:3])}...); GAIR embeds one "
                        "tile at a time: give each granule's IMG_DATA folder, or a single-tile product")
    return [(m.rsplit("/", 1)[-1], m) for m in images]


def _product_spec(path: Path, members: Sequence[str], mtd: str, read, gdal_path) -> StackSpec:
    name = path.name
    root = mtd.rsplit("/", 1)[0] + "/" if "/" in mtd else ""
    level, baseline, offsets = parse_product_metadata(read(mtd), name)
    pairs = [(file, gdal_path(member)) for file, member in _product_members(members, root)]
    if not pairs:
        raise GAIRError(f"{name}: no band images under GRANULE/*/IMG_DATA (the product layout is not recognised "
                        "or the product is incomplete); download the whole product again")
    files, scl = _pick_bands(pairs, name)
    spec = StackSpec(name, str(path), files, scl, level=level, nodata=dict.fromkeys(files, 0.0))
    match = _BASELINE_IN_NAME.search(Path(root.rstrip("/") or name).name)
    spec.baseline = match and f"{match.group(1)}.{match.group(2)}"
    _offsets_from(spec, level, baseline, offsets)
    return spec


def _safe_folder(folder: Path) -> StackSpec:
    members = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    mtd = next((m for m in members if "/" not in m and _MTD.search(m)), None)
    if mtd is None:
        raise GAIRError(f"{folder.name}: no MTD_MSIL2A.xml / MTD_MSIL1C.xml in it, so it is not a Sentinel-2 product "
                        "layout GAIR knows; give the .SAFE folder as downloaded, or a folder of band files")
    return _product_spec(folder, members, mtd, lambda m: (folder / m).read_bytes(), lambda m: str(folder / m))


def _safe_zip(path: Path) -> StackSpec:
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
            mtd = min((m for m in members if _MTD.search(m)), key=lambda m: m.count("/"), default=None)
            if mtd is None:
                raise GAIRError(f"{path.name} holds no MTD_MSIL2A.xml / MTD_MSIL1C.xml: not a Sentinel-2 product "
                                "zip; give the product as downloaded from the Copernicus Data Space")
            xml = archive.read(mtd)
    except (zipfile.BadZipFile, OSError) as exc:
        raise GAIRError(f"cannot read {path.name} as a zip ({exc}); download it again") from exc
    prefix = f"/vsizip/{path.resolve()}/"
    return _product_spec(path, members, mtd, lambda m: xml, lambda m: prefix + m)


def _band_files_spec(name: str, folder: Path, paths: Sequence[str]) -> StackSpec:
    files, scl = _pick_bands([(Path(p).name, str(p)) for p in paths], name)
    spec = StackSpec(name, str(folder), files, scl)
    sensed = [_SENSING.search(Path(p).name) for p in files.values()]
    days = {m.group(1) for m in sensed if m}
    if days and all(sensed):
        day = min(days)
        when = date(int(day[:4]), int(day[4:6]), int(day[6:]))
        if when >= OFFSET_SINCE:
            spec.offsets = dict.fromkeys(S2_ALL, DEFAULT_OFFSET)
            spec.offset_source = (f"product file names sensed {when} (every product since {OFFSET_SINCE} has "
                                  "processing baseline >= 04.00, offset -1000)")
    return spec


def _folder_spec(folder: Path) -> StackSpec:
    # an L2A IMG_DATA folder keeps its bands in R10m/R20m/R60m
    places = [folder, *(folder / r for r in ("R10m", "R20m", "R60m") if (folder / r).is_dir())]
    paths = sorted(str(p) for d in places for p in d.iterdir() if p.is_file() and _is_band_name(p.name))
    spec = _band_files_spec(folder.name, folder, paths)
    mtd = next((p for p in folder.iterdir() if _MTD.search(p.name)), None)
    if mtd is not None:
        _offsets_from(spec, *parse_product_metadata(mtd.read_bytes(), folder.name))
    return spec


def _subdataset_product(text: str) -> str | None:
    """The product path in a GDAL SENTINEL2 subdataset name (SENTINEL2_L2A:<path>/MTD_MSIL2A.xml:10m:EPSG_32633)."""
    match = re.match(r"SENTINEL2_L(?:1C|2A|1B|2AP)[^:]*:(.+?\.xml)(?::|$)", text, re.IGNORECASE)
    if not match:
        return None
    xml = match.group(1)
    zipped = re.match(r"/vsizip/+(.+?\.zip)/", xml, re.IGNORECASE)
    if zipped:
        return ("/" if xml.startswith("/vsizip//") else "") + zipped.group(1)
    return str(Path(xml).parent)


def find_stack(source) -> StackSpec | None:
    """The band files behind `source` (product, its zip or metadata, band folder, list of band files); None for an
    ordinary raster, which SourceRaster reads as it is."""
    if isinstance(source, (list, tuple)):
        paths = [str(p) for p in source]
        if len(paths) == 1:
            return find_stack(paths[0])
        if not is_band_set(paths):
            raise GAIRError(f"{len(paths)} inputs given but they are not the single-band files of one scene (each "
                            "named by its band: B02.tif, T33UUP_..._B02_10m.jp2, ...); give one raster or product, or "
                            "the band files of one scene")
        for p in paths:
            if not os.path.isfile(p):
                raise GAIRError(f"band file {p} does not exist")
        return _band_files_spec(f"{len(paths)} band files", Path(paths[0]).parent, paths)
    text = str(source)
    product = _subdataset_product(text)
    if product is not None:
        text = product
    path = Path(text)
    if path.is_file() and _MTD.search(path.name):
        path = path.parent
    if path.is_dir():
        if path.suffix.upper() == ".SAFE" or (path / "GRANULE").is_dir():
            return _safe_folder(path)
        if not any(p.is_file() and _is_band_name(p.name) for p in path.iterdir()) and not (path / "R10m").is_dir():
            raise GAIRError(f"folder {path.name} holds neither a Sentinel-2 product (MTD_MSIL2A.xml, GRANULE/) nor "
                            "band files (.jp2/.tif named by band: B02.tif, T33UUP_..._B02_10m.jp2); give the .SAFE "
                            "folder, its .zip, a folder of band files or a multi-band raster")
        return _folder_spec(path)
    if path.is_file() and path.suffix.lower() == ".zip":
        return _safe_zip(path)
    return None


def check_bands(spec: StackSpec, wanted: Sequence[str]) -> None:
    """Every band the model needs has a file; else one line naming the missing bands and the fix."""
    missing = [b for b in wanted if b not in spec.files]
    if missing:
        found = ", ".join(sorted(spec.files, key=S2_ALL.index)) or "none"
        raise GAIRError(f"{spec.name}: no file for band {', '.join(missing)} (found {found}); the model needs "
                        f"{', '.join(wanted)}. Add the missing band file(s) (named like B11.tif or "
                        "T33UUP_20240501T100031_B11_20m.jp2), or download the complete product")


def is_band_set(paths: Sequence[str]) -> bool:
    """Whether several files are the single bands of one scene (each names a distinct Sentinel-2 band or SCL)."""
    if len(paths) < 2:
        return False
    names = [Path(str(p)).name.rsplit(".", 1)[0] for p in paths]
    bands = [("SCL" if _SCL.search(n) else s2_band_id(n)) for n in names]
    return all(bands) and all(str(p).lower().endswith(BAND_SUFFIXES) for p in paths)


# -- the virtual stack -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _BandInfo:
    path: str
    width: int
    height: int
    transform: object
    crs: object
    dtype: str
    nodata: float | None


def _band_info(path: str, name: str) -> _BandInfo:
    import rasterio

    from ..io.read_errors import raster_read_errors

    with raster_read_errors(path, opening=True), rasterio.open(path) as ds:
        if ds.crs is None:
            raise GAIRError(f"{name}: band file {Path(path).name} has no CRS; assign one (gdal_edit.py -a_srs)")
        return _BandInfo(path, ds.width, ds.height, ds.transform, ds.crs, ds.dtypes[0], ds.nodata)


def _source_xml(info: _BandInfo, target, nodata: float | None) -> str:
    """A ComplexSource placing one band file on the target grid (nearest neighbour, nodata kept out)."""
    t = info.transform
    x0 = (t.c - target.c) / target.a
    y0 = (t.f - target.f) / target.e
    xs, ys = info.width * t.a / target.a, info.height * t.e / target.e
    nodata_xml = f"<NODATA>{nodata:g}</NODATA>" if nodata is not None else ""
    return (f'<ComplexSource resampling="nearest"><SourceFilename relativeToVRT="0">{escape(info.path)}'
            f'</SourceFilename><SourceBand>1</SourceBand>'
            f'<SrcRect xOff="0" yOff="0" xSize="{info.width}" ySize="{info.height}"/>'
            f'<DstRect xOff="{x0!r}" yOff="{y0!r}" xSize="{xs!r}" ySize="{ys!r}"/>{nodata_xml}</ComplexSource>')


def stack_vrt(spec: StackSpec, wanted: Sequence[str], with_scl: bool = False) -> str:
    """VRT XML of the bands `wanted` (in that order, then SCL when asked) on the grid of the finest band."""
    check_bands(spec, wanted)
    infos = {band: _band_info(spec.files[band], spec.name) for band in wanted}
    if with_scl:
        if spec.scl is None:
            raise GAIRError(f"{spec.name}: masking clouds needs the L2A scene classification (SCL) and none was "
                            "found; give an L2A product (.SAFE/.zip) or add its *_SCL_20m.jp2 to the band files, "
                            "or run without --mask-clouds")
        infos["SCL"] = _band_info(spec.scl, spec.name)
    grid = min((infos[b] for b in wanted), key=lambda i: i.transform.a)
    other = [b for b, i in infos.items() if i.crs != grid.crs]
    if other:
        raise GAIRError(f"{spec.name}: band(s) {', '.join(other)} are in another CRS than {Path(grid.path).name} "
                        f"({grid.crs}); give the bands of one tile (warp them to one CRS first)")
    dtypes = {infos[b].dtype for b in wanted}
    dtype = {"uint16": "UInt16", "int16": "Int16", "uint8": "Byte", "float32": "Float32"}.get(dtypes.pop(), "Float32")
    dtype = dtype if not dtypes else "Float32"
    t = grid.transform
    bands_xml = []
    for k, band in enumerate([*wanted, *(["SCL"] if with_scl else [])], start=1):
        info = infos[band]
        nodata = None if band == "SCL" else spec.nodata.get(band, info.nodata if info.nodata is not None else 0.0)
        band_type = "Byte" if band == "SCL" else dtype
        nodata_xml = f"<NoDataValue>{nodata:g}</NoDataValue>" if nodata is not None else ""
        bands_xml.append(f'<VRTRasterBand dataType="{band_type}" band="{k}"><Description>{band}</Description>'
                         f"{nodata_xml}{_source_xml(info, t, nodata)}</VRTRasterBand>")
    return (f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">'
            f"<SRS>{escape(grid.crs.to_wkt())}</SRS>"
            f"<GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>"
            + "".join(bands_xml) + "</VRTDataset>")


# -- radiometry of stacked rasters -----------------------------------------------------------------------------
def raster_offset(tags: dict[str, str]) -> tuple[float | None, str]:
    """(offset, why) of an ordinary raster from its metadata; None when it cannot be known.

    Earth Engine's harmonized collections (a LICENSE tag naming *_HARMONIZED, as the reference samples) have the
    offset removed even though they copy BOA_ADD_OFFSET into the metadata; a PROCESSING_BASELINE below 04.00 has
    none. Anything else (a raw product export of baseline >= 04.00, or a stack with no metadata) is not known.
    """
    upper = {k.upper(): str(v) for k, v in tags.items()}
    if any("HARMONIZED" in v.upper() for v in upper.values()):
        return 0.0, "a harmonized collection (offset already removed)"
    version = _baseline_tuple(upper.get("PROCESSING_BASELINE"))
    if version is not None and version < (4, 0):
        return 0.0, f"processing baseline {upper['PROCESSING_BASELINE']} (< 04.00: no offset)"
    return None, ""


def warn_unknown_offset(name: str) -> None:
    log.warning(f"{name}: its radiometric offset is not known; assuming its values are reflectance x 10000 with no "
                "offset (baselines < 04.00, harmonized collections). If they are raw DN of a product with processing "
                "baseline >= 04.00, set the radiometric offset to -1000 (--radiometric-offset -1000; 0 states there "
                "is none and silences this)")
