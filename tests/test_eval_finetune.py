"""``pase eval --finetune`` on tiny synthetic tasks with a tiny encoder: utterance, frame and ASR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import synth_speechlike
from test_eval_asr import _write_part

from pase import Encoder
from pase.eval import finetune as ft
from pase.eval.__main__ import main
from pase.eval.features import FeatureCache, make_feature_set
from pase.eval.tasks import Item, Segment, Task, builtin_task

TINY_ENCODER = {"channels": [8, 8, 8, 16, 16, 16, 16], "rnn_hidden": 16, "embedding_dim": 16}
QUICK = ft.FinetuneConfig(max_steps=12, eval_every=4, batch_size=4, crop_seconds=0.5)


def _tone(seconds: float, freq: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return Encoder.from_config(TINY_ENCODER).eval().save_pretrained(tmp_path_factory.mktemp("enc") / "tiny")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Voiced harmonic vs 3 kHz tone: 8 train, 3 valid, 3 test files each."""
    root = tmp_path_factory.mktemp("ft_manifest")
    rows = ["path,label,split"]
    for i in range(14):
        split = "train" if i < 8 else "valid" if i < 11 else "test"
        sf.write(root / f"v{i}.wav", synth_speechlike(0.4, 16000, seed=i), 16000)
        sf.write(root / f"t{i}.wav", _tone(0.4, 3000 + 50 * i, seed=i), 16000)
        rows += [f"v{i}.wav,voiced,{split}", f"t{i}.wav,tone,{split}"]
    (root / "tasks.csv").write_text("\n".join(rows) + "\n")
    return root / "tasks.csv"


