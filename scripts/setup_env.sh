#!/usr/bin/env bash
# Idempotent setup behind `make demo` and `make test` on Debian 12:
#   1. QGIS 3.22 from Debian (apt) when /usr/bin/python3 cannot import qgis.core (and xvfb for desktop tests),
#   2. .venv made from /usr/bin/python3 with --system-site-packages (so the venv sees QGIS's Python bindings),
#   3. torch==2.13.0 (CPU wheel) first, then `pip install -e .[dev]`; skipped while the stamp matches.
# Safe to run often: when everything is in place it returns in about a second.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
SYSTEM_PYTHON=/usr/bin/python3
QGIS_PROCESS=/usr/bin/qgis_process.bin
APT_PACKAGES=(qgis python3-qgis qgis-providers)
# Pinned so pip takes the local CPU wheel; any other torch pulls several GB of CUDA packages.
TORCH_PIN="torch==2.13.0"
STAMP="$VENV/.gair-setup.stamp"

log() { echo "[setup] $*" >&2; }
die() { echo "[setup] ERROR: $*" >&2; exit 1; }

# One setup at a time per checkout: parallel make targets would otherwise race on apt and pip.
exec 9<"${BASH_SOURCE[0]}"
flock 9

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "'$*' needs root: run it as root (or install sudo), then re-run make"
    fi
}

install_system_packages() {
    local missing=()
    if ! "$SYSTEM_PYTHON" -c "import qgis.core" >/dev/null 2>&1 || [ ! -x "$QGIS_PROCESS" ]; then
        missing+=("${APT_PACKAGES[@]}")
    fi
    # The desktop start test and scripts/screenshot.py run the QGIS desktop under Xvfb (it crashes on offscreen).
    if ! command -v xvfb-run >/dev/null 2>&1; then
        missing+=(xvfb)
    fi
    # Debian splits venv/ensurepip out of python3; QGIS does not depend on it.
    if ! "$SYSTEM_PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; then
        missing+=(python3-venv)
    fi
    if [ "${#missing[@]}" -eq 0 ]; then
        return
    fi
    command -v apt-get >/dev/null 2>&1 || die "QGIS 3.22 is missing and apt-get is not available: this setup targets Debian 12"
    log "installing Debian packages: ${missing[*]} (QGIS takes a few minutes)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    "$SYSTEM_PYTHON" -c "import qgis.core" || die "qgis.core still does not import after apt-get install"
}

venv_is_usable() {
    [ -x "$VENV/bin/python" ] \
        && grep -qx "include-system-site-packages = true" "$VENV/pyvenv.cfg" 2>/dev/null \
        && grep -qx "home = $(dirname "$SYSTEM_PYTHON")" "$VENV/pyvenv.cfg" 2>/dev/null \
        && "$VENV/bin/python" -c "" >/dev/null 2>&1
}

make_venv() {
    if venv_is_usable; then
        return
    fi
    if [ -e "$VENV" ]; then
        log "$VENV is not a --system-site-packages venv of $SYSTEM_PYTHON: recreating it"
    fi
    log "creating $VENV"
    "$SYSTEM_PYTHON" -m venv --clear --system-site-packages "$VENV"
}

setup_key() {
    # The stamp changes when the dependencies or this script change.
    cat "$ROOT/pyproject.toml" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1
}

install_project() {
    local key
    key="$(setup_key)"
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$key" ]; then
        return
    fi
    local started=$SECONDS
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
    log "installing $TORCH_PIN, then the project with its dev extras"
    "$VENV/bin/python" -m pip install "$TORCH_PIN"
    "$VENV/bin/python" -m pip install -e "$ROOT[dev]"
    "$VENV/bin/python" - "$TORCH_PIN" <<'EOF'
import sys

import qgis.core  # noqa: F401  (the venv must see QGIS's bindings)
import torch

wanted = sys.argv[1].split("==")[1]
if torch.__version__.split("+")[0] != wanted:
    sys.exit(f"torch {torch.__version__} is installed but {wanted} is required: a dependency upgraded it")
EOF
    printf '%s\n' "$key" > "$STAMP.tmp"
    mv "$STAMP.tmp" "$STAMP"
    log "python environment ready in $((SECONDS - started)) s"
}

install_system_packages
make_venv
install_project
