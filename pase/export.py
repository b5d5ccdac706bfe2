"""``pase export RUN OUT``: the encoder of a training run's checkpoint, as a pretrained directory.

A finished run writes ``RUN/encoder/`` itself; an interrupted one (Ctrl-C, SIGTERM, a job time
limit) has only ``RUN/checkpoint.pt``. This reads the checkpoint (``torch.load`` with
``weights_only=True``: no code runs), rebuilds the encoder from the checkpoint's own
``model_config`` and writes ``model.safetensors`` + ``config.json`` for
:meth:`pase.Encoder.from_pretrained`. RUN is read by :func:`pase.load_encoder`, so any encoder
spec works (an original ``.ckpt`` too). ``--dtype float16`` halves the file (the packaged weights are
stored so: ``pase export RUN pase/pretrained/pase_plus --dtype float16`` is how a model ships).

RUN may also be an encoder folder (``config.json`` + ``model.safetensors``, e.g. the fp32
``RUN/encoder`` a finished run writes, or any ``save_pretrained`` output), or a run folder whose
``checkpoint.pt`` was deleted but whose ``encoder/`` is there: that encoder is stored again in the
requested dtype.

``pase export SPEC --onnx encoder.onnx [--layers all]`` writes the encoder as an ONNX graph for
ONNX Runtime instead (or as well, with OUT): dynamic batch and length, float32 (see
:mod:`pase.onnx`; needs ``pip install 'pase-speech[onnx]'``).
"""

from __future__ import annotations

import argparse
import os
import sys
import typing as tp
from pathlib import Path

if tp.TYPE_CHECKING:
    from pase.loading import Origin

DTYPES = ("float32", "float16", "bfloat16")


def export_encoder(
    run: str | os.PathLike[str], out: str | os.PathLike[str], dtype: str = "float32"
) -> tuple[Path, int]:
    """Write the encoder of ``run`` (a run folder or its ``checkpoint.pt``) to ``out``, its floating
    tensors stored as ``dtype`` (one of :data:`DTYPES`; loading restores float32).

    Returns ``(out, step of the checkpoint)``. Raises ``ValueError`` naming the file when there
    is no usable checkpoint.
    """
    from pase.hub import RUN_CHECKPOINT

    path = Path(run)
    if path.is_dir():
        path = path / RUN_CHECKPOINT
    if not path.is_file():
        raise ValueError(f"{path}: no checkpoint (is {run} a `pase train` run folder or an encoder folder?)")
    origin = _export(str(path), out, dtype)
    if origin.step is None:
        raise ValueError(f"{path}: not a `pase train` checkpoint (an original encoder checkpoint)")
    return Path(out), origin.step


def _export(spec: str, out: str | os.PathLike[str], dtype: str) -> Origin:
    """Write the encoder ``spec`` names to ``out`` as ``dtype``; where it came from."""
    import torch

    from pase.loading import read_encoder

    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    encoder, origin = read_encoder(spec)
    if origin.path is not None and origin.path.resolve() == Path(out).resolve():
        raise ValueError(f"{out}: the output would overwrite the encoder it reads")
    encoder.save_pretrained(Path(out), dtype=getattr(torch, dtype))
    return origin


def _export_onnx(spec: str, out: str, layers: str) -> Origin:
    """Write the encoder ``spec`` names to ``out`` as an ONNX graph; where it came from."""
    from pase.loading import read_encoder
    from pase.onnx import export_onnx

    encoder, origin = read_encoder(spec)
    export_onnx(encoder, out, tp.cast(tp.Literal["final", "all"], layers))
    return origin


def _source(args: argparse.Namespace, origin: Origin) -> str:
    if origin.kind == "run":
        return f"{args.run} at step {origin.step}"
    return str(origin.path or args.run)


def register_cli(subparsers: tp.Any) -> None:
    p = subparsers.add_parser(
        "export",
        help="write the encoder of a training run's checkpoint (e.g. an interrupted run) for from_pretrained",
        description=__doc__.split("\n\n")[0].replace("``", "") if __doc__ else None,
    )
    from pase.loading import encoder_spec_help

    p.add_argument("run", help=f"the encoder: {encoder_spec_help()}")
    p.add_argument("out", nargs="?", help="output folder (model.safetensors + config.json)")
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="storage type of the weights in OUT (float16 halves the file; loading restores float32)",
    )
    p.add_argument("--onnx", metavar="FILE", help="also or instead write an ONNX graph (for ONNX Runtime)")
    p.add_argument(
        "--layers",
        choices=("final", "all"),
        default="final",
        help="ONNX outputs: final features only, or all the hidden states as well (default final)",
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.out is None and args.onnx is None:
        print("pase export: give OUT (a pretrained folder), --onnx FILE, or both", file=sys.stderr)
        return 2
    if args.out is None and args.dtype != "float32":
        print("pase export: --dtype applies to OUT; the ONNX graph is float32", file=sys.stderr)
        return 2
    try:
        if args.out is not None:
            origin = _export(args.run, args.out, args.dtype)
            stored = "" if args.dtype == "float32" else f", stored as {args.dtype}"
            print(
                f"wrote the encoder of {_source(args, origin)} to {args.out}{stored} "
                "(for pase.Encoder.from_pretrained)"
            )
        if args.onnx is not None:
            origin = _export_onnx(args.run, args.onnx, args.layers)
            extra = " with its hidden states" if args.layers == "all" else ""
            print(
                f"wrote the ONNX graph of {_source(args, origin)}{extra} to {args.onnx} "
                "(for pase.onnx.OnnxEncoder or ONNX Runtime)"
            )
    except (ValueError, OSError) as err:
        print(f"pase export: {err}", file=sys.stderr)
        return 2
    return 0
