"""Measure the CTC probe presets on FBANK: test WER and CER against training steps.

For each probe size (preset) and each step budget, trains one probe (seed 0) on librispeech-asr's
training part with that many steps (the learning-rate schedule spans the budget, as in a real run;
early stopping off) and scores the 200-utterance test subset greedily, and with ``--lm`` also with
the word n-gram. Writes ``curve.json``, ``curve.md`` (through pase.eval.report) and ``curve.png``.

    python recipes/asr_probe/measure.py --out recipes/asr_probe/results --num-threads 2
    python recipes/asr_probe/measure.py --presets small,base --steps 500,1000,2000,4000 \\
        --lm lm.arpa --out results/

``--tiny N`` keeps N training, dev and test utterances: a sanity run of the script itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import typing as tp
from pathlib import Path

import torch

from pase.eval import asr
from pase.eval.features import FeatureCache, default_cache_dir, make_feature_set
from pase.eval.report import Seconds, _table, _write_text
from pase.eval.tasks import librispeech_asr


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path.home() / ".cache/pase/speech_extra/LibriSpeech")
    p.add_argument("--presets", default="small,base", help="probe sizes, comma-separated")
    p.add_argument("--steps", default="500,1000,2000,4000", help="step budgets, comma-separated")
    p.add_argument("--lm", type=Path, default=None, help="also decode with this ARPA word n-gram")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--num-threads", type=int, default=2)
    p.add_argument("--tiny", type=int, default=0, help="keep this many utterances per part (sanity run)")
    args = p.parse_args()
    torch.set_num_threads(args.num_threads)

    task = librispeech_asr(args.data)
    features = make_feature_set("fbank")
    cache = FeatureCache(args.cache_dir or default_cache_dir())
    parts = {name: task.split(name) for name in ("train", "valid", "test")}
    if args.tiny:
        parts = {name: items[: args.tiny] for name, items in parts.items()}
    data = {
        name: asr._cached_data(features, items, cache, None, f"fbank {name}") for name, items in parts.items()
    }
    stats = asr.feature_stats(data["train"])
    decoder = asr.LmDecoder(asr.LmConfig(args.lm)) if args.lm else None
    refs = list(data["test"].texts)
    rows: list[dict[str, tp.Any]] = []
    for preset in args.presets.split(","):
        for steps in [int(s) for s in args.steps.split(",")]:
            # the budget is the step count alone; one dev evaluation at its end
            cfg = dataclasses.replace(
                asr.CtcConfig.preset(preset), epochs=None, max_steps=steps, eval_every=steps, patience=1
            )
            t0 = time.time()
            fit = asr.train_ctc_probe(data["train"], data["valid"], data["test"], 0, cfg, "cpu", stats, print)
            row: dict[str, tp.Any] = {
                "preset": preset,
                "steps": fit.steps,
                **asr.scores(asr.CHARACTERS, refs, fit.hypotheses),
            }
            row["train_seconds"] = round(time.time() - t0, 1)
            if decoder is not None:
                num_layers, dim = stats[0].shape
                model = asr.CtcProbe(num_layers, dim, cfg)
                model.load_state_dict(fit.state)
                lm_hyps = [decoder(lp) for lp in asr.posteriors(model, data["test"], *stats)]
                row |= asr.scores(asr.CHARACTERS, refs, lm_hyps, "_lm")
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
            write(rows, args.out)
    return 0


def write(rows: list[dict[str, tp.Any]], out: Path) -> None:
    """``curve.json``, ``curve.md`` and ``curve.png`` of the rows so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / "curve.json", json.dumps(rows, indent=2) + "\n")
    cols = [c for c in ("preset", "steps", "wer", "cer", "wer_lm", "cer_lm", "train_seconds") if c in rows[0]]
    md = "# CTC probe on FBANK: test WER and CER (greedy; `_lm`: word n-gram) against steps\n\n"
    _write_text(
        out / "curve.md",
        md + _table(cols, [[Seconds(r[c]) if c == "train_seconds" else r[c] for c in cols] for r in rows]),
    )
    fig, ax = plt.subplots(figsize=(6, 4))
    for preset in dict.fromkeys(str(r["preset"]) for r in rows):
        mine = [r for r in rows if r["preset"] == preset]
        for metric, style in (("wer", "-o"), ("cer", "--s")):
            ax.plot([r["steps"] for r in mine], [r[metric] for r in mine], style, label=f"{preset} {metric}")
    ax.set(
        xlabel="training steps", ylabel="error rate (fraction)", title="CTC probe on FBANK, test-clean subset"
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