def test_finetune_utterance_task_reports_side_by_side_and_saves_the_encoder(
    manifest: Path, encoder_dir: Path, tmp_path: Path
) -> None:
    out, saved = tmp_path / "out", tmp_path / "tuned"
    args = ["--manifest", str(manifest), "--features", str(encoder_dir), "--seeds", "0", "--finetune"]
    args += ["--finetune-steps", "12", "--encoder-lr", "1e-3", "--save-encoder", str(saved)]
    args += ["--finetune-head", "fresh"]  # the frozen probe is perfect here: step 0 would be kept
    assert main([*args, "--out", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    result = json.loads((out / "results.json").read_text())
    tuned = result["finetuned"]
    assert 0 <= tuned["accuracy"] <= 1 and tuned["per_seed"][0]["steps"] <= 12
    assert tuned["finetune_config"]["encoder_lr"] == 1e-3 and tuned["saved_encoder"] == str(saved)
    md = (out / "results.md").read_text()
    assert "Frozen vs fine-tuned" in md
    assert (
        f"| accuracy | {result['accuracy']:.4f} ± {result['accuracy_std']:.4f} | {tuned['accuracy']:.4f}"
        in md
    )

    before, after = Encoder.from_pretrained(encoder_dir), Encoder.from_pretrained(saved)
    changed = [k for k, v in before.state_dict().items() if not torch.equal(v, after.state_dict()[k])]
    assert any(k.endswith("weight") for k in changed)  # the encoder was trained ...
    # ... but BatchNorm stayed in eval mode: running statistics are the pretrained ones
    assert not [k for k in changed if "running_" in k or "num_batches" in k]


def test_finetuning_starts_from_the_frozen_probe(manifest: Path, encoder_dir: Path, tmp_path: Path) -> None:
    """With learning rates ~0 the fine-tuned model is the frozen one: same test accuracy, and the
    starting point (step 0) is the state kept. A fresh probe at the same rates is not trained."""
    base = ["--manifest", str(manifest), "--features", str(encoder_dir), "--seeds", "0,1", "--finetune"]
    base += ["--finetune-steps", "4", "--encoder-lr", "1e-12", "--probe-lr", "1e-12"]
    base += ["--cache-dir", str(tmp_path / "c")]
    assert main([*base, "--out", str(tmp_path / "lpft")]) == 0
    result = json.loads((tmp_path / "lpft" / "results.json").read_text())
    tuned = result["finetuned"]
    assert result["accuracy"] >= 0.8  # the frozen probe separates tones from voiced sounds
    assert [s["head_init"] for s in tuned["per_seed"]] == ["frozen", "frozen"]
    assert [s["best_step"] for s in tuned["per_seed"]] == [0, 0]
    assert all(s["valid_curve"][0][0] == 0 and len(s["valid_curve"]) >= 2 for s in tuned["per_seed"])
    assert tuned["accuracy"] == pytest.approx(result["accuracy"])
    assert "probe started from the frozen run's probe" in (tmp_path / "lpft" / "results.md").read_text()

    assert main([*base, "--finetune-head", "fresh", "--out", str(tmp_path / "fresh")]) == 0
    fresh = json.loads((tmp_path / "fresh" / "results.json").read_text())["finetuned"]
    assert [s["head_init"] for s in fresh["per_seed"]] == ["fresh", "fresh"]
    assert all(s["best_step"] > 0 for s in fresh["per_seed"])


def test_finetune_frame_task(encoder_dir: Path, tmp_path: Path) -> None:
    """Frames of a tone are class "hi" in the first half and "lo" in the second half of each file."""
    items = []
    for i in range(10):
        wav = np.concatenate([_tone(0.3, 3000, i), _tone(0.3, 400, i)])
        sf.write(tmp_path / f"f{i}.wav", wav, 16000)
        split = "train" if i < 6 else "valid" if i < 8 else "test"
        items.append(
            Item(tmp_path / f"f{i}.wav", "", split, "", (Segment(0, 0.3, "hi"), Segment(0.3, 0.6, "lo")))
        )
    task = Task("tones", items, ["hi", "lo"], frame_level=True)
    features = make_feature_set(str(encoder_dir))
    result = ft.finetune(task, features, FeatureCache(tmp_path / "c"), seeds=(0, 1), config=QUICK)  # type: ignore[arg-type]
    assert result.kind == "classification" and result.stage == "finetuned"
    assert [s["seed"] for s in result.per_seed] == [0, 1]
    scores = result.scores
    assert 0 <= scores["accuracy"] <= 1 and scores["accuracy_std"] >= 0 and 0 <= scores["macro_f1"] <= 1


def test_finetune_asr_on_synthetic_librispeech(encoder_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "LibriSpeech"
    _write_part(root / "train-clean-5", ["11", "12"], 3, seed=0)
    _write_part(root / "test-clean", ["21"], 2, seed=1)
    task = builtin_task("librispeech-asr", root)
    features = make_feature_set(str(encoder_dir), layers="all")
    result = ft.finetune(task, features, FeatureCache(tmp_path / "c"), seeds=(0,), config=QUICK)  # type: ignore[arg-type]
    assert result.kind == "asr" and result.stage == "finetuned"
    assert result.scores["wer"] >= 0 and result.scores["cer"] >= 0 and result.layers == "all"
    assert result.per_seed[0]["valid_score"] <= 0  # minus the dev CER


def test_finetune_options_are_checked(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--manifest", str(manifest), "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")]
    assert main([*base, "--save-encoder", str(tmp_path / "e")]) == 2
    assert "--save-encoder needs --finetune" in capsys.readouterr().err
    assert main([*base, "--finetune", "--seeds", "0"]) == 1  # mfcc: the frozen result, no fine-tuning
    assert "mfcc is not an encoder" in capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "results.json").read_text())["features"] == "mfcc"


def test_batchnorm_stays_frozen_in_training_mode() -> None:
    enc = Encoder.from_config(TINY_ENCODER)
    enc.train()
    ft.freeze_batchnorm(enc)
    norms = [m for m in enc.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and not any(m.training for m in norms) and enc.blocks[1].conv.training


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_finetune_on_cuda(manifest: Path, encoder_dir: Path, tmp_path: Path) -> None:
    args = ["--manifest", str(manifest), "--features", str(encoder_dir), "--seeds", "0", "--finetune"]
    args += ["--finetune-steps", "4", "--device", "cuda", "--save-encoder", str(tmp_path / "e")]
    assert main([*args, "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")]) == 0
    assert Encoder.from_pretrained(tmp_path / "e").embedding_dim == 16


def test_finetune_refuses_phone_recognition(encoder_dir: Path, tmp_path: Path) -> None:
    """The fine-tuning head decodes characters: a phone task is one clear error, not a KeyError."""
    from pase.eval.ctc import PHONE_UNITS
    from pase.eval.tasks import TaskError

    items = [Item(tmp_path / "a.wav", "AH B", "train")]
    task = Task("librispeech-phone", items, list(PHONE_UNITS.symbols), sequence_level=True)
    features = make_feature_set(str(encoder_dir), device="cpu")
    with pytest.raises(TaskError, match="fine-tuning supports character ASR, not phone recognition"):
        ft.finetune(task, features, FeatureCache(tmp_path / "cache"), seeds=(0,), config=QUICK)
