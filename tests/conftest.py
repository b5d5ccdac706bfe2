"""Shared fixtures: the real-speech bundle (skipped cleanly when absent), synthetic audio, and the
``bench/`` and ``recipes/`` scripts as modules."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import torch

from pase import Encoder, EncoderConfig

SPEECH_DIR = Path(
    os.environ.get("PASE_SPEECH_DIR", Path(__file__).resolve().parents[1] / ".." / "shared" / "speech")
).resolve()


def load_script(path: str) -> types.ModuleType:
    """``path`` (``FOLDER/NAME.py``, from the repository root) imported as module ``NAME``
    (bench/ and recipes/ are not packages)."""
    name = Path(path).stem
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _fast_torch() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    """``../shared/speech`` (or ``$PASE_SPEECH_DIR``); skips the test when absent."""
    if not (SPEECH_DIR / "README.md").exists():
        pytest.skip(f"real speech bundle not found at {SPEECH_DIR}")
    return SPEECH_DIR


def synth_speechlike(seconds: float = 1.0, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A voiced-ish test signal: harmonic tone with a gliding F0 plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    wav = sum(np.sin(k * phase) / k for k in range(1, 12))
    wav = 0.3 * wav / np.max(np.abs(wav)) + 0.01 * rng.standard_normal(t.size)
    return wav.astype(np.float32)


def write_train_corpus(root: Path, speakers: int, seconds: float, rir_samples: int = 2000) -> Path:
    """A training corpus under ``root``: ``audio/`` with ``speakers`` x 2 files of ``seconds`` of
    speech-like audio (``SPK-1-UTT.wav``, louder per speaker) and ``rir/room.wav``, one synthetic
    room response of ``rir_samples`` samples. Returns ``root``."""
    import soundfile as sf

    (root / "audio").mkdir(parents=True)
    for spk in range(speakers):
        for utt in range(2):
            wav = synth_speechlike(seconds, seed=10 * spk + utt) * (0.5 + 0.1 * spk)
            sf.write(root / "audio" / f"{spk}-1-{utt}.wav", wav, 16000)
    t = np.arange(rir_samples) / 16000
    rir = np.random.default_rng(0).standard_normal(rir_samples) * np.exp(-t / 0.05)
    rir[0] = 3.0
    (root / "rir").mkdir()
    sf.write(root / "rir" / "room.wav", rir.astype(np.float32), 16000)
    return root


def perturbed_encoder(config: EncoderConfig | str, seed: int) -> Encoder:
    """A random :class:`pase.Encoder` moved off its init (BatchNorm statistics too), in eval mode:
    a stand-in for trained weights wherever a test compares two ways of computing features."""
    torch.manual_seed(seed)
    enc = Encoder.from_config(config)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return enc.eval()


@pytest.fixture
def one_thread() -> tp.Iterator[None]:
    """torch on one thread for the test (tiny ops gain nothing from threads, and cores are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
