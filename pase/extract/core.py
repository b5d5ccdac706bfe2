"""The extraction core: :func:`extract_files` and what it runs.

Choosing the backend (:func:`choose_backend`) and the CPU threads (:func:`auto_num_threads`),
planning the batches, encoding them (:func:`encode_batch`) or streaming a long file
(:func:`extract_streamed`), and counting and reporting what happened (:class:`ExtractSummary`).
The inputs, the writers, the index and the command line have modules of their own in
:mod:`pase.extract`, whose docstring describes the output layout, batching and threads.
"""

from __future__ import annotations

import math
import os
import time
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pase.audio import (
    HOP,
    MIN_SAMPLES,
    SAMPLE_RATE,
    AudioError,
    audio_info,
    load_audio,
    num_frames,
    os_problem,
    read_blocks,
    write_atomic,
)
from pase.extract import index
from pase.extract.inputs import Job, resolve_inputs
from pase.extract.writers import (
    FORMATS,
    LAYERS,
    FeaturesNotFinite,
    Format,
    Layers,
    NpyWriter,
    check_finite,
    save_features,
)

if tp.TYPE_CHECKING:
    from pase.encoder import Encoder

#: Files longer than this are not batched but streamed through ``Encoder.infer_long``.
LONG_SECONDS = 30.0
#: On CPU, files up to this long are batched by equal frame count (the rest go one by one).
SHORT_SECONDS = 2.0
#: Files per batch of short files on CPU, and of any files on CUDA, when ``batch_size`` is not given.
AUTO_BATCH = 8
#: What runs the encoder: PyTorch, or ONNX Runtime on a cached ONNX export (:mod:`pase.onnx`; files
#: over ``LONG_SECONDS`` still stream through PyTorch), or ``auto`` (:func:`choose_backend`).
BACKENDS = ("auto", "torch", "onnxruntime")
DEFAULT_BACKEND = "auto"
#: ``auto`` picks ONNX Runtime on the CPU when the model's export is already cached or the job has
#: at least this much audio to extract. ONNX Runtime ran 1.4-2.3x faster than PyTorch in every cell
#: of bench/onnx_speed.py (bench/results/onnx.json: 0.008-0.014 s saved per second of audio) and the
#: one-time export took 10 s there, so it repays itself from 12-20 minutes of audio; below that the
#: export costs more than it saves and PyTorch is the faster choice.
AUTO_ONNX_SECONDS = 1800.0
#: tqdm's default layout, but always in files/s (its default flips to s/file below 1 file/s).
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"


