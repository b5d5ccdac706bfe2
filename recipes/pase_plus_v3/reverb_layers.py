"""Why does a random-init PASE+ keep speaker identity under reverberation when trained ones lose it?

A diagnostic for the v3 recipe (see README.md beside this file): for each encoder and each of its 9
hidden states, utterance vectors (mean + std pooling over frames, as the eval's utterance probes
use) feed two closed-form classifiers, standardised on the clean training part: ridge regression
onto one-hot labels (``ridge``) and the nearest class mean by cosine (``centroid``), both fitted on
clean training audio and tested on clean and on reverberated test audio (the eval's ``reverb``
condition: the same per-file rooms as ``pase eval --distort reverb``). A subset per speaker keeps
it to minutes. It also reports, per layer, how far reverberation moves the utterance vectors
relative to the spread between speakers (``shift``: mean distance from a test file's clean vector
to its reverberated one over the mean distance between speaker centroids, standardised space).

Encoders: ``pase+`` (the packaged model, BatchNorm statistics from training), ``pase+@bn`` (the
same weights with BatchNorm statistics re-estimated on the task's clean training audio, as the
eval does for ``random:pase+``), ``random:pase+`` (the eval's random init), and any other spec
``pase eval --features`` takes.

    python recipes/pase_plus_v3/reverb_layers.py --task ravdess-speaker --out reverb_layers.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import typing as tp
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from pase.audio import load_audio, write_atomic
from pase.encoder import Encoder
from pase.eval import features as F
from pase.eval.tasks import builtin_task
from pase.progress import progress


def subset(items: list[tp.Any], per_speaker: int, seed: int = 0) -> list[tp.Any]:
    by: dict[str, list[tp.Any]] = defaultdict(list)
    for it in items:
        by[it.label].append(it)
    rng = random.Random(seed)
    out = []
    for label in sorted(by):
        out += sorted(rng.sample(by[label], min(per_speaker, len(by[label]))), key=str)
    return out


def feature_set(spec: str, train_paths: list[Path]) -> F.EncoderFeatures:
    if spec.endswith("@bn"):
        fs = F.EncoderFeatures(spec, Encoder.from_pretrained(spec[:-3]), "all", calibrate=True)
    else:
        fs = tp.cast(F.EncoderFeatures, F.make_feature_set(spec, layers="all"))
    fs.calibrate_on(train_paths)
    return fs


def pooled(fs: F.EncoderFeatures, path: Path, distortion: tp.Any | None) -> np.ndarray:
    wav = load_audio(path)
    if distortion is not None:
        wav = distortion(wav, path)
    feats = fs.extract(wav)  # [L, F, D]
    return np.concatenate([feats.mean(axis=1), feats.std(axis=1)], axis=-1)  # [L, 2D]


def classify(
    train: np.ndarray, ytr: np.ndarray, tests: dict[str, np.ndarray], yte: np.ndarray
) -> dict[str, float]:
    """Accuracy of ``ridge`` and ``centroid`` on each test set, and the reverberation ``shift``."""
    mu, sd = train.mean(0), train.std(0) + 1e-6
    classes = np.unique(ytr)

    def unit(x: np.ndarray) -> np.ndarray:
        z = (x - mu) / sd
        return z / np.linalg.norm(z, axis=1, keepdims=True)

    z = unit(train)
    onehot = (ytr[:, None] == classes[None]).astype(np.float64)
    gram = z.T @ z + 0.1 * np.eye(z.shape[1])
    w = np.linalg.solve(gram, z.T @ onehot)
    cent = np.stack([z[ytr == c].mean(0) for c in classes])
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    out = {}
    for name, x in tests.items():
        zx = unit(x)
        out[f"ridge_{name}"] = float((classes[(zx @ w).argmax(1)] == yte).mean())
        out[f"centroid_{name}"] = float((classes[(zx @ cent.T).argmax(1)] == yte).mean())
    spread = np.mean([np.linalg.norm(a - b) for i, a in enumerate(cent) for b in cent[i + 1 :]])
    out["shift"] = float(np.linalg.norm(unit(tests["clean"]) - unit(tests["reverb"]), axis=1).mean() / spread)
    return out


def pooled_set(
    fs: F.EncoderFeatures, items: list[tp.Any], distortion: tp.Any | None, cache: Path
) -> np.ndarray:
    """Utterance vectors ``[N, L, 2D]`` of ``items``, read back from ``cache`` when it exists."""
    if cache.exists():
        return tp.cast(np.ndarray, np.load(cache))
    x = np.stack([pooled(fs, it.path, distortion) for it in progress(items, desc=f"{fs.name} {cache.stem}")])
    write_atomic(cache, lambda tmp: np.save(open(tmp, "wb"), x))
    return x


def main(argv: tp.Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="ravdess-speaker")
    p.add_argument("--data", type=Path, default=Path("../shared/speech"))
    p.add_argument("--features", default="pase+,pase+@bn,random:pase+")
    p.add_argument("--per-speaker", type=int, default=12, help="training files per speaker (test: half)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    task = builtin_task(args.task, args.data)
    train = subset(task.split("train") + task.split("valid"), args.per_speaker)
    test = subset(task.split("test"), max(1, args.per_speaker // 2))
    ytr = np.array([it.label for it in train])
    yte = np.array([it.label for it in test])
    reverb = F.EvalCondition("reverb", args.data)
    results: dict[str, tp.Any] = {"task": args.task, "train": len(train), "test": len(test), "layers": {}}
    for spec in args.features.split(","):
        fs = feature_set(spec, [it.path for it in train])
        stem = f".{args.out.stem}.{F.safe_name(spec)}.{args.per_speaker}"
        xtr = pooled_set(fs, train, None, args.out.parent / f"{stem}.train.npy")
        xc = pooled_set(fs, test, None, args.out.parent / f"{stem}.test.npy")
        xr = pooled_set(fs, test, reverb, args.out.parent / f"{stem}.reverb.npy")
        rows = []
        for k in range(xtr.shape[1]):
            rows.append(classify(xtr[:, k], ytr, {"clean": xc[:, k], "reverb": xr[:, k]}, yte))
        results["layers"][spec] = rows
        for k, r in enumerate(rows):
            print(
                f"{spec:14s} layer {k}: ridge clean {r['ridge_clean']:.3f} reverb {r['ridge_reverb']:.3f}"
                f" | centroid clean {r['centroid_clean']:.3f} reverb {r['centroid_reverb']:.3f}"
                f" | shift {r['shift']:.2f}"
            )
    write_atomic(args.out, lambda tmp: Path(tmp).write_text(json.dumps(results, indent=1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
