"""Plugins > GAIR > Set up engine…: the engine's venv made from a local wheel (no network), repaired on a second run,
and every failure said in one paragraph naming the step, the fix and the log file."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gair_qgis import engine_setup
from gair_qgis.engine_setup import SetupCancelled, SetupError, SetupPlan, Step

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"  # QGIS's own Python on Debian; it has numpy, which the engine's CLI imports


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory) -> Path:
    """A wheel of this checkout's engine, built from a copy (the build leaves nothing in the checkout)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("engine", "pyproject.toml", "README.md", "LICENSE"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source),
                    "-w", str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def system_python() -> engine_setup.PythonChoice:
    assert os.path.isfile(SYSTEM_PYTHON), f"{SYSTEM_PYTHON} is missing: run `make test` (it installs QGIS from Debian)"
    return engine_setup.find_python([(SYSTEM_PYTHON, "QGIS's own Python")])


def offline_plan(engine_dir: Path, wheels: Path, python, **changes) -> SetupPlan:
    """Set-up from the local wheel only; the venv sees the system's numpy (the engine's deps are not installed)."""
    engine = changes.pop("engine", None) or str(next(wheels.glob("*.whl")))
    plan = dict(python=python, venv=str(engine_dir / "venv"), engine=engine,
                log_path=str(engine_dir / "setup.log"), torch_index=None,
                pip_options=("--no-index", "--find-links", str(wheels), "--no-deps"), system_site_packages=True,
                upgrade_pip=False)
    return SetupPlan(**{**plan, **changes})


