"""Convert model: the official GAIR checkpoint (.pth) -> a safetensors bundle (fast, safe to load, fingerprinted)."""
from __future__ import annotations

import os

from qgis.core import (
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
)

from ..base import GAIRAlgorithm

CONVENTIONS = ("released", "legacy")


class Algorithm(GAIRAlgorithm):
    NAME, DISPLAY, GROUP = "convert_checkpoint", "Convert official checkpoint", "model"
    HELP = (
        "Converts the official GAIR checkpoint (checkpoint.pth from the authors' model hub) into a GAIR bundle: "
        "a folder with config.json and model.safetensors. Bundles load faster and without running pickled code, "
        "and every key is checked (a wrong or damaged file is refused, not silently half-loaded).\n\n"
        "NILI convention: 'released' matches the published code. Use the bundle as the model in GAIR settings, "
        "and with 'Set as the GAIR model' it becomes the default right away. Needs PyTorch."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile("CHECKPOINT", self.tr("Official checkpoint (.pth)"),
                                                     fileFilter="PyTorch checkpoint (*.pth *.pt *.ckpt)"))
        self.addParameter(QgsProcessingParameterEnum("CONVENTION", self.tr("NILI convention"), list(CONVENTIONS),
                                                     defaultValue=0))
        self.addParameter(QgsProcessingParameterBoolean("SET_DEFAULT", self.tr("Set as the GAIR model"), False))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", self.tr("Bundle folder")))
        self.addOutput(QgsProcessingOutputString("FINGERPRINT", self.tr("Model fingerprint")))

    def validate(self, parameters, context):
        from ...deps import has_module

        if not has_module("torch"):
            from ...deps import pip_command

            return self.tr(f"Converting the checkpoint needs PyTorch; install it with: {pip_command(['torch'])}")
        path = self.parameterAsFile(parameters, "CHECKPOINT", context)
        if not os.path.isfile(path):
            return self.tr(f"{path} is not a file; choose the official checkpoint.pth.")
        return None

    def run_engine(self, parameters, context, feedback, bridge):
        from ...engine_link import engine_attrs
        convert_checkpoint = engine_attrs("model.checkpoint", "convert_checkpoint")

        checkpoint = self.parameterAsFile(parameters, "CHECKPOINT", context)
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        convention = CONVENTIONS[self.parameterAsEnum(parameters, "CONVENTION", context)]
        feedback.pushInfo(self.tr(f"Reading {checkpoint}…"))
        model = convert_checkpoint(checkpoint, out, convention)
        feedback.pushInfo(model.load_report.summary())
        feedback.pushInfo(self.tr(f"Wrote bundle {out} (fingerprint {model.fingerprint})"))
        if self.parameterAsBool(parameters, "SET_DEFAULT", context):
            from ...settings import GAIRSettings

            current = GAIRSettings.load()
            GAIRSettings(str(out), current.backend, current.device).save()
            feedback.pushInfo(self.tr("The bundle is now the GAIR model in the plugin settings."))
        bridge.progress(1.0)
        return {"OUTPUT": out, "FINGERPRINT": model.fingerprint}
