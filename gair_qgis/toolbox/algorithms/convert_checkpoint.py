"""Convert official checkpoint: the official GAIR checkpoint (.pth) -> a safetensors bundle (fast, safe to load,
fingerprinted)."""
from __future__ import annotations

import os

from qgis.core import (
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
)

from ..base import GAIRAlgorithm


class Algorithm(GAIRAlgorithm):
    OPERATION, GROUP = "convert_checkpoint", "model"
    PLUGIN_ONLY = ("SET_DEFAULT",)

    def initAlgorithm(self, config=None):  # noqa: N802
        op = self.operation
        self.addParameter(QgsProcessingParameterFile("CHECKPOINT", self.tr(op.param("checkpoint").label),
                                                     fileFilter="PyTorch checkpoint (*.pth *.pt *.ckpt)"))
        self.add_engine_parameters()
        self.addParameter(QgsProcessingParameterBoolean("SET_DEFAULT", self.tr("Set as the GAIR model"), False))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", self.tr(op.param("out_dir").label)))
        self.addOutput(QgsProcessingOutputString("FINGERPRINT", self.tr("Model fingerprint")))

    def validate(self, parameters, context):
        path = self.parameterAsFile(parameters, "CHECKPOINT", context)
        if not os.path.isfile(path):
            return self.tr(f"{path} is not a file; choose the official checkpoint.pth.")
        return None

    def run_engine(self, parameters, context, feedback, bridge):
        from ...engine_link import engine_attrs

        convert_checkpoint = engine_attrs("model.checkpoint", "convert_checkpoint")

        checkpoint = self.parameterAsFile(parameters, "CHECKPOINT", context)
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        feedback.pushInfo(self.tr(f"Reading {checkpoint}…"))
        model = convert_checkpoint(checkpoint, out, **self.engine_values(parameters, context))
        feedback.pushInfo(model.load_report.summary())
        feedback.pushInfo(self.tr(f"Wrote bundle {out} (fingerprint {model.fingerprint})"))
        if self.parameterAsBool(parameters, "SET_DEFAULT", context):
            from ...settings import GAIRSettings

            current = GAIRSettings.load()
            GAIRSettings(str(out), current.backend, current.device).save()
            feedback.pushInfo(self.tr("The bundle is now the GAIR model in the plugin settings."))
        bridge.progress(1.0)
        return {"OUTPUT": out, "FINGERPRINT": model.fingerprint}
