"""Targets: shapes and frame counts, batching, gradients, statistics, and each target against its
reference library on real speech (librosa, the gammatone package, Praat via parselmouth)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synth_speechlike

from pase import targets as T
from pase.audio import load_audio

SR = 16000
PASE_PLUS_DIMS = {
    "lps": 3075,
    "lps_long": 3075,
    "fbank": 120,
    "fbank_long": 120,
    "gammatone": 120,
    "gammatone_long": 120,
    "mfcc": 39,
    "mfcc_long": 60,
    "prosody": 12,
}
PASE_V1_DIMS = {"lps_v1": 1025, "mfcc_v1": 20, "prosody_v1": 4}
#: The LPS pair on a 512-point FFT (257 bins x 3), a cheaper candidate for the CPU recipe.
CHEAP_LPS_DIMS = {"lps_512": 771, "lps_long_512": 771}


def _batch(seconds: float, n: int = 2) -> torch.Tensor:
    return torch.stack([torch.from_numpy(synth_speechlike(seconds, SR, seed=i)) for i in range(n)])


def test_registry_has_the_spec_dims() -> None:
    assert {k: t.dim for k, t in T.TARGETS.items()} == PASE_PLUS_DIMS | PASE_V1_DIMS | CHEAP_LPS_DIMS
    assert all(name == t.name for name, t in T.TARGETS.items())


def test_cheap_lps_is_the_lps_on_a_512_point_fft() -> None:
    wav = _batch(0.5)
    static = T.TARGETS["lps_512"].fn(wav)[..., :257]
    torch.testing.assert_close(static, T.lps(wav, n_fft=512))
    long_static = T.TARGETS["lps_long_512"].fn(wav)[..., :257]
    torch.testing.assert_close(long_static, T.lps(wav, win_length=512, n_fft=512))


@pytest.mark.parametrize("num_samples", [32000, 16007, 400])
def test_every_target_gives_encoder_frames(num_samples: int) -> None:
    wav = _batch(num_samples / SR)[:, :num_samples]
    expected_frames = math.ceil(num_samples / 160)
    for name, target in T.TARGETS.items():
        out = target.fn(wav)
        assert out.shape == (2, expected_frames, target.dim), name
        assert out.dtype == torch.float32, name
        assert torch.isfinite(out).all(), name


def test_no_gradients_even_when_input_requires_them() -> None:
    wav = _batch(0.5).requires_grad_(True)
    for name, target in T.TARGETS.items():
        assert not target.fn(wav).requires_grad, name


def test_item_alone_equals_item_in_batch() -> None:
    wav = _batch(1.0, n=3)
    for name, target in T.TARGETS.items():
        together = target.fn(wav)
        alone = target.fn(wav[1:2])
        torch.testing.assert_close(alone[0], together[1], rtol=1e-5, atol=1e-4, msg=name)


def test_bad_input_is_rejected_with_the_shape() -> None:
    with pytest.raises(ValueError, match=r"\[B, T\].*\(16000,\)"):
        T.lps(torch.zeros(16000))
    with pytest.raises(ValueError, match="floating-point"):
        T.mfcc(torch.zeros(1, 16000, dtype=torch.int16))


def test_frames_are_centred_on_160t() -> None:
    """A click at sample 160 k: the frames that see it are symmetric about frame k. (Gammatone's
    filters are causal, so its alignment is checked against the padded gtgram instead.)"""
    wav = torch.zeros(1, 16000)
    wav[0, 160 * 40] = 1.0
    for fn in (T.lps, T.fbank, T.mfcc):
        energy = fn(wav)[0, :, 0] if fn is T.mfcc else fn(wav)[0].sum(-1)
        active = torch.nonzero(energy > energy.min() + 1.0)[:, 0]
        assert len(active) >= 2 and int(active[0] + active[-1]) == 80, fn.__name__


def test_pitch_tracks_a_synthetic_glide() -> None:
    """The conftest signal has F0 = 120 + 30 sin(2 pi 1.5 t): ours is within 2 % on > 95 % of
    frames and calls > 95 % of them voiced."""
    wav = torch.from_numpy(synth_speechlike(2.0, SR, seed=3))[None]
    f0, voiced = T.pitch(wav)
    t = torch.arange(f0.shape[-1]) * 160 / SR
    truth = 120 + 30 * torch.sin(2 * math.pi * 1.5 * t)
    inner = slice(3, -3)  # the zero-padded edge frames see half a window
    assert voiced[0, inner].float().mean() > 0.95
    ok = (f0[0, inner] / truth[inner] - 1).abs() < 0.02
    assert ok[voiced[0, inner]].float().mean() > 0.95


def test_unvoiced_item_gets_log60_and_flag_0() -> None:
    """Ours; the original left log F0 at -23 with the flag at 1."""
    noise = 0.1 * torch.randn(1, 16000)
    silence = torch.zeros(1, 16000)
    for wav in (noise, silence):
        out = T.prosody(wav)[0]
        assert torch.equal(out[:, 1], torch.zeros(out.shape[0]))
        torch.testing.assert_close(out[:, 0], torch.full((out.shape[0],), math.log(60.0)))


def test_log_f0_interpolates_between_voiced_frames_and_holds_edges() -> None:
    f0 = torch.tensor([[0.0, 100.0, 0.0, 0.0, 200.0, 0.0]])
    voiced = f0 > 0
    got = T._interpolate_log_f0(f0, voiced, floor_hz=60.0)[0]
    lo, hi = math.log(100.0), math.log(200.0)
    expected = torch.tensor([lo, lo, lo + (hi - lo) / 3, lo + 2 * (hi - lo) / 3, hi, hi])
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("num_frames,width", [(50, 9), (7, 7), (5, 5)])
def test_deltas_match_librosa(num_frames: int, width: int) -> None:
    librosa = pytest.importorskip("librosa")
    x = torch.randn(2, num_frames, 6)
    for order in (1, 2):
        ours = T.deltas(x, width=9, order=order)
        ref = librosa.feature.delta(x.numpy().transpose(0, 2, 1), width=width, order=order)
        np.testing.assert_allclose(ours.numpy(), ref.transpose(0, 2, 1), atol=1e-5)
    stacked = T.with_deltas(x)
    assert stacked.shape == (2, num_frames, 18)
    torch.testing.assert_close(stacked[..., 6:12], T.deltas(x))
    torch.testing.assert_close(stacked[..., 12:], T.deltas(x, order=2))


def test_deltas_of_too_few_frames_are_zero() -> None:
    x = torch.randn(1, 2, 3)
    assert torch.equal(T.deltas(x), torch.zeros_like(x))


def test_target_stats_equal_numpy_over_concatenated_frames() -> None:
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(b, f, 5, generator=gen) * 30 + 100 for b, f in [(2, 7), (1, 3), (4, 11)]]
    for b in batches:
        b[..., 4] = 7.0  # a constant dimension: its std sits at the floor
    stats = T.TargetStats()
    for b in batches:
        stats.update(b)
    flat = np.concatenate([b.reshape(-1, 5).double().numpy() for b in batches])
    assert stats.count == flat.shape[0] == 2 * 7 + 3 + 4 * 11
    np.testing.assert_allclose(stats.mean.numpy(), flat.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats.std.numpy()[:4], flat.std(0)[:4], rtol=1e-5)
    assert stats.std[4].item() == pytest.approx(1e-5)

    restored = T.TargetStats()
    restored.load_state_dict(stats.state_dict())
    assert restored.count == stats.count
    torch.testing.assert_close(restored.mean, stats.mean)
    torch.testing.assert_close(restored.std, stats.std)
    normed = restored.normalize(torch.from_numpy(flat).float())
    torch.testing.assert_close(normed[:, :4].mean(0), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(normed[:, :4].std(0, unbiased=False), torch.ones(4), atol=1e-4, rtol=0)


def test_target_stats_rejects_wrong_dim_and_empty_use() -> None:
    stats = T.TargetStats(dim=3)
    with pytest.raises(RuntimeError, match="no data"):
        _ = stats.mean
    with pytest.raises(ValueError, match="3 features"):
        stats.update(torch.zeros(1, 2, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    wav = _batch(1.0)
    for name, target in T.TARGETS.items():
        cpu = target.fn(wav)
        gpu = target.fn(wav.cuda())
        assert gpu.device.type == "cuda", name
        # the voiced flag is a threshold decision: compare it by agreement, the rest by value
        if name.startswith("prosody"):
            assert (gpu.cpu()[..., 1] == cpu[..., 1]).float().mean() > 0.98, name
            continue
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=2e-2, msg=name)


# ------------------------------------------------------------------------------------------
# real speech against the reference libraries
# ------------------------------------------------------------------------------------------
def _speech(speech_dir: Path, rel: str, max_samples: int = 16000 * 6) -> np.ndarray:
    wav = load_audio(speech_dir / rel)[:max_samples]
    # a length that is not a multiple of 160 makes librosa's centred frame count 1 + T // 160
    # equal to ours, ceil(T / 160), so whole arrays compare (and MFCC's top-80-dB max too)
    return wav[: len(wav) - (len(wav) % 160 == 0)]


ORACLE_FILES = [
    "librispeech/test-other/1688/1688-142285-0000.flac",
    "emodb/wav/15b03Nb.flac",
]


@pytest.fixture(scope="module", params=ORACLE_FILES)
def real_wav(request: pytest.FixtureRequest, speech_dir: Path) -> np.ndarray:
    return _speech(speech_dir, request.param)


@pytest.mark.realdata
def test_lps_matches_librosa_stft(real_wav: np.ndarray) -> None:
    """Max abs error < 0.01 dB on every bin within 60 dB of its frame's peak, < 0.1 dB anywhere."""
    librosa = pytest.importorskip("librosa")
    for win in (400, 512):
        ours = T.lps(torch.from_numpy(real_wav)[None], win_length=win)[0].numpy()
        spec = librosa.stft(real_wav, n_fft=2048, win_length=win, hop_length=160, window="boxcar")
        ref = librosa.power_to_db(np.abs(spec) ** 2, top_db=None).T
        loud = ref > ref.max(1, keepdims=True) - 60
        assert np.abs(ours - ref)[loud].max() < 0.01
        assert np.abs(ours - ref).max() < 0.1


