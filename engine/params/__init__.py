"""Every engine operation and its parameters, defined once for the CLI, the QGIS toolbox and the map tool.

Standard library only: the plugin imports this in QGIS's Python, and a later engine process sends these definitions
over a protocol. An Operation's id is the one name of the operation everywhere: the engine function, the CLI command
(with '-') and the Processing algorithm id. A Param's `name` is the engine function's keyword argument; the CLI
option (`--name-with-dashes` unless `flag` says otherwise) and the Processing parameter (`NAME` unless `key` says
otherwise) are derived from it. Scalars (int, float, str, bool, choice) become toolbox parameters generically;
layers, files, points and destinations are built by each algorithm (they are QGIS-specific).
"""
from __future__ import annotations

from .definitions import (
    AGGREGATES,
    BACKENDS,
    CLASSIFIERS,
    DEFAULT_DIMS,
    DEVICES,
    DTYPES,
    EXPERT_QUERY_MODES,
    FIELD_MODES,
    KINDS,
    LOCATION_CLASSIFIERS,
    MIN_OPSET,
    PATH_KINDS,
    POLYGON_MODES,
    REGRESSORS,
    SCALAR_KINDS,
    Operation,
    Param,
)
from .mosaic import MOSAIC_OPERATIONS
from .operations import CLI_COMMANDS, OPERATIONS, operation
from .search import SEARCH_OPERATIONS

OPERATIONS.update({op.id: op for op in MOSAIC_OPERATIONS})
OPERATIONS.update({op.id: op for op in SEARCH_OPERATIONS})  # by photo, by location, change (they share the above's)

__all__ = [
    "AGGREGATES", "BACKENDS", "CLASSIFIERS", "CLI_COMMANDS", "DEFAULT_DIMS", "DEVICES", "DTYPES", "EXPERT_QUERY_MODES",
    "FIELD_MODES", "KINDS", "LOCATION_CLASSIFIERS", "MIN_OPSET", "OPERATIONS", "PATH_KINDS", "POLYGON_MODES",
    "REGRESSORS", "SCALAR_KINDS", "Operation", "Param", "operation",
]

from .fewshot import (  # noqa: E402 - defined from the operations above
    FEWSHOT_OPERATIONS,
    MAPTOOL_COARSE_PIXELS,  # noqa: F401 - the map tool's sizes, read by the plugin
    MAPTOOL_FULL_PIXELS,  # noqa: F401
)

OPERATIONS.update({op.id: op for op in FEWSHOT_OPERATIONS})
