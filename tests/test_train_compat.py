"""Run folders written by older versions of ``pase train`` still resume.

A run folder as ``pase train`` wrote it when it was one module (``pase/train.py``, whose
TrainConfig called the architecture field ``model``, and whose checkpoints had no digest file) is
made here from a 2-step run of today's code, put back into that layout: the ``model`` key in
``config.json`` and in the checkpoint's stored config, no ``checkpoint.sha256``, no
``checkpoint.prev.pt``, no ``tb/`` or ``encoder/``. (No checkpoint file is committed: weights
live only in ``pase/pretrained/``.) The tiny run::

    pase --no-progress train --out RUN --data CORPUS/audio --cache-dir none --num-workers 0
      --encoder '{"channels": [8, 8, 8, 8, 8, 8, 8], "rnn_hidden": 8, "embedding_dim": 8}'
      --workers '[{"name": "mfcc", "context": 1, "hidden": 16}, {"name": "prosody", "context": 1,
                   "hidden": 16}, {"name": "lim", "kind": "lim", "hidden": 16},
                  {"name": "gim", "kind": "gim", "hidden": 16}]'
      --min-seconds 0.2 --valid-fraction 0.25 --batch-size 2 --chunk-size 3200 --max-steps 2
      --stats-batches 1 --valid-every 1 --valid-batches 1 --ckpt-every 100 --num-threads 1
      --distortions.n-sim-rooms 0 --distortions.rir-dir CORPUS/rir
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import write_train_corpus

from pase.cli import main
from pase.train import CHECKPOINT, TrainConfig

TINY_RUN = [
    "--cache-dir", "none", "--num-workers", "0",
    "--encoder", json.dumps({"channels": [8] * 7, "rnn_hidden": 8, "embedding_dim": 8}),
    "--workers", json.dumps([
        {"name": "mfcc", "context": 1, "hidden": 16},
        {"name": "prosody", "context": 1, "hidden": 16},
        {"name": "lim", "kind": "lim", "hidden": 16},
        {"name": "gim", "kind": "gim", "hidden": 16},
    ]),
    "--min-seconds", "0.2", "--valid-fraction", "0.25", "--batch-size", "2", "--chunk-size", "3200",
    "--stats-batches", "1", "--valid-every", "1", "--valid-batches", "1", "--ckpt-every", "100",
    "--num-threads", "1", "--distortions.n-sim-rooms", "0",
]  # fmt: skip


def old_layout_run(corpus: Path, run: Path) -> None:
    """A 2-step run of the tiny config, put back into the pre-package layout (module docstring)."""
    argv = ["--no-progress", "train", "--out", str(run), "--data", str(corpus / "audio"), *TINY_RUN]
    assert main([*argv, "--max-steps", "2", "--distortions.rir-dir", str(corpus / "rir")]) == 0
    for extra in ("tb", "encoder"):
        shutil.rmtree(run / extra)
    for extra in ("checkpoint.sha256", "checkpoint.prev.pt"):
        (run / extra).unlink(missing_ok=True)

    def old_keys(config: dict[str, object]) -> dict[str, object]:
        return {("model" if k == "architecture" else k): v for k, v in config.items()}

    (run / "config.json").write_text(json.dumps(old_keys(json.loads((run / "config.json").read_text()))))
    checkpoint = torch.load(run / CHECKPOINT, map_location="cpu", weights_only=True)
    checkpoint["config"] = json.dumps(old_keys(json.loads(checkpoint["config"])))
    torch.save(checkpoint, run / CHECKPOINT)


def write_corpus(root: Path) -> None:
    """The fixture's corpus: 4 speakers x 2 files of 0.4 s speech-like audio, and one room."""
    write_train_corpus(root, speakers=4, seconds=0.4, rir_samples=1000)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_run_written_before_the_train_package_resumes(tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus")
    run = tmp_path / "run"
    old_layout_run(tmp_path / "corpus", run)
    assert json.loads((run / "config.json").read_text())["model"] == "pase+"  # the old key
    before = _rows(run / "metrics.csv")
    assert [r["step"] for r in before] == ["1", "2"]

    argv = ["--no-progress", "train", "--out", str(run), "--resume", "--max-steps", "3"]
    argv += ["--data", str(tmp_path / "corpus" / "audio")]
    argv += ["--distortions.rir-dir", str(tmp_path / "corpus" / "rir")]
    assert main(argv) == 0

    metrics = _rows(run / "metrics.csv")
    assert [r["step"] for r in metrics] == ["1", "2", "3"]
    assert metrics[:2] == before  # the old rows kept as they were, the new step appended
    workers = ["mfcc", "prosody", "lim", "gim"]
    assert all(math.isfinite(float(metrics[2][name])) for name in ["loss", *workers])
    # the loss the pre-package code had at its step 3 (measured with it): same batch, draws, weights
    assert float(metrics[2]["loss"]) == pytest.approx(4.56996, rel=1e-3)
    assert [r["step"] for r in _rows(run / "valid.csv")] == ["1", "2", "3"]
    checkpoint = torch.load(run / CHECKPOINT, map_location="cpu", weights_only=True)
    assert checkpoint["step"] == 3
    config = json.loads((run / "config.json").read_text())
    assert config["architecture"] == "pase+" and "model" not in config
    starts = json.loads((run / "data.json").read_text())["starts"]
    assert [s["step"] for s in starts] == [0, 2]
    assert starts[0]["sha256"] == starts[1]["sha256"]  # the same corpus as when it was written
    assert (run / "encoder" / "model.safetensors").exists()


def test_the_old_architecture_key_is_read() -> None:
    assert TrainConfig.from_dict({"model": "pase"}).architecture == "pase"
    assert TrainConfig.pase_plus().updated({"model": "pase"}) == TrainConfig(architecture="pase")
