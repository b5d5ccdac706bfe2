"""Issue 28's model card tables and acceptance checks: v3 against mfcc, fbank, random:pase+ and v2.

    python recipes/pase_plus_v3/card.py V3_EVAL_DIR [--v2-card recipes/pase_plus_v2/results/card_eval]
        [--out recipes/pase_plus_v3/results/card]

The baselines and v2 are not evaluated again: their cells are the v2 model card's
(``recipes/pase_plus_v2/results/card_eval``: ``base/`` holds mfcc, fbank and random:pase+, whose
``pase+`` rows were v1 and are left out; ``new/`` is v2). V3_EVAL_DIR is the output of
``recipes/pase_plus_v2/model_card_eval.sh V3_ENCODER_DIR`` with ``SETS=new``; any baseline cell it
holds too (for example librispeech-asr measured again with another CTC probe) replaces the v2
card's. There, an encoder folder is v3 and the feature set ``pase+`` is v2 (run the grid before v3
replaces the packaged model). Writes ``card.json`` (rows and checks), ``card.md`` (the checks, one
table per probe and condition, the ASR tables per CTC probe) and ``card.png``.

The checks are the issue's acceptance list (MLP probe, 3 seeds): v3 at or above v2 on all 7 tasks
and strictly above on 5; clean, at or above both MFCC and FBANK on all 7 and strictly above both on
6; under noise 5 dB the best of the five on 5; under reverberation at or above MFCC on all 7 and, on
the three speaker tasks, the gap to the random init at most half of v2's (or closed); LibriSpeech
ASR, the lowest CER of the five in every condition. "At or above" compares the means.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import typing as tp
from pathlib import Path

HERE = Path(__file__).resolve().parent
TASKS = (
    "fsdd-digit",
    "ravdess-speaker",
    "ravdess-emotion",
    "emodb-emotion",
    "emodb-phone",
    "librispeech-speaker",
    "librispeech-speaker40",
)
SPEAKER_TASKS = ("ravdess-speaker", "librispeech-speaker", "librispeech-speaker40")
ORDER = ("mfcc", "fbank", "random", "v2", "v3")
BASELINES = {"mfcc": "mfcc", "fbank": "fbank", "random:pase+": "random"}

Row = dict[str, tp.Any]
Check = dict[str, tp.Any]


def _v2_tables() -> tp.Any:
    """The v2 card's reader (``recipes/pase_plus_v2/card_tables.py``; recipes are not a package)."""
    path = HERE.parent / "pase_plus_v2" / "card_tables.py"
    spec = importlib.util.spec_from_file_location("pase_plus_v2_card_tables", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


V2 = _v2_tables()


def _relabel(rows: list[Row], labels: tp.Callable[[str], str | None]) -> list[Row]:
    out = []
    for row in rows:
        name = labels(row["features"])
        if name is not None:
            out.append({**row, "label": name})
    return out


def collect(v3_dir: Path, v2_card: Path) -> list[Row]:
    """The v2 card's baseline and v2 cells, then V3_EVAL_DIR's (whose cells replace the same ones).

    Raises ``ValueError`` when a folder holds no results, V3_EVAL_DIR has no v3 row, or it names
    two encoder folders."""
    rows: list[Row] = []
    if v2_card.is_dir():
        if (v2_card / "base").is_dir():
            rows += _relabel(V2.collect(v2_card / "base"), BASELINES.get)  # "pase+" there was v1
        if (v2_card / "new").is_dir():
            rows += _relabel(V2.collect(v2_card / "new"), lambda f: None if f in BASELINES else "v2")
    new = _relabel(V2.collect(v3_dir), lambda f: BASELINES.get(f, "v2" if f == "pase+" else "v3"))
    if not any(r["label"] == "v3" for r in new):
        raise ValueError(f"{v3_dir}: no result of an encoder folder (the v3 cells)")
    merged = {_key(r): r for r in rows}
    merged.update({_key(r): r for r in new})
    return list(merged.values())


def _key(row: Row) -> tuple[str, ...]:
    return (row["task"], row["label"], row["probe"], row["condition"])


def _means(rows: list[Row], condition: str, probe: str = "mlp") -> dict[tuple[str, str], float]:
    return {
        (r["task"], r["label"]): float(r["accuracy"])
        for r in rows
        if r["probe"] == probe and r["condition"] == condition and "accuracy" in r
    }


def _check(name: str, passed: dict[str, bool], need: int, detail: dict[str, str]) -> Check:
    """One acceptance line: ``passed`` per task; met when every task was measured and at least
    ``need`` passed."""
    won = sum(passed.values())
    return {
        "check": name,
        "won": won,
        "of": len(passed),
        "need": need,
        "met": won >= need and len(passed) == need_of(name),
        "detail": detail,
    }


def need_of(name: str) -> int:
    """How many tasks a check is over (the ASR check: three conditions)."""
    if name.startswith("reverb: speaker"):
        return len(SPEAKER_TASKS)
    return 3 if name.startswith("ASR") else len(TASKS)


def acceptance(rows: list[Row]) -> list[Check]:
    """The issue's checks, in its order."""
    clean, noise, reverb = (_means(rows, c) for c in ("clean", "noise:5dB", "reverb"))
    have = lambda m, *labels: [t for t in TASKS if all((t, x) in m for x in labels)]  # noqa: E731
    fmt = lambda d: f"{d:+.4f}"  # noqa: E731
    out = []

    tasks = have(clean, "v3", "v2")
    delta = {t: clean[t, "v3"] - clean[t, "v2"] for t in tasks}
    at_least = all(d >= 0 for d in delta.values()) and len(tasks) == len(TASKS)
    check = _check(
        "v3 > v2 (clean)", {t: d > 0 for t, d in delta.items()}, 5, {t: fmt(d) for t, d in delta.items()}
    )
    check["met"] = check["met"] and at_least
    out.append(check)

    tasks = have(clean, "v3", "mfcc", "fbank")
    delta = {t: clean[t, "v3"] - max(clean[t, "mfcc"], clean[t, "fbank"]) for t in tasks}
    check = _check(
        "v3 > mfcc and fbank (clean)",
        {t: d > 0 for t, d in delta.items()},
        6,
        {t: fmt(d) for t, d in delta.items()},
    )
    check["met"] = check["met"] and all(d >= 0 for d in delta.values())
    out.append(check)

    tasks = have(noise, *ORDER)
    best = {t: max(ORDER, key=lambda x: noise[t, x]) for t in tasks}
    delta = {t: noise[t, "v3"] - max(noise[t, x] for x in ORDER if x != "v3") for t in tasks}
    out.append(
        _check(
            "v3 best of five (noise 5 dB)",
            {t: d >= 0 for t, d in delta.items()},
            5,
            {t: f"{fmt(d)} (best: {best[t]})" for t, d in delta.items()},
        )
    )

    tasks = have(reverb, "v3", "mfcc")
    delta = {t: reverb[t, "v3"] - reverb[t, "mfcc"] for t in tasks}
    out.append(
        _check(
            "v3 >= mfcc (reverb)",
            {t: d >= 0 for t, d in delta.items()},
            len(TASKS),
            {t: fmt(d) for t, d in delta.items()},
        )
    )

    tasks = [t for t in have(reverb, "v3", "v2", "random") if t in SPEAKER_TASKS]
    gaps = {t: (reverb[t, "random"] - reverb[t, "v3"], reverb[t, "random"] - reverb[t, "v2"]) for t in tasks}
    out.append(
        _check(
            "reverb: speaker gap to random at most half of v2's",
            {t: g3 <= max(0.0, g2 / 2) for t, (g3, g2) in gaps.items()},
            len(SPEAKER_TASKS),
            {t: f"v3 {g3:+.4f}, v2 {g2:+.4f}" for t, (g3, g2) in gaps.items()},
        )
    )

    asr = [r for r in rows if V2.kind_of(r) == "asr"]
    probes = sorted({r["probe"] for r in asr})
    passed: dict[str, bool] = {}
    detail: dict[str, str] = {}
    if probes:
        probe = probes[-1] if len(probes) == 1 else _newest_probe(asr, probes)
        for condition in V2.CONDITIONS:
            cer = {
                r["label"]: float(r["cer"])
                for r in asr
                if r["probe"] == probe and r["condition"] == condition
            }
            if all(x in cer for x in ORDER):
                others = min(cer[x] for x in ORDER if x != "v3")
                passed[condition] = cer["v3"] < others
                detail[condition] = f"v3 CER {cer['v3']:.4f} vs best other {others:.4f} ({probe})"
    out.append(_check("ASR: lowest CER of the five", passed, 3, detail))
    return out


def _newest_probe(asr: list[Row], probes: list[str]) -> str:
    """With ASR rows of several CTC probes, the one that has v3 (the grid's current probe)."""
    with_v3 = [p for p in probes if any(r["probe"] == p and r["label"] == "v3" for r in asr)]
    return with_v3[0] if with_v3 else probes[0]


def _accuracy_table(rows: list[Row], probe: str, condition: str) -> str:
    cells = {
        (r["task"], r["label"]): r
        for r in rows
        if r["probe"] == probe and r["condition"] == condition and "accuracy" in r
    }
    labels = [x for x in ORDER if any(k[1] == x for k in cells)]
    lines = ["| task | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for task in [t for t in TASKS if any(k[0] == t for k in cells)]:
        best = max(float(cells[task, x]["accuracy"]) for x in labels if (task, x) in cells)
        out = []
        for x in labels:
            r = cells.get((task, x))
            text = "" if r is None else f"{r['accuracy']:.3f} ± {r['accuracy_std']:.3f}"
            out.append(f"**{text}**" if r is not None and float(r["accuracy"]) == best else text)
        lines.append(f"| {task} | " + " | ".join(out) + " |")
    return "\n".join(lines) + "\n"


def _asr_table(rows: list[Row], probe: str) -> str:
    asr = {(r["label"], r["condition"]): r for r in rows if V2.kind_of(r) == "asr" and r["probe"] == probe}
    conditions = [c for c in V2.CONDITIONS if any(k[1] == c for k in asr)]
    lines = [
        "| features | " + " | ".join(f"WER {c} | CER {c}" for c in conditions) + " |",
        "|---|" + "---|---|" * len(conditions),
    ]
    for x in [x for x in ORDER if any(k[0] == x for k in asr)]:
        cells = []
        for c in conditions:
            r = asr.get((x, c))
            cells += (
                [f"{r['wer']:.3f} ± {r['wer_std']:.3f}", f"{r['cer']:.3f} ± {r['cer_std']:.3f}"]
                if r
                else ["", ""]
            )
        lines.append(f"| {x} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown(rows: list[Row], checks: list[Check]) -> str:
    parts = [
        "# PASE+ v3 model card evaluation\n\n",
        "Accuracy ± std over the probe seeds; best per row in bold. Acceptance (MLP probe):\n\n",
    ]
    for c in checks:
        detail = ", ".join(f"{k} {v}" for k, v in c["detail"].items())
        parts.append(
            f"- {c['check']}: {c['won']} of {c['of']} (needed {c['need']} of {need_of(c['check'])}: "
            f"{'met' if c['met'] else 'NOT met'}): {detail}\n"
        )
    probes = sorted({r["probe"] for r in rows if "accuracy" in r}, key=lambda p: (p != "mlp", p))
    for probe in probes:
        for condition in V2.CONDITIONS:
            if any(r["probe"] == probe and r["condition"] == condition and "accuracy" in r for r in rows):
                parts.append(
                    f"\n## {probe} probe, test audio {condition}\n\n"
                    + _accuracy_table(rows, probe, condition)
                )
    for probe in sorted({r["probe"] for r in rows if V2.kind_of(r) == "asr"}):
        parts.append(
            f"\n## LibriSpeech ASR ({probe}), WER and CER ± std over seeds\n\n" + _asr_table(rows, probe)
        )
    return "".join(parts)


def plot(rows: list[Row], path: Path) -> None:
    """MLP accuracy per task and feature set, one panel per test condition."""
    from pase.plots import pyplot, save_figure

    conditions = [c for c in V2.CONDITIONS if _means(rows, c)]
    if not conditions:
        return
    plt = pyplot()
    fig, axes = plt.subplots(
        1, len(conditions), figsize=(5.5 * len(conditions), 4), sharey=True, squeeze=False
    )
    for ax, condition in zip(axes[0], conditions, strict=True):
        means = _means(rows, condition)
        labels = [x for x in ORDER if any(k[1] == x for k in means)]
        width = 0.8 / len(labels)
        for i, x in enumerate(labels):
            xs = [j + i * width for j, t in enumerate(TASKS) if (t, x) in means]
            ax.bar(xs, [means[t, x] for t in TASKS if (t, x) in means], width, label=x)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(TASKS))], TASKS, rotation=30, ha="right")
        ax.set_title(f"MLP probe, {condition}")
    axes[0][0].set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("v3_dir", type=Path)
    parser.add_argument(
        "--v2-card", type=Path, default=HERE.parent / "pase_plus_v2" / "results" / "card_eval"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "card")
    args = parser.parse_args(argv)
    from pase.audio import write_atomic

    try:
        rows = collect(args.v3_dir, args.v2_card)
    except ValueError as err:
        print(f"v3 card: {err}", file=sys.stderr)
        return 2
    checks = acceptance(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"rows": rows, "acceptance": checks}, indent=2) + "\n"
    write_atomic(args.out / "card.json", lambda tmp: Path(tmp).write_text(text))
    md = markdown(rows, checks)
    write_atomic(args.out / "card.md", lambda tmp: Path(tmp).write_text(md))
    plot(rows, args.out / "card.png")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
