"""GAIR settings: the engine (its Python, a remote URL and token) and what it reports, the model and what it is, both
asked of the engine process; with no model set the official checkpoint comes from the hub cache, and downloading it
needs consent (a question with its size on the desktop, a setting headless)."""
from __future__ import annotations

import sys

import pytest

import engine


@pytest.fixture
def pretrained_bundle(tmp_path):
    import torch

    torch.manual_seed(1)
    return engine.save_bundle(engine.GAIRModel(engine.GAIRConfig.tiny()), tmp_path / "pretrained",
                              source="engine.pretrain (random init, 120 steps)")


@pytest.fixture
def saved_settings(qgis_app):
    """Every GAIR setting a test changes comes back afterwards (and the download consent is forgotten)."""
    from qgis.core import QgsSettings

    from gair_qgis import engine_jobs, settings

    keys = (engine_jobs.PYTHON_KEY, engine_jobs.URL_KEY, engine_jobs.TOKEN_KEY)
    old, old_allow = settings.GAIRSettings.load(), settings.download_allowed_setting()
    old_engine = {key: QgsSettings().value(key, "", type=str) for key in keys}
    yield
    old.save()
    settings.set_download_allowed(old_allow)
    settings._download_consent.clear()
    for key, value in old_engine.items():
        QgsSettings().setValue(key, value)


def test_describe_model_asks_the_engine_what_the_model_is(saved_settings, pretrained_bundle):
    from gair_qgis.settings_dialog import NOT_DESCRIBED, SettingsDialog

    dialog = SettingsDialog()
    assert dialog.model_info.text() == NOT_DESCRIBED
    dialog.model.setFilePath(str(pretrained_bundle / "config.json"))  # a bundle is picked through its config.json
    dialog.backend.setCurrentText("torch")
    dialog.device.setCurrentText("cpu")
    dialog.describe_button.click()
    fingerprint = engine.load_model(pretrained_bundle, device="cpu").fingerprint
    assert dialog.model_info.text().splitlines() == [
        "Model: GAIR bundle, 32-d, pretrained 120 steps",
        f"Source: {pretrained_bundle}",
        "Made from: engine.pretrain (random init, 120 steps)",
        "Dimensions: 32",
        "Training steps: 120",
        f"Fingerprint: {fingerprint}",
        "Backend: torch on cpu",
    ]
    dialog.model.setFilePath(str(pretrained_bundle.parent / "nowhere.pth"))
    dialog.describe_button.click()
    assert "nowhere.pth does not exist" in dialog.model_info.text()
    dialog.reject()


def test_test_engine_shows_versions_and_device(saved_settings, tmp_path):
    import torch

    from gair_qgis.settings_dialog import NOT_TESTED, SettingsDialog

    dialog = SettingsDialog()
    assert dialog.engine_info.text() == NOT_TESTED
    dialog.test_button.click()
    lines = dialog.engine_info.text().splitlines()
    assert lines[0] == f"Engine: GAIR {engine.__version__} (from the GAIR_ENGINE_PYTHON environment variable)"
    assert lines[1] == f"Python: {sys.version.split()[0]} ({sys.executable})"
    assert lines[2] == f"PyTorch: {torch.__version__}" and lines[4] == "Device: CPU"
    dialog.python.setText(str(tmp_path / "no-python"))  # another Python, named in the dialog
    dialog.test_button.click()
    assert dialog.engine_info.text().startswith(f"The engine does not answer: the engine Python {tmp_path}")
    dialog.python.setText("")
    dialog.url.setText("http://127.0.0.1:9")  # nothing listens on the discard port
    dialog.test_button.click()
    assert dialog.engine_info.text().startswith("The engine does not answer: cannot reach the remote engine at "
                                                "http://127.0.0.1:9")
    dialog.reject()


