"""Export ONNX: a GAIR model -> an ONNX export folder that runs on onnxruntime alone (no PyTorch needed)."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
)

from ..base import GAIRAlgorithm

MODEL_FILTER = "GAIR models (*.pth *.pt *.ckpt config.json);;All files (*)"


class Algorithm(GAIRAlgorithm):
    OPERATION, GROUP = "export_onnx", "model"
    PLUGIN_ONLY = ("SET_DEFAULT",)

    def initAlgorithm(self, config=None):  # noqa: N802
        op = self.operation
        source = QgsProcessingParameterFile("SOURCE", self.tr(op.param("model_or_bundle_path").label),
                                            optional=True, fileFilter=MODEL_FILTER)
        self.addParameter(source)
        self.add_engine_parameters()
        self.addParameter(QgsProcessingParameterBoolean("SET_DEFAULT", self.tr("Set as the GAIR model (ONNX)"),
                                                        False))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", self.tr(op.param("out_dir").label)))
        self.addOutput(QgsProcessingOutputString("FINGERPRINT", self.tr("Model fingerprint")))

    def run_engine(self, parameters, context, feedback, bridge):
        from ...engine_link import engine_attrs

        export_onnx = engine_attrs("model.onnx_export", "export_onnx")

        from ...settings import GAIRSettings, load_model, normalise_model_path

        source = normalise_model_path(self.parameterAsFile(parameters, "SOURCE", context))
        model = load_model(source, backend="torch", device="cpu")
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        feedback.pushInfo(self.tr(f"Exporting model {model.fingerprint} to {out}…"))
        export_onnx(model, out, **self.engine_values(parameters, context), **bridge.kwargs())
        feedback.pushInfo(self.tr("The ONNX graphs match PyTorch; the export is ready."))
        if self.parameterAsBool(parameters, "SET_DEFAULT", context):
            GAIRSettings(str(out), "onnx", GAIRSettings.load().device).save()
            feedback.pushInfo(self.tr("The export is now the GAIR model (backend onnx) in the plugin settings."))
        return {"OUTPUT": str(out), "FINGERPRINT": model.fingerprint}
