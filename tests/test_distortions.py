"""Online distortions: measurable behaviour of each operation, the distorter's draws, the RIR
bank cache, and ``pase show-distortions``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import synth_speechlike

from pase import rirs
from pase.audio import load_audio
from pase.distortions import (
    Distorter,
    DistortionConfig,
    apply_distortion,
    available_distortions,
    band_stop,
    chop,
    speech_regions,
)
from pase.rirs import NoiseBank, RirBank, RoomSpec, measure_rt60
from pase.show_distortions import register_cli

SR = 16000
TINY_ROOMS = RoomSpec(n_rooms=3, rt60_range=(0.2, 0.4), seed=1)


@pytest.fixture(scope="module")
def rir_bank(tmp_path_factory: pytest.TempPathFactory) -> RirBank:
    return RirBank.simulated(TINY_ROOMS, tmp_path_factory.mktemp("rirs"))


@pytest.fixture(scope="module")
def distorter(rir_bank: RirBank) -> Distorter:
    return Distorter(rir_bank=rir_bank, noise_bank=NoiseBank.synthetic(seconds=5.0))


def speech_batch(n: int, seconds: float = 1.0) -> torch.Tensor:
    return torch.from_numpy(np.stack([synth_speechlike(seconds, SR, seed=i) for i in range(n)]))


def bursts(n_bursts: int, seed: int = 0, total_ms: int = 3300) -> np.ndarray:
    """200 ms speech-like bursts every 500 ms from 300 ms on; pauses at -60 dB (no exact zeros)."""
    rng = np.random.default_rng(seed)
    wav = 1e-3 * rng.standard_normal(total_ms * SR // 1000).astype(np.float32)
    tone = synth_speechlike(0.2, SR, seed)
    for k in range(n_bursts):
        start = (300 + 500 * k) * SR // 1000
        wav[start : start + tone.size] += tone
    return wav


def zero_runs(row: torch.Tensor) -> list[tuple[int, int]]:
    """``(start, length)`` of every run of exact zeros in ``row: [T]``."""
    z = np.concatenate([[0], (row.numpy() == 0).astype(np.int8), [0]])
    edges = np.diff(z)
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    return [(int(s), int(e - s)) for s, e in zip(starts, ends, strict=True)]


def psd(wav: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Welch power spectrum of ``wav: [B, T]`` averaged over the batch -> (freqs, power)."""
    spec = torch.stft(wav, 1024, 256, window=torch.hann_window(1024), return_complex=True)
    return np.fft.rfftfreq(1024, 1 / SR), spec.abs().pow(2).mean((0, 2)).numpy()


def band_db(freqs: np.ndarray, power: np.ndarray, lo: float, hi: float) -> float:
    return float(10 * np.log10(power[(freqs >= lo) & (freqs <= hi)].mean()))


