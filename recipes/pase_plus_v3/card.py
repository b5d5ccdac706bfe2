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
import sys
import typing as tp
from pathlib import Path

HERE = Path(__file__).resolve().parent
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
TASKS = (*V2.BUILTIN, "librispeech-speaker40")  # the issue's 7 tasks


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


def _check(
    name: str, passed: dict[str, bool], need: int, total: int, detail: dict[str, str], also: bool = True
) -> Check:
    """One acceptance line: ``passed`` per task (or condition); met when all ``total`` were
    measured, at least ``need`` passed and ``also`` holds (an "at or above on all" clause)."""
    won = sum(passed.values())
    met = won >= need and len(passed) == total and also
    return {"check": name, "won": won, "of": len(passed), "need": need, "total": total, "met": met,
            "detail": detail}  # fmt: skip


def acceptance(rows: list[Row]) -> list[Check]:
    """The issue's checks, in its order."""
    clean, noise, reverb = (_means(rows, c) for c in ("clean", "noise:5dB", "reverb"))
    have = lambda m, *labels: [t for t in TASKS if all((t, x) in m for x in labels)]  # noqa: E731
    fmt = lambda d: f"{d:+.4f}"  # noqa: E731
    out = []

    tasks = have(clean, "v3", "v2")
    delta = {t: clean[t, "v3"] - clean[t, "v2"] for t in tasks}
    at_least = all(d >= 0 for d in delta.values())
    passed = {t: d > 0 for t, d in delta.items()}
    out.append(
        _check("v3 > v2 (clean)", passed, 5, len(TASKS), {t: fmt(d) for t, d in delta.items()}, at_least)
    )

    tasks = have(clean, "v3", "mfcc", "fbank")
    delta = {t: clean[t, "v3"] - max(clean[t, "mfcc"], clean[t, "fbank"]) for t in tasks}
    at_least = all(d >= 0 for d in delta.values())
    passed = {t: d > 0 for t, d in delta.items()}
    detail = {t: fmt(d) for t, d in delta.items()}
    out.append(_check("v3 > mfcc and fbank (clean)", passed, 6, len(TASKS), detail, at_least))

    tasks = have(noise, *ORDER)
    best = {t: max(ORDER, key=lambda x: noise[t, x]) for t in tasks}
    delta = {t: noise[t, "v3"] - max(noise[t, x] for x in ORDER if x != "v3") for t in tasks}
    out.append(
        _check(
            "v3 best of five (noise 5 dB)",
            {t: d >= 0 for t, d in delta.items()},
            5,
            len(TASKS),
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
            len(SPEAKER_TASKS),
            {t: f"v3 {g3:+.4f}, v2 {g2:+.4f}" for t, (g3, g2) in gaps.items()},
        )
    )

    asr = [r for r in rows if V2.kind_of(r) == "asr"]
    probes = sorted({r["probe"] for r in asr})
    passed, detail = {}, {}
    if probes:
        probe = _newest_probe(asr, probes)
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
    out.append(_check("ASR: lowest CER of the five", passed, 3, len(V2.CONDITIONS), detail))
    return out


def _newest_probe(asr: list[Row], probes: list[str]) -> str:
    """With ASR rows of several CTC probes, the one that has v3 (the grid's current probe)."""
    with_v3 = [p for p in probes if any(r["probe"] == p and r["label"] == "v3" for r in asr)]
    return with_v3[0] if with_v3 else probes[0]


def markdown(rows: list[Row], checks: list[Check]) -> str:
    parts = [
        "# PASE+ v3 model card evaluation\n\n",
        "Accuracy ± std over the probe seeds; best per row in bold. Acceptance (MLP probe):\n\n",
    ]
    for c in checks:
        detail = ", ".join(f"{k} {v}" for k, v in c["detail"].items())
        parts.append(
            f"- {c['check']}: {c['won']} of {c['of']} (needed {c['need']} of {c['total']}: "
            f"{'met' if c['met'] else 'NOT met'}): {detail}\n"
        )
    probes = sorted({r["probe"] for r in rows if "accuracy" in r}, key=lambda p: (p != "mlp", p))
    for probe in probes:
        for condition in V2.CONDITIONS:
            if any(r["probe"] == probe and r["condition"] == condition and "accuracy" in r for r in rows):
                parts.append(
                    f"\n## {probe} probe, test audio {condition}\n\n"
                    + V2.accuracy_table(rows, probe, condition, ORDER, TASKS, digits=3)
                )
    for probe in sorted({r["probe"] for r in rows if V2.kind_of(r) == "asr"}):
        parts.append(
            f"\n## LibriSpeech ASR ({probe}), WER and CER ± std over seeds\n\n"
            + V2.asr_table(rows, ORDER, probe, digits=3)
        )
    return "".join(parts)


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
    try:
        rows = collect(args.v3_dir, args.v2_card)
    except ValueError as err:
        print(f"v3 card: {err}", file=sys.stderr)
        return 2
    checks = acceptance(rows)
    md = markdown(rows, checks)
    V2.write_card(args.out, {"rows": rows, "acceptance": checks}, md)
    V2.plot(rows, args.out / "card.png", TASKS, ORDER)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
