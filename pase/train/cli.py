"""Self-supervised training: ``TrainConfig``, the loop, checkpoints, resume, DDP and logging.

``pase train --preset pase+ --data DIR --out RUN`` trains on one device; the same command under
``torchrun --nproc_per_node N`` trains with DDP (NCCL on CUDA, gloo on CPU). A run folder holds:

- ``config.json``: the effective :class:`TrainConfig`;
- ``checkpoint.pt``: model (encoder, workers, target statistics), optimizer, schedule, RNG states
  of every rank, data cursor, step and config; written atomically every ``ckpt_every`` steps, on
  SIGINT/SIGTERM and at the end; loads with ``torch.load(weights_only=True)``;
- ``checkpoint.prev.pt``: the checkpoint before it (so a run folder needs twice a checkpoint's disk,
  about 720 MB for PASE+), and ``checkpoint.sha256``: the digests of both, verified on resume:
  a corrupt latest checkpoint is reported and the run resumes from the previous one;
- ``metrics.csv`` (``step,loss,<worker>...,lr,xrt``), ``valid.csv``, ``tb/`` (TensorBoard);
- ``data.tsv`` (every training and held-out file: split, name, samples; sorted) and
  ``data.json`` (its sha256, files and hours per split, for every start and resume);
- ``encoder/``: the trained encoder, for :meth:`pase.Encoder.from_pretrained`.

Steps count completed optimizer updates from 1. ``--resume`` continues at the exact next step
with the same batches, distortions and RNG draws, and truncates the logs to the checkpoint's
step first, so every step appears once. A run folder holds data, not code: worker plugins its
``config.json`` names are imported on resume only when ``--plugins`` (or a ``--config`` file) names
them again, or with ``--trust-plugins``.

Learning-rate schedule. ``poly`` (PASE+): ``lr = base * (1 - step / horizon) ** 0.9``, updated
every step (the original updated it every 100 steps), where the horizon is *this invocation's*
``max_steps``. Resuming with a larger ``max_steps`` therefore recomputes the decay against the new
horizon: the learning rate jumps up to ``base * (1 - step / new_horizon) ** 0.9`` and decays to 0
at the new end. ``step`` (PASE v1): halve every ``halve_every_epochs`` epochs. A run whose folder
is lost continues as a new leg from its exported encoder with ``--init ENCODER --start-step N``:
steps count on from N and the decay stays the whole run's (workers and Adam's moments start over).

DDP: ``batch_size`` is per process, the global batch is ``batch_size * world_size``, and the
learning rate is not scaled with it. Only rank 0 logs, shows progress and writes files.
"""

# This module: the options of ``pase train``, generated from the fields of TrainConfig and
# DistortionConfig (help text from their comments), the run's config from preset, config file and
# command line, and the handler that runs a Trainer. Its docstring above is the command's --help.

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing as tp
from pathlib import Path

from pase.audio import AudioError
from pase.cli_args import check_device, field_docs, plain
from pase.distortions import DistortionConfig
from pase.distributed import close_group
from pase.train.checkpoint import checkpoint_step, has_checkpoint
from pase.train.config import PRESETS, TrainConfig, load_config_file
from pase.train.loop import Trainer

#: TrainConfig fields the CLI exposes as one JSON value (everything else maps to its type).
_NESTED = "distortions"
#: Fields whose option keeps the name it had before the field was renamed.
_FLAGS = {"architecture": "model"}


def _option_kwargs(hint: tp.Any) -> dict[str, tp.Any]:
    """argparse keyword arguments that parse one dataclass field of type ``hint``."""
    origin, args = tp.get_origin(hint), tp.get_args(hint)
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin in (tp.Union, types.UnionType) and type(None) in args:
        inner = _option_kwargs(next(a for a in args if a is not type(None)))
        parse = inner.get("type", str)
        return {**inner, "type": lambda s: None if s.lower() == "none" else parse(s)}
    if hint in (int, float, str):
        return {"type": hint}
    if origin is tp.Literal:
        return {"choices": list(args)}
    if origin is list and args == (str,):
        return {"nargs": "+"}
    return {"type": json.loads, "metavar": "JSON"}  # tuples and dicts


