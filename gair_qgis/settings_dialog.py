"""Settings dialog: model path, backend, device, and which Python packages are installed (with the pip command)."""
from __future__ import annotations

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QApplication,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
)

from .deps import dependency_report, missing_dependency_message, missing_packages, pip_command
from .settings import BACKENDS, DEVICES, GAIRSettings, clear_model_cache


class SettingsDialog(QDialog):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("GAIR settings")
        current = GAIRSettings.load()
        self.model = QgsFileWidget()
        self.model.setFilePath(current.model_path)
        self.model.setFilter("GAIR models (*.pth *.pt *.ckpt *.onnx config.json);;All files (*)")
        self.model.setToolTip("Official checkpoint (.pth), bundle folder (pick its config.json) or ONNX model")
        self.backend = QComboBox()
        self.backend.addItems(BACKENDS)
        self.backend.setCurrentText(current.backend)
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setCurrentText(current.device)
        form = QFormLayout()
        form.addRow("Model", self.model)
        form.addRow("Backend", self.backend)
        form.addRow("Device", self.device)

        status = "<br>".join(f"{'✔' if ok else '✘'} {name}" for name, ok in dependency_report())
        summary = missing_dependency_message() or "Everything GAIR needs is installed."
        self.status = QLabel(status + "<br><br>" + summary)
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        copy = QPushButton("Copy pip command")
        missing, backends = missing_packages()
        command = pip_command(missing + ([] if backends else ["onnxruntime"])) if (missing or not backends) else ""
        copy.setEnabled(bool(command))
        copy.clicked.connect(lambda: QApplication.clipboard().setText(command))

        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.status)
        layout.addWidget(copy)
        layout.addWidget(buttons)

    def settings(self) -> GAIRSettings:
        return GAIRSettings(self.model.filePath(), self.backend.currentText(), self.device.currentText())

    def accept(self) -> None:
        self.settings().save()
        clear_model_cache()
        super().accept()
