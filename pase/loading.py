"""One way to name an encoder: ``pase.load_encoder(spec)``, for every command and for Python.

An encoder spec is one of (checked in this order):

- ``random:PRESET[:SEED]``: the preset (``pase+``, ``pase``) with random weights, seeded
  (default seed :data:`RANDOM_INIT_SEED`, so ``random:pase+`` is one model everywhere);
- ``hf:owner/name``: a Hugging Face Hub repository (needs ``pip install 'pase-speech[hub]'``);
- an existing file: a ``pase train`` checkpoint (``RUN/checkpoint.pt``: its encoder part) or a
  checkpoint of the original code (``FE_e199.ckpt``, or ``.pt`` / ``.pth`` in that layout), told
  apart by their content;
- an existing folder: a training run (its ``checkpoint.pt``, else its ``encoder/``) or a
  ``save_pretrained`` folder (``config.json`` + ``model.safetensors``);
- a packaged name (``pase+``): the pretrained weights shipped with this installation;
- ``owner/name`` that is no local path: a Hugging Face Hub repository, as ``hf:owner/name``.

Anything else is an :class:`EncoderSpecError` (a ``ValueError``) naming the spec and the problem.
Every file is read without executing code (safetensors, ``torch.load(weights_only=True)``).

Torch is imported on first use, so a command's ``--help`` (which shows :func:`encoder_spec_help`)
stays fast.
"""

from __future__ import annotations

import argparse
import sys
import typing as tp
from pathlib import Path

if tp.TYPE_CHECKING:
    from pase.encoder import Encoder

#: Presets that ``random:PRESET`` builds.
PRESETS = ("pase+", "pase")
#: Seed of ``random:PRESET`` without one.
RANDOM_INIT_SEED = 0
RANDOM_PREFIX = "random:"
HUB_PREFIX = "hf:"


def packaged_models() -> list[str]:
    """Preset names whose pretrained weights ship with this installation."""
    from pase.hub import CONFIG_NAME, PACKAGED, PRETRAINED_DIR

    return [n for n in PRESETS if n in PACKAGED and (PRETRAINED_DIR / PACKAGED[n] / CONFIG_NAME).exists()]


def encoder_spec_help(packaged: tp.Sequence[str] | None = None) -> str:
    """The spec grammar, for every ``--help`` that takes an encoder; it offers the packaged names
    of this installation (``packaged``, default :func:`packaged_models`) only."""
    packaged = packaged_models() if packaged is None else packaged
    return (
        (f"{' | '.join(packaged)} (packaged pretrained weights), " if packaged else "")
        + "a save_pretrained DIR, a `pase train` RUN folder or its checkpoint.pt, an original "
        "FILE.ckpt (.pt/.pth), random:PRESET[:SEED] (a random-init pase+ or pase, seed 0 unless "
        "given: for testing pipelines) or a Hugging Face Hub repo hf:org/name (needs the hub extra)"
    )


Kind = tp.Literal["random", "hub", "packaged", "pretrained", "run", "original"]


class EncoderSpecError(ValueError):
    """An encoder spec that names no loadable encoder; the message names the spec and the problem."""


class Origin(tp.NamedTuple):
    """Where :func:`read_encoder` found an encoder."""

    kind: Kind
    #: The folder or file read (``None`` for ``random:`` and packaged names).
    path: Path | None = None
    #: The training step of a run checkpoint.
    step: int | None = None


def parse_random(spec: str) -> tuple[str, int] | None:
    """``(preset, seed)`` of a ``random:PRESET[:SEED]`` spec; ``None`` for other specs."""
    if not spec.startswith(RANDOM_PREFIX):
        return None
    preset, _, seed = spec.removeprefix(RANDOM_PREFIX).partition(":")
    if preset not in PRESETS:
        raise EncoderSpecError(f"{spec}: unknown preset {preset!r}; use random:pase+ or random:pase")
    if not seed:
        return preset, RANDOM_INIT_SEED
    try:
        return preset, int(seed)
    except ValueError:
        raise EncoderSpecError(f"{spec}: the seed {seed!r} is not an integer") from None


def load_encoder(spec: str, device: str = "cpu") -> Encoder:
    """The encoder ``spec`` names (see the module docstring), in eval mode on ``device``."""
    import torch

    return read_encoder(spec)[0].to(torch.device(device)).eval()


