"""Fault injection for ``pase extract``, ``pase eval`` and audio input (issue 31, items 3, 4, 7-10):
absurd audio, a full disk, a crash between an output and its index line, concurrent index writers,
and options or files that must be one-line errors."""

from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import synth_speechlike

import pase.audio
import pase.extract
import pase.extract.core
import pase.extract.index
import pase.extract.writers
from pase.audio import AudioError, load_audio, read_blocks
from pase.cli import main
from pase.eval.__main__ import main as eval_main

ROOT = Path(__file__).resolve().parents[1]
RANDOM = ["--random-init", "--seed", "0", "--no-progress", "--num-threads", "1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, list[str]]:
    rc = main(["extract", *map(str, args)])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text
    return rc, [line for line in text.splitlines() if line.strip() and "WARNING: random-init" not in line]


def index_outputs(out: Path) -> list[str]:
    return [json.loads(line)["output"] for line in (out / "index.jsonl").read_text().splitlines()]


def wavs(root: Path, n: int = 2, seconds: float = 0.5) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sf.write(root / f"f{i}.wav", synth_speechlike(seconds, seed=i), 16000)
    return root


# -- item 3: finite audio whose features are not ----------------------------------------------


def test_huge_samples_are_a_bad_file_in_extract(tmp_path: Path, capsys) -> None:
    src = wavs(tmp_path / "in")
    sf.write(src / "huge.wav", synth_speechlike(0.5, seed=9) * 1.5e38, 16000, subtype="FLOAT")
    out = tmp_path / "out"
    rc, lines = run(capsys, src, "--out", out, *RANDOM)
    assert rc == 1
    assert any(str(src / "huge.wav") in line and "NaN or Inf" in line for line in lines), lines
    assert "extracted 2, skipped 0, failed 1" in lines[-1]
    assert not (out / "huge.npy").exists() and sorted(index_outputs(out)) == ["f0.npy", "f1.npy"]


@pytest.mark.parametrize("features", ["mfcc", "fbank", "pase+"])
def test_huge_samples_are_skipped_files_in_eval(tmp_path: Path, capsys, features: str) -> None:
    rows = ["path,label,split"]
    for i in range(8):
        split = "train" if i < 6 else "test"
        t = np.arange(4800) / 16000
        sf.write(tmp_path / f"v{i}.wav", synth_speechlike(0.3, seed=i), 16000)
        sf.write(
            tmp_path / f"t{i}.wav", (0.3 * np.sin(2 * np.pi * (3000 + 50 * i) * t)).astype(np.float32), 16000
        )
        rows += [f"v{i}.wav,voiced,{split}", f"t{i}.wav,tone,{split}"]
    sf.write(tmp_path / "huge.wav", synth_speechlike(0.3, seed=9) * 1.5e38, 16000, subtype="FLOAT")
    (tmp_path / "clean.csv").write_text("\n".join(rows) + "\n")
    rows.append("huge.wav,voiced,test")
    (tmp_path / "tasks.csv").write_text("\n".join(rows) + "\n")
    cache = ["--cache-dir", str(tmp_path / "cache"), "--num-threads", "1"]
    args = ["--features", features, "--seeds", "0", *cache]
    results = {}
    for manifest in ("clean", "tasks"):
        out = tmp_path / f"out-{manifest}"
        assert eval_main(["--manifest", str(tmp_path / f"{manifest}.csv"), *args, "--out", str(out)]) == 0
        results[manifest] = json.loads((out / "results.json").read_text())
    result = results["tasks"]
    assert results["clean"]["skipped_files"] == {} and result["skipped_files"] == {
        str(tmp_path / "huge.wav"): f"{features} features contain NaN or Inf (audio out of range?)"
    }
    line = f"pase eval: {tmp_path / 'huge.wav'}: {features} features contain NaN or Inf (audio out of range?)"
    assert f"{line}; file skipped\n" in capsys.readouterr().err
    # The other files are scored as without the huge one (the packaged pase+: all of them right).
    for key in ("accuracy", "macro_f1", "per_seed", "n_files", "classes"):
        assert result[key] == results["clean"][key], key
    assert result["n_files"]["test"] == 4 and (features != "pase+" or result["accuracy"] == 1.0)


# -- item 4: the index is the truth about the outputs -----------------------------------------


def test_full_disk_at_the_index_append_is_one_line_and_the_rerun_lists_the_output(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, out = wavs(tmp_path / "in", 1), tmp_path / "out"

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pase.extract.index, "_append_index", full)
    rc, lines = run(capsys, src, "--out", out, *RANDOM)
    assert rc == 1 and len(lines) == 2, lines
    assert "no space left on device" in lines[0] and "f0.npy" in lines[0]
    assert lines[1].startswith("pase extract: extracted 0, skipped 0, failed 1")
    assert (out / "f0.npy").exists()
    monkeypatch.undo()
    rc, lines = run(capsys, src, "--out", out, *RANDOM)
    assert rc == 0 and "extracted 0, skipped 1, failed 0" in lines[-1]
    assert index_outputs(out) == ["f0.npy"]


def test_full_disk_at_the_merge_still_prints_the_summary(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, out = wavs(tmp_path / "in", 1), tmp_path / "out"
    write_atomic = pase.extract.index.write_atomic

    def full_for_index(path: Path, write: object) -> None:
        if Path(path).name == "index.jsonl":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write_atomic(path, write)  # type: ignore[arg-type]

    monkeypatch.setattr(pase.extract.index, "write_atomic", full_for_index)
    rc, lines = run(capsys, src, "--out", out, *RANDOM)
    assert rc == 1 and len(lines) == 2, lines
    assert f"{out / 'index.jsonl'}: cannot write the index (no space left on device)" in lines[0]
    assert "pase extract: extracted 1, skipped 0, failed 1" in lines[1]
    monkeypatch.undo()
    run(capsys, src, "--out", out, *RANDOM)
    assert index_outputs(out) == ["f0.npy"] and not list(out.glob(".index.rank*"))


def test_full_disk_at_the_feature_write(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    src, out = wavs(tmp_path / "in", 1), tmp_path / "out"

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pase.extract.writers.os, "posix_fallocate", full)
    rc, lines = run(capsys, src, "--out", out, *RANDOM)
    assert rc == 1 and len(lines) == 2, lines
    assert lines[0] == f"{out / 'f0.npy'}: cannot write output (no space left on device)"
    assert not (out / "f0.npy").exists() and not list(out.glob(".f0.npy.tmp*"))


def test_file_size_limit_in_a_subprocess_is_one_line(tmp_path: Path) -> None:
    src, out = wavs(tmp_path / "in", 1, seconds=2.0), tmp_path / "out"
    out.mkdir()

    def limit() -> None:  # 200 frames x 256 x 4 bytes do not fit in 64 KiB
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))

    cmd = [sys.executable, "-m", "pase.cli", "extract", str(src), "--out", str(out), *RANDOM]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{out / 'f0.npy'}: cannot write output (file too large)" in proc.stderr
    assert "pase extract: extracted 0, skipped 0, failed 1" in proc.stderr


