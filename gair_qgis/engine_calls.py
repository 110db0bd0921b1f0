"""The plugin's engine jobs shared by the toolbox algorithms and the map tool, so a click and an algorithm run the
same engine operation with the same defaults (engine.params). No Processing and no widgets here: callers pass
progress/log/cancel callbacks, and the job runs in the engine process (engine_jobs)."""
from __future__ import annotations

from .engine_jobs import Log, Progress, run_job
from .engine_link import engine_attrs, engine_module


def defaults(op_id: str) -> dict:
    """Engine defaults of an operation's parameters, by engine keyword."""
    return engine_module("params").operation(op_id).defaults()


def run_similarity(embedding_path: str, points, points_crs: str | None, out_raster: str, out_points: str | None,
                   top_k: int | None = None, progress: Progress | None = None, cancel=None, log: Log | None = None,
                   **options) -> tuple[str, str | None]:
    """engine similarity_search -> (similarity raster, top-k GeoPackage or None when there are no hits).
    `options`: more similarity_search keywords (reference_layer, aggregate, min_distance_px, threshold, mask_path)."""
    top_k = defaults("similarity_search")["top_k"] if top_k is None else int(top_k)
    params = {"raster_path": embedding_path, "out_path": out_raster, "points": [list(p) for p in points or []] or None,
              "points_crs": points_crs, "top_k": top_k, "hits_path": out_points if top_k > 0 else None,
              **{k: v for k, v in options.items() if v is not None}}
    result = run_job("similarity_search", params, progress, log, cancel)
    return str(result["path"]), (str(result["hits_path"]) if result.get("hits_path") else None)


def run_embed_raster(input_path: str, output_path: str, *, model: str | None = None, progress: Progress | None = None,
                     cancel=None, log: Log | None = None, **options) -> str:
    """engine embed_raster (on the whole raster, or `extent=(xmin, ymin, xmax, ymax)` in `extent_crs`, default the
    raster's CRS); `model`: a model path, or None for the one in the plugin settings."""
    from .settings import ensure_official_checkpoint, model_params

    params = model_params(model)
    ensure_official_checkpoint(params, lambda op, values: run_job(op, values, progress, log, cancel))
    return str(run_job("embed_raster", {"input_path": input_path, "output_path": output_path, **params, **options},
                       progress, log, cancel))


def quicklook_of(path: str) -> str:
    """The engine's georeferenced quicklook PNG beside an embedding raster."""
    return str(engine_attrs("io.files", "quicklook_path")(path))
