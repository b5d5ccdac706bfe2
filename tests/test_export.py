"""``pase export RUN OUT``: the encoder of an interrupted run's checkpoint, for from_pretrained."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import torch

from pase import Encoder
from pase.cli import main
from pase.encoder import EncoderConfig
from pase.workers import PaseModel, WorkerConfig

TINY = {"channels": [8, 8, 8, 16, 16, 16, 16], "rnn_hidden": 16, "embedding_dim": 16}


def _run_with_checkpoint(tmp_path: Path, step: int) -> tuple[PaseModel, Path]:
    """A run folder holding a tiny model's checkpoint, as `pase train` writes it."""
    model = PaseModel(
        EncoderConfig.from_dict({**EncoderConfig.pase_plus().to_dict(), **TINY}), [WorkerConfig("mfcc")]
    )
    run = tmp_path / "run"
    run.mkdir()
    payload = {"step": step, "model": model.state_dict(), "model_config": json.dumps(model.config_dict())}
    torch.save(payload, run / "checkpoint.pt")
    return model, run


def test_export_writes_the_checkpoint_encoder_readable_by_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, run = _run_with_checkpoint(tmp_path, step=7)

    assert main(["export", str(run), str(tmp_path / "enc")]) == 0
    assert capsys.readouterr().out == (
        f"wrote the encoder of {run} at step 7 to {tmp_path / 'enc'} (for pase.Encoder.from_pretrained)\n"
    )
    encoder = Encoder.from_pretrained(tmp_path / "enc")
    assert encoder.config == model.encoder.config
    for name, value in model.encoder.state_dict().items():
        torch.testing.assert_close(encoder.state_dict()[name], value)
    for written in (tmp_path / "enc").iterdir():  # safetensors alone would write 0600
        assert stat.S_IMODE(written.stat().st_mode) & 0o044 == 0o044, written


def test_export_as_float16_halves_the_file_and_loads_as_float32(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The packaged weights ship so: ``pase export RUN pase/pretrained/pase_plus --dtype float16``."""
    model, run = _run_with_checkpoint(tmp_path, step=3)
    assert main(["export", str(run), str(tmp_path / "f32")]) == 0
    assert main(["export", str(run), str(tmp_path / "f16"), "--dtype", "float16"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"wrote the encoder of {run} at step 3 to {tmp_path / 'f16'}, stored as float16 "
        "(for pase.Encoder.from_pretrained)"
    )
    meta = json.loads((tmp_path / "f16" / "config.json").read_text())
    assert meta["dtype"] == "float16"
    sizes = [(tmp_path / d / "model.safetensors").stat().st_size for d in ("f32", "f16")]
    assert 0.45 < sizes[1] / sizes[0] < 0.6
    encoder = Encoder.from_pretrained(tmp_path / "f16")
    for name, value in model.encoder.state_dict().items():
        loaded = encoder.state_dict()[name]
        assert loaded.dtype == value.dtype, name
        if value.is_floating_point():  # rounded to fp16, not something else
            torch.testing.assert_close(loaded, value.half().float(), rtol=0, atol=0)
        else:
            assert torch.equal(loaded, value), name
    with pytest.raises(SystemExit):  # argparse: the choices are named in the message
        main(["export", str(run), str(tmp_path / "x"), "--dtype", "int8"])
    assert "invalid choice: 'int8'" in capsys.readouterr().err


def test_export_restores_an_encoder_folder_in_another_dtype(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An encoder folder (or a run folder that kept only ``encoder/``) is stored again as fp16,
    named by the run folder or by the encoder folder itself."""
    model, run = _run_with_checkpoint(tmp_path, step=5)
    assert main(["export", str(run), str(run / "encoder")]) == 0
    (run / "checkpoint.pt").unlink()
    for source, folder in ((run, run / "encoder"), (run / "encoder", run / "encoder")):
        out = tmp_path / f"f16_{source.name}"
        assert main(["export", str(source), str(out), "--dtype", "float16"]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == (
            f"wrote the encoder of {folder} to {out}, stored as float16 (for pase.Encoder.from_pretrained)"
        )
        encoder = Encoder.from_pretrained(out)
        assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
        for name, value in model.encoder.state_dict().items():
            expected = value.half().float() if value.is_floating_point() else value
            torch.testing.assert_close(encoder.state_dict()[name], expected, rtol=0, atol=0)
    assert main(["export", str(run / "encoder"), str(run / "encoder"), "--dtype", "float16"]) == 2
    assert "the output would overwrite the encoder it reads" in capsys.readouterr().err
    Encoder.from_pretrained(run / "encoder")  # left intact


def test_export_without_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path), str(tmp_path / "enc")]) == 2
    err = capsys.readouterr().err
    ckpt = tmp_path / "checkpoint.pt"
    problem = f"no checkpoint (is {tmp_path} a `pase train` run folder or an encoder folder?)"
    assert err == f"pase export: {ckpt}: {problem}\n"
    torch.save({"weights": torch.zeros(2)}, tmp_path / "checkpoint.pt")
    assert main(["export", str(tmp_path), str(tmp_path / "enc")]) == 2
    err = capsys.readouterr().err
    assert err == f"pase export: {ckpt}: not a `pase train` checkpoint (KeyError: 'model_config')\n"
