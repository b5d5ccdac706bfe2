"""Self-supervised targets on one training batch: ours (batched tensors) vs the CPU libraries.

    python bench/targets.py --batch-size 16 --seconds 2 --out bench/targets.json

Section ``targets``: every PASE+ target of :data:`pase.targets.TARGETS` (with derivatives) for
one ``[B, T]`` batch, computed by ours on the CPU (and on CUDA when present or asked for), against
the same features computed per utterance on the CPU the way the original data loader did:
librosa (STFT, mel, MFCC, RMS, ZCR, ``feature.delta``), the ``gammatone`` package (``gtgram``)
and Praat through parselmouth for F0. Each case gets one warm-up call, then the best of
``--repeats`` timed calls; ``ratio`` is reference time over ours. The batch is random 2 s
excerpts of real speech when ``--speech-dir`` exists, else synthetic speech-like signals.

Sections are functions ``(args, batch) -> rows`` listed in :data:`SECTIONS`, so another one
(distortions) adds one function and one entry. Numbers come from a shared machine: compare them
within one run only; the JSON records threads and load average for that reason.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
import typing as tp
from pathlib import Path

import numpy as np
import torch

from pase.audio import SAMPLE_RATE, find_audio_files, load_audio, write_atomic

Row = dict[str, tp.Any]
Batch = torch.Tensor  # [B, T] float32 on the CPU


def best_time(fn: tp.Callable[[], object], repeats: int, device: torch.device | None = None) -> float:
    """Best wall time in seconds of ``repeats`` calls after one warm-up (CUDA synchronised)."""

    def once() -> float:
        start = time.perf_counter()
        fn()
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    once()
    return min(once() for _ in range(repeats))


def make_batch(batch_size: int, seconds: float, speech_dir: Path, seed: int) -> tuple[Batch, str]:
    """``[B, T]`` random excerpts of real speech (or synthetic speech-like signals) and a label."""
    rng = np.random.default_rng(seed)
    num_samples = int(seconds * SAMPLE_RATE)
    files = find_audio_files(speech_dir / "librispeech") if speech_dir.is_dir() else []
    if not files:
        t = np.arange(num_samples) / SAMPLE_RATE
        items = []
        for _ in range(batch_size):
            f0 = rng.uniform(90, 220) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
            phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
            wav = sum(np.sin(k * phase) / k for k in range(1, 15))
            items.append(0.3 * wav / np.abs(wav).max() + 0.01 * rng.standard_normal(num_samples))
        return torch.tensor(np.stack(items), dtype=torch.float32), "synthetic"
    items = []
    for idx in rng.choice(len(files), size=batch_size, replace=len(files) < batch_size):
        wav = load_audio(files[idx])
        wav = np.pad(wav, (0, max(num_samples - len(wav), 0)))
        start = rng.integers(0, len(wav) - num_samples + 1)
        items.append(wav[start : start + num_samples])
    return torch.from_numpy(np.stack(items)), f"librispeech excerpts from {speech_dir}"


def reference_targets() -> dict[str, tp.Callable[[np.ndarray], np.ndarray]]:
    """Name -> ``wav: [T] -> [F, D]`` per-utterance CPU reference of each PASE+ target."""
    import librosa
    import parselmouth
    from gammatone.gtgram import gtgram
    from scipy.signal import lfilter

    def stacked(feats: np.ndarray) -> np.ndarray:  # [D, F] -> [F, 3D]
        d1 = librosa.feature.delta(feats, width=9, order=1)
        d2 = librosa.feature.delta(feats, width=9, order=2)
        return np.concatenate([feats, d1, d2]).T

    def lps(win: int) -> tp.Callable[[np.ndarray], np.ndarray]:
        def fn(y: np.ndarray) -> np.ndarray:
            spec = librosa.stft(y, n_fft=2048, win_length=win, hop_length=160, window="boxcar")
            return stacked(librosa.power_to_db(np.abs(spec) ** 2, top_db=None))

        return fn

    def fbank(win: int, n_fft: int) -> tp.Callable[[np.ndarray], np.ndarray]:
        def fn(y: np.ndarray) -> np.ndarray:
            emphasised = lfilter([1.0, -0.97], [1.0], y)
            mel = librosa.feature.melspectrogram(
                y=emphasised, sr=SAMPLE_RATE, n_fft=n_fft, hop_length=160, win_length=win,
                window="boxcar", n_mels=40, htk=True,
            )  # fmt: skip
            return stacked(np.log(mel + 1e-10))

        return fn

    def mfcc(n_mfcc: int, n_fft: int) -> tp.Callable[[np.ndarray], np.ndarray]:
        def fn(y: np.ndarray) -> np.ndarray:
            return stacked(
                librosa.feature.mfcc(
                    y=y, sr=SAMPLE_RATE, n_mfcc=n_mfcc, n_fft=n_fft, hop_length=160, n_mels=40
                )
            )

        return fn

    def gammatone(win: int) -> tp.Callable[[np.ndarray], np.ndarray]:
        def fn(y: np.ndarray) -> np.ndarray:
            padded = np.pad(y.astype(np.float64), (win // 2, win // 2))
            gram = gtgram(padded, SAMPLE_RATE, win / SAMPLE_RATE, 160 / SAMPLE_RATE, 40, 500.0)
            return stacked(np.log(gram + 1e-5))

        return fn

    def prosody(y: np.ndarray) -> np.ndarray:
        pitch = parselmouth.Sound(y.astype(np.float64), SAMPLE_RATE).to_pitch(
            time_step=0.01, pitch_floor=60.0, pitch_ceiling=300.0
        )
        frames = 1 + len(y) // 160
        f0 = np.zeros(frames)
        idx = np.clip(np.round(pitch.xs() * 100).astype(int), 0, frames - 1)
        f0[idx] = pitch.selected_array["frequency"]
        voiced = f0 > 0
        log_f0 = np.log(np.where(voiced, f0, 60.0))
        if voiced.any():
            log_f0 = np.interp(np.arange(frames), np.flatnonzero(voiced), log_f0[voiced])
        rms = librosa.feature.rms(y=y, frame_length=320, hop_length=160)[0]
        zcr = librosa.feature.zero_crossing_rate(y, frame_length=320, hop_length=160)[0]
        return stacked(np.stack([log_f0, voiced.astype(np.float64), rms, zcr]))

    return {
        "lps": lps(400),
        "lps_long": lps(512),
        "fbank": fbank(400, 512),
        "fbank_long": fbank(1024, 1024),
        "gammatone": gammatone(400),
        "gammatone_long": gammatone(2048),
        "mfcc": mfcc(13, 400),
        "mfcc_long": mfcc(20, 2048),
        "prosody": prosody,
    }


def bench_targets(args: argparse.Namespace, batch: Batch) -> list[Row]:
    """One row per PASE+ target plus a total row: ours per device, reference, ratio."""
    from pase.targets import TARGETS

    references = reference_targets()
    utterances = [item.numpy() for item in batch]
    rows: list[Row] = []
    for name, ref_fn in references.items():
        target = TARGETS[name]
        row: Row = {"section": "targets", "case": name, "dim": target.dim}
        for device in args.devices:
            on_device = batch.to(device)
            call = functools.partial(target.fn, on_device)
            row[f"ours_{device.type}_s"] = best_time(call, args.repeats, device)
        per_utterance = functools.partial(_each, ref_fn, utterances)
        row["reference_cpu_s"] = best_time(per_utterance, args.repeats)
        rows.append(row)
    total: Row = {"section": "targets", "case": "all PASE+ targets", "dim": None}
    for key in rows[0]:
        if key.endswith("_s"):
            total[key] = sum(r[key] for r in rows)
    rows.append(total)
    for row in rows:
        for device in args.devices:
            row[f"ratio_{device.type}"] = row["reference_cpu_s"] / row[f"ours_{device.type}_s"]
    return rows


def _each(fn: tp.Callable[[np.ndarray], np.ndarray], items: list[np.ndarray]) -> list[np.ndarray]:
    return [fn(item) for item in items]


#: (name, function) of every benchmark section, run in this order.
SECTIONS: list[tuple[str, tp.Callable[[argparse.Namespace, Batch], list[Row]]]] = [
    ("targets", bench_targets),
]


def print_table(rows: list[Row], devices: list[torch.device]) -> None:
    cols = [f"ours_{d.type}_s" for d in devices] + ["reference_cpu_s"]
    ratios = [f"ratio_{d.type}" for d in devices]
    header = f"{'section':<12}{'case':<20}" + "".join(f"{c:>18}" for c in cols + ratios)
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = "".join(f"{1000 * row[c]:>15.1f} ms" for c in cols)
        cells += "".join(f"{row[r]:>17.1f}x" for r in ratios)
        print(f"{row['section']:<12}{row['case']:<20}{cells}")


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        action="append",
        help="where ours runs (repeatable); default: cpu, plus cuda when available",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up")
    parser.add_argument(
        "--speech-dir",
        type=Path,
        default=Path(os.environ.get("PASE_SPEECH_DIR", "../shared/speech")),
        help="real speech for the batch (synthetic signals when absent)",
    )
    parser.add_argument(
        "--sections", nargs="+", default=[name for name, _ in SECTIONS], help="sections to run"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the rows and the setup as JSON")
    args = parser.parse_args(argv)

    names = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if "cuda" in names and not torch.cuda.is_available():
        parser.error("--device cuda was asked for but torch sees no CUDA device")
    args.devices = [torch.device(n) for n in dict.fromkeys(names)]
    unknown = set(args.sections) - {name for name, _ in SECTIONS}
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; known: {[n for n, _ in SECTIONS]}")

    batch, source = make_batch(args.batch_size, args.seconds, args.speech_dir, args.seed)
    rows = [row for name, fn in SECTIONS if name in args.sections for row in fn(args, batch)]
    setup = {
        "batch": list(batch.shape),
        "seconds_per_item": args.seconds,
        "audio": source,
        "devices": [str(d) for d in args.devices],
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "repeats": args.repeats,
    }
    print(f"batch {tuple(batch.shape)} ({source}); torch threads {setup['torch_threads']}")
    print_table(rows, args.devices)
    if args.out:
        text = json.dumps({"setup": setup, "rows": rows}, indent=2)
        write_atomic(args.out, lambda tmp: Path(tmp).write_text(text + "\n"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
