"""Extraction speed: PASE+ and PASE x-real-time, QRNN loop vs scan, and a torch MFCC baseline.

    python bench/extract.py --out bench/extract.json

Cases: PASE+ (QRNN scan and loop), PASE, PASE+'s QRNN layer alone (scan and loop) and the MFCC
baseline, on CPU (and CUDA when present), at each shape (batch 1 x 10 s and batch 8 x 4 s). Each
gets one warm-up call at that shape, then the best of ``--repeats`` timed calls, in fp32 under
``torch.inference_mode``. One more row times the whole ``pase extract`` pipeline (decode, batch,
encode, write) on 16 generated 4 s FLAC files. ``x real time`` is seconds of audio divided by
the best wall time. The JSON holds every row plus the thread count and load average, since
numbers from a shared machine are only comparable within one run.

``--long-hours H`` adds one more row: ``pase extract`` on ONE generated FLAC of ``H`` hours, run
once in a child process (its own wall time and peak RSS, from ``wait4``), checked for
``ceil(T / 160)`` frames and against the 4 GB peak-memory limit.

    python bench/extract.py --long-hours 1 --out bench/extract.json

``--throughput`` adds files/s rows for ``pase extract``'s own loop (``extract_files``: decode,
batch, encode, write; model loading excluded) on generated folders of short files (0.3-0.5 s,
like spoken digits) and of 10 s files, at 1 and 2 CPU threads, with the default batching and
(short files) one file per call, each on an idle machine and beside one busy process (a child
spinning on one core), as on a shared workstation.

    python bench/extract.py --throughput --throughput-only --out bench/results/extract_threads.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import typing as tp
from pathlib import Path

import torch

from pase.audio import SAMPLE_RATE, num_frames, write_atomic
from pase.encoder import Encoder, EncoderConfig
from pase.qrnn import QRNN

Shape = tuple[int, float]  # (batch size, seconds per item)
DEFAULT_SHAPES: tuple[Shape, ...] = ((1, 10.0), (8, 4.0))
#: Peak resident memory allowed when extracting one long file.
LONG_RSS_LIMIT_GB = 4.0


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
    impls: tuple[tp.Literal["loop", "scan"], ...] = ("scan", "loop")
    for impl in impls:
        fns[f"qrnn layer alone ({impl})"] = qrnn_alone(impl, plus, device)
    for impl in impls:
        fns[f"qrnn layer fwd+bwd ({impl})"] = qrnn_alone(impl, plus, device, backward=True)
    fns["mfcc (torch baseline)"] = mfcc
    return fns


def qrnn_alone(
    impl: tp.Literal["loop", "scan"], cfg: EncoderConfig, device: torch.device, backward: bool = False
) -> tp.Callable[[torch.Tensor], object]:
    """PASE+'s QRNN layer by itself on ``[B, F, 512]`` features for ``wav: [B, T]``.

    Inside the whole encoder the convolutions dominate and the loop/scan gap drowns in the noise
    of a shared machine; alone, the layer shows it. The input is made once per shape, in the
    warm-up call, so that its cost is not timed. With ``backward`` the layer runs forward and
    backward with gradients, as in training, where the chunked scan is the fast path on CPU too.
    """
    layer = QRNN(cfg.channels[-1], cfg.rnn_hidden, impl=impl).to(device).eval()
    inputs: dict[tuple[int, int], torch.Tensor] = {}

    def run(wav: torch.Tensor) -> object:
        key = (wav.shape[0], num_frames(wav.shape[1]))
        with torch.inference_mode(False), torch.set_grad_enabled(backward):
            if key not in inputs:
                inputs[key] = torch.randn(*key, cfg.channels[-1], device=wav.device, requires_grad=backward)
            h, _ = layer(inputs[key])
            if backward:
                h.sum().backward()
        return h

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


#: (label, shortest and longest file in seconds, number of files) for the throughput rows.
THROUGHPUT_CASES: tuple[tuple[str, float, float, int], ...] = (
    ("0.4 s", 0.3, 0.5, 200),
    ("10 s", 10.0, 10.0, 8),
)


def _busy_neighbour() -> subprocess.Popen[bytes]:
    """A child process that keeps one core busy until killed."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _write_folder(folder: Path, lo: float, hi: float, n: int, seed: int) -> None:
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        wav = 0.1 * rng.standard_normal(int(rng.uniform(lo, hi) * SAMPLE_RATE)).astype(np.float32)
        sf.write(folder / f"{i:04d}.flac", wav, SAMPLE_RATE)


