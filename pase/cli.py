"""The ``pase`` command line: ``pase COMMAND``, COMMAND one of demo, extract, train, export, eval,
ablate, plot, show-distortions, convert-original.

Each command lives beside the code it drives; its module exposes ``register_cli(subparsers)``,
which adds an argparse sub-parser and sets ``func`` to a handler returning an exit code.
Modules keep heavy and optional dependencies (torch models, matplotlib, tensorboard,
pyroomacoustics) inside handlers, so ``pase --help`` stays fast and never needs the extras.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import inspect
import os
import re
import sys
import textwrap
import typing as tp

#: Each command: the module whose ``register_cli`` adds it, and its one-line help. The help is
#: repeated here so that ``pase --help`` lists the commands without importing their modules
#: (torch alone takes seconds); a test checks that it matches the module's own.
COMMANDS = {
    "demo": ("pase.demo", "extract and draw PASE+ features of a few real recordings"),
    "extract": ("pase.extract", "extract features of audio files, folders or list files"),
    "train": ("pase.train", "self-supervised training (one process, or DDP under torchrun)"),
    "export": (
        "pase.export",
        "write the encoder of a training run's checkpoint (e.g. an interrupted run) for from_pretrained",
    ),
    "eval": ("pase.eval.cli", "benchmark feature sets (MFCC, FBANK, PASE encoders) on downstream tasks"),
    "ablate": ("pase.ablate", "train recipe variants under one budget and compare them downstream"),
    "plot": ("pase.plots", "draw a training run's per-worker loss curves (PNG)"),
    "show-distortions": (
        "pase.distortions",
        "write each PASE+ distortion of a file as WAV plus one spectrogram PNG",
    ),
    "convert-original": (
        "pase.loading",
        "convert a checkpoint of the original PASE code (e.g. FE_e199.ckpt) to a pretrained directory",
    ),
}
#: Optional dependencies and the extra that installs each.
EXTRAS = {"matplotlib": "eval", "yaml": "train", "pyroomacoustics": "train", "tensorboard": "train"}
NO_PROGRESS = "--no-progress"


class Parser(argparse.ArgumentParser):
    """argparse with whole option names only (``--layer`` is not ``--layers``) and short errors:
    the problem and where to read more, without the whole usage first."""

    def __init__(self, *args: tp.Any, **kwargs: tp.Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> tp.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n(see `{self.prog} --help`)\n")


def check_device(spec: str) -> str:
    """``spec`` if this machine can run on it; else a ``ValueError`` saying what is wrong.

    Accepts ``cpu``, ``cuda``, ``cuda:N`` and ``mps`` where available.
    """
    import torch

    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"--device {spec}: not a device name; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {spec}: CUDA is not available on this machine; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"--device {spec}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})"
            )
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {spec}: MPS is not available on this machine; use --device cpu")
    elif device.type != "cpu":
        raise ValueError(f"--device {spec}: unsupported device type {device.type!r}; use cpu or cuda")
    return spec


def device_arg(spec: str) -> str:
    """:func:`check_device` as an argparse ``type``: a bad device is a usage error."""
    try:
        return check_device(spec)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).split(": ", 1)[1]) from None


def plain(text: str) -> str:
    """Docstring text without reST markup, for ``--help``: ``x`` and :class:`a.B` -> x and B."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"\1", text)
    return re.sub(r"(?<![\w*])\*(\w[^*]*\w)\*(?!\w)", r"\1", text)


def field_docs(cls: type, fallback: tp.Mapping[str, str] | None = None) -> dict[str, str]:
    """The documentation of each field of a dataclass, read from its source: the ``#:`` comment
    lines above the field, or the string literal below it. A field without either takes its
    text from ``fallback``, else shares the text of the field above it (one comment often
    describes a group, e.g. two learning rates). Markup is removed (:func:`plain`)."""
    fallback = fallback or {}
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)
    docs: dict[str, str] = {}
    previous = ""
    for i, node in enumerate(body.body):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        comment: list[str] = []
        row = node.lineno - 2  # the line above, 0-based
        while row >= 0 and lines[row].strip().startswith("#:"):
            comment.insert(0, lines[row].strip()[2:].strip())
            row -= 1
        after = body.body[i + 1] if i + 1 < len(body.body) else None
        if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            comment = [str(after.value.value)]
        text = " ".join(" ".join(comment).split()) or fallback.get(node.target.id, previous)
        docs[node.target.id] = previous = plain(text)
    return docs


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


def missing_extra(err: ModuleNotFoundError) -> str | None:
    """``"pip install 'pase-speech[eval]'"``-style advice when ``err`` is an optional dependency."""
    root = (err.name or "").split(".")[0]
    if root not in EXTRAS:
        return None
    return f"this needs {root}, which is not installed: pip install 'pase-speech[{EXTRAS[root]}]'"


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
        return _run(args)


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
