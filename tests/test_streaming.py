"""Streaming inference (``Encoder.stream``) against the offline features of the whole signal."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script, perturbed_encoder

from pase import Encoder, EncoderConfig, load_audio
from pase.audio import HOP, MIN_SAMPLES
from pase.streaming import EncoderStream

#: Tolerance, relative to each layer's largest value. Measured: at most ~3e-7 absolute on the small
#: random encoder; on real speech with the packaged pase+, up to 1.1e-5 on the final output and
#: 2.7e-5 on W's (values up to ~30), i.e. <= 1.6e-6 of the layer's largest value. That is the
#: offline fp32 features' own rounding: against float64 they are off by up to 1.9e-5.
REL_TOL = 4e-6
#: Push sizes: one sample, just under / at / over a hop, 100 ms and 3 s.
CHUNKS = (1, 159, 160, 161, 1600, 48000)


pytestmark = pytest.mark.usefixtures("one_thread")  # pushes of a few samples are many tiny ops


def small_config(**kw: object) -> EncoderConfig:
    base: dict[str, object] = dict(
        sinc_channels=8, channels=(8, 8, 16, 16, 16, 16, 32), rnn_hidden=16, embedding_dim=12
    )
    base.update(kw)
    return EncoderConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def small() -> Encoder:
    return perturbed_encoder(small_config(), seed=3)


@pytest.fixture(scope="module")
def pase_plus() -> Encoder:
    return Encoder.from_pretrained("pase+").eval()


def _signal(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    wav = 0.3 * np.sin(2 * np.pi * 180 * t) * np.sin(2 * np.pi * 3 * t) + 0.05 * rng.standard_normal(n)
    return torch.from_numpy(wav.astype(np.float32))


def _stream_all(stream: EncoderStream, wav: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    outs, i = [], 0
    for n in sizes:
        if i >= wav.shape[0]:
            break
        outs.append(stream.push(wav[i : i + n]))
        i += n
    assert i >= wav.shape[0], "chunk sizes must cover the signal"
    outs.append(stream.flush())
    return torch.cat(outs, dim=-2)


def _random_sizes(total: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    sizes: list[int] = []
    while sum(sizes) < total:
        sizes.append(int(rng.choice(CHUNKS)))
    return sizes


def assert_matches(got: torch.Tensor, ref: torch.Tensor) -> None:
    """``[F, D]`` or ``[L, F, D]``: equal shapes, and each layer within REL_TOL of its scale."""
    assert got.shape == ref.shape
    for g, r in zip(got.reshape(-1, *got.shape[-2:]), ref.reshape(-1, *ref.shape[-2:]), strict=True):
        torch.testing.assert_close(g, r, atol=REL_TOL * max(1.0, r.abs().max().item()), rtol=0)


@torch.no_grad()
def _offline(enc: Encoder, wav: torch.Tensor) -> torch.Tensor:
    return enc(wav[None])[0]


@pytest.mark.parametrize("length", [16000, 16000 + 1, 33333, 5 * 16000 + 159])
def test_random_chunks_match_offline_small(small: Encoder, length: int) -> None:
    wav = _signal(length)
    got = _stream_all(small.stream(), wav, _random_sizes(length, seed=length))
    ref = _offline(small, wav)
    assert got.shape == ref.shape == (-(-length // HOP), small.embedding_dim)
    torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("length", [4 * 16000, 4 * 16000 + 97])
def test_random_chunks_match_offline_packaged(pase_plus: Encoder, length: int) -> None:
    wav = _signal(length, seed=1)
    got = _stream_all(pase_plus.stream(), wav, _random_sizes(length, seed=length))
    ref = _offline(pase_plus, wav)
    assert_matches(got, ref)


@pytest.mark.parametrize("size", CHUNKS)
def test_fixed_chunk_sizes(small: Encoder, size: int) -> None:
    wav = _signal(16000 + 7)
    got = _stream_all(small.stream(), wav, [size] * (-(-wav.shape[0] // size)))
    assert_matches(got, _offline(small, wav))


def test_one_sample_pushes_packaged(pase_plus: Encoder) -> None:
    wav = _signal(8000 + 33, seed=2)
    got = _stream_all(pase_plus.stream(), wav, [1] * wav.shape[0])
    assert_matches(got, _offline(pase_plus, wav))


def test_all_layers(small: Encoder, pase_plus: Encoder) -> None:
    for enc in (small, pase_plus):
        wav = _signal(16000 + 55)
        got = _stream_all(enc.stream("all"), wav, _random_sizes(wav.shape[0], seed=5))
        with torch.no_grad():
            ref = torch.stack(enc.extract_features(wav[None]))[:, 0]
        assert got.shape == ref.shape == (enc.num_layers, 101, enc.embedding_dim)
        assert_matches(got, ref)


def test_pase_v1() -> None:
    enc = perturbed_encoder(small_config(rnn="none", dense_skips=False), seed=3)
    wav = _signal(16000 + 3)
    for layers in ("final", "all"):
        got = _stream_all(enc.stream(layers), wav, _random_sizes(wav.shape[0], seed=7))
        with torch.no_grad():
            ref = (
                enc(wav[None])[0] if layers == "final" else torch.stack(enc.extract_features(wav[None]))[:, 0]
            )
        assert_matches(got, ref)
    full = Encoder.from_config("pase").eval()
    wav = _signal(8000)
    assert_matches(_stream_all(full.stream(), wav, [1600] * 5), _offline(full, wav))


def _measured_lookahead(stream: EncoderStream, n_frames: int) -> list[int]:
    """Push one sample at a time; for each frame t, the samples beyond its hop that were pushed
    when it came out."""
    wav = _signal(HOP * n_frames + 4000)
    lookahead: list[int] = []
    for i in range(wav.shape[0]):
        for _ in range(stream.push(wav[i : i + 1]).shape[0]):
            t = len(lookahead)
            lookahead.append(i + 1 - HOP * (t + 1))
        if len(lookahead) >= n_frames:
            break
    return lookahead


@pytest.mark.parametrize(
    "kernels", [(20, 11, 11, 11, 11, 11, 11), (20, 5, 7, 3, 9, 5, 11), (10, 3, 3, 3, 3, 3, 3)]
)
def test_latency_matches_measurement(kernels: tuple[int, ...]) -> None:
    enc = perturbed_encoder(small_config(kernels=kernels), seed=3)
    stream = enc.stream()
    assert _measured_lookahead(stream, 6) == [stream.latency_samples] * 6
    assert stream.latency_ms == 1000 * stream.latency_samples / 16000


def test_latency_packaged(pase_plus: Encoder) -> None:
    stream = pase_plus.stream()
    assert stream.latency_samples == 1176 and stream.latency_ms == 73.5
    assert _measured_lookahead(stream, 4) == [1176] * 4


def test_short_streams(small: Encoder) -> None:
    stream = small.stream()
    assert stream.push(_signal(100)).shape == (0, small.embedding_dim)
    with pytest.raises(ValueError, match="too short"):
        stream.flush()  # as offline: fewer than MIN_SAMPLES samples
    stream.reset()
    assert stream.flush().shape == (0, small.embedding_dim)  # nothing pushed, nothing out
    stream.reset()
    assert small.stream("all").flush().shape == (small.num_layers, 0, small.embedding_dim)
    wav = _signal(MIN_SAMPLES)
    got = _stream_all(stream, wav, [1] * MIN_SAMPLES)
    assert_matches(got, _offline(small, wav))


def test_reset_and_end(small: Encoder) -> None:
    wav = _signal(16000)
    stream = small.stream()
    first = _stream_all(stream, wav, [1600] * 10)
    with pytest.raises(RuntimeError, match="reset"):
        stream.push(wav[:160])
    stream.reset()
    stream.push(_signal(5000, seed=9))
    stream.reset()  # mid-stream: forgets the QRNN state and every buffer too
    assert_matches(_stream_all(stream, wav, [3333] * 5), first)


def test_bounded_state(small: Encoder) -> None:
    """Buffers stay below a kernel whatever the stream's age: memory and cost do not grow."""
    stream = small.stream()
    wav = _signal(10 * 16000)
    for i in range(0, wav.shape[0], 320):
        stream.push(wav[i : i + 320])
        for stage in stream._stages:
            assert stage.buf is None or stage.buf.shape[-1] <= stage.kernel + stage.stride
        # Skips are final before the last block: they wait at most the latency plus one push.
        bound = stream.latency_samples // HOP + 320 // HOP + 1
        assert all(sum(q.shape[-1] for q in queue) <= bound for queue in stream._queues)


