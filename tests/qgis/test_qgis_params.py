"""The toolbox's parameters are engine.params' definitions: every engine parameter the toolbox offers is there with
the engine's default, choices, range and help, no scalar parameter exists that the engine does not define, and a
definition changed in engine.params is what both the toolbox and the CLI then offer."""
from __future__ import annotations

import dataclasses

import pytest
from qgis.core import (
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from engine import params

SCALAR_TYPES = (QgsProcessingParameterNumber, QgsProcessingParameterEnum, QgsProcessingParameterBoolean,
                QgsProcessingParameterString)


def _check_scalar(definition, param) -> None:
    assert definition.help() == param.help
    assert bool(definition.flags() & QgsProcessingParameterDefinition.FlagAdvanced) == param.advanced
    assert bool(definition.flags() & QgsProcessingParameterDefinition.FlagOptional) == param.optional
    if param.kind == "choice":
        assert isinstance(definition, QgsProcessingParameterEnum)
        assert definition.options() == list(param.choice_labels or param.choices)
        assert definition.defaultValue() == param.choices.index(param.default)
    elif param.kind in ("int", "float"):
        assert isinstance(definition, QgsProcessingParameterNumber)
        assert definition.dataType() == (QgsProcessingParameterNumber.Integer if param.kind == "int"
                                         else QgsProcessingParameterNumber.Double)
        assert definition.defaultValue() == param.default
        if param.minimum is not None:
            assert definition.minimum() == param.minimum
        if param.maximum is not None:
            assert definition.maximum() == param.maximum
    else:
        assert definition.defaultValue() == param.default


def test_every_algorithm_offers_its_operation_parameters(gair_provider):
    ids = {alg.name() for alg in gair_provider.algorithms()}
    assert ids == {op_id for op_id, op in params.OPERATIONS.items() if op.toolbox}
    for alg in gair_provider.algorithms():
        op = params.operation(alg.name())
        assert alg.displayName() == op.title and alg.shortHelpString() == op.help
        for param in op.params:
            definition = alg.parameterDefinition(param.processing_name)
            if not param.toolbox:
                assert definition is None or not param.scalar, (alg.name(), param.name)
                continue
            assert definition is not None, (alg.name(), param.name)
            if param.scalar:
                _check_scalar(definition, param)
        defined = {p.processing_name for p in op.params if p.toolbox}
        for definition in alg.parameterDefinitions():
            if isinstance(definition, SCALAR_TYPES):
                assert definition.name() in defined | set(alg.PLUGIN_ONLY), (alg.name(), definition.name())


@pytest.mark.parametrize(("op_id", "name", "value"), [("cluster_embeddings", "k", 5),
                                                       ("similarity_search", "aggregate", "max"),
                                                       ("train_classifier", "method", "knn")])
def test_a_changed_definition_reaches_toolbox_and_cli(gair_provider, monkeypatch, op_id, name, value):
    from engine.cli.main import build_parser

    op = params.OPERATIONS[op_id]
    changed = tuple(p.replace(default=value) if p.name == name else p for p in op.params)
    monkeypatch.setitem(params.OPERATIONS, op_id, dataclasses.replace(op, params=changed))
    algorithm = gair_provider.algorithm(op_id).createInstance()
    algorithm.initAlgorithm()
    param = params.operation(op_id).param(name)
    definition = algorithm.parameterDefinition(param.processing_name)
    expected = param.choices.index(value) if param.choices else value
    assert definition.defaultValue() == expected
    cli = {"cluster_embeddings": ["r.tif", "o.tif"], "similarity_search": ["r.tif", "o.tif"],
           "train_classifier": ["r.tif", "l.gpkg", "--field", "c", "--model-output", "m.skops"]}[op_id]
    assert getattr(build_parser().parse_args([op.command, *cli]), name) == value


def test_values_left_out_or_emptied_are_the_engine_defaults(gair_provider, qgis_processing):
    from qgis.core import QgsProcessingContext

    algorithm = gair_provider.algorithm("embed_raster").createInstance()
    algorithm.initAlgorithm()
    context = QgsProcessingContext()
    defaults = algorithm.engine_values({}, context)
    op = params.operation("embed_raster")
    assert defaults == {p.name: p.default for p in op.params if p.toolbox and p.scalar}
    assert defaults["dims"] == params.DEFAULT_DIMS
    emptied = algorithm.engine_values({"DIMS": None, "PIXEL_SIZE": None, "DTYPE": 1, "OVERLAP": 0.25}, context)
    assert emptied["dims"] is None and emptied["pixel_size_m"] is None  # empty: all dims, the input's pixel size
    assert emptied["dtype"] == "int16" and emptied["overlap"] == 0.25
