"""Streaming speed: real-time factor and cost per push of the packaged PASE+ on one CPU thread.

    python bench/streaming.py --out bench/results/streaming.json

For each push size (10, 20 and 100 ms by default) a fresh ``encoder.stream()`` takes a generated
``--seconds`` signal piece by piece, as a sound card would hand it over; every ``push`` is timed
on its own, then the ``flush``. Each size is run ``--repeats`` times and the fastest run kept.
``real_time_factor`` is the wall time of all pushes and the flush divided by the audio's
duration (below 1: faster than real time); ``push_ms`` summarises the single pushes (mean,
median, 95th percentile, max), which is what a live caller waits for. An offline
``encoder(wav)`` row on the same signal gives the reference, and every row checks that the
streamed frames equal it. ``--quick`` runs a 1 s signal once, to check the script works.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import typing as tp
from pathlib import Path

import numpy as np
import torch

from pase.audio import SAMPLE_RATE, write_atomic
from pase.encoder import Encoder

DEFAULT_PUSH_MS = (10, 20, 100)


def signal(seconds: float, seed: int = 0) -> torch.Tensor:
    """A voiced-ish test signal: a harmonic tone with a gliding pitch, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    phase = 2 * np.pi * np.cumsum(120 + 30 * np.sin(2 * np.pi * 1.5 * t)) / SAMPLE_RATE
    wav = sum(np.sin(k * phase) / k for k in range(1, 12))
    wav = 0.3 * wav / np.max(np.abs(wav)) + 0.01 * rng.standard_normal(t.size)
    return torch.from_numpy(wav.astype(np.float32))


def stream_once(encoder: Encoder, wav: torch.Tensor, push: int) -> tuple[list[float], float, torch.Tensor]:
    """(seconds of each push, seconds of the flush, the frames) for one stream of ``wav``."""
    stream = encoder.stream()
    times, frames = [], []
    for start in range(0, wav.shape[0], push):
        piece = wav[start : start + push]
        t0 = time.perf_counter()
        frames.append(stream.push(piece))
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    frames.append(stream.flush())
    return times, time.perf_counter() - t0, torch.cat(frames)


def push_row(encoder: Encoder, wav: torch.Tensor, push_ms: int, repeats: int, offline: torch.Tensor) -> dict:
    push = push_ms * SAMPLE_RATE // 1000
    runs = [stream_once(encoder, wav, push) for _ in range(repeats)]
    times, flush_s, frames = min(runs, key=lambda r: sum(r[0]) + r[1])
    audio_s = wav.shape[0] / SAMPLE_RATE
    ms = sorted(1000 * t for t in times)
    return {
        "case": f"stream, {push_ms} ms pushes",
        "push_ms": push_ms,
        "pushes": len(times),
        "real_time_factor": (sum(times) + flush_s) / audio_s,
        "push_ms_mean": statistics.fmean(ms),
        "push_ms_median": statistics.median(ms),
        "push_ms_p95": ms[min(len(ms) - 1, int(0.95 * len(ms)))],
        "push_ms_max": ms[-1],
        "flush_ms": 1000 * flush_s,
        "max_abs_diff_vs_offline": (frames - offline).abs().max().item(),
    }


def offline_row(encoder: Encoder, wav: torch.Tensor, repeats: int) -> tuple[dict, torch.Tensor]:
    best, feats = float("inf"), torch.empty(0)
    for _ in range(repeats):
        t0 = time.perf_counter()
        feats = encoder(wav[None])[0]
        best = min(best, time.perf_counter() - t0)
    return {"case": "offline encoder(wav)", "real_time_factor": best / (wav.shape[0] / SAMPLE_RATE)}, feats


def table(rows: list[dict]) -> str:
    lines = [f"{'case':<26} {'RTF':>7} {'push mean':>10} {'p95':>8} {'max':>8}  (ms)"]
    for r in rows:
        cells = [
            f"{r[k]:8.3f}" if k in r else f"{'':>8}" for k in ("push_ms_mean", "push_ms_p95", "push_ms_max")
        ]
        lines.append(f"{r['case']:<26} {r['real_time_factor']:7.3f}  {' '.join(cells)}")
    return "\n".join(lines)


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="JSON results")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the streamed signal")
    parser.add_argument("--repeats", type=int, default=3, help="runs per push size (fastest kept)")
    parser.add_argument(
        "--push-ms", type=int, nargs="+", default=list(DEFAULT_PUSH_MS), help="push sizes in milliseconds"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="a 1 s signal, one run: checks the script works")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats = 1.0, 1
    if args.seconds <= 0 or args.repeats < 1 or min(args.push_ms) < 1:
        parser.error("--seconds, --repeats and --push-ms must be positive")
    torch.set_num_threads(args.threads)
    encoder = Encoder.from_pretrained("pase+").eval()
    wav = signal(args.seconds)
    load_before = os.getloadavg()
    with torch.inference_mode():
        offline, feats = offline_row(encoder, wav, args.repeats)
        rows = [offline] + [push_row(encoder, wav, ms, args.repeats, feats) for ms in args.push_ms]
    result = {
        "model": "pase+ (packaged)",
        "seconds": args.seconds,
        "repeats": args.repeats,
        "quick": args.quick,
        "latency_ms": encoder.stream().latency_ms,
        "rows": rows,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "loadavg_1min_before_after": [load_before[0], os.getloadavg()[0]],
    }
    text = json.dumps(result, indent=2) + "\n"
    write_atomic(args.out, lambda tmp: Path(tmp).write_text(text))
    print(table(rows))
    print(
        f"{torch.get_num_threads()} CPU thread(s), algorithmic latency {result['latency_ms']} ms; "
        f"written to {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
