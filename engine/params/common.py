"""Parameters several engine operations share (model choice, seeds, bands, overlap, layers, training), so each is
defined once."""
from __future__ import annotations

from .definitions import BACKENDS, Param

# ---- parameters several operations share ---------------------------------------------------------------------
MODEL = Param("model", "model", None, optional=True, advanced=True, key="MODEL",
              label="Model (empty: the one in GAIR settings)",
              help="GAIR model: the official checkpoint (.pth), a bundle folder or an ONNX export "
                   "(default: $GAIR_CHECKPOINT, else the one in the plugin settings or the hub)")
BACKEND = Param("backend", "choice", "auto", choices=BACKENDS, toolbox=False,
                help="torch, onnx (onnxruntime only), onnx-int8 (an export's int8 encoders: CPU, ~2x faster, cosine "
                     "~0.9998 to float32, a space of its own) or auto (ONNX exports -> onnx, else torch)")
DEVICE = Param("device", "str", "auto", toolbox=False, pattern=r"auto|cpu|mps|cuda(:\d+)?",
               help="auto, cpu, cuda or cuda:N")
SEED = Param("seed", "int", 0, minimum=0, advanced=True, label="Random seed", help="same seed, same result")
BLOCK_SIZE = Param("block_size", "int", None, optional=True, minimum=1, toolbox=False,
                   help="pixels per block side (a multiple of the raster's tiles)")
BANDS = Param("bands", "str", None, optional=True, advanced=True, label="Band mapping (empty: from band names)",
              help="band mapping when descriptions are missing or wrong: one raster band number per model band "
                   "(2,3,4,5,6,7,8,9,11,12) or one S2 name per raster band (B1,B2,...; - to ignore)")
# embed-raster's crop overlap: crops abut on the token lattice (pipeline.tiling), each pixel encoded ~1.04 times on a
# whole tile; with official-size weights the seam figure is 1.1 and the cosine to a 0.75-overlap field 0.9998
# (README, "Seamless rasters"): overlap buys little, at 1.2x (1/12), 1.8x (0.25) or 4x (0.5) the encoder work.
RASTER_OVERLAP = 0.0
# Crops with less valid data are not encoded. With abutting crops their valid pixels then have no embedding: 9 % of
# the valid pixels of a scene with a swath-edge nodata wedge at 0.5 (tiny model, 512 px), none at 0. The model sees
# nodata as zeros, as the reference does; raise it to keep such context out at the cost of those pixels.
MIN_VALID = 0.0
RASTER_OVERLAP_PARAM = Param("overlap", "float", RASTER_OVERLAP, minimum=0.0, maximum=0.9, advanced=True,
                             label="Overlap of neighbouring crops (fraction)",
                             help="fraction of a crop shared with its neighbour, in whole token cells (1/12 of a "
                                  "crop): more averages more context per cell, and is slower (0: ~1.04 encodes per "
                                  "pixel on a whole tile, 0.25: 1.8, 0.5: 4)")
LAYER_NAME = Param("layer_name", "str", None, optional=True, toolbox=False,
                   help="name of the output layer (default: the input layer's)")
SPACE = Param("space", "raster", None, optional=True, advanced=True, key="SPACE",
              label="Same space as embedding raster (optional)",
              help="embedding raster whose PCA the vectors go through, so they compare with its pixels")
CONFIDENCE = Param("confidence_path", "raster_out", None, optional=True, flag="--confidence", key="CONFIDENCE",
                   label="Confidence (classifiers)", help="confidence raster (top class probability; classifiers)")
EMBEDDING_RASTER = Param("raster_path", "raster", positional=True, flag="raster", key="INPUT",
                         label="Embedding raster", help="embedding raster (GeoTIFF written by embed-raster)")


def _batch_size(default: int | None, what: str) -> Param:
    return Param("batch_size", "int", default, optional=default is None, minimum=1, toolbox=False,
                 help=f"{what} per model call" + ("" if default is not None else " (default: 8 on CPU, 32 on GPU)"))


_MODEL_PARAMS = (MODEL, BACKEND, DEVICE)


def _layer_in_out(label: str, help_text: str, output_label: str) -> tuple[Param, Param]:
    """The input layer and output GeoPackage of a per-feature embedding operation."""
    return (Param("layer", "vector", positional=True, key="INPUT", label=label, help=help_text),
            Param("output", "vector_out", positional=True, key="OUTPUT", label=output_label, help="output GeoPackage"))


def _training(task: str, methods: tuple[str, ...], default: str, field_help: str) -> tuple[Param, ...]:
    return (
        EMBEDDING_RASTER,
        Param("labels_path", "vector", positional=True, flag="labels", key="LABELS",
              label="Labelled layer (points or polygons)",
              help="labelled points or polygons (GeoPackage, GeoJSON, shapefile; any CRS)"),
        Param(f"{task}_field", "field", key="FIELD", flag="--field", label=field_help, help=field_help),
        Param("model_path", "file_out", key="MODEL_OUTPUT", flag="--model-output", label="Trained model",
              help="where to save the fitted model (.skops; holds no pickle)"),
        Param("method", "choice", default, choices=methods, label="Method", help="learning method"),
        Param("folds", "int", 5, minimum=2, maximum=20, label="Cross-validation folds",
              help="k of the k-fold cross-validation (grouped by feature)"),
        Param("cv_block_km", "float", None, optional=True, minimum=0.0, advanced=True, flag="--cv-block-km",
              label="Spatial CV block size, km (empty: the embeddings' autocorrelation range)",
              help="side of the square blocks of the spatial cross-validation in km (default: the embeddings' "
                   "autocorrelation range; 0: no spatial cross-validation)"),
        Param("learning_curve", "bool", True, advanced=True, label="Learning curve in the report",
              help="refit on 10/25/50/100% of the labels for the report's learning curve"),
        SEED,
        Param("layer", "str", None, optional=True, toolbox=False, help="layer name inside the labels file"),
        Param("report_paths", "file_out", (), optional=True, repeat=True, flag="--report", key="REPORT",
              label="Cross-validation report", help="report file: .json, .html or .txt (repeatable)"),
        Param("max_pixels_per_feature", "int", 1000, minimum=1, advanced=True, flag="--max-pixels", key="MAX_PIXELS",
              label="Most pixels sampled per polygon", help="most pixels sampled per labelled polygon"),
        Param("output_path", "raster_out", None, optional=True, flag="--output", key="OUTPUT",
              label="Classes" if task == "class" else "Prediction",
              help="apply to the raster and write the " + ("class" if task == "class" else "prediction") + " raster"),
    )
