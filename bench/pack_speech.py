"""Pack pretraining speech into a compact folder that travels to a GPU machine with the code.

A lent GPU machine receives only the work tree (64 MiB in all, code and packaged weights
included) and nothing else: no ``../shared``, no network. This script writes, under ``--out``
(default ``gpu_data/``, ignored by git and carried by ``bench/gpu_run.sh``'s caller):

- ``speech/*.ogg``: 16 kHz mono Ogg/Opus, speakers interleaved round-robin until ``--max-mib``;
- ``speech.csv``: ``path,speaker`` for ``pase train --data``;
- ``noise/*.ogg``: the additive-noise clips; ``rirs/*.flac``: a subset of the simulated rooms;
- ``manifest.json``: hours, sizes, the Opus level, the SHA-256 of the sorted source list, and the
  measured loss of quality (mean absolute log-spectrum difference, in dB, over 400-sample
  frames within 60 dB of each file's peak, on a sample of the packed files).

Measured on LibriSpeech (20 files; ``compression_level``: kbps, MiB/h, dB): 0.80: 58, 24.8,
1.0; 0.90: 31, 13.3, 2.5; 0.93: 24, 10.1, 3.2; 0.96: 16, 7.1, 4.0; 1.0: 7, 2.9, 19. The
default 0.93 fits ~3.5 h in 36 MiB at a 3.2 dB spectral error: far below what the training
distortions themselves do (noise at 0 dB SNR, band-drop, 8 kHz low-pass), so it is accepted;
int16 PCM would fit only 20 minutes.

    python bench/pack_speech.py --data ~/.cache/pase/speech_extra/pretrain.csv \\
        ../shared/speech/librispeech/train-clean-100 --out gpu_data --max-mib 36
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from pase.audio import SAMPLE_RATE, AudioError, find_audio_files, load_audio, write_atomic
from pase.data import read_source


def spectral_distance_db(ref: np.ndarray, test: np.ndarray, frame: int = 400) -> float:
    """Mean |log-power difference| (dB) over frames, bins within 60 dB of the file's peak."""
    n = min(len(ref), len(test)) // frame * frame
    window = np.hanning(frame)

    def spec(x: np.ndarray) -> np.ndarray:
        return 10 * np.log10(np.abs(np.fft.rfft(x[:n].reshape(-1, frame) * window)) ** 2 + 1e-10)

    a, b = spec(ref), spec(test)
    keep = a > a.max() - 60
    return float(np.mean(np.abs(a - b)[keep]))


def _write_opus(path: Path, wav: np.ndarray, level: float) -> None:
    def write(tmp: str) -> None:
        sf.write(tmp, wav, SAMPLE_RATE, format="OGG", subtype="OPUS", compression_level=level)

    write_atomic(path, write)


def pack(
    sources: list[str],
    out: Path,
    max_mib: float,
    level: float,
    noise_dir: Path | None,
    n_rirs: int,
    rir_dir: Path | None = None,
) -> dict[str, object]:
    entries = [e for s in sources for e in read_source(s)]
    by_speaker: dict[str, collections.deque] = collections.defaultdict(collections.deque)
    for e in sorted(entries, key=lambda e: str(e.path)):
        by_speaker[e.speaker].append(e)
    order = []
    while any(by_speaker.values()):  # round-robin: every speaker early, not the first ones only
        for spk in sorted(by_speaker):
            if by_speaker[spk]:
                order.append(by_speaker[spk].popleft())
    (out / "speech").mkdir(parents=True, exist_ok=True)
    rows, used, seconds = ["path,speaker"], [], 0.0
    distances: list[float] = []
    budget = max_mib * 2**20
    size = 0
    for i, entry in enumerate(order):
        try:
            wav = load_audio(entry.path)
        except AudioError as err:
            print(f"skipped {err}", file=sys.stderr)
            continue
        name = f"speech/{i:05d}.ogg"
        _write_opus(out / name, wav, level)
        size += (out / name).stat().st_size
        if size > budget:
            (out / name).unlink()
            break
        if len(distances) < 20 and i % 10 == 0:
            distances.append(spectral_distance_db(wav, sf.read(out / name, dtype="float32")[0]))
        rows.append(f"{name},{entry.speaker}")
        used.append(str(entry.path.resolve()))
        seconds += len(wav) / SAMPLE_RATE
    write_atomic(out / "speech.csv", lambda tmp: Path(tmp).write_text("\n".join(rows) + "\n"))

    if noise_dir is not None:
        (out / "noise").mkdir(exist_ok=True)
        for p in find_audio_files(noise_dir):
            _write_opus(out / "noise" / f"{p.stem}.ogg", load_audio(p), level)
    if n_rirs > 0:
        from pase.distortions import DistortionConfig, rir_bank_from_config
        from pase.rirs import RirBank

        bank = RirBank.from_dir(rir_dir) if rir_dir else rir_bank_from_config(DistortionConfig())
        (out / "rirs").mkdir(exist_ok=True)
        for k in np.linspace(0, len(bank) - 1, n_rirs).round().astype(int):
            rir = np.asarray(bank.rirs[k], dtype=np.float32)
            rir = rir / max(1e-9, float(np.abs(rir).max()))
            sf.write(out / "rirs" / f"room{k:03d}.flac", rir, SAMPLE_RATE, subtype="PCM_16")

    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    manifest: dict[str, object] = {
        "files": len(rows) - 1,
        "speakers": len({r.split(",")[1] for r in rows[1:]}),
        "hours": round(seconds / 3600, 3),
        "speech_mib": round(size / 2**20, 2) if size <= budget else round(budget / 2**20, 2),
        "total_mib": round(total / 2**20, 2),
        "opus_compression_level": level,
        "spectral_distance_db": round(float(np.mean(distances)), 2) if distances else None,
        "sources_sha256": hashlib.sha256("\n".join(sorted(used)).encode()).hexdigest(),
    }
    text = json.dumps(manifest, indent=2) + "\n"
    write_atomic(out / "manifest.json", lambda tmp: Path(tmp).write_text(text))
    return manifest


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", nargs="+", required=True, help="pretraining sources (as pase train --data)")
    parser.add_argument("--out", type=Path, default=Path("gpu_data"))
    parser.add_argument("--max-mib", type=float, default=36.0, help="size budget of the speech")
    parser.add_argument(
        "--level", type=float, default=0.93, help="Opus compression level (0 best .. 1 smallest)"
    )
    default_noise = Path(os.environ.get("PASE_SPEECH_DIR", "../shared/speech")) / "noise"
    parser.add_argument("--noise-dir", type=Path, default=default_noise if default_noise.is_dir() else None)
    parser.add_argument("--rirs", type=int, default=64, help="room responses to pack (0: none)")
    parser.add_argument("--rir-dir", type=Path, help="take them from this folder, not the simulated rooms")
    args = parser.parse_args()
    manifest = pack(args.data, args.out, args.max_mib, args.level, args.noise_dir, args.rirs, args.rir_dir)
    print(json.dumps(manifest, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
