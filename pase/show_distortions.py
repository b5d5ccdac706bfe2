"""``pase show-distortions FILE --out DIR``: each PASE+ distortion alone on one file.

Writes ``clean.wav``, one ``<distortion>.wav`` per distortion (float samples: energy-matched
distortions may exceed full scale) and ``distortions.png``, their spectrograms side by side,
saved through :func:`pase.plots.save_figure`. Each panel is :func:`pase.distortions.apply_distortion`
with a seeded generator, and its title states the parameters drawn (SNR, clip level, the room's
RT60). The distortions themselves are in :mod:`pase.distortions` and :mod:`pase.distortion_ops`.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import typing as tp
from pathlib import Path

import numpy as np
import torch

from pase.audio import HOP, SAMPLE_RATE, AudioError, load_audio, write_atomic
from pase.distortion_ops import VAD_FRAME
from pase.distortions import (
    Distorter,
    DistortionConfig,
    apply_distortion,
    available_distortions,
    drawn_rir,
)


def _speech_dir() -> Path:
    return Path(os.environ.get("PASE_SPEECH_DIR", Path("..") / "shared" / "speech"))


def _write_wav(path: str, audio: np.ndarray) -> None:
    import soundfile as sf

    # Float samples: energy-matched distortions may exceed full scale.
    sf.write(path, audio, SAMPLE_RATE, subtype="FLOAT", format="WAV")


def _save_spectrograms(panels: tp.Sequence[tuple[str, np.ndarray]], path: Path) -> None:
    from pase.plots import pyplot, save_figure

    plt = pyplot()

    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False, sharey=True)
    window = torch.hann_window(512)
    for ax, (title, wav) in zip(axes.flat, panels, strict=False):
        spec = torch.stft(torch.from_numpy(wav), 512, HOP, window=window, return_complex=True)
        db = 10 * torch.log10(spec.abs().pow(2).clamp_min(1e-10)).numpy()
        seconds = wav.size / SAMPLE_RATE
        ax.imshow(
            db,
            origin="lower",
            aspect="auto",
            extent=(0, seconds, 0, SAMPLE_RATE / 2000),
            vmin=db.max() - 80,
            vmax=db.max(),
            cmap="magma",
        )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("time (s)")
    for ax in axes[:, 0]:
        ax.set_ylabel("frequency (kHz)")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def _panels(cfg: DistortionConfig, distorter: Distorter, seed: int) -> list[tuple[str, str, str]]:
    """``(name, spec, title)`` per distortion. SNRs and the clip level are drawn here (seeded)
    and passed in the spec, and the room is the one the seeded draw picks, so each title states
    what its panel shows; the other distortions' titles give their ranges."""
    rng = np.random.default_rng(seed)
    ranges = ", ".join(f"{lo / 1000:g}-{hi / 1000:g}" for lo, hi in cfg.bandrop_ranges_hz)
    panels = []
    for name in available_distortions():
        spec, title = name, name
        if name == "reverb":
            pick = drawn_rir(distorter, seed)
            assert distorter.rir_bank is not None
            source = distorter.rir_bank.names[pick]
            room = "simulated room" if source.startswith("sim:") else Path(source).name
            title = f"reverb: RT60 {float(distorter.rir_bank.rt60[pick]):.2f} s ({room})"
        elif name in ("noise", "overlap"):
            snr = float(rng.choice(cfg.noise_snrs if name == "noise" else cfg.overlap_snrs))
            spec, title = f"{name}:{snr:g}dB", f"{name}: SNR {snr:g} dB"
        elif name == "clip":
            level = float(rng.choice(cfg.clip_levels))
            spec, title = f"clip:{level:g}", f"clip at {100 * level:g} % of the peaks"
        elif name == "chop":
            title = f"chop: {cfg.chop_counts[0]}-{cfg.chop_counts[1]} speech regions silenced"
        elif name == "bandrop":
            title = f"band-drop: one band in {ranges} kHz"
        elif name == "downsample":
            title = f"downsample to 8 kHz (low-pass {cfg.downsample_cutoff_hz / 1000:g} kHz)"
        elif name == "codec2":
            title = f"codec2 at {cfg.codec2_bitrate} bit/s"
        panels.append((name, spec, title))
    return panels


