"""What the encoder accepts as a waveform: tensors, NumPy arrays, float64 and integer PCM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import synth_speechlike

import pase
from pase.audio import as_waveform


@pytest.fixture(scope="module")
def encoder() -> pase.Encoder:
    torch.manual_seed(0)
    return pase.Encoder.from_config("pase").eval()


def test_float32_tensor_passes_through_untouched() -> None:
    x = torch.randn(2, 800, requires_grad=True)
    assert as_waveform(x) is x


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.array([0.5, -0.25], dtype=np.float64), [0.5, -0.25]),
        (np.array([16384, -32768], dtype=np.int16), [0.5, -1.0]),
        (np.array([2**30, -(2**31)], dtype=np.int32), [0.5, -1.0]),
        (torch.tensor([16384, -32768], dtype=torch.int16), [0.5, -1.0]),
        (torch.tensor([0.5, -0.25], dtype=torch.float64), [0.5, -0.25]),
        ([0.5, -0.25], [0.5, -0.25]),
    ],
)
def test_numpy_float64_and_int_pcm_are_scaled_to_float32(array: object, expected: list[float]) -> None:
    out = as_waveform(array)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert out.tolist() == expected


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([1, 2, 3]), "unsupported waveform dtype int64"),
        (np.array([True, False]), "unsupported waveform dtype bool"),
        (np.zeros(4, dtype=np.complex64), "unsupported waveform dtype complex64"),
        (torch.zeros(4, dtype=torch.uint8), "unsupported waveform dtype uint8"),
        ("talk.flac", "read a file with pase.load_audio(path) first"),
    ],
)
def test_ambiguous_inputs_are_rejected_with_a_clear_message(array: object, message: str) -> None:
    with pytest.raises(TypeError) as err:
        as_waveform(array)
    assert message in str(err.value)
    if "dtype" in message:
        assert "int16, scaled by 1/32768" in str(err.value)


def test_encoder_takes_numpy_float64_and_int16_like_float32(encoder: pase.Encoder) -> None:
    wav = synth_speechlike(0.2)
    with torch.no_grad():
        ref = encoder(torch.from_numpy(wav)[None])
        assert torch.equal(encoder(wav[None]), ref)
        assert torch.allclose(encoder(wav[None].astype(np.float64)), ref)
        pcm = np.round(wav * 32768).astype(np.int16)
        assert torch.allclose(encoder(pcm[None]), ref, atol=1e-3)
        assert torch.allclose(encoder(torch.from_numpy(pcm)[None]), ref, atol=1e-3)


def test_readme_infer_long_on_load_audio(encoder: pase.Encoder, tmp_path: Path) -> None:
    path = tmp_path / "talk.flac"
    sf.write(path, synth_speechlike(0.5), 16000)
    feats = encoder.infer_long(pase.load_audio(path))
    assert feats.shape == (50, encoder.embedding_dim)
    with torch.no_grad():
        assert torch.allclose(feats, encoder(torch.from_numpy(pase.load_audio(path))[None])[0], atol=1e-4)


def test_encoder_rejects_int64_with_the_dtype_named(encoder: pase.Encoder) -> None:
    with pytest.raises(TypeError, match="unsupported waveform dtype int64"):
        encoder(np.zeros((1, 800), dtype=np.int64))