def test_inputs_and_modes(small: Encoder) -> None:
    pcm = (np.asarray(_signal(4000)) * 20000).astype(np.int16)
    stream = small.stream()
    got = torch.cat([stream.push(pcm[:2000]), stream.push(pcm[2000:]), stream.flush()])
    assert_matches(got, _offline(small, torch.from_numpy(pcm) / 32768))
    with pytest.raises(ValueError, match=r"\[T\]"):
        small.stream().push(torch.zeros(2, 100))
    with pytest.raises(ValueError, match="layers"):
        small.stream("some")  # type: ignore[arg-type]
    small.train()
    try:
        with pytest.raises(RuntimeError, match="eval"):
            small.stream()
    finally:
        small.eval()
    stream = small.stream()
    small.train()
    try:
        with pytest.raises(RuntimeError, match="eval"):
            stream.push(pcm)
    finally:
        small.eval()


@pytest.mark.realdata
def test_real_speech_packaged(pase_plus: Encoder, speech_dir: Path) -> None:
    for i, path in enumerate(sorted((speech_dir / "emodb" / "wav").glob("*.flac"))[:3]):
        wav = torch.from_numpy(load_audio(path))
        got = _stream_all(pase_plus.stream("all"), wav, _random_sizes(wav.shape[0], seed=i))
        with torch.no_grad():
            ref = torch.stack(pase_plus.extract_features(wav[None]))[:, 0]
        assert_matches(got, ref)


def test_docs_example() -> None:
    doc = Path(__file__).resolve().parents[1] / "docs" / "streaming.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(doc), "exec"), {})


def test_bench_quick(tmp_path: Path) -> None:
    bench = load_script("bench/streaming.py")
    out = tmp_path / "streaming.json"
    assert bench.main(["--quick", "--push-ms", "20", "100", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["latency_ms"] == 73.5 and [r.get("push_ms") for r in result["rows"]] == [None, 20, 100]
    assert all(r["max_abs_diff_vs_offline"] < 1e-4 for r in result["rows"][1:])
