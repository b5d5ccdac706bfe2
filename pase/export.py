"""``pase export RUN OUT``: the encoder of a training run's checkpoint, as a pretrained directory.

A finished run writes ``RUN/encoder/`` itself; an interrupted one (Ctrl-C, SIGTERM, a job time
limit) has only ``RUN/checkpoint.pt``. This reads the checkpoint (``torch.load`` with
``weights_only=True``: no code runs), rebuilds the encoder from the checkpoint's own
``model_config`` and writes ``model.safetensors`` + ``config.json`` for
:meth:`pase.Encoder.from_pretrained`. ``--dtype float16`` halves the file (the packaged weights are
stored so: ``pase export RUN pase/pretrained/pase_plus --dtype float16`` is how a model ships).

RUN may also be an encoder folder (``config.json`` + ``model.safetensors``, e.g. the fp32
``RUN/encoder`` a finished run writes, or any ``save_pretrained`` output), or a run folder whose
``checkpoint.pt`` was deleted but whose ``encoder/`` is there: that encoder is stored again in the
requested dtype.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing as tp
from pathlib import Path

CHECKPOINT = "checkpoint.pt"
DTYPES = ("float32", "float16", "bfloat16")


def export_encoder(
    run: str | os.PathLike[str], out: str | os.PathLike[str], dtype: str = "float32"
) -> tuple[Path, int]:
    """Write the encoder of ``run`` (a run folder or its ``checkpoint.pt``) to ``out``, its floating
    tensors stored as ``dtype`` (one of :data:`DTYPES`; loading restores float32).

    Returns ``(out, step of the checkpoint)``. Raises ``ValueError`` naming the file when there
    is no usable checkpoint.
    """
    import torch

    from pase.encoder import Encoder, EncoderConfig

    _check_dtype(dtype)
    path = Path(run)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise ValueError(f"{path}: no checkpoint (is {run} a `pase train` run folder or an encoder folder?)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        model_config = json.loads(checkpoint["model_config"])
        state = {
            k.removeprefix("encoder."): v for k, v in checkpoint["model"].items() if k.startswith("encoder.")
        }
        encoder = Encoder(EncoderConfig.from_dict(model_config["encoder"]))
        encoder.load_state_dict(state)
    except Exception as err:  # unpickling, missing keys and shape mismatches come in many types
        problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path}: not a `pase train` checkpoint ({type(err).__name__}: {problem})") from None
    encoder.eval().save_pretrained(Path(out), dtype=getattr(torch, dtype))
    return Path(out), int(checkpoint.get("step", 0))


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")


def encoder_folder(run: str | os.PathLike[str]) -> Path | None:
    """The encoder folder ``pase export`` re-stores when ``run`` holds no checkpoint: ``run``
    itself or ``run/encoder`` if it has ``config.json`` and ``model.safetensors``; else ``None``."""
    path = Path(run)
    if not path.is_dir() or (path / CHECKPOINT).is_file():
        return None
    for folder in (path, path / "encoder"):
        if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
            return folder
    return None


def restore_encoder(
    folder: str | os.PathLike[str], out: str | os.PathLike[str], dtype: str = "float32"
) -> Path:
    """Write the pretrained encoder in ``folder`` to ``out`` with its floating tensors stored as
    ``dtype`` (e.g. an fp32 ``encoder/`` of a run, stored as fp16 to ship)."""
    import torch

    from pase.encoder import Encoder

    _check_dtype(dtype)
    if Path(out).resolve() == Path(folder).resolve():
        raise ValueError(f"{out}: the output would overwrite the encoder it reads")
    Encoder.from_pretrained(Path(folder)).eval().save_pretrained(Path(out), dtype=getattr(torch, dtype))
    return Path(out)


def register_cli(subparsers: tp.Any) -> None:
    p = subparsers.add_parser(
        "export",
        help="write the encoder of a training run's checkpoint (e.g. an interrupted run) for from_pretrained",
        description=__doc__.split("\n\n")[0].replace("``", "") if __doc__ else None,
    )
    p.add_argument("run", help="run folder of `pase train` (or its checkpoint.pt, or an encoder folder)")
    p.add_argument("out", help="output folder (model.safetensors + config.json)")
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="storage type of the weights (float16 halves the file; loading restores float32)",
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    folder = encoder_folder(args.run)
    try:
        if folder is None:
            out, step = export_encoder(args.run, args.out, args.dtype)
            source = f"{args.run} at step {step}"
        else:
            out, source = restore_encoder(folder, args.out, args.dtype), str(folder)
    except (ValueError, OSError) as err:
        print(f"pase export: {err}", file=sys.stderr)
        return 2
    stored = "" if args.dtype == "float32" else f", stored as {args.dtype}"
    print(f"wrote the encoder of {source} to {out}{stored} (for pase.Encoder.from_pretrained)")
    return 0
