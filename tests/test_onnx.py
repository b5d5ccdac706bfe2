"""The ONNX export (:mod:`pase.onnx`): ONNX Runtime equals PyTorch at lengths other than the traced
one, in batches with ``lengths``, for every hidden state, for PASE+ and PASE v1, and through
``pase extract --backend onnxruntime``. Skipped when ONNX Runtime is not installed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import synth_speechlike

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from pase import load_encoder  # noqa: E402
from pase.cli import main  # noqa: E402
from pase.encoder import Encoder  # noqa: E402
from pase.onnx import OnnxEncoder, OnnxError, cached_export, export_onnx  # noqa: E402

pytestmark = pytest.mark.slow  # each export takes 15-30 s on a busy CPU

#: ONNX Runtime vs PyTorch, float32: measured differences are ~2e-6 on outputs of magnitude ~5.
TOLERANCE = {"atol": 1e-4, "rtol": 1e-4}
#: 400 is the shortest input; 16000 is a multiple of 160 (no padding), 33333 is not.
LENGTHS = (400, 16000, 33333)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pase_cache")


@pytest.fixture(scope="module")
def plus() -> Encoder:
    return load_encoder("random:pase+")


@pytest.fixture(scope="module")
def plus_onnx(plus: Encoder, cache_dir: Path) -> OnnxEncoder:
    """PASE+ with its hidden states, exported into the cache ``pase extract`` looks in."""
    return OnnxEncoder(cached_export(plus, "all", cache_dir / "onnx"), num_threads=1)


@pytest.fixture(scope="module")
def v1() -> Encoder:
    return load_encoder("random:pase")


@pytest.fixture(scope="module")
def v1_onnx(v1: Encoder, tmp_path_factory: pytest.TempPathFactory) -> OnnxEncoder:
    path = export_onnx(v1, tmp_path_factory.mktemp("v1") / "pase.onnx", layers="all")
    return OnnxEncoder(path, num_threads=1)


def _waves(batch_lengths: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """A zero-padded batch of speech-like waveforms and its lengths."""
    wav = torch.zeros(len(batch_lengths), max(batch_lengths))
    for row, n in enumerate(batch_lengths):
        wav[row, :n] = torch.from_numpy(synth_speechlike(n / 16000, seed=row))[:n]
    return wav, torch.tensor(batch_lengths)


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, **TOLERANCE)


@pytest.mark.parametrize("model", ["plus", "v1"])
@pytest.mark.parametrize("n", LENGTHS)
def test_features_equal_pytorch_at_any_length(model: str, n: int, request: pytest.FixtureRequest) -> None:
    encoder: Encoder = request.getfixturevalue(model)
    runtime: OnnxEncoder = request.getfixturevalue(f"{model}_onnx")
    wav, _ = _waves((n,))
    with torch.no_grad():
        expected = encoder(wav)
    assert expected.shape[1] == -(-n // 160)
    _close(runtime(wav), expected)
    _close(runtime(wav.numpy()), expected)  # NumPy in, tensors out


@pytest.mark.parametrize("model", ["plus", "v1"])
def test_a_padded_batch_with_lengths_equals_pytorch(model: str, request: pytest.FixtureRequest) -> None:
    encoder: Encoder = request.getfixturevalue(model)
    runtime: OnnxEncoder = request.getfixturevalue(f"{model}_onnx")
    wav, lengths = _waves((33333, 400, 16000))
    with torch.no_grad():
        expected, expected_frames = encoder(wav, lengths=lengths)
        expected_states, _ = encoder.extract_features(wav, lengths=lengths)
    feats, frames = runtime(wav, lengths)
    _close(feats, expected)
    assert frames.tolist() == expected_frames.tolist() == [209, 3, 100]
    states, frames = runtime.extract_features(wav, lengths)
    assert len(states) == len(expected_states) == runtime.num_layers == encoder.num_layers
    for actual, wanted in zip(states, expected_states, strict=True):
        _close(actual, wanted)
    assert frames.tolist() == [209, 3, 100]


def test_hidden_states_without_lengths(plus: Encoder, plus_onnx: OnnxEncoder) -> None:
    wav, _ = _waves((16000, 16000))
    with torch.no_grad():
        expected = plus.extract_features(wav)
    states = plus_onnx.extract_features(wav)
    assert len(states) == 9
    for actual, wanted in zip(states, expected, strict=True):
        _close(actual, wanted)


def test_the_file_carries_its_config(plus: Encoder, plus_onnx: OnnxEncoder) -> None:
    assert plus_onnx.config == plus.config
    assert (plus_onnx.layers, plus_onnx.embedding_dim) == ("all", 256)


def test_export_cli_writes_a_final_only_graph(
    v1: Encoder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "v1.onnx"
    assert main(["export", "random:pase", "--onnx", str(path)]) == 0
    assert f"to {path}" in capsys.readouterr().out
    runtime = OnnxEncoder(path)
    assert runtime.layers == "final"
    wav, _ = _waves((16000,))
    with torch.no_grad():
        _close(runtime(wav), v1(wav))
    with pytest.raises(OnnxError, match="--layers all"):
        runtime.extract_features(wav)


def test_export_cli_needs_an_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "random:pase"]) == 2
    assert "--onnx FILE" in capsys.readouterr().err


def test_lstm_encoders_are_refused(tmp_path: Path) -> None:
    encoder = Encoder.from_config({"rnn": "lstm"})
    with pytest.raises(OnnxError, match="not lstm"):
        export_onnx(encoder, tmp_path / "x.onnx")


def test_short_input_is_refused(plus_onnx: OnnxEncoder) -> None:
    with pytest.raises(ValueError, match="too short"):
        plus_onnx(torch.zeros(1, 399))


def _one_line_error(path: Path) -> str:
    with pytest.raises(OnnxError) as info:
        OnnxEncoder(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_missing_corrupt_and_foreign_files_are_one_line_errors(tmp_path: Path) -> None:
    assert "no such ONNX file" in _one_line_error(tmp_path / "absent.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07 not a protobuf at all" * 10)
    assert "not a loadable ONNX model" in _one_line_error(corrupt)

    import onnx
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [value], [out])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), foreign)
    assert "not an ONNX export of a pase encoder" in _one_line_error(foreign)


def test_extract_with_onnxruntime_writes_the_same_files(
    plus_onnx: OnnxEncoder,
    cache_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PASE_CACHE_DIR", str(cache_dir))
    inputs = tmp_path / "in"
    inputs.mkdir()
    # Two short files of one frame count (batched together on CPU) and one longer file.
    for name, seconds, seed in (("a", 1.0, 1), ("b", 1.0, 2), ("c", 2.5, 3)):
        sf.write(inputs / f"{name}.wav", synth_speechlike(seconds, seed=seed), 16000)
    common = ["--random-init", "--layers", "all", "--num-threads", "1", "--no-progress", "--device", "cpu"]
    outs = {}
    for backend in ("torch", "onnxruntime"):
        outs[backend] = tmp_path / backend
        argv = ["extract", str(inputs), "--out", str(outs[backend]), "--backend", backend, *common]
        assert main(argv) == 0, capsys.readouterr().err
    for name in "abc":
        expected = np.load(outs["torch"] / f"{name}.npy")
        actual = np.load(outs["onnxruntime"] / f"{name}.npy")
        assert actual.shape == expected.shape and actual.dtype == expected.dtype == np.float32
        np.testing.assert_allclose(actual, expected, **TOLERANCE)

    def index(folder: Path) -> list[dict[str, object]]:
        lines = (folder / "index.jsonl").read_text().splitlines()
        return sorted((json.loads(line) for line in lines), key=lambda r: str(r["output"]))

    assert index(outs["onnxruntime"]) == index(outs["torch"])
    # The fixture's export of this model was found in the cache, not written again.
    assert [p.name for p in (cache_dir / "onnx").iterdir()] == [plus_onnx.path.name]


def test_auto_backend_runs_onnxruntime_only_where_it_pays(
    plus: Encoder, plus_onnx: OnnxEncoder, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    import pase.onnx
    from pase import extract

    wav = tmp_path / "a.wav"
    sf.write(wav, synth_speechlike(2.0, seed=1), 16000)
    out = tmp_path / "out"
    jobs, _ = extract.resolve_inputs([wav], out, ".npy")
    cached, empty = cache_dir / "onnx", tmp_path / "empty_cache"

    def choose(requested: str = "auto", device: str = "cpu", encoder: Encoder = plus, **kw: object) -> str:
        return extract.choose_backend(requested, encoder, "all", device, jobs, **kw)[0]  # type: ignore[arg-type]

    assert choose("torch", cache_dir=cached) == "torch"  # what the user asks for is kept
    assert choose(cache_dir=cached) == "onnxruntime"  # the export is there: nothing to repay
    backend, why = extract.choose_backend("auto", plus, "all", "cpu", jobs, cache_dir=empty)
    assert backend == "torch" and "0.0 min of audio do not repay" in why
    monkeypatch.setattr(extract.core, "AUTO_ONNX_SECONDS", 1.5)
    assert choose(cache_dir=empty) == "onnxruntime"  # 2 s of audio >= the (lowered) threshold
    out.mkdir()
    (out / "a.npy").write_bytes(b"")
    assert choose(cache_dir=empty) == "torch"  # its output exists: nothing left to extract
    assert choose(cache_dir=empty, overwrite=True) == "onnxruntime"
    assert choose(device="cuda:0", cache_dir=cached) == "torch"
    lstm = Encoder(dataclasses.replace(plus.config, rnn="lstm"))
    assert choose(encoder=lstm, cache_dir=cached) == "torch"
    monkeypatch.setattr(pase.onnx, "runtime_problem", lambda: "onnxruntime not installed")
    assert choose(cache_dir=cached) == "torch"


def test_extract_says_which_backend_auto_chose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PASE_CACHE_DIR", str(tmp_path / "cache"))
    sf.write(tmp_path / "a.wav", synth_speechlike(1.0, seed=1), 16000)
    argv = ["extract", str(tmp_path / "a.wav"), "--out", str(tmp_path / "out"), "--random-init"]
    assert main([*argv, "--no-progress", "--device", "cpu", "--num-threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "torch) ->" in err and "[backend auto: 0.0 min of audio do not repay an ONNX export]" in err
    assert not (tmp_path / "cache" / "onnx").exists()  # nothing was exported for one second of audio
