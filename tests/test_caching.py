"""The cache folders: one root (``$PASE_CACHE_DIR``, ``$XDG_CACHE_HOME/pase``, ``~/.cache/pase``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pase.caching import cache_dir, cache_root


def test_cache_dir_is_a_folder_of_the_first_root_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PASE_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir("eval") == tmp_path / "home" / ".cache" / "pase" / "eval"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("onnx") == tmp_path / "xdg" / "pase" / "onnx"
    monkeypatch.setenv("PASE_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine" and cache_dir("rirs") == tmp_path / "mine" / "rirs"


def test_the_eval_and_audio_caches_use_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pase.data import default_cache_dir as audio_dir
    from pase.eval.features import default_cache_dir as eval_dir

    monkeypatch.setenv("PASE_CACHE_DIR", str(tmp_path))
    assert (audio_dir(), eval_dir()) == (cache_dir("audio"), cache_dir("eval"))


def test_importing_it_does_not_import_torch() -> None:
    code = "import sys, pase.caching; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "False\n"
