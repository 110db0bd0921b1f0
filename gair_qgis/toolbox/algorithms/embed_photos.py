"""Embed street-view photos: the GAIR street-view embedding of the photo each point names, as attribute fields."""
from __future__ import annotations

import os

from qgis.core import (
    QgsFeature,
    QgsProcessing,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterVectorDestination,
    QgsProcessingUtils,
    QgsProject,
    QgsVectorFileWriter,
)

from ..base import GAIRAlgorithm


def source_folder(layer) -> str:
    """Folder that relative photo paths are relative to: the layer file's, else the project's."""
    if layer is not None and layer.providerType() == "ogr":
        path = layer.source().split("|")[0]
        if os.path.isfile(path):
            return os.path.dirname(path)
    return QgsProject.instance().homePath() or os.getcwd()


def copy_with_absolute_paths(source, field: str, base: str, out_path: str, context) -> str:
    """Write `source` (a QgsFeatureSource) to a GeoPackage with `field` made absolute against `base`, so the
    engine finds photos whatever the layer was (memory, temporary, selected features)."""
    index = source.fields().lookupField(field)
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    writer = QgsVectorFileWriter.create(out_path, source.fields(), source.wkbType(), source.sourceCrs(),
                                        context.transformContext(), options)
    if writer.hasError():
        raise RuntimeError(f"cannot write {out_path}: {writer.errorMessage()}")
    for feature in source.getFeatures():
        copy = QgsFeature(feature)
        value = feature[index]
        if isinstance(value, str) and value.strip() and not os.path.isabs(os.path.expanduser(value.strip())):
            copy[index] = os.path.normpath(os.path.join(base, value.strip()))
        writer.addFeature(copy)
    del writer
    return out_path


class Algorithm(GAIRAlgorithm):
    NAME, DISPLAY, GROUP = "embed_photos", "Embed street-view photos", "embeddings"
    HELP = (
        "Adds the GAIR street-view embedding of a photo to every point: the photo whose file path is in the "
        "chosen field (absolute, or relative to the layer's folder; for memory layers, to the project's). "
        "Fields gair_000, gair_001, ... and gair_status (e.g. a missing or unreadable photo).\n\n"
        "Aligned: use the projection trained against Sentinel-2 crops, so photos compare with raster "
        "embeddings (cross-view search)."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFeatureSource("INPUT", self.tr("Points with photos"),
                                                              [QgsProcessing.TypeVectorAnyGeometry]))
        self.addParameter(QgsProcessingParameterField("PHOTO_FIELD", self.tr("Photo path field"),
                                                      parentLayerParameterName="INPUT",
                                                      type=QgsProcessingParameterField.String))
        self.addParameter(QgsProcessingParameterBoolean("ALIGNED", self.tr("Aligned with Sentinel-2 embeddings"),
                                                        False))
        self.add_model_parameter()
        self.add_embedded_count_output()
        self.addParameter(QgsProcessingParameterVectorDestination("OUTPUT", self.tr("Points with embeddings")))

    def validate(self, parameters, context):
        source = self.parameterAsSource(parameters, "INPUT", context)
        field = self.parameterAsString(parameters, "PHOTO_FIELD", context)
        if source is not None and source.fields().lookupField(field) < 0:
            return self.tr(f"The layer has no field '{field}'; choose the field holding the photo file paths.")
        return None

    def run_engine(self, parameters, context, feedback, bridge):
        from ...engine_link import engine

        field = self.parameterAsString(parameters, "PHOTO_FIELD", context)
        source = self.parameterAsSource(parameters, "INPUT", context)
        base = source_folder(self.parameterAsVectorLayer(parameters, "INPUT", context))
        layer = copy_with_absolute_paths(source, field, base, QgsProcessingUtils.generateTempFilename("photos.gpkg"),
                                         context)
        result = engine.embed_photos(
            layer, self.parameterAsOutputLayer(parameters, "OUTPUT", context),
            self.load_model(parameters, context, feedback), photo_field=field,
            aligned=self.parameterAsBool(parameters, "ALIGNED", context), **bridge.kwargs(),
        )
        return self.finish_layer_result(result, context, feedback)
