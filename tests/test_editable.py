"""The source checkout's editable install (``make``): Python started in the clone's parent folder
still imports the real package. There the clone itself (a folder named ``pase``, as ``git clone``
names it) is a namespace package, which an import-hook editable install loses to."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pase

CHECKOUT = Path(pase.__file__).resolve().parents[1]


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)


def test_python_in_the_clones_parent_folder_imports_the_package(tmp_path: Path) -> None:
    where = "import pase, pathlib; print(pathlib.Path(pase.__file__).resolve())"
    neutral = _python(where, tmp_path)
    if neutral.returncode != 0 or Path(neutral.stdout.strip()) != CHECKOUT / "pase" / "__init__.py":
        pytest.skip("pase is not installed editable from this checkout")
    (tmp_path / "pase").symlink_to(CHECKOUT, target_is_directory=True)
    result = _python("import pase; print(pase.Encoder.__name__)", tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "Encoder", result.stderr
