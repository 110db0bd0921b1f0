"""Band mapping: descriptions in many spellings, 10/12/13-band layouts by identity, --bands, clear errors."""
from __future__ import annotations

import pytest

from engine import S2_BANDS, GAIRError
from engine.pipeline.bands import L1C_13, L2A_12, resolve_bands, s2_band_id

MODEL_FROM_L2A = [1, 2, 3, 4, 5, 6, 7, 8, 10, 11]


@pytest.mark.parametrize("text, band", [
    ("B2", "B2"), ("B02", "B2"), ("b8a", "B8A"), ("B08A", "B8A"), ("SR_B4", "B4"), ("B2 (490 nm)", "B2"),
    ("blue", "B2"), ("Red", "B4"), ("NIR", "B8"), ("nir08", "B8A"), ("swir16", "B11"), ("SWIR 2", "B12"),
    ("Red Edge 1", "B5"), ("cirrus", "B10"), ("Band 1", None), ("", None), (None, None), ("B13", None),
])
def test_band_names_are_read_tolerantly(text, band):
    assert s2_band_id(text) == band


def test_descriptions_map_by_identity_in_any_order():
    shuffled = list(reversed(L2A_12))
    picked = resolve_bands(shuffled, S2_BANDS)
    assert [shuffled[i] for i in picked] == list(S2_BANDS)


def test_layouts_by_count_pick_b11_b12_from_l1c():
    assert resolve_bands([None] * 12, S2_BANDS) == MODEL_FROM_L2A
    # the reference's positional pick (indices 10, 11) would take B10 and B11 from 13-band L1C
    assert [L1C_13[i] for i in resolve_bands([None] * 13, S2_BANDS)] == list(S2_BANDS)
    assert resolve_bands([""] * 10, S2_BANDS) == list(range(10))


def test_explicit_bands_as_numbers_or_names():
    assert resolve_bands([None] * 12, S2_BANDS, "2,3,4,5,6,7,8,9,11,12") == MODEL_FROM_L2A
    names = ",".join(["-", *S2_BANDS[:7], "-", *S2_BANDS[7:]])  # 12 bands, two ignored
    assert resolve_bands([None] * 12, S2_BANDS, names) == [1, 2, 3, 4, 5, 6, 7, 9, 10, 11]
    with pytest.raises(GAIRError, match="band numbers; the model needs one per band"):
        resolve_bands([None] * 12, S2_BANDS, "1,2,3")
    with pytest.raises(GAIRError, match=r"refers to band\(s\) \[13\]"):
        resolve_bands([None] * 12, S2_BANDS, "2,3,4,5,6,7,8,9,11,13")


def test_wrong_bands_error_names_found_and_expected():
    with pytest.raises(GAIRError) as info:
        resolve_bands(["B2", "B3", "B4", "B8"], S2_BANDS)
    text = str(info.value)
    assert "B2, B3, B4, B8" in text and "B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12" in text
    assert "missing B5, B6, B7, B8A, B11, B12" in text and "--bands" in text
    with pytest.raises(GAIRError, match="4 bands are which.*not 10, 12 \\(L2A\\) or 13"):
        resolve_bands(["Band 1", "Band 2", "Band 3", "Band 4"], S2_BANDS)
    with pytest.raises(GAIRError, match="name B2 twice"):
        resolve_bands(["B2", "blue", *S2_BANDS[1:]], S2_BANDS)
