"""Extraction speed: PASE+ and PASE x-real-time, QRNN loop vs scan, and a torch MFCC baseline.

    python bench/extract.py --out bench/extract.json

Cases: PASE+ (QRNN scan and loop), PASE, PASE+'s QRNN layer alone (scan and loop) and the MFCC
baseline, on CPU (and CUDA when present), at each shape (batch 1 x 10 s and batch 8 x 4 s). Each
gets one warm-up call at that shape, then the best of ``--repeats`` timed calls, in fp32 under
``torch.inference_mode``. One more row times the whole ``pase extract`` pipeline (decode, batch,
encode, write) on 16 generated 4 s FLAC files. ``x real time`` is seconds of audio divided by
the best wall time. The JSON holds every row plus the thread count and load average, since
numbers from a shared machine are only comparable within one run.
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

import torch

from pase.audio import SAMPLE_RATE, num_frames, write_atomic
from pase.encoder import Encoder, EncoderConfig
from pase.qrnn import QRNN

Shape = tuple[int, float]  # (batch size, seconds per item)
DEFAULT_SHAPES: tuple[Shape, ...] = ((1, 10.0), (8, 4.0))


def timed(fn: tp.Callable[[torch.Tensor], object], wav: torch.Tensor) -> float:
    """Wall time of one call ``fn(wav)`` (synchronised on CUDA)."""
    start = time.perf_counter()
    fn(wav)
    if wav.device.type == "cuda":
        torch.cuda.synchronize(wav.device)
    return time.perf_counter() - start


def candidates(device: torch.device) -> dict[str, tp.Callable[[torch.Tensor], object]]:
    """Name -> function of ``wav: [B, T]`` for every measured extractor on ``device``."""
    from pase.targets import mfcc

    plus = EncoderConfig.pase_plus()
    models = {
        "pase+ (qrnn scan)": dataclasses.replace(plus, qrnn_impl="scan"),
        "pase+ (qrnn loop)": dataclasses.replace(plus, qrnn_impl="loop"),
        "pase": EncoderConfig.pase(),
    }
    fns: dict[str, tp.Callable[[torch.Tensor], object]] = {}
    for name, cfg in models.items():
        fns[name] = Encoder.from_config(cfg).to(device).eval()
    for impl in ("scan", "loop"):
        fns[f"qrnn layer alone ({impl})"] = qrnn_alone(impl, plus, device)
    fns["mfcc (torch baseline)"] = mfcc
    return fns


def qrnn_alone(
    impl: tp.Literal["loop", "scan"], cfg: EncoderConfig, device: torch.device
) -> tp.Callable[[torch.Tensor], object]:
    """PASE+'s QRNN layer by itself on ``[B, F, 512]`` features for ``wav: [B, T]``.

    Inside the whole encoder the convolutions dominate and the loop/scan gap drowns in the noise
    of a shared machine; alone, the layer shows it. The input is made once per shape, in the
    warm-up call, so that its cost is not timed.
    """
    layer = QRNN(cfg.channels[-1], cfg.rnn_hidden, impl=impl).to(device).eval()
    inputs: dict[tuple[int, int], torch.Tensor] = {}

    def run(wav: torch.Tensor) -> object:
        key = (wav.shape[0], num_frames(wav.shape[1]))
        if key not in inputs:
            inputs[key] = torch.randn(*key, cfg.channels[-1], device=wav.device)
        return layer(inputs[key])

    return run


def run(devices: list[torch.device], shapes: tp.Sequence[Shape], repeats: int) -> list[dict]:
    """Time every candidate at every shape; rows in candidate order.

    The repeats are interleaved (candidate A, B, C, A, B, C, ...) so that a change in the load
    of a shared machine hits every candidate alike instead of whichever happens to run then.
    """
    rows: list[dict] = []
    for device in devices:
        fns = candidates(device)
        device_rows = []
        for batch, seconds in shapes:
            gen = torch.Generator().manual_seed(0)
            wav = (0.1 * torch.randn(batch, int(seconds * SAMPLE_RATE), generator=gen)).to(device)
            best = dict.fromkeys(fns, float("inf"))
            with torch.inference_mode():
                for fn in fns.values():
                    timed(fn, wav)  # warm-up at this shape
                for _ in range(repeats):
                    for name, fn in fns.items():
                        best[name] = min(best[name], timed(fn, wav))
            for name, t in best.items():
                device_rows.append(
                    {
                        "device": device.type,
                        "extractor": name,
                        "batch": batch,
                        "seconds": seconds,
                        "best_s": round(t, 5),
                        "x_real_time": round(batch * seconds / t, 1),
                    }
                )
        names = list(fns)
        rows += sorted(device_rows, key=lambda r: names.index(r["extractor"]))  # stable: shapes
    return rows


def pipeline_row(device: torch.device, repeats: int, files: int = 16, seconds: float = 4.0) -> dict:
    """End-to-end ``extract_files`` (FLAC decode, batching by 8, PASE+ forward, atomic .npy
    writes, index) on ``files`` generated FLAC files, best of ``repeats`` after a warm-up."""
    import tempfile

    import numpy as np
    import soundfile as sf

    from pase.extract import extract_files

    encoder = Encoder.from_config("pase+").to(device).eval()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for i in range(files):
            wav = 0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE)).astype(np.float32)
            sf.write(src / f"{i:03d}.flac", wav, SAMPLE_RATE)
        times = []
        for _ in range(repeats + 1):  # the first is the warm-up
            summary = extract_files([src], Path(tmp) / "out", encoder, overwrite=True)
            if not summary.ok or summary.extracted != files:
                raise RuntimeError(f"pipeline benchmark failed: {summary}")
            times.append(summary.wall_seconds)
    best = min(times[1:])
    return {
        "device": device.type,
        "extractor": "pase extract pipeline (pase+)",
        "batch": files,
        "seconds": seconds,
        "best_s": round(best, 5),
        "x_real_time": round(files * seconds / best, 1),
    }


def table(rows: list[dict]) -> str:
    head = "| device | extractor | batch x seconds | best of repeats (s) | x real time |"
    lines = [head, "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['device']} | {r['extractor']} | {r['batch']} x {r['seconds']:g} | "
            f"{r['best_s']:.4f} | {r['x_real_time']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("bench/extract.json"), help="JSON results")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per case (best kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-cuda", action="store_true", help="CPU only even when CUDA is present")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.no_cuda:
        devices.append(torch.device("cuda"))
    load_before = os.getloadavg()
    rows = run(devices, DEFAULT_SHAPES, args.repeats)
    rows += [pipeline_row(device, args.repeats) for device in devices]
    result = {
        "rows": rows,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name() if len(devices) > 1 else None,
        "loadavg_1min_before_after": [load_before[0], os.getloadavg()[0]],
        "repeats": args.repeats,
    }
    text = json.dumps(result, indent=2) + "\n"

    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    write_atomic(args.out, write)
    print(table(rows))
    print(
        f"torch {result['torch']}, {result['cpu_threads']} CPU threads, 1-min load average "
        f"{load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}; written to {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
