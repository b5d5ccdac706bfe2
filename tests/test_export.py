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


def test_export_writes_the_checkpoint_encoder_readable_by_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = PaseModel(
        EncoderConfig.from_dict({**EncoderConfig.pase_plus().to_dict(), **TINY}), [WorkerConfig("mfcc")]
    )
    run = tmp_path / "run"
    run.mkdir()
    payload = {"step": 7, "model": model.state_dict(), "model_config": json.dumps(model.config_dict())}
    torch.save(payload, run / "checkpoint.pt")

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


def test_export_without_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path), str(tmp_path / "enc")]) == 2
    err = capsys.readouterr().err
    ckpt = tmp_path / "checkpoint.pt"
    assert err == f"pase export: {ckpt}: no checkpoint (is {tmp_path} a `pase train` run folder?)\n"
    torch.save({"weights": torch.zeros(2)}, tmp_path / "checkpoint.pt")
    assert main(["export", str(tmp_path), str(tmp_path / "enc")]) == 2
    err = capsys.readouterr().err
    assert err == f"pase export: {ckpt}: not a `pase train` checkpoint (KeyError: 'model_config')\n"
