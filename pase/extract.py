"""Batch feature extraction: ``pase extract IN... --out DIR`` and :func:`extract_files`.

Inputs are audio files, folders (searched recursively) and list files. Where each output goes:

- a folder ``in/`` -> ``DIR/<path relative to in/>`` with the suffix replaced
  (``in/a/b.flac`` -> ``DIR/a/b.npy``);
- a file ``x/y.wav`` -> ``DIR/y.npy``;
- a list file, written ``@list.txt`` (any name) or given as a ``.txt`` / ``.lst`` file: one
  input per line, each treated like a command-line input (file or folder); blank lines and lines
  starting with ``#`` are ignored; relative paths are relative to the list file's folder.

Output content (float32, frames first, 100 frames per second, frame ``t`` centred on sample
``160 t``, ``F = ceil(T / 160)`` for ``T`` samples at 16 kHz):

- ``--format npy``: ``--layers final`` -> ``[F, D]``; ``--layers all`` -> ``[L, F, D]``
  (``L = 9`` hidden states for PASE+, in :meth:`Encoder.extract_features` order);
- ``--format safetensors``: ``--layers final`` -> one tensor ``"features"`` ``[F, D]``;
  ``--layers all`` -> ``"layer_0"`` ... ``"layer_{L-1}"``, each ``[F, D]``; the metadata holds
  ``sample_rate``, ``hop`` and ``source``.

``DIR/index.jsonl`` gets one JSON line per written output (appended, one ``write`` per line):
``input`` (absolute path), ``output`` (relative to ``DIR``), ``frames``, ``seconds`` (duration
at 16 kHz), ``dims`` (feature size ``D``), ``shape``, ``layers``, ``format``. A rerun with
``--overwrite`` appends again; the last line for an output describes it.

Files are processed in order of duration. On CUDA, short files are batched (up to
``batch_size`` files of similar length, zero-padded, run with ``lengths=``); in a padded batch
the last ~8 frames of a shorter item (the receptive field of the padding) differ slightly from
its unbatched features. On CPU the default batch size is 1: batching does not speed up CPU
inference (measured: 1 x 4 s ran ~30 % faster per second of audio than 8 x 4 s), and every
output then equals ``encoder(wav)`` exactly. Files longer than ``long_seconds`` go one by one
through :meth:`Encoder.infer_long`, which bounds memory.

Bad inputs (missing, unreadable, empty, non-audio, NaN/Inf, shorter than
:data:`pase.audio.MIN_SAMPLES`) are reported in one line each and skipped; the rest goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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
    find_audio_files,
    load_audio,
    write_atomic,
)

if tp.TYPE_CHECKING:
    from pase.encoder import Encoder

Format = tp.Literal["npy", "safetensors"]
Layers = tp.Literal["final", "all"]
FORMATS: tuple[Format, ...] = ("npy", "safetensors")
LAYERS: tuple[Layers, ...] = ("final", "all")
LIST_SUFFIXES = (".txt", ".lst")
INDEX_NAME = "index.jsonl"
#: Files longer than this are not batched but streamed through ``Encoder.infer_long``.
LONG_SECONDS = 30.0
#: tqdm's default layout, but always in files/s (its default flips to s/file below 1 file/s).
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"
#: Preset names that ``--model`` accepts besides a directory or an original ``.ckpt``.
PRESETS = ("pase+", "pase")


@dataclass(frozen=True)
class Job:
    """One input file and the output path it is written to."""

    source: Path
    output: Path


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


def _read_list(list_path: Path) -> list[Path]:
    try:
        lines = list_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AudioError(list_path, f"cannot read list file ({type(exc).__name__}: {exc})") from None
    entries = (line.strip() for line in lines)
    return [list_path.parent / e for e in entries if e and not e.startswith("#")]


def _is_list_file(path: Path) -> bool:
    return path.suffix.lower() in LIST_SUFFIXES and path.is_file()


def resolve_inputs(
    inputs: tp.Iterable[str | os.PathLike[str]], out_dir: str | os.PathLike[str], suffix: str
) -> tuple[list[Job], list[tuple[str, str]]]:
    """Map command-line inputs to :class:`Job` s (see the module docstring for the layout).

    Returns ``(jobs, problems)``: ``problems`` are ``(input, problem)`` pairs for list files that
    cannot be read, folders without audio, and outputs that two inputs would both write. A path
    that does not exist stays a job so that loading reports it like any other bad file.
    """
    out = Path(out_dir)
    jobs: dict[Path, Job] = {}
    problems: list[tuple[str, str]] = []

    def add(source: Path, output: Path) -> None:
        previous = jobs.get(output)
        if previous is None:
            jobs[output] = Job(source, output)
        elif previous.source.resolve() != source.resolve():
            problems.append((str(source), f"output {output} is already written for {previous.source}"))

    def visit(path: Path, from_list: bool) -> None:
        if path.is_dir():
            files = find_audio_files(path)
            if not files:
                problems.append((str(path), "folder holds no audio files"))
            for f in files:
                add(f, out / f.relative_to(path).with_suffix(suffix))
        elif not from_list and _is_list_file(path):
            for entry in _read_list(path):
                visit(entry, from_list=True)
        else:
            add(path, out / (path.stem + suffix))

    for item in inputs:
        text = os.fspath(item)
        try:
            if text.startswith("@"):
                for entry in _read_list(Path(text[1:])):
                    visit(entry, from_list=True)
            else:
                visit(Path(text), from_list=False)
        except AudioError as err:
            problems.append((err.path, err.problem))
    return list(jobs.values()), problems


def load_encoder(
    model: str = "pase+", device: str = "cpu", random_init: bool = False, seed: int = 0
) -> Encoder:
    """Build the encoder ``--model`` names, in eval mode on ``device``.

    ``model`` is a preset (``"pase+"``, ``"pase"``: the packaged pretrained weights), a
    directory written by ``save_pretrained``, or a checkpoint of the original code (``.ckpt``).
    ``random_init`` builds the preset with random weights (seeded), for testing pipelines only.
    Raises ``ValueError`` / ``OSError`` with a readable message when the model cannot be loaded.
    """
    import torch

    from pase.encoder import Encoder

    if random_init:
        if model not in PRESETS:
            raise ValueError(f"--random-init needs a preset name ({', '.join(PRESETS)}), not {model!r}")
        torch.manual_seed(seed)
        encoder = Encoder.from_config(model)
    elif Path(model).is_file():
        encoder = Encoder.from_original(model)
    else:
        encoder = Encoder.from_pretrained(model)
    return encoder.to(torch.device(device)).eval()


def default_batch_size(device_type: str) -> int:
    """Files per batch when not given: 1 on CPU (batching is no faster there), 8 on GPUs."""
    return 1 if device_type == "cpu" else 8


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


def _plan(jobs: list[Job], batch_size: int, long_seconds: float) -> list[list[Job]]:
    """Group jobs into batches of similar duration; long files get a batch of their own."""
    if batch_size == 1:  # keep the input order and skip reading every header
        return [[job] for job in jobs]
    order = sorted(zip(_durations(jobs), range(len(jobs)), strict=True))
    batches: list[list[Job]] = []
    current: list[Job] = []
    for seconds, i in order:
        if seconds > long_seconds:
            batches.append([jobs[i]])
            continue
        current.append(jobs[i])
        if len(current) == batch_size:
            batches.append(current)
            current = []
    if current:
        batches.append(current)
    return batches


def encode_batch(
    encoder: Encoder,
    wavs: list[np.ndarray],
    layers: Layers = "final",
    long_seconds: float = LONG_SECONDS,
    window_seconds: float | None = None,
) -> list[np.ndarray]:
    """Features of 16 kHz mono waveforms (``wavs[i]: [T_i]``), each ``[F_i, D]`` or ``[L, F_i, D]``.

    Waveforms longer than ``long_seconds`` are streamed one by one with ``infer_long``; the
    others are zero-padded into one ``[B, T_max]`` batch (no padding for one), run with
    ``lengths=``, and each is cut to its own frame count.
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
        if short:
            x = torch.zeros(len(short), max(len(wavs[i]) for i in short))
            for row, i in enumerate(short):
                x[row, : len(wavs[i])] = torch.from_numpy(wavs[i])
            lengths = torch.tensor([len(wavs[i]) for i in short], dtype=torch.long, device=device)
            x = x.to(device)
            if layers == "final":
                out, frames = encoder(x, lengths=lengths)
            else:
                states, frames = encoder.extract_features(x, lengths=lengths)
                out = torch.stack(states, dim=1)  # [B, L, F, D]
            for row, i in enumerate(short):
                feats[i] = out[row, ..., : int(frames[row]), :].float().cpu().numpy()
    return [feats[i] for i in range(len(wavs))]


