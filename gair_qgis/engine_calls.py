"""The plugin's calls into the engine shared by the toolbox algorithms and the map tool, so a click and an
algorithm run the same code with the same defaults (engine.params). No Processing and no widgets here."""
from __future__ import annotations

from .engine_link import engine_attrs, engine_module


def defaults(op_id: str) -> dict:
    """Engine defaults of an operation's parameters, by engine keyword."""
    return engine_module("params").operation(op_id).defaults()


def run_similarity(embedding_path: str, points, points_crs: str | None, out_raster: str, out_points: str | None,
                   top_k: int | None = None, progress=None, cancel=None, **options) -> tuple[str, str | None]:
    """engine similarity_search -> (similarity raster, top-k GeoPackage or None when there are no hits).
    `options`: more similarity_search keywords (reference_layer, aggregate, min_distance_px, threshold, mask_path)."""
    similarity_search = engine_attrs("analysis", "similarity_search")

    top_k = defaults("similarity_search")["top_k"] if top_k is None else int(top_k)
    result = similarity_search(embedding_path, out_raster, points=list(points or []) or None, points_crs=points_crs,
                               top_k=top_k, hits_path=out_points if top_k > 0 else None, progress=progress,
                               cancel=cancel, **options)
    return str(result.path), (str(result.hits_path) if result.hits_path else None)


def run_embed_raster(input_path: str, output_path: str, *, model=None, progress=None, cancel=None,
                     **options) -> str:
    """engine embed_raster (on the whole raster, or `extent=(xmin, ymin, xmax, ymax)` in `extent_crs`, default the
    raster's CRS); `model`: a loaded model, or a model path / None for the one in the plugin settings."""
    from .engine_link import engine
    from .settings import load_model

    if not hasattr(model, "rs_tokens"):
        model = load_model(model)
    return str(engine.embed_raster(input_path, output_path, model, progress=progress, cancel=cancel, **options))


def quicklook_of(path: str) -> str:
    """The engine's georeferenced quicklook PNG beside an embedding raster."""
    return str(engine_attrs("io.files", "quicklook_path")(path))
