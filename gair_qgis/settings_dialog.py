"""Settings dialog: the engine (its Python, or a remote engine's URL and token; what it reports on "Test engine")
and the model (path, backend, device, hub download consent; what it is on "Describe model"). Both questions are
engine jobs: QGIS's Python only shows the answers."""
from __future__ import annotations

from qgis.core import QgsSettings
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
)

from . import engine_jobs
from .engine_link import engine_module
from .settings import (
    BACKENDS,
    DEVICES,
    GAIRSettings,
    download_allowed_setting,
    normalise_model_path,
    set_download_allowed,
)

NOT_TESTED = "Press 'Test engine' to start it and see its versions and device."
NOT_DESCRIBED = "Press 'Describe model' to load the model these settings name (in the engine) and see what it is."


def model_summary(info: dict) -> str:
    """engine describe_model() as lines a person reads."""
    if "remote" in info:
        return f"Model: {info['description']}"
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


def engine_summary(info: dict, where: str) -> str:
    """engine describe_engine() (or a worker's hello) as lines a person reads."""
    device = info.get("device") or "cpu"
    return "\n".join([
        f"Engine: GAIR {info.get('engine')} ({where})",
        f"Python: {info.get('python')} ({info.get('executable') or 'remote'})",
        f"PyTorch: {info.get('torch') or 'not installed (ONNX models only)'}",
        f"onnxruntime: {info.get('onnxruntime') or 'not installed'}",
        f"Device: {'CPU' if device == 'cpu' else device}",
    ])


def test_engine(python: str, url: str, token: str) -> str:
    """Start (or ask) the engine these fields name and describe it; the problem in one line when it cannot."""
    try:
        if url:
            from .remote_jobs import run_remote_job

            return engine_summary(run_remote_job((url, token), "describe_engine", {}), f"remote, {url}")
        resolved, where = engine_jobs.engine_python()
        chosen = python or resolved
        if chosen is None:
            return ("No GAIR engine is set up: press 'Set up engine…' (or name an engine Python above, or set "
                    f"{engine_jobs.ENGINE_PYTHON_ENV}).")
        if chosen == resolved:  # the warm worker jobs use: its hello is the answer
            return engine_summary(engine_jobs.shared_engine().start(), f"from {where}")
        engine = engine_module("service.local").LocalEngine(chosen)
        try:
            return engine_summary(engine.start(), "from the Python named above")
        finally:
            engine.stop()
    except engine_jobs.EngineFailure as exc:
        return f"The engine does not answer: {exc}"


class SettingsDialog(QDialog):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("GAIR settings")
        self.setMinimumWidth(620)
        settings = QgsSettings()
        current = GAIRSettings.load()

        # --- engine ------------------------------------------------------------------------------------------------
        self.python = QLineEdit(settings.value(engine_jobs.PYTHON_KEY, "", type=str))
        found, where = engine_jobs.engine_python()
        self.python.setPlaceholderText(f"{found} ({where})" if found else "not set up: press 'Set up engine…'")
        self.python.setToolTip("The Python that runs the GAIR engine. Empty: GAIR_ENGINE_PYTHON, else the "
                               "environment 'Set up engine…' made in the QGIS profile")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self.browse_python)
        python_row = QHBoxLayout()
        python_row.addWidget(self.python)
        python_row.addWidget(browse)
        self.url = QLineEdit(settings.value(engine_jobs.URL_KEY, "", type=str))
        self.url.setPlaceholderText("empty: run on this computer; e.g. http://gpu-box:8765 for `engine serve`")
        self.token = QLineEdit(settings.value(engine_jobs.TOKEN_KEY, "", type=str))
        self.token.setEchoMode(QLineEdit.Password)
        self.token.setPlaceholderText("the token `python -m engine serve` was started with")
        self.engine_info = QLabel(NOT_TESTED)
        self.engine_info.setWordWrap(True)
        self.engine_info.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.test_button = QPushButton("Test engine")
        self.test_button.clicked.connect(self.test_engine)
        self.setup_button = QPushButton("Set up engine…")
        self.setup_button.setToolTip("Create or repair the engine's environment in the QGIS profile")
        self.setup_button.clicked.connect(self.open_setup)
        engine_form = QFormLayout()
        engine_form.addRow("Engine Python", python_row)
        engine_form.addRow("Engine URL", self.url)
        engine_form.addRow("Engine token", self.token)
        engine_buttons = QHBoxLayout()
        engine_buttons.addWidget(self.test_button)
        engine_buttons.addWidget(self.setup_button)
        engine_buttons.addStretch(1)
        engine_box = QGroupBox("Engine")
        engine_layout = QVBoxLayout(engine_box)
        engine_layout.addLayout(engine_form)
        engine_layout.addWidget(self.engine_info)
        engine_layout.addLayout(engine_buttons)

        # --- model -------------------------------------------------------------------------------------------------
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
        self.model_info = QLabel(NOT_DESCRIBED)
        self.model_info.setWordWrap(True)
        self.model_info.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.describe_button = QPushButton("Describe model")
        self.describe_button.setToolTip("Load the model these settings name in the engine and show what it is")
        self.describe_button.clicked.connect(self.describe_model)
        model_box = QGroupBox("Model")
        model_form = QFormLayout(model_box)
        model_form.addRow("Model", self.model)
        model_form.addRow("Backend", self.backend)
        model_form.addRow("Device", self.device)
        model_form.addRow("", self.allow_download)
        model_form.addRow(self.model_info)
        model_form.addRow("", self.describe_button)

        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(engine_box)
        layout.addWidget(model_box)
        layout.addWidget(buttons)

    def browse_python(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "The engine's Python", self.python.text(),
                                              "Python (python*);;All files (*)")
        if path:
            self.python.setText(path)

    def _busy(self, work):
        from qgis.PyQt.QtGui import QCursor

        QApplication.setOverrideCursor(QCursor(Qt.WaitCursor))
        try:
            return work()
        finally:
            QApplication.restoreOverrideCursor()

    def test_engine(self) -> None:
        """Start the engine these fields name (seconds: it imports torch) and show its versions and device."""
        self.engine_info.setText(self._busy(lambda: test_engine(self.python.text().strip(), self.url.text().strip(),
                                                                self.token.text())))

    def describe_model(self) -> None:
        """Load the model these fields name in the engine (kept warm there for the next job) and show it."""
        path = normalise_model_path(self.model.filePath())
        params = {"model": path, "backend": self.backend.currentText(), "device": self.device.currentText()}
        try:
            self.model_info.setText(model_summary(self._busy(lambda: engine_jobs.run_job("describe_model", params))))
        except engine_jobs.EngineFailure as exc:
            self.model_info.setText(str(exc))

    def open_setup(self) -> None:
        from .engine_setup_dialog import EngineSetupDialog

        EngineSetupDialog(self).exec_()
        found, where = engine_jobs.engine_python()
        self.python.setPlaceholderText(f"{found} ({where})" if found else "not set up: press 'Set up engine…'")

    def settings(self) -> GAIRSettings:
        return GAIRSettings(self.model.filePath(), self.backend.currentText(), self.device.currentText())

    def accept(self) -> None:
        self.settings().save()
        set_download_allowed(self.allow_download.isChecked())
        settings = QgsSettings()
        settings.setValue(engine_jobs.PYTHON_KEY, self.python.text().strip())
        settings.setValue(engine_jobs.URL_KEY, self.url.text().strip())
        settings.setValue(engine_jobs.TOKEN_KEY, self.token.text())
        super().accept()  # a changed engine Python gets its own worker with the next job (engine_jobs.shared_engine)
