"""The ``pase`` command line: ``pase COMMAND``, COMMAND one of demo, extract, train, export, eval,
ablate, plot, show-distortions, convert-original.

Each command lives beside the code it drives; its module exposes ``register_cli(subparsers)``,
which adds an argparse sub-parser and sets ``func`` to a handler returning an exit code.
Modules keep heavy and optional dependencies (torch models, matplotlib, tensorboard,
pyroomacoustics) inside handlers, so ``pase --help`` stays fast and never needs the extras.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import typing as tp

from pase.cli_args import Parser, missing_extra

#: Each command: the module whose ``register_cli`` adds it, and its one-line help. The help is
#: repeated here so that ``pase --help`` lists the commands without importing their modules
#: (torch alone takes seconds); a test checks that it matches the module's own.
COMMANDS = {
    "demo": ("pase.demo", "extract and draw PASE+ features of a few real recordings"),
    "extract": ("pase.extract.cli", "extract features of audio files, folders or list files"),
    "train": ("pase.train", "self-supervised training (one process, or DDP under torchrun)"),
    "export": (
        "pase.export",
        "write the encoder of a training run's checkpoint (e.g. an interrupted run) for from_pretrained",
    ),
    "eval": ("pase.eval.cli", "benchmark feature sets (MFCC, FBANK, PASE encoders) on downstream tasks"),
    "data": ("pase.corpora", "lay out the official downloads of the evaluation corpora for pase eval"),
    "ablate": ("pase.ablate", "train recipe variants under one budget and compare them downstream"),
    "plot": ("pase.plots", "draw a training run's per-worker loss curves (PNG)"),
    "show-distortions": (
        "pase.show_distortions",
        "write each PASE+ distortion of a file as WAV plus one spectrogram PNG",
    ),
    "convert-original": (
        "pase.loading",
        "convert a checkpoint of the original PASE code (e.g. FE_e199.ckpt) to a pretrained directory",
    ),
}
NO_PROGRESS = "--no-progress"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``pase`` parser with every command; with ``only``, just that command's full parser
    and a one-line entry for each other one (enough to list them, without importing them)."""
    from pase import __version__

    parser = Parser(prog="pase", description="PASE / PASE+ self-supervised speech encoders.")
    parser.add_argument("--version", action="version", version=f"pase {__version__}")
    parser.add_argument(
        NO_PROGRESS,
        action="store_true",
        help="no progress bars (also accepted after the command; or set PASE_NO_PROGRESS=1). "
        "Without a terminal, bars print a plain line every 30 s instead",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(module).register_cli(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: tp.Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Only the command being run is imported: `pase --help` and `pase plot` need no torch.
    at = next((i for i, a in enumerate(argv) if not a.startswith("-")), len(argv))
    command = argv[at] if at < len(argv) else ""
    parser = build_parser(command if command in COMMANDS else "")
    end = argv.index("--") if "--" in argv else len(argv)
    quiet = NO_PROGRESS in argv[:end]
    if quiet:
        # Accepted after every command too: dropped there unless the command has its own.
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        own = command in sub.choices and NO_PROGRESS in sub.choices[command]._option_string_actions
        if not own:
            argv = [a for i, a in enumerate(argv) if not (at < i < end and a == NO_PROGRESS)]
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as settings:  # environment settings for this command only
        if not sys.stderr.isatty() and "TQDM_MININTERVAL" not in os.environ:
            # tqdm bars of any module then redraw (a carriage return each) at most every 30 s.
            settings.enter_context(_environ("TQDM_MININTERVAL", "30"))
        if quiet:
            from pase.progress import disabled

            settings.enter_context(disabled())
        settings.enter_context(_warnings_as_lines(command or "pase"))
        return _run(args)


@contextlib.contextmanager
def _warnings_as_lines(command: str) -> tp.Iterator[None]:
    """Python warnings printed as one line naming the command, not with the warning's source line."""
    import warnings

    previous = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *_: tp.Any, **kw: tp.Any) -> None:
        text = " ".join(str(message).split())
        print(f"pase {command}: warning: {text}", file=kw.get("file") or sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


@contextlib.contextmanager
def _environ(name: str, value: str) -> tp.Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("pase: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as err:
        advice = missing_extra(err)
        if advice is None:
            raise
        print(f"pase {args.command}: {advice}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
