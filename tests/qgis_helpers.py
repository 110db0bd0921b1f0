"""Run the packaged plugin the way users get it: installed from the zip into a throwaway QGIS profile.

`QgisProcess` drives Debian's `qgis_process.bin` (the `qgis_process` wrapper adds --noversioncheck, which
3.22 rejects) with QGIS_CUSTOM_CONFIG_PATH pointing at a temporary folder, offscreen, and the venv's
site-packages on PYTHONPATH so the plugin finds torch, rasterio, ... but imports `engine` only from its own
folder (the editable install's .pth hook is not read from PYTHONPATH). `QgisDesktop` starts the real QGIS desktop
the same way, with the plugin enabled at launch, and runs a Python file in it (`--code`). `loaded_plugin` loads
the plugin inside the pytest process through qgis.utils, with pytest-qgis's stub iface.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "gair_qgis"
QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"
QGIS_DESKTOP = shutil.which("qgis.bin") or "/usr/bin/qgis.bin"
PLUGINS_SUBDIR = Path("profiles", "default", "python", "plugins")


def build_plugin_zip(output: Path, root: Path = ROOT) -> Path:
    """Build the plugin zip with scripts/package_plugin.py (loaded by path: scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("package_plugin", ROOT / "scripts" / "package_plugin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_zip(output, root=root)


def unzip_plugin(zip_path: Path, plugins_dir: Path) -> Path:
    """Extract like QGIS's "Install from ZIP" does and return the plugin folder."""
    plugins_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(plugins_dir)
    plugin_dir = plugins_dir / PLUGIN
    if not (plugin_dir / "__init__.py").is_file():
        raise AssertionError(f"{zip_path} did not unpack to {plugin_dir}/__init__.py")
    return plugin_dir


def _qgis_environment(config_dir: Path) -> dict[str, str]:
    """The caller's environment for a QGIS child process: the venv's packages importable, nothing of this checkout
    (no PYTHONPATH to it), a private runtime folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "QGIS_OPTIONS_PATH",
                                                               "QGIS_CUSTOM_CONFIG_PATH")}
    site_dirs = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env.update(PYTHONPATH=os.pathsep.join(site_dirs), XDG_RUNTIME_DIR=str(config_dir / "runtime"))
    (config_dir / "runtime").mkdir(mode=0o700, parents=True, exist_ok=True)
    return env


class QgisProcessError(AssertionError):
    """qgis_process failed; the message carries its command line, exit code and output."""


class QgisProcess:
    """qgis_process on a private QGIS profile rooted at `config_dir`."""

    def __init__(self, config_dir: Path, timeout: float = 300.0) -> None:
        if not os.access(QGIS_PROCESS, os.X_OK):
            raise QgisProcessError(f"{QGIS_PROCESS} not found: install QGIS 3.22 (`make test` does it with apt-get)")
        self.config_dir = Path(config_dir)
        self.timeout = timeout
        self.plugins_dir.mkdir(parents=True, exist_ok=True)

    @property
    def plugins_dir(self) -> Path:
        return self.config_dir / PLUGINS_SUBDIR

    def env(self) -> dict[str, str]:
        env = _qgis_environment(self.config_dir)
        env.update(QGIS_CUSTOM_CONFIG_PATH=str(self.config_dir), QT_QPA_PLATFORM="offscreen")
        return env

    def run(self, *args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        """`qgis_process.bin ARGS`; with check, a non-zero exit raises QgisProcessError showing the output."""
        command = [QGIS_PROCESS, *args]
        result = subprocess.run(command, env=self.env(), capture_output=True, text=True,
                                timeout=timeout or self.timeout, stdin=subprocess.DEVNULL,
                                cwd=self.config_dir)  # not the checkout: its engine/ must not be importable
        if check and result.returncode != 0:
            raise QgisProcessError(f"{' '.join(command)} exited {result.returncode}\n"
                                   f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
        return result

    def run_json(self, *args: str, timeout: float | None = None) -> dict:
        result = self.run("--json", *args, timeout=timeout)
        try:
            return json.loads(result.stdout)
        except json.JSONDecodeError as exc:
            raise QgisProcessError(f"qgis_process --json {' '.join(args)} printed no JSON ({exc})\n"
                                   f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}") from exc

    def install_plugin_zip(self, zip_path: Path) -> Path:
        return unzip_plugin(zip_path, self.plugins_dir)

    def enable_plugin(self, name: str = PLUGIN) -> None:
        self.run("plugins", "enable", name)

    def plugins(self) -> dict[str, bool]:
        """Installed plugins -> loaded (True when enabled and it started without error)."""
        return {name: info["loaded"] for name, info in self.run_json("plugins")["plugins"].items()}

    def algorithm_ids(self, provider: str) -> list[str]:
        providers = self.run_json("list")["providers"]
        if provider not in providers:
            raise QgisProcessError(f"provider {provider!r} not loaded; providers: {sorted(providers)}")
        return sorted(providers[provider]["algorithms"])

    def run_algorithm(self, algorithm: str, timeout: float | None = None, **params: object) -> dict:
        """`qgis_process --json run ALG -- KEY=VALUE ...`; returns the JSON's `results`."""
        args = [f"{key}={value}" for key, value in params.items()]
        output = self.run_json("run", algorithm, "--", *args, timeout=timeout)
        if "results" not in output:
            raise QgisProcessError(f"{algorithm} returned no results: {json.dumps(output)[:2000]}")
        return output["results"]


# Run by QGIS before it loads any plugin ($PYQGIS_STARTUP): a Python error at start is logged (tag "Python error",
# where tests look) instead of opening the modal error dialog that would block an unattended QGIS until the timeout.
STARTUP_HOOK = """
import traceback

import qgis.utils
from qgis.core import Qgis, QgsMessageLog


def _log_python_error(type, value, tb, msg=None, *args, **kwargs):
    text = (msg or "") + "\\n" + "".join(traceback.format_exception(type, value, tb))
    QgsMessageLog.logMessage(text, "Python error", Qgis.Critical)


qgis.utils.showException = _log_python_error
"""


class QgisDesktopError(AssertionError):
    """The QGIS desktop did not start, crashed or did not write its result; the message carries its output."""


class QgisDesktop:
    """The QGIS desktop (qgis.bin) on a private profile folder (`--profiles-path`), run once per `run_code` call.

    QGIS 3.22's desktop cannot run on Qt's offscreen platform (it crashes in QgsClipboard at start), so without a
    DISPLAY it runs under Xvfb (`xvfb-run`, Debian package xvfb; `make test` installs it). The `--code` script runs
    once the main window is up and must end the session: `QTimer.singleShot(0, iface.actionExit().trigger)` (as a
    user quits; plugins are unloaded) while the project is empty, else `QgsApplication.exit(0)`, since with layers in
    an unsaved project QGIS asks whether to save it and waits for an answer.
    """

    def __init__(self, profiles_dir: Path, timeout: float = 300.0, screen: str = "1600x1000") -> None:
        if not os.access(QGIS_DESKTOP, os.X_OK):
            raise QgisDesktopError(f"{QGIS_DESKTOP} not found: install QGIS 3.22 (`make test` does it with apt-get)")
        if not os.environ.get("DISPLAY") and not shutil.which("xvfb-run"):
            raise QgisDesktopError("no DISPLAY and no xvfb-run: install Xvfb (apt-get install xvfb; `make test` "
                                   "does it) to start the QGIS desktop in tests")
        self.profiles_dir = Path(profiles_dir)
        self.timeout, self.screen = timeout, screen
        self.plugins_dir.mkdir(parents=True, exist_ok=True)
        self.startup_hook = self.profiles_dir / "gair_startup_hook.py"
        self.startup_hook.write_text(STARTUP_HOOK)

    @property
    def profile_dir(self) -> Path:
        return self.profiles_dir / "profiles" / "default"

    @property
    def plugins_dir(self) -> Path:
        return self.profile_dir / "python" / "plugins"

    def install_plugin_zip(self, zip_path: Path) -> Path:
        return unzip_plugin(zip_path, self.plugins_dir)

    def enable_plugin(self, name: str = PLUGIN) -> None:
        """Enabled at launch, as after "Install from ZIP" and a restart: [PythonPlugins] name=true in QGIS3.ini."""
        ini = self.profile_dir / "QGIS" / "QGIS3.ini"
        ini.parent.mkdir(parents=True, exist_ok=True)
        text = ini.read_text() if ini.is_file() else ""
        if "[PythonPlugins]" not in text:
            text += "\n[PythonPlugins]\n"
        ini.write_text(text.replace("[PythonPlugins]\n", f"[PythonPlugins]\n{name}=true\n", 1))

    def command(self, code: Path) -> list[str]:
        qgis = [QGIS_DESKTOP, "--profiles-path", str(self.profiles_dir), "--nologo", "--noversioncheck",
                "--code", str(code)]
        if os.environ.get("DISPLAY"):
            return qgis
        return ["xvfb-run", "--auto-servernum", "--server-args", f"-screen 0 {self.screen}x24", *qgis]

    def run_code(self, code: Path, result: Path, timeout: float | None = None) -> dict:
        """Start QGIS, run `code` in it and return the JSON it wrote to `result` (the path is in $GAIR_RESULT)."""
        env = _qgis_environment(self.profiles_dir)
        env.update(GAIR_RESULT=str(result), PYQGIS_STARTUP=str(self.startup_hook),
                   QT_QPA_PLATFORM="xcb")  # not offscreen: see the class docstring
        result.unlink(missing_ok=True)
        process = subprocess.Popen(self.command(code), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, stdin=subprocess.DEVNULL, cwd=self.profiles_dir,
                                   start_new_session=True)  # its own process group: a timeout ends all of it
        try:
            output, _ = process.communicate(timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired as exc:
            os.killpg(process.pid, 9)
            output, _ = process.communicate()
            raise QgisDesktopError(f"QGIS did not quit within {timeout or self.timeout} s\n{output[-4000:]}") from exc
        if not result.is_file():
            raise QgisDesktopError(f"QGIS exited {process.returncode} without writing {result}\n{output[-6000:]}")
        return json.loads(result.read_text())


@contextlib.contextmanager
def loaded_plugin(plugins_dir: Path, name: str = PLUGIN) -> Iterator[object]:
    """Load and start the plugin found in `plugins_dir` inside this QGIS session; yield its instance.

    `gair_qgis` and `engine` modules imported earlier (from the checkout) are set aside and restored afterwards,
    so the code under test is the copy in `plugins_dir`, engine included. Needs pytest-qgis's `qgis_iface`.
    """
    import qgis.utils

    def ours(module_name: str) -> bool:
        return module_name.split(".")[0] in (name, "engine")

    saved_modules = {key: sys.modules.pop(key) for key in list(sys.modules) if ours(key)}
    saved_path = list(sys.path)
    saved_plugin_paths = list(qgis.utils.plugin_paths)
    sys.path.insert(0, str(plugins_dir))  # what QGIS does for its plugin folders (the folder above the plugin)
    qgis.utils.plugin_paths.insert(0, str(plugins_dir))
    try:
        qgis.utils.updateAvailablePlugins()
        if name not in qgis.utils.available_plugins:
            raise AssertionError(f"QGIS does not see {name} in {plugins_dir} (needs __init__.py and metadata.txt)")
        if not qgis.utils.loadPlugin(name):
            importlib.import_module(name)  # loadPlugin hides the reason; importing again raises it
            raise AssertionError(f"qgis.utils.loadPlugin({name!r}) failed")
        if not qgis.utils.startPlugin(name):
            raise AssertionError(f"qgis.utils.startPlugin({name!r}) failed: classFactory or initGui raised "
                                 "(QGIS printed the traceback above)")
        try:
            yield qgis.utils.plugins[name]
        finally:
            if not qgis.utils.unloadPlugin(name):
                raise AssertionError(f"qgis.utils.unloadPlugin({name!r}) failed: unload() raised")
    finally:
        for key in [key for key in sys.modules if ours(key)]:
            del sys.modules[key]
        sys.modules.update(saved_modules)
        sys.path[:] = saved_path
        qgis.utils.plugin_paths[:] = saved_plugin_paths
        qgis.utils.updateAvailablePlugins()