#: Help of fields whose documentation above would describe another field; a ``#:`` comment on
#: the field itself takes precedence.
_CLI_HELP = {
    "seed": "Seed of the initialisation, the data order and the distortion draws (each rank adds its rank).",
    "log_every": "Write a metrics.csv row (and TensorBoard scalars) every this many steps.",
    "valid_every": "Validate every this many steps, and at the end (valid.csv).",
    "ckpt_every": "Write checkpoint.pt every this many steps; also on SIGINT/SIGTERM and at the end.",
}


def _show(value: tp.Any) -> str:
    """A default as the user would type it on the command line."""
    if value is None:
        return "none"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value) if value != "" else '""'


def _add_field_options(
    parser: argparse._ActionsContainer, cls: type, presets: tp.Sequence[tuple[str, tp.Any]], prefix: str = ""
) -> None:
    """One option per field of ``cls``, its help generated from the field's documentation
    (:func:`pase.cli_args.field_docs`) and its value in each of ``presets`` (``(name, instance)``)."""
    hints = tp.get_type_hints(cls)
    docs = field_docs(cls, _CLI_HELP)
    for field in dataclasses.fields(cls):
        if not prefix and field.name == _NESTED:
            continue
        name = _FLAGS.get(field.name, field.name)
        flag = f"--{prefix}{name.replace('_', '-')}"
        kwargs = _option_kwargs(hints[field.name])
        if "type" in kwargs or "nargs" in kwargs:
            kwargs.setdefault("metavar", name.upper())
        (first, value), *others = [(name, getattr(obj, field.name)) for name, obj in presets]
        default = f"default: {_show(value)}" + "".join(
            f"; {_show(v)} with --preset {name}" for name, v in others if v != value
        )
        help_text = f"{docs.get(field.name, '')} ({default})".replace("%", "%%")
        parser.add_argument(
            flag, dest=prefix + field.name, default=argparse.SUPPRESS, help=help_text, **kwargs
        )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's config: the preset (or, when resuming, the run's saved config), then the
    ``--config`` file, then the options given on the command line.

    Relative plugin files of a ``--config`` file are taken relative to that file's folder.
    Plugins that only the run folder's ``config.json`` names are refused unless ``--trust-plugins``
    is given: a run folder may come from someone else, and a plugin is code.
    Raises ``ValueError`` naming the file or option for a config that cannot be used.
    """
    saved = Path(args.out) / "config.json"
    named_plugins = "plugins" in vars(args)
    if (args.resume or args.resume_or_start) and saved.exists():
        config = TrainConfig.from_dict(_read_saved(saved))
    else:
        config = TrainConfig.from_preset(args.preset)
    saved_plugins = config.plugins
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise ValueError(f"{path}: no such config file")
        try:
            loaded = load_config_file(path)
        except ModuleNotFoundError:
            raise  # PyYAML missing: main() names the extra to install
        except Exception as err:  # yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
            if isinstance(err, json.JSONDecodeError):
                where = f"{path}:{err.lineno}:{err.colno}"
            problem = getattr(err, "problem", None) or getattr(err, "msg", None) or str(err).splitlines()[0]
            raise ValueError(f"{where}: not a valid config file: {problem}") from None
        if isinstance(loaded.get("plugins"), list):
            loaded["plugins"] = [_relative_to(p, path.parent) for p in loaded["plugins"]]
        named_plugins = named_plugins or "plugins" in loaded
        config = config.updated(loaded)
    given = vars(args)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides: dict[str, tp.Any] = {k: v for k, v in given.items() if k in fields}
    nested = {k.split(".", 1)[1]: v for k, v in given.items() if k.startswith(_NESTED + ".")}
    if nested:
        overrides[_NESTED] = nested
    config = config.updated(overrides)
    if saved_plugins and not named_plugins and not getattr(args, "trust_plugins", False):
        raise ValueError(
            f"{saved} names worker plugins {saved_plugins}, which resuming would import and run; "
            "resume with --plugins naming them (or --trust-plugins) if you trust them"
        )
    config.validate(spell=lambda name: f"--{_FLAGS.get(name, name).replace('_', '-')}")
    check_device(config.device)
    return config


def _read_saved(path: Path) -> dict[str, tp.Any]:
    """A run folder's ``config.json``: a mapping of TrainConfig fields."""
    try:
        loaded = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a valid run config ({err})") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: not a valid run config (expected a mapping of TrainConfig fields)")
    return loaded


