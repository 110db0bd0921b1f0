"""engine.params -> Processing parameters: numbers, enums, booleans and strings are built from the engine's own
definitions (name, label, default, choices, range, help), so the toolbox, the CLI and the map tool cannot disagree.
Layers, files, points and destinations stay QGIS-specific and are built by each algorithm."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..engine_link import engine_module


def operation(op_id: str):
    """The engine's definition of an operation (engine.params.Operation)."""
    return engine_module("params").operation(op_id)


def scalar_parameter(param, tr=str) -> QgsProcessingParameterDefinition:
    """The Processing parameter of one scalar engine Param (int, float, str, bool, choice)."""
    name, label = param.processing_name, tr(param.title)
    if param.kind in ("int", "float"):
        number_type = (QgsProcessingParameterNumber.Integer if param.kind == "int"
                       else QgsProcessingParameterNumber.Double)
        limits = {}
        if param.minimum is not None:
            limits["minValue"] = param.minimum
        if param.maximum is not None:
            limits["maxValue"] = param.maximum
        definition = QgsProcessingParameterNumber(name, label, number_type, param.default, param.optional, **limits)
    elif param.kind == "bool":
        definition = QgsProcessingParameterBoolean(name, label, bool(param.default), param.optional)
    elif param.kind == "choice":
        options = [tr(text) for text in (param.choice_labels or param.choices)]
        definition = QgsProcessingParameterEnum(name, label, options, False, param.choices.index(param.default),
                                                param.optional)
    elif param.kind == "str":
        definition = QgsProcessingParameterString(name, label, param.default, False, param.optional)
    else:
        raise TypeError(f"{param.name} is a {param.kind} parameter; the algorithm builds it itself")
    definition.setHelp(tr(param.help))
    if param.advanced:
        definition.setFlags(definition.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return definition


def toolbox_scalars(op) -> list:
    """The scalar params of `op` the toolbox offers, in definition order."""
    return [p for p in op.params if p.toolbox and p.scalar]


def scalar_value(algorithm: QgsProcessingAlgorithm, param, parameters: dict, context: QgsProcessingContext):
    """The engine value of a scalar Param: an optional one left empty is None, a missing one its default."""
    key = param.processing_name
    if key not in parameters:
        return param.default
    if parameters[key] is None or parameters[key] == "":
        if param.optional:
            return None
        return param.default
    if param.kind == "int":
        return algorithm.parameterAsInt(parameters, key, context)
    if param.kind == "float":
        return algorithm.parameterAsDouble(parameters, key, context)
    if param.kind == "bool":
        return algorithm.parameterAsBool(parameters, key, context)
    if param.kind == "choice":
        return param.choices[algorithm.parameterAsEnum(parameters, key, context)]
    text = algorithm.parameterAsString(parameters, key, context)
    return text or (None if param.optional else param.default)
