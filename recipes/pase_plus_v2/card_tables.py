"""Issue 12's model card tables, from the output folder of ``recipes/pase_plus_v2/model_card_eval.sh``.

    python recipes/pase_plus_v2/card_tables.py [EVAL_DIR] [--out recipes/pase_plus_v2/results/card]

Reads every ``summary.json`` (probe accuracies), ``summary_asr.json`` (WER/CER) and
``summary_phone.json`` (PER) under EVAL_DIR, and the ``results.json`` of cells that ran one task
with one feature set, and writes to OUT:
``card.json`` (every row, with a short label per feature set), ``card.md`` (one table per probe
and test condition, tasks x feature sets, mean ± std over the probe seeds; the ASR table; and the
acceptance counts of the issue: new vs old pase+, new vs MFCC clean, new vs MFCC under noise 5 dB,
all with the MLP probe on the 6 built-in tasks) and ``card.png`` (the MLP accuracies per
condition). The feature sets are labelled ``mfcc``, ``fbank``, ``random``
(``random:pase+``), ``old`` (the packaged ``pase+`` the grid was run against) and ``new`` (the one
other feature set: the encoder folder given to the grid).
"""

from __future__ import annotations

import argparse
import json
import sys
import typing as tp
from pathlib import Path

from pase.eval.results import kind_of

BUILTIN = (
    "fsdd-digit", "ravdess-speaker", "ravdess-emotion", "emodb-emotion", "emodb-phone", "librispeech-speaker",
)  # fmt: skip
LABELS = {"mfcc": "mfcc", "fbank": "fbank", "random:pase+": "random", "pase+": "old"}
ORDER = ("mfcc", "fbank", "random", "old", "new")
CONDITIONS = ("clean", "noise:5dB", "reverb")
#: What ``pase eval`` writes for a grid: accuracies, then WER/CER, then PER.
SUMMARIES = ("summary.json", "summary_asr.json", "summary_phone.json")

Row = dict[str, tp.Any]


def label(features: str) -> str:
    """The card's short name of a feature set (``new`` for any encoder folder)."""
    return LABELS.get(features, "new")


def collect(eval_dir: Path) -> list[Row]:
    """Every result row under ``eval_dir``, with ``label`` and ``condition`` added.

    Raises ``ValueError`` when no summary or single-run result is found, or when two feature sets
    would both be ``new`` (the grid compares exactly one new encoder) or one cell appears twice with
    different numbers."""
    rows: list[Row] = []
    files = _result_files(eval_dir)
    if not files:
        raise ValueError(
            f"{eval_dir}: no {', '.join(SUMMARIES)} or results.json"
            " (run recipes/pase_plus_v2/model_card_eval.sh)"
        )
    for path in files:
        data = json.loads(path.read_text())
        if isinstance(data, dict):  # a summary ({"results": [...]}) or one run's result
            data = data["results"] if "results" in data else [data]
        for row in data:
            rows.append({**row, "label": label(row["features"]), "condition": row["distort"] or "clean"})
    new = sorted({r["features"] for r in rows if r["label"] == "new"})
    if len(new) > 1:
        raise ValueError(f"{eval_dir}: more than one new encoder in the grid: {', '.join(new)}")
    seen: dict[tuple[str, ...], Row] = {}
    for row in rows:
        key = (row["task"], row["label"], row["probe"], row["condition"])
        if key in seen and _score(seen[key]) != _score(row):
            raise ValueError(f"{eval_dir}: two different results for {' / '.join(key)}")
        seen[key] = row
    return list(seen.values())


def _result_files(eval_dir: Path) -> list[Path]:
    """The summaries of multi-run cells, and the ``results.json`` of single-run cells (one task and
    one feature set: ``pase eval`` then writes that run's result where a summary would be; e.g. the
    new encoder's cells of one task). A ``results.json`` inside a summarised cell is one of its rows."""
    summaries = [p for name in SUMMARIES for p in sorted(eval_dir.rglob(name))]
    covered = {path.parent for path in summaries}
    singles = [
        path
        for path in sorted(eval_dir.rglob("results.json"))
        if not any(folder in covered for folder in path.parents)
    ]
    return summaries + singles