def read_encoder(spec: str) -> tuple[Encoder, Origin]:
    """The encoder ``spec`` names, on the CPU in eval mode, and where it came from."""
    from pase import hub
    from pase.encoder import Encoder

    random_init = parse_random(spec)
    try:
        if random_init is not None:
            return _random(*random_init), Origin("random")
        if spec.startswith(HUB_PREFIX):
            repo_id = spec.removeprefix(HUB_PREFIX)
            if not hub.is_repo_id(repo_id):
                raise EncoderSpecError(f"{spec}: a Hugging Face Hub repo is named hf:org/name")
            return Encoder.from_pretrained(hub.download_from_hub(repo_id)), Origin("hub")
        path = Path(spec)
        if path.is_file():
            return _from_file(path)
        # A folder named like a preset (the source tree's own pase/) leaves the name its meaning.
        if path.is_dir() and (_holds_encoder(path) or spec not in (*PRESETS, *hub.PACKAGED)):
            return _from_folder(path, spec)
        if spec in hub.PACKAGED:
            return Encoder.from_pretrained(spec), Origin("packaged")
        if spec in PRESETS:
            raise EncoderSpecError(
                f"{spec}: no pretrained weights are packaged for this preset (packaged: "
                f"{', '.join(sorted(hub.PACKAGED))}); random:{spec} is its random-init encoder"
            )
        if hub.is_repo_id(spec):
            return Encoder.from_pretrained(hub.download_from_hub(spec)), Origin("hub")
    except FileNotFoundError as exc:  # e.g. no packaged weights, a Hub repo that is not there
        raise EncoderSpecError(f"{spec}: {exc}" if spec not in str(exc) else str(exc)) from None
    raise EncoderSpecError(
        f"{spec}: not an encoder: no such file or folder, nor a packaged name, random:PRESET or Hub repo"
    )


def _random(preset: str, seed: int) -> Encoder:
    import torch

    from pase.encoder import Encoder

    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        torch.manual_seed(seed)
        return Encoder.from_config(preset).eval()


def _from_file(path: Path, run: bool = False) -> tuple[Encoder, Origin]:
    """The encoder in a checkpoint file: a run's (always, with ``run``) or an original one."""
    from pase import hub
    from pase.encoder import Encoder

    obj = hub.load_checkpoint(path)
    if run or hub.is_run_checkpoint(obj):
        state, config, step = hub.run_checkpoint_state(obj, str(path))
        return Encoder.from_state(state, config, str(path)), Origin("run", path, step)
    state, config = hub.original_state(obj, str(path))
    return Encoder.from_state(state, config, str(path)), Origin("original", path)


def _from_run_folder(path: Path) -> tuple[Encoder, Origin]:
    """A run folder's encoder from its latest checkpoint that reads, as ``--resume`` picks it: a
    ``checkpoint.pt`` that fails its digest (or is torn) gives way, with a warning, to the
    ``checkpoint.prev.pt`` the trainer keeps beside it."""
    import warnings

    from pase import hub

    def fell_back(problem: str, previous: Path) -> None:
        warnings.warn(f"{problem}; loaded {previous}, the checkpoint before it", stacklevel=6)

    return hub.read_latest_checkpoint(path, lambda f: _from_file(f, run=True), fell_back)[1]


def _holds_encoder(path: Path) -> bool:
    from pase import hub

    encoder_config = f"encoder/{hub.CONFIG_NAME}"
    names = (hub.RUN_CHECKPOINT, hub.PREVIOUS_CHECKPOINT, hub.CONFIG_NAME, hub.WEIGHTS_NAME, encoder_config)
    return any((path / name).exists() for name in names)


def _from_folder(path: Path, spec: str) -> tuple[Encoder, Origin]:
    from pase import hub
    from pase.encoder import Encoder

    if any((path / name).is_file() for name in (hub.RUN_CHECKPOINT, hub.PREVIOUS_CHECKPOINT)):
        return _from_run_folder(path)
    own = any((path / name).exists() for name in (hub.CONFIG_NAME, hub.WEIGHTS_NAME))
    # A run folder's own config.json is its training config: its encoder is in encoder/.
    if (path / "encoder" / hub.CONFIG_NAME).is_file() and not (path / hub.WEIGHTS_NAME).exists():
        path = path / "encoder"
    elif not own:
        raise EncoderSpecError(
            f"{path / hub.RUN_CHECKPOINT}: no checkpoint "
            f"(is {spec} a `pase train` run folder or an encoder folder?)"
        )
    return Encoder.from_pretrained(path), Origin("pretrained", path)


def register_cli(sub: tp.Any) -> None:
    p = sub.add_parser(
        "convert-original",
        help="convert a checkpoint of the original PASE code (e.g. FE_e199.ckpt) to a pretrained directory",
        description="Read an original PASE/PASE+ checkpoint (never executing code) and write "
        "model.safetensors + config.json, loadable with Encoder.from_pretrained(OUT_DIR).",
    )
    p.add_argument("ckpt", help="original checkpoint file")
    p.add_argument("out_dir", help="output directory")
    p.set_defaults(func=_convert_main)


def _convert_main(args: argparse.Namespace) -> int:
    from pase.encoder import Encoder
    from pase.hub import CheckpointError

    try:
        encoder = Encoder.from_original(args.ckpt)
    except (CheckpointError, FileNotFoundError) as exc:
        print(f"pase convert-original: {exc}", file=sys.stderr)
        return 1
    if Path(args.out_dir).exists() and not Path(args.out_dir).is_dir():
        print(f"pase convert-original: {args.out_dir}: exists and is not a folder", file=sys.stderr)
        return 1
    try:
        out = encoder.save_pretrained(args.out_dir)
    except OSError as exc:
        print(f"pase convert-original: {args.out_dir}: cannot write ({exc.strerror or exc})", file=sys.stderr)
        return 1
    n = sum(p.numel() for p in encoder.parameters())
    print(f"wrote {out} ({encoder.config.rnn}, {encoder.embedding_dim}-d, {n:,} parameters)")
    return 0
