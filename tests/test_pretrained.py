"""The packaged PASE+ weights: offline loading, checksum verification, and their use by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from pase import Encoder
from pase.hub import PRETRAINED_DIR, CheckpointError


def test_packaged_weights_load_offline_and_are_fp16_on_disk() -> None:
    meta = json.loads((PRETRAINED_DIR / "pase_plus" / "config.json").read_text())
    assert meta["dtype"] == "float16" and len(meta["sha256"]) == 64
    size = (PRETRAINED_DIR / "pase_plus" / "model.safetensors").stat().st_size
    assert 14e6 < size < 18e6  # ~7.8 M parameters in fp16
    enc = Encoder.from_pretrained("pase+")
    assert sum(p.numel() for p in enc.parameters()) == 7_832_896
    assert all(p.dtype == torch.float32 for p in enc.parameters())
    with torch.no_grad():
        feats = enc(torch.randn(1, 16000) * 0.1)
    assert feats.shape == (1, 100, 256) and torch.isfinite(feats).all()
    # Trained, not an init: the output BatchNorm has seen data.
    assert float(enc.norm_out.num_batches_tracked) > 0  # type: ignore[arg-type]


def test_tampered_packaged_copy_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "pase_plus"
    shutil.copytree(PRETRAINED_DIR / "pase_plus", copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        Encoder.from_pretrained(copy)


def test_extract_uses_the_packaged_weights_by_default(tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf
    from conftest import synth_speechlike

    from pase import load_audio
    from pase.cli import main

    sf.write(tmp_path / "a.wav", synth_speechlike(0.5, 16000, seed=1), 16000)
    assert main(["extract", str(tmp_path / "a.wav"), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    feats = np.load(tmp_path / "o" / "a.npy")
    enc = Encoder.from_pretrained("pase+")
    with torch.no_grad():
        ref = enc(torch.from_numpy(load_audio(tmp_path / "a.wav"))[None])[0].numpy()
    np.testing.assert_allclose(feats, ref, atol=1e-5)


def test_packaged_weights_are_trained_not_an_init() -> None:
    """PyTorch initialises every conv within +-1/sqrt(fan_in); training moves a good share of the
    weights past that bound in every layer (an untrained encoder has none there)."""
    import math

    for enc, trained in ((Encoder.from_pretrained("pase+"), True), (Encoder.from_config("pase+"), False)):
        for name, m in enc.named_modules():
            if isinstance(m, torch.nn.Conv1d):
                bound = 1 / math.sqrt(m.weight.shape[1] * m.weight.shape[2])
                beyond = float((m.weight.abs() > bound).float().mean())
                assert (beyond > 0.05) if trained else (beyond == 0.0), (name, beyond)
