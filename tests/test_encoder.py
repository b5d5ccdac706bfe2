"""Encoder architecture, shapes, padding semantics, long-input streaming, persistence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pase
from pase import Encoder, EncoderConfig
from pase.hub import CheckpointError, ours_to_original


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def plus() -> Encoder:
    torch.manual_seed(0)
    return Encoder.from_config("pase+").eval()


def test_parameter_counts() -> None:
    assert n_params(Encoder.from_config("pase+")) == 7_832_896
    assert n_params(Encoder.from_config("pase")) == 5_818_020


@pytest.mark.parametrize(
    "shape,expected", [((2, 32000), (2, 200, 256)), ((1, 100000), (1, 625, 256)), ((1, 16007), (1, 101, 256))]
)
def test_pase_plus_shapes(plus: Encoder, shape: tuple[int, int], expected: tuple[int, ...]) -> None:
    with torch.no_grad():
        assert tuple(plus(torch.randn(*shape)).shape) == expected


def test_pase_v1_shape() -> None:
    with torch.no_grad():
        assert tuple(Encoder.from_config("pase").eval()(torch.randn(1, 16000)).shape) == (1, 100, 100)


def test_prelu_init_zero_and_affine_free_output_norm(plus: Encoder) -> None:
    prelus = [m for m in plus.modules() if isinstance(m, torch.nn.PReLU)]
    assert len(prelus) == 8 and all(float(p.weight.detach().abs().max()) == 0.0 for p in prelus)
    assert plus.norm_out.weight is None and plus.norm_out.bias is None


def test_sinc_init_and_cutoffs(plus: Encoder) -> None:
    sinc = plus.blocks[0].conv
    with torch.no_grad():
        low, high = sinc.cutoffs()
    assert low.shape == (64, 1)
    assert float(low.min()) == pytest.approx(80.0, abs=0.1)  # 50 + 30 Hz
    assert float(high.max()) <= 8000.0
    filt = sinc.filters()
    assert torch.allclose(filt[:, 0, 125], torch.ones(64))  # centre tap normalised to 1


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_switchable_rnn(rnn: str) -> None:
    enc = Encoder(EncoderConfig(rnn=rnn)).eval()  # type: ignore[arg-type]
    with torch.no_grad():
        assert enc(torch.randn(1, 8000)).shape == (1, 50, 256)


def test_too_short_input_is_a_clear_error(plus: Encoder) -> None:
    with pytest.raises(ValueError, match="too short"):
        plus(torch.randn(1, pase.MIN_SAMPLES - 1))
    with torch.no_grad():
        assert plus(torch.randn(1, pase.MIN_SAMPLES)).shape == (1, 3, 256)
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        plus(torch.randn(16000))


def test_lengths_mask_and_padding_locality(plus: Encoder) -> None:
    torch.manual_seed(1)
    a, b = torch.randn(16000), torch.randn(9000)
    batch = torch.stack([a, torch.nn.functional.pad(b, (0, 7000))])
    with torch.no_grad():
        feats, flen = plus(batch, lengths=torch.tensor([16000, 9000]))
        alone = plus(b[None])[0]
    assert flen.tolist() == [100, 57]
    assert torch.all(feats[1, 57:] == 0)
    # Valid frames equal the unpadded item's except within the receptive field of the padding.
    rf = Encoder.receptive_frames
    torch.testing.assert_close(feats[1, : 57 - rf], alone[: 57 - rf], atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(feats[0], plus(a[None])[0], atol=1e-4, rtol=1e-4)


def test_extract_features_nine_states(plus: Encoder) -> None:
    wav = torch.randn(2, 16000)
    with torch.no_grad():
        states = plus.extract_features(wav)
        final = plus(wav)
        states_l, flen = plus.extract_features(wav, lengths=torch.tensor([16000, 8000]))
    assert isinstance(states, list) and len(states) == 9
    assert all(s.shape == (2, 100, 256) for s in states)
    torch.testing.assert_close(states[-1], final)
    # The final output is the normalised sum of W's output and the 7 pooled skips.
    bn = plus.norm_out
    manual = (sum(states[:8]) - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)  # type: ignore[operator]
    torch.testing.assert_close(manual, final, atol=1e-4, rtol=1e-4)
    assert flen.tolist() == [100, 50] and torch.all(states_l[3][1, 50:] == 0)


def test_infer_long_matches_whole_file(plus: Encoder) -> None:
    torch.manual_seed(2)
    wav = torch.randn(5 * 16000 + 77)
    with torch.no_grad():
        whole = plus(wav[None])[0]
        streamed = plus.infer_long(wav, window_seconds=1.0)
        all_layers = plus.infer_long(wav, layers="all", window_seconds=0.7)
    assert streamed.shape == whole.shape
    torch.testing.assert_close(streamed, whole, atol=1e-4, rtol=1e-4)
    assert all_layers.shape == (9, whole.shape[0], 256)
    torch.testing.assert_close(all_layers[-1], whole, atol=1e-4, rtol=1e-4)


def test_save_load_roundtrip_exact(plus: Encoder, tmp_path: Path) -> None:
    plus.save_pretrained(tmp_path / "enc")
    loaded = Encoder.from_pretrained(tmp_path / "enc")
    wav = torch.randn(1, 12345)
    with torch.no_grad():
        assert torch.equal(loaded(wav), plus(wav))
    meta = json.loads((tmp_path / "enc" / "config.json").read_text())
    assert meta["config"]["rnn"] == "qrnn" and len(meta["sha256"]) == 64


class TaggedEncoder(Encoder):
    """A subclass, as a user would write one to add a method."""


def test_subclass_round_trips_as_the_subclass(tmp_path: Path) -> None:
    tagged = TaggedEncoder.from_config("pase").eval()
    assert type(tagged) is TaggedEncoder
    loaded = TaggedEncoder.from_pretrained(tagged.save_pretrained(tmp_path / "enc"))
    assert type(loaded) is TaggedEncoder
    ckpt = tmp_path / "orig.ckpt"
    torch.save(ours_to_original(tagged.state_dict()), ckpt)
    original = TaggedEncoder.from_original(ckpt)
    assert type(original) is TaggedEncoder
    wav = torch.randn(1, 3200)
    with torch.no_grad():
        assert torch.equal(loaded(wav), tagged(wav)) and torch.equal(original(wav), tagged(wav))


def test_tampered_and_truncated_weights_are_refused(plus: Encoder, tmp_path: Path) -> None:
    d = plus.save_pretrained(tmp_path / "enc")
    weights = d / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        Encoder.from_pretrained(d)
    weights.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        Encoder.from_pretrained(d)


def test_missing_pretrained_name_is_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a pretrained encoder directory"):
        Encoder.from_pretrained(tmp_path / "nope")


@pytest.mark.parametrize("wrapped", [False, True])
def test_original_layout_roundtrip(plus: Encoder, tmp_path: Path, wrapped: bool) -> None:
    torch.manual_seed(3)
    for p in plus.parameters():  # move off the init so a wrong mapping cannot pass by accident
        p.data.add_(0.01 * torch.randn_like(p))
    state = ours_to_original(plus.state_dict())
    assert len(state) == 78
    assert state["rnn.layers.0.linear.weight"].shape == (1536, 1024)
    assert state["denseskips.0.weight"].shape == (256, 64, 1)
    ckpt = tmp_path / "FE_e199.ckpt"
    torch.save({"step": 1, "state_dict": state} if wrapped else state, ckpt)
    loaded = Encoder.from_original(ckpt)
    wav = torch.randn(2, 160 * 123)
    with torch.no_grad():
        torch.testing.assert_close(loaded(wav), plus(wav), atol=0, rtol=0)


def test_original_loader_rejects_non_checkpoints(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_text("hello")
    with pytest.raises(CheckpointError, match="bad.ckpt"):
        Encoder.from_original(bad)
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="W.weight"):
        Encoder.from_original(bad)


def test_convert_original_cli(plus: Encoder, tmp_path: Path) -> None:
    ckpt = tmp_path / "orig.ckpt"
    torch.save(ours_to_original(plus.state_dict()), ckpt)
    from pase.cli import main

    assert main(["convert-original", str(ckpt), str(tmp_path / "out")]) == 0
    enc = Encoder.from_pretrained(tmp_path / "out")
    wav = torch.randn(1, 3200)
    with torch.no_grad():
        torch.testing.assert_close(enc(wav), plus(wav), atol=0, rtol=0)


def test_torch_hub_local(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    enc = torch.hub.load(str(repo), "pase_plus", source="local", pretrained=False)
    assert n_params(enc) == 7_832_896


def test_import_pase_is_light() -> None:
    code = (
        "import sys, pase; pase.Encoder.from_config('pase+');"
        "heavy = ('tensorboard', 'matplotlib', 'pyroomacoustics', 'librosa', 'pase.train');"
        "bad = [m for m in heavy if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
