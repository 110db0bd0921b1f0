"""Every engine operation: the definitions the CLI, the toolbox, the map tool and the worker read (shared
parameters in common.py)."""
from __future__ import annotations

from ..config import NILI_CONVENTIONS
from .common import (  # noqa: F401 - RASTER_OVERLAP, EMBEDDING_RASTER... are read from here too
    _MODEL_PARAMS,
    BANDS,
    BLOCK_SIZE,
    CONFIDENCE,
    EMBEDDING_RASTER,
    LAYER_NAME,
    MIN_VALID,
    MODEL,
    RASTER_OVERLAP,
    RASTER_OVERLAP_PARAM,
    SEED,
    SPACE,
    _batch_size,
    _layer_in_out,
    _training,
)
from .definitions import (
    AGGREGATES,
    CLASSIFIERS,
    DEFAULT_DIMS,
    DTYPES,
    EXPERT_QUERY_MODES,
    FIELD_MODES,
    LOCATION_CLASSIFIERS,
    MIN_OPSET,
    POLYGON_MODES,
    REGRESSORS,
    Operation,
    Param,
)

OPERATIONS: dict[str, Operation] = {op.id: op for op in (
    Operation(
        "embed_raster", "Embed raster",
        "Turns a Sentinel-2 L2A raster (10 or 12 bands, any CRS) into a continuous GAIR embedding raster: one band "
        "per embedding dimension, on the input grid or at the pixel size you choose. Overlapping crops of the "
        "model's size are encoded and their implicit (NILI) fields blended, so there are no seams.\n\n"
        "The input may also be a Sentinel-2 product (.SAFE folder or .zip, or the product layer QGIS opens from "
        "it) or band files (B02.tif ...): the bands are stacked on the 10 m grid (20 m bands by nearest "
        "neighbour) and the product's radiometric offset (-1000 from baseline 04.00) is added. Mask clouds uses "
        "the L2A scene classification.\n\n"
        "Extent: embed only this part of the raster. Pixel size: output resolution in metres (empty: the "
        "input's). Dimensions: keep this many principal components (default 64; 0: all the model's dims, 768 for "
        "the official model). 64 components carry nearly all the variation that similarity, clustering and "
        "classifiers use, at 1/12 of the size: one Sentinel-2 tile (10980 x 10980 px) is ~31 GB in float32 at 64 "
        "dims but ~370 GB with all 768, and int8 (the default data type) stores a quarter of that. The log shows "
        "the estimated size before the work starts. A quicklook PNG of three principal components is written beside "
        "the output."
        "\n\nThe result feeds Cluster, Similarity search and Train classifier.",
        "pipeline.raster:embed_raster",
        (
            Param("input_path", "raster", positional=True, repeat=True, flag="input", key="INPUT",
                  label="Sentinel-2 raster or product",
                  help="Sentinel-2 L2A/L1C raster (10, 12 or 13 bands; any GDAL format and CRS), product (.SAFE folder "
                       "or .zip), folder of band files, or the band files (B02.tif ... or *_B02_10m.jp2 ...)"),
            Param("output_path", "raster_out", positional=True, flag="output", key="OUTPUT", label="Embedding raster",
                  help="output GeoTIFF"),
            Param("extent", "extent", None, optional=True, label="Extent (empty: whole raster)",
                  help="embed only this box: XMIN YMIN XMAX YMAX (in --extent-crs, default the raster's CRS)"),
            Param("extent_crs", "crs", None, optional=True, toolbox=False,
                  help="CRS of --extent (default: the raster's; EPSG:4326 = lon/lat)"),
            BANDS,
            Param("pixel_size_m", "float", None, optional=True, minimum=0.0, flag="--pixel-size", key="PIXEL_SIZE",
                  label="Output pixel size, metres (empty: input's)",
                  help="output pixel size in metres (default: the input's)"),
            Param("dims", "int", DEFAULT_DIMS, optional=True, minimum=0, label="Dimensions to keep (0: all)",
                  help="reduce to K principal components (sidecar .pca.npz); 0 keeps all the model's dims (768 for "
                       "the official model), as does a model with at most K dims"),
            Param("pca_from", "file", None, optional=True, advanced=True, key="PCA_FROM",
                  label="Reuse the PCA of (embedding raster or .pca.npz)",
                  help="reduce through the PCA of this embedding raster (or .pca.npz) instead of fitting one, so "
                       "tiles and dates share one space and can be compared or mosaicked; dims follow it"),
            Param("dtype", "choice", "int8", choices=DTYPES, label="Data type",
                  help="int8 (default): unit-length vectors x127, -128 nodata (the Satellite Embedding / TESSERA "
                       "convention), 64 bytes a pixel at 64 dims, a quarter of float32, and read ~4x faster by "
                       "every analysis. On the real samples similarity maps match float32 to r = 0.99998 (max "
                       "difference 0.012) and classifier accuracy is unchanged; it keeps directions only, so "
                       "k-means may split the space differently (README, 'Compact embeddings'). float32 keeps the "
                       "vectors' lengths; int16 keeps them at half the size with a per-band scale"),
            Param("mode", "choice", "nili", choices=FIELD_MODES, advanced=True, label="Query mode",
                  help="nili: GAIR's implicit interpolation (best); bilinear/bicubic: plain token interpolation"),
            RASTER_OVERLAP_PARAM,
            Param("min_valid", "float", MIN_VALID, minimum=0.0, maximum=1.0, advanced=True,
                  label="Skip crops with less valid data than (fraction)",
                  help="skip crops with less valid data than this (their pixels become nodata); 0: every crop "
                       "with a valid pixel, so every valid pixel gets an embedding"),
            Param("quicklook", "bool", True, flag="--no-quicklook", toolbox=False,
                  help="write <output>.quicklook.png of three principal components"),
            Param("radiometric_offset", "float", None, optional=True, advanced=True,
                  label="Radiometric offset of the values (empty: from the product)",
                  help="offset the input's values carry: -1000 for raw DN of products with processing baseline >= "
                       "04.00, 0 for older ones and harmonized collections (default: read from the product metadata)"),
            Param("mask_clouds", "bool", False, label="Mask clouds, shadows and snow (L2A scene classification)",
                  help="make L2A SCL cloud, cirrus, shadow, snow, saturated and nodata pixels nodata in the output"),
            SEED,
            *_MODEL_PARAMS,
            _batch_size(None, "crops"),
        ), summary="Sentinel-2 raster -> continuous GAIR embedding raster (+ quicklook)"),
    Operation(
        "embed_features", "Embed features",
        "Adds the GAIR embedding of a Sentinel-2 raster to every feature of a layer, as fields gair_000, "
        "gair_001, ... plus gair_status (why a feature got none: outside the raster, nodata...).\n\n"
        "Points: the embedding at the point, from a crop centred on it. Polygons: the mean over the pixels "
        "inside (or at the centroid). Lines use their centroid. Layers and rasters in any CRS.\n\n"
        "Same space as: an embedding raster made with the same model and fewer dimensions, so the feature "
        "vectors go through its PCA and compare with its pixels (e.g. as similarity references).",
        "pipeline.features:embed_features",
        (
            Param("raster", "raster", positional=True, key="RASTER", label="Sentinel-2 raster",
                  help="Sentinel-2 raster"),
            *_layer_in_out("Features", "vector layer (points, polygons; any CRS)",
                           "Features with embeddings"),
            LAYER_NAME,
            BANDS,
            Param("polygons", "choice", "mean", choices=POLYGON_MODES, label="Polygons",
                  choice_labels=("mean over the polygon", "at the centroid"),
                  help="polygons: mean of the field over the pixels inside, or the embedding at the centroid"),
            SPACE,
            Param("mode", "choice", "nili", choices=FIELD_MODES, expert_choices=EXPERT_QUERY_MODES, advanced=True,
                  label="Query mode",
                  help="how the embedding is read at a point (nili: GAIR's implicit interpolation; transformer, "
                       "CLI only: the untrained nerf_fn, for study)"),
            RASTER_OVERLAP_PARAM,
            *_MODEL_PARAMS,
            _batch_size(None, "crops"),
        ), summary="GAIR embedding of a raster at each point / over each polygon of a layer"),
    Operation(
        "embed_photos", "Embed street-view photos",
        "Adds the GAIR street-view embedding of a photo to every point: the photo whose file path is in the "
        "chosen field (absolute, or relative to the layer's folder; for memory layers, to the project's). "
        "Fields gair_000, gair_001, ... and gair_status (e.g. a missing or unreadable photo).\n\n"
        "Aligned: use the projection trained against Sentinel-2 crops, so photos compare with raster "
        "embeddings (cross-view search).",
        "pipeline.features:embed_photos",
        (
            *_layer_in_out("Points with photos", "layer with a photo-path field (absolute or relative to --photo-root)",
                           "Points with embeddings"),
            Param("photo_field", "field", "photo", key="PHOTO_FIELD", label="Photo path field",
                  help="field holding the photo path"),
            Param("photo_root", "folder", None, optional=True, toolbox=False,
                  help="folder relative photo paths start from (default: the layer file's folder)"),
            LAYER_NAME,
            Param("aligned", "bool", False, label="Aligned with Sentinel-2 embeddings",
                  help="apply the projection trained against Sentinel-2 crops (cross-view search)"),
            SPACE,
            *_MODEL_PARAMS,
            _batch_size(16, "photos"),
        ), summary="street-view embedding of the photo named by each feature"),
    Operation(
        "embed_locations", "Embed locations",
        "Adds the GAIR location embedding of every feature (from its longitude/latitude; the centroid for "
        "lines and polygons) as fields gair_000, gair_001, ... and gair_status. No imagery needed: the location "
        "encoder was aligned with Sentinel-2 and street-view embeddings during pretraining, so these vectors "
        "describe what a place is like. The layer may be in any CRS.",
        "pipeline.features:embed_locations",
        (
            *_layer_in_out("Points", "vector layer (any CRS; centroids for non-points)",
                           "Locations with embeddings"),
            LAYER_NAME,
            SPACE.replace(toolbox=False),
            *_MODEL_PARAMS,
            _batch_size(4096, "locations"),
        ), summary="location embedding of each feature's lon/lat"),
    Operation(
        "cluster_embeddings", "Cluster embeddings",
        "Groups the pixels of an embedding raster into k clusters of similar places (k-means on a random sample "
        "of pixels, then every pixel assigned to its nearest centre). No training data needed: a quick first map "
        "of what is in the scene.\n\nNumber of clusters: k, or with 'Choose k automatically' the best k between 2 "
        "and that number by silhouette score. Polygons: the clusters as a vector layer; 'merge smaller than' "
        "removes speckle from the polygons only. Same seed, same result.",
        "analysis.cluster:cluster_embeddings",
        (
            EMBEDDING_RASTER,
            Param("out_path", "raster_out", positional=True, flag="output", key="OUTPUT", label="Clusters",
                  help="class raster (Byte GeoTIFF, 0 = nodata)"),
            Param("k", "int", 8, minimum=2, maximum=254, label="Number of clusters", help="number of clusters"),
            Param("auto_k", "bool", False, label="Choose k automatically (2..k)",
                  help="pick k between 2 and --k by silhouette score"),
            Param("sample_size", "int", 20000, minimum=100, advanced=True, label="Pixels sampled for k-means",
                  help="pixels k-means is fitted on"),
            SEED,
            Param("polygons_path", "vector_out", None, optional=True, flag="--polygons", key="POLYGONS",
                  label="Cluster polygons", help="also write the classes as polygons to this GeoPackage"),
            Param("sieve_pixels", "int", 0, minimum=0, advanced=True, flag="--sieve", key="SIEVE",
                  label="Polygons: merge pieces smaller than (pixels)",
                  help="merge polygon pieces smaller than N pixels"),
            BLOCK_SIZE,
        ), summary="k-means classes of an embedding raster (+ polygons)"),
    Operation(
        "similarity_search", "Similarity search",
        "Finds places that look like your examples. Every pixel of the embedding raster gets its cosine "
        "similarity (-1..1, higher = more alike) to the reference: a point you pick, a layer of points or "
        "polygons (a polygon stands for the mean of its pixels), or both. With several references, 'mean' "
        "compares with their average, 'max' with the closest one.\n\nOutputs: the similarity raster (bright = "
        "similar), the top-k most similar places as ranked points (peaks at least 'minimum distance' pixels "
        "apart) and optionally a mask of pixels above a threshold. Layers in any CRS are reprojected.",
        "analysis.similarity:similarity_search",
        (
            EMBEDDING_RASTER,
            Param("out_path", "raster_out", positional=True, flag="output", key="OUTPUT", label="Similarity",
                  help="similarity raster (float32)"),
            Param("points", "points", None, optional=True, repeat=True, flag="--point", key="POINT",
                  label="Reference point", help="reference point X Y (repeatable)"),
            Param("points_crs", "crs", None, optional=True, toolbox=False,
                  help="CRS of --point (default: the raster's; EPSG:4326 = lon/lat)"),
            Param("reference_layer", "vector", None, optional=True, label="Reference layer (points or polygons)",
                  help="vector layer of references (or a per-feature embedding layer)"),
            Param("layer", "str", None, optional=True, toolbox=False, help="layer name inside --reference-layer"),
            Param("aggregate", "choice", "mean", choices=AGGREGATES, label="Several references",
                  choice_labels=("mean (similar to their average)", "max (similar to any of them)"),
                  help="with several references: similar to their mean, or to the closest one"),
            Param("top_k", "int", 10, minimum=0, maximum=10000, label="Top places to return",
                  help="number of most similar places"),
            Param("min_distance_px", "int", 5, minimum=1, advanced=True, flag="--min-distance", key="MIN_DISTANCE",
                  label="Minimum distance between places (pixels)", help="pixels between top-k places"),
            Param("exclude_radius_px", "int", None, optional=True, minimum=0, advanced=True, flag="--exclude-radius",
                  key="EXCLUDE_RADIUS", label="Leave out places this close to a reference (pixels)",
                  help="top places closer than this many pixels to a reference are left out, so a reference does not "
                       "find itself (default: the minimum distance; 0 keeps them)"),
            Param("threshold", "float", None, optional=True, minimum=-1.0, maximum=1.0,
                  label="Threshold for the mask (cosine)", help="cosine similarity for --mask and the top places"),
            Param("mask_path", "raster_out", None, optional=True, flag="--mask", key="MASK",
                  label="Mask (similarity >= threshold)", help="Byte mask raster of pixels >= threshold"),
            Param("hits_path", "vector_out", None, optional=True, flag="--hits", key="TOP_K_OUTPUT",
                  label="Top places", help="GeoPackage of the top-k points"),
            BLOCK_SIZE,
        ), summary="cosine similarity to reference places, top-k look-alikes, mask"),
    Operation(
        "train_classifier", "Train classifier",
        "Learns land cover (or any classes) from a few labelled points or polygons. The pixels under each point "
        "and inside each polygon are the training samples; the class comes from the chosen field.\n\n"
        "Accuracy is measured first by k-fold cross-validation grouped by feature (a polygon's pixels are never "
        "on both sides), and the report (accuracy, per-class precision/recall, confusion matrix) is shown in "
        "the log and saved. Then the model is trained on all samples, saved (for Apply model) and applied: "
        "a class raster named by your classes and a confidence raster (probability of the chosen class).\n\n"
        "Each class needs at least as many labelled features as folds. Methods: logistic regression (fast, "
        "strong on embeddings), random forest, k-nearest neighbours (cosine), gradient boosting.",
        "analysis.classify:train_classifier",
        (
            *_training("class", CLASSIFIERS, "logistic", "Class field"),
            CONFIDENCE.replace(label="Confidence", help="with --output: " + CONFIDENCE.help),
            BLOCK_SIZE,
        ), summary="train (and apply) a classifier from labelled features"),
    Operation(
        "train_regressor", "Train regressor",
        "Learns a numeric quantity (tree cover %, building height, income...) from labelled points or polygons "
        "and maps it over the embedding raster. k-fold cross-validation grouped by feature reports R² and RMSE "
        "(log and saved report); the model trained on all samples is saved and applied to every pixel.\n\n"
        "Methods: random forest, ridge regression (regularisation chosen automatically).",
        "analysis.regress:train_regressor",
        (
            *_training("value", REGRESSORS, "random_forest", "Value field (numeric)"),
            BLOCK_SIZE,
        ), summary="train (and apply) a regressor on a numeric field"),
    Operation(
        "apply_model", "Apply model",
        "Applies a model saved by Train classifier or Train regressor to an embedding raster, e.g. another "
        "scene or a later date. The raster must come from the same GAIR model and dimension reduction the "
        "model was trained on (checked before running). A classifier gives a class raster named by class and a "
        "confidence raster; a regressor gives a prediction raster.",
        "analysis.classify:apply_model",
        (
            EMBEDDING_RASTER,
            Param("model_path", "file", positional=True, flag="model_file", key="CLASSIFIER",
                  label="Trained model (.skops)", help="model file saved by train-classifier or train-regressor"),
            Param("out_path", "raster_out", positional=True, flag="output", key="OUTPUT",
                  label="Classes or prediction", help="class (or prediction) raster"),
            CONFIDENCE,
            BLOCK_SIZE,
        ), summary="apply a saved classifier or regressor to an embedding raster"),
    Operation(
        "classify_location", "Classify from location",
        "Maps classes from labelled points and their location alone: no imagery. Each point's GAIR location "
        "embedding (from its longitude/latitude) trains a classifier, which then predicts a class for every pixel "
        "of the extent at the pixel size you choose: a map prior for places and times without usable imagery, or "
        "a quick look at how much location alone says about your classes.\n\nAccuracy is first measured by "
        "stratified k-fold cross-validation on the points and shown in the log. Extent: empty = the points' "
        "bounding box plus 10 %, in longitude/latitude. Pixel size: in the units of the extent's CRS (degrees "
        "for longitude/latitude); empty = 512 pixels across.",
        "analysis.location_map:classify_location",
        (
            Param("points_path", "vector", positional=True, flag="points", key="INPUT", label="Labelled points",
                  help="labelled points: a vector layer (any CRS) or a CSV with lon/lat columns"),
            Param("output_path", "raster_out", positional=True, flag="output", key="OUTPUT", label="Classes",
                  help="class raster to write"),
            Param("class_field", "field", "label", key="FIELD", flag="--field", label="Class field",
                  help="field (column) holding each point's class"),
            Param("extent", "extent", None, optional=True, label="Extent (empty: the points' box, padded)",
                  help="map this box: XMIN YMIN XMAX YMAX (in --extent-crs, default lon/lat EPSG:4326)"),
            Param("extent_crs", "crs", None, optional=True, toolbox=False,
                  help="CRS of --extent and of the output raster (default EPSG:4326)"),
            Param("pixel_size", "float", None, optional=True, minimum=0.0, key="PIXEL_SIZE",
                  label="Pixel size (extent CRS units; empty: 512 px across)",
                  help="output pixel size in the extent CRS's units (default: 512 pixels across the extent)"),
            Param("method", "choice", "logistic", choices=LOCATION_CLASSIFIERS, label="Method",
                  help="classifier on the location embeddings"),
            Param("confidence_path", "raster_out", None, optional=True, flag="--confidence", key="CONFIDENCE",
                  label="Confidence", help="also write the probability of the chosen class"),
            Param("folds", "int", 5, minimum=2, maximum=20, label="Cross-validation folds",
                  help="k of the stratified k-fold cross-validation on the points"),
            SEED,
            Param("lon_field", "str", "lon", toolbox=False, help="longitude column of a CSV"),
            Param("lat_field", "str", "lat", toolbox=False, help="latitude column of a CSV"),
            *_MODEL_PARAMS,
        ), summary="class raster from labelled points and the location encoder alone (no imagery)"),
    Operation(
        "rank_features", "Rank features",
        "Ranks the features of a per-feature embedding layer by cosine similarity to some of its own features or "
        "to the features of another embedding layer in the same space; writes a GeoPackage with similarity and "
        "sim_rank fields.",
        "analysis.ranking:rank_features",
        (
            Param("layer_path", "vector", positional=True, key="INPUT",
                  help="per-feature embedding layer (gair_000.. fields)"),
            Param("out_path", "vector_out", positional=True, flag="output", key="OUTPUT",
                  help="ranked GeoPackage (adds similarity, sim_rank)"),
            Param("reference_fids", "int", None, optional=True, repeat=True, flag="--reference-fid",
                  help="feature id of a reference (repeatable)"),
            Param("reference_layer", "vector", None, optional=True,
                  help="another embedding layer whose features are the references"),
            Param("aggregate", "choice", "mean", choices=AGGREGATES,
                  help="with several references: similar to their mean, or to the closest one"),
            Param("layer", "str", None, optional=True, help="layer name inside layer_path"),
            Param("reference_layer_name", "str", None, optional=True, help="layer name inside --reference-layer"),
        ), toolbox=False, summary="rank a per-feature embedding layer by similarity"),
    Operation(
        "convert_checkpoint", "Convert official checkpoint",
        "Converts the official GAIR checkpoint (checkpoint.pth from the authors' model hub) into a GAIR bundle: "
        "a folder with config.json and model.safetensors. Bundles load faster and without running pickled code, "
        "and every key is checked (a wrong or damaged file is refused, not silently half-loaded).\n\n"
        "NILI convention: 'released' matches the published code. Use the bundle as the model in GAIR settings, "
        "and with 'Set as the GAIR model' it becomes the default right away. Needs PyTorch.",
        "model.checkpoint:convert_checkpoint",
        (
            Param("checkpoint", "file", positional=True, key="CHECKPOINT", label="Official checkpoint (.pth)",
                  help="the official GAIR checkpoint.pth (or any state dict with its key names)"),
            Param("out_dir", "folder_out", positional=True, key="OUTPUT", label="Bundle folder",
                  help="bundle folder to write"),
            Param("convention", "choice", "released", choices=NILI_CONVENTIONS, label="NILI convention",
                  help="NILI coordinate convention stored in the bundle (released: the published code's)"),
            Param("rs_final_norm", "bool", False, advanced=True, label="Apply CROMA's final norm (norm_out)",
                  help="apply the RS encoder's final LayerNorm as in the authors' training (the released inference "
                       "drops it); a different embedding space"),
        ), summary="official checkpoint.pth -> safetensors bundle (config.json + model.safetensors)"),
    Operation(
        "export_onnx", "Export ONNX",
        "Exports a GAIR model (the official checkpoint or a bundle; empty: the model in GAIR settings) to ONNX: "
        "the Sentinel-2, street-view and location encoders as three graphs plus the NILI weights. The export "
        "is checked against PyTorch before it is kept.\n\nUse the folder as the GAIR model with backend 'onnx' "
        "(or 'auto') to run every GAIR tool on machines where only onnxruntime is installed; with 'Set as the "
        "GAIR model' that happens right away. Exporting itself needs PyTorch.",
        "model.onnx_export:export_onnx",
        (
            Param("model_or_bundle_path", "model", positional=True, flag="model", key="SOURCE",
                  label="Model to export (empty: the one in GAIR settings)",
                  help="bundle folder or official checkpoint.pth"),
            Param("out_dir", "folder_out", positional=True, key="OUTPUT", label="ONNX export folder",
                  help="export folder to write"),
            Param("opset", "int", MIN_OPSET, minimum=MIN_OPSET, maximum=23, advanced=True, label="ONNX opset",
                  help="ONNX opset version"),
            Param("int8", "bool", False, advanced=True, label="Also write int8 encoders (fast CPU path)",
                  help="also write int8 (dynamically quantized) Sentinel-2 and street-view encoders, run with "
                       "backend onnx-int8: about twice as fast on CPU, cosine ~0.9998 to float32"),
        ), summary="export the RS, street-view and location encoders to ONNX"),
)}


# CLI-only commands (no engine operation of their own)
CLI_COMMANDS: dict[str, Operation] = {op.id: op for op in (
    Operation("info", "Describe a model", "Describes a checkpoint, bundle or ONNX export as JSON.",
              "runtime.loading:load_model", (MODEL.replace(name="path", positional=True, flag="model"),),
              toolbox=False, summary="describe a checkpoint, bundle or ONNX export"),
    Operation("fetch", "Fetch the official checkpoint",
              "Downloads the official checkpoint from the authors' hub (needs network) and prints its path.",
              "runtime.loading:fetch_official_checkpoint", (), toolbox=False,
              summary="download the official checkpoint from the authors' hub (needs network)"),
)}


def operation(op_id: str) -> Operation:
    """The operation named `op_id` (engine function name, CLI command with '-' or Processing id)."""
    key = op_id.replace("-", "_")
    found = OPERATIONS.get(key) or CLI_COMMANDS.get(key)
    if found is None:
        raise KeyError(f"no GAIR operation {op_id!r}; known: {', '.join([*OPERATIONS, *CLI_COMMANDS])}")
    return found
