"""Tasks of ``pase eval``: manifests, lablaut parsing, phone mapping, splits (real file lists)."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
from conftest import synth_speechlike

from pase.eval import tasks
from pase.eval.tasks import (
    BUILTIN_TASKS,
    IGNORE,
    Item,
    Segment,
    Task,
    TaskError,
    builtin_task,
    frame_labels,
    load_manifest,
    read_lablaut,
    sampa_to_phone,
    with_valid_split,
)


def _wav(path: Path, seconds: float = 0.3, seed: int = 0) -> str:
    sf.write(path, synth_speechlike(seconds, 16000, seed), 16000)
    return path.name


def test_manifest_reads_rows_relative_to_csv_and_reports_bad_rows_by_line(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    names = [_wav(audio / f"{i}.wav", seed=i) for i in range(4)]
    (audio / "broken.wav").write_bytes(b"not audio at all")
    csv = tmp_path / "tasks.csv"
    csv.write_text(
        "path,label,split\n"
        f"audio/{names[0]},yes,train\n"  # line 2
        f"audio/{names[1]},no,train\n"  # line 3
        f"audio/{names[2]},yes,test\n"  # line 4
        f"audio/{names[3]},no,validation\n"  # line 5: bad split
        "audio/missing.wav,no,test\n"  # line 6: no such file
        "audio/broken.wav,no,test\n"  # line 7: undecodable
        f"audio/{names[3]},,train\n"  # line 8: empty label
        f"{(audio / names[3]).resolve()},no,valid\n"  # line 9: absolute path is fine
    )
    warnings: list[str] = []
    task = load_manifest(csv, warn=warnings.append)
    assert [(it.path.name, it.label, it.split) for it in task.items] == [
        (names[0], "yes", "train"),
        (names[1], "no", "train"),
        (names[2], "yes", "test"),
        (names[3], "no", "valid"),
    ]
    assert task.items[0].path == audio / names[0]
    assert task.classes == ["no", "yes"]
    assert [w.split(": ")[0] for w in warnings] == [f"{csv}:{n}" for n in (5, 6, 7, 8)]
    assert "validation" in warnings[0] and "no such file" in warnings[1]


def test_manifest_without_test_rows_or_header_is_a_clear_error(tmp_path: Path) -> None:
    name = _wav(tmp_path / "a.wav")
    csv = tmp_path / "t.csv"
    csv.write_text(f"path,label,split\n{name},x,train\n")
    with pytest.raises(TaskError, match=r"t\.csv: no usable train and test rows"):
        load_manifest(csv, warn=lambda _: None)
    csv.write_text(f"file,label,split\n{name},x,train\n")
    with pytest.raises(TaskError, match=r"t\.csv:1: .*missing path"):
        load_manifest(csv)
    with pytest.raises(TaskError, match="not found"):
        load_manifest(tmp_path / "absent.csv")


def test_valid_split_is_stratified_and_fixed(tmp_path: Path) -> None:
    items = [Item(Path(f"{c}{i}.wav"), c, "train") for c in "ab" for i in range(20)]
    items += [Item(Path("t.wav"), "a", "test"), Item(Path("u.wav"), "b", "test")]
    task = Task("m", items, ["a", "b"])
    split = with_valid_split(task)
    valid = split.split("valid")
    assert sorted(it.label for it in valid) == ["a"] * 3 + ["b"] * 3
    assert split.split("test") == task.split("test")
    assert with_valid_split(task).items == split.items
    assert with_valid_split(split) is split


@pytest.mark.parametrize(
    ("label", "phone"),
    [("_t", "t"), ("!t", "t"), ("tasp", "t"), ("tasp+sth", "t"), ("g-sth", "g"), ("a", "a"),
     ("i6", "i"), (".", "sil"), ("?", "Q"), ("4", "r"), ("X", "x"), ("nn", "n"), ("aI", "aI"),
     ("+hoe", None), ("(gef", None), ("", None), ("!", None), ("e@", None)],
)  # fmt: skip
def test_sampa_folding(label: str, phone: str | None) -> None:
    assert sampa_to_phone(label) == phone


def test_read_lablaut_folds_skips_and_clips_at_audio_end(tmp_path: Path) -> None:
    path = tmp_path / "x.lablaut"
    path.write_text(
        "signal x\nnfields 1\n#\n"
        "    0.050000   -1 _t\n"
        "    0.080000   -1 !t\t+asp\n"
        "    0.150000   -1 \t+hoe\n"  # annotation only: no phone, but time still advances
        "    0.300000   -1 a\n"
        "    2.400000   -1 n\n"  # runs past the 2 s audio
        "    2.600000   -1 .\n"  # starts after the audio: dropped
    )
    segs = read_lablaut(path, max_seconds=2.0)
    assert segs == (
        Segment(0.0, 0.05, "t"),
        Segment(0.05, 0.08, "t"),
        Segment(0.15, 0.3, "a"),
        Segment(0.3, 2.0, "n"),
    )
    item = Item(Path("x.wav"), "", "train", "s", segs)
    labels = frame_labels(item, 200, {"t": 0, "a": 1, "n": 2})
    assert labels.shape == (200,)
    assert (labels[:8] == 0).all() and (labels[8:15] == IGNORE).all()
    assert (labels[15:30] == 1).all() and (labels[30:] == 2).all()


@pytest.mark.realdata
@pytest.mark.parametrize("name", [n for n in BUILTIN_TASKS if n not in tasks.OPTIONAL_TASKS])
def test_builtin_splits_on_real_file_lists(name: str, speech_dir: Path) -> None:
    task = builtin_task(name, speech_dir)
    parts = {p: task.split(p) for p in ("train", "valid", "test")}
    assert all(parts.values()), f"{name}: empty part"
    speakers = {p: {it.speaker for it in items} for p, items in parts.items()}
    if name in ("ravdess-emotion", "emodb-emotion", "emodb-phone"):
        # the label is not the speaker: no speaker may be in two parts
        assert not speakers["train"] & speakers["test"]
        assert not speakers["valid"] & (speakers["train"] | speakers["test"])
        assert task.speaker_disjoint
    else:
        # speaker ID and the official FSDD split: every speaker in every part
        assert speakers["train"] == speakers["test"] == speakers["valid"]
    if not task.frame_level:
        # every class is trained and tested
        assert {it.label for it in parts["train"]} == {it.label for it in parts["test"]} == set(task.classes)


@pytest.mark.realdata
def test_builtin_split_sizes(speech_dir: Path) -> None:
    fsdd = builtin_task("fsdd-digit", speech_dir)
    assert len(fsdd.classes) == 10 and len(fsdd.split("test")) == 300
    assert all(int(it.path.stem.split("_")[2]) < 5 for it in fsdd.split("test"))
    assert len(builtin_task("ravdess-speaker", speech_dir).classes) == 24
    assert len(builtin_task("ravdess-emotion", speech_dir).classes) == 8
    assert len(builtin_task("emodb-emotion", speech_dir).classes) == 7
    libri = builtin_task("librispeech-speaker", speech_dir)
    assert len(libri.classes) == 10 and len(libri.split("test")) == 20
    phone = builtin_task("emodb-phone", speech_dir)
    stems = {it.path.stem for it in phone.items}
    assert "14b09Ea" in stems  # its label file lacks the xx suffix
    assert not {"08a01Wa", "08a01Ab"} & stems  # label files without segments
    assert all(seg.end <= 2.0 + 1e-6 for it in phone.items for seg in it.segments)
    used = {seg.label for it in phone.items for seg in it.segments}
    assert used <= set(phone.classes) and len(used) >= 35


def test_missing_data_folder_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="fsdd"):
        builtin_task("fsdd-digit", tmp_path)
    # and says how to get the corpus: the data command for it, whose corpus names match the tasks'
    for task, corpus in (("emodb-phone", "emodb"), ("ravdess-speaker", "ravdess")):
        how = rf"`pase data prepare {corpus} DOWNLOAD --out DIR`.*docs/data\.md"
        with pytest.raises(TaskError, match=how):
            builtin_task(task, tmp_path)
    with pytest.raises(TaskError, match="unknown task"):
        builtin_task("timit", tmp_path)
