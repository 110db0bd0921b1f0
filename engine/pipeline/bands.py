"""Moved to engine.io.bands (standard library only, so the QGIS plugin can read band names without the pipeline)."""
from ..io.bands import L1C_13, L2A_12, S2_ALL, band_labels, resolve_bands, s2_band_id

__all__ = ["L1C_13", "L2A_12", "S2_ALL", "band_labels", "resolve_bands", "s2_band_id"]
