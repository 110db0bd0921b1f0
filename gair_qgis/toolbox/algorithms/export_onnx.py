"""Export ONNX: a GAIR model -> an ONNX export folder that runs on onnxruntime alone (no PyTorch needed)."""
from __future__ import annotations

import json
import os

from qgis.core import (
    QgsProcessingException,
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
        # PyTorch and onnx are the engine's business: a missing one is the job's error line
        from ...settings import GAIRSettings, ensure_official_checkpoint, model_params

        params = model_params(self.parameterAsFile(parameters, "SOURCE", context) or None)
        source = params["model"]
        if not source:
            try:
                ensure_official_checkpoint(params, lambda op, values: self.run_job(values, feedback, op))
            except RuntimeError as exc:
                raise QgsProcessingException(str(exc)) from None
            # the official checkpoint, now cached (asked before downloading): its path
            source = os.environ.get("GAIR_CHECKPOINT") or self.run_job({}, feedback,
                                                                       "fetch_official_checkpoint")["path"]
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        feedback.pushInfo(self.tr(f"Exporting {source} to {out}…"))
        values = self.engine_values(parameters, context)
        self.run_job({"model_or_bundle_path": source, "out_dir": out, **values}, feedback, bridge=bridge)
        fingerprint = export_fingerprint(out)
        feedback.pushInfo(self.tr(f"The ONNX graphs match PyTorch; the export (model {fingerprint}) is ready."))
        if self.parameterAsBool(parameters, "SET_DEFAULT", context):
            backend = "onnx-int8" if values.get("int8") else "onnx"
            GAIRSettings(str(out), backend, GAIRSettings.load().device).save()
            feedback.pushInfo(self.tr(f"The export is now the GAIR model (backend {backend}) in the plugin settings."))
        return {"OUTPUT": str(out), "FINGERPRINT": fingerprint}


def export_fingerprint(folder: str) -> str | None:
    """The model fingerprint an ONNX export records in its config.json."""
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
            return json.load(handle).get("fingerprint")
    except (OSError, ValueError):
        return None
