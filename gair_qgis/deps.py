"""Which Python packages the plugin needs, which are missing, and the exact pip command to install them.

Dependency installation is the top complaint about GeoAI plugins, so the message names the interpreter QGIS really
runs (not `python`/`pip` on PATH, which is often another Python) and works when pasted into a terminal/OSGeo4W shell.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys

# import name -> pip name; needed whatever the backend
REQUIRED = {"numpy": "numpy", "rasterio": "rasterio", "pyproj": "pyproj", "shapely": "shapely", "pyogrio": "pyogrio",
            "sklearn": "scikit-learn", "skops": "skops", "PIL": "Pillow"}
# at least one runtime: torch runs everything (official checkpoint, training, ONNX export), onnxruntime runs models
BACKENDS = {"torch": "torch", "onnxruntime": "onnxruntime"}
TORCH_EXTRA = {"safetensors": "safetensors"}


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def python_executable() -> str:
    """The Python interpreter of this QGIS (inside QGIS on Windows/macOS sys.executable is the QGIS binary)."""
    exe = sys.executable or ""
    if os.path.basename(exe).lower().startswith("python"):
        return exe
    names = ("python.exe", "python3.exe") if os.name == "nt" else ("python3", "python")
    for folder in (sys.exec_prefix, os.path.join(sys.exec_prefix, "bin"), os.path.dirname(exe)):
        for name in names:
            candidate = os.path.join(folder, name)
            if os.path.isfile(candidate):
                return candidate
    return shutil.which("python3") or exe or "python3"


def pip_command(packages: list[str]) -> str:
    return f'"{python_executable()}" -m pip install ' + " ".join(packages)


def missing_packages() -> tuple[list[str], list[str]]:
    """(missing required pip names, available backends)."""
    missing = [pip for mod, pip in REQUIRED.items() if not has_module(mod)]
    backends = [mod for mod in BACKENDS if has_module(mod)]
    if "torch" in backends:
        missing += [pip for mod, pip in TORCH_EXTRA.items() if not has_module(mod)]
    return missing, backends


def missing_dependency_message() -> str | None:
    """The full message for the user when something is missing (paragraphs separated by blank lines, each install
    command on its own line so it can be copied), or None when GAIR can run."""
    missing, backends = missing_packages()
    if not missing and backends:
        return None
    parts = []
    if missing:
        parts.append(f"GAIR needs {', '.join(missing)} in the Python that QGIS uses.")
    if not backends:
        parts.append(
            "GAIR needs a model runtime: onnxruntime (small; runs exported ONNX models) or torch (runs the official "
            "checkpoint, trains and exports ONNX). Neither is installed."
        )
    install = missing + ([] if backends else ["onnxruntime"])
    parts.append(f"Install with:\n{pip_command(install)}")
    if not backends:
        parts.append(f"For the official checkpoint, add PyTorch:\n{pip_command(['torch', 'safetensors'])}")
    parts.append("Then restart QGIS.")
    return "\n\n".join(parts)


def missing_dependency_summary() -> str | None:
    """One short sentence for the message bar (the full message goes behind its Details button), or None."""
    missing, backends = missing_packages()
    if not missing and backends:
        return None
    if missing:
        return f"GAIR cannot run yet: {', '.join(missing)} missing in QGIS's Python."
    return "GAIR cannot run yet: no model runtime (onnxruntime or torch) is installed."


def dependency_report() -> list[tuple[str, bool]]:
    """(package, installed) for every package GAIR may use; shown in the settings dialog."""
    names = {**REQUIRED, **BACKENDS, **TORCH_EXTRA}
    return [(pip, has_module(mod)) for mod, pip in names.items()]


def runtime_problem(backend: str = "auto") -> str | None:
    """Why a model cannot run with `backend` here (with the pip command that fixes it), or None."""
    missing, backends = missing_packages()
    if missing or not backends:
        return missing_dependency_message()
    if backend == "torch" and "torch" not in backends:
        return (f"The GAIR backend is set to torch but PyTorch is not installed; install it with "
                f"{pip_command(['torch', 'safetensors'])} or set the backend to auto/onnx in GAIR settings.")
    if backend == "onnx" and "onnxruntime" not in backends:
        return (f"The GAIR backend is set to onnx but onnxruntime is not installed; install it with "
                f"{pip_command(['onnxruntime'])} or set the backend to auto/torch in GAIR settings.")
    return None
