"""``pase eval`` end to end on a tiny synthetic manifest: reports, cache, grid, errors, features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import synth_speechlike

from pase.eval.__main__ import main
from pase.eval.features import EncoderFeatures, EvalCondition, FeatureCache, cache_features, make_feature_set


def _tone(seconds: float, freq: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two separable classes (voiced harmonic vs. 3 kHz tone), 10 train and 4 test files each."""
    root = tmp_path_factory.mktemp("manifest")
    (root / "wavs").mkdir()
    rows = ["path,label,split"]
    for i in range(14):
        split = "train" if i < 10 else "test"
        sf.write(root / "wavs" / f"v{i}.wav", synth_speechlike(0.3, 16000, seed=i), 16000)
        sf.write(root / "wavs" / f"t{i}.wav", _tone(0.3, 3000 + 50 * i, seed=i), 16000)
        rows += [f"wavs/v{i}.wav,voiced,{split}", f"wavs/t{i}.wav,tone,{split}"]
    csv = root / "tasks.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def _markdown_row(md: str) -> dict[str, str]:
    """The first table of a results.md as ``{column: cell}``."""
    lines = [line for line in md.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    values = [c.strip() for c in lines[2].strip("|").split("|")]
    return dict(zip(header, values, strict=True))


def test_manifest_run_writes_agreeing_reports_and_reuses_the_cache(manifest: Path, tmp_path: Path) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["--manifest", str(manifest), "--features", "mfcc", "--out", str(out), "--cache-dir", str(cache)]
    threads = torch.get_num_threads()
    try:
        assert main([*args, "--num-threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)  # the option sets this process's threads: restore them
    result = json.loads((out / "results.json").read_text())
    assert result["task"] == "tasks" and result["features"] == "mfcc" and result["probe"] == "mlp"
    assert result["n_classes"] == 2 and result["n_test"] == 8
    assert result["n_train"] + result["n_valid"] == 20 and result["n_valid"] > 0
    assert result["accuracy"] > 0.9 and 0 <= result["accuracy"] <= 1
    assert [s["seed"] for s in result["per_seed"]] == [0, 1, 2]
    assert result["accuracy"] == pytest.approx(np.mean([s["accuracy"] for s in result["per_seed"]]))

    row = _markdown_row((out / "results.md").read_text())
    for key in ("accuracy", "accuracy_std", "macro_f1", "macro_f1_std"):
        assert row[key] == f"{result[key]:.4f}"
    for key in ("task", "features", "probe", "layers", "n_train", "n_valid", "n_test", "n_classes"):
        assert row[key] == str(result[key])
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    cached = sorted(cache.rglob("*.npy"))
    assert len(cached) == 28
    mtimes = [p.stat().st_mtime_ns for p in cached]
    assert main(args) == 0  # second run: features come from the cache, results are identical
    assert [p.stat().st_mtime_ns for p in sorted(cache.rglob("*.npy"))] == mtimes
    again = json.loads((out / "results.json").read_text())
    assert again["per_seed"] == result["per_seed"]


def test_grid_writes_one_folder_per_pair_and_a_summary(manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid"
    args = ["--manifest", str(manifest), "--features", "mfcc,fbank", "--probe", "linear", "--seeds", "0,1"]
    assert main([*args, "--out", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    for feats in ("mfcc", "fbank"):
        result = json.loads((out / "tasks" / feats / "results.json").read_text())
        assert result["probe"] == "linear" and len(result["per_seed"]) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert [r["features"] for r in summary["results"]] == ["mfcc", "fbank"] and summary["errors"] == {}
    md = (out / "summary.md").read_text()
    assert f"{summary['results'][1]['accuracy']:.4f}" in md and "| tasks |" in md
    assert (out / "summary.png").stat().st_size > 0


def test_bad_manifest_rows_are_reported_by_line_and_a_useless_one_fails(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "tasks.csv"
    lines = manifest.read_text().splitlines()
    rows = [lines[0], *(ln.replace("wavs/", f"{manifest.parent}/wavs/") for ln in lines[1:])]
    rows.insert(3, "nowhere.wav,voiced,train")  # line 4
    bad.write_text("\n".join(rows) + "\n")
    args = [
        "--features",
        "mfcc",
        "--seeds",
        "0",
        "--out",
        str(tmp_path / "o"),
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    assert main(["--manifest", str(bad), *args]) == 0
    assert f"{bad}:4: " in capsys.readouterr().err

    only_train = tmp_path / "train_only.csv"
    only_train.write_text("\n".join(r for r in rows if not r.endswith(",test")) + "\n")
    assert main(["--manifest", str(only_train), *args]) == 2
    assert "no usable train and test rows" in capsys.readouterr().err


def test_cli_rejects_bad_options(manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--manifest", str(manifest), "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")]
    assert main([*base, "--features", "mfcc", "--seeds", "a,b"]) == 2
    assert main([*base, "--features", "mfcc", "--distort", "thunder"]) == 2
    assert "unknown distortion" in capsys.readouterr().err
    assert main(["--task", "timit", "--out", str(tmp_path / "o")]) == 2
    assert main([*base, "--features", str(tmp_path / "no_such_checkpoint")]) == 1
    assert "no_such_checkpoint" in capsys.readouterr().err


def test_random_encoder_reestimates_batchnorm_on_training_files(manifest: Path, tmp_path: Path) -> None:
    feats = make_feature_set("random:pase+", layers="all")
    assert isinstance(feats, EncoderFeatures) and feats.num_layers == 9
    train = sorted(manifest.parent.glob("wavs/*.wav"))[:6]
    before = feats.fingerprint()
    feats.calibrate_on(train)
    assert feats.fingerprint() != before  # the calibration files are part of the cache key
    norm = next(m for m in feats.encoder.modules() if isinstance(m, torch.nn.BatchNorm1d))
    out = cache_features(feats, train[:2], FeatureCache(tmp_path))
    assert norm.num_batches_tracked is not None and norm.running_mean is not None
    assert int(norm.num_batches_tracked) == len(train)  # one cumulative pass per training file
    assert not torch.allclose(norm.running_mean, torch.zeros_like(norm.running_mean))
    assert out[0].shape == (9, 30, 256) and np.isfinite(out[0]).all()
    # same seed, same files: an identical model, so a second instance hits the same cache entries
    other = make_feature_set("random:pase+", layers="all")
    other.calibrate_on(train)
    assert other.fingerprint() == feats.fingerprint()


def test_distortion_changes_only_what_it_is_given_and_is_deterministic(
    manifest: Path, tmp_path: Path
) -> None:
    files = sorted(manifest.parent.glob("wavs/v*.wav"))[:3]
    mfcc, cache = make_feature_set("mfcc"), FeatureCache(tmp_path)
    noisy = EvalCondition("noise:0dB", tmp_path)  # no noise folder there: synthetic noise
    clean = cache_features(mfcc, files, cache)
    first = cache_features(mfcc, files, cache, noisy)
    second = cache_features(mfcc, files, FeatureCache(tmp_path / "fresh"), noisy)
    assert not np.allclose(first[0], clean[0])
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(list(tmp_path.rglob("*.npy"))) == 3 + 3 + 3


@pytest.mark.realdata
@pytest.mark.slow
def test_mfcc_on_spoken_digits_reaches_a_sane_accuracy(speech_dir: Path, tmp_path: Path) -> None:
    from pase.eval import builtin_task, evaluate

    task = builtin_task("fsdd-digit", speech_dir)
    result, confusion = evaluate(task, make_feature_set("mfcc"), FeatureCache(tmp_path), seeds=(0,))
    assert result.scores["accuracy"] >= 0.85
    assert confusion.sum() == result.details["n_test"] == 300


def test_random_encoder_with_all_layers_end_to_end(manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    args = ["--manifest", str(manifest), "--features", "random:pase+", "--layers", "all", "--seeds", "0"]
    assert main([*args, "--probe", "linear", "--out", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["layers"] == "all" and result["features"] == "random:pase+"
    weights = result["per_seed"][0]["layer_weights"]
    assert len(weights) == 9 and sum(weights) == pytest.approx(1.0)