def throughput_rows(
    threads: tp.Sequence[int] = (1, 2),
    cases: tp.Sequence[tuple[str, float, float, int]] = THROUGHPUT_CASES,
    busy: tp.Sequence[bool] = (False, True),
) -> list[dict]:
    """files/s of ``extract_files`` (PASE+, random init, CPU) for every case x threads x
    neighbour; short files also with ``batch_size=1`` to show what equal-length batching buys."""
    from pase.extract import extract_files

    encoder = Encoder.from_config("pase+").eval()
    before = torch.get_num_threads()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="pase-threads-") as tmp:
        out = Path(tmp) / "out"
        _write_folder(Path(tmp) / "warmup", 0.3, 0.5, 8, seed=99)
        configs = []
        for k, (name, lo, hi, n) in enumerate(cases):
            _write_folder(Path(tmp) / f"case{k}", lo, hi, n, seed=k)
            for batch in [None, 1] if hi <= 2.0 else [None]:
                configs += [(name, Path(tmp) / f"case{k}", batch, t) for t in threads]
        try:
            for with_busy in busy:
                neighbour = _busy_neighbour() if with_busy else None
                try:
                    for name, folder, batch, t in configs:
                        kw: dict[str, tp.Any] = {"overwrite": True, "num_threads": t}
                        extract_files([Path(tmp) / "warmup"], out, encoder, **kw)
                        s = extract_files([folder], out, encoder, batch_size=batch, **kw)
                        if not s.ok:
                            raise RuntimeError(f"throughput benchmark failed: {s}")
                        rows.append(
                            {
                                "device": "cpu",
                                "extractor": "pase extract loop (pase+), files/s",
                                "files": s.extracted,
                                "file_seconds": name,
                                "batch_size": "auto" if batch is None else batch,
                                "threads": t,
                                "busy_neighbour": with_busy,
                                "wall_s": round(s.wall_seconds, 3),
                                "files_per_s": round(s.extracted / s.wall_seconds, 2),
                                "x_real_time": round(s.real_time_factor, 1),
                            }
                        )
                finally:
                    if neighbour is not None:
                        neighbour.kill()
                        neighbour.wait()
        finally:
            torch.set_num_threads(before)
    return rows


def throughput_table(rows: list[dict]) -> str:
    head = "| files | batch | threads | busy neighbour | files/s | x real time |"
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['files']} x {r['file_seconds']} | {r['batch_size']} | {r['threads']} | "
            f"{'yes' if r['busy_neighbour'] else 'no'} | {r['files_per_s']:.2f} | {r['x_real_time']:.1f} |"
        )
    return "\n".join(lines)


def write_long_speech(path: Path, hours: float, block_seconds: float = 60.0, seed: int = 0) -> int:
    """Write ``hours`` of speech-like 16 kHz FLAC to ``path`` one block at a time (so that the
    whole signal is never in memory): 14 harmonics of an F0 gliding over 90-220 Hz, a syllabic
    (4 Hz) envelope with pauses, plus noise. Returns the number of samples written."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    total = round(hours * 3600 * SAMPLE_RATE)
    block = int(block_seconds * SAMPLE_RATE)
    phase = 0.0
    with sf.SoundFile(str(path), "w", SAMPLE_RATE, 1, subtype="PCM_16", format="FLAC") as f:
        for start in range(0, total, block):
            n = min(block, total - start)
            t = (start + np.arange(n)) / SAMPLE_RATE
            f0 = 155 + 65 * np.sin(2 * np.pi * 0.3 * t) * np.sin(2 * np.pi * 0.07 * t)
            phases = phase + 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
            phase = float(phases[-1] % (2 * np.pi))
            voiced = sum(np.sin(k * phases) / k for k in range(1, 15))
            envelope = np.clip(np.sin(2 * np.pi * 4 * t) + 0.3 * np.sin(2 * np.pi * 0.2 * t), 0, None)
            wav = 0.15 * envelope * voiced + 0.01 * rng.standard_normal(n)
            f.write(wav.astype(np.float32))
    return total


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[int, float, float, float]:
    """Run ``cmd``; ``(exit code, wall s, CPU s, peak RSS in bytes)`` of that child alone
    (``os.wait4`` gives its own rusage, unlike ``RUSAGE_CHILDREN``, which maxes over all)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return proc.returncode, wall, usage.ru_utime + usage.ru_stime, float(rss)