def _is_asr(row: Row) -> bool:
    return kind_of(row) == "asr"


def _is_sequence(row: Row) -> bool:
    """An ASR or phone-recognition row (error rates, no accuracy)."""
    return kind_of(row) in ("asr", "phone")


def _score(row: Row) -> tuple[float, float]:
    metric = {"asr": "wer", "phone": "per"}.get(kind_of(row), "accuracy")
    return float(row[metric]), float(row[f"{metric}_std"])


def _cells(rows: list[Row], probe: str, condition: str) -> dict[tuple[str, str], Row]:
    return {
        (r["task"], r["label"]): r
        for r in rows
        if r["probe"] == probe and r["condition"] == condition and not _is_sequence(r)
    }


def wins(rows: list[Row], better: str, than: str, condition: str, probe: str = "mlp") -> dict[str, float]:
    """Accuracy of ``better`` minus that of ``than`` per built-in task measured for both."""
    cells = _cells(rows, probe, condition)
    return {
        task: float(cells[task, better]["accuracy"]) - float(cells[task, than]["accuracy"])
        for task in BUILTIN
        if (task, better) in cells and (task, than) in cells
    }


def accuracy_table(
    rows: list[Row],
    probe: str,
    condition: str,
    order: tp.Sequence[str] = ORDER,
    tasks: tp.Sequence[str] | None = None,
    digits: int = 4,
) -> str:
    """Tasks x feature sets (labels in ``order``), mean ± std, the best per row in bold. ``tasks``:
    the rows' order (None: as the tasks first appear in ``rows``)."""
    cells = _cells(rows, probe, condition)
    if tasks is None:
        tasks = list(dict.fromkeys(r["task"] for r in rows if not _is_sequence(r)))
    tasks = [t for t in tasks if any(k[0] == t for k in cells)]
    labels = [name for name in order if any(k[1] == name for k in cells)]
    lines = ["| task | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for task in tasks:
        scores = {name: cells[task, name] for name in labels if (task, name) in cells}
        best = max(float(r["accuracy"]) for r in scores.values())
        out = []
        for name in labels:
            if name not in scores:
                out.append("")
                continue
            text = f"{scores[name]['accuracy']:.{digits}f} ± {scores[name]['accuracy_std']:.{digits}f}"
            out.append(f"**{text}**" if float(scores[name]["accuracy"]) == best else text)
        lines.append(f"| {task} | " + " | ".join(out) + " |")
    return "\n".join(lines) + "\n"


def asr_table(
    rows: list[Row], order: tp.Sequence[str] = ORDER, probe: str | None = None, digits: int = 4
) -> str:
    """Feature sets x conditions, WER and CER ± std; ``probe``: only that CTC probe's rows."""
    asr = {(r["label"], r["condition"]): r for r in rows if _is_asr(r) and probe in (None, r["probe"])}
    conditions = [c for c in CONDITIONS if any(k[1] == c for k in asr)]
    labels = [name for name in order if any(k[0] == name for k in asr)]
    lines = ["| features | " + " | ".join(f"WER {c} | CER {c}" for c in conditions) + " |"]
    lines.append("|---|" + "---|---|" * len(conditions))
    for name in labels:
        cells = []
        for c in conditions:
            r = asr.get((name, c))
            cells += (
                [
                    f"{r['wer']:.{digits}f} ± {r['wer_std']:.{digits}f}",
                    f"{r['cer']:.{digits}f} ± {r['cer_std']:.{digits}f}",
                ]
                if r
                else ["", ""]
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def acceptance(rows: list[Row]) -> list[dict[str, tp.Any]]:
    """The issue's three counts (MLP probe, built-in tasks): how many tasks the new encoder wins."""
    checks = [("old", "clean", 5), ("mfcc", "clean", 4), ("mfcc", "noise:5dB", 4)]
    out = []
    for than, condition, need in checks:
        deltas = wins(rows, "new", than, condition)
        won = sum(d > 0 for d in deltas.values())
        out.append({"than": than, "condition": condition, "won": won, "of": len(deltas), "need": need,
                    "met": won >= need and len(deltas) == len(BUILTIN), "deltas": deltas})  # fmt: skip
    return out


def markdown(rows: list[Row]) -> str:
    parts = [
        "# Model card evaluation\n",
        "\nAccuracy (fraction) ± std over the probe seeds; best per row in bold.\n\n",
    ]
    for check in acceptance(rows):
        deltas = ", ".join(f"{t} {d:+.4f}" for t, d in check["deltas"].items())
        verdict = "met" if check["met"] else "NOT met"
        parts.append(
            f"- new beats {check['than']} ({check['condition']}, MLP) on {check['won']} of {check['of']} "
            f"built-in tasks (needed {check['need']} of 6: {verdict}): {deltas}\n"
        )
    probes = dict.fromkeys(r["probe"] for r in rows if not _is_sequence(r))
    for probe in sorted(probes, key=lambda p: p != "mlp"):  # the MLP tables first
        for condition in CONDITIONS:
            if _cells(rows, probe, condition):
                parts.append(
                    f"\n## {probe} probe, test audio {condition}\n\n" + accuracy_table(rows, probe, condition)
                )
    if any(_is_asr(r) for r in rows):
        parts.append("\n## LibriSpeech ASR (CTC probe), WER and CER ± std over seeds\n\n" + asr_table(rows))
    return "".join(parts)


def plot(
    rows: list[Row], path: Path, tasks: tp.Sequence[str] = BUILTIN, order: tp.Sequence[str] = ORDER
) -> None:
    """MLP accuracy per task and feature set, one panel per test condition (nothing is written
    when the grid has no MLP rows, e.g. a folder of ASR results only)."""
    conditions = [c for c in CONDITIONS if _cells(rows, "mlp", c)]
    if not conditions:
        return
    from pase.plots import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, len(conditions), figsize=(5 * len(conditions), 4), sharey=True, squeeze=False)
    for ax, condition in zip(axes[0], conditions, strict=True):
        cells = _cells(rows, "mlp", condition)
        labels = [name for name in order if any(k[1] == name for k in cells)]
        width = 0.8 / max(1, len(labels))
        for i, name in enumerate(labels):
            xs = [j + i * width for j, t in enumerate(tasks) if (t, name) in cells]
            ys = [float(cells[t, name]["accuracy"]) for t in tasks if (t, name) in cells]
            ax.bar(xs, ys, width, label=name)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))], tasks, rotation=30, ha="right")
        ax.set_title(f"MLP probe, {condition}")
    axes[0][0].set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def write_card(out: Path, data: dict[str, tp.Any], md: str) -> None:
    """``card.json`` (``data``) and ``card.md`` in ``out``, each written atomically."""
    from pase.audio import write_atomic

    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2) + "\n"
    write_atomic(out / "card.json", lambda tmp: Path(tmp).write_text(text))
    write_atomic(out / "card.md", lambda tmp: Path(tmp).write_text(md))


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("eval_dir", nargs="?", type=Path, default=Path.home() / "pase_runs" / "card_eval")
    parser.add_argument("--out", type=Path, default=Path("recipes/pase_plus_v2/results/card"))
    args = parser.parse_args(argv)
    try:
        rows = collect(args.eval_dir)
    except ValueError as err:
        print(f"card_tables: {err}", file=sys.stderr)
        return 2
    md = markdown(rows)
    write_card(args.out, {"rows": rows, "acceptance": acceptance(rows)}, md)
    plot(rows, args.out / "card.png")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
