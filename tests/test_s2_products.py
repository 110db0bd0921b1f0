"""Sentinel-2 products as users have them: .SAFE folders, their zips, band folders and band files -> the same 10-band
stack as one built by hand; the product's radiometric offset; SCL cloud masking; clear errors for bad inputs.

Products are small synthetic ones in the real layout (GRANULE/*/IMG_DATA/R10m|R20m/*_B02_10m.jp2 ...) with real JPEG
2000 band files (GDAL's JP2OpenJPEG driver, lossless) and a real-looking MTD_MSIL2A.xml.
"""
from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

import engine
from engine import GAIRError
from engine.cli.main import main
from engine.config import S2_BANDS
from engine.pipeline import embed_raster
from engine.pipeline.products import CLOUD_CLASSES, find_stack, parse_product_metadata
from engine.pipeline.source import SourceRaster

from .cli_helpers import cli_fails

SIZE = 128  # 10 m pixels a side; 20 m bands are 64
CRS = "EPSG:32633"
X0, Y0 = 300000.0, 5000000.0
TILE, SENSED = "T33UUP", "20240501T100031"
TEN_M = ("B2", "B3", "B4", "B8")
ALL_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
HAS_JP2 = rasterio.drivers.raster_driver_extensions().get("jp2") == "JP2OpenJPEG"
EXT = ".jp2" if HAS_JP2 else ".tif"


def file_band(band: str) -> str:
    """'B2' -> 'B02', 'B8A' -> 'B8A' (the product's spelling)."""
    return band if band.endswith("A") else f"B{int(band[1:]):02d}"


def ground(seed: int = 0) -> dict[str, np.ndarray]:
    """Per model band, uint16 DN at native resolution (10 m bands SIZE a side, 20 m bands SIZE / 2)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, band in enumerate(S2_BANDS):
        side = SIZE if band in TEN_M else SIZE // 2
        out[band] = rng.integers(200 + 100 * k, 3000 + 100 * k, size=(side, side)).astype(np.uint16)
    return out


def hand_stack(bands: dict[str, np.ndarray]) -> np.ndarray:
    """(10, SIZE, SIZE) float32: 20 m bands repeated 2 x 2 (nearest neighbour), in the model's band order."""
    return np.stack([b if b.shape[0] == SIZE else np.repeat(np.repeat(b, 2, 0), 2, 1)
                     for b in (bands[n] for n in S2_BANDS)]).astype(np.float32)


