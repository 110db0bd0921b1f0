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
    NAME, DISPLAY, GROUP = "export_onnx", "Export ONNX", "model"
    HELP = (
        "Exports a GAIR model (the official checkpoint or a bundle; empty: the model in GAIR settings) to ONNX: "
        "the Sentinel-2, street-view and location encoders as three graphs plus the NILI weights. The export "
        "is checked against PyTorch before it is kept.\n\nUse the folder as the GAIR model with backend 'onnx' "
        "(or 'auto') to run every GAIR tool on machines where only onnxruntime is installed; with 'Set as the "
        "GAIR model' that happens right away. Exporting itself needs PyTorch."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        source = QgsProcessingParameterFile("SOURCE", self.tr("Model to export (empty: the one in GAIR settings)"),
                                            optional=True, fileFilter=MODEL_FILTER)
        self.addParameter(source)
        self.addParameter(QgsProcessingParameterBoolean("SET_DEFAULT", self.tr("Set as the GAIR model (ONNX)"),
                                                        False))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", self.tr("ONNX export folder")))
        self.addOutput(QgsProcessingOutputString("FINGERPRINT", self.tr("Model fingerprint")))

    def validate(self, parameters, context):
        from ...deps import has_module, pip_command

        missing = [name for name in ("torch", "onnx") if not has_module(name)]
        if missing:
            return self.tr(f"Exporting to ONNX needs {' and '.join(missing)}; install with: {pip_command(missing)}")
        return None

    def run_engine(self, parameters, context, feedback, bridge):
        from ...engine_link import engine_attrs
        export_onnx = engine_attrs("model.onnx_export", "export_onnx")

        from ...settings import GAIRSettings, load_model, normalise_model_path

        source = normalise_model_path(self.parameterAsFile(parameters, "SOURCE", context))
        model = load_model(source, backend="torch", device="cpu")
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        feedback.pushInfo(self.tr(f"Exporting model {model.fingerprint} to {out}…"))
        export_onnx(model, out, **bridge.kwargs())
        feedback.pushInfo(self.tr("The ONNX graphs match PyTorch; the export is ready."))
        if self.parameterAsBool(parameters, "SET_DEFAULT", context):
            GAIRSettings(str(out), "onnx", GAIRSettings.load().device).save()
            feedback.pushInfo(self.tr("The export is now the GAIR model (backend onnx) in the plugin settings."))
        return {"OUTPUT": str(out), "FINGERPRINT": model.fingerprint}
