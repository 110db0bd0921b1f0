"""Embed street-view photos: the GAIR street-view embedding of the photo each point names, as attribute fields."""
from __future__ import annotations

import os

from qgis.core import (
    QgsProcessingParameterField,
    QgsProject,
)

from ..base import GAIRAlgorithm, require_embedding_raster


def source_folder(layer) -> str:
    """Folder that relative photo paths are relative to: the layer file's, else the project's."""
    if layer is not None and layer.providerType() == "ogr":
        path = layer.source().split("|")[0]
        if os.path.isfile(path):
            return os.path.dirname(path)
    return QgsProject.instance().homePath() or os.getcwd()


class Algorithm(GAIRAlgorithm):
    OPERATION, GROUP = "embed_photos", "embeddings"

    def initAlgorithm(self, config=None):  # noqa: N802
        op = self.operation
        self.add_layer_input()
        photo = op.param("photo_field")
        field = QgsProcessingParameterField("PHOTO_FIELD", self.tr(photo.label), photo.default,
                                            parentLayerParameterName="INPUT", type=QgsProcessingParameterField.String)
        field.setHelp(self.tr(photo.help))
        self.addParameter(field)
        self.add_engine_parameters()
        self.add_space_parameter()
        self.add_model_parameter()
        self.add_layer_output()

    def validate(self, parameters, context):
        source = self.parameterAsSource(parameters, "INPUT", context)
        field = self.parameterAsString(parameters, "PHOTO_FIELD", context)
        if source is not None and source.fields().lookupField(field) < 0:
            return self.tr(f"The layer has no field '{field}'; choose the field holding the photo file paths.")
        if parameters.get("SPACE"):
            return require_embedding_raster(self.parameterAsRasterLayer(parameters, "SPACE", context))
        return None

    def run_engine(self, parameters, context, feedback, bridge):
        # relative paths start from the layer's own folder, also when Processing hands the engine a temporary copy
        root = source_folder(self.parameterAsVectorLayer(parameters, "INPUT", context))
        return self.layer_job(parameters, context, feedback,
                              photo_field=self.parameterAsString(parameters, "PHOTO_FIELD", context), photo_root=root,
                              space=self.space_path(parameters, context))
