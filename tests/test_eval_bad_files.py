"""``pase eval`` with a bad file among good ones: reported once, skipped for every feature set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import synth_speechlike

from pase.eval.__main__ import main


def _tone(seconds: float, freq: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_a_10ms_file_is_reported_once_and_skipped_for_every_feature_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = ["path,label,split"]
    for i in range(8):
        split = "train" if i < 6 else "test"
        sf.write(tmp_path / f"v{i}.wav", synth_speechlike(0.3, seed=i), 16000)
        sf.write(tmp_path / f"t{i}.wav", _tone(0.3, 3000 + 50 * i, seed=i), 16000)
        rows += [f"v{i}.wav,voiced,{split}", f"t{i}.wav,tone,{split}"]
    sf.write(tmp_path / "short.wav", synth_speechlike(0.01), 16000)  # 160 samples
    rows.append("short.wav,voiced,train")
    (tmp_path / "tasks.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    args = ["--manifest", str(tmp_path / "tasks.csv"), "--features", "mfcc,fbank", "--seeds", "0"]
    assert main([*args, "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    err = capsys.readouterr().err
    expected = f"pase eval: {tmp_path / 'short.wav'}: too short: 160 samples at 16 kHz, the minimum is 400"
    assert err.count(expected) == 1, err
    assert "failed" not in err
    for feats in ("mfcc", "fbank"):
        result = json.loads((out / "tasks" / feats / "results.json").read_text())
        assert sum(result["n_files"].values()) == 16
        assert list(result["skipped_files"]) == [str(tmp_path / "short.wav")]
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["results"]) == 2 and not summary["errors"]
