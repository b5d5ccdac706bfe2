"""Feature files of ``pase extract``: the output formats (``.npy``, ``.safetensors``) and their writers.

:func:`save_features` writes features held whole; :class:`NpyWriter` fills a ``.npy`` piece by
piece, for files streamed in bounded memory. Every output is written atomically (a temporary
file renamed into place), and features that are not finite are never written
(:func:`check_finite`). The content of each format is described in :mod:`pase.extract`.
"""

from __future__ import annotations

import errno
import math
import os
import typing as tp
from pathlib import Path

import numpy as np

from pase.audio import HOP, SAMPLE_RATE, write_atomic

#: ``--format``: the kind of file each output is.
Format = tp.Literal["npy", "safetensors"]
#: ``--layers``: the final features ``[F, D]`` or every hidden state ``[L, F, D]``.
Layers = tp.Literal["final", "all"]
FORMATS: tuple[Format, ...] = ("npy", "safetensors")
LAYERS: tuple[Layers, ...] = ("final", "all")


class NpyWriter:
    """A float32 ``.npy`` file of a known ``shape``, filled piece by piece (:meth:`write`).

    The header is numpy's own (the bytes equal ``np.save``); the file's disk space is reserved
    up front with ``posix_fallocate`` where the file system supports it, so a full disk is an
    ``OSError`` at the start, and pieces go in with ``pwrite``, so nothing written stays in this
    process's memory (a memory map would keep every written page resident).
    """

    def __init__(self, path: str, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            with os.fdopen(os.dup(self.fd), "wb") as f:
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False}
                np.lib.format.write_array_header_1_0(f, {**header, "shape": shape})
                self.offset = f.tell()
            size = self.offset + 4 * math.prod(shape)
            try:
                os.posix_fallocate(self.fd, 0, size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
            os.ftruncate(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise

    def write(self, frame: int, piece: np.ndarray) -> None:
        """``piece`` (``[n, D]``, or ``[L, n, D]`` for a 3-d file) at frames ``frame .. frame + n``."""
        piece = np.ascontiguousarray(piece, dtype=np.float32)
        rows = piece[None] if len(self.shape) == 2 else piece
        frames, dims = self.shape[-2], self.shape[-1]
        for layer, data in enumerate(rows):
            view, at = memoryview(data).cast("B"), self.offset + 4 * dims * (layer * frames + frame)
            while view:  # pwrite may write less than asked
                done = os.pwrite(self.fd, view, at)
                view, at = view[done:], at + done

    def close(self) -> None:
        os.close(self.fd)


def save_features(path: Path, feats: np.ndarray, fmt: Format, layers: Layers, source: Path) -> None:
    """Write ``feats`` (``[F, D]`` or ``[L, F, D]``) atomically as ``.npy`` or ``.safetensors``."""
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    if fmt == "npy":

        def write(tmp: str) -> None:
            writer = NpyWriter(tmp, feats.shape)
            try:
                writer.write(0, feats)
            finally:
                writer.close()

    else:
        from safetensors.numpy import save_file

        if layers == "final":
            tensors = {"features": feats}
        else:
            tensors = {f"layer_{i}": np.ascontiguousarray(h) for i, h in enumerate(feats)}
        metadata = {"sample_rate": str(SAMPLE_RATE), "hop": str(HOP), "source": str(source)}

        def write(tmp: str) -> None:
            save_file(tensors, tmp, metadata=metadata)

    write_atomic(path, write)


class FeaturesNotFinite(ValueError):
    """Features with NaN or Inf values: the audio is out of any sane range (e.g. huge samples)."""

    def __init__(self) -> None:
        super().__init__("features contain NaN or Inf (audio out of range?); no output written")


def check_finite(feats: np.ndarray) -> np.ndarray:
    """``feats`` if every value is finite, else :class:`FeaturesNotFinite`."""
    if not np.isfinite(feats).all():
        raise FeaturesNotFinite
    return feats
