"""A run's ``checkpoint.pt``: what it holds, writing and reading it, and the RNG states in it.

The checkpoint is a dict of tensors and plain values (``torch.load(weights_only=True)`` reads
it): ``format`` (:data:`CHECKPOINT_FORMAT`), ``step``, ``train_seconds``, ``model`` (state dict of
encoder, workers and target statistics), ``model_config`` (JSON), ``optimizer``, ``schedule``
(``horizon``, ``base_lrs``), ``data`` (the batch cursor), ``rng`` (one state per rank, as
:func:`rng_state` returns) and ``config`` (the :class:`~pase.train.config.TrainConfig`, JSON).
"""

from __future__ import annotations

import random
import typing as tp
from pathlib import Path

import numpy as np
import torch

from pase.audio import write_atomic

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


def rng_state(distortion_gen: torch.Generator) -> dict[str, tp.Any]:
    """Every RNG this process draws from, as tensors and plain values (weights_only-loadable)."""
    np_state = tp.cast(tuple[tp.Any, ...], np.random.get_state(legacy=True))
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, tp.Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": (int(np_state[3]), float(np_state[4])),
        "python": (py_version, torch.tensor(py_state, dtype=torch.int64), py_gauss),
        "distortions": distortion_gen.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: tp.Mapping[str, tp.Any], distortion_gen: torch.Generator) -> None:
    """Every RNG of this process back to ``state`` (from :func:`rng_state`)."""
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], *state["numpy_gauss"]))
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(int(x) for x in py_state.tolist()), py_gauss))
    distortion_gen.set_state(state["distortions"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def write_checkpoint(path: Path, state: tp.Mapping[str, tp.Any]) -> None:
    """Write ``state`` (the keys of the module docstring, less ``format``) to ``path``, atomically:
    a process killed while writing leaves the previous checkpoint whole."""
    payload = {"format": CHECKPOINT_FORMAT, **state}
    write_atomic(path, lambda tmp: torch.save(payload, tmp))


def read_checkpoint(path: Path) -> dict[str, tp.Any]:
    """A checkpoint's contents, every tensor on the CPU."""
    return tp.cast(dict[str, tp.Any], torch.load(path, map_location="cpu", weights_only=True))


def checkpoint_step(path: Path) -> int:
    """The step a checkpoint was written at, read through a memory map: the weights (hundreds of
    MB for PASE+ with its optimizer state) stay on disk."""
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["step"])
