"""``bench/v2_curve.py``: one curve point per checkpoint step, probed once, drawn with the reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import load_bench_script

from pase.encoder import EncoderConfig
from pase.workers import PaseModel, WorkerConfig

TINY = {"channels": [8, 8, 8, 16, 16, 16, 16], "rnn_hidden": 16, "embedding_dim": 16}


def _checkpoint(run: Path, step: int) -> None:
    model = PaseModel(
        EncoderConfig.from_dict({**EncoderConfig.pase_plus().to_dict(), **TINY}), [WorkerConfig("mfcc")]
    )
    payload = {"step": step, "model": model.state_dict(), "model_config": json.dumps(model.config_dict())}
    torch.save(payload, run / "checkpoint.pt")


def test_points_are_probed_once_per_step_and_gathered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    curve = load_bench_script("v2_curve")
    probed: list[Path] = []

    class FakePlan:
        def run(self, encoder: Path, out: Path) -> tuple[dict[str, float], dict[str, float]]:
            probed.append(encoder)
            if encoder != Path("pase+"):
                assert (encoder / "model.safetensors").exists()  # the exported encoder is probed
            return {"fsdd-digit": 0.5 + 0.1 * len(probed)}, {"fsdd-digit": 0.01}

    monkeypatch.setattr(curve, "_plan", lambda seeds, data: FakePlan())
    run = tmp_path / "run"
    run.mkdir()
    valid = "step,loss,gim_acc,lim_acc\n250,9,0.5,0.5\n500,8,0.6,0.52\n750,7,0.7,0.55\n"
    (run / "valid.csv").write_text(valid)
    _checkpoint(run, 600)
    assert curve.main(["--run", str(run), "--seeds", "0"]) == 0
    point = json.loads((run / "curve" / "step_000600" / "point.json").read_text())
    assert point["step"] == 600 and point["valid"]["gim_acc"] == 0.6  # the row logged at 500
    assert curve.main(["--run", str(run), "--seeds", "0"]) == 0  # same step: nothing probed again
    assert len(probed) == 2 and probed[1] == Path("pase+")
    _checkpoint(run, 800)
    assert curve.main(["--run", str(run), "--seeds", "0"]) == 0
    assert len(probed) == 3
    rows = (run / "curve" / "curve.csv").read_text().splitlines()
    assert rows[0] == "step,fsdd-digit,valid_gim_acc,valid_lim_acc"
    assert rows[1:] == ["600,0.6000,0.6000,0.5200", "800,0.8000,0.7000,0.5500"]
    assert not (run / "curve" / ".encoder").exists() and not (run / "curve" / ".checkpoint.pt").exists()


def test_without_a_checkpoint_it_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    curve = load_bench_script("v2_curve")
    assert curve.main(["--run", str(tmp_path)]) == 2
    assert f"no checkpoint.pt in {tmp_path}" in capsys.readouterr().err
