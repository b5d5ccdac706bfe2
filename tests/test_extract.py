"""``pase extract`` and :func:`pase.extract.extract_files` on generated files in ``tmp_path``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import synth_speechlike

from pase import load_encoder
from pase.audio import load_audio, num_frames
from pase.cli import main
from pase.encoder import Encoder
from pase.extract import extract_files

ROOT = Path(__file__).resolve().parents[1]
RANDOM = ["--random-init", "--seed", "0", "--no-progress"]
GOOD = {"a.flac": "a.npy", "sub/b.wav": "sub/b.npy", "sub/deeper/c.wav": "sub/deeper/c.npy"}
BAD = ("empty.wav", "text.wav", "nan.wav", "short.wav")


def make_tree(root: Path) -> Path:
    """Good files (16 kHz FLAC, 8 kHz WAV, stereo 44.1 kHz, in subfolders) and bad ones."""
    (root / "sub" / "deeper").mkdir(parents=True)
    sf.write(root / "a.flac", synth_speechlike(1.0, 16000, seed=1), 16000)
    sf.write(root / "sub" / "b.wav", synth_speechlike(0.7, 8000, seed=2), 8000)
    stereo = np.stack([synth_speechlike(0.6, 44100, seed=3), synth_speechlike(0.6, 44100, seed=4)], 1)
    sf.write(root / "sub" / "deeper" / "c.wav", stereo, 44100)
    (root / "empty.wav").write_bytes(b"")
    (root / "text.wav").write_text("this is not audio\n")
    nan = synth_speechlike(0.5, 16000, seed=5)
    nan[100] = np.nan
    sf.write(root / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(root / "short.wav", np.zeros(40, np.float32), 16000)
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "in")


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return load_encoder("random:pase+:0", "cpu")


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    rc = main(["extract", *map(str, args)])
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def index_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("batch_size", ["1", "4"])
def test_folder_good_and_bad_files(tree: Path, tmp_path: Path, batch_size: str, capsys) -> None:
    out = tmp_path / "out"
    rc, text = run(capsys, tree, "--out", out, "--batch-size", batch_size, *RANDOM)
    assert rc != 0
    assert "Traceback" not in text
    assert "extracted 3, skipped 0, failed 4" in text
    for src, dst in GOOD.items():
        feats = np.load(out / dst)
        assert feats.dtype == np.float32
        assert feats.shape == (num_frames(len(load_audio(tree / src))), 256)
        assert np.isfinite(feats).all()
    lines = text.splitlines()
    for name in BAD:
        assert sum(str(tree / name) in line for line in lines) == 1, name
        assert not (out / name).with_suffix(".npy").exists()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npy")) == sorted(GOOD.values())

    records = {r["output"]: r for r in index_lines(out)}
    assert set(records) == set(GOOD.values())
    for src, dst in GOOD.items():
        r = records[dst]
        wav = load_audio(tree / src)
        assert Path(r["input"]) == (tree / src).resolve()
        assert r["frames"] == num_frames(len(wav)) == np.load(out / dst).shape[0]
        assert r["seconds"] == pytest.approx(len(wav) / 16000)
        assert r["dims"] == 256 and r["shape"] == [r["frames"], 256]


def test_rerun_skips_existing_and_overwrite_redoes(tree: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    run(capsys, tree, "--out", out, *RANDOM)
    first = {dst: (out / dst).stat().st_mtime_ns for dst in GOOD.values()}
    (out / "a.npy").unlink()

    rc, text = run(capsys, tree, "--out", out, *RANDOM)
    assert "extracted 1, skipped 2, failed 4" in text and rc != 0
    assert (out / "sub/b.npy").stat().st_mtime_ns == first["sub/b.npy"]
    assert sorted(r["output"] for r in index_lines(out)) == sorted(GOOD.values())

    rc, text = run(capsys, tree, "--out", out, "--overwrite", *RANDOM)
    assert "extracted 3, skipped 0, failed 4" in text
    assert (out / "sub/b.npy").stat().st_mtime_ns != first["sub/b.npy"]
    assert sorted(r["output"] for r in index_lines(out)) == sorted(GOOD.values())  # no duplicates
    assert not list(out.glob(".index.rank*"))


def test_index_parts_of_a_killed_run_are_merged(tree: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    run(capsys, tree, "--out", out, *RANDOM)
    index = (out / "index.jsonl").read_text()
    (out / "index.jsonl").unlink()
    # A killed run leaves its part (here: two lines, the last one torn) and no merged index.
    torn = index.splitlines()[0] + "\n" + index.splitlines()[1][:20]
    (out / ".index.rank1.jsonl").write_text(torn)
    (out / "a.npy").unlink()
    rc, text = run(capsys, tree, "--out", out, *RANDOM)
    assert "extracted 1, skipped 2, failed 4" in text
    outputs = [r["output"] for r in index_lines(out)]
    assert len(outputs) == len(set(outputs)) and "a.npy" in outputs
    assert not list(out.glob(".index.rank*"))


def test_unwritable_out_is_checked_once_up_front(tree: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where a folder should be")
    rc, text = run(capsys, tree, "--out", blocker / "out", *RANDOM)
    assert rc == 2 and "Traceback" not in text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot write to --out" in lines[0] and "file.txt" in lines[0]


def test_help_offers_only_packaged_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def model_help() -> str:
        with pytest.raises(SystemExit):
            main(["extract", "--help"])
        text = " ".join(capsys.readouterr().out.split())
        text = text[text.index("options:") :]
        return text[text.index("--model MODEL") : text.index("--random-init ")]

    assert model_help().startswith("--model MODEL pase+ (packaged pretrained weights)")
    assert "pase |" not in model_help()  # no PASE v1 weights are packaged
    monkeypatch.setattr("pase.hub.PRETRAINED_DIR", tmp_path)  # an installation without weights
    assert "packaged" not in model_help()


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tree: Path, tmp_path: Path) -> None:
    for i in range(5):  # enough good files that both ranks get several
        sf.write(tree / f"extra{i}.wav", synth_speechlike(0.3 + 0.1 * i, 16000, seed=20 + i), 16000)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    single = tmp_path / "single"
    multi = tmp_path / "multi"
    args = ["extract", str(tree), *RANDOM]
    one = subprocess.run(
        [sys.executable, "-m", "pase.cli", *args, "--out", str(single)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

    def launch() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*torchrun, "-m", "pase.cli", *args, "--out", str(multi)],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip

    two = launch()
    assert one.returncode == two.returncode == 1, two.stderr
    # torchrun itself prints a ChildFailedError report when ranks exit 1; none of our code may raise.
    # Our package's frames only: a clone at .../pase/ also puts torch's own frames under /pase/.
    assert f'File "{ROOT / "pase"}{os.sep}' not in two.stderr, two.stderr
    assert "extracted 8, skipped 0, failed 4" in two.stderr
    assert two.stderr.count("extracted 8") == 1  # the summary covers both ranks, printed once
    for name in BAD:  # each bad file is reported by the one rank that met it
        assert sum(str(tree / name) in line for line in two.stderr.splitlines()) == 1, name
    outputs = sorted(p.relative_to(single).as_posix() for p in single.rglob("*.npy"))
    assert outputs == sorted(p.relative_to(multi).as_posix() for p in multi.rglob("*.npy"))
    for rel in outputs:
        # Shards batch equal-length short files differently: equal up to float rounding.
        np.testing.assert_allclose(np.load(single / rel), np.load(multi / rel), atol=1e-5, rtol=0)
    records = sorted((r["output"], r["frames"]) for r in index_lines(multi))
    assert records == sorted((r["output"], r["frames"]) for r in index_lines(single))  # one line each
    assert not list(multi.glob(".index.rank*"))

    again = launch()  # resumable: a rerun of the whole job skips everything that exists
    assert "extracted 0, skipped 8, failed 4" in again.stderr
    assert len(index_lines(multi)) == 8


def test_all_layers_npy_and_safetensors(tmp_path: Path, capsys) -> None:
    from safetensors.numpy import load_file

    wav_path = tmp_path / "x.wav"
    sf.write(wav_path, synth_speechlike(0.8, 22050, seed=7), 22050)
    frames = num_frames(len(load_audio(wav_path)))
    assert run(capsys, wav_path, "--out", tmp_path / "f", *RANDOM)[0] == 0
    assert run(capsys, wav_path, "--out", tmp_path / "n", "--layers", "all", *RANDOM)[0] == 0
    rc, _ = run(
        capsys,
        wav_path,
        "--out",
        tmp_path / "s",
        "--layers",
        "all",
        "--format",
        "safetensors",
        *RANDOM,
    )
    assert rc == 0

    final = np.load(tmp_path / "f" / "x.npy")
    stacked = np.load(tmp_path / "n" / "x.npy")
    assert stacked.shape == (9, frames, 256)
    np.testing.assert_allclose(stacked[-1], final, atol=1e-5)
    tensors = load_file(tmp_path / "s" / "x.safetensors")
    assert sorted(tensors) == sorted(f"layer_{i}" for i in range(9))
    for i in range(9):
        np.testing.assert_allclose(tensors[f"layer_{i}"], stacked[i], atol=1e-5)
    assert index_lines(tmp_path / "s")[0]["shape"] == [9, frames, 256]


def test_list_files(tree: Path, tmp_path: Path, capsys) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "files.txt").write_text(f"# good and missing\n../in/a.flac\n\n{tree / 'sub' / 'b.wav'}\n")
    (lists / "more.lst").write_text("../in/sub/deeper/c.wav\nmissing.wav\n")
    out = tmp_path / "out"
    rc, text = run(capsys, f"@{lists / 'files.txt'}", lists / "more.lst", "--out", out, *RANDOM)
    assert rc != 0 and "extracted 3, skipped 0, failed 1" in text
    assert sorted(p.name for p in out.glob("*.npy")) == ["a.npy", "b.npy", "c.npy"]
    missing = [line for line in text.splitlines() if "missing.wav" in line]
    assert len(missing) == 1 and "no such file" in missing[0]


def test_same_stem_from_two_file_inputs_fails_once(tmp_path: Path, capsys) -> None:
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        sf.write(tmp_path / d / "s.wav", synth_speechlike(0.3, 16000, seed=8), 16000)
    rc, text = run(capsys, tmp_path / "x/s.wav", tmp_path / "y/s.wav", "--out", tmp_path / "o", *RANDOM)
    assert rc != 0 and "extracted 1, skipped 0, failed 1" in text
    assert sum(str(tmp_path / "y/s.wav") in line for line in text.splitlines()) == 1


def test_outputs_equal_encoder(tmp_path: Path, encoder: Encoder) -> None:
    lengths = {"short.wav": 9000, "mid.wav": 12345, "long.wav": 16000}
    for name, n in lengths.items():
        sf.write(tmp_path / name, synth_speechlike(n / 16000, 16000, seed=n), 16000)
    inputs = [tmp_path / name for name in lengths]

    def reference(name: str) -> np.ndarray:
        wav = torch.from_numpy(load_audio(tmp_path / name))[None]
        with torch.inference_mode():
            return encoder(wav)[0].numpy()

    single = extract_files(inputs, tmp_path / "one", encoder, batch_size=1)
    assert single.extracted == 3 and single.ok
    for name in lengths:
        np.testing.assert_allclose(
            np.load(tmp_path / "one" / f"{Path(name).stem}.npy"), reference(name), atol=1e-5
        )

    # In a padded batch only the frames whose receptive field reaches the padding may differ.
    batched = extract_files(inputs, tmp_path / "batch", encoder, batch_size=3)
    assert batched.extracted == 3
    edge = Encoder.receptive_frames + 1
    for name in lengths:
        got = np.load(tmp_path / "batch" / f"{Path(name).stem}.npy")
        ref = reference(name)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got[:-edge], ref[:-edge], atol=1e-4)

    # Files over long_seconds (here mid and long) are streamed in windows, even inside a batch,
    # and still match whole-file features.
    streamed = extract_files(
        inputs, tmp_path / "long", encoder, batch_size=3, long_seconds=0.7, window_seconds=0.3
    )
    assert streamed.extracted == 3
    for name in lengths:
        got = np.load(tmp_path / "long" / f"{Path(name).stem}.npy")
        np.testing.assert_allclose(got, reference(name), atol=1e-4)


def test_cpu_default_batches_short_files_of_equal_frame_count(tmp_path: Path, encoder: Encoder) -> None:
    """0.4 s files: same ceil(T / 160) share a batch, so each output still equals encoder(wav)."""
    lengths = {"a": 6400, "b": 6400, "c": 6290, "d": 6333, "e": 5000, "f": 40000}  # 40, 40, 40, 40, 32, 250
    for name, n in lengths.items():
        sf.write(tmp_path / f"{name}.wav", synth_speechlike(n / 16000, 16000, seed=n % 97), 16000)
    batch_sizes: list[int] = []
    hook = encoder.register_forward_pre_hook(lambda m, args: batch_sizes.append(args[0].shape[0]))
    try:
        summary = extract_files([tmp_path / f"{n}.wav" for n in lengths], tmp_path / "o", encoder)
    finally:
        hook.remove()
    assert summary.extracted == 6
    assert sorted(batch_sizes) == [1, 1, 4]  # a-d together; e and the 2.5 s file alone
    for name in lengths:
        with torch.inference_mode():
            ref = encoder(torch.from_numpy(load_audio(tmp_path / f"{name}.wav"))[None])[0].numpy()
        np.testing.assert_allclose(np.load(tmp_path / "o" / f"{name}.npy"), ref, atol=1e-5, rtol=0)


def test_num_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from pase.extract import auto_num_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert auto_num_threads([0.4] * 9 + [30.0]) == 1  # mostly short files
    assert auto_num_threads([10.0, 12.0, 0.5]) == 8
    assert auto_num_threads([10.0], processes_here=3) == 2  # torchrun: the cores are shared
    before = torch.get_num_threads()
    sf.write(tmp_path / "w.wav", synth_speechlike(0.4, 16000, seed=3), 16000)
    try:
        torch.set_num_threads(2)
        rc, _ = run(capsys, tmp_path / "w.wav", "--out", tmp_path / "o", *RANDOM)
        assert rc == 0 and torch.get_num_threads() == 1  # auto, short file
        rc, _ = run(capsys, tmp_path / "w.wav", "--out", tmp_path / "o2", "--num-threads", "3", *RANDOM)
        assert rc == 0 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit):
        main(["extract", str(tmp_path), "--out", str(tmp_path / "o3"), "--num-threads", "0"])
    assert "--num-threads: must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["dir", "ckpt"])
def test_model_from_directory_or_original_checkpoint(
    tmp_path: Path, encoder: Encoder, kind: str, capsys
) -> None:
    from pase.hub import ours_to_original

    if kind == "dir":
        model = encoder.save_pretrained(tmp_path / "model")
    else:
        model = tmp_path / "FE_e199.ckpt"
        torch.save(ours_to_original(encoder.state_dict()), model)
    sf.write(tmp_path / "w.wav", synth_speechlike(1.0, 16000, seed=10), 16000)
    rc, text = run(capsys, tmp_path / "w.wav", "--out", tmp_path / "o", "--model", model)
    assert rc == 0 and "WARNING" not in text
    with torch.inference_mode():
        ref = encoder(torch.from_numpy(load_audio(tmp_path / "w.wav"))[None])[0].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "o" / "w.npy"), ref, atol=1e-5)


def test_progress_bar_reports_rate_and_real_time(tmp_path: Path, encoder: Encoder, capsys) -> None:
    sf.write(tmp_path / "p.wav", synth_speechlike(0.5, 16000, seed=9), 16000)
    summary = extract_files([tmp_path / "p.wav"], tmp_path / "o", encoder, progress=True)
    err = capsys.readouterr().err
    assert summary.extracted == 1
    assert "file/s" in err and "x real time" in err


def test_model_that_cannot_load_is_one_line(tmp_path: Path, capsys) -> None:
    rc, text = run(capsys, tmp_path, "--out", tmp_path / "o", "--model", tmp_path / "nope")
    assert rc == 2 and "Traceback" not in text
    assert len([line for line in text.splitlines() if "cannot load model" in line]) == 1


def test_subprocess_has_no_traceback(tree: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pase", "extract", str(tree), "--out", str(tmp_path / "o"), *RANDOM],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "extracted 3, skipped 0, failed 4" in proc.stderr


@pytest.mark.realdata
def test_real_speech_list(speech_dir: Path, tmp_path: Path, encoder: Encoder) -> None:
    files = [
        *sorted((speech_dir / "fsdd").glob("*.flac"))[:2],  # 8 kHz
        *sorted((speech_dir / "librispeech" / "test-other").rglob("*.flac"))[:2],
    ]
    (tmp_path / "list.txt").write_text("".join(f"{f}\n" for f in files))
    summary = extract_files([f"@{tmp_path / 'list.txt'}"], tmp_path / "o", encoder)
    assert summary.extracted == len(files) and summary.ok
    records = {r["output"]: r for r in index_lines(tmp_path / "o")}  # in processing order
    assert len(records) == len(files)
    for f in files:
        record = records[f"{f.stem}.npy"]
        feats = np.load(tmp_path / "o" / f"{f.stem}.npy")
        assert feats.shape == (num_frames(len(load_audio(f))), 256) == (record["frames"], 256)
        assert np.isfinite(feats).all() and feats.std() > 0
