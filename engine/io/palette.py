"""The class palette: colours of class values 1..n in class rasters (their GeoTIFF colour table) and in the QGIS
styles of class rasters and polygons. Standard library only, so the plugin colours polygons like the raster."""
from __future__ import annotations

import colorsys

# Well separated first colours (ColorBrewer Set1/Dark2-like), then golden-ratio hues.
BASE_COLOURS = ((228, 26, 28), (55, 126, 184), (77, 175, 74), (152, 78, 163), (255, 127, 0), (255, 255, 51),
                (166, 86, 40), (247, 129, 191), (27, 158, 119), (117, 112, 179), (102, 166, 30), (230, 171, 2))


def palette(n: int) -> list[tuple[int, int, int]]:
    """RGB of classes 1..n (the first twelve fixed, then golden-ratio hues)."""
    colours = list(BASE_COLOURS[:n])
    for i in range(len(colours), n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65 + 0.3 * (i % 2), 0.85)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours
