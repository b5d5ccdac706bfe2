"""Training throughput of PASE+ (12 workers, every distortion) and where a step's time goes.

    python bench/train.py --out bench/train.json
    python bench/train.py --devices cuda --cuda-batch 64 --precision bf16

For each device, a real :class:`pase.train.Trainer` (the PASE+ recipe, LibriSpeech excerpts from
``$PASE_SPEECH_DIR`` or ``../shared/speech``) runs one warm-up step and then ``--steps`` timed
optimizer steps. ``x real time`` is seconds of anchor-chunk audio (batch x 2 s) per wall second,
the measure of the original's published ~100x on one GTX 2080 (30 min per 50 h epoch, with 16
CPU loader processes). The breakdown times each part of one step separately on one batch
(best of ``--repeats``): reading the batch, distortions, the encoder forward + backward on the
three chunks, each worker's forward + backward (its target included), each regression target
alone, and the Adam update. Parts are measured apart, so they need not add up exactly to a step.
The JSON also records threads and load average: numbers from a shared machine are only
comparable within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import time
import typing as tp
from pathlib import Path

import torch

from pase.audio import SAMPLE_RATE, write_atomic
from pase.train import TrainConfig, Trainer, load_config_file
from pase.workers import WorkerBatch

ORIGINAL_XRT = 100.0  # santi-pdp/pase on one GTX 2080, CPU-bound by targets and distortions
REPO = Path(__file__).resolve().parents[1]


def default_data() -> Path:
    speech = Path(os.environ.get("PASE_SPEECH_DIR", REPO.parent / "shared" / "speech"))
    return speech / "librispeech" / "train-clean-100"


def best_time(fn: tp.Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best wall time of ``fn()`` over ``repeats`` calls after one warm-up (synchronised)."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times[1:])


def breakdown(trainer: Trainer, repeats: int) -> dict[str, float]:
    """Seconds per part of one training step, each timed on its own."""
    model, device = trainer.model, trainer.info.device
    batch = trainer.batches.batch(0, 0).to(device)
    B = batch.chunk.shape[0]
    gen = torch.Generator(device=device)

    def autocast() -> tp.ContextManager[object]:
        if trainer.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=trainer.autocast_dtype)

    # rand_from_batch: the encoder sees 2B chunks and each item's negative is another's context
    chunks = (
        [batch.chunk, batch.ctxt] if trainer.config.rand_from_batch else [batch.chunk, batch.ctxt, batch.rand]
    )
    both = torch.cat(chunks)
    parts: dict[str, float] = {}
    parts["data: read batch"] = best_time(lambda: trainer.batches.batch(0, 1), device, repeats)
    parts["distortions"] = best_time(
        lambda: trainer.distorter(batch.chunk, other=batch.rand, generator=gen), device, repeats
    )

    def encoder_step() -> None:
        with autocast():
            emb = model.encoder.encode(both)
        emb.float().square().mean().backward()

    parts[f"encoder fwd+bwd ({len(chunks)} chunks)"] = best_time(encoder_step, device, repeats)
    with torch.no_grad(), autocast():
        emb = model.encoder.encode(both).float()
    for name, worker in model.workers.items():

        def worker_step(worker: tp.Any = worker) -> None:
            e = emb.clone().requires_grad_()
            chunk, ctxt, *rest = e.split(B)
            rand = rest[0] if rest else ctxt.roll(1, 0)
            with autocast():
                loss = worker.loss(WorkerBatch(batch.chunk, chunk, ctxt, rand))
            loss.backward()

        parts[f"worker {name} fwd+bwd"] = best_time(worker_step, device, repeats)
    for name, regressor in model.regressors().items():

        def target(regressor: tp.Any = regressor) -> None:
            regressor.compute_target(batch.chunk)

        parts[f"target {name}"] = best_time(target, device, repeats)
    parts["optimizer (Adam)"] = best_time(trainer.optimizer.step, device, repeats)
    model.zero_grad(set_to_none=True)
    return parts


def measure(
    device: str,
    batch_size: int,
    precision: str,
    steps: int,
    repeats: int,
    data: Path,
    base: TrainConfig | None = None,
) -> dict:
    """Throughput and breakdown of the PASE+ recipe (or ``base``) on ``device``."""
    with tempfile.TemporaryDirectory() as out:
        config = (base or TrainConfig.pase_plus()).updated(
            {
                "data": [str(data)],
                "batch_size": batch_size,
                "device": device,
                "precision": precision,
                "max_steps": steps + 1,
                "stats_batches": 2,
                "valid_fraction": 0.0,
            }
        )
        trainer = Trainer(config, out, progress=False)
        dev = trainer.info.device
        batches = iter(trainer.batches)
        trainer.train_step(next(batches))  # warm-up: allocations, kernels, caches
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(next(batches))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        step_s = (time.perf_counter() - start) / steps
        audio_s = batch_size * config.chunk_size / SAMPLE_RATE
        return {
            "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor(),
            "precision": "bf16" if trainer.autocast_dtype is not None else "fp32",
            "qrnn_impl": trainer.model.encoder.config.qrnn_impl,
            "workers": len(trainer.model.workers),
            "batch_size": batch_size,
            "audio_seconds_per_step": audio_s,
            "step_seconds": step_s,
            "x_real_time": audio_s / step_s,
            "audio_hours_per_second": audio_s / step_s / 3600,
            "breakdown_seconds": breakdown(trainer, repeats),
        }


def print_report(rows: list[dict]) -> None:
    for row in rows:
        print(
            f"\n{row.get('preset', 'pase+')} on {row['device']} ({row['device_name']}), {row['precision']}, "
            f"batch {row['batch_size']}"
            f" x 2 s: {row['step_seconds']:.3f} s/step = {row['x_real_time']:.2f}x real time"
            f" (original: ~{ORIGINAL_XRT:.0f}x on one GTX 2080)"
        )
        step = row["step_seconds"]
        print(f"  {'part':<34}{'ms':>10}{'% of step':>11}")
        for name, seconds in row["breakdown_seconds"].items():
            print(f"  {name:<34}{1000 * seconds:>10.1f}{100 * seconds / step:>10.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda if present")
    parser.add_argument("--cpu-batch", type=int, default=4)
    parser.add_argument("--cuda-batch", type=int, default=16)
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument(
        "--presets",
        default="pase+",
        help="training presets measured in this run, comma-separated (default: pase+)",
    )
    parser.add_argument("--config", type=Path, help="JSON/YAML of TrainConfig fields over each preset")
    args = parser.parse_args()
    bases = []
    for name in [p.strip() for p in args.presets.split(",") if p.strip()]:
        base = TrainConfig.from_preset(name)
        if args.config:
            base = base.updated(load_config_file(args.config))
        bases.append((name, base))
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        batch = args.cuda_batch if device.startswith("cuda") else args.cpu_batch
        for name, base in bases:
            row = measure(device, batch, args.precision, args.steps, args.repeats, args.data, base)
            rows.append({"preset": name, **row})
    print_report(rows)
    if args.out:
        report = {
            "rows": rows,
            "original_x_real_time": ORIGINAL_XRT,
            "torch_threads": torch.get_num_threads(),
            "load_average": os.getloadavg(),
            "torch": torch.__version__,
        }
        write_atomic(args.out, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))


if __name__ == "__main__":
    main()
