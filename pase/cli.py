"""The ``pase`` command line: ``pase COMMAND`` (extract, train, eval, ablate, plot, show-distortions, ...).

Each command lives beside the code it drives; its module exposes ``register_cli(subparsers)``,
which adds an argparse sub-parser and sets ``func`` to a handler returning an exit code.
Modules keep optional dependencies (matplotlib, tensorboard, pyroomacoustics) inside handlers,
so ``pase --help`` stays fast and never needs the training extras.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import typing as tp

COMMAND_MODULES = (
    "pase.demo",
    "pase.extract",
    "pase.train",
    "pase.eval.cli",
    "pase.ablate",
    "pase.plots",
    "pase.distortions",
    "pase.hub",
)


def build_parser() -> argparse.ArgumentParser:
    from pase import __version__

    parser = argparse.ArgumentParser(prog="pase", description="PASE / PASE+ self-supervised speech encoders.")
    parser.add_argument("--version", action="version", version=f"pase {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register_cli(sub)
    return parser


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("pase: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