def write_band(path: Path, data: np.ndarray, res: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(width=data.shape[1], height=data.shape[0], count=1, dtype=data.dtype.name, crs=CRS,
                   transform=from_origin(X0, Y0, res, res))
    if path.suffix == ".jp2":
        profile.update(driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES")
    else:
        profile.update(driver="GTiff")
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data, 1)
    return path


def mtd_xml(level: str, baseline: str, offsets: bool, images: tuple[str, ...] = ()) -> str:
    """A trimmed MTD_MSIL2A.xml / MTD_MSIL1C.xml with the elements GAIR reads, in their real places, and the granule's
    image list that GDAL's SENTINEL2 driver (QGIS's product layers) reads."""
    tag, offset_tag = ("Level-2A_User_Product", "BOA_ADD_OFFSET") if level == "L2A" else (
        "Level-1C_User_Product", "RADIO_ADD_OFFSET")
    spectral = "".join(f'<Spectral_Information bandId="{i}" physicalBand="{b}"><RESOLUTION>10</RESOLUTION>'
                       "</Spectral_Information>" for i, b in enumerate(ALL_BANDS))
    offset_list = ""
    if offsets:
        values = "".join(f'<{offset_tag} band_id="{i}">-1000</{offset_tag}>' for i in range(13))
        offset_list = (f"<BOA_ADD_OFFSET_VALUES_LIST>{values}</BOA_ADD_OFFSET_VALUES_LIST>" if level == "L2A"
                       else f"<Radiometric_Offset_List>{values}</Radiometric_Offset_List>")
    image_files = "".join(f"<IMAGE_FILE>{image}</IMAGE_FILE>" for image in images)
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:{tag} xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-{level[1:]}.xsd">
  <n1:General_Info><Product_Info>
    <PRODUCT_START_TIME>2024-05-01T10:00:31.024Z</PRODUCT_START_TIME>
    <PROCESSING_LEVEL>Level-{level[1:]}</PROCESSING_LEVEL>
    <PRODUCT_TYPE>S2MSI{level[1:]}</PRODUCT_TYPE>
    <PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
    <Product_Organisation><Granule_List>
      <Granule datastripIdentifier="DS" granuleIdentifier="G" imageFormat="JPEG2000">{image_files}</Granule>
    </Granule_List></Product_Organisation>
  </Product_Info>
  <Product_Image_Characteristics>
    <Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT><SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX>
    </Special_Values>
    <QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>
    </QUANTIFICATION_VALUES_LIST>
    {offset_list}
    <Spectral_Information_List>{spectral}</Spectral_Information_List>
  </Product_Image_Characteristics></n1:General_Info>
</n1:{tag}>
"""


def make_safe(folder: Path, bands: dict[str, np.ndarray], baseline: str = "05.10", offsets: bool = True,
              level: str = "L2A", scl: np.ndarray | None = None, drop: tuple[str, ...] = ()) -> Path:
    """A .SAFE folder in the real layout: L2A bands under R10m/R20m (+ a coarser duplicate and AOT/TCI decoys),
    L1C bands directly in IMG_DATA; MTD at the root; QI_DATA masks that must not be taken for bands."""
    number = baseline.replace(".", "")
    name = f"S2B_MSI{level}_{SENSED}_N{number}_R122_{TILE}_20240501T120000.SAFE"
    safe = folder / name
    granule = safe / "GRANULE" / f"{level}_{TILE}_A037000_{SENSED}"
    img = granule / "IMG_DATA"
    for band, data in bands.items():
        if band in drop:
            continue
        res = 10 if data.shape[0] == SIZE else 20
        if level == "L2A":
            write_band(img / f"R{res}m" / f"{TILE}_{SENSED}_{file_band(band)}_{res}m{EXT}", data, res)
        else:
            write_band(img / f"{TILE}_{SENSED}_{file_band(band)}{EXT}", data, res)
    if level == "L2A":
        coarse = bands["B2"][::2, ::2] + np.uint16(7)  # the 20 m B02 of R20m: never the one to use
        write_band(img / "R20m" / f"{TILE}_{SENSED}_B02_20m{EXT}", coarse, 20)
        write_band(img / "R10m" / f"{TILE}_{SENSED}_AOT_10m{EXT}", np.ones((SIZE, SIZE), np.uint16), 10)
        if scl is not None:
            write_band(img / "R20m" / f"{TILE}_{SENSED}_SCL_20m{EXT}", scl, 20)
    write_band(granule / "QI_DATA" / f"MSK_DETFOO_B02{EXT}", np.ones((SIZE, SIZE), np.uint8), 10)
    images = tuple(sorted(p.relative_to(safe).with_suffix("").as_posix() for p in img.rglob(f"*{EXT}")))
    (safe / f"MTD_MSI{level}.xml").write_text(mtd_xml(level, baseline, offsets, images))
    (safe / "manifest.safe").write_text("<xfdu/>")
    return safe


def zip_of(safe: Path) -> Path:
    path = safe.parent / (safe.stem + ".zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for file in sorted(safe.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(safe.parent).as_posix())
    return path


def read_all(source, **kwargs) -> np.ndarray:
    with SourceRaster(source, engine.GAIRConfig.tiny(), **kwargs) as src:
        assert (src.width, src.height) == (SIZE, SIZE)
        assert src.transform == from_origin(X0, Y0, 10, 10)
        data, valid = src.read(Window(0, 0, SIZE, SIZE))
        assert valid.all()
        return data


@pytest.fixture(scope="module")
def bands() -> dict[str, np.ndarray]:
    return ground()


@pytest.fixture(scope="module")
def safe_old(tmp_path_factory, bands) -> Path:
    """Baseline 03.01: no offset list, values already reflectance x 10000."""
    return make_safe(tmp_path_factory.mktemp("old"), bands, baseline="03.01", offsets=False)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return engine.GAIRModel(engine.GAIRConfig.tiny()).eval()


def test_the_test_products_use_real_jpeg2000_when_gdal_has_it():
    assert HAS_JP2, "rasterio's GDAL lacks JP2OpenJPEG: the products fall back to .tif band files"


def test_safe_folder_zip_metadata_and_subdataset_give_the_hand_built_stack(safe_old, bands):
    expected = hand_stack(bands)
    np.testing.assert_array_equal(read_all(safe_old), expected)
    np.testing.assert_array_equal(read_all(zip_of(safe_old)), expected)
    np.testing.assert_array_equal(read_all(safe_old / "MTD_MSIL2A.xml"), expected)
    # what QGIS gives as the source of a product layer opened with GDAL's SENTINEL2 driver
    np.testing.assert_array_equal(read_all(f"SENTINEL2_L2A:{safe_old}/MTD_MSIL2A.xml:10m:EPSG_32633"), expected)
    inside = f"/vsizip/{zip_of(safe_old)}/{safe_old.name}/MTD_MSIL2A.xml"
    np.testing.assert_array_equal(read_all(f"SENTINEL2_L2A:{inside}:20m:EPSG_32633"), expected)
    with SourceRaster(f"SENTINEL2_L2A:{inside}:20m:EPSG_32633", engine.GAIRConfig.tiny()) as src:
        assert src.path == str(zip_of(safe_old))  # messages and the output's GAIR_SOURCE name the product


def test_folder_and_list_of_band_files_give_the_hand_built_stack(tmp_path, bands):
    folder = tmp_path / "bands"
    paths = [write_band(folder / f"{file_band(b)}.tif", d, 10 if d.shape[0] == SIZE else 20) for b, d in bands.items()]
    (folder / "notes.txt").write_text("not a band")
    expected = hand_stack(bands)
    np.testing.assert_array_equal(read_all(folder, radiometric_offset=0), expected)
    np.testing.assert_array_equal(read_all([str(p) for p in reversed(paths)], radiometric_offset=0), expected)


def test_an_l2a_img_data_folder_reads_its_resolution_subfolders(safe_old, bands):
    img_data = next((safe_old / "GRANULE").iterdir()) / "IMG_DATA"
    np.testing.assert_array_equal(read_all(img_data, radiometric_offset=0), hand_stack(bands))


def test_a_product_of_several_granules_is_refused(tmp_path, safe_old):
    several = tmp_path / safe_old.name
    shutil.copytree(safe_old, several)
    granule = next((several / "GRANULE").iterdir())
    shutil.copytree(granule, granule.with_name(granule.name.replace("T33UUP", "T33UUQ")))
    with pytest.raises(GAIRError, match="holds 2 granules"):
        SourceRaster(several, engine.GAIRConfig.tiny())


def test_l1c_layout_reads_its_radio_offset(tmp_path, bands):
    raw = {b: d + np.uint16(1000) for b, d in bands.items()}
    safe = make_safe(tmp_path, raw, baseline="05.09", level="L1C")
    spec = find_stack(safe)
    assert (spec.level, spec.baseline) == ("L1C", "05.09")
    np.testing.assert_array_equal(read_all(safe), hand_stack(bands))


def test_offset_applied_from_baseline_04_so_the_same_ground_gives_the_same_input(tmp_path, safe_old, bands):
    """A baseline-05.10 product stores DN + 1000 for the same reflectance: read, it equals the 03.01 product's, and
    values below the offset clip at 0 as the harmonized collections store them."""
    raw = {b: d + np.uint16(1000) for b, d in bands.items()}
    raw["B2"][:4, :4] = 900  # darker than the offset: reflectance below 0
    new = make_safe(tmp_path, raw, baseline="05.10")
    assert parse_product_metadata((new / "MTD_MSIL2A.xml").read_bytes(), "x")[1:] == (
        "05.10", dict.fromkeys(ALL_BANDS, -1000.0))
    expected = hand_stack(bands)
    expected[0, :4, :4] = 0
    np.testing.assert_array_equal(read_all(new), expected)
    old = read_all(safe_old)
    np.testing.assert_array_equal(read_all(new)[:, 4:, 4:], old[:, 4:, 4:])
    # without the offset the same ground would reach the model 1000 DN brighter
    assert np.all(read_all(new, radiometric_offset=0)[:, 4:, 4:] == old[:, 4:, 4:] + 1000)


def write_stack(path: Path, stack: np.ndarray, **tags) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=SIZE, height=SIZE, count=10, dtype="uint16", crs=CRS,
                       transform=from_origin(X0, Y0, 10, 10), nodata=0) as ds:
        ds.write(stack.astype(np.uint16))
        for i, band in enumerate(S2_BANDS):
            ds.set_band_description(i + 1, band)
        ds.update_tags(**tags)
    return path


def test_stacked_raster_offset_is_stated_or_warned(tmp_path, bands, caplog):
    stack = hand_stack(bands) + 1000
    path = write_stack(tmp_path / "stack.tif", stack, PROCESSING_BASELINE="05.10")
    with caplog.at_level(logging.WARNING, logger="engine.pipeline"):
        np.testing.assert_array_equal(read_all(path), stack)  # not known: used as it is, with a warning
    assert any("--radiometric-offset -1000" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="engine.pipeline"):
        np.testing.assert_array_equal(read_all(path, radiometric_offset=-1000), hand_stack(bands))
        # blue values below 1000 cannot carry the offset (they would be negative reflectance): known, no warning
        plain = write_stack(tmp_path / "plain.tif", hand_stack(bands), PROCESSING_BASELINE="05.10")
        np.testing.assert_array_equal(read_all(plain), hand_stack(bands))
    assert not caplog.records


def test_reference_samples_are_harmonized_so_no_offset_and_no_warning(samples_dir, caplog):
    with caplog.at_level(logging.DEBUG, logger="engine.pipeline"):
        with SourceRaster(samples_dir / "tokyo_rs.tif", engine.GAIRConfig()) as src:
            assert src.offsets is None
    assert any("harmonized" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_product_embeds_as_its_hand_built_stack(tmp_path, tiny_model, safe_old, bands):
    stack = write_stack(tmp_path / "stack.tif", hand_stack(bands))
    kwargs = dict(dtype="float32", dims=0, quicklook=False, overlap=0.25)
    embed_raster(stack, tmp_path / "a.tif", tiny_model, radiometric_offset=0, **kwargs)
    embed_raster(zip_of(safe_old), tmp_path / "b.tif", tiny_model, **kwargs)
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert a.transform == b.transform and a.crs == b.crs
        np.testing.assert_array_equal(a.read(), b.read())
        assert b.tags()["GAIR_SOURCE"] == safe_old.stem + ".zip"


def test_mask_clouds_masks_the_scl_classes_nearest_neighbour(tmp_path, tiny_model, bands):
    scl = np.full((SIZE // 2, SIZE // 2), 4, np.uint8)  # vegetation
    classes = (*CLOUD_CLASSES, 2, 5, 6, 7)
    for k, value in enumerate(classes):  # one 3 x 5 patch of each class, masked or not
        scl[3 + 5 * (k // 5): 6 + 5 * (k // 5), 2 + 7 * (k % 5): 7 + 7 * (k % 5)] = value
    safe = make_safe(tmp_path, bands, baseline="03.01", offsets=False, scl=scl)
    kwargs = dict(dtype="float32", dims=0, quicklook=False, overlap=0.25)
    embed_raster(safe, tmp_path / "clear.tif", tiny_model, **kwargs)
    embed_raster(safe, tmp_path / "masked.tif", tiny_model, mask_clouds=True, **kwargs)
    with rasterio.open(tmp_path / "clear.tif") as a, rasterio.open(tmp_path / "masked.tif") as b:
        clear, masked = a.read(), b.read()
    cloudy = np.repeat(np.repeat(np.isin(scl, CLOUD_CLASSES), 2, 0), 2, 1)
    assert cloudy.sum() == 7 * 4 * 15
    assert np.isfinite(clear).all()
    np.testing.assert_array_equal(np.isnan(masked).all(axis=0), cloudy)
    np.testing.assert_array_equal(masked[:, ~cloudy], clear[:, ~cloudy])  # the crops still read the cloudy pixels


def test_mask_clouds_without_scl_and_bands_with_a_product_are_clear_errors(tmp_path, safe_old, samples_dir):
    with pytest.raises(GAIRError, match=r"SCL.*--mask-clouds"):
        SourceRaster(safe_old, engine.GAIRConfig.tiny(), mask_clouds=True)
    with pytest.raises(GAIRError, match=r"no SCL band.*--mask-clouds"):
        SourceRaster(samples_dir / "tokyo_rs.tif", engine.GAIRConfig(), mask_clouds=True)
    with pytest.raises(GAIRError, match="drop --bands"):
        SourceRaster(safe_old, engine.GAIRConfig.tiny(), bands="2,3,4,5,6,7,8,9,10,11")


def test_missing_band_names_the_band_and_the_fix(tmp_path, bands):
    safe = make_safe(tmp_path / "p", bands, drop=("B11",))
    for source in (safe, zip_of(safe)):
        with pytest.raises(GAIRError, match=r"no file for band B11 .*Add the missing band file") as info:
            SourceRaster(source, engine.GAIRConfig.tiny())
        assert "\n" not in str(info.value)
    folder = tmp_path / "f"
    for band, data in bands.items():
        if band not in ("B8A", "B12"):
            write_band(folder / f"{TILE}_{SENSED}_{file_band(band)}.tif", data, 10 if data.shape[0] == SIZE else 20)
    with pytest.raises(GAIRError, match=r"no file for band B8A, B12"):
        SourceRaster(folder, engine.GAIRConfig.tiny())


def test_unknown_layouts_are_clear_errors(tmp_path, safe_old):
    empty = tmp_path / "docs"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(GAIRError, match="neither a Sentinel-2 product .* nor band files"):
        SourceRaster(empty, engine.GAIRConfig.tiny())
    not_product = tmp_path / "photos.zip"
    with zipfile.ZipFile(not_product, "w") as archive:
        archive.writestr("a.jpg", b"jpeg")
    with pytest.raises(GAIRError, match="not a Sentinel-2 product zip"):
        SourceRaster(not_product, engine.GAIRConfig.tiny())
    broken = tmp_path / "S2B_MSIL2A_X.SAFE"
    shutil.copytree(safe_old, broken)
    (broken / "MTD_MSIL2A.xml").unlink()
    with pytest.raises(GAIRError, match="no MTD_MSIL2A.xml"):
        SourceRaster(broken, engine.GAIRConfig.tiny())
    (tmp_path / "B02.tif").write_text("x")
    (tmp_path / "B03.tif").write_text("x")
    with pytest.raises(GAIRError, match="not the single-band files of one scene"):
        SourceRaster([safe_old, tmp_path / "B02.tif"], engine.GAIRConfig.tiny())


def test_band_file_names_sensed_since_2022_carry_the_offset(tmp_path, bands):
    raw = {b: d + np.uint16(1000) for b, d in bands.items()}
    folder = tmp_path / "sac"
    for band, data in raw.items():
        res = 10 if data.shape[0] == SIZE else 20
        write_band(folder / f"{TILE}_{SENSED}_{file_band(band)}_{res}m.tif", data, res)
    np.testing.assert_array_equal(read_all(folder), hand_stack(bands))


def test_cli_embeds_a_product_and_band_files(tmp_path, tiny_model, bands, capsys):
    bundle = engine.save_bundle(tiny_model, tmp_path / "tiny")
    safe = make_safe(tmp_path / "p", bands, baseline="03.01", offsets=False)
    files = sorted(str(p) for p in (safe / "GRANULE").rglob(f"*m{EXT}") if "_AOT_" not in p.name
                   and "_B02_20m" not in p.name)
    common = ["--model", str(bundle), "--dims", "0", "--dtype", "float32", "--no-quicklook", "--quiet"]
    assert main(["embed-raster", str(safe), str(tmp_path / "a.tif"), *common]) == 0
    assert main(["embed-raster", *files, str(tmp_path / "b.tif"), *common,
                                 "--radiometric-offset", "0"]) == 0
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
    cli_fails(capsys, ["embed-raster", safe, tmp_path / "c.tif", "--model", bundle, "--mask-clouds"],
              "SCL", "--mask-clouds")