@pytest.fixture(scope="module", autouse=True)
def no_pip_configuration():
    """pip reads only the command line: no find-links or index of this machine's pip.conf or environment."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIP_CONFIG_FILE", os.devnull)
        for name in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="module")
def first_set_up(tmp_path_factory, wheel_dir, system_python):
    """Set-up run once on a fresh profile: (its folder, plan, hello, progress calls, log lines)."""
    folder = tmp_path_factory.mktemp("profile") / "gair_engine"
    plan = offline_plan(folder, wheel_dir, system_python)
    progress, lines = [], []
    hello = engine_setup.run_setup(plan, progress=lambda f, m: progress.append((f, m)), log=lines.append)
    return folder, plan, hello, progress, lines


def test_set_up_makes_an_engine_that_answers_and_a_second_run_repairs_in_place(first_set_up, system_python):
    folder, plan, hello, progress, lines = first_set_up
    assert hello["type"] == "hello" and hello["engine"] == Path(plan.engine).name.split("-")[1]  # gair_qgis-0.1.0-…
    assert hello["python"] == ".".join(map(str, system_python.version)) and hello["torch"] is None
    assert hello["executable"] == str(folder / "venv" / "bin" / "python")
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert progress[0][1].startswith("Creating the environment with Python 3.")
    # pip's news moves the status line within a step
    assert any(m.startswith("Installing the GAIR engine and its packages: Processing ") and m.endswith(".whl")
               for _, m in progress)
    log = (folder / "setup.log").read_text()
    assert log.splitlines() == lines  # the dialog shows what the log file holds
    assert "Successfully installed gair-qgis-" in log and '"type": "hello"' in log
    assert engine_setup.describe_hello(hello) == (f"GAIR engine {hello['engine']}, Python {hello['python']}, no "
                                                  "torch (ONNX models only), no onnxruntime; device: CPU")

    again = []  # the venv starts: repaired in place, not made again
    assert engine_setup.run_setup(plan, progress=lambda f, m: again.append(m))["type"] == "hello"
    assert again[0] == "Installing the GAIR engine and its packages…"
    assert "The environment exists and starts: repairing it in place." in (folder / "setup.log").read_text()


def test_pip_failure_names_the_step_the_fix_and_the_log(first_set_up, wheel_dir, system_python):
    engine_dir = first_set_up[0]
    plan = offline_plan(engine_dir, wheel_dir, system_python, torch_index="https://download.pytorch.org/whl/cpu",
                        torch_label="CPU build")
    with pytest.raises(SetupError) as caught:  # offline: pip finds no torch in the local folder
        engine_setup.run_setup(plan)
    message = str(caught.value)
    assert message.startswith("Set-up failed while installing PyTorch (CPU build) (exit code 1): ERROR: ")
    assert "Fix: check the internet connection" in message
    assert message.endswith(f"Full log: {engine_dir / 'setup.log'}")
    assert "No matching distribution found for torch" in (engine_dir / "setup.log").read_text()

    plan = offline_plan(engine_dir, wheel_dir, system_python, engine=str(wheel_dir / "gair_qgis-9.9-py3-none-any.whl"))
    with pytest.raises(SetupError, match=r"^Set-up failed while installing the GAIR engine and its packages \(exit "
                                         r"code 1\): .*Full log: "):
        engine_setup.run_setup(plan)


def test_a_venv_that_does_not_start_is_made_again(first_set_up):
    folder, plan = first_set_up[:2]
    (folder / "venv" / "bin" / "python").unlink()  # broken (e.g. its base Python was removed)
    steps = []
    assert engine_setup.run_setup(plan, progress=lambda f, m: steps.append(m))["type"] == "hello"
    assert steps[0].startswith("Creating the environment")
    assert "The environment exists but does not start: making it again." in (folder / "setup.log").read_text()


def test_a_venv_without_the_engine_is_a_clear_error(tmp_path, system_python):
    venv = tmp_path / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
    with pytest.raises(SetupError, match=r"^The environment is made but the engine does not start: .*No module named "
                                         r"engine.*Fix: press Set up engine… again"):
        engine_setup.engine_hello(str(venv / "bin" / "python"), str(tmp_path / "setup.log"))


def test_cancel_stops_the_running_step(tmp_path, system_python, monkeypatch):
    slow = Step("waiting", (sys.executable, "-c", "import time; print('started', flush=True); time.sleep(120)"))
    monkeypatch.setattr(engine_setup, "plan_steps", lambda plan, venv_ok: [slow])
    lines = []
    plan = offline_plan(tmp_path / "gair_engine", tmp_path, system_python, engine="unused.whl")
    with pytest.raises(SetupCancelled, match="cancelled while waiting; press Set up engine… again"):
        engine_setup.run_setup(plan, log=lines.append, cancel=lambda: "started" in lines)


def fake_python(folder: Path, name: str, version: str, modules: str = "true") -> str:
    path = folder / name
    path.write_text(f'#!/bin/sh\necho \'{{"version": [{version}], "venv": {modules}, "ensurepip": {modules}}}\'\n')
    path.chmod(0o755)
    return str(path)


def test_no_suitable_python_names_each_one_tried_and_the_fix(tmp_path):
    old = fake_python(tmp_path, "python3.9", "3, 9, 18")
    bare = fake_python(tmp_path, "python3.12", "3, 12, 1", modules="false")
    with pytest.raises(SetupError) as caught:
        engine_setup.find_python([(str(tmp_path / "missing"), "x"), (old, "x"), (bare, "x")])
    message = str(caught.value)
    assert message.startswith("No Python 3.11 or newer with venv was found (tried: ")
    assert f"{tmp_path / 'missing'} (not found)" in message and f"{old} (3.9.18 is older than 3.11)" in message
    assert f"{bare} (has no venv/ensurepip module (Debian/Ubuntu: sudo apt install python3-venv))" in message
    assert "press Set up engine… again" in message
    good = fake_python(tmp_path, "python3.13", "3, 13, 0")
    choice = engine_setup.find_python([(old, "python3 on PATH"), (good, "python3 on PATH")])
    assert choice.path == good and choice.describe() == f"Python 3.13.0 (python3 on PATH: {good})"


def test_candidates_start_with_qgis_own_python(tmp_path):
    found = engine_setup.python_candidates("/usr/bin/qgis", "/usr", "linux", lambda name: f"/opt/bin/{name}")
    assert found == [("/usr/bin/python3", "QGIS's own Python"), ("/opt/bin/python3", "python3 on PATH"),
                     ("/opt/bin/python", "python on PATH")]
    windows = engine_setup.python_candidates(r"C:\OSGeo4W\bin\qgis-bin.exe", r"C:\OSGeo4W\apps\Python312", "win32",
                                             lambda name: None)
    assert windows == [(os.path.join(r"C:\OSGeo4W\apps\Python312", "python.exe"), "QGIS's own Python")]
    mac = engine_setup.python_candidates("/Applications/QGIS.app/Contents/MacOS/QGIS", "/x/Python.framework",
                                         "darwin", lambda name: None)
    assert ("/Applications/QGIS.app/Contents/MacOS/bin/python3", "QGIS's own Python") in mac


def test_the_minimum_python_is_the_engine_wheel_s():
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=" + ".".join(map(str, engine_setup.MIN_PYTHON))


NVIDIA_SMI = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 560.35.03              Driver Version: 560.35.03      CUDA Version: 12.6     |
|-----------------------------------------+------------------------+----------------------+"""


def test_gpu_detection_picks_the_newest_cuda_build_the_driver_runs():
    gpu = engine_setup.parse_nvidia_smi(NVIDIA_SMI, "GPU 0: NVIDIA H200 (UUID: GPU-1234)\nGPU 1: NVIDIA H200 "
                                                    "(UUID: GPU-5678)\n")
    assert gpu == engine_setup.Gpu(("NVIDIA H200", "NVIDIA H200"), (12, 6))
    assert engine_setup.torch_build(gpu) == ("https://download.pytorch.org/whl/cu126",
                                             "CUDA 12.6 build for NVIDIA H200")
    old = engine_setup.Gpu(("Tesla K80",), (11, 4))
    assert engine_setup.torch_build(old)[0] == "https://download.pytorch.org/whl/cpu"
    assert "too old" in engine_setup.torch_build(old)[1]
    assert engine_setup.torch_build(None) == ("https://download.pytorch.org/whl/cpu",
                                              "CPU build (no NVIDIA GPU found)")
    assert engine_setup.parse_nvidia_smi("No devices were found", "") is None

    def no_nvidia_smi(argv):
        raise FileNotFoundError(argv[0])

    assert engine_setup.detect_gpu(no_nvidia_smi) is None


