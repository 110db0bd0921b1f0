"""Every script under scripts/ starts: `--help` of each Python script (offline: nothing is downloaded for --help),
and a syntax check of each shell script. A moved module breaks a script's imports, and this test, at once."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON_SCRIPTS = sorted((ROOT / "scripts").glob("*.py"))
SHELL_SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))
OFFLINE = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT), "PIP_NO_INDEX": "1",
           "HF_HUB_OFFLINE": "1", "NO_PROXY": "*", "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}


def test_the_scripts_folder_is_covered():
    assert len(PYTHON_SCRIPTS) >= 7 and {p.name for p in PYTHON_SCRIPTS} >= {"demo.py", "fetch_geoclip_weights.py"}


@pytest.mark.parametrize("script", PYTHON_SCRIPTS, ids=lambda p: p.name)
def test_python_script_help(script, tmp_path):
    done = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, env=OFFLINE, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:") and script.name in done.stdout.splitlines()[0]


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shell_script_syntax(script):
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
