"""The operation over many rasters: embed_raster's options, into one folder with a VRT mosaic and one shared PCA."""
from __future__ import annotations

from .definitions import Operation, Param
from .operations import OPERATIONS


def _many_rasters(single: Operation) -> Operation:
    """embed_rasters: embed_raster's options over many inputs, into one folder with a VRT mosaic and one shared PCA."""
    return Operation(
        "embed_rasters", "Embed many rasters",
        "Embeds many Sentinel-2 rasters (tiles, dates) into one folder: one embedding raster per input, named after "
        "it, and a VRT mosaic of them all, in one embedding space: a single PCA fitted on a sample drawn from every "
        "input (or taken from --pca-from) reduces them all, so they can be compared, mosaicked and used together. "
        "Under torchrun the inputs are shared out over the ranks (and nodes). A re-run skips finished outputs and "
        "redoes unfinished ones.",
        "pipeline.mosaic:embed_rasters",
        (
            Param("inputs", "raster", None, optional=True, positional=True, repeat=True, flag="inputs", key="INPUTS",
                  label="Sentinel-2 rasters", help="input rasters (any number; or give --manifest)"),
            Param("output_dir", "folder_out", positional=True, flag="output_dir", key="OUTPUT",
                  label="Output folder", help="folder for one embedding raster per input and the VRT mosaic"),
            Param("manifest", "file", None, optional=True, key="MANIFEST", label="Manifest",
                  help="text file with one input path per line (relative to its folder; # comments)"),
            *[p for p in single.params if p.name not in ("input_path", "output_path")],
            Param("mosaic_name", "str", "mosaic", toolbox=False,
                  help="name of the VRT mosaic and the shared .pca.npz in the output folder"),
        ), summary="many rasters -> one embedding raster each + VRT mosaic, one shared PCA")


MOSAIC_OPERATIONS = (_many_rasters(OPERATIONS["embed_raster"]),)
