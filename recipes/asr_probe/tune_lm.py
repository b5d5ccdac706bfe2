"""Choose the word n-gram's weights (``--lm-alpha``, ``--lm-beta``) on the dev part, not the test.

    python recipes/asr_probe/tune_lm.py --lm ~/.cache/pase/lm/tc5-3gram.arpa \\
        --out recipes/asr_probe/results/lm_tuning [--config base] [--seed 0]

Reads the FBANK probe that ``measure.py`` (or ``pase eval``) trained and cached for that config and
seed (it trains nothing: a missing probe is an error), runs it once over the dev speakers, then
decodes the dev part with the beam search for every (alpha, beta) of the grid. The pair with the
lowest dev WER is then scored on the test subset beside pyctcdecode's defaults (0.5, 1.0). Writes
``lm_tuning.json`` and ``lm_tuning.md`` (dev WER and CER per pair; test WER and CER, greedy, with
the defaults and with the chosen pair).
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
from tqdm import tqdm

from pase.eval import asr
from pase.eval.features import FeatureCache, default_cache_dir, make_feature_set
from pase.eval.report import _table, _write_text
from pase.eval.tasks import librispeech_asr


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path.home() / ".cache/pase/speech_extra/LibriSpeech")
    p.add_argument("--lm", type=Path, required=True, help="ARPA word n-gram")
    p.add_argument("--config", default="base", help="the probe (preset[:field=value,...])")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--alphas", default="0.3,0.5,0.7,1.0")
    p.add_argument("--betas", default="0.0,1.0,2.0,3.0")
    p.add_argument("--beam-width", type=int, default=64)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--num-threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.num_threads)
    cfg = asr.CtcConfig.from_spec(args.config)
    task = librispeech_asr(args.data)
    features = make_feature_set("fbank")
    cache = FeatureCache(args.cache_dir or default_cache_dir())
    parts = {name: task.split(name) for name in ("train", "valid", "test")}
    data = {
        name: asr._cached_data(features, items, cache, None, f"fbank {name}") for name, items in parts.items()
    }
    key = asr.ProbeCache.key(features.fingerprint(), asr.probe_train_keys(parts), cfg, args.seed)
    found = asr.ProbeCache(cache.root).load(key)
    if found is None:
        print(
            f"tune_lm: no cached FBANK probe for {args.config!r}, seed {args.seed}: train it first "
            f"(recipes/asr_probe/measure.py --configs {args.config!r})",
            file=sys.stderr,
        )
        return 2
    stats = asr.feature_stats(data["train"])
    model = asr.CtcProbe(1, int(stats[0].shape[1]), cfg)
    model.load_state_dict(found[0])
    dev = asr.posteriors(model, data["valid"], *stats)
    test = asr.posteriors(model, data["test"], *stats)
    dev_refs, test_refs = list(data["valid"].texts), list(data["test"].texts)
    base = asr.LmConfig(args.lm, beam_width=args.beam_width)
    decoder = asr.LmDecoder(base)

    def decode(log_probs: tp.Sequence[tp.Any], alpha: float, beta: float) -> list[str]:
        decoder.set_weights(alpha, beta)
        return [decoder(lp) for lp in log_probs]

    rows: list[dict[str, tp.Any]] = [
        {"alpha": None, "beta": None, **asr.scores(asr.CHARACTERS, dev_refs, asr.greedy_transcripts(dev))}
    ]
    grid = [(float(a), float(b)) for a in args.alphas.split(",") for b in args.betas.split(",")]
    for alpha, beta in tqdm(grid, desc="dev decodes", unit="pair"):
        t0 = time.time()
        rows.append(
            {"alpha": alpha, "beta": beta, **asr.scores(asr.CHARACTERS, dev_refs, decode(dev, alpha, beta))}
        )
        rows[-1]["seconds"] = round(time.time() - t0, 1)
    best = min(rows[1:], key=lambda r: (r["wer"], r["cer"]))
    chosen = {"alpha": best["alpha"], "beta": best["beta"]}
    tests = {
        "greedy": asr.scores(asr.CHARACTERS, test_refs, asr.greedy_transcripts(test)),
        "default (0.5, 1.0)": asr.scores(asr.CHARACTERS, test_refs, decode(test, base.alpha, base.beta)),
        f"chosen ({best['alpha']}, {best['beta']})": asr.scores(
            asr.CHARACTERS, test_refs, decode(test, best["alpha"], best["beta"])
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "probe": args.config, "seed": args.seed, "lm": str(args.lm), "beam_width": args.beam_width,
        "probe_config": dataclasses.asdict(cfg), "dev": rows, "chosen": chosen, "test": tests,
    }  # fmt: skip
    _write_text(args.out / "lm_tuning.json", json.dumps(record, indent=2) + "\n")
    md = [
        f"# Word n-gram weights on the dev speakers (FBANK, probe `{args.config}`, seed {args.seed})\n\n",
        "Dev part (3 held-out train-clean-5 speakers); the first row is greedy decoding.\n\n",
        _table(
            ["alpha", "beta", "wer", "cer"],
            [
                [
                    "-" if r["alpha"] is None else r["alpha"],
                    "-" if r["beta"] is None else r["beta"],
                    r["wer"],
                    r["cer"],
                ]
                for r in rows
            ],
        ),
        f"\nChosen: alpha {best['alpha']}, beta {best['beta']}. Test subset (200 utterances):\n\n",
        _table(["decoding", "wer", "cer"], [[name, s["wer"], s["cer"]] for name, s in tests.items()]),
    ]
    _write_text(args.out / "lm_tuning.md", "".join(md))
    print("".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
