"""What a parameter and an operation are, and the enumerations the engine, the CLI and the plugin share."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from ..config import QUERY_MODES

# enumerations the engine, the CLI and the plugin share (imported from here or engine.config, never redefined)
FIELD_MODES = tuple(m for m in QUERY_MODES if m != "transformer")  # dense fields: the transformer runs per pixel
# `transformer` runs `nerf_fn`, which the authors' training never calls (untrained in the official weights): accepted
# from the CLI and the engine, with a warning, but not offered among the plugin's choices.
EXPERT_QUERY_MODES = tuple(m for m in QUERY_MODES if m not in FIELD_MODES)
DTYPES = ("float32", "int16", "int8")
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
DEVICES = ("auto", "cpu", "cuda")  # or cuda:N
CLASSIFIERS = ("logistic", "random_forest", "knn", "gradient_boosting")
REGRESSORS = ("random_forest", "ridge")
LOCATION_CLASSIFIERS = ("logistic", "knn", "random_forest")
AGGREGATES = ("mean", "max")
POLYGON_MODES = ("mean", "centroid")
# Dims embed_raster keeps by default: 64 principal components hold nearly all the variance of GAIR's 768-d field that
# similarity, clustering and classifiers use, at 1/12 of the size (a Sentinel-2 tile, 10980 x 10980 px, is ~31 GB in
# float32 at 64 dims, ~370 GB with all 768). 0 (or None, or at least the model's dims) keeps all dims.
DEFAULT_DIMS = 64
MIN_OPSET = 17

SCALAR_KINDS = ("int", "float", "str", "bool", "choice")
# inputs: raster, vector (layer), file, folder, model (checkpoint / bundle / ONNX), field (of a layer), crs,
# points (x y pairs), extent (xmin ymin xmax ymax); outputs: *_out
PATH_KINDS = ("raster", "vector", "file", "folder", "model", "raster_out", "vector_out", "file_out", "folder_out")
KINDS = SCALAR_KINDS + PATH_KINDS + ("field", "crs", "points", "extent")


@dataclass(frozen=True)
class Param:
    """One parameter of an operation. `cli`/`toolbox` False: not offered there (e.g. the plugin's settings hold the
    backend); `positional`: a CLI argument rather than an option; `repeat`: a list built from repeated options."""

    name: str
    kind: str
    default: Any = None
    help: str = ""
    label: str = ""
    choices: tuple[str, ...] = ()
    choice_labels: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    optional: bool = False
    advanced: bool = False
    positional: bool = False
    repeat: bool = False
    flag: str | None = None
    key: str | None = None
    cli: bool = True
    toolbox: bool = True
    pattern: str | None = None  # a str value must match this regular expression
    # choices the CLI and the engine accept but the toolbox does not offer (e.g. the untrained transformer query)
    expert_choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")
        if self.kind == "choice" and self.default not in self.choices:
            raise ValueError(f"{self.name}: default {self.default!r} is not one of {self.choices}")
        if self.choice_labels and len(self.choice_labels) != len(self.choices):
            raise ValueError(f"{self.name}: one label per choice")

    def check(self, value: Any) -> str | None:
        """What is wrong with a value of this parameter (range, pattern, choices), or None."""
        if value is None:
            return None if self.optional or self.default is None else "a value is required"
        if self.choices and value not in self.choices + self.expert_choices:
            return f"must be one of {', '.join(self.choices + self.expert_choices)}, got {value!r}"
        if self.minimum is not None and value < self.minimum:
            return f"must be at least {self.minimum:g}, got {value:g}"
        if self.maximum is not None and value > self.maximum:
            return f"must be at most {self.maximum:g}, got {value:g}"
        if self.pattern is not None and not re.fullmatch(self.pattern, str(value)):
            return f"{value!r} is not valid ({self.help})"
        return None

    @property
    def option(self) -> str:
        """The CLI spelling: `--pixel-size` for an option, the metavar of a positional."""
        if self.flag:
            return self.flag
        return self.name if self.positional else "--" + self.name.replace("_", "-")

    @property
    def processing_name(self) -> str:
        return self.key or self.name.upper()

    @property
    def scalar(self) -> bool:
        return self.kind in SCALAR_KINDS

    @property
    def title(self) -> str:
        return self.label or self.help.split(";")[0]

    def replace(self, **changes) -> Param:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain data (JSON-ready) for another process."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Operation:
    """An engine operation: `function` is "module:function" inside the engine package."""

    id: str
    title: str
    help: str
    function: str
    params: tuple[Param, ...] = field(default_factory=tuple)
    toolbox: bool = True
    summary: str = ""  # one line for command lists

    @property
    def command(self) -> str:
        return self.id.replace("_", "-")

    def param(self, name: str) -> Param:
        for param in self.params:
            if param.name == name:
                return param
        raise KeyError(f"{self.id} has no parameter {name!r}")

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def to_dict(self) -> dict:
        return {"id": self.id, "title": self.title, "help": self.help, "function": self.function,
                "params": [p.to_dict() for p in self.params], "toolbox": self.toolbox,
                "summary": self.summary}