CRASH = """
import os, sys
import pase.extract.index as index
from pase import load_encoder
from pase.extract import extract_files
calls = []
append = index._append_index
def dying(out, record, rank=0):
    calls.append(record)
    if len(calls) == 3:
        os._exit(9)  # killed after the third output's rename, before its line
    append(out, record, rank)
index._append_index = dying
extract_files([sys.argv[1]], sys.argv[2], load_encoder("random:pase+:0", "cpu"), batch_size=1)
"""


def test_a_crash_between_the_rename_and_the_append_loses_no_line(tmp_path: Path, capsys) -> None:
    src, out = wavs(tmp_path / "in", 4, seconds=0.3), tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", CRASH, str(src), str(out)], env=ENV, timeout=300)
    assert proc.returncode == 9
    assert len(list(out.glob("*.npy"))) == 3
    rc, lines = run(capsys, src, "--out", out, *RANDOM)
    assert rc == 0 and "extracted 1, skipped 3, failed 0" in lines[-1]
    assert sorted(index_outputs(out)) == [f"f{i}.npy" for i in range(4)]


def test_a_line_whose_output_is_gone_is_dropped(tmp_path: Path, capsys) -> None:
    src, out = wavs(tmp_path / "in", 2, seconds=0.3), tmp_path / "out"
    run(capsys, src, "--out", out, *RANDOM)
    (out / "f0.npy").unlink()
    run(capsys, src / "f1.wav", "--out", out, *RANDOM)
    assert index_outputs(out) == ["f1.npy"]


