"""``pase ablate`` end to end on a tiny recipe: variants, equal budgets, table, resume."""

from __future__ import annotations

import json
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import synth_speechlike

from pase.ablate import Variant, parse_assignments, parse_variant, variant_config
from pase.cli import main
from pase.train import TrainConfig


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Training audio (6 speakers x 2 files) and a 2-class eval manifest."""
    root = tmp_path_factory.mktemp("ablate")
    (root / "audio").mkdir()
    (root / "wavs").mkdir()
    for spk in range(6):
        for utt in range(2):
            sf.write(root / "audio" / f"{spk}-1-{utt}.wav", synth_speechlike(0.5, seed=10 * spk + utt), 16000)
    rows = ["path,label,split"]
    t = np.arange(4800) / 16000
    for i in range(8):
        split = "train" if i < 6 else "test"
        tone = (0.3 * np.sin(2 * np.pi * (3000 + 40 * i) * t)).astype(np.float32)
        sf.write(root / "wavs" / f"v{i}.wav", synth_speechlike(0.3, seed=100 + i), 16000)
        sf.write(root / "wavs" / f"t{i}.wav", tone, 16000)
        rows += [f"wavs/v{i}.wav,voiced,{split}", f"wavs/t{i}.wav,tone,{split}"]
    (root / "tasks.csv").write_text("\n".join(rows) + "\n")
    return root


def test_assignments_and_variants_parse() -> None:
    assert parse_assignments('a=1,b.c=x,d=["p","q"],e=0.5') == {
        "a": 1,
        "b": {"c": "x"},
        "d": ["p", "q"],
        "e": 0.5,
    }
    v = parse_variant("infonce:worker_options.gim.negatives=batch,worker_options.lim.pool=10")
    assert v == Variant("infonce", {"worker_options": {"gim": {"negatives": "batch"}, "lim": {"pool": 10}}})
    cfg = variant_config(TrainConfig.pase_plus(), Variant("x", {"distortions": {"noise_p": 0.0}}))
    assert (
        cfg.distortions.noise_p == 0.0
        and cfg.distortions.reverb_p == TrainConfig.pase_plus().distortions.reverb_p
    )
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_variant("bad:oops")


def _ablate(data: Path, out: Path, *extra: str) -> int:
    settings = {
        "encoder": {"channels": [8, 8, 8, 16, 16, 16, 16], "rnn_hidden": 16, "embedding_dim": 16},
        "cache_dir": str(data / "cache"),
        "min_seconds": 0.2,
        "valid_fraction": 0.34,
        "batch_size": 2,
        "chunk_size": 3200,
        "stats_batches": 1,
        "valid_batches": 1,
        "num_threads": 1,
        "distortions": {"n_sim_rooms": 0, "reverb_p": 0.0, "overlap_p": 0.0},
    }
    config = out.parent / "base.json"
    config.write_text(json.dumps(settings))
    args = ["ablate", "--data", str(data / "audio"), "--config", str(config), "--out", str(out)]
    args += [
        "--max-steps",
        "3",
        "--manifest",
        str(data / "tasks.csv"),
        "--eval-cache",
        str(out.parent / "fc"),
    ]
    return main([*args, "--no-progress", *extra])


@pytest.mark.slow
def test_ablate_end_to_end_and_resume(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "abl"
    extra = [
        "--drop",
        "waveform",
        "--drop",
        "lps,lps_long",
        "--variant",
        "gimnce:worker_options.gim.negatives=batch",
    ]
    extra += ["--variant", "twob:rand_from_batch=true"]
    assert _ablate(data, out, *extra) == 0
    rows: list[dict[str, tp.Any]] = json.loads((out / "ablation.json").read_text())
    assert [r["variant"] for r in rows] == ["all", "no-waveform", "no-lps+lps_long", "gimnce", "twob"]
    assert all(r["steps"] == 3 for r in rows)  # the same budget for every variant
    assert "waveform" not in rows[1]["workers"] and "lps_long" not in rows[2]["workers"]
    assert all(0.0 <= r["eval"]["tasks"] <= 1.0 for r in rows)
    assert all("gim_acc" in r["valid"] and "gim" in r["valid"] for r in rows)
    md = (out / "ablation.md").read_text()
    assert "| no-waveform | 3 |" in md and "valid gim_acc" in md
    assert (out / "ablation.png").stat().st_size > 1000
    # A rerun reads finished variants back instead of training them again.
    capsys.readouterr()
    assert _ablate(data, out, *extra) == 0
    assert capsys.readouterr().err.count("finished earlier, not re-run") == 5
    assert json.loads((out / "ablation.json").read_text()) == rows
    # --reeval with more probe seeds: every variant is probed again, none is retrained.
    ckpt = out / "variants" / "twob" / "run" / "checkpoint.pt"
    mtime = ckpt.stat().st_mtime_ns
    assert _ablate(data, out, *extra, "--reeval", "--seeds", "0,1") == 0
    assert capsys.readouterr().err.count("evaluating again with probe seeds 0,1") == 5
    again: list[dict[str, tp.Any]] = json.loads((out / "ablation.json").read_text())
    assert [r["eval_seeds"] for r in again] == ["0,1"] * 5 and ckpt.stat().st_mtime_ns == mtime
    assert [r["steps"] for r in again] == [r["steps"] for r in rows]
    assert all(set(r["eval_std"]) == set(r["eval"]) for r in again)
    assert " ± " in (out / "ablation.md").read_text()


def test_ablate_rejects_a_typo_before_training(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _ablate(data, tmp_path / "abl", "--variant", "x:no_such_field=1") == 2
    assert "unknown TrainConfig fields" in capsys.readouterr().err
    assert not (tmp_path / "abl" / "variants").exists()


def test_a_variant_held_by_a_live_process_is_left_to_it(tmp_path: Path) -> None:
    """Two ``pase ablate`` processes on one folder share the variants: a lock of a live process is
    respected, a lock left by a dead one is taken over."""
    import subprocess
    import sys

    from pase.ablate import BUSY, EvalPlan, run_variant

    vdir = tmp_path / "variants" / "x"
    vdir.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (vdir / "lock").write_text(str(other.pid))
        assert run_variant(Variant("x"), TrainConfig.pase_plus(), tmp_path, EvalPlan(tasks=[])) is BUSY
    finally:
        other.kill()
        other.wait()
    (vdir / "done.json").write_text('{"variant": "x"}')  # finished: read back, lock or not
    assert run_variant(Variant("x"), TrainConfig.pase_plus(), tmp_path, EvalPlan(tasks=[])) == {
        "variant": "x"
    }
