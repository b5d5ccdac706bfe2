"""Benchmark outputs: ``results.{json,md}`` and ``confusion.png`` per run, ``summary.*`` per grid.

Every file is written atomically. Markdown tables print the same numbers as the JSON, rounded
to four decimals (accuracies and F1 are fractions in [0, 1]).
"""

from __future__ import annotations

import json
import typing as tp
from pathlib import Path

import numpy as np

from pase.audio import write_atomic
from pase.eval.results import TaskResult

RESULT_COLUMNS = (
    "task", "features", "probe", "layers", "distort", "accuracy", "accuracy_std",
    "macro_f1", "macro_f1_std", "n_train", "n_valid", "n_test", "n_classes", "seconds",
)  # fmt: skip


#: The 9 hidden states of a PASE+ encoder, in ``Encoder.extract_features`` order (PASE v1 has
#: the last two).
LAYER_NAMES = [*(f"skip {i} ({'sinc' if i == 0 else f'conv {i}'})" for i in range(7)), "W", "final"]


class Seconds(float):
    """A duration, printed with one decimal rather than four."""


def _write_text(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")

    write_atomic(path, write)


def _cell(value: tp.Any) -> str:
    if isinstance(value, Seconds):
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return "none" if value is None else str(value)


def _table(header: tp.Sequence[str], rows: tp.Iterable[tp.Sequence[tp.Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def results_markdown(result: TaskResult) -> str:
    """One run as markdown: the headline row, then one row per seed."""
    head = f"# {result.task} / {result.features}\n\n"
    row = result.to_dict()
    main = _table(RESULT_COLUMNS, [[Seconds(row[c]) if c == "seconds" else row[c] for c in RESULT_COLUMNS]])
    seeds = _table(
        ("seed", "accuracy", "macro_f1", "epochs", "best_epoch"),
        [[s["seed"], s["accuracy"], s["macro_f1"], s["epochs"], s["best_epoch"]] for s in result.per_seed],
    )
    unit = f"Examples are {result.details['unit']}; spread is the sample standard deviation over seeds.\n"
    return head + main + "\n" + unit + "\n## Per seed\n\n" + seeds + layer_weights_markdown(result)


def layer_weights_markdown(result: TaskResult) -> str:
    """The probe's learned softmax weights of the hidden states (``--layers all``), or nothing."""
    weights = result.details.get("layer_weights") or []
    if len(weights) < 2:
        return ""
    names = {9: LAYER_NAMES, 2: LAYER_NAMES[-2:]}.get(len(weights)) or [
        f"layer_{i}" for i in range(len(weights))
    ]
    per_seed = [s["layer_weights"] for s in result.per_seed]
    spread = np.std(per_seed, axis=0, ddof=1) if len(per_seed) > 1 else np.zeros(len(weights))
    rows = [[f"layer_{i}", names[i], w, float(spread[i])] for i, w in enumerate(weights)]
    note = "Softmax weights of the probe's sum of hidden states, mean over seeds (uniform: 1/L each).\n\n"
    return "\n## Learned layer weights\n\n" + note + _table(("layer", "state", "weight", "std"), rows)


def plot_confusion(cm: np.ndarray, classes: tp.Sequence[str], title: str, path: Path) -> None:
    """Row-normalised confusion matrix as a PNG, with the counts written in the cells."""
    from pase.plots import pyplot, save_figure

    plt = pyplot()

    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.28 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(classes)), list(classes), rotation=90, fontsize=7 if len(classes) > 20 else 9)
    ax.set_yticks(range(len(classes)), list(classes), fontsize=7 if len(classes) > 20 else 9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    if len(classes) <= 40:  # counts in the cells; beyond that they would not be legible
        fontsize = 8 if len(classes) <= 12 else 5
        for (row, col), count in np.ndenumerate(cm):
            if count:
                color = "white" if norm[row, col] > 0.5 else "black"
                ax.text(col, row, str(count), ha="center", va="center", fontsize=fontsize, color=color)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def write_results(result: TaskResult, cm: np.ndarray, out_dir: Path) -> None:
    """``results.json``, ``results.md`` and ``confusion.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_text(out_dir / "results.json", result.to_json())
    _write_text(out_dir / "results.md", results_markdown(result))
    title = f"{result.task} / {result.features} ({result.probe}, all seeds)"
    plot_confusion(cm, result.details["classes"], title, out_dir / "confusion.png")


def summary_markdown(results: tp.Sequence[TaskResult], errors: tp.Mapping[str, str]) -> str:
    """Tasks x feature sets: ``accuracy ± std (macro-F1)`` per cell."""
    tasks = list(dict.fromkeys(r.task for r in results))
    feats = list(dict.fromkeys(r.features for r in results))
    cells = {(r.task, r.features): r for r in results}

    def cell(task: str, feat: str) -> str:
        r = cells.get((task, feat))
        if r is None:
            return "error" if f"{task}/{feat}" in errors else "-"
        s = r.scores
        return f"{s['accuracy']:.4f} ± {s['accuracy_std']:.4f} (F1 {s['macro_f1']:.4f})"

    first = results[0] if results else None  # the settings every run of a grid shares
    probe, layers, distort, seeds = (
        (first.probe, first.layers, first.distort, first.seeds) if first else (None,) * 4
    )
    head = (
        f"# Downstream benchmark: accuracy ± std over seeds (macro-F1)\n\n"
        f"probe: {probe}, layers: {layers}, distort: {distort or 'none'}, seeds: {seeds}\n\n"
    )
    table = _table(["task", *feats], [[t, *(cell(t, f) for f in feats)] for t in tasks])
    times = _table(
        ["task", *(f"{f} seconds" for f in feats)],
        [[t, *(Seconds(cells[(t, f)].seconds) if (t, f) in cells else "-" for f in feats)] for t in tasks],
    )
    errs = "".join(f"- {k}: {v}\n" for k, v in errors.items())
    return head + table + "\n## Seconds per run\n\n" + times + (f"\n## Errors\n\n{errs}" if errs else "")


def plot_summary(results: tp.Sequence[TaskResult], path: Path) -> None:
    """One bar chart per task: accuracy per feature set with the seed spread as error bars."""
    from pase.plots import pyplot, save_figure

    plt = pyplot()

    tasks = list(dict.fromkeys(r.task for r in results))
    feats = list(dict.fromkeys(r.features for r in results))
    cols = min(3, len(tasks))
    rows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, task in zip(axes.flat, tasks, strict=False):
        got = {r.features: r for r in results if r.task == task}
        x = np.arange(len(feats))
        acc = [got[f].scores["accuracy"] if f in got else 0.0 for f in feats]
        err = [got[f].scores["accuracy_std"] if f in got else 0.0 for f in feats]
        ax.bar(x, acc, yerr=err, color=[colors[i % len(colors)] for i in range(len(feats))], capsize=3)
        chance = 1.0 / next(iter(got.values())).details["n_classes"] if got else 0.0
        ax.axhline(chance, color="gray", linestyle="--", linewidth=1)
        ax.set_xticks(x, feats, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(task, fontsize=10)
        ax.set_ylabel("accuracy")
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def write_summary(results: tp.Sequence[TaskResult], errors: tp.Mapping[str, str], out_dir: Path) -> None:
    """``summary.json``, ``summary.md`` and ``summary.png`` (the last only when a run succeeded)."""
    summary = {"results": [r.to_dict() for r in results], "errors": dict(errors)}
    _write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    _write_text(out_dir / "summary.md", summary_markdown(results, errors))
    if results:
        plot_summary(results, out_dir / "summary.png")
