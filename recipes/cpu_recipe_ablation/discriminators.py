"""Can a LIM / GIM head learn "same utterance or not" from an encoder's frozen features?

    cd recipes/cpu_recipe_ablation
    python discriminators.py --encoder pase+ --out results/discriminators.json
    python discriminators.py --encoder RUN/encoder --forms lim:bilinear:batch:50,gim:mlp:one:0

The encoder is frozen; the training recipe's own batches (the pretraining data, the PASE+
distortions of the anchor, the speaker-disjoint validation hold-out) are encoded once, and each
discriminator form (``worker:head:negatives:pool``) trains its head alone on those encodings with
the recipe's worker learning rate. Reported: the pair accuracy (2AFC: positive scored above the
item's own negative; chance 0.5) on the held-out batches after every ``--eval-every`` steps.
It separates two questions the training curves mix up: is the information in the features (a
head on frozen features reaches it), and does the training signal put it there.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import typing as tp
from pathlib import Path

import torch

from pase.audio import write_atomic
from pase.train import TrainConfig, Trainer
from pase.workers import WORKERS, WorkerBatch, WorkerConfig

REPO = Path(__file__).resolve().parents[2]
DEFAULT_FORMS = (
    "lim:mlp:one:1",
    "lim:bilinear:batch:10",
    "lim:bilinear:batch:50",
    "gim:mlp:one:0",
    "gim:bilinear:batch:0",
    "gim:cosine:batch:0",
)


def default_data() -> list[str]:
    extra = Path(os.environ.get("PASE_EXTRA_SPEECH", Path.home() / ".cache/pase/speech_extra"))
    speech = Path(os.environ.get("PASE_SPEECH_DIR", REPO.parent / "shared" / "speech"))
    return [str(extra / "pretrain.csv"), str(speech / "librispeech" / "train-clean-100")]


def parse_form(text: str) -> WorkerConfig:
    try:
        kind, head, negatives, pool = text.split(":")
        return WorkerConfig.from_dict(
            {"name": kind, "kind": kind, "head": head, "negatives": negatives, "pool": int(pool)}
        )
    except ValueError as err:
        raise SystemExit(f"form {text!r}: expected worker:head:negatives:pool ({err})") from err


def encode(
    trainer: Trainer, batches: tp.Callable[[int], tp.Any], n: int, seed: int, distort: bool = True
) -> list[WorkerBatch]:
    """``n`` batches, anchors distorted as in training (unless not ``distort``), encoded by the
    frozen encoder (fp16)."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    encoder = trainer.model.encoder.eval()
    out = []
    with torch.no_grad():
        for i in range(n):
            b = batches(i)
            distorted = (
                trainer.distorter(b.chunk, other=b.rand.roll(1, 0), generator=gen) if distort else b.chunk
            )
            B = b.chunk.shape[0]
            a, c, r = encoder.encode(torch.cat([distorted, b.ctxt, b.rand])).split(B)
            out.append(WorkerBatch(b.chunk[:, :1], a.half(), c.half(), r.half()))
    return out


def as_float(b: WorkerBatch) -> WorkerBatch:
    return WorkerBatch(b.clean, b.chunk.float(), b.ctxt.float(), b.rand.float())


def train_head(
    form: WorkerConfig,
    dim: int,
    train: list[WorkerBatch],
    valid: list[WorkerBatch],
    steps: int,
    lr: float,
    eval_every: int,
    seed: int,
) -> dict[str, tp.Any]:
    torch.manual_seed(seed)
    worker = WORKERS[form.kind](form, dim)
    opt = torch.optim.Adam(worker.parameters(), lr=lr)
    curve = []

    def accuracy() -> float:
        worker.eval()
        with torch.no_grad():
            acc = sum(float(worker.metrics(as_float(b))["acc"]) for b in valid) / len(valid)
        worker.train()
        return acc

    start = time.perf_counter()
    for step in range(1, steps + 1):
        loss = worker.loss(as_float(train[(step - 1) % len(train)]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            curve.append({"step": step, "loss": float(loss.detach()), "valid_acc": accuracy()})
    return {"curve": curve, "final_acc": curve[-1]["valid_acc"], "seconds": time.perf_counter() - start}


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--encoder", default="pase+", help="pase+, a save_pretrained folder or a checkpoint")
    parser.add_argument("--data", nargs="+", default=None, help="training sources (default: the 7 h set)")
    parser.add_argument("--forms", default=",".join(DEFAULT_FORMS), help="worker:head:negatives:pool,...")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train-batches", type=int, default=64, help="encoded training batches")
    parser.add_argument("--valid-batches", type=int, default=16, help="encoded held-out batches")
    parser.add_argument("--steps", type=int, default=600, help="head updates (cycling the batches)")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--clean", action="store_true", help="anchors undistorted (how much do the distortions hide?)"
    )
    parser.add_argument(
        "--rand-any-file",
        action="store_true",
        help="negatives from any other file, as the original drew them (default: another speaker's)",
    )
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args(argv)
    forms = [parse_form(f) for f in args.forms.split(",") if f.strip()]
    base = TrainConfig.pase_plus()
    config = base.updated({
        "data": args.data or default_data(),
        "init": args.encoder,
        "batch_size": args.batch_size,
        "stats_batches": 1,
        "max_steps": 1,
        "num_threads": args.num_threads,
        "seed": args.seed,
        "rand_other_speaker": not args.rand_any_file,
    })  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="pase-disc-bench-") as tmp:
        trainer = Trainer(config, tmp, progress=False)
    if trainer.valid is None:
        raise SystemExit("no validation hold-out: give more speakers")
    valid_set = trainer.valid
    n_valid = min(args.valid_batches, valid_set.steps_per_epoch)
    start = time.perf_counter()
    distort = not args.clean
    train = encode(trainer, lambda i: trainer.batches.batch(0, i), args.train_batches, args.seed, distort)
    valid = encode(trainer, lambda i: valid_set.batch(0, i), n_valid, args.seed + 1, distort)
    encode_s = time.perf_counter() - start
    print(f"encoded {len(train)} + {len(valid)} batches of {args.batch_size} in {encode_s:.0f} s", flush=True)
    dim = train[0].chunk.shape[1]
    rows = []
    for form in forms:
        r = train_head(form, dim, train, valid, args.steps, base.workers_lr, args.eval_every, args.seed)
        name = f"{form.kind}:{form.head}:{form.negatives}:{form.pool}"
        print(
            f"{name:26s} held-out pair accuracy "
            + " ".join(f"{c['valid_acc']:.3f}@{c['step']}" for c in r["curve"])
            + f" ({r['seconds']:.0f} s)",
            flush=True,
        )
        rows.append({"form": name, **r})
    if args.out:
        report = {
            "encoder": args.encoder,
            "anchors": "clean" if args.clean else "distorted as in training",
            "negatives_from": "any other file" if args.rand_any_file else "another speaker's file",
            "batch_size": args.batch_size,
            "train_batches": len(train),
            "valid_batches": len(valid),
            "valid_pairs_per_form": len(valid) * args.batch_size,
            "steps": args.steps,
            "lr": base.workers_lr,
            "encode_seconds": encode_s,
            "rows": rows,
        }
        write_atomic(args.out, lambda t: Path(t).write_text(json.dumps(report, indent=2) + "\n"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
