"""The ``pase extract`` command: its options (:func:`register_cli`), the checks made before any
work, loading the model and choosing the backend, running :func:`pase.extract.extract_files` on
each rank of a ``torchrun`` job, and the summary line and exit code over all ranks.

What the command does is described in :mod:`pase.extract`.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing as tp
from pathlib import Path

from pase.extract.core import (
    AUTO_BATCH,
    AUTO_ONNX_SECONDS,
    BACKENDS,
    DEFAULT_BACKEND,
    LONG_SECONDS,
    SHORT_SECONDS,
    ExtractSummary,
    _one_line,
    choose_backend,
    extract_files,
)
from pase.extract.index import INDEX_NAME, merge_reported
from pase.extract.inputs import resolve_inputs
from pase.extract.writers import FORMATS, LAYERS

if tp.TYPE_CHECKING:
    from pase.distributed import Ranks


def model_spec(model: str, random_init: bool = False, seed: int = 0) -> str:
    """The encoder spec (:mod:`pase.loading`) of ``--model``; ``--random-init`` (with ``--seed``)
    is another spelling of ``--model random:PRESET:SEED``."""
    from pase.loading import PRESETS, EncoderSpecError

    if not random_init:
        return model
    if model not in PRESETS:
        raise EncoderSpecError(f"--random-init needs a preset name ({', '.join(PRESETS)}), not {model!r}")
    return f"random:{model}:{seed}"


def check_writable(out: Path) -> str | None:
    """None if files can be created in ``out`` (created if missing), else the reason, one line."""
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".pase-write-test-"):
            pass
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return None


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pase.distributed import Ranks, close_group, init_group

    ranks = Ranks.from_env()

    def err(line: str) -> None:
        tqdm.write(line, file=sys.stderr)  # prints above a running progress bar, not into it

    def err_main(line: str) -> None:
        if ranks.is_main:
            err(line)

    import torch

    problem = _check_options(args)
    if problem is not None:
        err_main(f"pase extract: {problem}")
        return 2
    try:
        ranks = ranks.on(args.device)
    except RuntimeError as exc:  # torch's message lists the device types it knows
        err_main(_one_line(f"pase extract: --device {args.device}: {exc}"))
        return 2
    device = str(ranks.device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        err_main(f"pase extract: --device {device}, but CUDA is not available to torch {torch.__version__}")
        return 2
    problem = check_writable(args.out)
    if problem is None and (args.out / INDEX_NAME).exists() and not (args.out / INDEX_NAME).is_file():
        problem = f"{args.out / INDEX_NAME} is not a file"
    if problem is not None:
        err_main(f"pase extract: cannot write to --out {args.out} ({problem})")
        return 2
    # gloo even on GPUs: the ranks exchange only a few small objects
    init_group(ranks, "gloo")
    try:
        return _extract_ranked(args, device, ranks, err, err_main)
    finally:
        close_group()


def _extract_ranked(
    args: argparse.Namespace,
    device: str,
    ranks: Ranks,
    err: tp.Callable[[str], None],
    err_main: tp.Callable[[str], None],
) -> int:
    from pase.distributed import gather
    from pase.loading import load_encoder, parse_random

    load_error = None
    random_init = None
    try:
        spec = model_spec(args.model, args.random_init, args.seed)
        random_init = parse_random(spec)
        encoder = load_encoder(spec, device)
    except Exception as exc:  # any reason a model cannot load is one line for the user
        hint = "" if args.random_init else " (or pass --random-init to test with an untrained one)"
        load_error = _one_line(f"pase extract: cannot load model {args.model!r}: {exc}{hint}")
    backend, why = args.backend, ""
    if load_error is None and backend == "auto":  # extract_files resolves the inputs again: cheap
        jobs, _ = resolve_inputs(args.inputs, args.out, "." + args.format)
        backend, why = choose_backend(args.backend, encoder, args.layers, device, jobs, args.overwrite)
    if load_error is None and backend == "onnxruntime":
        from pase.onnx import onnxruntime_backend

        try:
            encoder = onnxruntime_backend(encoder, args.layers)
        except Exception as exc:  # no onnxruntime, a failed export: one line, as for loading
            if args.backend == "onnxruntime":
                load_error = _one_line(f"pase extract: --backend onnxruntime: {exc}")
            else:  # auto: what the user did not ask for cannot fail the job
                backend, why = "torch", _one_line(f"the ONNX export failed: {exc}")
    errors = [e for e in gather(load_error, ranks) if e is not None]
    if errors:
        err_main(errors[0])
        return 2
    if random_init is not None:
        preset, seed = random_init
        err_main(
            f"pase extract: WARNING: random-init {preset} encoder (seed {seed}); "
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
        progress=ranks.rank == 0 and not args.no_progress and sys.stderr.isatty(),
        report=err,
        shard=(ranks.rank, ranks.world_size),
        num_threads=args.num_threads,
    )
    counts = (summary.extracted, summary.skipped, summary.failed, summary.audio_seconds, summary.wall_seconds)
    parts = gather(counts, ranks)
    merge_failed = 0
    if ranks.is_main and ranks.world_size > 1:

        def merge_fail(path: str | os.PathLike[str], problem: str) -> None:
            nonlocal merge_failed
            merge_failed += 1
            err(_one_line(f"{path}: {problem}"))

        merge_reported(args.out, merge_fail)
    total = ExtractSummary(
        extracted=sum(p[0] for p in parts),
        skipped=sum(p[1] for p in parts),
        failed=sum(p[2] for p in parts) + merge_failed,
        audio_seconds=sum(p[3] for p in parts),
        wall_seconds=max(p[4] for p in parts),
    )
    procs = f", {ranks.world_size} processes" if ranks.world_size > 1 else ""
    err_main(
        f"pase extract: {total} ({total.audio_seconds:.1f} s of audio in {total.wall_seconds:.1f} s"
        f"{procs}, {total.real_time_factor:.1f}x real time, {backend}) -> {args.out}"
        + (f" [backend auto: {why}]" if why else "")
    )
    return 0 if total.ok else 1


def _check_options(args: argparse.Namespace) -> str | None:
    """The first bad option value, as one line; None when all are usable."""
    from pase.cli_args import check_device
    from pase.encoder import check_window_seconds

    try:
        if args.window_seconds is not None:
            check_window_seconds(args.window_seconds, "--window-seconds")
        if args.device != "auto":
            check_device(args.device)
    except ValueError as exc:
        return str(exc)
    return None


def _threads(text: str) -> int | str:
    return text if text == "auto" else _positive_int(text)


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
    from pase.loading import PRESETS, encoder_spec_help

    p.add_argument("--model", default="pase+", help=f"{encoder_spec_help()} (default pase+)")
    p.add_argument(
        "--random-init",
        action="store_true",
        help=f"use a randomly initialised preset ({' | '.join(PRESETS)}, seeded by --seed) instead of "
        "trained weights, as --model random:PRESET:SEED: for testing pipelines only",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for --random-init (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=DEFAULT_BACKEND,
        help=f"what runs the encoder (default {DEFAULT_BACKEND}); onnxruntime (CPU, the [onnx] extra) "
        "exports the model once to the pase cache and runs that; auto runs onnxruntime on the CPU "
        f"when it is installed and the export is cached or the job holds {AUTO_ONNX_SECONDS / 60:.0f}+ "
        "min of audio, else torch",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help=f"files of similar length per batch (default: on CPU, files up to {SHORT_SECONDS:g} s "
        f"with equal frame counts, {AUTO_BATCH} at a time, output equal to per-file; on CUDA "
        f"{AUTO_BATCH}, where the last ~8 frames of padded items differ slightly)",
    )
    p.add_argument(
        "--num-threads",
        type=_threads,
        default="auto",
        help="CPU threads per process (default auto: 1 when most files are short, else the free "
        "cores divided by the processes on this machine)",
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