WRITER = """
import sys
from pathlib import Path
from pase.extract.index import _append_index, merge_index
out, tag = Path(sys.argv[1]), sys.argv[2]
for i in range(300):
    name = f"{tag}{i}.npy"
    (out / name).touch()
    _append_index(out, {"output": name})
    if i % 7 == 0:
        merge_index(out)
merge_index(out)
"""


def test_two_processes_appending_and_merging_lose_no_entry(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(out), tag], env=ENV, stderr=subprocess.PIPE, text=True
        )
        for tag in ("a", "b")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    pase.extract.merge_index(out)
    outputs = index_outputs(out)
    assert len(outputs) == 600 == len(set(outputs))
    assert not list(out.glob(".index.rank*"))


# -- items 7-9: one-line messages, options validated up front ---------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "0.01", "inf", "nan"])
def test_window_seconds_out_of_range(tmp_path: Path, capsys, value: str) -> None:
    rc, lines = run(
        capsys, wavs(tmp_path / "in", 1), "--out", tmp_path / "out", "--window-seconds", value, *RANDOM
    )
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("pase extract: --window-seconds must be"), (
        lines
    )


def test_device_foo_names_the_option(tmp_path: Path, capsys) -> None:
    rc, lines = run(capsys, wavs(tmp_path / "in", 1), "--out", tmp_path / "out", "--device", "foo", *RANDOM)
    assert rc == 2 and len(lines) == 1, lines
    assert lines[0].startswith("pase extract: --device foo: not a device name") and "model" not in lines[0]


def test_a_folder_named_index_jsonl(tmp_path: Path, capsys) -> None:
    src = wavs(tmp_path / "index.jsonl", 1)
    rc, lines = run(capsys, src, "--out", tmp_path / "out", *RANDOM)
    assert rc == 0 and index_outputs(tmp_path / "out") == ["f0.npy"]
    (tmp_path / "out2" / "index.jsonl").mkdir(parents=True)
    rc, lines = run(capsys, src, "--out", tmp_path / "out2", *RANDOM)
    assert rc == 2 and len(lines) == 1 and "index.jsonl is not a file" in lines[0], lines


def test_eval_out_is_a_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "tasks.csv").write_text("path,label,split\n")
    (tmp_path / "file").write_text("x")
    rc = eval_main(["--manifest", str(tmp_path / "tasks.csv"), "--out", str(tmp_path / "file")])
    err = capsys.readouterr().err
    assert rc == 2 and err == f"pase eval: --out {tmp_path / 'file'}: is a file, not a folder\n"


def test_absurd_sample_rate_is_a_bad_file(tmp_path: Path) -> None:
    sf.write(tmp_path / "1hz.wav", synth_speechlike(0.5)[:100], 1)
    with pytest.raises(AudioError, match="implausible sample rate 1 Hz"):
        load_audio(tmp_path / "1hz.wav")
    with pytest.raises(AudioError, match="implausible sample rate 1 Hz"):
        read_blocks(tmp_path / "1hz.wav")