def long_file_row(hours: float, device: torch.device, threads: int | None) -> dict:
    """``pase extract --random-init`` on one generated file of ``hours`` in a child process
    (peak RSS is host memory, on CUDA too)."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="pase-long-") as tmp:
        src, out = Path(tmp) / "long.flac", Path(tmp) / "out"
        start = time.perf_counter()
        samples = write_long_speech(src, hours)
        print(
            f"wrote {hours:g} h ({src.stat().st_size / 1e6:.0f} MB FLAC) in "
            f"{time.perf_counter() - start:.0f} s; extracting ...",
            file=sys.stderr,
        )
        cmd = [sys.executable, "-m", "pase", "extract", str(src), "--out", str(out)]
        cmd += ["--random-init", "--no-progress", "--device", device.type]
        env = dict(os.environ)
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)  # the child's torch thread count
        code, wall, cpu, rss = run_measured(cmd, env)
        expected = math.ceil(samples / 160)
        feats_path = out / "long.npy"
        shape = list(np.load(feats_path, mmap_mode="r").shape) if feats_path.exists() else None
    frames_ok = code == 0 and shape is not None and shape[0] == expected
    rss_gb = rss / 1e9
    return {
        "device": device.type,
        "extractor": "pase extract, one long file (pase+, child process)",
        "batch": 1,
        "seconds": samples / SAMPLE_RATE,
        "hours": hours,
        "wall_s": round(wall, 2),
        "x_real_time": round(samples / SAMPLE_RATE / wall, 1),
        "cpu_s": round(cpu, 1),
        "exit_code": code,
        "frames": shape[0] if shape else None,
        "expected_frames": expected,
        "feature_shape": shape,
        "frames_ok": frames_ok,
        "peak_rss_gb": round(rss_gb, 3),
        "rss_limit_gb": LONG_RSS_LIMIT_GB,
        "passed": frames_ok and rss_gb <= LONG_RSS_LIMIT_GB,
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


def long_table(rows: list[dict]) -> str:
    head = "| device | hours | wall (s) | x real time | frames (expected) | peak RSS (GB) | limit | result |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        verdict = "pass" if r["passed"] else "FAIL (" + ("RSS" if r["frames_ok"] else "frames/exit") + ")"
        lines.append(
            f"| {r['device']} | {r['hours']:g} | {r['wall_s']:.1f} | {r['x_real_time']:.1f} | {r['frames']} "
            f"({r['expected_frames']}) | {r['peak_rss_gb']:.2f} | {r['rss_limit_gb']:g} GB | {verdict} |"
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
    parser.add_argument("--cuda-only", action="store_true", help="skip the CPU cases (GPU machines)")
    parser.add_argument(
        "--long-hours",
        type=float,
        default=0.0,
        help="also extract ONE generated file of this many hours with `pase extract` in a child "
        "process: wall time, peak RSS, frame count, 4 GB limit (default 0: off)",
    )
    parser.add_argument("--long-only", action="store_true", help="with --long-hours: skip the speed cases")
    parser.add_argument(
        "--throughput",
        action="store_true",
        help="also files/s of pase extract for 0.4 s and 10 s files at 1 and 2 threads, idle and "
        "beside a busy process",
    )
    parser.add_argument(
        "--throughput-only", action="store_true", help="with --throughput: skip the speed cases"
    )
    args = parser.parse_args(argv)
    if args.long_hours < 0 or (args.long_only and not args.long_hours):
        parser.error("--long-hours must be >= 0, and --long-only needs --long-hours")
    if args.throughput_only and not args.throughput:
        parser.error("--throughput-only needs --throughput")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = [] if args.cuda_only else [torch.device("cpu")]
    if torch.cuda.is_available() and not args.no_cuda:
        devices.append(torch.device("cuda"))
    if not devices:
        parser.error("--cuda-only without CUDA: nothing to measure")
    load_before = os.getloadavg()
    rows: list[dict] = []
    if not (args.long_only or args.throughput_only):
        rows = run(devices, DEFAULT_SHAPES, args.repeats)
        rows += [pipeline_row(device, args.repeats) for device in devices]
    long_rows = [long_file_row(args.long_hours, devices[-1], args.threads)] if args.long_hours else []
    thread_rows = throughput_rows() if args.throughput else []
    result = {
        "rows": rows + long_rows + thread_rows,
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
    if rows:
        print(table(rows))
    if long_rows:
        print(long_table(long_rows))
    if thread_rows:
        print(throughput_table(thread_rows))
    print(
        f"torch {result['torch']}, {result['cpu_threads']} CPU threads, 1-min load average "
        f"{load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}; written to {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
