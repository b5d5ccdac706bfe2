"""``pase demo``: extract PASE+ features of a handful of real recordings and draw them.

Uses the packaged pretrained weights when this installation has them; otherwise a random-init
PASE+ encoder, and says so (the picture then shows what an untrained encoder does). Without a
speech folder (``--data``, ``$PASE_SPEECH_DIR`` or ``../shared/speech``) it runs on the two
LibriSpeech utterances packaged in ``pase/demo_audio/`` (CC BY 4.0, see its ATTRIBUTION.md), so
it works on a machine that has nothing but this package.
"""

from __future__ import annotations

import os
import sys
import typing as tp
from pathlib import Path

DEFAULT_DATA = os.environ.get("PASE_SPEECH_DIR", "../shared/speech")
#: The default audio shipped in the package: two LibriSpeech test-clean utterances.
PACKAGED_AUDIO = Path(__file__).resolve().parent / "demo_audio"
#: A handful of files across the bundle: read speech, acted emotion (German), a spoken digit.
DEMO_GLOBS = (
    "librispeech/train-clean-100/*.flac",
    "librispeech/test-other/*/*.flac",
    "emodb/wav/*.flac",
    "ravdess/*.flac",
    "fsdd/*.flac",
)


def pick_files(data: Path, per_glob: int = 1, at_most: int = 5) -> list[Path]:
    """One file per corpus of the speech bundle; in any other folder, its first ``at_most``
    audio files (recursive, sorted)."""
    from pase.audio import find_audio_files

    files: list[Path] = []
    for pattern in DEMO_GLOBS:
        files += sorted(data.glob(pattern))[:per_glob]
    if not files and data.is_dir():
        files = find_audio_files(data)[:at_most]
    return files


def plot_features(files: list[Path], feature_files: list[Path], out_png: Path, title: str) -> None:
    """One column per file: log-mel spectrogram on top, features (dims x frames) below, each
    dimension z-scored over the file (its colour bar says so)."""
    from pase.plots import pyplot

    plt = pyplot()
    import numpy as np
    import torch

    from pase.audio import load_audio, write_atomic
    from pase.targets import fbank

    fig, axes = plt.subplots(2, len(files), figsize=(4 * len(files), 6), squeeze=False)
    for col, (src, feat_path) in enumerate(zip(files, feature_files, strict=True)):
        wav = load_audio(src)
        spec = fbank(torch.from_numpy(wav)[None])[0].numpy()
        feats = np.load(feat_path)
        ax = axes[0, col]
        image = ax.imshow(spec.T, origin="lower", aspect="auto", cmap="magma")
        fig.colorbar(image, ax=ax, label="log mel energy", fraction=0.05)
        ax.set_title(f"{src.parent.name}/{src.name}", fontsize=8)
        ax.set_ylabel("log mel band")
        ax = axes[1, col]
        # Per-dimension z-scores make dimensions of different scales visible together.
        z = (feats - feats.mean(0)) / (feats.std(0) + 1e-5)
        image = ax.imshow(z.T, origin="lower", aspect="auto", cmap="coolwarm", vmin=-3, vmax=3)
        ax.set_ylabel("feature dim")
        ax.set_xlabel("frame (10 ms)")
        ax.set_title("features, z-scored per dim", fontsize=8)
        fig.colorbar(image, ax=ax, label="z-score (per dimension, this file)", fraction=0.05)
    fig.suptitle(title)
    fig.tight_layout()
    write_atomic(out_png, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


def choose_data(data: Path | None) -> Path:
    """``data`` when given; else the default speech folder when it exists; else the packaged
    audio, saying so (the user may not know the default folder)."""
    if data is not None:
        return data
    default = Path(DEFAULT_DATA)
    if default.is_dir():
        return default
    print(
        f"pase demo: no speech folder given (--data) or found at {default}; using the 2 LibriSpeech "
        f"test-clean utterances packaged in {PACKAGED_AUDIO} (CC BY 4.0, Panayotov et al. 2015: "
        f"{PACKAGED_AUDIO / 'ATTRIBUTION.md'})"
    )
    return PACKAGED_AUDIO


def run(data: Path | None, out: Path, device: str = "cpu") -> int:
    from pase.extract import extract_files
    from pase.loading import load_encoder, packaged_models

    data = choose_data(data)
    files = pick_files(data)
    if not files:
        print(f"pase demo: no audio files under {data} (set --data or PASE_SPEECH_DIR)", file=sys.stderr)
        return 1
    if "pase+" in packaged_models():
        encoder = load_encoder("pase+", device=device)
        title = "PASE+ (packaged pretrained weights)"
    else:
        print(
            "pase demo: this installation has no pretrained PASE+ weights yet; "
            "using a RANDOM-INIT PASE+ encoder (seed 0) to show the pipeline."
        )
        encoder = load_encoder("random:pase+:0", device=device)
        title = "PASE+ (random init: no pretrained weights packaged)"
    feat_dir = out / "features"
    summary = extract_files(files, feat_dir, encoder, progress=True, overwrite=True, report=print)
    done = [(f, feat_dir / f"{f.stem}.npy") for f in files if (feat_dir / f"{f.stem}.npy").exists()]
    png = out / "features.png"
    if done:
        plot_features([f for f, _ in done], [o for _, o in done], png, title)
    rate = f"{summary.audio_seconds:.1f} s of audio, {summary.real_time_factor:.0f}x real time"
    print(f"extracted {summary.extracted} files ({rate}): {feat_dir}/")
    print(f"index of outputs: {feat_dir / 'index.jsonl'}")
    print(f"picture (spectrogram over features): {png}")
    return 0 if summary.ok else 1


def register_cli(sub: tp.Any) -> None:
    from pase.cli_args import device_arg

    p = sub.add_parser("demo", help="extract and draw PASE+ features of a few real recordings")
    p.add_argument(
        "--data",
        type=Path,
        help="the speech bundle (one file per corpus) or any folder of audio files (its first five); "
        f"default {DEFAULT_DATA} when it exists, else the 2 LibriSpeech utterances packaged with pase",
    )
    p.add_argument("--out", default="demo_out", help="output folder (default %(default)s)")
    p.add_argument("--device", default="cpu", type=device_arg, help="cpu, cuda or cuda:N (default cpu)")
    p.set_defaults(func=lambda a: run(a.data, Path(a.out), a.device))