@pytest.mark.realdata
def test_fbank_matches_librosa_htk_mel(real_wav: np.ndarray) -> None:
    """Log HTK-mel energies of the pre-emphasised signal: max abs error < 1e-3 (natural log)."""
    librosa = pytest.importorskip("librosa")
    from scipy.signal import lfilter

    emphasised = lfilter([1.0, -0.97], [1.0], real_wav).astype(np.float32)
    for win, n_fft in ((400, 512), (1024, 1024)):
        ours = T.fbank(torch.from_numpy(real_wav)[None], win_length=win, n_fft=n_fft)[0].numpy()
        mel = librosa.feature.melspectrogram(
            y=emphasised, sr=SR, n_fft=n_fft, hop_length=160, win_length=win,
            window="boxcar", n_mels=40, htk=True,
        )  # fmt: skip
        ref = np.log(np.maximum(mel, T.POWER_FLOOR)).T
        assert np.abs(ours - ref).max() < 1e-3


@pytest.mark.realdata
def test_mfcc_matches_librosa(real_wav: np.ndarray) -> None:
    """librosa.feature.mfcc (Slaney mel, top 80 dB, DCT-II ortho): max abs error < 0.01."""
    librosa = pytest.importorskip("librosa")
    wav = torch.from_numpy(real_wav)[None]
    for n_mfcc, n_fft in ((13, 400), (20, 2048)):
        ours = T.mfcc(wav, n_mfcc=n_mfcc, win_length=n_fft, n_fft=n_fft)[0].numpy()
        ref = librosa.feature.mfcc(y=real_wav, sr=SR, n_mfcc=n_mfcc, n_fft=n_fft, hop_length=160, n_mels=40).T
        assert np.abs(ours - ref).max() < 0.01


