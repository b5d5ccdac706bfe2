"""Where pase keeps its caches: one folder per kind under one root.

The root is ``$PASE_CACHE_DIR``, else ``$XDG_CACHE_HOME/pase``, else ``~/.cache/pase``; below it
``audio`` (resampled training audio, :mod:`pase.data`), ``eval`` (features,
:mod:`pase.eval.features`), ``onnx`` (exports, :mod:`pase.onnx`) and ``rirs`` (simulated room
impulse responses, :mod:`pase.rirs`). Standard library only, so any module can import it.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$PASE_CACHE_DIR``, else ``$XDG_CACHE_HOME/pase``, else ``~/.cache/pase``."""
    if "PASE_CACHE_DIR" in os.environ:
        return Path(os.environ["PASE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pase"


def cache_dir(kind: str) -> Path:
    """``cache_root() / kind``: the folder of one kind of cache (``"audio"``, ``"eval"``, ...)."""
    return cache_root() / kind
