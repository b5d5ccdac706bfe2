"""``pase.load_encoder(spec)``: every kind of spec through Python, ``pase extract``, ``pase eval``
and ``pase export``, on a tiny encoder and tiny synthetic audio."""

from __future__ import annotations

import json
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import synth_speechlike

import pase
from pase.cli import main
from pase.encoder import Encoder, EncoderConfig
from pase.hub import ours_to_original
from pase.loading import EncoderSpecError, encoder_spec_help, load_encoder
from pase.workers import PaseModel, WorkerConfig

TINY = {"channels": [8, 8, 8, 16, 16, 16, 16], "rnn_hidden": 16, "embedding_dim": 16}


@pytest.fixture(scope="module")
def model() -> PaseModel:
    torch.manual_seed(1)
    config = EncoderConfig.from_dict({**EncoderConfig.pase_plus().to_dict(), **TINY})
    return PaseModel(config, [WorkerConfig("mfcc")]).eval()


@pytest.fixture(scope="module")
def v1() -> Encoder:
    """The original code's checkpoints hold the published architectures only: PASE v1 is the smaller."""
    torch.manual_seed(2)
    return Encoder.from_config("pase").eval()


@pytest.fixture(scope="module")
def specs(model: PaseModel, v1: Encoder, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One spec of each kind (the files written as each format is): original checkpoints name
    ``v1``, the others ``model.encoder``."""
    root = tmp_path_factory.mktemp("specs")
    run = root / "run"
    run.mkdir()
    payload = {"step": 4, "model": model.state_dict(), "model_config": json.dumps(model.config_dict())}
    torch.save(payload, run / "checkpoint.pt")
    finished = root / "finished"  # a run that kept only encoder/ (and its training config.json)
    model.encoder.save_pretrained(finished / "encoder")
    (finished / "config.json").write_text("{}\n")
    original = ours_to_original(v1.state_dict())
    torch.save({"step": 1, "state_dict": original}, root / "FE_e199.ckpt")
    torch.save(original, root / "flat.pth")
    return {
        "folder": str(model.encoder.save_pretrained(root / "enc")),
        "original": str(root / "FE_e199.ckpt"),
        "original_pth": str(root / "flat.pth"),
        "run": str(run),
        "run_checkpoint": str(run / "checkpoint.pt"),
        "finished_run": str(finished),
    }


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audio")
    rows = ["path,label,split"]
    for i in range(8):
        split = "train" if i < 6 else "test"
        for label, freq in (("low", 300), ("high", 3000)):
            wav = synth_speechlike(0.2, 16000, seed=i) + 0.3 * np.sin(
                2 * np.pi * freq * np.arange(3200) / 16000
            )
            sf.write(root / f"{label}{i}.wav", wav.astype(np.float32), 16000)
            rows.append(f"{label}{i}.wav,{label},{split}")
    (root / "tasks.csv").write_text("\n".join(rows) + "\n")
    return root / "tasks.csv"


def _same(a: Encoder, b: Encoder) -> bool:
    return a.config == b.config and all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def _named(kind: str, model: PaseModel, v1: Encoder) -> Encoder:
    return v1 if kind.startswith("original") else tp.cast(Encoder, model.encoder)


def test_every_file_and_folder_spec_loads_its_encoder(
    model: PaseModel, v1: Encoder, specs: dict[str, str]
) -> None:
    for kind, spec in specs.items():
        encoder = pase.load_encoder(spec)
        assert not encoder.training and _same(encoder, _named(kind, model, v1)), kind


def test_random_specs_are_seeded_and_leave_the_global_stream_alone() -> None:
    torch.manual_seed(0)
    today = Encoder.from_config("pase")  # what `random:pase` built before there was a loader
    state = torch.random.get_rng_state()
    default = load_encoder("random:pase")
    assert torch.equal(torch.random.get_rng_state(), state)
    assert _same(default, today) and _same(load_encoder("random:pase:0"), today)
    assert not _same(load_encoder("random:pase:3"), today)


def test_packaged_and_hub_names(monkeypatch: pytest.MonkeyPatch, specs: dict[str, str]) -> None:
    assert _same(load_encoder("pase+"), Encoder.from_pretrained("pase+"))
    asked = []

    def snapshot(repo_id: str, revision: str | None = None) -> Path:
        asked.append(repo_id)
        return Path(specs["folder"])

    monkeypatch.setattr("pase.hub.download_from_hub", snapshot)
    assert _same(load_encoder("hf:someone/tiny"), load_encoder(specs["folder"]))
    load_encoder("someone/tiny")  # no such local path: a Hub id, as Encoder.from_pretrained takes
    assert asked == ["someone/tiny", "someone/tiny"]


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("random:pase++", "unknown preset 'pase++'"),
        ("random:pase+:x", "the seed 'x' is not an integer"),
        ("hf:nobody", "hf:org/name"),
        ("pase", "no pretrained weights are packaged for this preset"),
        ("nothing-here", "not an encoder"),
    ],
)
def test_bad_specs_are_one_line_errors_naming_the_spec(spec: str, problem: str) -> None:
    with pytest.raises(EncoderSpecError) as info:
        load_encoder(spec)
    message = str(info.value)
    assert spec in message and problem in message and "\n" not in message


def test_folders_and_files_that_hold_no_encoder(tmp_path: Path) -> None:
    with pytest.raises(EncoderSpecError, match="no checkpoint"):
        load_encoder(str(tmp_path))
    (tmp_path / "notes.ckpt").write_text("hello")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_encoder(str(tmp_path / "notes.ckpt"))


def test_extract_takes_every_spec(
    model: PaseModel,
    v1: Encoder,
    specs: dict[str, str],
    manifest: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wav = manifest.parent / "low0.wav"
    x = torch.from_numpy(sf.read(wav, dtype="float32")[0])[None]
    for kind, spec in specs.items():
        out = tmp_path / kind
        assert main(["extract", str(wav), "--out", str(out), "--model", spec, "--no-progress"]) == 0, kind
        with torch.no_grad():
            expected = _named(kind, model, v1)(x)[0].numpy()
        np.testing.assert_allclose(np.load(out / "low0.npy"), expected, atol=1e-5, err_msg=kind)
    for args in (["--model", "random:pase:5"], ["--model", "pase", "--random-init", "--seed", "5"]):
        assert (
            main(["extract", str(wav), "--out", str(tmp_path / "r"), *args, "--overwrite", "--no-progress"])
            == 0
        )
        assert "WARNING: random-init pase encoder (seed 5)" in capsys.readouterr().err
    assert main(["extract", str(wav), "--out", str(tmp_path / "x"), "--model", "nothing-here"]) == 2
    assert (
        "pase extract: cannot load model 'nothing-here': nothing-here: not an encoder"
        in capsys.readouterr().err
    )


def test_eval_takes_every_spec(specs: dict[str, str], manifest: Path, tmp_path: Path) -> None:
    """``pase eval --features RUN/checkpoint.pt`` went to the original-checkpoint reader and failed."""
    features = [*specs.values(), "random:pase+"]
    args = [
        "--manifest",
        str(manifest),
        "--features",
        ",".join(features),
        "--probe",
        "linear",
        "--seeds",
        "0",
    ]
    assert main(["eval", *args, "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["errors"] == {} and [r["features"] for r in summary["results"]] == features


def test_export_takes_every_spec(
    model: PaseModel, v1: Encoder, specs: dict[str, str], tmp_path: Path
) -> None:
    for kind, spec in specs.items():
        assert main(["export", spec, str(tmp_path / kind)]) == 0, kind
        assert _same(Encoder.from_pretrained(tmp_path / kind), _named(kind, model, v1)), kind


def test_every_command_describes_the_same_grammar(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("extract", "eval", "export"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        # argparse wraps lines at spaces and hyphens alike: compare without the whitespace
        assert "".join(encoder_spec_help().split()) in "".join(capsys.readouterr().out.split()), command
