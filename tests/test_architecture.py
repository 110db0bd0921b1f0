"""The import boundaries docs/ENGINE_API.md states, enforced on the source (every import, lazy ones included).

- engine/ never imports qgis or Qt: it runs in any Python, and in its own process beside QGIS.
- engine/config.py, errors.py, params/ and the worker protocol and client use the standard library only (the
  plugin may use them in QGIS's own Python).
- engine/runtime/, engine/io/ and engine/analysis/ never reach torch, directly or through another engine module:
  an ONNX-only install runs the whole inference and analysis path; they and engine/pipeline/ never reach
  engine.model (models come through the GAIRModelLike protocol).
- gair_qgis/ reaches the engine only through gair_qgis/engine_link.py, and ships no top-level module of ours.
- every third-party module the engine imports is declared in pyproject.toml.
"""
from __future__ import annotations

import ast
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "engine"
TORCH_FREE = ("engine.runtime", "engine.io", "engine.analysis")
STDLIB_ONLY = ("engine.config", "engine.errors", "engine.params", "engine.service.protocol", "engine.service.client",
               "engine.service.local", "engine.io.files", "engine.io.bands", "engine.io.palette")
# What of the engine the plugin may use in QGIS's Python (and what its zip ships as gair_qgis/_engine): the
# standard-library modules above; every other engine module runs in the engine's own process.
PLUGIN_CONTRACT = STDLIB_ONLY
# Names `import engine` itself defines (engine/__init__: config and errors, nothing lazy)
ENGINE_PACKAGE_NAMES = {"GAIRConfig", "S2_BANDS", "Cancelled", "GAIRError", "__version__", "__name__", "__file__"}
# import name -> distribution name, where they differ
DISTRIBUTIONS = {"sklearn": "scikit-learn", "PIL": "Pillow", "yaml": "PyYAML", "huggingface_hub": "huggingface_hub"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def engine_modules() -> dict[str, Path]:
    return {module_name(p): p for p in ENGINE.rglob("*.py")}


@cache
def imports_of(path: Path) -> frozenset[str]:
    """Absolute names of every module `path` imports anywhere (function bodies included)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from . import x` imports x
    return frozenset(found)


def reachable(start: str, modules: dict[str, Path]) -> dict[str, str]:
    """Every module reachable from `start` through imports -> the engine module that imports it first."""
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        current = todo.pop()
        for imported in imports_of(modules[current]):
            # importing a.b.c runs a/__init__ and a.b/__init__ too
            parts = imported.split(".")
            for depth in range(1, len(parts) + 1):
                prefix = ".".join(parts[:depth])
                if prefix in seen:
                    continue
                seen[prefix] = current
                if prefix in modules:
                    todo.append(prefix)
    return seen


def test_engine_never_imports_qgis_or_qt() -> None:
    offenders = {name: sorted(i for i in imports_of(path) if i.split(".")[0] in ("qgis", "PyQt5", "PyQt6", "sip"))
                 for name, path in engine_modules().items()}
    assert not {k: v for k, v in offenders.items() if v}


@pytest.mark.parametrize("package", TORCH_FREE)
def test_torch_free_packages_never_reach_torch(package: str) -> None:
    modules = engine_modules()
    assert package in modules, f"{package} is gone: update this test and docs/ENGINE_API.md together"
    for name in sorted(m for m in modules if m == package or m.startswith(package + ".")):
        via = reachable(name, modules)
        assert "torch" not in via, f"{name} reaches torch through {via['torch']}"


@pytest.mark.parametrize("package", ("engine.pipeline", "engine.analysis", "engine.io", "engine.runtime"))
def test_pipelines_take_models_through_the_protocol_only(package: str) -> None:
    """The torch network is loaded by name in runtime/loading.py; nothing else reaches engine.model directly."""
    modules = engine_modules()
    for name in sorted(m for m in modules if m == package or m.startswith(package + ".")):
        via = reachable(name, modules)
        assert "engine.model" not in via, f"{name} reaches engine.model through {via['engine.model']}"


@pytest.mark.parametrize("name", STDLIB_ONLY)
def test_core_modules_use_the_standard_library_only(name: str) -> None:
    modules = engine_modules()
    if name not in modules:
        pytest.fail(f"{name} is missing")
    third_party = {i.split(".")[0] for i in reachable(name, modules)} - set(sys.stdlib_module_names) - {"engine"}
    assert not third_party


def test_plugin_reaches_the_engine_only_through_engine_link() -> None:
    plugin = ROOT / "gair_qgis"
    offenders = []
    for path in plugin.rglob("*.py"):
        if path.name == "engine_link.py":
            continue
        for imported in imports_of(path):
            if imported.split(".")[0] == "engine":
                offenders.append(f"{path.relative_to(ROOT)}: {imported}")
    assert not offenders
    # No package of ours that could shadow a QGIS module if a folder ever landed on sys.path.
    assert not (plugin / "processing").exists() and not (plugin / "engine").exists()


def test_every_third_party_import_of_the_engine_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = [*project["dependencies"], *(d for extra in project["optional-dependencies"].values() for d in extra)]
    names = {d.split(";")[0].split("[")[0].replace(">", "=").replace("<", "=").split("=")[0].strip().lower()
             for d in declared}
    used = {i.split(".")[0] for path in ENGINE.rglob("*.py") for i in imports_of(path)}
    third_party = used - set(sys.stdlib_module_names) - {"engine", "__future__", ""}
    missing = sorted(m for m in third_party if DISTRIBUTIONS.get(m, m).lower().replace("_", "-")
                     not in {n.replace("_", "-") for n in names})
    assert not missing, f"imported by engine/ but not declared in pyproject.toml: {missing}"


def _engine_link_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every engine_module("...")/engine_attrs("...", ...) call in a plugin file."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name in ("engine_module", "engine_attrs"):
                first = node.args[0] if node.args else None
                module = first.value if isinstance(first, ast.Constant) else "<not a literal>"
                found.append((node.lineno, str(module)))
    return found


def contract_offenders(path: Path) -> tuple[int, list[str]]:
    """(engine calls seen, uses outside the contract) of one plugin file: engine_module/engine_attrs names, and
    attributes of the engine package imported from engine_link beyond what engine/__init__ defines eagerly."""
    contract = {name.removeprefix("engine.") for name in PLUGIN_CONTRACT}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    calls = _engine_link_calls(tree) if path.name != "engine_link.py" else []
    offenders = [f"{line}: {module}" for line, module in calls if module not in contract]
    package_names = {alias.asname or alias.name for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("engine_link")
                     for alias in node.names if alias.name == "engine"}
    offenders += [f"{node.lineno}: engine.{node.attr}" for node in ast.walk(tree)
                  if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id in package_names and node.attr not in ENGINE_PACKAGE_NAMES]
    return len(calls), offenders


def test_plugin_uses_only_the_engine_contract() -> None:
    """gair_qgis reaches only the standard-library contract of the engine: the rest runs in the engine's process."""
    calls, offenders = 0, []
    for path in sorted((ROOT / "gair_qgis").rglob("*.py")):
        seen, found = contract_offenders(path)
        calls += seen
        offenders += [f"{path.relative_to(ROOT)}:{problem}" for problem in found]
    assert calls > 5  # the scan sees the plugin's engine calls
    assert not offenders, f"the plugin uses engine modules outside its contract {PLUGIN_CONTRACT}: {offenders}"


def test_the_contract_check_catches_uses_outside_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text('from .engine_link import engine, engine_attrs\n'
                   'x = engine_attrs("analysis.rasters", "palette")\n'
                   'y = engine_module("params")\n'
                   'z = engine.embed_raster, engine.GAIRError\n'
                   'def f(engine):\n'
                   '    return engine_attrs("io.files", "output_files")\n')
    assert contract_offenders(bad) == (3, ["2: analysis.rasters", "4: engine.embed_raster"])
