"""Issue 32's robust-ASR table: WER, CER (greedy and with the word n-gram) and PER per feature set
and test condition, from a ``model_card_eval.sh`` output folder, plus a fine-tuned row.

    python recipes/asr_probe/table.py EVAL_DIR [--finetune DIR ...] [--out recipes/asr_probe/results/table]

EVAL_DIR holds ``base/asr``, ``base/phone`` (and ``new/asr``, ``new/phone`` when an encoder folder
was given) as ``recipes/pase_plus_v2/model_card_eval.sh`` writes them with ``PARTS="asr phone"``.
Each ``--finetune`` folder is the output of one ``pase eval --finetune`` run of a sequence task
(its ``results.json`` holds the frozen run and, under ``finetuned``, the fine-tuned one). Writes
``table.json`` (the rows), ``table.md`` (the full table with the seeds, the probe and the wall
times) and ``table.png`` (WER and PER per feature set and condition).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import typing as tp
from pathlib import Path

HERE = Path(__file__).resolve().parent
Row = dict[str, tp.Any]
#: The card's labels, spelled for a reader of this table.
NAMES = {"mfcc": "MFCC", "fbank": "FBANK", "random": "random:pase+", "old": "pase+ (packaged)", "new": "new"}
METRICS = ("wer", "cer", "wer_lm", "cer_lm", "per")


def _card_tables() -> tp.Any:
    """The v2 card's reader (``recipes/pase_plus_v2/card_tables.py``; recipes are not a package)."""
    path = HERE.parent / "pase_plus_v2" / "card_tables.py"
    spec = importlib.util.spec_from_file_location("asr_probe_card_tables", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CARD = _card_tables()


def _scores(result: Row) -> Row:
    """The error rates a result carries, each with its ``_std``."""
    return {k: result[k] for m in METRICS if m in result for k in (m, f"{m}_std")}


def rows_of(eval_dir: Path, new_name: str) -> list[Row]:
    """One row per (feature set, condition): the ASR and the phone cells' numbers side by side."""
    merged: dict[tuple[str, str], Row] = {}
    for r in CARD.collect(eval_dir):
        kind = CARD.kind_of(r)
        if kind not in ("asr", "phone"):
            continue
        name = new_name if r["label"] == "new" else NAMES[r["label"]]
        row = merged.setdefault((name, r["condition"]), {"features": name, "condition": r["condition"]})
        row |= _scores(r)
        row[f"{kind}_seeds"] = r["seeds"]
        row[f"{kind}_probe"] = describe_probe(r.get("probe_config")) or r["probe"]
        row[f"{kind}_cell_seconds"] = r["seconds"]
        trained = [s["train_seconds"] for s in r["per_seed"] if not s.get("probe_reused")]
        row[f"{kind}_probe_seconds"] = sum(trained) / len(trained) if trained else None
    return list(merged.values())


def describe_probe(cfg: dict[str, tp.Any] | None) -> str:
    """A CTC probe config in a few words: ``3 x 320 BiLSTM, 30 ms windows every 30 ms, 16 epochs``."""
    if not cfg:
        return ""
    budget = f"{cfg['epochs']:g} epochs" if cfg.get("epochs") else f"{cfg['max_steps']} steps"
    return (
        f"{cfg['rnn_layers']} x {cfg['rnn_hidden']} Bi{cfg['rnn'].upper()}, {10 * cfg['stack']} ms windows "
        f"every {10 * cfg['stride']} ms, {budget}"
    )


def finetuned_rows(folders: tp.Sequence[Path], name: str) -> list[Row]:
    """The fine-tuned runs, one row per folder (condition as it ran)."""
    out = []
    for folder in folders:
        path = folder / "results.json"
        if not path.is_file():
            raise ValueError(f"{folder}: no results.json (a `pase eval --finetune` output folder)")
        data = json.loads(path.read_text())
        tuned = data.get("finetuned")
        if not tuned:
            raise ValueError(f"{path}: no fine-tuned record (run with --finetune)")
        kind = CARD.kind_of(tuned)
        row: Row = {"features": f"{name} (fine-tuned)", "condition": data["distort"] or "clean"}
        row |= _scores(tuned)
        row[f"{kind}_seeds"] = tuned["seeds"]
        row[f"{kind}_cell_seconds"] = tuned["seconds"]
        steps = [(s.get("best_step"), s.get("steps")) for s in tuned["per_seed"]]
        row[f"{kind}_kept_step"] = steps
        out.append(row)
    return out


def _cell(row: Row, metric: str) -> str:
    if metric not in row:
        return ""
    return f"{row[metric]:.3f} ± {row[f'{metric}_std']:.3f}"


def _minutes(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds / 60:.0f}"


def markdown(rows: list[Row]) -> str:
    seeds = sorted({tuple(r[k]) for r in rows for k in ("asr_seeds", "phone_seeds") if k in r})
    probes = sorted({str(r[k]) for r in rows for k in ("asr_probe", "phone_probe") if k in r})
    head = [
        "# Robust ASR: librispeech-asr and librispeech-phone, CTC probe on frozen features\n",
        f"\nMean ± std over the probe seeds ({'; '.join(', '.join(map(str, s)) for s in seeds)}); "
        "test: the 200-utterance test-clean subset; `+LM`: the word 3-gram of train-clean-5's "
        "transcripts. Minutes: one probe's training (mean over the seeds trained in this run) and the "
        "whole cell (features, probes, decoding; a probe trained on clean features serves all three "
        "conditions, so the noise and reverb cells only decode).\n",
        "\n| features | condition | WER | CER | WER +LM | CER +LM | PER | ASR probe min | ASR cell min "
        "| PR probe min | PR cell min |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    ]
    conditions = CARD.CONDITIONS
    for r in sorted(rows, key=lambda r: (conditions.index(r["condition"]), _order(r["features"]))):
        cells = [_cell(r, m) for m in METRICS]
        times = [
            _minutes(r.get(k))
            for k in ("asr_probe_seconds", "asr_cell_seconds", "phone_probe_seconds", "phone_cell_seconds")
        ]
        head.append(f"| {r['features']} | {r['condition']} | " + " | ".join(cells + times) + " |\n")
    head.append("\nProbe settings: " + "; ".join(f"`{p}`" for p in probes) + "\n")
    return "".join(head)


def _order(name: str) -> int:
    known = list(NAMES.values())
    return known.index(name) if name in known else len(known) + name.endswith("(fine-tuned)")


def plot(rows: list[Row], path: Path) -> None:
    from pase.plots import pyplot, save_figure

    plt = pyplot()
    panels = [m for m in ("wer", "per") if any(m in r for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    names = sorted({r["features"] for r in rows}, key=_order)
    for ax, metric in zip(axes[0], panels, strict=True):
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            values = []
            for condition in CARD.CONDITIONS:
                r = next((r for r in rows if r["features"] == name and r["condition"] == condition), {})
                values.append(r.get(metric, float("nan")))
            x = [c + (i - (len(names) - 1) / 2) * width for c in range(len(CARD.CONDITIONS))]
            ax.bar(x, values, width, label=name)
        ax.set_xticks(range(len(CARD.CONDITIONS)), CARD.CONDITIONS)
        ax.set(ylabel=f"{metric.upper()} (lower is better)", title=f"{metric.upper()}, greedy decoding")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("eval_dir", type=Path)
    p.add_argument("--finetune", type=Path, nargs="*", default=[], help="pase eval --finetune output folders")
    p.add_argument(
        "--new-name", default="v3", help="what to call the encoder folder of the grid (default v3)"
    )
    p.add_argument("--finetuned-name", default="pase+", help="the fine-tuned encoder's name (default pase+)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "table")
    args = p.parse_args(argv)
    try:
        rows = rows_of(args.eval_dir, args.new_name) + finetuned_rows(args.finetune, args.finetuned_name)
    except ValueError as exc:
        print(f"table: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print(f"table: {args.eval_dir}: no librispeech-asr or librispeech-phone results", file=sys.stderr)
        return 2
    from pase.eval.report import _write_text

    args.out.mkdir(parents=True, exist_ok=True)
    _write_text(args.out / "table.json", json.dumps(rows, indent=2) + "\n")
    _write_text(args.out / "table.md", markdown(rows))
    plot(rows, args.out / "table.png")
    print(f"table: {len(rows)} rows in {args.out}/table.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
