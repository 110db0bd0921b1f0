"""Creating the engine's environment ("Plugins > GAIR > Set up engine…"), without Qt: testable with no display.

QGIS's own Python never gets torch: the engine lives in a venv in the QGIS profile, made from a Python >= 3.11 found
on this machine (QGIS's own where it has `venv`, else python3 on PATH), with the engine wheel shipped in the plugin
zip (`gair_qgis/engine_wheel/*.whl`; a source checkout installs itself) and torch: the CPU build, or a CUDA build
matching the driver when `nvidia-smi` reports a GPU. Every command's output goes to a log file the user can read.
Running it again repairs: a venv that no longer starts is recreated, packages are upgraded, the engine reinstalled.
"""
from __future__ import annotations

import datetime
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .engine_link import engine_module

MIN_PYTHON = (3, 11)  # pyproject.toml's requires-python: the engine wheel refuses older Pythons
PYTORCH_INDEX = "https://download.pytorch.org/whl"
# (CUDA major, minor, PyTorch wheel tag), newest first: the newest build the driver's CUDA version can run
CUDA_BUILDS = ((13, 0, "cu130"), (12, 8, "cu128"), (12, 6, "cu126"), (11, 8, "cu118"))
PROBE = ("import json, sys, importlib.util as u; print(json.dumps({'version': list(sys.version_info[:3]), "
         "'venv': bool(u.find_spec('venv')), 'ensurepip': bool(u.find_spec('ensurepip'))}))")
PROBE_TIMEOUT_S = 60.0
_NETWORK = ("Failed to establish a new connection", "Temporary failure in name resolution", "Could not fetch URL",
            "No matching distribution found", "Read timed out", "ProxyError", "SSLError", "Network is unreachable",
            "Connection refused", "Could not find a version that satisfies")

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


class SetupError(Exception):
    """Set-up cannot go on; the message is one paragraph for the user: what failed, the fix, the log file."""


class SetupCancelled(SetupError):
    pass


def run_quietly(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """A short command's output (probes, nvidia-smi); never a console window on Windows."""
    flags = subprocess.CREATE_NO_WINDOW if sys.platform == "win32" else 0
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, env=clean_env(),
                          stdin=subprocess.DEVNULL, creationflags=flags)


