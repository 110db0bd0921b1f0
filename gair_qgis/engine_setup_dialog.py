"""The "Set up engine…" dialog: says what it will do, runs gair_qgis.engine_setup on a thread, shows its progress and
log as they come, and ends with what the engine reports (or the one-paragraph failure naming the log file)."""
from __future__ import annotations

import html
import os
import threading

from qgis.PyQt.QtCore import QObject, Qt, pyqtSignal
from qgis.PyQt.QtGui import QFontDatabase
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from . import PLUGIN_DIR, engine_jobs, engine_setup
from .engine_link import checkout_root


class _Relay(QObject):
    """Signals from the set-up thread to the dialog (queued onto the GUI thread by Qt)."""

    progress = pyqtSignal(float, str)
    line = pyqtSignal(str)
    finished = pyqtSignal(object)  # the engine's hello dict, or the SetupError


class EngineSetupDialog(QDialog):
    def __init__(self, parent=None, plan_options: dict | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Set up the GAIR engine")
        self.setMinimumSize(760, 520)
        self.plan_options = dict(plan_options or {})  # tests and offline installs: pip_options, python, ...
        self.engine_dir = engine_jobs.profile_engine_dir()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self.result: dict | Exception | None = None
        self.relay = _Relay()
        self.relay.progress.connect(self.on_progress)
        self.relay.line.connect(self.on_line)
        self.relay.finished.connect(self.on_finished)

        intro = QLabel("GAIR runs in its own Python environment, so QGIS's Python stays as it is. This creates that "
                       f"environment in <b>{self.engine_dir}</b> with the GAIR engine and PyTorch (about 1 GB for the "
                       "CPU build, several GB for a CUDA build), and repairs it when run again.")
        intro.setWordWrap(True)
        self.torch = QCheckBox("Install PyTorch (needed for the official checkpoint and training; ONNX models run "
                               "without it)")
        self.torch.setChecked(self.plan_options.pop("install_torch", True))
        self.torch.toggled.connect(self.refresh_plan)
        self.plan_label = QLabel()
        self.plan_label.setWordWrap(True)
        self.plan_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.log.setMaximumBlockCount(5000)
        self.buttons = QDialogButtonBox()
        self.start_button = QPushButton("Set up")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel set-up")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self._cancel.set)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)
        for button in (self.start_button, self.cancel_button, self.close_button):
            self.buttons.addButton(button, QDialogButtonBox.ActionRole)
        layout = QVBoxLayout(self)
        for widget in (intro, self.torch, self.plan_label, self.bar, self.status, self.log, self.buttons):
            layout.addWidget(widget)
        self.plan: engine_setup.SetupPlan | None = None
        self.refresh_plan()

    def refresh_plan(self) -> None:
        """Find the Python, the engine wheel and the GPU now (a second), and say what set-up will do."""
        try:
            self.plan = engine_setup.make_plan(self.engine_dir, PLUGIN_DIR, checkout_root(),
                                               install_torch=self.torch.isChecked(), **self.plan_options)
        except engine_setup.SetupError as exc:
            self.plan = None
            self.plan_label.setText(str(exc))
            self.start_button.setEnabled(False)
            return
        lines = self.plan.describe()
        resolved, where = engine_jobs.engine_python()
        if resolved is not None and os.path.abspath(resolved) != os.path.abspath(
                engine_setup.venv_python(self.plan.venv)):
            lines.append(f"Note: GAIR now uses {resolved} ({where}); clear that to use this environment.")
        self.plan_label.setText("\n".join(lines))
        self.start_button.setText("Repair" if os.path.isdir(self.plan.venv) else "Set up")
        self.start_button.setEnabled(True)

    def start(self) -> None:
        if self.plan is None or (self._thread is not None and self._thread.is_alive()):
            return
        self._cancel.clear()
        self.result = None
        self.log.clear()
        self.status.setText("")
        self.start_button.setEnabled(False)
        self.torch.setEnabled(False)
        self.cancel_button.setEnabled(True)
        engine_jobs.stop_engine()  # a warm worker of this environment would hold its files open (Windows)
        self._thread = threading.Thread(target=self._run, args=(self.plan,), daemon=True, name="gair-setup")
        self._thread.start()

    def _run(self, plan: engine_setup.SetupPlan) -> None:
        try:
            outcome = engine_setup.run_setup(plan, progress=self.relay.progress.emit, log=self.relay.line.emit,
                                             cancel=self._cancel.is_set)
        except engine_setup.SetupError as exc:
            outcome = exc
        except Exception as exc:  # noqa: BLE001 - shown in the dialog, never lost in a thread
            outcome = engine_setup.SetupError(f"Set-up stopped: {type(exc).__name__}: {exc}. Full log: "
                                              f"{plan.log_path}")
        self.relay.finished.emit(outcome)

    def on_progress(self, fraction: float, message: str) -> None:
        self.bar.setValue(int(round(1000 * fraction)))
        self.status.setText(message)

    def on_line(self, line: str) -> None:
        self.log.appendPlainText(line)

    def on_finished(self, outcome) -> None:
        self.result = outcome
        self.cancel_button.setEnabled(False)
        self.torch.setEnabled(True)
        self.refresh_plan()
        if isinstance(outcome, Exception):
            self.status.setText(f"<span style='color:#b00020'>{html.escape(str(outcome))}</span>")
        else:
            self.bar.setValue(1000)
            self.status.setText(f"Done: {engine_setup.describe_hello(outcome)}. GAIR tools run in this engine now.")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set-up ends (tests, scripts); True when it did."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def reject(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._cancel.set()  # closing stops pip; the next run repairs what was half-done
            self._thread.join(30)
        super().reject()
