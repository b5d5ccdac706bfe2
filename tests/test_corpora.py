"""``pase data prepare``: tiny synthetic downloads in each corpus's official layout (rate,
format, archive type) become what the built-in eval tasks read; wrong or damaged downloads
are one-line errors; a rerun keeps what is there. Also runs every command of docs/data.md."""

from __future__ import annotations

import io
import os
import tarfile
import typing as tp
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import synth_speechlike
from test_readme import readme_blocks, shell_commands

from pase.cli import build_parser, main
from pase.corpora import CorpusError, prepare
from pase.eval.tasks import builtin_task
from pase.rirs import NoiseBank, RirBank

ROOT = Path(__file__).resolve().parents[1]
Files = dict[str, bytes]


def audio(seconds: float, sr: int, seed: int = 0, fmt: str = "WAV", channels: int = 1) -> bytes:
    wav = synth_speechlike(seconds, sr, seed)
    data = np.stack([wav] * channels, axis=1) if channels > 1 else wav
    buf = io.BytesIO()
    sf.write(buf, data, sr, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def write_zip(path: Path, files: Files) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def write_targz(path: Path, files: Files) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def write_folder(path: Path, files: Files) -> Path:
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


# ----------------------------------------------------------------------------- official layouts
def ravdess_files() -> Files:
    """Audio_Speech_Actors_01-24.zip: 48 kHz WAVs; actors of each emotion-task part, and in
    each actor's files one of the speaker task's test part (statement 02, repetition 02)."""
    files = {}
    for k, actor in enumerate(("01", "02", "17", "19", "20")):
        for emotion, statement, rep in (("01", "02", "02"), ("05", "01", "01")):
            name = f"03-01-{emotion}-01-{statement}-{rep}-{actor}.wav"
            files[f"Actor_{actor}/{name}"] = audio(0.5, 48000, k, channels=2 if actor == "17" else 1)
    return files


LABLAUT = (
    "signal x\ntype 0\nseparator ;\nnfields 1\n#\n"
    "    0.30 -1 .\n    0.80 -1 a\n    1.20 -1 _t\n    1.60 -1 !t\t+asp\n"
)


def emodb_files() -> Files:
    """download.zip: 16 kHz WAVs under wav/, label folders, two text files at the top."""
    files = {"erkennung.txt": b"x", "erklaerung.txt": b"x"}
    for k, stem in enumerate(("03a01Fa", "08a02Wb", "12a01Nc", "15b01Ta", "16b02La")):
        files[f"wav/{stem}.wav"] = audio(2.5, 16000, k)
        files[f"lablaut/{stem}xx.lablaut"] = LABLAUT.encode("latin-1")
        files[f"silb/{stem}.silb"] = b"0.5\tder\n"
        files[f"labsilb/{stem}xx.labsilb"] = LABLAUT.encode("latin-1")
    return files


def fsdd_files() -> Files:
    """The GitHub repository (clone or ZIP): 8 kHz WAVs under recordings/."""
    files = {"README.md": b"# FSDD"}
    for digit in "01":
        for speaker in ("jackson", "theo"):
            for index in (0, 5, 12):  # test, valid, train
                files[f"recordings/{digit}_{speaker}_{index}.wav"] = audio(0.3, 8000, index)
    return files


def librispeech_files(subset: str, speakers: list[str], utterances: int, chapter: str = "100") -> Files:
    """openslr's SUBSET.tar.gz: LibriSpeech/SUBSET/SPK/CHAPTER/*.flac + transcripts, top files."""
    top = "LibriSpeech"
    files = {
        f"{top}/{name}": f"{name}\n".encode() for name in ("SPEAKERS.TXT", "CHAPTERS.TXT", "LICENSE.TXT")
    }
    for k, spk in enumerate(speakers):
        folder = f"{top}/{subset}/{spk}/{chapter}"
        lines = []
        for u in range(utterances):
            utt = f"{spk}-{chapter}-{u:04d}"
            files[f"{folder}/{utt}.flac"] = audio(0.2, 16000, k, fmt="FLAC")
            lines.append(f"{utt} HELLO {chr(65 + u)}")
        files[f"{folder}/{spk}-{chapter}.trans.txt"] = ("\n".join(lines) + "\n").encode()
    return files


def noise_files() -> Files:
    """speech_commands_v0.02.tar.gz: keyword folders and ./_background_noise_/ (16 kHz)."""
    return {
        "./_background_noise_/white_noise.wav": audio(1.0, 16000, 1),
        "./_background_noise_/running_tap.wav": audio(1.5, 16000, 2),
        "./_background_noise_/README.md": b"noises",
        "./yes/0a7c2a8d_nohash_0.wav": audio(1.0, 16000, 3),
        "./LICENSE": b"CC BY 4.0",
    }


def rir_files() -> Files:
    return {"hall/a.wav": audio(0.4, 48000, 1, channels=2), "b.wav": audio(0.3, 16000, 2)}


# ----------------------------------------------------------------------------- each corpus
def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main(["--no-progress", "data", "prepare", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_ravdess_zip_becomes_both_ravdess_tasks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_zip(tmp_path / "Audio_Speech_Actors_01-24.zip", ravdess_files())
    code, out, err = run(capsys, "ravdess", src, "--out", tmp_path / "d")
    assert code == 0, err
    where = tmp_path / "d" / "ravdess"
    assert out.strip() == f"ravdess: 10 audio files (10 new, 0 already there), 0.00 h, 5 speakers in {where}"
    assert "10 of the 1440 files" in err
    flac = tmp_path / "d" / "ravdess" / "03-01-05-01-01-01-17.flac"
    info = sf.info(str(flac))
    assert (info.samplerate, info.channels, info.frames) == (16000, 1, 8000)
    emotion = builtin_task("ravdess-emotion", tmp_path / "d")
    assert {(it.path.name, it.label, it.split) for it in emotion.items if it.speaker == "19"} == {
        ("03-01-01-01-02-02-19.flac", "neutral", "test"),
        ("03-01-05-01-01-01-19.flac", "angry", "test"),
    }
    speaker = builtin_task("ravdess-speaker", tmp_path / "d")
    assert speaker.classes == ["actor01", "actor02", "actor17", "actor19", "actor20"]
    assert len(speaker.split("test")) == 5


def test_emodb_zip_keeps_labels_and_full_length(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_zip(tmp_path / "download.zip", emodb_files())
    code, out, _ = run(capsys, "emodb", src, "--out", tmp_path / "d")
    assert code == 0 and "emodb: 5 audio files (5 new" in out and "5 speakers" in out
    emodb = tmp_path / "d" / "emodb"
    assert sorted(p.name for p in emodb.iterdir()) == ["lablaut", "labsilb", "silb", "wav"]
    assert (emodb / "lablaut" / "03a01Faxx.lablaut").read_text(encoding="latin-1") == LABLAUT
    assert sf.info(str(emodb / "wav" / "03a01Fa.flac")).duration == 2.5
    emotion = builtin_task("emodb-emotion", tmp_path / "d")
    assert {(it.speaker, it.label, it.split) for it in emotion.items} == {
        ("03", "happiness", "train"), ("08", "anger", "train"), ("12", "neutral", "valid"),
        ("15", "sadness", "test"), ("16", "boredom", "test"),
    }  # fmt: skip
    phone = builtin_task("emodb-phone", tmp_path / "d")
    assert [(s.end, s.label) for s in phone.items[0].segments] == [
        (0.3, "sil"),
        (0.8, "a"),
        (1.2, "t"),
        (1.6, "t"),
    ]


def test_fsdd_clone_folder_stays_at_8_khz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_folder(tmp_path / "free-spoken-digit-dataset", fsdd_files())
    code, out, _ = run(capsys, "fsdd", src, "--out", tmp_path / "d")
    assert code == 0 and "fsdd: 12 audio files" in out and "2 speakers" in out
    original, _ = sf.read(str(src / "recordings" / "1_theo_5.wav"), dtype="int16")
    copied, sr = sf.read(str(tmp_path / "d" / "fsdd" / "1_theo_5.flac"), dtype="int16")
    assert sr == 8000 and np.array_equal(original, copied)  # lossless, like the bundle
    task = builtin_task("fsdd-digit", tmp_path / "d")
    assert {(it.path.stem, it.split) for it in task.items if it.label == "1" and it.speaker == "theo"} == {
        ("1_theo_0", "test"), ("1_theo_5", "valid"), ("1_theo_12", "train"),
    }  # fmt: skip


def test_librispeech_tarballs_give_the_asr_and_speaker_tasks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d"
    # 367 and 533 sort after 3331 as text but come first by number, as in the real test-other
    other = ["367", "533", *map(str, range(1000, 1009)), "3331"]
    tarballs = {
        "test-clean": librispeech_files("test-clean", ["1089", "121", "237"], 5),
        "train-clean-5": librispeech_files("train-clean-5", ["1088", "1737"], 2),
        "test-other": librispeech_files("test-other", other, 11, chapter="1066"),
    }
    for subset, files in tarballs.items():
        code, out, err = run(
            capsys, "librispeech", write_targz(tmp_path / f"{subset}.tar.gz", files), "--out", data
        )
        assert code == 0, err
    assert out.startswith("librispeech/test-other: 100 audio files (100 new, 0 already there)")
    flac = data / "LibriSpeech" / "test-clean" / "121" / "100" / "121-100-0003.flac"
    assert flac.read_bytes() == tarballs["test-clean"]["LibriSpeech/test-clean/121/100/121-100-0003.flac"]
    assert (data / "LibriSpeech" / "SPEAKERS.TXT").is_file()
    assert (data / "librispeech" / "test-other" / "SPEAKERS.TXT").is_file()
    asr = builtin_task("librispeech-asr", data)
    assert [len(asr.split(p)) for p in ("train", "valid", "test")] == [2, 2, 15]
    assert asr.items[0].label == "hello a"
    assert len(builtin_task("librispeech-speaker40", data).split("test")) == 3
    speaker = builtin_task("librispeech-speaker", data)
    assert speaker.classes == sorted(other[:10])
    assert [it.path.name for it in speaker.items if it.label == "367"][-1] == "367-1066-0009.flac"


def test_noise_and_rirs_feed_the_distortions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pase.eval.cli import _distortion_dir

    data = tmp_path / "d"
    code, out, _ = run(
        capsys, "noise", write_targz(tmp_path / "speech_commands_v0.02.tar.gz", noise_files()), "--out", data
    )
    assert code == 0 and out.startswith("noise: 2 audio files")
    code, out, _ = run(capsys, "rir", write_folder(tmp_path / "my_rirs", rir_files()), "--out", data)
    assert code == 0 and out.startswith("rir: 2 audio files")
    assert sorted(p.relative_to(data).as_posix() for p in data.rglob("*.flac")) == [
        "noise/running_tap.flac", "noise/white_noise.flac", "rir/b.flac", "rir/hall/a.flac",
    ]  # fmt: skip
    assert len(NoiseBank.from_dir(data / "noise")) == 2 and len(RirBank.from_dir(data / "rir")) == 2
    assert _distortion_dir(data) == data


# ----------------------------------------------------------------------------- errors and reruns
@pytest.mark.parametrize(
    ("corpus", "files", "message"),
    [
        ("ravdess", emodb_files(), "not RAVDESS speech: no Actor_NN/03-01-EE-II-SS-RR-AA.wav files "
         "(Audio_Speech_Actors_01-24.zip) inside; it looks like EmoDB: run `pase data prepare emodb"),
        ("emodb", {k: v for k, v in emodb_files().items() if "lablaut" not in k},
         "EmoDB without its lablaut/ folder"),
        ("fsdd", {"recordings/0_theo_0.wav": b"RIFF not really a wav"},
         "recordings/0_theo_0.wav: cannot decode audio"),
        ("rir", fsdd_files(), "this is FSDD, not room impulse responses; run `pase data prepare fsdd"),
        ("librispeech", {"LibriSpeech/dev-clean/1/2/1-2-0000.flac": audio(0.2, 16000, fmt="FLAC")},
         "dev-clean has no SPK-CHAPTER.trans.txt transcripts"),
    ],
)  # fmt: skip
def test_wrong_or_damaged_downloads_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], corpus: str, files: Files, message: str
) -> None:
    src = write_zip(tmp_path / "download.zip", files)
    code, out, err = run(capsys, corpus, src, "--out", tmp_path / "d")
    assert (code, out) == (2, "")
    assert err.startswith(f"pase data prepare: {src}") and message in err and err.count("\n") == 1


def test_missing_unreadable_and_truncated_sources(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no such file or folder"):
        prepare("fsdd", tmp_path / "absent.zip", tmp_path / "d")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CorpusError, match="notes.txt: not a folder, a .zip or a .tar.gz archive"):
        prepare("fsdd", tmp_path / "notes.txt", tmp_path / "d")
    whole = write_targz(tmp_path / "whole.tar.gz", noise_files()).read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CorpusError, match="cut.tar.gz: damaged archive"):
        prepare("noise", tmp_path / "cut.tar.gz", tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_rerun_keeps_what_is_there_and_finishes_what_is_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_zip(tmp_path / "repo.zip", {f"fsdd-main/{k}": v for k, v in fsdd_files().items()})
    data = tmp_path / "d"
    assert run(capsys, "fsdd", src, "--out", data)[0] == 0
    kept = data / "fsdd" / "0_jackson_0.flac"
    os.utime(kept, (1, 1))
    (data / "fsdd" / "1_theo_12.flac").unlink()  # as if interrupted before this file
    code, out, _ = run(capsys, "fsdd", src, "--out", data)
    assert code == 0 and "12 audio files (1 new, 11 already there), 0.00 h, 2 speakers" in out
    assert kept.stat().st_mtime == 1 and (data / "fsdd" / "1_theo_12.flac").is_file()
    assert not list(data.rglob(".*tmp*"))


# ----------------------------------------------------------------------------- docs/data.md
DOWNLOADS: dict[str, tp.Callable[[Path], Path]] = {
    "Audio_Speech_Actors_01-24.zip": lambda p: write_zip(p, ravdess_files()),
    "download.zip": lambda p: write_zip(p, emodb_files()),
    "free-spoken-digit-dataset": lambda p: write_folder(p, fsdd_files()),
    "test-clean.tar.gz": lambda p: write_targz(p, librispeech_files("test-clean", ["1089", "121"], 5)),
    "test-other.tar.gz": lambda p: write_targz(p, librispeech_files("test-other", ["367", "533"], 10)),
    "train-clean-5.tar.gz": lambda p: write_targz(p, librispeech_files("train-clean-5", ["19", "26"], 2)),
    "speech_commands_v0.02.tar.gz": lambda p: write_targz(p, noise_files()),
    "rirs": lambda p: write_folder(p, rir_files()),
}


def test_every_docs_command_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``pase data prepare`` commands run on synthetic files named like the downloads; ``pase
    eval`` commands (minutes on real data) go through the real parser only."""
    text = (ROOT / "docs" / "data.md").read_text(encoding="utf-8")
    blocks = [b for b in readme_blocks(text) if b.lang == "bash"]
    commands = [words for block in blocks for words in shell_commands(block.text)]
    assert commands and all(words[0] == "pase" for words in commands)
    monkeypatch.chdir(tmp_path)
    for words in commands:
        if words[1:3] == ["data", "prepare"]:
            if not Path(words[4]).exists():
                DOWNLOADS[words[4]](tmp_path / words[4])
            assert main(["--no-progress", *words[1:]]) == 0, words
        else:
            assert words[1] == "eval", words
            build_parser("eval").parse_args(words[1:])
    assert {p.name for p in (tmp_path / "speech").iterdir()} >= {"ravdess", "emodb", "fsdd", "noise"}
