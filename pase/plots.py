"""Training curves: ``pase plot RUN`` draws every worker's loss to ``RUN/curves.png``.

One panel per logged loss (the total first, then each worker), the training curve from
``RUN/metrics.csv`` and, where present, the validation points from ``RUN/valid.csv``. The
binary workers (LIM, GIM, SPC) get a dashed line at chance, ln 2: a curve on it learned nothing. matplotlib
(Agg backend) is imported only when a plot is drawn.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import typing as tp
from pathlib import Path

import numpy as np

from pase.audio import write_atomic

#: metrics.csv columns that are not losses.
_NOT_LOSSES = ("step", "lr", "xrt")
#: Worker kinds whose loss is a balanced binary cross-entropy: chance is ln 2.
BINARY_KINDS = ("lim", "gim", "spc")
CHANCE = math.log(2)


def pyplot() -> tp.Any:
    """``matplotlib.pyplot`` on the headless Agg backend (every figure of the package is a PNG file).

    Raises ``ImportError`` when matplotlib is missing (the ``plots`` extra installs it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: tp.Any, path: str | os.PathLike[str], **savefig_kwargs: tp.Any) -> None:
    """Write ``fig`` to ``path`` atomically (:func:`pase.audio.write_atomic`), then close it.

    ``savefig_kwargs`` go to ``Figure.savefig`` (``dpi``, ...); the format is PNG unless
    ``format`` says otherwise (the temporary file's name has no extension to infer it from).
    The figure is closed even when writing fails, so a long grid of plots never piles them up.
    """
    kwargs = {"format": "png", **savefig_kwargs}
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, **kwargs))
    finally:
        pyplot().close(fig)


def binary_workers(run: Path) -> set[str]:
    """Names of the run's workers with a balanced binary loss (preset names, and any worker of
    such a kind listed in the run's config.json)."""
    names = set(BINARY_KINDS)
    try:
        config = json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        return names
    for worker in [*(config.get("workers") or []), *(config.get("extra_workers") or [])]:
        if isinstance(worker, dict) and worker.get("kind", worker.get("name")) in BINARY_KINDS:
            names.add(str(worker.get("name")))
    return names


def read_log(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """A training log CSV as ``{column: values}`` (empty dict when the file is missing)."""
    path = Path(path)
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {col: np.array([float(r[col]) for r in rows]) for col in rows[0]}


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing running mean over ``window`` points (the first points average what exists)."""
    if window <= 1:
        return values
    csum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(0, idx - window)
    return (csum[idx] - csum[start]) / (idx - start)


def plot_run(run: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, smooth: int = 1) -> Path:
    """Draw the loss curves of ``run`` to ``out`` (default ``run/curves.png``); returns the path.

    Raises ``FileNotFoundError`` naming the file when ``run/metrics.csv`` is missing or empty.
    """
    plt = pyplot()

    run = Path(run)
    train = read_log(run / "metrics.csv")
    if not train:
        raise FileNotFoundError(f"{run / 'metrics.csv'}: no training log (is {run} a pase run?)")
    valid = read_log(run / "valid.csv")
    losses = [c for c in train if c not in _NOT_LOSSES]
    binary = binary_workers(run)
    cols = min(4, len(losses))
    rows = math.ceil(len(losses) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, losses, strict=False):
        ax.plot(train["step"], _smooth(train[name], smooth), lw=1.0, label="train")
        if name in valid:
            ax.plot(valid["step"], valid[name], "o-", ms=3, lw=1.0, label="valid")
        if name in binary:
            ax.axhline(CHANCE, color="gray", linestyle="--", lw=1.0, label="chance (ln 2)")
            ax.legend(fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(losses) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.supxlabel("step", fontsize=9)
    fig.tight_layout()
    target = Path(out) if out is not None else run / "curves.png"
    save_figure(fig, target, dpi=110)
    return target


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plot", help="draw a training run's per-worker loss curves (PNG)")
    p.add_argument("run", help="run folder written by `pase train`")
    p.add_argument("--out", help="PNG path (default RUN/curves.png)")
    p.add_argument("--smooth", type=int, default=1, help="running-mean window in logged steps")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        path = plot_run(args.run, args.out, args.smooth)
    except (FileNotFoundError, ValueError) as err:
        print(f"pase plot: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0
