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
        return self.layer_job(parameters, context, feedback)