def save_features(path: Path, feats: np.ndarray, fmt: Format, layers: Layers, source: Path) -> None:
    """Write ``feats`` (``[F, D]`` or ``[L, F, D]``) atomically as ``.npy`` or ``.safetensors``."""
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    if fmt == "npy":

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a name
                np.save(f, feats)

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


def _append_index(out_dir: Path, record: dict[str, tp.Any]) -> None:
    """Append one JSON line with a single ``write`` on an ``O_APPEND`` descriptor."""
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(out_dir / INDEX_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


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
) -> ExtractSummary:
    """Extract features of every input into ``out_dir`` (layout: module docstring).

    ``encoder`` should be in eval mode (see :func:`load_encoder`). ``batch_size`` defaults to
    :func:`default_batch_size` for the encoder's device. Existing outputs are skipped
    unless ``overwrite``. Each bad input is counted in ``summary.failed``, recorded in
    ``summary.failures`` and passed to ``report`` as one line ``"<path>: <problem>"`` (use
    ``tqdm.write`` there when ``progress`` is on); it never stops the run. ``progress`` shows a
    tqdm bar on stderr with files/s and x-real-time.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    if layers not in LAYERS:
        raise ValueError(f"layers must be one of {LAYERS}, not {layers!r}")
    if batch_size is None:
        batch_size = default_batch_size(next(encoder.parameters()).device.type)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    from tqdm import tqdm

    start = time.perf_counter()
    out = Path(out_dir)
    summary = ExtractSummary()
    bar = tqdm(total=0, unit="file", disable=not progress, dynamic_ncols=True, bar_format=BAR_FORMAT)

    def fail(path: str | os.PathLike[str], problem: str) -> None:
        summary.failed += 1
        summary.failures.append((str(path), problem))
        if report is not None:
            report(_one_line(f"{path}: {problem}"))

    jobs, problems = resolve_inputs(inputs, out, "." + fmt)
    for path, problem in problems:
        fail(path, problem)
    todo = [j for j in jobs if overwrite or not j.output.exists()]
    summary.skipped = len(jobs) - len(todo)
    bar.total = len(todo)
    bar.refresh()
    for batch in _plan(todo, batch_size, long_seconds):
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
            feats = encode_batch(encoder, [w for _, w in loaded], layers, long_seconds, window_seconds)
        except (RuntimeError, ValueError) as exc:  # e.g. out of memory: report, keep going
            for job, _ in loaded:
                fail(job.source, f"extraction failed ({type(exc).__name__}: {exc})")
            bar.update(len(loaded))
            continue
        for (job, wav), f in zip(loaded, feats, strict=True):
            try:
                save_features(job.output, f, fmt, layers, job.source)
                _append_index(out, _index_record(job, out, f, len(wav), fmt, layers))
            except OSError as exc:
                fail(job.output, f"cannot write output ({type(exc).__name__}: {exc})")
            else:
                summary.extracted += 1
                summary.outputs.append(job.output)
                summary.audio_seconds += len(wav) / SAMPLE_RATE
            bar.update(1)
        elapsed = time.perf_counter() - start
        bar.set_postfix_str(f"{summary.audio_seconds / max(elapsed, 1e-9):.1f}x real time")
    bar.close()
    summary.wall_seconds = time.perf_counter() - start
    return summary


def _index_record(
    job: Job, out_dir: Path, feats: np.ndarray, num_samples: int, fmt: Format, layers: Layers
) -> dict[str, tp.Any]:
    return {
        "input": str(job.source.resolve()),
        "output": job.output.relative_to(out_dir).as_posix(),
        "frames": int(feats.shape[-2]),
        "seconds": round(num_samples / SAMPLE_RATE, 6),
        "dims": int(feats.shape[-1]),
        "shape": list(feats.shape),
        "layers": layers,
        "format": fmt,
    }


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    def err(line: str) -> None:
        tqdm.write(line, file=sys.stderr)  # prints above a running progress bar, not into it

    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        err(f"pase extract: --device {device}, but CUDA is not available to torch {torch.__version__}")
        return 2
    try:
        encoder = load_encoder(args.model, device, args.random_init, args.seed)
    except Exception as exc:  # any reason a model cannot load is one line for the user
        hint = "" if args.random_init else " (or pass --random-init to test with an untrained one)"
        err(_one_line(f"pase extract: cannot load model {args.model!r}: {exc}{hint}"))
        return 2
    if args.random_init:
        err(
            f"pase extract: WARNING: random-init {args.model} encoder (seed {args.seed}); "
            "its features are for testing pipelines, not for downstream use"
        )
    summary = extract_files(
        args.inputs,
        args.out,
        encoder,
        fmt=args.format,
        layers=args.layers,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        window_seconds=args.window_seconds,
        progress=not args.no_progress and sys.stderr.isatty(),
        report=err,
    )
    err(
        f"pase extract: {summary} ({summary.audio_seconds:.1f} s of audio in "
        f"{summary.wall_seconds:.1f} s, {summary.real_time_factor:.1f}x real time) -> {args.out}"
    )
    return 0 if summary.ok else 1


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``pase extract`` to the ``pase`` command."""
    p = subparsers.add_parser(
        "extract",
        help="extract features of audio files, folders or list files",
        description=(
            "Extract PASE/PASE+ features. Inputs: audio files (-> OUT/<stem>.npy), folders "
            "(recursive; -> OUT/<relative path>.npy) and list files (@list or a .txt/.lst file, "
            "one path per line, relative to the list's folder). Any sample rate and channel "
            "count (downmixed, resampled to 16 kHz). Bad files are reported one line each and "
            "skipped; the exit code is 1 when any failed. OUT/index.jsonl lists every output."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="IN", help="audio file, folder, @list or .txt/.lst")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--format", choices=FORMATS, default="npy", help="output format (default npy)")
    p.add_argument(
        "--layers",
        choices=LAYERS,
        default="final",
        help="final: [F, D]; all: every hidden state, [L, F, D] in npy or layer_0.. in safetensors",
    )
    p.add_argument(
        "--model",
        default="pase+",
        help="pase+ | pase (packaged pretrained weights), a save_pretrained DIR, or an original "
        "FILE.ckpt (default pase+)",
    )
    p.add_argument(
        "--random-init",
        action="store_true",
        help="use a randomly initialised preset (seeded by --seed) instead of trained weights: "
        "for testing pipelines only",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for --random-init (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="short files of similar length per batch (default: 1 on CPU, exact per-file "
        "output; 8 on CUDA, where the last ~8 frames of padded items differ slightly)",
    )
    p.add_argument(
        "--window-seconds",
        type=float,
        default=None,
        help=f"window for files over {LONG_SECONDS:.0f} s, streamed in bounded memory "
        "(default: the encoder's)",
    )
    p.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run)
