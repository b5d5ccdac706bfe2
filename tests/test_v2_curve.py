"""``recipes/pase_plus_v2/v2_curve.py``: one curve point per checkpoint step, probed once, drawn
with the reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import load_script

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
    curve = load_script("recipes/pase_plus_v2/v2_curve.py")
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
    curve = load_script("recipes/pase_plus_v2/v2_curve.py")
    assert curve.main(["--run", str(tmp_path)]) == 2
    assert f"no checkpoint.pt in {tmp_path}" in capsys.readouterr().err


def test_full_probe_covers_the_acceptance_cells_once_and_backfills_kept_encoders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    curve = load_script("recipes/pase_plus_v2/v2_curve.py")
    full_runs: list[Path] = []
    full_specs: list[list[str]] = []

    class FakePlan:
        def __init__(self, specs: list[str]) -> None:  # "COND@task,task" as EvalPlan reads them
            self.keys = []
            for spec in specs:
                cond, _, tasks = spec.partition("@")
                self.keys += [t + (f"@{cond}" if cond else "") for t in tasks.split(",")]

        def run(self, encoder: Path, out: Path) -> tuple[dict[str, float], dict[str, float]]:
            if out.name == "eval_full":
                full_runs.append(encoder)
                assert (encoder / "config.json").exists()
            value = 0.5 + 0.01 * len(full_runs)
            return dict.fromkeys(self.keys, value), dict.fromkeys(self.keys, 0.0)

    def full_plan(specs: list[str], seeds: str, data: str | None) -> FakePlan:
        full_specs.append(specs)
        return FakePlan(specs)

    monkeypatch.setattr(curve, "_plan", lambda seeds, data: FakePlan(["@" + ",".join(curve.TASKS)]))
    monkeypatch.setattr(curve, "_full_plan", full_plan)
    base = tmp_path / "base"
    for sub, value in (("clean", 0.9), ("noise_5dB", 0.2)):
        (base / sub).mkdir(parents=True)
        rows = [
            {"task": t, "features": f, "accuracy": value} for t in curve.FULL_TASKS for f in ("mfcc", "pase+")
        ]
        (base / sub / "summary.json").write_text(json.dumps({"results": rows, "errors": []}))
    run = tmp_path / "run"
    run.mkdir()
    _checkpoint(run, 600)
    args = ["--run", str(run), "--seeds", "0", "--no-reference", "--baselines", str(base)]
    assert curve.main(args) == 0  # a plain point: no acceptance cells
    assert not full_runs and not (run / "curve" / "curve_full.csv").exists()
    assert curve.main([*args, "--backfill", "600"]) == 0  # the kept encoder of step 600
    _checkpoint(run, 800)
    assert curve.main([*args, "--full"]) == 0
    assert curve.main([*args, "--full"]) == 0  # probed before: not again
    assert [p.parent.name for p in full_runs] == ["step_000600", "step_000800"]
    point = json.loads((run / "curve" / "step_000800" / "point.json").read_text())
    assert len(point["full"]) == 12 and point["full"]["emodb-emotion@noise:5dB"] == 0.52
    # The cells the point measured already (the fast clean tasks) are taken from it, not reprobed.
    assert point["full"]["fsdd-digit"] == point["eval"]["fsdd-digit"] == 0.51
    assert full_specs[-1] == [
        "@ravdess-emotion,emodb-emotion,librispeech-speaker",
        "noise:5dB@" + ",".join(curve.FULL_TASKS),
    ]
    rows = (run / "curve" / "curve_full.csv").read_text().splitlines()
    assert rows[0].split(",")[:2] == ["step", "fsdd-digit"] and len(rows[0].split(",")) == 13
    assert [r.split(",")[0] for r in rows[1:]] == ["600", "800"]
    assert curve.baselines(base)["mfcc"]["ravdess-emotion@noise:5dB"] == 0.2
    (run / "curve" / "step_000800" / "point.json").unlink()
    capsys.readouterr()
    assert curve.main([*args, "--backfill", "700"]) == 2  # never probed
    assert "no point.json" in capsys.readouterr().err


def test_v3_curve_probes_the_ablations_cells(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    v3 = load_script("recipes/pase_plus_v3/curve.py")
    plan = v3.load_v2_curve()._plan("0,1,2", None)
    script = (Path(__file__).resolve().parents[1] / "recipes/pase_plus_v3/ablation.sh").read_text()
    tasks = script.split("--tasks ")[1].split()[0].split(",")
    distorts = [part.split("'")[1] for part in script.split("--distort ")[1:]]
    assert plan.tasks == tasks and plan.conditions == [None, *distorts] and plan.seeds == "0,1,2"
    assert v3.main(["--run", str(tmp_path)]) == 2
    assert f"no checkpoint.pt in {tmp_path}" in capsys.readouterr().err
    assert v3.main(["--full"]) == 2
