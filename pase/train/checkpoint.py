"""A run's ``checkpoint.pt``: what it holds, writing and reading it, and the RNG states in it.

The checkpoint is a dict of tensors and plain values (``torch.load(weights_only=True)`` reads
it): ``format`` (:data:`CHECKPOINT_FORMAT`), ``step``, ``train_seconds``, ``model`` (state dict of
encoder, workers and target statistics), ``model_config`` (JSON), ``optimizer``, ``schedule``
(``horizon``, ``base_lrs``), ``data`` (the batch cursor), ``rng`` (one state per rank, as
:func:`rng_state` returns) and ``config`` (the :class:`~pase.train.config.TrainConfig`, JSON).

Each write keeps the checkpoint before it as ``checkpoint.prev.pt`` (a rename: the run folder
holds two checkpoints, twice the disk) and records the SHA-256 of both in ``checkpoint.sha256``,
so a latest checkpoint corrupted on disk is reported and the run resumes from the previous one.
Run folders written before the digests existed resume unverified.
"""

from __future__ import annotations

import os
import random
import re
import typing as tp
from pathlib import Path

import numpy as np
import torch

from pase.audio import write_atomic
from pase.hub import (
    CHECKPOINT_DIGESTS,
    PREVIOUS_CHECKPOINT,
    RUN_CHECKPOINT,
    CheckpointError,
    load_checkpoint,
    read_digests,
    read_latest_checkpoint,
    sha256_file,
)

T = tp.TypeVar("T")

CHECKPOINT = RUN_CHECKPOINT
CHECKPOINT_FORMAT = 1
#: What :meth:`pase.train.Trainer._restore` reads from a checkpoint.
REQUIRED_KEYS = ("step", "model", "optimizer", "data", "rng")
#: The temporary files of a checkpoint write (``.checkpoint.pt.tmp<pid>``), named by the writer's pid.
_TEMPORARY = re.compile(r"\.(checkpoint\.pt|checkpoint\.sha256)\.tmp(\d+)")


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (a full disk, say); the last one written is kept."""


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


def write_checkpoint(out: Path, state: tp.Mapping[str, tp.Any]) -> None:
    """Write ``state`` (the keys of the module docstring, less ``format``) as ``out/checkpoint.pt``,
    the one before it kept as ``checkpoint.prev.pt``.

    The order makes every moment of a killed write resumable: the new checkpoint is written to a
    temporary file, then ``checkpoint.sha256`` records its digest and the current one's, then the
    current one becomes the previous and the new one the current. A failed write (a full disk)
    is a :class:`CheckpointWriteError` and leaves the checkpoints as they were.
    """
    path, previous = out / CHECKPOINT, out / PREVIOUS_CHECKPOINT
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    payload = {"format": CHECKPOINT_FORMAT, **state}
    try:
        torch.save(payload, tmp)
        digests = {CHECKPOINT: sha256_file(tmp)}
        if path.exists():
            recorded = (read_digests(out) or {}).get(CHECKPOINT)
            digests[PREVIOUS_CHECKPOINT] = recorded or sha256_file(path)
        text = "".join(f"{digest}  {name}\n" for name, digest in digests.items())
        write_atomic(out / CHECKPOINT_DIGESTS, lambda name: Path(name).write_text(text))
        if path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except (OSError, RuntimeError, CheckpointError) as err:  # torch.save reports a full disk as RuntimeError
        problem = getattr(err, "strerror", None) or str(err).splitlines()[-1]
        raise CheckpointWriteError(
            f"{path}: cannot write the checkpoint ({problem}); the last checkpoint written is kept"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def has_checkpoint(out: Path) -> bool:
    """Whether ``out`` holds a checkpoint to resume (the latest, or only the previous one after
    a write killed between its renames)."""
    return (out / CHECKPOINT).exists() or (out / PREVIOUS_CHECKPOINT).exists()


def read_checkpoint(path: Path) -> dict[str, tp.Any]:
    """A checkpoint's contents, every tensor on the CPU, its digest verified; a
    :class:`~pase.hub.CheckpointError` naming the file for any checkpoint that cannot be resumed."""
    state = load_checkpoint(path)
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a `pase train` checkpoint (no {', '.join(missing)})")
    return tp.cast(dict[str, tp.Any], state)


def read_latest(
    out: Path, report: tp.Callable[[str], None] | None, read: tp.Callable[[Path], T]
) -> tuple[Path, T]:
    """``(path, read(path))`` of the newest checkpoint of ``out`` that reads: ``checkpoint.pt``,
    else (reported through ``report``) ``checkpoint.prev.pt``. Neither: a
    :class:`~pase.hub.CheckpointError` that says why each was refused."""

    def fell_back(problem: str, path: Path) -> None:
        if report is not None:
            report(f"{problem}; resuming from {path.name}, the checkpoint before it")

    try:
        return read_latest_checkpoint(out, read, fell_back)
    except CheckpointError as err:
        if (out / CHECKPOINT).exists() and not (out / PREVIOUS_CHECKPOINT).exists():
            raise CheckpointError(f"{err}; no previous checkpoint to resume from") from None
        raise


def checkpoint_step(out: Path) -> int:
    """The step of the checkpoint :func:`read_latest` resumes, read through a memory map: the
    weights (hundreds of MB for PASE+ with its optimizer state) stay on disk."""

    def step(path: Path) -> int:
        state = load_checkpoint(path, mmap=True)
        if not isinstance(state, dict) or "step" not in state:
            raise CheckpointError(f"{path}: not a `pase train` checkpoint (no step)")
        return int(state["step"])

    return read_latest(out, None, step)[1]


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes whose process is gone (a ``kill -9``
    mid-write leaves one, as large as a checkpoint); returns those removed."""
    removed = []
    for path in out.glob(".checkpoint.*.tmp*"):
        match = _TEMPORARY.fullmatch(path.name)
        if match is None or (int(match[2]) != os.getpid() and _alive(int(match[2]))):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