@pytest.mark.realdata
def test_rms_zcr_and_deltas_match_librosa(real_wav: np.ndarray) -> None:
    """RMS max abs error < 1e-6; ZCR < 1e-6 away from the first and last frame (librosa pads
    ZCR frames by edge repetition, ours with zeros); deltas of real FBANK < 1e-4."""
    librosa = pytest.importorskip("librosa")
    wav = torch.from_numpy(real_wav)[None]
    pros = T.prosody(wav)[0].numpy()
    rms = librosa.feature.rms(y=real_wav, frame_length=320, hop_length=160)[0]
    zcr = librosa.feature.zero_crossing_rate(real_wav, frame_length=320, hop_length=160)[0]
    assert np.abs(pros[:, 2] - rms).max() < 1e-6
    assert np.abs(pros[1:-1, 3] - zcr[1:-1]).max() < 1e-6
    feats = T.fbank(wav)
    for order in (1, 2):
        ref = librosa.feature.delta(feats[0].numpy().T, width=9, order=order).T
        assert np.abs(T.deltas(feats, order=order)[0].numpy() - ref).max() < 1e-4


@pytest.mark.realdata
def test_gammatone_matches_the_gammatone_package(real_wav: np.ndarray) -> None:
    """Log RMS per band against gtgram (IIR filters, windows starting at 160 t: the input is
    padded by half a window so its windows centre on 160 t): Pearson r > 0.99 in every band,
    median abs log difference < 0.05."""
    gtgram = pytest.importorskip("gammatone.gtgram")
    for win in (400, 2048):
        ours = T.gammatone(torch.from_numpy(real_wav)[None], win_length=win)[0].numpy()
        padded = np.pad(real_wav.astype(np.float64), (win // 2, win // 2))
        ref = gtgram.gtgram(padded, SR, win / SR, 160 / SR, 40, 500.0).T
        ref = np.log(np.maximum(ref, 1e-5))
        assert ref.shape == ours.shape
        r = [np.corrcoef(ours[:, k], ref[:, k])[0, 1] for k in range(40)]
        assert min(r) > 0.99
        assert np.median(np.abs(ours - ref)) < 0.05


F0_FILES = [
    "librispeech/test-other/1688/1688-142285-0001.flac",
    "librispeech/test-other/2033/2033-164914-0000.flac",
    "librispeech/test-other/3005/3005-163389-0000.flac",
    "librispeech/test-other/367/367-130732-0000.flac",
    "emodb/wav/15b03Wa.flac",
    "emodb/wav/16a01Wb.flac",
    "ravdess/03-01-05-02-01-01-24.flac",
]


@pytest.mark.realdata
def test_pitch_agrees_with_praat(speech_dir: Path) -> None:
    """Over real speech (files not used to tune the tracker), against Praat's autocorrelation
    tracker (60-300 Hz, 10 ms): gross-error rate (|f0 / f0_praat - 1| > 0.2 on frames both call
    voiced) < 5 %, voicing agreement > 85 %."""
    parselmouth = pytest.importorskip("parselmouth")
    both = gross = agree = total = 0
    for rel in F0_FILES:
        path = speech_dir / rel
        if not path.exists():
            pytest.skip(f"{path} missing from the speech bundle")
        wav = load_audio(path)
        f0, voiced = (v[0].numpy() for v in T.pitch(torch.from_numpy(wav)[None]))
        praat = parselmouth.Sound(wav.astype(np.float64), SR).to_pitch(
            time_step=0.01, pitch_floor=60.0, pitch_ceiling=300.0
        )
        ref = praat.selected_array["frequency"]
        frame = np.round(praat.xs() * 100).astype(int)  # Praat's times -> nearest of our frames
        keep = frame < len(f0)
        ref, frame = ref[keep], frame[keep]
        ref_voiced, ours_voiced = ref > 0, voiced[frame]
        common = ref_voiced & ours_voiced
        both += common.sum()
        gross += (np.abs(f0[frame][common] / ref[common] - 1) > 0.2).sum()
        agree += (ref_voiced == ours_voiced).sum()
        total += len(frame)
    assert both > 1000
    assert gross / both < 0.05
    assert agree / total > 0.85


@pytest.mark.parametrize("preset", ["pase+", "pase"])
def test_encoder_frame_centre_measured_with_an_impulse(preset: str) -> None:
    """Targets centre frame t on sample 160 t; the encoder's frame t sits a little under one
    frame later (pase/targets.py says so): the response to an impulse at sample 160 * 100 is
    centred between frames 98.5 and 100 at init (98.9-99.6 measured over seeds)."""
    from pase import Encoder
    from pase.encoder import EncoderConfig

    torch.manual_seed(0)
    # Linear PReLUs: the response shows the geometry (padding, strides), not which units are dead.
    config = dataclasses.replace(EncoderConfig.from_preset(preset), prelu_init=1.0)
    enc = Encoder(config).eval()
    x = torch.zeros(1, 32000)
    with torch.no_grad():
        silence = enc(x)[0]
        x[0, 16000] = 1.0
        response = (enc(x)[0] - silence).square().sum(-1)
    centre = float((response * torch.arange(response.numel())).sum() / response.sum())
    assert int(response.argmax()) in (98, 99, 100)
    assert 98.5 <= centre <= 100.0, centre