def clean_env() -> dict[str, str]:
    """The environment without QGIS's Python settings, which are not the engine's."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP")}
    env.update(PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def venv_python(venv: str, platform: str = sys.platform) -> str:
    return os.path.join(venv, "Scripts", "python.exe") if platform == "win32" else os.path.join(venv, "bin", "python")


# --- which Python makes the venv ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PythonChoice:
    path: str
    origin: str  # where it was found, said to the user
    version: tuple[int, ...]

    def describe(self) -> str:
        return f"Python {'.'.join(map(str, self.version))} ({self.origin}: {self.path})"


def python_candidates(executable: str = sys.executable, exec_prefix: str = sys.exec_prefix,
                      platform: str = sys.platform, which: Callable[[str], str | None] = shutil.which,
                      ) -> list[tuple[str, str]]:
    """(path, origin) of the Pythons worth trying, best first: QGIS's own (the OSGeo4W or macOS bundled one, or
    Linux's /usr/bin/python3 that QGIS links), then python3 on PATH. Inside QGIS sys.executable is the QGIS binary."""
    own = "QGIS's own Python"
    found: list[tuple[str, str]] = []
    if os.path.basename(executable).lower().startswith("python"):
        found.append((executable, own))
    if platform == "win32":
        found.append((os.path.join(exec_prefix, "python.exe"), own))  # OSGeo4W: <root>/apps/Python3xx/python.exe
    else:
        found.append((os.path.join(exec_prefix, "bin", "python3"), own))
        if platform == "darwin":  # QGIS.app/Contents/MacOS/QGIS beside QGIS.app/Contents/MacOS/bin/python3
            found.append((os.path.join(os.path.dirname(executable), "bin", "python3"), own))
        else:
            found.append(("/usr/bin/python3", own))
    for name in ("python3", "python"):
        path = which(name)
        if path:
            found.append((path, f"{name} on PATH"))
    unique, seen = [], set()
    for path, origin in found:
        key = os.path.normcase(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            unique.append((path, origin))
    return unique


def probe_python(path: str, run: Runner = run_quietly) -> tuple[tuple[int, ...] | None, str | None]:
    """(version, problem) of one candidate: it must run, be >= MIN_PYTHON and have venv and ensurepip."""
    if not os.path.isfile(path):
        return None, "not found"
    try:
        done = run([path, "-c", PROBE])
        info = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None, "does not run"
    version = tuple(info["version"])
    if version[:2] < MIN_PYTHON:
        return version, f"{'.'.join(map(str, version))} is older than {'.'.join(map(str, MIN_PYTHON))}"
    if not (info["venv"] and info["ensurepip"]):
        return version, "has no venv/ensurepip module (Debian/Ubuntu: sudo apt install python3-venv)"
    return version, None


def find_python(candidates: Sequence[tuple[str, str]] | None = None, run: Runner = run_quietly) -> PythonChoice:
    """The first candidate that can make the engine's venv; a SetupError naming every one tried and why not."""
    tried = []
    for path, origin in python_candidates() if candidates is None else candidates:
        version, problem = probe_python(path, run)
        if problem is None and version is not None:
            return PythonChoice(path, origin, version)
        tried.append(f"{path} ({problem})")
    need = ".".join(map(str, MIN_PYTHON))
    raise SetupError(f"No Python {need} or newer with venv was found (tried: {'; '.join(tried) or 'none'}). Install "
                     f"Python {need}+ (Debian/Ubuntu: sudo apt install python3 python3-venv; Windows/macOS: "
                     "python.org) and press Set up engine… again, or name an engine Python in GAIR settings.")


# --- torch: CPU or CUDA -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gpu:
    names: tuple[str, ...]
    cuda: tuple[int, int] | None  # the newest CUDA version the driver supports


def parse_nvidia_smi(table: str, listing: str) -> Gpu | None:
    """`nvidia-smi` (its header says "CUDA Version: 12.8") and `nvidia-smi -L` ("GPU 0: NAME (UUID: ...)")."""
    names = tuple(m.group(1).strip() for m in re.finditer(r"^GPU \d+: (.+?)(?: \(UUID:.*)?$", listing, re.M))
    if not names:
        return None
    match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", table)
    return Gpu(names, (int(match.group(1)), int(match.group(2))) if match else None)


def detect_gpu(run: Runner = run_quietly) -> Gpu | None:
    """The NVIDIA GPUs nvidia-smi reports, or None (no driver, no GPU, or nvidia-smi missing)."""
    try:
        table, listing = run(["nvidia-smi"]), run(["nvidia-smi", "-L"])
    except (OSError, subprocess.SubprocessError):
        return None
    if table.returncode != 0 or listing.returncode != 0:
        return None
    return parse_nvidia_smi(table.stdout, listing.stdout)


def torch_build(gpu: Gpu | None) -> tuple[str, str]:
    """(PyTorch index URL, what the user is told): the newest CUDA build the driver runs, else the CPU build."""
    if gpu is not None and gpu.cuda is not None:
        for major, minor, tag in CUDA_BUILDS:
            if gpu.cuda >= (major, minor):
                return f"{PYTORCH_INDEX}/{tag}", f"CUDA {major}.{minor} build for {gpu.names[0]}"
        return f"{PYTORCH_INDEX}/cpu", (f"CPU build: the {gpu.names[0]} driver (CUDA {gpu.cuda[0]}.{gpu.cuda[1]}) is "
                                        "too old for PyTorch's CUDA builds; update the NVIDIA driver and repair")
    return f"{PYTORCH_INDEX}/cpu", "CPU build (no NVIDIA GPU found)"


# --- the plan and its steps ---------------------------------------------------------------------------------------
def engine_source(plugin_dir: str, checkout_root: str | None) -> str:
    """The engine wheel shipped in the plugin zip, or (source checkout) the repository to install from."""
    wheels = sorted(glob.glob(os.path.join(plugin_dir, "engine_wheel", "*.whl")))
    if wheels:
        return wheels[-1]
    if checkout_root and os.path.isfile(os.path.join(checkout_root, "pyproject.toml")):
        return checkout_root
    raise SetupError(f"The plugin carries no engine wheel ({os.path.join(plugin_dir, 'engine_wheel', '*.whl')}): "
                     "reinstall GAIR from its release zip and press Set up engine… again.")


@dataclass(frozen=True)
class SetupPlan:
    python: PythonChoice
    venv: str
    engine: str  # wheel file or source folder
    log_path: str
    torch_index: str | None  # None: no torch step (tests; an engine that runs ONNX models only)
    torch_label: str = ""
    pip_options: tuple[str, ...] = ()  # e.g. --no-index --find-links DIR (tests, offline mirrors)
    system_site_packages: bool = False
    upgrade_pip: bool = True

    def describe(self) -> list[str]:
        """What set-up will do, shown before it starts."""
        return [f"Python: {self.python.describe()}", f"Environment: {self.venv}", f"Engine: {self.engine}",
                f"PyTorch: {self.torch_label or 'not installed'}", f"Log: {self.log_path}"]


def make_plan(engine_dir: str, plugin_dir: str, checkout_root: str | None = None, install_torch: bool = True,
              pip_options: Sequence[str] = (), python: PythonChoice | None = None, run: Runner = run_quietly,
              engine: str | None = None, **options) -> SetupPlan:
    """Everything set-up needs to know, found now (fast: a few probes); SetupError when something is missing.
    `engine`: a wheel to install instead of the plugin's own (offline mirrors, screenshots)."""
    engine = engine or engine_source(plugin_dir, checkout_root)
    python = python or find_python(run=run)
    index, label = torch_build(detect_gpu(run)) if install_torch else (None, "")
    return SetupPlan(python, os.path.join(engine_dir, "venv"), engine, os.path.join(engine_dir, "setup.log"), index,
                     label, tuple(pip_options), **options)


@dataclass(frozen=True)
class Step:
    title: str  # "-ing" phrase: "creating the environment"
    argv: tuple[str, ...]
    weight: float = 1.0
    optional: bool = False  # a failure is logged and set-up goes on
    env: dict[str, str] = field(default_factory=dict)


def venv_works(venv: str, run: Runner = run_quietly) -> bool:
    """The venv's Python starts and is new enough (a moved or removed base Python breaks a venv)."""
    version, _ = probe_python(venv_python(venv), run)
    return version is not None and version[:2] >= MIN_PYTHON


def plan_steps(plan: SetupPlan, venv_ok: bool) -> list[Step]:
    pip = (venv_python(plan.venv), "-m", "pip")
    opts = ("--progress-bar", "off", *plan.pip_options)  # a log of lines, not of redrawn bars
    steps = []
    if not venv_ok:
        create = [plan.python.path, "-m", "venv", "--clear"]
        if plan.system_site_packages:
            create.append("--system-site-packages")
        steps.append(Step(f"creating the environment with {plan.python.describe()}", (*create, plan.venv), 1.0))
    if plan.upgrade_pip:
        steps.append(Step("upgrading pip", (*pip, "install", "--upgrade", "pip", *opts), 1.0, optional=True))
    if plan.torch_index:
        steps.append(Step(f"installing PyTorch ({plan.torch_label})",
                          (*pip, "install", "--upgrade", "torch", "--index-url", plan.torch_index, *opts), 6.0))
    steps.append(Step("installing the GAIR engine and its packages",
                      (*pip, "install", "--upgrade", plan.engine, *opts), 3.0))
    # the same version number may carry other files (a newer plugin zip, a repair): put this engine's files in place
    steps.append(Step("refreshing the GAIR engine's own files",
                      (*pip, "install", "--force-reinstall", "--no-deps", plan.engine, *opts), 0.5))
    return steps


def failure_message(step: Step, code: int | None, output: Sequence[str], log_path: str) -> str:
    """One paragraph: which step failed, pip's own error line, the likely fix, and the log file."""
    errors = [line.strip() for line in output if line.strip().startswith("ERROR:")]
    said = errors[-1] if errors else next((line.strip() for line in reversed(output) if line.strip()), "no output")
    text = "\n".join(output)
    if any(marker in text for marker in _NETWORK):
        fix = ("check the internet connection (a proxy goes in the HTTPS_PROXY environment variable) and press "
               "Set up engine… again")
    elif "No space left on device" in text:
        fix = "free some disk space and press Set up engine… again"
    elif "Permission denied" in text or "Access is denied" in text:
        fix = "make the QGIS profile folder writable and press Set up engine… again"
    elif "ensurepip" in text:
        fix = "install the venv module (Debian/Ubuntu: sudo apt install python3-venv) and press Set up engine… again"
    else:
        fix = "read the log, fix what it names, and press Set up engine… again (it repairs the environment)"
    how = "it was stopped" if code is None else f"exit code {code}"
    return f"Set-up failed while {step.title} ({how}): {said[:300]}. Fix: {fix}. Full log: {log_path}"


# --- running it ---------------------------------------------------------------------------------------------------
Progress = Callable[[float, str], None]
Log = Callable[[str], None]


def run_setup(plan: SetupPlan, progress: Progress | None = None, log: Log | None = None,
              cancel: Callable[[], bool] | None = None, run: Runner = run_quietly) -> dict:
    """Create or repair the environment, step by step; returns the engine's hello (versions, device).
    Raises SetupError (the message names the log file) or SetupCancelled."""
    os.makedirs(os.path.dirname(plan.log_path), exist_ok=True)
    with open(plan.log_path, "a", encoding="utf-8") as log_file:
        def say(line: str) -> None:
            log_file.write(line + "\n")
            log_file.flush()
            if log is not None:
                log(line)

        say(f"=== GAIR engine set-up, {datetime.datetime.now().isoformat(timespec='seconds')}")
        for line in plan.describe():
            say(line)
        venv_ok = os.path.isdir(plan.venv) and venv_works(plan.venv, run)
        if os.path.isdir(plan.venv):
            say("The environment exists and starts: repairing it in place." if venv_ok
                else "The environment exists but does not start: making it again.")
        steps = plan_steps(plan, venv_ok)
        total, done = sum(s.weight for s in steps) + 0.5, 0.0
        for step in steps:
            if progress is not None:
                progress(done / total, step.title[0].upper() + step.title[1:] + "…")
            say(f"--- {step.title}: {' '.join(step.argv)}")
            code, output = _stream(step, _with_status(say, progress, done / total, step), cancel)
            if code != 0:
                if cancel is not None and cancel():
                    raise SetupCancelled(f"Set-up was cancelled while {step.title}; press Set up engine… again to "
                                         f"finish it (it repairs what was left half-done). Log: {plan.log_path}")
                if not step.optional:
                    message = failure_message(step, code, output, plan.log_path)
                    say(message)
                    raise SetupError(message)
                say(f"(not needed: {step.title} failed with exit code {code}; going on)")
            done += step.weight
        if progress is not None:
            progress(done / total, "Starting the engine…")
        hello = engine_hello(venv_python(plan.venv), plan.log_path)
        say(f"The engine answers: {json.dumps(hello)}")
        if progress is not None:
            progress(1.0, "Done")
        return hello


_PIP_NEWS = re.compile(r"^\s*(Collecting|Downloading|Processing|Installing collected packages|Building wheel)\b")


def _with_status(say: Log, progress: Progress | None, fraction: float, step: Step) -> Log:
    """Each log line goes to `say`; pip's news (which package it fetches or installs) also to the status line, so a
    long step (PyTorch is hundreds of MB) visibly moves."""
    title = step.title[0].upper() + step.title[1:]

    def on_line(line: str) -> None:
        say(line)
        if progress is not None and _PIP_NEWS.match(line):
            progress(fraction, f"{title}: {line.strip()[:160]}")

    return on_line


def _stream(step: Step, say: Log, cancel: Callable[[], bool] | None) -> tuple[int | None, list[str]]:
    """Run one step, each output line to `say` as it comes; (exit code, its lines). Cancel terminates it."""
    flags = subprocess.CREATE_NO_WINDOW if sys.platform == "win32" else 0
    try:
        process = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   encoding="utf-8", errors="replace", env={**clean_env(), **step.env},
                                   stdin=subprocess.DEVNULL, creationflags=flags)
    except OSError as exc:
        say(f"ERROR: could not start {step.argv[0]}: {exc}")
        return 127, [f"ERROR: could not start {step.argv[0]}: {exc}"]
    lines: list[str] = []
    stopper = threading.Event()

    def watch() -> None:
        while not stopper.wait(0.2):
            if cancel is not None and cancel():
                process.terminate()
                return

    threading.Thread(target=watch, daemon=True).start()
    try:
        for raw in process.stdout:
            line = raw.rstrip()
            lines.append(line)
            say(line)
    finally:
        process.wait()
        stopper.set()
    return process.returncode, lines


def engine_hello(python: str, log_path: str) -> dict:
    """Start `python -m engine worker` once and return its hello: the proof the environment works."""
    local = engine_module("service.local")
    engine = local.LocalEngine(python, log_path=log_path)
    try:
        return engine.start()
    except local.EngineFailure as exc:
        raise SetupError(f"The environment is made but the engine does not start: {exc}. Fix: press Set up engine… "
                         f"again to repair it. Full log: {log_path}") from None
    finally:
        engine.stop()


def describe_hello(hello: dict) -> str:
    """The engine's hello (or describe_engine result) as one line a person reads."""
    torch = f"torch {hello['torch']}" if hello.get("torch") else "no torch (ONNX models only)"
    onnx = f"onnxruntime {hello['onnxruntime']}" if hello.get("onnxruntime") else "no onnxruntime"
    device = hello.get("device") or "cpu"
    return (f"GAIR engine {hello.get('engine')}, Python {hello.get('python')}, {torch}, {onnx}; device: "
            f"{'CPU' if device == 'cpu' else device}")