def test_the_engine_comes_from_the_zip_s_wheel_or_the_checkout(tmp_path):
    plugin = tmp_path / "gair_qgis"
    (plugin / "engine_wheel").mkdir(parents=True)
    assert engine_setup.engine_source(str(plugin), str(ROOT)) == str(ROOT)  # a checkout installs itself
    with pytest.raises(SetupError, match="carries no engine wheel .*reinstall GAIR from its release zip"):
        engine_setup.engine_source(str(plugin), None)
    wheel = plugin / "engine_wheel" / "gair_qgis-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    assert engine_setup.engine_source(str(plugin), str(ROOT)) == str(wheel)


def test_failure_hints(tmp_path):
    step = Step("installing PyTorch (CPU build)", ("pip",))
    assert "free some disk space" in engine_setup.failure_message(step, 1, ["OSError: [Errno 28] No space left on "
                                                                            "device"], "L")
    assert "profile folder writable" in engine_setup.failure_message(step, 1, ["ERROR: Permission denied"], "L")
    message = engine_setup.failure_message(step, 2, ["something odd"], "/x/setup.log")
    assert message == ("Set-up failed while installing PyTorch (CPU build) (exit code 2): something odd. Fix: read the "
                       "log, fix what it names, and press Set up engine… again (it repairs the environment). Full "
                       "log: /x/setup.log")


@pytest.fixture
def setup_dialog(qgis_app, monkeypatch, tmp_path, system_python):
    """The dialog on a throwaway profile folder, planning with the system Python and no torch."""
    from gair_qgis import engine_jobs
    from gair_qgis.engine_setup_dialog import EngineSetupDialog

    monkeypatch.setattr(engine_jobs, "profile_engine_dir", lambda: str(tmp_path / "gair_engine"))
    monkeypatch.setattr(engine_jobs, "stop_engine", lambda: None)

    def make(**options):
        return EngineSetupDialog(plan_options={"python": system_python, "install_torch": False, **options})

    return make


def finish(dialog) -> None:
    from qgis.PyQt.QtCore import QCoreApplication

    assert dialog.wait(60)
    for _ in range(5):  # the thread's queued signals
        QCoreApplication.processEvents()


def test_dialog_shows_the_plan_progress_log_and_what_the_engine_reports(setup_dialog, monkeypatch, tmp_path):
    hello = {"engine": "0.1.0", "python": "3.11.2", "torch": "2.13.0", "onnxruntime": "1.20.0", "device": "NVIDIA H200"}

    def fake_setup(plan, progress, log, cancel):
        assert plan.venv == str(tmp_path / "gair_engine" / "venv") and plan.torch_index is None
        progress(0.5, "Installing the GAIR engine and its packages…")
        log("Successfully installed gair-qgis-0.1.0")
        return hello

    monkeypatch.setattr(engine_setup, "run_setup", fake_setup)
    dialog = setup_dialog()
    plan_text = dialog.plan_label.text()
    assert f"Environment: {tmp_path / 'gair_engine' / 'venv'}" in plan_text and "PyTorch: not installed" in plan_text
    assert dialog.start_button.text() == "Set up" and dialog.start_button.isEnabled()
    dialog.start_button.click()
    finish(dialog)
    assert dialog.result == hello and dialog.bar.value() == 1000
    assert dialog.log.toPlainText() == "Successfully installed gair-qgis-0.1.0"
    assert dialog.status.text() == ("Done: GAIR engine 0.1.0, Python 3.11.2, torch 2.13.0, onnxruntime 1.20.0; "
                                    "device: NVIDIA H200. GAIR tools run in this engine now.")
    dialog.reject()


def test_dialog_shows_a_failure_and_offers_repair(setup_dialog, monkeypatch, tmp_path):
    def failing(plan, progress, log, cancel):
        os.makedirs(plan.venv)  # half made
        raise SetupError(f"Set-up failed while installing PyTorch (exit code 1): ERROR: x. Fix: y. Full log: "
                         f"{plan.log_path}")

    monkeypatch.setattr(engine_setup, "run_setup", failing)
    dialog = setup_dialog()
    dialog.start_button.click()
    finish(dialog)
    assert isinstance(dialog.result, SetupError)
    assert "Set-up failed while installing PyTorch" in dialog.status.text()
    assert str(tmp_path / "gair_engine" / "setup.log") in dialog.status.text()
    assert dialog.start_button.text() == "Repair" and dialog.start_button.isEnabled()
    dialog.reject()


def test_dialog_without_a_python_says_what_to_install(setup_dialog, monkeypatch):
    def none_found(*args, **kwargs):
        raise SetupError("No Python 3.11 or newer with venv was found (tried: none). Install Python 3.11+")

    monkeypatch.setattr(engine_setup, "find_python", none_found)
    dialog = setup_dialog(python=None)
    assert dialog.plan_label.text().startswith("No Python 3.11 or newer with venv was found")
    assert not dialog.start_button.isEnabled()
    dialog.reject()
