"""Search by street-view photo: where the embedding raster looks like a photo (GAIR's aligned photo embedding)."""
from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
)

from .query_search import QuerySearchAlgorithm

PHOTO_FILTER = "Photos (*.jpg *.jpeg *.png *.JPG *.JPEG *.PNG);;All files (*)"


class Algorithm(QuerySearchAlgorithm):
    OPERATION, WHAT = "search_by_photo", "photo"

    def initAlgorithm(self, config=None):  # noqa: N802
        op = self.operation
        self.add_raster_input()
        self.addParameter(QgsProcessingParameterFile("PHOTO", self.tr(op.param("photos").label), optional=True,
                                                     fileFilter=PHOTO_FILTER))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "PHOTO_LAYER", self.tr(op.param("photo_layer").label), [QgsProcessing.TypeVectorAnyGeometry],
            optional=True))
        self.addParameter(QgsProcessingParameterField(
            "PHOTO_FIELD", self.tr(op.param("photo_field").label), defaultValue=op.param("photo_field").default,
            parentLayerParameterName="PHOTO_LAYER", type=QgsProcessingParameterField.String, optional=True))
        self.add_search_outputs()

    def validate(self, parameters, context):
        problem = self.check_raster_and_mask(parameters, context)
        if problem:
            return problem
        if not self.parameterAsFile(parameters, "PHOTO", context) and \
                self.parameterAsSource(parameters, "PHOTO_LAYER", context) is None:
            return self.tr("Give a street-view photo or a layer whose features name their photo.")
        return None

    def run_engine(self, parameters, context, feedback, bridge):
        photo = self.parameterAsFile(parameters, "PHOTO", context)
        query = {"photos": [photo] if photo else None, "photo_layer": None}
        if self.parameterAsSource(parameters, "PHOTO_LAYER", context) is not None:
            # a file layer keeps its folder, so relative photo paths resolve from there
            query["photo_layer"] = self.vector_path(parameters, "PHOTO_LAYER", context, feedback)
            query["photo_field"] = self.parameterAsString(parameters, "PHOTO_FIELD", context) or "photo"
        return self.run_search(query, parameters, context, feedback, bridge)
