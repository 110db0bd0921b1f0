"""Build dist/gair_qgis.zip, installable with QGIS "Plugins > Manage and Install Plugins > Install from ZIP".

The zip holds one top folder, `gair_qgis/`, as QGIS expects:
  gair_qgis/...                        the plugin code (repo gair_qgis/)
  gair_qgis/metadata.txt, resources/   from the repo's top level
  gair_qgis/_engine/                   the engine's standard-library contract (CONTRACT_MODULES and the engine modules
                                       they import) under a private name (never a top-level module): all the plugin
                                       runs of the engine in QGIS's own Python
  gair_qgis/engine_wheel/gair_engine-VERSION-py3-none-any.whl
                                       the whole engine as a wheel, which "Set up engine…" installs into the engine's
                                       own environment (jobs run there, in a worker process)
  gair_qgis/LICENSE                    the licence (the QGIS plugin repository requires one)
Caches, hidden files and tests stay out. Entries (of the zip and of the wheel) are sorted and carry fixed times and
permissions, so the same tree always gives the same bytes (reproducible releases, cacheable CI artefacts).

Usage: python scripts/package_plugin.py [--output dist/gair_qgis.zip]
"""
from __future__ import annotations

import argparse
import ast
import base64
import configparser
import hashlib
import io
import os
import re
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.errors import GAIRError  # noqa: E402  (needs ROOT on sys.path when run as a script)

PLUGIN = "gair_qgis"
DEFAULT_OUTPUT = ROOT / "dist" / f"{PLUGIN}.zip"
# What plugins.qgis.org requires; QGIS itself refuses a plugin without name/version/qgisMinimumVersion.
REQUIRED_METADATA = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
                     "repository")
SKIP_DIRS = {"__pycache__", "tests", "test"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".orig", ".rej", ".swp")
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold
FILE_MODE = 0o100644
DIR_MODE = 0o040755
# The engine modules the plugin imports in QGIS's Python (standard library only; tests/test_architecture.py checks
# both that and that the plugin uses nothing else). The zip ships these and the engine modules they import.
CONTRACT_MODULES = ("engine.config", "engine.errors", "engine.params", "engine.io.files", "engine.io.bands",
                    "engine.io.palette", "engine.service.protocol", "engine.service.client", "engine.service.local")
WHEEL_DIR = "engine_wheel"
WHEEL_NAME = "gair_engine"


def _skipped(path: Path) -> bool:
    name = path.name
    if name.startswith(".") or name.endswith(".egg-info"):
        return True
    if path.is_dir():
        return name in SKIP_DIRS
    return name.endswith(SKIP_SUFFIXES) or name == "conftest.py" or (name.startswith("test_") and name.endswith(".py"))


def _walk(source: Path, arc_prefix: str) -> dict[str, Path]:
    """Files under `source` (or the file itself) keyed by their path inside the zip."""
    if source.is_file():
        return {arc_prefix: source}
    files: dict[str, Path] = {}
    for entry in sorted(source.iterdir()):
        if _skipped(entry):
            continue
        files.update(_walk(entry, f"{arc_prefix}/{entry.name}"))
    return files


def collect_files(root: Path = ROOT) -> dict[str, Path]:
    """Map of zip path -> source file for the plugin; raises GAIRError naming what is missing or clashing."""
    plugin_dir = root / PLUGIN
    init = plugin_dir / "__init__.py"
    if not init.is_file():
        raise GAIRError(f"{init} is missing: the plugin package {PLUGIN}/ must exist at the repo root")
    if not re.search(r"^def classFactory\(", init.read_text(encoding="utf-8"), re.MULTILINE):
        raise GAIRError(f"{init} defines no classFactory(iface): QGIS needs it to start the plugin")
    files = _walk(plugin_dir, PLUGIN)
    extras = {"metadata.txt": root / "metadata.txt", "resources": root / "resources", "LICENSE": root / "LICENSE"}
    for name, source in extras.items():
        if not source.exists():
            raise GAIRError(f"{source} is missing: the plugin zip needs {name} from the repo root")
        if (plugin_dir / name).exists():
            raise GAIRError(f"{plugin_dir / name} clashes with {source}, which the zip puts at {PLUGIN}/{name}: "
                            "keep only the top-level one")
        files.update(_walk(source, f"{PLUGIN}/{name}"))
    for name in ("_engine", WHEEL_DIR):
        if (plugin_dir / name).exists():
            raise GAIRError(f"{plugin_dir / name} clashes with what the zip puts at {PLUGIN}/{name}: remove it")
    files.update({f"{PLUGIN}/_engine/{rel}": root / "engine" / rel for rel in contract_files(root)})
    return dict(sorted(files.items()))


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def contract_files(root: Path = ROOT) -> list[str]:
    """Paths (relative to engine/) of the contract modules, every engine module they import (a package's whole
    __init__ chain included) and nothing else; raises GAIRError when a contract module is missing."""
    for module in CONTRACT_MODULES:
        if _module_file(root, module) is None:
            raise GAIRError(f"the engine contract module {module} is missing under {root / 'engine'}")
    todo, seen = list(CONTRACT_MODULES), set()
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
            prefix = ".".join(parts[:depth])
            path = _module_file(root, prefix)
            if path is None:
                continue  # `from . import name` of a name that is not a module
            if prefix in seen:
                continue
            seen.add(prefix)
            package = prefix if path.name == "__init__.py" else prefix.rpartition(".")[0]
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                    todo.extend([target, *(f"{target}.{alias.name}" for alias in node.names)])
                elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "engine":
                    todo.append(node.module)
                elif isinstance(node, ast.Import):
                    todo.extend(a.name for a in node.names if a.name.split(".")[0] == "engine")
    return sorted(_module_file(root, m).relative_to(root / "engine").as_posix() for m in seen)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_engine_wheel(root: Path = ROOT) -> tuple[str, bytes]:
    """(file name, bytes) of a pure-Python wheel of engine/ (PEP 427), written here with fixed entry times so it
    is reproducible and needs no build tool or network: METADATA names the dependencies of pyproject.toml."""
    version = _engine_version(root / "engine" / "__init__.py")
    if version is None:
        raise GAIRError(f"{root / 'engine' / '__init__.py'} defines no __version__: the wheel needs one")
    if not (root / "pyproject.toml").is_file():
        raise GAIRError(f"{root / 'pyproject.toml'} is missing: the engine wheel takes its dependencies from it")
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    dist_info = f"{WHEEL_NAME}-{version}.dist-info"
    metadata = ["Metadata-Version: 2.1", f"Name: {WHEEL_NAME.replace('_', '-')}", f"Version: {version}",
                f"Summary: {project.get('description', 'GAIR engine')}",
                f"Requires-Python: {project.get('requires-python', '>=3.10')}"]
    metadata += [f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])]
    for extra, deps in sorted(project.get("optional-dependencies", {}).items()):
        metadata.append(f"Provides-Extra: {extra}")
        metadata += [f"Requires-Dist: {dep}; extra == \"{extra}\"" for dep in deps]
    contents = {f"engine/{rel}": path.read_bytes() for rel, path in
                ((k.split("/", 1)[1], v) for k, v in _walk(root / "engine", "engine").items())}
    contents[f"{dist_info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    contents[f"{dist_info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: gair package_plugin\nRoot-Is-Purelib: true\n"
                                      b"Tag: py3-none-any\n")
    contents[f"{dist_info}/top_level.txt"] = b"engine\n"
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in sorted(contents.items()))
    contents[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compresslevel=9) as archive:
        for name in sorted(contents):
            archive.writestr(_entry(name, FILE_MODE), contents[name])
    return f"{WHEEL_NAME}-{version}-py3-none-any.whl", buffer.getvalue()


