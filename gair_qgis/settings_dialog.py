"""Settings dialog: model path, backend, device, hub download consent, which model is loaded (what it is, where it
came from, dims, training steps, fingerprint, backend and device) and which Python packages are installed."""
from __future__ import annotations

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QVBoxLayout,
)

from .deps import dependency_report, missing_dependency_message, missing_packages, pip_command
from .settings import (
    BACKENDS,
    DEVICES,
    GAIRSettings,
    clear_model_cache,
    download_allowed_setting,
    load_model,
    loaded_model,
    set_download_allowed,
)

NOT_LOADED = "No model loaded yet: it loads with the first GAIR job, or now with 'Load model'."


def model_summary(info: dict) -> str:
    """engine describe_model() as lines a person reads."""
    steps = info.get("training_steps")
    lines = [
        f"Model: {info['description']}",
        f"Source: {info['source'] or 'unknown'}",
        f"Dimensions: {info['dims']}",
        f"Training steps: {steps if steps is not None else 'not recorded'}",
        f"Fingerprint: {info['fingerprint']}",
        f"Backend: {info['backend']} on {info['device']}",
    ]
    if info.get("origin") and info["origin"] != info["source"]:
        lines.insert(2, f"Made from: {info['origin']}")
    return "\n".join(lines)


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
        self.allow_download = QCheckBox("Download the official checkpoint without asking (needed by qgis_process)")
        self.allow_download.setChecked(download_allowed_setting())
        self.allow_download.setToolTip("With no model set, GAIR uses the official checkpoint from the Hugging Face "
                                       "cache; unticked, the desktop asks (with its size) before downloading it")
        form = QFormLayout()
        form.addRow("Model", self.model)
        form.addRow("Backend", self.backend)
        form.addRow("Device", self.device)
        form.addRow("", self.allow_download)

        self.model_info = QLabel()
        self.model_info.setWordWrap(True)
        self.model_info.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.load_button = QPushButton("Load model")
        self.load_button.setToolTip("Load the model the saved settings name and show what it is")
        self.load_button.clicked.connect(self.load_and_describe)
        loaded_box = QGroupBox("Loaded model")
        loaded_layout = QVBoxLayout(loaded_box)
        loaded_layout.addWidget(self.model_info)
        loaded_layout.addWidget(self.load_button)
        self.show_model(loaded_model())

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
        layout.addWidget(loaded_box)
        layout.addWidget(self.status)
        layout.addWidget(copy)
        layout.addWidget(buttons)

    def show_model(self, model) -> None:
        if model is None:
            self.model_info.setText(NOT_LOADED)
            return
        from .engine_link import engine_module

        self.model_info.setText(model_summary(engine_module("runtime.loading").describe_model(model)))

    def load_and_describe(self) -> None:
        """Load the saved settings' model (a wait cursor: seconds) and show it, or the one-line problem."""
        from qgis.PyQt.QtGui import QCursor

        from .engine_link import engine
        from .settings import model_problem

        problem = model_problem(None)
        if problem:
            self.model_info.setText(problem)
            return
        QApplication.setOverrideCursor(QCursor(Qt.WaitCursor))
        try:
            self.show_model(load_model())
        except engine.GAIRError as exc:
            self.model_info.setText(str(exc))
        finally:
            QApplication.restoreOverrideCursor()

    def settings(self) -> GAIRSettings:
        return GAIRSettings(self.model.filePath(), self.backend.currentText(), self.device.currentText())

    def accept(self) -> None:
        changed = self.settings() != GAIRSettings.load()
        self.settings().save()
        set_download_allowed(self.allow_download.isChecked())
        if changed:
            clear_model_cache()
        super().accept()