def show_distortions(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    other: str | os.PathLike[str] | None = None,
    noise_dir: str | os.PathLike[str] | None = None,
    rir_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    n_rooms: int = 200,
    max_seconds: float = 10.0,
) -> list[Path]:
    """Write ``clean.wav``, one ``<distortion>.wav`` per distortion and ``distortions.png``
    (their spectrograms side by side) to ``out_dir``; returns the written paths.

    The first ``max_seconds`` of ``path`` are used. Overlap mixes in ``other`` (tiled or cut to
    length) or, by default, another excerpt of the same file (shifted by half its length).
    Without ``rir_dir``, ``n_rooms`` simulated rooms are used (cached); without ``noise_dir``,
    synthetic noise. Raises :class:`AudioError` for an unusable file.
    """
    wav = load_audio(path, min_samples=VAD_FRAME)[: int(max_seconds * SAMPLE_RATE)]
    if other is None:
        second = np.roll(wav, wav.size // 2)
    else:
        second = np.resize(load_audio(other, min_samples=1), wav.size)
    cfg = DistortionConfig(
        noise_dir=None if noise_dir is None else str(noise_dir),
        rir_dir=None if rir_dir is None else str(rir_dir),
        n_sim_rooms=0 if rir_dir is not None else n_rooms,
    )
    distorter = Distorter(cfg)
    clean = torch.from_numpy(wav)[None]
    panels = [("clean", "clean", wav)]
    for name, spec, title in _panels(cfg, distorter, seed):
        generator = torch.Generator().manual_seed(seed)
        out = apply_distortion(spec, clean, distorter, generator, other=torch.from_numpy(second)[None])
        panels.append((name, title, out[0].numpy()))
    out_dir = Path(out_dir)
    written = []
    for name, _, audio in panels:
        target = out_dir / f"{name}.wav"
        write_atomic(target, functools.partial(_write_wav, audio=audio))
        written.append(target)
    _save_spectrograms([(title, audio) for _, title, audio in panels], out_dir / "distortions.png")
    return [*written, out_dir / "distortions.png"]


def _show_cli(args: argparse.Namespace) -> int:
    speech = _speech_dir()
    noise_dir = args.noise_dir or (speech / "noise" if (speech / "noise").is_dir() else None)
    rir_dir = args.rir_dir or (speech / "rir" if (speech / "rir").is_dir() else None)
    try:
        written = show_distortions(
            args.file,
            args.out,
            other=args.other,
            noise_dir=noise_dir,
            rir_dir=rir_dir,
            seed=args.seed,
            n_rooms=args.rooms,
            max_seconds=args.max_seconds,
        )
    except (AudioError, ValueError, OSError) as exc:
        print(f"pase show-distortions: {exc}", file=sys.stderr)
        return 1
    for p in written:
        print(p)
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``pase show-distortions FILE --out DIR``."""
    p = subparsers.add_parser(
        "show-distortions",
        help="write each PASE+ distortion of a file as WAV plus one spectrogram PNG",
        description="Apply each online distortion alone to FILE and write clean.wav, one WAV "
        "per distortion and distortions.png (spectrograms side by side).",
    )
    p.add_argument("file", help="audio file (any rate, mixed to mono, resampled to 16 kHz)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--other", help="speech to overlap (default: another excerpt of FILE)")
    p.add_argument(
        "--noise-dir", help="noise folder (default ../shared/speech/noise if present, else synthetic)"
    )
    p.add_argument(
        "--rir-dir", help="RIR folder (default ../shared/speech/rir if present, else simulated rooms)"
    )
    p.add_argument("--rooms", type=int, default=200, help="simulated rooms without a RIR folder (cached)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    p.add_argument("--max-seconds", type=float, default=10.0, help="use at most this much of FILE")
    p.set_defaults(func=_show_cli)
