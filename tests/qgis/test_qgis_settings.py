"""GAIR settings: the dialog says which model is loaded; with no model set the official checkpoint is used from the
hub cache, and downloading it needs consent (a question with its size on the desktop, a setting headless)."""
from __future__ import annotations

import pytest

import engine
from engine.runtime.loading import HubCheckpoint


@pytest.fixture
def pretrained_bundle(tmp_path):
    import torch

    torch.manual_seed(1)
    return engine.save_bundle(engine.GAIRModel(engine.GAIRConfig.tiny()), tmp_path / "pretrained",
                              source="engine.pretrain (random init, 120 steps)")


@pytest.fixture
def settings_as(qgis_app):
    """Save plugin settings for one test; the previous ones (and the download consent) come back afterwards."""
    from gair_qgis import settings

    old, old_allow = settings.GAIRSettings.load(), settings.download_allowed_setting()

    def use(path: str, allow_download: bool = False):
        settings.GAIRSettings(path, "torch", "cpu").save()
        settings.set_download_allowed(allow_download)
        settings.clear_model_cache()

    yield use
    old.save()
    settings.set_download_allowed(old_allow)
    settings._download_consent.clear()
    settings.clear_model_cache()


def test_dialog_says_which_model_is_loaded(settings_as, pretrained_bundle):
    from gair_qgis.settings_dialog import NOT_LOADED, SettingsDialog

    settings_as(str(pretrained_bundle))
    dialog = SettingsDialog()
    assert dialog.model_info.text() == NOT_LOADED
    dialog.load_button.click()
    text = dialog.model_info.text()
    fingerprint = engine.load_model(pretrained_bundle, device="cpu").fingerprint
    assert text.splitlines() == [
        "Model: GAIR bundle, 32-d, pretrained 120 steps",
        f"Source: {pretrained_bundle}",
        "Made from: engine.pretrain (random init, 120 steps)",
        "Dimensions: 32",
        "Training steps: 120",
        f"Fingerprint: {fingerprint}",
        "Backend: torch on cpu",
    ]
    assert SettingsDialog().model_info.text() == text  # already loaded: a new dialog shows it at once
    dialog.reject()


def test_dialog_names_the_problem_of_a_missing_model(settings_as, tmp_path):
    from gair_qgis.settings_dialog import SettingsDialog

    settings_as(str(tmp_path / "nowhere.pth"))
    dialog = SettingsDialog()
    dialog.load_button.click()
    assert "nowhere.pth does not exist" in dialog.model_info.text()


@pytest.fixture
def hub(monkeypatch):
    """The hub as the engine sees it: not cached, 1.6 GB; records fetch_official_checkpoint calls."""
    import engine.runtime.loading as loading

    calls = []
    monkeypatch.delenv("GAIR_CHECKPOINT", raising=False)
    monkeypatch.setattr(loading, "official_checkpoint_info",
                        lambda *a, **k: HubCheckpoint("PingL/GAIR", "checkpoint.pth", 1_634_000_000))

    def fetch(allow_download=True, **kwargs):
        calls.append(allow_download)
        raise engine.GAIRError("not downloaded in this test")

    monkeypatch.setattr(loading, "fetch_official_checkpoint", fetch)
    return calls


def test_desktop_asks_with_the_size_before_downloading(settings_as, hub, monkeypatch):
    from gair_qgis import settings

    settings_as("")
    asked = []
    monkeypatch.setattr(settings, "_can_ask", lambda: True)
    monkeypatch.setattr(settings, "ask_download", lambda info: asked.append(info.describe()) or False)
    problem = settings.model_problem(None)
    assert asked == ["checkpoint.pth from the hub repo PingL/GAIR (1.6 GB)"]
    assert "(checkpoint.pth from the hub repo PingL/GAIR (1.6 GB)) is not downloaded" in problem
    assert "GAIR settings" in problem and "without asking" in problem
    with pytest.raises(engine.GAIRError):
        settings.load_model()
    assert hub == [False]  # declined: the worker never downloads
    monkeypatch.setattr(settings, "ask_download", lambda info: asked.append(info.describe()) or True)
    assert settings.model_problem(None) is None and len(asked) == 2
    with pytest.raises(engine.GAIRError):
        settings.load_model()
    assert hub == [False, True]  # agreed: the job may download
    assert settings.model_problem(None) is None and len(asked) == 2  # asked once per session


def test_headless_never_downloads_without_the_setting(settings_as, hub, monkeypatch):
    from gair_qgis import settings

    settings_as("")
    monkeypatch.setattr(settings, "ask_download", lambda info: pytest.fail("nobody can answer headless"))
    assert not settings._can_ask()  # tests, like qgis_process, run without the QGIS desktop
    problem = settings.model_problem(None)
    assert problem.startswith("No GAIR model is set") and "1.6 GB" in problem
    with pytest.raises(engine.GAIRError):
        settings.load_model()
    settings_as("", allow_download=True)
    assert settings.model_problem(None) is None
    with pytest.raises(engine.GAIRError):
        settings.load_model()
    assert hub == [False, True]


def test_offline_problem_is_the_engine_message(settings_as, monkeypatch):
    import engine.runtime.loading as loading
    from gair_qgis import settings

    settings_as("")
    monkeypatch.delenv("GAIR_CHECKPOINT", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(loading, "cached_official_checkpoint", lambda cache_dir=None: None)
    problem = settings.model_problem(None)
    assert problem.startswith("No GAIR model is set") and "HF_HUB_OFFLINE is set" in problem
    assert "python -m engine fetch" in problem


def test_the_question_names_the_size_and_the_alternative(qgis_app, monkeypatch):
    from qgis.PyQt.QtWidgets import QMessageBox

    from gair_qgis import settings

    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *args: asked.append(args) or QMessageBox.Yes)
    assert settings.ask_download(HubCheckpoint("PingL/GAIR", "checkpoint.pth", 1_634_000_000))
    (_, title, text, buttons, default), = asked
    assert title == "GAIR model" and "checkpoint.pth from the hub repo PingL/GAIR (1.6 GB)" in text
    assert "GAIR settings" in text and default == QMessageBox.No  # declining is the default
    monkeypatch.setattr(QMessageBox, "question", lambda *args: QMessageBox.No)
    assert not settings.ask_download(HubCheckpoint("PingL/GAIR", "checkpoint.pth", None))
