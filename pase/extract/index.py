"""The index of an output folder, ``DIR/index.jsonl``: one JSON line per output of ``pase extract``.

Each process appends its lines to a part of its own under a shared lock (:func:`_append_index`);
:func:`merge_index` merges the parts into ``index.jsonl`` under the exclusive lock, dropping
lines whose output is gone; an output on disk without a line gets one on the next run
(:func:`_unindexed`, :func:`_existing_record`). The fields and the guarantees are described in
:mod:`pase.extract`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import typing as tp
from pathlib import Path

import numpy as np

from pase.audio import HOP, SAMPLE_RATE, AudioError, audio_info, os_problem, resampled_length, write_atomic
from pase.extract.inputs import Job
from pase.extract.writers import Format, Layers

INDEX_NAME = "index.jsonl"
#: Held shared while a line is appended to an index part, exclusively while parts are merged.
LOCK_NAME = ".index.lock"


def _index_part(out_dir: Path, rank: int) -> Path:
    """This process's index part: one per process, so concurrent runs never share one."""
    return out_dir / f".index.rank{rank}.{socket.gethostname()}-{os.getpid()}.jsonl"


@contextlib.contextmanager
def _index_lock(out_dir: Path, exclusive: bool) -> tp.Iterator[None]:
    """``fcntl.flock`` on ``DIR/.index.lock``: appends share it, a merge holds it alone, so no
    line is appended to a part between the merge reading it and removing it."""
    import fcntl

    fd = os.open(out_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def _append_index(out_dir: Path, record: dict[str, tp.Any], rank: int = 0) -> None:
    """Append one JSON line to this process's index part, one ``write`` on an ``O_APPEND``
    descriptor, under the shared index lock."""
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    with _index_lock(out_dir, exclusive=False):
        fd = os.open(_index_part(out_dir, rank), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.write(fd, line) != len(line):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        finally:
            os.close(fd)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []


def _index_records(out: Path) -> dict[str, str]:
    """``{output: line}`` of ``index.jsonl`` and every part (a later line for an output wins)."""
    records: dict[str, str] = {}
    for path in [out / INDEX_NAME, *sorted(out.glob(".index.rank*.jsonl"))]:
        for line in _read_lines(path):
            try:
                key = json.loads(line)["output"]
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line of a killed run; its output is listed again later
            records[key] = line
    return records


def merge_index(out_dir: str | os.PathLike[str]) -> int:
    """Merge the index parts into ``index.jsonl``, one line per output (a later line for the same
    output replaces the earlier one in place), dropping lines whose output is gone; returns the
    number of lines. Runs under the exclusive index lock; raises ``OSError`` (the parts are then
    kept for the next merge) when the index cannot be written."""
    out = Path(out_dir)
    with _index_lock(out, exclusive=True):
        parts = sorted(out.glob(".index.rank*.jsonl"))
        records = _index_records(out)
        kept = {key: line for key, line in records.items() if (out / key).is_file()}
        if not parts and len(kept) == len(records):
            return len(kept)
        text = "".join(line + "\n" for line in kept.values())
        write_atomic(out / INDEX_NAME, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        for path in parts:
            path.unlink(missing_ok=True)
    return len(kept)


def _existing_record(job: Job, out_dir: Path) -> dict[str, tp.Any]:
    """The index record of an output already on disk (written by a run that died before its line)."""
    if job.output.suffix == ".npy":
        shape = tuple(np.load(job.output, mmap_mode="r").shape)
        fmt: Format = "npy"
    else:
        from safetensors import safe_open

        with safe_open(str(job.output), framework="numpy") as f:
            keys = list(f.keys())
            shapes = [tuple(f.get_slice(k).get_shape()) for k in keys]
        shape = shapes[0] if keys == ["features"] else (len(keys), *shapes[0])
        fmt = "safetensors"
    try:
        frames, sr = audio_info(job.source)
        samples = resampled_length(frames, sr)
    except AudioError:
        samples = shape[-2] * HOP  # the source is gone: its duration to the frame
    return _index_record(job, out_dir, shape, samples, fmt, "final" if len(shape) == 2 else "all")


def _unindexed(jobs: list[Job], out: Path) -> list[Job]:
    """Jobs whose output exists but has no line in the index or its parts."""
    listed = set(_index_records(out))
    return [j for j in jobs if j.output.relative_to(out).as_posix() not in listed]


def merge_reported(out: Path, fail: tp.Callable[[str | os.PathLike[str], str], None]) -> None:
    """:func:`merge_index`, an ``OSError`` (e.g. a full disk) passed to ``fail`` as one line."""
    try:
        merge_index(out)
    except OSError as exc:
        fail(out / INDEX_NAME, f"cannot write the index ({os_problem(exc)}); the next run merges it")


def _index_record(
    job: Job, out_dir: Path, shape: tuple[int, ...], num_samples: int, fmt: Format, layers: Layers
) -> dict[str, tp.Any]:
    return {
        "input": str(job.source.resolve()),
        "output": job.output.relative_to(out_dir).as_posix(),
        "frames": int(shape[-2]),
        "seconds": round(num_samples / SAMPLE_RATE, 6),
        "dims": int(shape[-1]),
        "shape": [int(n) for n in shape],
        "layers": layers,
        "format": fmt,
    }