@dataclass
class ExtractSummary:
    """What :func:`extract_files` did. ``failures`` holds ``(path, problem)`` pairs."""

    extracted: int = 0
    skipped: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    outputs: list[Path] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    @property
    def real_time_factor(self) -> float:
        """Seconds of audio extracted per second of wall time (``x real time``)."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def __str__(self) -> str:
        return f"extracted {self.extracted}, skipped {self.skipped}, failed {self.failed}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _durations(jobs: list[Job]) -> list[float]:
    """Seconds per job from the file header; 0 where it is unreadable (loading reports why)."""
    seconds = []
    for job in jobs:
        try:
            frames, sr = audio_info(job.source)
            seconds.append(frames / sr)
        except AudioError:
            seconds.append(0.0)
    return seconds


def choose_backend(
    requested: str,
    encoder: Encoder,
    layers: Layers,
    device: str,
    jobs: list[Job],
    overwrite: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[str, str]:
    """The backend that runs ``encoder`` (``torch`` or ``onnxruntime``) and, for ``auto``, why.

    ``auto``: ONNX Runtime when the device is the CPU, ONNX Runtime is installed, the encoder is a
    QRNN or v1 one (LSTM and GRU do not export) and either its export is cached or ``jobs`` hold at
    least :data:`AUTO_ONNX_SECONDS` of audio not yet extracted; PyTorch otherwise."""
    if requested != "auto":
        return requested, ""
    if not device.startswith("cpu"):
        return "torch", f"{device} runs PyTorch"
    from pase.onnx import EXPORTABLE_RNNS, cached_export_path, runtime_problem

    if encoder.config.rnn not in EXPORTABLE_RNNS:
        return "torch", f"a {encoder.config.rnn.upper()} encoder does not export to ONNX"

    problem = runtime_problem()
    if problem is not None:
        return "torch", f"onnxruntime: {problem}"
    if cached_export_path(encoder, layers, cache_dir).is_file():
        return "onnxruntime", "its ONNX export is cached"
    todo = [job for job in jobs if overwrite or not job.output.exists()]
    total = 0.0
    for seconds in _durations(todo):
        total += seconds
        if total >= AUTO_ONNX_SECONDS:
            return "onnxruntime", f"at least {AUTO_ONNX_SECONDS / 60:.0f} min of audio repay the ONNX export"
    return "torch", f"{total / 60:.1f} min of audio do not repay an ONNX export"


def _chunks(items: list[Job], size: int) -> list[list[Job]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _plan(
    jobs: list[Job], seconds: list[float], batch_size: int, max_seconds: float, exact: bool
) -> list[list[Job]]:
    """Batches of up to ``batch_size`` jobs; jobs longer than ``max_seconds`` get one of their own.

    ``exact``: a batch only holds files with the same frame count (from the header); otherwise
    files are sorted by duration and neighbours share a batch.
    """
    alone = [[jobs[i]] for i in range(len(jobs)) if seconds[i] > max_seconds]
    rest = sorted((seconds[i], i) for i in range(len(jobs)) if seconds[i] <= max_seconds)
    if not exact:
        return alone + _chunks([jobs[i] for _, i in rest], batch_size)
    buckets: dict[int, list[Job]] = {}
    for sec, i in rest:
        buckets.setdefault(math.ceil(round(sec * SAMPLE_RATE) / HOP), []).append(jobs[i])
    return alone + [batch for bucket in buckets.values() for batch in _chunks(bucket, batch_size)]


def auto_num_threads(seconds: list[float], processes_here: int = 1) -> int:
    """CPU threads per process: 1 when most files are short (see :mod:`pase.extract`), else the
    available cores divided by the processes on this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if seconds and sorted(seconds)[len(seconds) // 2] <= SHORT_SECONDS:
        return 1
    return max(1, cores // max(1, processes_here))


def encode_batch(
    encoder: Encoder,
    wavs: list[np.ndarray],
    layers: Layers = "final",
    long_seconds: float = LONG_SECONDS,
    window_seconds: float | None = None,
    exact: bool = False,
) -> list[np.ndarray]:
    """Features of 16 kHz mono waveforms (``wavs[i]: [T_i]``), each ``[F_i, D]`` or ``[L, F_i, D]``.

    Waveforms longer than ``long_seconds`` are streamed one by one with ``infer_long``; the
    others are zero-padded into one ``[B, T_max]`` batch (no padding for one), run with
    ``lengths=``, and each is cut to its own frame count. ``exact``: one batch per frame count
    ``ceil(T / 160)``, so padding changes nothing and each output equals ``encoder(wav)`` up to
    float rounding.
    """
    import torch

    device = next(encoder.parameters()).device
    feats: dict[int, np.ndarray] = {}
    short = []
    with torch.inference_mode():
        for i, w in enumerate(wavs):
            if len(w) <= long_seconds * SAMPLE_RATE:
                short.append(i)
                continue
            kwargs = {} if window_seconds is None else {"window_seconds": window_seconds}
            wav = torch.from_numpy(w).to(device)
            feats[i] = encoder.infer_long(wav, layers=layers, **kwargs).float().cpu().numpy()
        groups: dict[int, list[int]] = {}
        for i in short:
            groups.setdefault(math.ceil(len(wavs[i]) / HOP) if exact else 0, []).append(i)
        for group in groups.values():
            feats.update(_encode_padded(encoder, wavs, group, layers, device))
    return [feats[i] for i in range(len(wavs))]


def _encode_padded(
    encoder: Encoder, wavs: list[np.ndarray], rows: list[int], layers: Layers, device: tp.Any
) -> dict[int, np.ndarray]:
    """``wavs[i]`` for ``i`` in ``rows``, zero-padded into one batch -> ``{i: features}``."""
    import torch

    x = torch.zeros(len(rows), max(len(wavs[i]) for i in rows))
    for row, i in enumerate(rows):
        x[row, : len(wavs[i])] = torch.from_numpy(wavs[i])
    lengths = torch.tensor([len(wavs[i]) for i in rows], dtype=torch.long, device=device)
    x = x.to(device)
    if layers == "final":
        out, frames = encoder(x, lengths=lengths)
    else:
        states, frames = encoder.extract_features(x, lengths=lengths)
        out = torch.stack(states, dim=1)  # [B, L, F, D]
    return {i: out[row, ..., : int(frames[row]), :].float().cpu().numpy() for row, i in enumerate(rows)}


class LengthMismatch(Exception):
    """The decoded audio is not as long as its header said (streamed extraction then reads it whole)."""


def extract_streamed(
    encoder: Encoder, job: Job, fmt: Format, layers: Layers, window_seconds: float | None
) -> tuple[tuple[int, ...], int]:
    """Features of one long file, read in blocks and written as they are computed, in memory
    bounded by the window (``.npy``; ``.safetensors`` is written whole, as its writer needs the
    tensors at once). Returns ``(shape, samples)``. Raises :class:`AudioError` for a bad file,
    :class:`FeaturesNotFinite`, and :class:`LengthMismatch` when the header was wrong."""
    import torch

    expected, blocks = read_blocks(job.source)
    frames, dims = num_frames(expected), encoder.embedding_dim
    shape = (frames, dims) if layers == "final" else (encoder.num_layers, frames, dims)
    seen = [0]

    def counted() -> tp.Iterator[np.ndarray]:
        for block in blocks:
            seen[0] += len(block)
            yield block

    kwargs = {} if window_seconds is None else {"window_seconds": window_seconds}
    with torch.inference_mode():
        pieces = (
            check_finite(piece.float().cpu().numpy())
            for piece in encoder.infer_long_blocks(counted(), layers=layers, **kwargs)
        )
        if fmt == "safetensors":
            feats = np.concatenate(list(pieces), axis=-2)
            if seen[0] != expected:
                raise LengthMismatch
            save_features(job.output, feats, fmt, layers, job.source)
            return feats.shape, seen[0]

        def write(tmp: str) -> None:
            writer = NpyWriter(tmp, shape)
            try:
                done = 0
                for piece in pieces:
                    if done + piece.shape[-2] > frames:
                        raise LengthMismatch
                    writer.write(done, piece)
                    done += piece.shape[-2]
                if done != frames or seen[0] != expected:
                    raise LengthMismatch
            finally:
                writer.close()

        write_atomic(job.output, write)
    return shape, seen[0]


def extract_files(
    inputs: tp.Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    encoder: Encoder,
    *,
    fmt: Format = "npy",
    layers: Layers = "final",
    batch_size: int | None = None,
    overwrite: bool = False,
    long_seconds: float = LONG_SECONDS,
    window_seconds: float | None = None,
    progress: bool = False,
    report: tp.Callable[[str], None] | None = None,
    shard: tuple[int, int] = (0, 1),
    num_threads: int | tp.Literal["auto"] | None = None,
) -> ExtractSummary:
    """Extract features of every input into ``out_dir`` (layout: :mod:`pase.extract`).

    ``shard=(rank, world_size)`` processes only this rank's share of the inputs and leaves the
    index part for the caller to merge (:func:`merge_index`, after every rank is done); input
    problems are then reported by rank 0 only. With one rank the index is merged here.

    ``num_threads`` (CPU only) sets torch's intra-op threads for this process: a number, or
    ``"auto"`` for :func:`auto_num_threads` over this run's files (sharing the cores with the
    ``LOCAL_WORLD_SIZE`` processes torchrun started here); None leaves torch's setting alone.

    ``encoder`` should be in eval mode (see :func:`pase.load_encoder`). ``batch_size`` defaults to
    equal-length batches of short files on CPU and 8 on CUDA (:mod:`pase.extract`). Existing
    outputs are skipped unless ``overwrite``. Each bad input is counted in ``summary.failed``, recorded in
    ``summary.failures`` and passed to ``report`` as one line ``"<path>: <problem>"`` (use
    ``tqdm.write`` there when ``progress`` is on); it never stops the run. ``progress`` shows a
    tqdm bar on stderr with files/s and x-real-time.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    if layers not in LAYERS:
        raise ValueError(f"layers must be one of {LAYERS}, not {layers!r}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    if window_seconds is not None:
        from pase.encoder import MIN_WINDOW_SECONDS

        if not (math.isfinite(window_seconds) and window_seconds >= MIN_WINDOW_SECONDS):
            raise ValueError(
                f"window_seconds must be finite and >= {MIN_WINDOW_SECONDS}, not {window_seconds}"
            )
    if num_threads is not None and num_threads != "auto" and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1 or 'auto', not {num_threads!r}")
    rank, world_size = shard
    if not 0 <= rank < world_size:
        raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size, not {shard}")
    from pase.progress import progress as progress_bar

    start = time.perf_counter()
    out = Path(out_dir)
    summary = ExtractSummary()
    bar = progress_bar(total=0, unit="file", disable=not progress, bar_format=BAR_FORMAT)

    def fail(path: str | os.PathLike[str], problem: str) -> None:
        summary.failed += 1
        summary.failures.append((str(path), problem))
        if report is not None:
            report(_one_line(f"{path}: {problem}"))

    jobs, problems = resolve_inputs(inputs, out, "." + fmt)
    if rank == 0:
        for path, problem in problems:
            fail(path, problem)
    # Shard before looking at existing outputs: another rank may already be writing its own.
    jobs = jobs[rank::world_size]
    if world_size > 1:
        bar.set_description_str(f"rank {rank}/{world_size}")
    todo = [j for j in jobs if overwrite or not j.output.exists()]
    summary.skipped = len(jobs) - len(todo)
    done = set(todo)
    # An output whose run died between writing it and appending its line gets the line now.
    for job in index._unindexed([j for j in jobs if j not in done], out):
        try:
            index._append_index(out, index._existing_record(job, out), rank)
        except (OSError, ValueError) as exc:
            fail(job.output, f"existing output not in the index and unreadable ({_problem(exc)})")
    bar.total = len(todo)
    bar.refresh()
    on_cpu = next(encoder.parameters()).device.type == "cpu"
    exact = batch_size is None and on_cpu
    # Headers give durations for batching, the thread default and streaming long files.
    seconds = _durations(todo)
    if num_threads is not None and on_cpu:
        import torch

        here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(auto_num_threads(seconds, here) if num_threads == "auto" else num_threads)
    long_jobs = {j for j, sec in zip(todo, seconds, strict=True) if sec > long_seconds}
    if batch_size == 1:
        batches = [[job] for job in todo]  # input order
    elif exact:
        batches = _plan(todo, seconds, AUTO_BATCH, SHORT_SECONDS, exact=True)
    else:
        batches = _plan(todo, seconds, batch_size or AUTO_BATCH, long_seconds, exact=False)

    def done_one(job: Job, shape: tuple[int, ...], samples: int) -> None:
        try:
            index._append_index(out, index._index_record(job, out, shape, samples, fmt, layers), rank)
        except OSError as exc:
            fail(
                index._index_part(out, rank),
                f"cannot append the line of {job.output} to the index ({_problem(exc)}); "
                "the output is kept and the next run lists it",
            )
        else:
            summary.extracted += 1
            summary.outputs.append(job.output)
            summary.audio_seconds += samples / SAMPLE_RATE

    for batch in batches:
        if len(batch) == 1 and batch[0] in long_jobs:
            job = batch[0]
            try:
                shape, samples = extract_streamed(encoder, job, fmt, layers, window_seconds)
            except LengthMismatch:
                pass  # a header that lied about the length: read the file whole below
            except AudioError as err:
                fail(err.path, err.problem)
                bar.update(1)
                continue
            except OSError as exc:
                fail(job.output, f"cannot write output ({_problem(exc)})")
                bar.update(1)
                continue
            except (RuntimeError, ValueError) as exc:
                fail(job.source, _extraction_problem(exc))
                bar.update(1)
                continue
            else:
                done_one(job, shape, samples)
                bar.update(1)
                continue
        loaded: list[tuple[Job, np.ndarray]] = []
        for job in batch:
            try:
                loaded.append((job, load_audio(job.source, min_samples=MIN_SAMPLES)))
            except AudioError as err:
                fail(err.path, err.problem)
                bar.update(1)
        if not loaded:
            continue
        try:
            wavs = [w for _, w in loaded]
            feats = encode_batch(encoder, wavs, layers, long_seconds, window_seconds, exact=exact)
        except (RuntimeError, ValueError) as exc:  # e.g. out of memory: report, keep going
            for job, _ in loaded:
                fail(job.source, _extraction_problem(exc))
            bar.update(len(loaded))
            continue
        for (job, wav), f in zip(loaded, feats, strict=True):
            if not np.isfinite(f).all():
                fail(job.source, str(FeaturesNotFinite()))
            else:
                try:
                    save_features(job.output, f, fmt, layers, job.source)
                except OSError as exc:
                    fail(job.output, f"cannot write output ({_problem(exc)})")
                else:
                    done_one(job, f.shape, len(wav))
            bar.update(1)
        elapsed = time.perf_counter() - start
        bar.set_postfix_str(f"{summary.audio_seconds / max(elapsed, 1e-9):.1f}x real time")
    bar.close()
    if world_size == 1:
        index.merge_reported(out, fail)
    summary.wall_seconds = time.perf_counter() - start
    return summary


def _problem(exc: BaseException) -> str:
    return os_problem(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"


def _extraction_problem(exc: Exception) -> str:
    if isinstance(exc, FeaturesNotFinite):
        return str(exc)
    return f"extraction failed ({type(exc).__name__}: {exc})"
