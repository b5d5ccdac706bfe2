"""Measure CTC probe configs on FBANK: test WER and CER, the dev CER curve, and the training time.

Each config (a preset, optionally with fields replaced: ``base:stride=2``, as ``pase eval
--asr-probe`` takes it) trains one probe (``--seed``, 0 by default) on librispeech-asr's training
part with its own budget and early stopping, exactly as ``pase eval`` would, recording the dev
CER at every evaluation; the test subset is scored greedily and, with ``--lm``, with the word
n-gram. With ``--steps``, each config instead runs once per step budget (the learning-rate
schedule spans the budget; early stopping off). Writes ``curve.json``, ``curve.md`` and
``curve.png`` (dev CER against steps, one line per run) after every run, and skips the runs
``curve.json`` already has.

    python recipes/asr_probe/measure.py --configs "small;base;base:stride=2" \\
        --lm lm.arpa --num-threads 2 --out recipes/asr_probe/results
    python recipes/asr_probe/measure.py --configs base --seed 1 --out recipes/asr_probe/results

``--tiny N`` keeps N training, dev and test utterances: a sanity run of the script itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
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
    p.add_argument("--configs", default="small;base", help="';'-separated preset[:field=value,...]")
    p.add_argument("--steps", default=None, help="step budgets, comma-separated (default: each config's own)")
    p.add_argument("--seed", type=int, default=0, help="the probe's seed (a second seed: the spread)")
    p.add_argument("--lm", type=Path, default=None, help="also decode with this ARPA word n-gram")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--num-threads", type=int, default=2)
    p.add_argument("--tiny", type=int, default=0, help="keep this many utterances per part (sanity run)")
    args = p.parse_args()
    torch.set_num_threads(args.num_threads)
    runs: list[tuple[str, asr.CtcConfig, int | None]] = []
    for spec in filter(None, (c.strip() for c in args.configs.split(";"))):
        cfg = asr.CtcConfig.from_spec(spec)
        if args.steps is None:
            runs.append((spec, cfg, None))
        for steps in [int(s) for s in args.steps.split(",")] if args.steps else []:
            fixed = dataclasses.replace(
                cfg, epochs=None, max_steps=steps, eval_every=max(1, steps // 4), patience=10**6
            )
            runs.append((spec, fixed, steps))

    task = librispeech_asr(args.data)
    if args.tiny:
        keep = [it for part in ("train", "valid", "test") for it in task.split(part)[: args.tiny]]
        task = dataclasses.replace(task, items=keep)
    features = make_feature_set("fbank")
    # the probe cache of `pase eval`: a config measured here is not trained again by the grid
    cache = FeatureCache(args.cache_dir or default_cache_dir())
    lm = asr.LmConfig(args.lm) if args.lm else None
    done = args.out / "curve.json"
    rows: list[dict[str, tp.Any]] = json.loads(done.read_text()) if done.is_file() else []
    for r in rows:
        r.setdefault("seed", 0)  # rows measured before --seed existed were seed 0
    for spec, cfg, budget in runs:
        if any((r["config"], r.get("budget"), r["seed"]) == (spec, budget, args.seed) for r in rows):
            print(
                f"measured before: {spec} (budget {budget or 'its own'}, seed {args.seed})", file=sys.stderr
            )
            continue
        result = asr.evaluate_asr(task, features, cache, seeds=(args.seed,), config=cfg, lm=lm, log=print)
        run = result.per_seed[0]
        dim = 120  # FBANK: 40 log mel + deltas + delta-deltas
        row: dict[str, tp.Any] = {
            "config": spec,
            "budget": budget,
            "seed": args.seed,
            "params_m": round(sum(p.numel() for p in asr.CtcProbe(1, dim, cfg).parameters()) / 1e6, 2),
            "steps": run["steps"],
            "best_step": run["best_step"],
            "dev_cer": round(run["valid_cer"], 4),
            **{k: run[k] for k in ("wer", "cer", "wer_lm", "cer_lm") if k in run},
            "train_seconds": run["train_seconds"],
            "probe_reused": run["probe_reused"],
            "dev_curve": [[step, round(err, 4)] for step, err in run["curve"]],
        }
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "dev_curve"}), file=sys.stderr)
        write(rows, args.out)
    return 0


def write(rows: list[dict[str, tp.Any]], out: Path) -> None:
    """``curve.json``, ``curve.md`` and ``curve.png`` of the rows so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / "curve.json", json.dumps(rows, indent=2) + "\n")
    cols = [
        "config",
        "budget",
        "seed",
        "params_m",
        "steps",
        "best_step",
        "dev_cer",
        "wer",
        "cer",
        "wer_lm",
        "cer_lm",
    ]
    cols = [c for c in cols if any(c in r for r in rows)] + ["train_seconds"]
    md = (
        "# CTC probe on FBANK: test WER and CER (greedy; `_lm`: word n-gram), dev CER, "
        "training time\n\n`budget`: a fixed step budget (empty: the config's own, with early stopping)\n\n"
    )
    cells = [[Seconds(r[c]) if c == "train_seconds" else r.get(c, "") for c in cols] for r in rows]
    _write_text(out / "curve.md", md + _table(cols, [["" if v is None else v for v in row] for row in cells]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        steps, errs = zip(*r["dev_curve"], strict=True) if r["dev_curve"] else ((), ())
        label = r["config"] + (f" ({r['budget']} steps)" if r.get("budget") else "") + f", seed {r['seed']}"
        ax.plot(steps, errs, "-o", ms=3, label=f"{label}: test WER {r['wer']:.2f}, CER {r['cer']:.2f}")
    ax.set(xlabel="training steps", ylabel="dev CER", title="CTC probe on FBANK: dev CER while training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
