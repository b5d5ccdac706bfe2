"""``bench/gpu_run.sh --dry-run``: the one-call GPU script runs end to end on CPU with a tiny config,
on speech packed by ``bench/pack_speech.py``, and leaves what the device tool can bring back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import synth_speechlike

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_pack_then_gpu_run_dry_run(tmp_path: Path) -> None:
    src, noise, rirs = tmp_path / "src", tmp_path / "noise", tmp_path / "rirs"
    for d in (src, noise, rirs):
        d.mkdir()
    for spk in range(6):
        for utt in range(2):
            sf.write(src / f"{spk}-1-{utt}.flac", synth_speechlike(0.6, seed=10 * spk + utt), 16000)
    rng = np.random.default_rng(0)
    sf.write(noise / "white.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    t = np.arange(2000) / 16000
    sf.write(rirs / "room.wav", (rng.standard_normal(2000) * np.exp(-t / 0.05)).astype(np.float32), 16000)
    packed = tmp_path / "gpu_data"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "bench/pack_speech.py", "--data", str(src), "--out", str(packed)]
    cmd += ["--noise-dir", str(noise), "--rir-dir", str(rirs), "--rirs", "1", "--max-mib", "1"]
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    manifest = json.loads((packed / "manifest.json").read_text())
    assert manifest["files"] == 12 and manifest["spectral_distance_db"] is not None
    assert len((packed / "speech.csv").read_text().splitlines()) == 13

    out = tmp_path / "out"
    env.update(OUT=str(out), PASE_GPU_DATA=str(packed), PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", "bench/gpu_run.sh", "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] == 1 and summary["data"]["files"] == 12
    assert all(code == 0 for code in summary["exit_codes"].values()), summary["exit_codes"]
    assert set(summary["exit_codes"]) >= {"train", "train_bench_bf16_scan", "train_bench_bf16_loop"}
    bench = json.loads((out / "train_bench.json").read_text())["rows"]
    assert {(r["precision"], r["qrnn_impl"]) for r in bench} == {
        ("bf16", "scan"),
        ("fp32", "scan"),
        ("bf16", "loop"),
    }
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(p.stat().st_size < 16 * 2**20 for p in files)
    assert all(len(p.relative_to(out).parts) <= 3 for p in files)  # $OUT/a/b/file at most
    from pase import Encoder

    meta = json.loads((out / "encoder" / "config.json").read_text())
    assert meta["dtype"] == "float16"
    Encoder.from_pretrained(out / "encoder")