def ls_snr(out: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """SNR (dB) of ``out = g (clean + interference)``, ``g`` fitted by least squares."""
    g = (out * clean).sum(-1, keepdim=True) / clean.pow(2).sum(-1, keepdim=True)
    residual = out - g * clean
    return 10 * torch.log10((g * clean).pow(2).sum(-1) / residual.pow(2).sum(-1))


@pytest.mark.parametrize("snr", [0.0, 5.0, 10.0])
def test_noise_at_requested_snr(distorter: Distorter, snr: float) -> None:
    clean = speech_batch(8)
    out = apply_distortion(f"noise:{snr:g}dB", clean, distorter, torch.Generator().manual_seed(3))
    measured = ls_snr(out, clean)
    assert torch.all((measured - snr).abs() < 0.5), measured
    torch.testing.assert_close(out.pow(2).sum(-1), clean.pow(2).sum(-1), rtol=1e-4, atol=0)


@pytest.mark.realdata
def test_real_noise_folder_snr(speech_dir: Path, rir_bank: RirBank) -> None:
    noises = NoiseBank.from_dir(speech_dir / "noise")
    assert len(noises) == 6
    distorter = Distorter(rir_bank=rir_bank, noise_bank=noises)
    clean = speech_batch(16)
    out = apply_distortion("noise:5dB", clean, distorter, torch.Generator().manual_seed(0))
    assert torch.all((ls_snr(out, clean) - 5.0).abs() < 0.5)


def test_default_noise_snrs_drawn_per_example(distorter: Distorter) -> None:
    clean = speech_batch(24)
    out = apply_distortion("noise", clean, distorter, torch.Generator().manual_seed(0))
    nearest = torch.tensor([0.0, 5.0, 10.0])[
        (ls_snr(out, clean)[:, None] - torch.tensor([0.0, 5.0, 10.0])).abs().argmin(1)
    ]
    assert (ls_snr(out, clean) - nearest).abs().max() < 0.5
    assert set(nearest.tolist()) == {0.0, 5.0, 10.0}


def test_clipping_at_fraction_of_own_min_and_max(distorter: Distorter) -> None:
    clean = speech_batch(4) * torch.tensor([[1.0], [0.2], [3.0], [0.05]])
    out = apply_distortion("clip:0.3", clean, distorter)
    torch.testing.assert_close(out.amax(-1), 0.3 * clean.amax(-1))
    torch.testing.assert_close(out.amin(-1), 0.3 * clean.amin(-1))
    inside = (clean < 0.3 * clean.amax(-1, keepdim=True)) & (clean > 0.3 * clean.amin(-1, keepdim=True))
    assert torch.equal(out[inside], clean[inside])
    levels = apply_distortion("clip", speech_batch(32), distorter, torch.Generator().manual_seed(0))
    fractions = np.round((levels.amax(-1) / speech_batch(32).amax(-1)).double().numpy(), 4)
    assert set(fractions.tolist()) == {0.1, 0.3, 0.5}


def test_chop_zeroes_requested_segments_centred_in_regions() -> None:
    wav = torch.from_numpy(np.stack([bursts(5), bursts(5, seed=1), bursts(2, seed=2)]))
    durations = torch.tensor(
        [[800.0, 1600, 1200, 0, 0], [400, 2400, 1000, 500, 700], [800, 800, 800, 800, 0]]
    )
    out = chop(wav, durations, torch.rand(3, 400, generator=torch.Generator().manual_seed(0)))
    burst_centres = [300 * 16 + k * 500 * 16 + 100 * 16 for k in range(5)]
    for row, expected in zip(out, ([800, 1600, 1200], [400, 2400, 1000, 500, 700], [800, 800]), strict=True):
        runs = zero_runs(row)
        assert sorted(length for _, length in runs) == sorted(expected)
        for start, length in runs:  # centred in a speech region, within a 10 ms frame
            assert min(abs(start + length / 2 - c) for c in burst_centres) <= 160
    assert torch.equal(out[out != 0], wav[out != 0])


@pytest.mark.realdata
def test_vad_finds_word_like_regions_in_read_speech(speech_dir: Path) -> None:
    files = sorted((speech_dir / "librispeech" / "train-clean-100").glob("*.flac"))[:16]
    chunks = torch.stack([torch.from_numpy(np.resize(load_audio(f), 48000)[16000:]) for f in files])
    first, last = speech_regions(chunks)
    counts = (last >= 0).sum(-1).float()
    assert counts.min() >= 1 and 2 <= counts.mean() <= 5, counts  # enough places to chop
    length_ms = ((last - first) * 10 + 20)[last >= 0]
    assert length_ms.min() > 40


def test_distorter_chop_counts_and_durations(distorter: Distorter) -> None:
    wav = torch.from_numpy(np.stack([bursts(6, seed=i) for i in range(48)]))
    out = apply_distortion("chop", wav, distorter, torch.Generator().manual_seed(0))
    counts, lengths = [], []
    for row in out:
        runs = zero_runs(row)
        counts.append(len(runs))
        lengths += [length for _, length in runs]
    assert set(counts) == {1, 2, 3, 4, 5}
    ms = np.array(lengths) / 16
    assert ms.min() >= 25 and ms.max() <= 150
    short, long_only = ms[ms < 50], ms[ms > 75]  # only 50+-25 ms / only 100+-50 ms reach there
    assert short.size > 0 and long_only.size > 0


def test_chop_leaves_silence_alone() -> None:
    silent = torch.zeros(2, 16000)
    assert torch.equal(chop(silent, torch.full((2, 3), 800.0), torch.rand(2, 99)), silent)


@pytest.mark.parametrize("low,high", [(0.0, 400.0), (1300.0, 1480.0), (2500.0, 3300.0), (6000.0, 8000.0)])
def test_band_drop_attenuates_band_20db(low: float, high: float) -> None:
    noise = torch.randn(4, 32000, generator=torch.Generator().manual_seed(0))
    freqs, power = psd(band_stop(noise, torch.full((4,), low), torch.full((4,), high)))
    rest = np.ones_like(freqs, dtype=bool) & ((freqs < low - 200) | (freqs > high + 200))
    rest_db = float(10 * np.log10(power[rest].mean()))
    assert rest_db - band_db(freqs, power, low, high) >= 20


def test_distorter_band_drop_energy_matched_and_dropped(distorter: Distorter) -> None:
    noise = torch.randn(16, 32000, generator=torch.Generator().manual_seed(1))
    out = apply_distortion("bandrop", noise, distorter, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.pow(2).sum(-1), noise.pow(2).sum(-1), rtol=1e-4, atol=0)
    for row in out:
        freqs, power = psd(row[None])
        smooth = np.convolve(10 * np.log10(power), np.ones(9) / 9, mode="same")[5:-5]
        assert np.median(smooth) - smooth.min() >= 20  # some >= 140 Hz band is gone


def test_downsample_removes_energy_above_4khz(distorter: Distorter) -> None:
    noise = torch.randn(4, 32000, generator=torch.Generator().manual_seed(0))
    freqs, power = psd(apply_distortion("downsample", noise, distorter))
    _, before = psd(noise)
    assert band_db(freqs, before, 4000, 8000) - band_db(freqs, power, 4000, 8000) >= 30
    assert abs(band_db(freqs, before, 100, 3500) - band_db(freqs, power, 100, 3500)) < 0.5


def test_reverb_of_click_is_rir_aligned_on_direct_path() -> None:
    rng = np.random.default_rng(0)
    tail = rng.standard_normal(3000) * np.exp(-np.arange(3000) / 400)
    rir = np.concatenate([0.05 * rng.standard_normal(37), [4.0], tail]).astype(np.float32)
    bank = RirBank.from_arrays([rir], ["test"])
    distorter = Distorter(DistortionConfig.none(), rir_bank=bank)
    click = torch.zeros(1, 16000)
    click[0, 5000] = 0.5
    out = apply_distortion("reverb", click, distorter)[0]
    assert int(out.abs().argmax()) == 5000
    expected = torch.zeros(16000)
    expected[5000 - 37 : 5000 - 37 + rir.size] = torch.from_numpy(rir / 4.0)
    torch.testing.assert_close(out / out[5000], expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.pow(2).sum(), click.pow(2).sum())


def test_overlap_mixes_reverberated_other_in_first_75_percent(distorter: Distorter) -> None:
    clean = speech_batch(8, seconds=2.0)
    other = torch.randn(8, 32000, generator=torch.Generator().manual_seed(5))
    out = apply_distortion("overlap", clean, distorter, torch.Generator().manual_seed(0), other=other)
    snr = ls_snr(out, clean)
    assert torch.all(((snr[:, None] - torch.tensor([5.0, 7.5, 10.0])).abs() < 0.5).any(1)), snr
    g = (out * clean).sum(-1, keepdim=True) / clean.pow(2).sum(-1, keepdim=True)
    residual = (out - g * clean).abs() > 1e-3 * out.abs().amax(-1, keepdim=True)
    onsets = residual.float().argmax(-1)
    assert torch.all(onsets < 0.75 * 32000) and onsets.float().std() > 0


def test_seeded_generator_reproduces_batch(distorter: Distorter) -> None:
    clean = speech_batch(8, seconds=2.0)
    runs = [distorter(clean, generator=torch.Generator().manual_seed(s)) for s in (7, 7, 8)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_each_example_draws_independently(distorter: Distorter) -> None:
    clean = speech_batch(64, seconds=0.5)
    half = DistortionConfig.none(clip_p=0.5)
    out = distorter.distort(clean, half, generator=torch.Generator().manual_seed(0))
    changed = (out != clean).any(-1)
    assert 0 < int(changed.sum()) < 64
    full = distorter(clean, generator=torch.Generator().manual_seed(0))
    assert 0 < int((full != clean).any(-1).sum()) <= 64


def test_rir_bank_cache_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = RoomSpec(n_rooms=2, rt60_range=(0.2, 0.3), max_len=8000)
    first = RirBank.simulated(spec, tmp_path)
    assert len(list(tmp_path.glob("rirs-2rooms-*.npz"))) == 1
    assert first.rirs.shape[1] <= 8000 and np.allclose(np.abs(first.rirs).max(1), 1.0)
    assert np.all((first.rt60 > 0.1) & (first.rt60 < 0.6)), first.rt60

    def no_simulation(spec: RoomSpec, workers: int) -> None:
        raise AssertionError("the cached bank was simulated again")

    monkeypatch.setattr(rirs, "_simulate", no_simulation)
    second = RirBank.simulated(spec, tmp_path)
    assert np.array_equal(first.rirs, second.rirs) and np.array_equal(first.rt60, second.rt60)
    with pytest.raises(AssertionError, match="simulated again"):
        RirBank.simulated(RoomSpec(n_rooms=2, rt60_range=(0.2, 0.3), max_len=8000, seed=5), tmp_path)


def test_parallel_simulation_gives_the_same_bank(tmp_path: Path) -> None:
    spec = RoomSpec(n_rooms=2, rt60_range=(0.2, 0.25), max_len=4000, seed=3)
    one = RirBank.simulated(spec, tmp_path / "a", workers=1)
    two = RirBank.simulated(spec, tmp_path / "b", workers=2)
    assert np.array_equal(one.rirs, two.rirs) and np.array_equal(one.rt60, two.rt60)


def test_measure_rt60_of_exponential_decay() -> None:
    t = np.arange(16000) / SR
    for rt60 in (0.3, 0.8):
        decay = np.random.default_rng(0).standard_normal(t.size) * 10 ** (-3 * t / rt60)
        assert abs(measure_rt60(decay) - rt60) < 0.05 * rt60


@pytest.mark.realdata
def test_measured_rir_folder(speech_dir: Path) -> None:
    bank = RirBank.from_dir(speech_dir / "rir")
    assert len(bank) == 1 and bank.rirs.shape[1] <= 24000
    assert np.abs(bank.rirs).max() == 1.0 and 0.05 < bank.rt60[0] < 3.0


def test_unknown_spec_lists_valid_names(distorter: Distorter) -> None:
    wav = speech_batch(1)
    with pytest.raises(ValueError, match="reverb, overlap, noise, clip"):
        apply_distortion("echo", wav, distorter)
    for bad in ("noise:loud", "reverb:3"):
        with pytest.raises(ValueError, match="bad distortion setting"):
            apply_distortion(bad, wav, distorter)
    if "codec2" not in available_distortions():
        with pytest.raises(ValueError, match="unknown distortion 'codec2'"):
            apply_distortion("codec2", wav, distorter)


def test_config_roundtrip_and_validation() -> None:
    cfg = DistortionConfig.pase_plus(noise_snrs=(3.0,), rir_dir="rirs")
    assert DistortionConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert DistortionConfig.none().reverb_p == 0 and DistortionConfig().reverb_p == 0.5
    with pytest.raises(ValueError, match="noise_p"):
        DistortionConfig(noise_p=1.5)
    with pytest.raises(ValueError, match="unknown DistortionConfig fields: colour"):
        DistortionConfig.from_dict({"colour": 1})


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_show_distortions_writes_wavs_and_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PASE_SPEECH_DIR", str(tmp_path / "absent"))  # synthetic noise, simulated rooms
    monkeypatch.setenv("PASE_CACHE_DIR", str(tmp_path / "cache"))
    audio = tmp_path / "in.wav"
    sf.write(audio, synth_speechlike(1.5, 22050, seed=0), 22050)
    assert run_cli(["show-distortions", str(audio), "--out", str(tmp_path / "out"), "--rooms", "2"]) == 0
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert names == {"clean.wav", "distortions.png", *(f"{d}.wav" for d in available_distortions())}
    lengths = {sf.info(p).frames for p in (tmp_path / "out").glob("*.wav")}
    assert lengths == {24000}
    assert (tmp_path / "out" / "distortions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    clean, _ = sf.read(tmp_path / "out" / "clean.wav")
    noisy, _ = sf.read(tmp_path / "out" / "noise.wav")
    assert not np.allclose(clean, noisy)


def test_show_distortions_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "bad.wav"
    garbage.write_bytes(b"not audio at all")
    for path in (garbage, tmp_path / "missing.flac"):
        assert run_cli(["show-distortions", str(path), "--out", str(tmp_path / "o")]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(distorter: Distorter) -> None:
    clean = speech_batch(8, seconds=2.0)
    cpu = distorter(clean, generator=torch.Generator().manual_seed(0))
    gpu = distorter.to("cuda")(clean.cuda(), generator=torch.Generator().manual_seed(0))
    distorter.to("cpu")
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-3)


def test_room_fields_are_the_room_spec() -> None:
    """DistortionConfig's room fields set RoomSpec's: same defaults, same rooms, same cache file."""
    from pase.distortions import ROOM_FIELDS

    spec_fields = {f.name for f in dataclasses.fields(RoomSpec)}
    assert set(ROOM_FIELDS.values()) <= spec_fields
    defaults = DistortionConfig()
    assert all(getattr(defaults, ours) == getattr(RoomSpec(), spec) for ours, spec in ROOM_FIELDS.items())
    assert defaults.room_spec() == RoomSpec() and RoomSpec().key() == "3edf5fdbb40959e8"
    custom = DistortionConfig(n_sim_rooms=3, rooms_seed=2, room_rt60_range=(0.2, 0.4), rir_max_len=8000)
    assert custom.room_spec() == RoomSpec(n_rooms=3, seed=2, rt60_range=(0.2, 0.4), max_len=8000)
    assert DistortionConfig.from_dict(custom.to_dict()).room_spec() == custom.room_spec()
