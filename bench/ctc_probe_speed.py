"""What a CTC probe costs to train on 2 CPU cores: seconds per step, per epoch of train-clean-5,
and the epochs that fit in the ASR probe's budget (issue 32: 60 minutes per feature set).

    python bench/ctc_probe_speed.py --num-threads 2 --out bench/results/ctc_probe_speed
    python bench/ctc_probe_speed.py --configs "base;base:rnn_hidden=256,stride=3" --steps 20

Each config is a :class:`pase.eval.ctc.CtcConfig` preset with optional overrides
(``name:field=value,field=value``, as ``pase eval --asr-probe`` takes them). It is timed by
:func:`pase.eval.asr.train_ctc_probe` itself (the real training loop: batching, masks, CTC, AdamW)
for ``--steps`` steps on random features of the real training utterances' lengths (the durations of
``train-clean-5`` without the dev speakers, read from ``--data`` when it is there, else a synthetic
set of the same total length) and random transcripts at LibriSpeech's ~14.5 characters a second, for
each feature dimension of ``--dims`` (FBANK 120, the PASE+ encoder 256). The per-step time is the
mean over the timed steps after ``--warmup`` steps; the epoch time multiplies it by the number of
length batches.
Numbers come from a shared machine: compare them within one run only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
import typing as tp
from pathlib import Path

import numpy as np
import torch

from pase.eval import asr
from pase.eval.ctc import CtcConfig, CtcProbe
from pase.eval.ctc_training import AsrData, in_memory, length_batches
from pase.eval.report import _table, _write_text

CHARS_PER_SECOND = 14.5
DEFAULT_CONFIGS = "small;base;base:rnn_hidden=256;base:stack=4,stride=3;base:rnn_hidden=256,rnn_layers=2"


def train_lengths(data: Path) -> np.ndarray:
    """10 ms frame counts of librispeech-asr's training utterances (synthetic when absent)."""
    if (data / "train-clean-5").is_dir():
        import soundfile as sf

        from pase.eval.tasks import librispeech_asr

        items = librispeech_asr(data).split("train")
        return np.array([int(sf.info(str(it.path)).duration * 100) for it in items])
    rng = np.random.default_rng(0)  # 4.6 h in utterances of ~2-35 s, like train-clean-5's
    seconds = np.clip(rng.lognormal(np.log(12.0), 0.5, 1400), 2.0, 35.0)
    return (seconds * 100).astype(int)


def time_config(cfg: CtcConfig, dim: int, lengths: np.ndarray, steps: int, warmup: int) -> dict[str, tp.Any]:
    rng = np.random.default_rng(0)
    letters = "abcdefghijklmnopqrstuvwxyz' "
    texts = ["".join(rng.choice(list(letters), max(1, int(n / 100 * CHARS_PER_SECOND)))) for n in lengths]

    def load(i: int) -> np.ndarray:  # drawn on demand: 4.6 h of 256-d frames would take 1.7 GB
        return np.random.default_rng(i).standard_normal((1, int(lengths[i]), dim), dtype=np.float32)

    data = AsrData(load, np.asarray(lengths), texts)
    one = in_memory([load(0)], texts[:1])
    batches = len(length_batches(data.lengths, cfg.batch_frames, cfg.max_batch))
    times = []
    for n in (1, warmup, warmup + steps):  # the first call warms allocators and kernels up, untimed
        run = dataclasses.replace(cfg, epochs=None, max_steps=n, eval_every=10**9, patience=1)
        t0 = time.perf_counter()
        asr.train_ctc_probe(data, one, one, 0, run)
        times.append(time.perf_counter() - t0)
    per_step = (times[2] - times[1]) / steps
    params = sum(p.numel() for p in CtcProbe(1, dim, cfg).parameters())
    return {
        "dim": dim,
        "params_m": round(params / 1e6, 2),
        "s_per_step": round(per_step, 3),
        "batches_per_epoch": batches,
        "min_per_epoch": round(per_step * batches / 60, 1),
        "epochs_in_60_min": round(3600 / (per_step * batches), 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help="';'-separated preset[:field=value,...]")
    p.add_argument("--dims", default="120,256", help="feature dimensions, comma-separated")
    p.add_argument("--steps", type=int, default=15, help="timed steps per config and dimension")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--data", type=Path, default=Path.home() / ".cache/pase/speech_extra/LibriSpeech")
    p.add_argument("--num-threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="write speed.json and speed.md here")
    args = p.parse_args()
    torch.set_num_threads(args.num_threads)
    configs = [(s.strip(), CtcConfig.from_spec(s)) for s in args.configs.split(";") if s.strip()]
    lengths = train_lengths(args.data)
    print(f"{len(lengths)} training utterances, {lengths.sum() / 360000:.2f} h")
    rows = []
    for spec, cfg in configs:
        for dim in (int(d) for d in args.dims.split(",")):
            row = {"config": spec, **time_config(cfg, dim, lengths, args.steps, args.warmup)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        meta = {
            "threads": args.num_threads,
            "load_average": os.getloadavg(),
            "machine": platform.processor() or platform.machine(),
            "train_hours": round(float(lengths.sum()) / 360000, 2),
        }
        _write_text(args.out / "speed.json", json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        cols = list(rows[0])
        md = f"# CTC probe training cost ({args.num_threads} threads, {meta['train_hours']} h of audio)\n\n"
        _write_text(args.out / "speed.md", md + _table(cols, [[str(r[c]) for c in cols] for r in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