def test_files_that_are_not_regular_files(tmp_path: Path) -> None:
    (tmp_path / "zero.wav").symlink_to("/dev/zero")
    with pytest.raises(AudioError, match="is a character device, not an audio file"):
        load_audio(tmp_path / "zero.wav")
    (tmp_path / "dir.wav").mkdir()
    with pytest.raises(AudioError, match="is a directory, not an audio file"):
        load_audio(tmp_path / "dir.wav")
    os.mkfifo(tmp_path / "fifo.wav")
    with pytest.raises(AudioError, match="is a FIFO, not an audio file"):
        load_audio(tmp_path / "fifo.wav")


def test_an_unreadable_file_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.wav"
    sf.write(path, synth_speechlike(0.5), 16000)
    real_open = os.open

    def denied(p: object, *args: int, **kwargs: int) -> int:
        if Path(str(p)) == path:  # what chmod 000 does, for a test that may run as root
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(p))
        return real_open(p, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pase.audio.os, "open", denied)
    with pytest.raises(AudioError, match=r"locked.wav: cannot read file \(permission denied\)"):
        load_audio(path)


def test_manifest_rows_name_directories_and_devices(tmp_path: Path, capsys) -> None:
    from pase.eval.tasks import load_manifest

    (tmp_path / "dir.wav").mkdir()
    (tmp_path / "dev.wav").symlink_to("/dev/null")
    sf.write(tmp_path / "a.wav", synth_speechlike(0.5), 16000)
    rows = "path,label,split\na.wav,x,train\na.wav,x,test\ndir.wav,x,train\ndev.wav,x,test\n"
    (tmp_path / "m.csv").write_text(rows)
    load_manifest(tmp_path / "m.csv")
    err = capsys.readouterr().err
    assert "dir.wav: is a directory, not an audio file, row skipped" in err
    assert "dev.wav: is a character device, not an audio file, row skipped" in err
    assert "no such file" not in err


# -- item 10: long files are read and written in pieces ---------------------------------------


def test_streamed_blocks_equal_the_whole_file(tmp_path: Path) -> None:
    wav = np.stack([synth_speechlike(3.3, 44100, seed=1), synth_speechlike(3.3, 44100, seed=2)], 1)
    sf.write(tmp_path / "s.flac", wav, 44100)
    expected, blocks = read_blocks(tmp_path / "s.flac", block_frames=10000)
    streamed = np.concatenate(list(blocks))
    whole = load_audio(tmp_path / "s.flac")
    assert expected == len(whole) and np.array_equal(streamed, whole)


@pytest.mark.parametrize("layers", ["final", "all"])
def test_long_files_stream_to_the_same_output(tmp_path: Path, layers: str, monkeypatch) -> None:
    from pase import load_encoder

    encoder = load_encoder("random:pase+:0", "cpu")
    sf.write(tmp_path / "long.wav", synth_speechlike(2.5, 8000, seed=3), 8000)
    whole = pase.extract.extract_files([tmp_path / "long.wav"], tmp_path / "whole", encoder, layers=layers)
    calls = []
    streamed = pase.extract.core.extract_streamed

    def spy(*args: object) -> tuple[tuple[int, ...], int]:
        calls.append(args)
        return streamed(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(pase.extract.core, "extract_streamed", spy)
    summary = pase.extract.extract_files(
        [tmp_path / "long.wav"],
        tmp_path / "long",
        encoder,
        layers=layers,
        long_seconds=1.0,
        window_seconds=0.5,
    )
    assert whole.ok and summary.ok and len(calls) == 1
    a, b = np.load(tmp_path / "whole" / "long.npy"), np.load(tmp_path / "long" / "long.npy")
    assert a.shape == b.shape and np.allclose(a, b, atol=1e-4)
    assert index_outputs(tmp_path / "long") == ["long.npy"]
