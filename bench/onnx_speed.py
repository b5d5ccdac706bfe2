"""PASE+ in PyTorch vs ONNX Runtime, beside MFCC, FBANK and wav2vec2 Base, in x real time (CPU).

    python bench/onnx_speed.py --out bench/results/onnx.json

Workloads: one 10 s file (``1 x 10 s``), a batch of eight 4 s files (``8 x 4 s``) and many short
files of 0.5-1 s, one call each (``short files``); each at 1 and 2 threads (torch's intra-op
threads, ONNX Runtime's ``intra_op_num_threads``). Extractors: PASE+ in PyTorch and in ONNX
Runtime (its export by :func:`pase.onnx.export_onnx`, made once at the start), MFCC and FBANK of
:mod:`pase.targets`, and wav2vec2 Base built from its config with random weights
(``transformers.Wav2Vec2Model(Wav2Vec2Config())``: the speed of a model does not depend on its
weights; the row is skipped with a message when ``transformers`` is not installed). All weights
are random, in float32, under ``torch.inference_mode``.

Within one workload and thread count every extractor gets one warm-up call, then ``--repeats``
rounds run them in turn (A, B, C, A, B, C, ...), so that a change in the load of a shared machine
hits every extractor alike; each row keeps the best round. ``x real time`` is seconds of audio over
that wall time. ``--out X.json`` writes the rows and the setup, and ``X.md`` the Markdown table
(also printed), with the speed-up of PASE+ in ONNX Runtime over PyTorch and wav2vec2 Base's time
over PASE+'s (how many times faster PASE+ is per second of audio). ``--quick`` runs tiny inputs
once, to check that the script works; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import typing as tp
from pathlib import Path

import numpy as np
import torch

from pase.audio import SAMPLE_RATE, write_atomic
from pase.encoder import Encoder

Fn = tp.Callable[[list[torch.Tensor]], object]
#: (label, waveforms of the workload: each [B, T], one call each).
Workload = tuple[str, list[torch.Tensor]]
PASE_TORCH = "pase+ (torch)"
PASE_ORT = "pase+ (onnxruntime)"
WAV2VEC2 = "wav2vec2 base (torch)"


def workloads(quick: bool, short_files: int, seed: int = 0) -> list[Workload]:
    """The three workloads of the module docstring (``quick``: the same shapes, tiny)."""
    gen = torch.Generator().manual_seed(seed)

    def noise(batch: int, seconds: float) -> torch.Tensor:
        return 0.1 * torch.randn(batch, int(seconds * SAMPLE_RATE), generator=gen)

    scale = 0.1 if quick else 1.0
    n_short = 3 if quick else short_files
    lengths = np.random.default_rng(seed).uniform(0.5, 1.0, n_short)
    return [
        (f"1 x {10 * scale:g} s", [noise(1, 10 * scale)]),
        (f"8 x {4 * scale:g} s", [noise(8, 4 * scale)]),
        (f"{n_short} short files (0.5-1 s)", [noise(1, s) for s in lengths]),
    ]


def each(fn: tp.Callable[[torch.Tensor], object]) -> Fn:
    """One call of ``fn`` per waveform of a workload."""

    def run(wavs: list[torch.Tensor]) -> object:
        return [fn(w) for w in wavs]

    return run


def extractors(encoder: Encoder, onnx_path: Path, threads: int) -> dict[str, Fn]:
    """Name -> function of a workload's waveforms, at ``threads`` threads."""
    from pase import targets
    from pase.onnx import OnnxEncoder

    torch.set_num_threads(threads)
    runtime = OnnxEncoder(onnx_path, num_threads=threads)
    fns: dict[str, Fn] = {
        PASE_TORCH: each(encoder),
        PASE_ORT: each(runtime),
        "mfcc (pase.targets)": each(targets.mfcc),
        "fbank (pase.targets)": each(targets.fbank),
    }
    try:
        from transformers import Wav2Vec2Config, Wav2Vec2Model
    except ImportError:
        print(f"skipping {WAV2VEC2}: transformers is not installed (pip install transformers)")
    else:
        model = Wav2Vec2Model(Wav2Vec2Config()).eval()
        fns[WAV2VEC2] = each(lambda w: model(w).last_hidden_state)
    return fns


def _timed(fn: Fn, wavs: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    fn(wavs)
    return time.perf_counter() - start


def run(
    encoder: Encoder, onnx_path: Path, cases: list[Workload], threads: tp.Sequence[int], repeats: int
) -> list[dict]:
    """Rows ``{threads, workload, extractor, audio_s, best_s, x_real_time}``, interleaved as in the
    module docstring."""
    rows = []
    for n in threads:
        fns = extractors(encoder, onnx_path, n)
        for label, wavs in cases:
            audio = sum(w.numel() for w in wavs) / SAMPLE_RATE
            best = dict.fromkeys(fns, float("inf"))
            with torch.inference_mode():
                for fn in fns.values():
                    _timed(fn, wavs)  # warm-up at these shapes
                for _ in range(repeats):
                    for name, fn in fns.items():
                        best[name] = min(best[name], _timed(fn, wavs))
            for name, t in best.items():
                rows.append(
                    {
                        "threads": n,
                        "workload": label,
                        "extractor": name,
                        "audio_s": round(audio, 3),
                        "best_s": round(t, 5),
                        "x_real_time": round(audio / t, 1),
                    }
                )
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: one line per (workload, threads), x real time per extractor, and the two ratios."""
    names = list(dict.fromkeys(r["extractor"] for r in rows))
    extra = ["onnxruntime speed-up"] + (["pase+ vs wav2vec2"] if WAV2VEC2 in names else [])
    lines = [
        "| workload | threads | " + " | ".join(names + extra) + " |",
        "|" + "---|" * (2 + len(names) + len(extra)),
    ]
    keys = list(dict.fromkeys((r["workload"], r["threads"]) for r in rows))
    for workload, threads in keys:
        got = {r["extractor"]: r for r in rows if (r["workload"], r["threads"]) == (workload, threads)}
        cells = [f"{got[n]['x_real_time']:g}x" for n in names]
        cells.append(f"{got[PASE_TORCH]['best_s'] / got[PASE_ORT]['best_s']:.2f}")
        if WAV2VEC2 in names:
            cells.append(f"{got[WAV2VEC2]['best_s'] / got[PASE_TORCH]['best_s']:.1f}x faster")
        lines.append(f"| {workload} | {threads} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default 1 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after the warm-up")
    parser.add_argument("--short-files", type=int, default=50, help="files in the short-files workload")
    parser.add_argument("--quick", action="store_true", help="tiny inputs, one round: checks the script only")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here and the table beside it (.md)")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats

    import onnxruntime

    from pase.loading import load_encoder
    from pase.onnx import export_onnx

    load_before = os.getloadavg()
    encoder = load_encoder("random:pase+")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        onnx_path = export_onnx(encoder, Path(tmp) / "pase_plus.onnx")
        export_s = time.perf_counter() - start
        rows = run(encoder, onnx_path, workloads(args.quick, args.short_files), args.threads, repeats)
    text = table(rows)
    print(text)
    setup = {
        "quick": args.quick,
        "repeats": repeats,
        "export_s": round(export_s, 1),
        "cores": os.cpu_count(),
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    if args.out:
        payload = json.dumps({"setup": setup, "rows": rows}, indent=2) + "\n"
        write_atomic(args.out, lambda tmp: Path(tmp).write_text(payload))
        markdown = args.out.with_suffix(".md")
        write_atomic(markdown, lambda tmp: Path(tmp).write_text(text + "\n"))
        print(f"written to {args.out} and {markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
