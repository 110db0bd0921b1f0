"""Which raster band is which Sentinel-2 band: by band description, else by band count, else an explicit list.

Mapping is by band identity, never by position alone: 13-band L1C has B10 (cirrus) where 12-band L2A has B11, so a
positional pick (the reference's indices 10 and 11) would feed B10/B11 instead of B11/B12 from L1C rasters.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import GAIRError

S2_ALL = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
L2A_12 = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
L1C_13 = S2_ALL
# Names used by STAC (eo:common_name), Sentinel-2 product specs and common GIS exports, lower case, spaces squeezed.
_COMMON_NAMES = {
    "coastal": "B1", "coastal aerosol": "B1", "aerosol": "B1", "aerosols": "B1", "ultra blue": "B1",
    "blue": "B2", "green": "B3", "red": "B4",
    "red edge 1": "B5", "rededge1": "B5", "re1": "B5", "vegetation red edge 1": "B5", "rededge071": "B5",
    "red edge 2": "B6", "rededge2": "B6", "re2": "B6", "vegetation red edge 2": "B6", "rededge075": "B6",
    "red edge 3": "B7", "rededge3": "B7", "re3": "B7", "vegetation red edge 3": "B7", "rededge078": "B7",
    "nir": "B8", "nir broad": "B8", "broad nir": "B8", "near infrared": "B8",
    "nir narrow": "B8A", "narrow nir": "B8A", "nir08": "B8A", "red edge 4": "B8A", "rededge4": "B8A", "re4": "B8A",
    "water vapour": "B9", "water vapor": "B9", "nir09": "B9",
    "cirrus": "B10", "swir cirrus": "B10",
    "swir1": "B11", "swir 1": "B11", "swir16": "B11", "swir 16": "B11",
    "swir2": "B12", "swir 2": "B12", "swir22": "B12", "swir 22": "B12",
}
_B_NAME = re.compile(r"(?:^|[^a-z0-9])b0?(\d{1,2})(a?)(?![a-z0-9])")


def s2_band_id(text: str | None) -> str | None:
    """'B2', 'B02', 'SR_B2', 'B2 (490 nm)', 'blue', 'swir16' ... -> 'B2'..'B12'/'B8A'; None when unrecognised."""
    if not text:
        return None
    low = " ".join(str(text).lower().replace("-", " ").split())
    match = _B_NAME.search(low)
    if match:
        name = f"B{int(match.group(1))}{match.group(2).upper()}"
        return name if name in S2_ALL else None
    for candidate in (low, low.split(" (")[0], low.replace(" ", "")):
        if candidate in _COMMON_NAMES:
            return _COMMON_NAMES[candidate]
    return None


def _fmt(names: Sequence[str | None]) -> str:
    return ", ".join(n or "?" for n in names)


def _map_by_names(found: Sequence[str | None], wanted: Sequence[str], source: str) -> list[int]:
    index: dict[str, int] = {}
    for i, name in enumerate(found):
        if name is None:
            continue
        if name in index:
            raise GAIRError(f"the raster's {source} name {name} twice (bands {index[name] + 1} and {i + 1}): "
                            f"{_fmt(found)}; fix the descriptions or pass --bands")
        index[name] = i
    missing = [w for w in wanted if w not in index]
    if missing:
        raise GAIRError(f"the raster has bands {_fmt(found)} (from its {source}) but the model needs "
                        f"{', '.join(wanted)}; missing {', '.join(missing)}. Give a Sentinel-2 L2A/L1C raster with "
                        "those bands, or pass --bands naming each raster band (e.g. --bands B2,B3,...) if the "
                        "descriptions are wrong")
    return [index[w] for w in wanted]


def resolve_bands(descriptions: Sequence[str | None], wanted: Sequence[str],
                  explicit: Sequence[str] | str | None = None) -> list[int]:
    """0-based raster band indices feeding the model's bands `wanted`, in the model's order.

    `explicit` (the CLI's --bands) is either one 1-based raster band number per model band ("2,3,4,...") or one
    Sentinel-2 name per raster band in raster order ("B1,B2,...", "-" for a band to ignore).
    """
    count = len(descriptions)
    if isinstance(explicit, str):
        explicit = [t for t in re.split(r"[,\s]+", explicit.strip()) if t]
    if explicit:
        tokens = [str(t).strip() for t in explicit]
        if all(t.isdigit() for t in tokens):
            numbers = [int(t) for t in tokens]
            if len(numbers) != len(wanted):
                raise GAIRError(f"--bands gives {len(numbers)} band numbers; the model needs one per band "
                                f"({', '.join(wanted)}), i.e. {len(wanted)}")
            bad = [n for n in numbers if not 1 <= n <= count]
            if bad:
                raise GAIRError(f"--bands refers to band(s) {bad} but the raster has bands 1..{count}")
            return [n - 1 for n in numbers]
        if len(tokens) != count:
            raise GAIRError(f"--bands names {len(tokens)} bands but the raster has {count}; name every raster band "
                            "in order (use - for bands to ignore), or give one band number per model band")
        names = [None if t in ("-", "_", "x") else s2_band_id(t) for t in tokens]
        unknown = [t for t, n in zip(tokens, names) if n is None and t not in ("-", "_", "x")]
        if unknown:
            raise GAIRError(f"--bands: {unknown} are not Sentinel-2 band names (B1..B12, B8A)")
        return _map_by_names(names, wanted, "--bands list")
    parsed = [s2_band_id(d) for d in descriptions]
    if any(parsed):
        return _map_by_names(parsed, wanted, "band descriptions")
    by_count = {len(wanted): tuple(wanted), 12: L2A_12, 13: L1C_13}
    if count in by_count:
        return _map_by_names(by_count[count], wanted, f"{count}-band layout")
    raise GAIRError(f"cannot tell which of the raster's {count} bands are which: its band descriptions "
                    f"({_fmt(descriptions)}) name no Sentinel-2 bands and {count} is not {len(wanted)}, 12 (L2A) or "
                    f"13 (L1C). The model needs {', '.join(wanted)}; pass --bands (e.g. --bands 2,3,4,5,6,7,8,9,11,12)")


def band_labels(dataset) -> list[str | None]:
    """Per-band label of an open rasterio dataset: the description, else a band tag such as NAME/BANDNAME."""
    labels = []
    for i in range(1, dataset.count + 1):
        label = dataset.descriptions[i - 1]
        if not s2_band_id(label):
            tags = {k.lower(): v for k, v in dataset.tags(i).items()}
            label = next((tags[k] for k in ("name", "bandname", "band_name", "common_name") if tags.get(k)), label)
        labels.append(label)
    return labels
