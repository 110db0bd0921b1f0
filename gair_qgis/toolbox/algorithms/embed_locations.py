"""Embed locations: the GAIR location embedding (lon/lat encoder) of each feature, as attribute fields."""
from __future__ import annotations

from ..base import GAIRAlgorithm


class Algorithm(GAIRAlgorithm):
    OPERATION, GROUP = "embed_locations", "embeddings"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_layer_input()
        self.add_engine_parameters()
        self.add_model_parameter()
        self.add_layer_output()

    def run_engine(self, parameters, context, feedback, bridge):
        from ...engine_link import engine

        result = engine.embed_locations(
            self.vector_path(parameters, "INPUT", context, feedback),
            self.parameterAsOutputLayer(parameters, "OUTPUT", context), self.load_model(parameters, context, feedback),
            **self.engine_values(parameters, context), **bridge.kwargs(),
        )
        return self.finish_layer_result(result, context, feedback)
