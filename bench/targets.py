"""Self-supervised targets on one training batch: ours (batched tensors) vs the CPU libraries.

    python bench/targets.py --batch-size 16 --seconds 2 --out bench/targets.json

Section ``targets``: every PASE+ target of :data:`pase.targets.TARGETS` (with derivatives) for
one ``[B, T]`` batch, computed by ours on the CPU (and on CUDA when present or asked for), against
the same features computed per utterance on the CPU the way the original data loader did:
librosa (STFT, mel, MFCC, RMS, ZCR, ``feature.delta``), the ``gammatone`` package (``gtgram``)
and Praat through parselmouth for F0. Each case gets one warm-up call, then the best of
``--repeats`` timed calls; ``ratio`` is reference time over ours. The batch is random 2 s
excerpts of real speech when ``--speech-dir`` exists, else synthetic speech-like signals.

Section ``distortions``: each PASE+ distortion of :mod:`pase.distortions` alone (probability 1,
``apply_distortion``) and the whole :class:`~pase.distortions.Distorter` with every probability 1
(Codec2 off), batched, against the same operation done per utterance with NumPy/SciPy the way
the original data loader did (``fftconvolve`` with the same RIR and direct-path shift, SNR mixing,
``np.clip``, an energy VAD and zeroed segments, ``firwin`` band-stop and low-pass FIRs applied
with ``fftconvolve``). Both sides use the same banks: the noise and RIR folders of
``--speech-dir`` when present (else synthetic noise) plus ``--rooms`` simulated rooms (cached).
Each side draws its own parameters from the same distributions, seeded, so every timed call
does the same work. The last row, ``all PASE+ targets + distortions``, adds the targets total
and the full distortion pipeline: the per-batch cost of what the original loader computed.

Sections are functions ``(args, batch) -> rows`` listed in :data:`SECTIONS`. Numbers come from
a shared machine: compare them within one run only; the JSON records threads and load average
for that reason.
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

from pase.audio import HOP, SAMPLE_RATE, find_audio_files, load_audio, write_atomic

if tp.TYPE_CHECKING:
    from pase.distortions import Distorter, DistortionConfig

Row = dict[str, tp.Any]
Batch = torch.Tensor  # [B, T] float32 on the CPU
#: The distortions timed one by one (Codec2 is optional and CPU-only in ours too).
DISTORTION_SPECS = ("reverb", "overlap", "noise", "clip", "chop", "bandrop", "downsample")
TARGETS_TOTAL = "all PASE+ targets"
PIPELINE = "full pipeline (all p=1)"
COMBINED = "all PASE+ targets + distortions"


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
    total: Row = {"section": "targets", "case": TARGETS_TOTAL, "dim": None}
    for key in rows[0]:
        if key.endswith("_s"):
            total[key] = sum(r[key] for r in rows)
    rows.append(total)
    return _with_ratios(rows, args.devices)


def _each(fn: tp.Callable[[np.ndarray], np.ndarray], items: list[np.ndarray]) -> list[np.ndarray]:
    return [fn(item) for item in items]


def _match_energy(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return y * np.sqrt(np.sum(ref**2) / max(float(np.sum(y**2)), 1e-20))


def _mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    gain = np.sqrt(np.sum(clean**2) / (max(float(np.sum(noise**2)), 1e-20) * 10 ** (snr_db / 10)))
    return _match_energy(clean + gain * noise, clean)


class ReferenceDistortions:
    """The PASE+ distortions of one utterance ``y: [T]`` with NumPy/SciPy, on the banks and
    settings of ``distorter``. Each method is ``(y, other, rng) -> [T]``: ``other`` is the clean
    utterance that overlaps ``y``, ``rng`` draws the parameters as the original loader did."""

    def __init__(self, distorter: Distorter) -> None:
        from scipy.signal import firwin, kaiser_beta

        cfg = self.cfg = distorter.config
        self.rirs = distorter.rirs.cpu().numpy()
        self.peaks = np.abs(self.rirs).argmax(-1)
        self.noise_audio = distorter.noise.cpu().numpy()
        self.noise_starts = distorter.noise_starts.cpu().numpy()
        self.noise_lengths = distorter.noise_lengths.cpu().numpy()
        self.beta = kaiser_beta(cfg.fir_stopband_db)
        self.lowpass_taps = firwin(
            cfg.downsample_taps,
            cfg.downsample_cutoff_hz - self._transition_hz(cfg.downsample_taps) / 2,
            window=("kaiser", self.beta),
            fs=SAMPLE_RATE,
            scale=False,
        ).astype(np.float32)

    def _transition_hz(self, n_taps: int) -> float:
        """Kaiser's transition width for ``n_taps`` at the stop-band attenuation (kaiserord
        solved for the width)."""
        return (self.cfg.fir_stopband_db - 8) / (2.285 * (n_taps - 1)) / (2 * np.pi) * SAMPLE_RATE

    def _reverberate(self, y: np.ndarray, k: int) -> np.ndarray:
        from scipy.signal import fftconvolve

        wet = fftconvolve(y, self.rirs[k])[self.peaks[k] : self.peaks[k] + y.size]
        return _match_energy(wet, y)

    def reverb(self, y: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self._reverberate(y, int(rng.integers(len(self.rirs))))

    def overlap(self, y: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        start = int(rng.uniform() * self.cfg.overlap_max_start * y.size)
        wet = self._reverberate(other, int(rng.integers(len(self.rirs))))
        delayed = np.zeros_like(y)
        delayed[start:] = wet[: y.size - start]
        return _mix_at_snr(y, delayed, float(rng.choice(self.cfg.overlap_snrs)))

    def noise(self, y: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        i = int(rng.integers(len(self.noise_lengths)))
        length = int(self.noise_lengths[i])
        clip = self.noise_audio[self.noise_starts[i] : self.noise_starts[i] + length]
        offset = int(rng.uniform() * length)
        segment = np.take(clip, np.arange(offset, offset + y.size), mode="wrap")
        return _mix_at_snr(y, segment, float(rng.choice(self.cfg.noise_snrs)))

    def clip(self, y: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        level = float(rng.choice(self.cfg.clip_levels))
        return np.clip(y, level * y.min(), level * y.max())

    def speech_regions(self, y: np.ndarray) -> list[tuple[int, int]]:
        """``(first, last)`` frames of the energy-VAD speech regions (as ours: 20 ms frames
        every 10 ms, threshold below the loudest frame, closing then opening)."""
        from scipy.ndimage import maximum_filter1d

        cfg = self.cfg
        frames = np.lib.stride_tricks.sliding_window_view(y, 2 * HOP)[::HOP]
        db = 10 * np.log10(np.maximum((frames**2).mean(-1), 1e-10))
        mask = ((db > db.max() - cfg.vad_threshold_db) & (db > -100.0)).astype(np.float32)
        ms_per_frame = 1000 * HOP / SAMPLE_RATE

        def dilate(m: np.ndarray, radius: int) -> np.ndarray:
            return maximum_filter1d(m, 2 * radius + 1, mode="constant", cval=0.0)

        close = round(cfg.vad_min_silence_ms / ms_per_frame / 2)
        open_ = round(cfg.vad_min_speech_ms / ms_per_frame / 2)
        mask = 1 - dilate(1 - dilate(mask, close), close)
        speech = dilate(1 - dilate(1 - mask, open_), open_) > 0.5
        edges = np.diff(np.concatenate([[0], speech.astype(np.int8), [0]]))
        return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True))

    def chop(self, y: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cfg = self.cfg
        regions = self.speech_regions(y)
        count = min(int(rng.integers(cfg.chop_counts[0], cfg.chop_counts[1] + 1)), len(regions))
        out = y.copy()
        for r in rng.choice(len(regions), size=count, replace=False):
            mean, dev = cfg.chop_durations_ms[int(rng.integers(len(cfg.chop_durations_ms)))]
            length = round((mean + dev * (2 * rng.uniform() - 1)) * SAMPLE_RATE / 1000)
            first, last = regions[r]
            lo = ((first + last) * HOP + 2 * HOP) // 2 - length // 2
            out[max(lo, 0) : max(lo + length, 0)] = 0.0
        return out

    def band_stop_taps(self, low_hz: float, high_hz: float) -> np.ndarray:
        """``firwin`` band-stop (high- or low-pass at the spectrum's ends) whose transitions lie
        outside ``[low_hz, high_hz]``."""
        from scipy.signal import firwin

        n_taps, nyquist = self.cfg.bandrop_taps, SAMPLE_RATE / 2
        width = self._transition_hz(n_taps)
        lo, hi = max(low_hz - width / 2, 0.0), min(high_hz + width / 2, nyquist)
        design = dict(window=("kaiser", self.beta), fs=SAMPLE_RATE, scale=False)
        if lo <= 0:
            taps = firwin(n_taps, hi, pass_zero=False, **design)
        elif hi >= nyquist:
            taps = firwin(n_taps, lo, **design)
        else:
            taps = firwin(n_taps, [lo, hi], pass_zero="bandstop", **design)
        return taps.astype(np.float32)  # float32 like the audio, as ours

    def bandrop(self, y: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from scipy.signal import fftconvolve

        cfg = self.cfg
        which = int(rng.integers(len(cfg.bandrop_ranges_hz)))
        lo, hi = cfg.bandrop_ranges_hz[which]
        width = min(cfg.bandrop_mean_widths_hz[which] * (0.5 + rng.uniform()), hi - lo)
        low = lo + rng.uniform() * (hi - lo - width)
        taps = self.band_stop_taps(low, low + width)
        return _match_energy(fftconvolve(y, taps, mode="same"), y)

    def downsample(self, y: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from scipy.signal import fftconvolve

        return fftconvolve(y, self.lowpass_taps, mode="same")

    def pipeline(self, y: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Every distortion in the PASE+ order (the overlapping speech is the clean ``other``)."""
        for name in DISTORTION_SPECS:
            y = getattr(self, name)(y, other, rng)
        return y


def distortion_config(args: argparse.Namespace) -> DistortionConfig:
    """Every probability 1 (Codec2 off); the speech bundle's noise and RIR folders when present."""
    from pase.distortions import DISTORTIONS, DistortionConfig

    noise_dir, rir_dir = args.speech_dir / "noise", args.speech_dir / "rir"
    always: dict[str, tp.Any] = {f"{name}_p": 1.0 for name in DISTORTIONS if name != "codec2"}
    return DistortionConfig(
        **always,
        noise_dir=str(noise_dir) if noise_dir.is_dir() else None,
        rir_dir=str(rir_dir) if rir_dir.is_dir() else None,
        n_sim_rooms=args.rooms,
        rir_cache_dir=None if args.rir_cache_dir is None else str(args.rir_cache_dir),
    )


def bench_distortions(args: argparse.Namespace, batch: Batch) -> list[Row]:
    """One row per distortion alone and one for the full pipeline: ours per device, the
    per-utterance NumPy/SciPy reference, ratio."""
    from pase.distortions import Distorter, apply_distortion

    distorter = Distorter(distortion_config(args))
    reference = ReferenceDistortions(distorter)
    utterances = [item.numpy() for item in batch]
    others = utterances[-1:] + utterances[:-1]  # row i overlaps row i - 1, as ours by default
    # ours: (batch, distorter, generator) -> batch; the reference: (y, other, rng) -> y
    cases: list[tuple[str, tp.Callable[..., Batch], tp.Callable[..., np.ndarray]]] = [
        (spec, functools.partial(apply_distortion, spec), getattr(reference, spec))
        for spec in DISTORTION_SPECS
    ]
    cases.append((PIPELINE, _distort_all, reference.pipeline))
    rows: list[Row] = []
    for name, ours, ref_fn in cases:
        row: Row = {"section": "distortions", "case": name, "dim": None, "banks": repr(distorter)}
        for device in args.devices:
            on_device, moved = batch.to(device), distorter.to(device)

            def call(fn: tp.Callable = ours, x: Batch = on_device, d: Distorter = moved) -> Batch:
                return fn(x, d, torch.Generator().manual_seed(args.seed))

            row[f"ours_{device.type}_s"] = best_time(call, args.repeats, device)

        def per_utterance(fn: tp.Callable = ref_fn) -> list[np.ndarray]:
            rng = np.random.default_rng(args.seed)
            return [fn(y, other, rng) for y, other in zip(utterances, others, strict=True)]

        row["reference_cpu_s"] = best_time(per_utterance, args.repeats)
        rows.append(row)
    distorter.to("cpu")
    return _with_ratios(rows, args.devices)


def _distort_all(wav: Batch, distorter: Distorter, generator: torch.Generator) -> Batch:
    return distorter(wav, generator=generator)


def _with_ratios(rows: list[Row], devices: list[torch.device]) -> list[Row]:
    for row in rows:
        for device in devices:
            row[f"ratio_{device.type}"] = row["reference_cpu_s"] / row[f"ours_{device.type}_s"]
    return rows


def combined_total(rows: list[Row], devices: list[torch.device]) -> list[Row]:
    """The targets total plus the full distortion pipeline, when both sections ran."""
    parts = [r for r in rows if r["case"] in (TARGETS_TOTAL, PIPELINE)]
    if len(parts) != 2:
        return []
    total: Row = {"section": "total", "case": COMBINED, "dim": None}
    for key in parts[0]:
        if key.endswith("_s"):
            total[key] = sum(r[key] for r in parts)
    return _with_ratios([total], devices)


#: (name, function) of every benchmark section, run in this order.
SECTIONS: list[tuple[str, tp.Callable[[argparse.Namespace, Batch], list[Row]]]] = [
    ("targets", bench_targets),
    ("distortions", bench_distortions),
]


def print_table(rows: list[Row], devices: list[torch.device]) -> None:
    cols = [f"ours_{d.type}_s" for d in devices] + ["reference_cpu_s"]
    ratios = [f"ratio_{d.type}" for d in devices]
    header = f"{'section':<12}{'case':<32}" + "".join(f"{c:>18}" for c in cols + ratios)
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = "".join(f"{1000 * row[c]:>15.1f} ms" for c in cols)
        cells += "".join(f"{row[r]:>17.1f}x" for r in ratios)
        print(f"{row['section']:<12}{row['case']:<32}{cells}")


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
    parser.add_argument(
        "--rooms", type=int, default=8, help="simulated rooms added to the RIR folder (distortions)"
    )
    parser.add_argument(
        "--rir-cache-dir", type=Path, help="cache of the simulated rooms (default: pase's RIR cache)"
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
    rows += combined_total(rows, args.devices)
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