def _engine_version(engine_init: Path) -> str | None:
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', engine_init.read_text(encoding="utf-8"), re.MULTILINE)
    return match.group(1) if match else None


def check_metadata(metadata_path: Path, files: dict[str, Path], engine_init: Path) -> configparser.SectionProxy:
    """QGIS-readable metadata whose version matches the bundled engine and whose icon is in the zip."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(metadata_path.read_text(encoding="utf-8"), source=str(metadata_path))
    except configparser.Error as exc:
        raise GAIRError(f"{metadata_path} is not a valid metadata file: {exc}") from exc
    if not parser.has_section("general"):
        raise GAIRError(f"{metadata_path} has no [general] section")
    general = parser["general"]
    missing = [key for key in REQUIRED_METADATA if not general.get(key, "").strip()]
    if missing:
        raise GAIRError(f"{metadata_path} lacks {', '.join(missing)} in [general]")
    engine_version = _engine_version(engine_init)
    if general["version"] != engine_version:
        raise GAIRError(f"metadata.txt version {general['version']} differs from engine.__version__ "
                        f"{engine_version}: bump both together")
    icon = general.get("icon", "").strip()
    if icon and f"{PLUGIN}/{icon}" not in files:
        raise GAIRError(f"metadata.txt names icon={icon}, which is not in the plugin (looked for {PLUGIN}/{icon})")
    return general


def _directories(arcnames: list[str]) -> list[str]:
    dirs = {"/".join(name.split("/")[:depth]) for name in arcnames for depth in range(1, name.count("/") + 1)}
    return sorted(f"{d}/" for d in dirs)


def _entry(arcname: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(arcname, date_time=ZIP_TIME)
    info.create_system = 3  # unix, so the permission bits below are honoured by unzip
    info.external_attr = mode << 16
    if arcname.endswith("/"):
        info.external_attr |= 0x10  # MS-DOS directory flag
    else:
        info.compress_type = zipfile.ZIP_DEFLATED
    return info


def build_zip(output: Path = DEFAULT_OUTPUT, root: Path = ROOT) -> Path:
    """Write the plugin zip atomically to `output` and return its path."""
    root = Path(root).resolve()
    files = collect_files(root)
    check_metadata(root / "metadata.txt", files, root / "engine" / "__init__.py")
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(handle)
    try:
        wheel_name, wheel = build_engine_wheel(root)
        contents: dict[str, bytes | None] = {name: path.read_bytes() for name, path in files.items()}
        contents[f"{PLUGIN}/{WHEEL_DIR}/{wheel_name}"] = wheel
        with zipfile.ZipFile(tmp_name, "w", compresslevel=9) as archive:
            entries: dict[str, bytes | None] = {**dict.fromkeys(_directories(list(contents))), **contents}
            for arcname in sorted(entries):
                data = entries[arcname]
                if data is None:
                    archive.writestr(_entry(arcname, DIR_MODE), b"")
                else:
                    archive.writestr(_entry(arcname, FILE_MODE), data)
        os.replace(tmp_name, output)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"zip to write (default {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)
    try:
        output = build_zip(args.output)
    except GAIRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with zipfile.ZipFile(output) as archive:
        count = sum(1 for info in archive.infolist() if not info.is_dir())
    print(f"wrote {output} ({count} files, {output.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