def test_dialog_saves_engine_and_model_settings(saved_settings, tmp_path):
    from qgis.core import QgsSettings

    from gair_qgis import engine_jobs
    from gair_qgis.settings import GAIRSettings
    from gair_qgis.settings_dialog import SettingsDialog

    dialog = SettingsDialog()
    assert dialog.token.echoMode() == dialog.token.Password
    dialog.model.setFilePath(str(tmp_path))
    dialog.backend.setCurrentText("onnx")
    dialog.device.setCurrentText("cpu")
    dialog.python.setText(" /opt/engine/bin/python ")
    dialog.url.setText("http://gpu-box:8765/")
    dialog.token.setText("secret-token-0123456789")
    dialog.allow_download.setChecked(True)
    dialog.accept()
    assert GAIRSettings.load() == GAIRSettings(str(tmp_path), "onnx", "cpu")
    settings = QgsSettings()
    assert settings.value(engine_jobs.PYTHON_KEY, type=str) == "/opt/engine/bin/python"
    assert engine_jobs.remote_engine_settings() == ("http://gpu-box:8765/", "secret-token-0123456789")
    assert settings.value("gair/allow_download", type=bool) is True
    cancelled = SettingsDialog()
    cancelled.url.setText("")
    cancelled.reject()  # Cancel keeps what was saved
    assert engine_jobs.remote_engine_settings() is not None


class FakeEngine:
    """The engine's answers about the official checkpoint: not cached, 1.6 GB; records the jobs asked."""

    def __init__(self, cached: bool = False) -> None:
        self.cached, self.jobs = cached, []

    def __call__(self, op: str, params: dict) -> dict:
        self.jobs.append(op)
        if op == "official_checkpoint":
            return {"cached": self.cached, "size": 1_634_000_000,
                    "describe": "checkpoint.pth from the hub repo PingL/GAIR (1.6 GB)"}
        return {"path": "/cache/checkpoint.pth"}


def test_desktop_asks_with_the_size_once_before_downloading(saved_settings, monkeypatch):
    from gair_qgis import settings

    settings.set_download_allowed(False)
    asked = []
    monkeypatch.setattr(settings, "_can_ask", lambda: True)
    monkeypatch.setattr(settings, "ask_download", lambda describe: asked.append(describe) or False)
    run = FakeEngine()
    with pytest.raises(RuntimeError) as caught:
        settings.ensure_official_checkpoint({"model": None}, run)
    assert asked == ["checkpoint.pth from the hub repo PingL/GAIR (1.6 GB)"]
    assert "(checkpoint.pth from the hub repo PingL/GAIR (1.6 GB)) is not downloaded" in str(caught.value)
    assert "GAIR settings" in str(caught.value) and run.jobs == ["official_checkpoint"]  # declined: no download
    monkeypatch.setattr(settings, "ask_download", lambda describe: asked.append(describe) or True)
    settings.ensure_official_checkpoint({"model": None}, run)
    assert run.jobs[-1] == "fetch_official_checkpoint" and len(asked) == 2
    settings.ensure_official_checkpoint({"model": None}, run)
    assert len(asked) == 2  # asked once per session


def test_headless_downloads_only_with_the_setting(saved_settings, monkeypatch):
    from gair_qgis import settings

    monkeypatch.delenv("GAIR_CHECKPOINT", raising=False)
    monkeypatch.setattr(settings, "ask_download", lambda describe: pytest.fail("nobody can answer headless"))
    settings.set_download_allowed(False)
    assert not settings._can_ask()  # tests, like qgis_process, run without the QGIS desktop
    run = FakeEngine()
    with pytest.raises(RuntimeError, match=r"^No GAIR model is set .*1\.6 GB.*python -m engine fetch"):
        settings.ensure_official_checkpoint({"model": None}, run)
    settings.set_download_allowed(True)
    settings.ensure_official_checkpoint({"model": None}, run)
    assert run.jobs == ["official_checkpoint", "official_checkpoint", "fetch_official_checkpoint"]
    cached = FakeEngine(cached=True)
    settings.ensure_official_checkpoint({"model": None}, cached)
    settings.ensure_official_checkpoint({"model": "/my/model.pth"}, cached)  # a model of its own: nothing asked
    assert cached.jobs == ["official_checkpoint"]


def test_the_question_names_the_size_and_the_alternative(qgis_app, monkeypatch):
    from qgis.PyQt.QtWidgets import QMessageBox

    from gair_qgis import settings

    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *args: asked.append(args) or QMessageBox.Yes)
    assert settings.ask_download("checkpoint.pth from the hub repo PingL/GAIR (1.6 GB)")
    (_, title, text, buttons, default), = asked
    assert title == "GAIR model" and "checkpoint.pth from the hub repo PingL/GAIR (1.6 GB)" in text
    assert "GAIR settings" in text and default == QMessageBox.No  # declining is the default
    monkeypatch.setattr(QMessageBox, "question", lambda *args: QMessageBox.No)
    assert not settings.ask_download("checkpoint.pth")