def _relative_to(plugin: tp.Any, folder: Path) -> tp.Any:
    """A relative ``.py`` plugin path of a config file, resolved against the file's folder
    (module names such as ``mypkg.workers`` are left alone)."""
    if isinstance(plugin, str) and plugin.endswith(".py") and not Path(plugin).is_absolute():
        return str(folder / plugin)
    return plugin


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="self-supervised training (one process, or DDP under torchrun)",
        usage="pase train [--preset PRESET] --out RUN [--config FILE] [--resume] [OPTION ...]",
        description=plain(__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset",
        default="pase+",
        choices=PRESETS,
        help="the whole recipe: pase+ (batch 16, Adam 1e-3 / 5e-4 with poly decay, 12 workers, "
        "distortions), pase+cpu (pase+ without the waveform decoder, batch 4: chosen by pase ablate "
        "on 2 CPU cores), pase+cpu-bilinear (pase+cpu with bilinear LIM/GIM heads scored against the "
        "batch's negatives: both learn within 1900 steps), pase+v3 (pase+cpu with the context chunks "
        "distorted too and the LPS pair on a 512-point FFT: PASE+ v3's recipe) "
        "or pase (PASE v1: batch 32, lr 5e-4 halved every 30 epochs, 7 workers, clean). "
        "It sets every option below, --model included; --model alone changes only the encoder "
        "and its worker set and keeps the rest of the recipe (default: pase+)",
    )
    p.add_argument("--out", required=True, help="run folder (checkpoint, logs, encoder/)")
    p.add_argument(
        "--config",
        help="JSON or YAML file of the options below (field names, e.g. batch_size: 8); "
        "precedence: --preset < --config < options given here",
    )
    resume = p.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint (an error without one)",
    )
    resume.add_argument(
        "--resume-or-start",
        action="store_true",
        help="continue the run in --out if it has a checkpoint, else start it (for job schedulers)",
    )
    p.add_argument(
        "--trust-plugins",
        action="store_true",
        help="on resume, import the worker plugins the run folder's config.json names (without it "
        "they are refused unless --plugins or --config names them again: a plugin is code; default: off)",
    )
    presets = [(name, TrainConfig.from_preset(name)) for name in PRESETS]
    _add_field_options(p.add_argument_group("training (TrainConfig fields)"), TrainConfig, presets)
    _add_field_options(
        p.add_argument_group("distortions (DistortionConfig fields; none apply with --preset pase)"),
        DistortionConfig,
        [(name, preset.distortions) for name, preset in presets[:1]],
        prefix=_NESTED + ".",
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        out = Path(args.out)
        resume = args.resume or (args.resume_or_start and has_checkpoint(out))
        if resume and has_checkpoint(out) and config.max_steps is not None:
            # Every rank refuses a horizon already reached, before any rank builds or writes anything.
            step = checkpoint_step(out)
            if step >= config.max_steps:
                raise ValueError(
                    f"{args.out} is at step {step}: --max-steps {config.max_steps} leaves nothing to train; "
                    f"pass --max-steps above {step} to continue the run"
                )
        return Trainer(config, args.out, resume=resume).run()
    except (AudioError, ValueError, OSError) as err:
        print(f"pase train: {err}", file=sys.stderr)
        return 2
    finally:
        close_group()
