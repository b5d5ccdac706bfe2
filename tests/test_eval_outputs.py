"""``pase eval`` outputs: distinct folders per encoder, --layers all beside MFCC, layer weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import synth_speechlike

from pase import Encoder
from pase.eval.__main__ import main
from pase.eval.features import folder_names


def test_folder_names_tell_same_named_encoders_apart() -> None:
    names = folder_names(["runs/a/encoder", "runs/b/encoder", "mfcc", "random:pase+", "x/FE_e199.ckpt"])
    assert names == {
        "runs/a/encoder": "a-encoder",
        "runs/b/encoder": "b-encoder",
        "mfcc": "mfcc",
        "random:pase+": "random-pase+",
        "x/FE_e199.ckpt": "FE_e199.ckpt",
    }


def test_two_encoders_named_alike_with_all_layers_and_mfcc(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = ["path,label,split"]
    rng = np.random.default_rng(0)
    for i in range(8):
        split = "train" if i < 6 else "test"
        t = np.arange(4800) / 16000
        tone = 0.3 * np.sin(2 * np.pi * (3000 + 50 * i) * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(tmp_path / f"v{i}.wav", synth_speechlike(0.3, seed=i), 16000)
        sf.write(tmp_path / f"t{i}.wav", tone.astype(np.float32), 16000)
        rows += [f"v{i}.wav,voiced,{split}", f"t{i}.wav,tone,{split}"]
    (tmp_path / "tasks.csv").write_text("\n".join(rows) + "\n")
    for seed, run in enumerate(("a", "b")):
        torch.manual_seed(seed)
        Encoder.from_config("pase").save_pretrained(tmp_path / run / "encoder")
    features = f"mfcc,{tmp_path / 'a' / 'encoder'},{tmp_path / 'b' / 'encoder'}"
    out = tmp_path / "out"
    args = ["--manifest", str(tmp_path / "tasks.csv"), "--features", features, "--layers", "all"]
    args += ["--probe", "linear", "--seeds", "0,1", "--out", str(out), "--cache-dir", str(tmp_path / "c")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "pase eval: mfcc has a single layer: --layers all applies to the encoders only" in err
    assert sorted(p.name for p in (out / "tasks").iterdir()) == ["a-encoder", "b-encoder", "mfcc"]
    a = json.loads((out / "tasks" / "a-encoder" / "results.json").read_text())
    b = json.loads((out / "tasks" / "b-encoder" / "results.json").read_text())
    assert a["features"] == str(tmp_path / "a" / "encoder")
    assert b["features"] == str(tmp_path / "b" / "encoder")
    assert len(a["layer_weights"]) == 2 and sum(a["layer_weights"]) == pytest.approx(1.0, abs=1e-3)
    md = (out / "tasks" / "a-encoder" / "results.md").read_text()
    assert "## Learned layer weights" in md and "| layer_1 | final |" in md
    mfcc = json.loads((out / "tasks" / "mfcc" / "results.json").read_text())
    assert mfcc["layers"] == "final" and mfcc["layer_weights"] == [1.0]
    assert "Learned layer weights" not in (out / "tasks" / "mfcc" / "results.md").read_text()
