"""``pase data prepare CORPUS SRC --out DIR``: the official downloads of the evaluation corpora,
laid out as the speech bundle that ``pase eval --data DIR`` reads.

``SRC`` is the file as distributed (``.zip``, ``.tar.gz``) or the folder it extracts to. Each
corpus is recognised by the member names of its official layout (``Actor_01/03-01-...wav``), so
a wrong download is a one-line error that says which corpus it looks like instead. What is
written under ``DIR`` (docs/data.md has the sources and licences):

- ``ravdess/03-01-EE-II-SS-RR-AA.flac``: 16 kHz mono FLAC of the 48 kHz WAVs (a third of the
  samples to read; the bundle holds them at 16 kHz too);
- ``emodb/wav/*.flac`` (16 kHz, as distributed, full length) and the label folders
  ``lablaut/``, ``silb/``, ``labsilb/`` copied as they are;
- ``fsdd/DIGIT_SPEAKER_INDEX.flac``: FLAC at the original 8 kHz, like the bundle: readers
  resample on load, so features match the bundle's exactly;
- ``LibriSpeech/SUBSET/SPK/CHAPTER/`` for every subset but test-other: the standard layout the
  ASR and 40-speaker tasks find (:func:`pase.eval.tasks.librispeech_root`), FLAC and
  transcripts copied byte for byte;
- ``librispeech/test-other/SPK/*.flac``: the bundle's subset for ``librispeech-speaker``, the
  first :data:`SPEAKER_TASK_UTTERANCES` utterances of the :data:`SPEAKER_TASK_SPEAKERS`
  lowest-numbered speakers;
- ``noise/*.flac``: the Speech Commands background noises, 16 kHz;
- ``rir/**/*.flac``: any impulse responses, 16 kHz mono, keeping their sub-folders.

Every output file is written atomically, so a file that exists is complete: a rerun (after an
interruption, or with the next corpus) skips it without reading its source again.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import re
import sys
import tarfile
import typing as tp
import zipfile
import zlib
from pathlib import Path

import numpy as np

from pase.audio import AUDIO_EXTENSIONS, SAMPLE_RATE, resample, write_atomic

CORPORA = ("ravdess", "emodb", "fsdd", "librispeech", "noise", "rir")
TITLES = {
    "ravdess": "RAVDESS speech",
    "emodb": "EmoDB",
    "fsdd": "FSDD",
    "librispeech": "LibriSpeech",
    "noise": "Speech Commands background noise",
    "rir": "room impulse responses",
}
#: What each corpus's download holds, as the error for a wrong one names it.
EXPECTED = {
    "ravdess": "Actor_NN/03-01-EE-II-SS-RR-AA.wav files (Audio_Speech_Actors_01-24.zip)",
    "emodb": "wav/SSTTTEV.wav files (download.zip)",
    "fsdd": "recordings/DIGIT_SPEAKER_INDEX.wav files (the GitHub repository)",
    "librispeech": "SUBSET/SPK/CHAPTER/SPK-CHAPTER-UTT.flac files (e.g. test-clean.tar.gz)",
    "noise": "_background_noise_/*.wav files (speech_commands_v0.02.tar.gz)",
    "rir": "audio files",
}
#: Files of each complete official release; fewer is reported (the tasks' splits need them all).
OFFICIAL_FILES = {"ravdess": 1440, "emodb": 535, "noise": 6}
#: The ``librispeech-speaker`` subset of test-other (the bundle's): 10 speakers x 10 utterances.
SPEAKER_TASK_SPEAKERS = 10
SPEAKER_TASK_UTTERANCES = 10

_RAVDESS = re.compile(r"(?:^|/)Actor_\d\d/(03-01-\d\d-\d\d-\d\d-\d\d-(\d\d))\.wav$", re.IGNORECASE)
_EMODB_WAV = re.compile(r"(?:^|/)wav/((\d\d)[a-z]\d\d[A-Z][a-z])\.wav$")
_EMODB_LABELS = re.compile(r"(?:^|/)((?:lablaut|labsilb|silb)/[^/]+)$")
_FSDD = re.compile(r"(?:^|/)recordings/(\d_([a-z]+)_\d+)\.wav$")
_LS_SUBSET = r"(?:^|/)([a-z]+-[a-z]+(?:-\d+)?)/(\d+)/(\d+)/"
_LS_AUDIO = re.compile(_LS_SUBSET + r"(\2-\3-\d+)\.flac$")
_LS_TRANS = re.compile(_LS_SUBSET + r"(\2-\3)\.trans\.txt$")
_LS_TOP = re.compile(r"(?:^|/)LibriSpeech/([A-Z]+\.TXT)$")
_NOISE = re.compile(r"(?:^|/)_background_noise_/([^/]+)\.wav$")
_RECOGNISERS = {
    "ravdess": _RAVDESS,
    "emodb": _EMODB_WAV,
    "fsdd": _FSDD,
    "librispeech": _LS_AUDIO,
    "noise": _NOISE,
}


class CorpusError(ValueError):
    """A source that is not the corpus asked for, or is damaged; ``str(err)`` is one line that
    names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class Job:
    """One output file: from ``member`` of the source to ``out`` under DIR.

    Audio (``audio``) is decoded, checked and written as mono FLAC at ``rate`` (``None``: the
    source's own rate); a FLAC source that is already mono at that rate is copied byte for byte.
    Other files (labels, transcripts, speaker lists) are copied as they are.
    """

    member: str
    out: str
    audio: bool = True
    rate: int | None = SAMPLE_RATE
    speaker: str = ""
    #: The summary line this file counts in (a LibriSpeech subset, else the corpus).
    group: str = ""


@dataclasses.dataclass
class Summary:
    """What one prepared group of files holds."""

    name: str
    where: Path
    files: int = 0
    new: int = 0
    seconds: float = 0.0
    speakers: set[str] = dataclasses.field(default_factory=set)

    def line(self) -> str:
        kept = self.files - self.new
        who = f", {len(self.speakers)} speakers" if self.speakers else ""
        return (
            f"{self.name}: {self.files} audio files ({self.new} new, {kept} already there), "
            f"{self.seconds / 3600:.2f} h{who} in {self.where}"
        )


# --------------------------------------------------------------------------- sources
class Source:
    """An archive (``.zip``, ``.tar.gz``, ``.tar``) or a folder, read as member names and bytes.

    A folder's names start with the folder's own name, as if it were the archive it was
    extracted from, so ``LibriSpeech/test-clean`` and ``test-clean`` both show the subset.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        self._tar_members: dict[str, tarfile.TarInfo] = {}
        if self.path.is_dir():
            root = self.path.resolve()
            files = sorted(p for p in root.rglob("*") if p.is_file())
            self.names = [f"{root.name}/{p.relative_to(root).as_posix()}" for p in files]
        elif not self.path.exists():
            raise CorpusError(f"{self.path}: no such file or folder")
        elif zipfile.is_zipfile(self.path):
            self._zip = zipfile.ZipFile(self.path)
            self.names = [i.filename for i in self._zip.infolist() if not i.is_dir()]
        elif tarfile.is_tarfile(self.path):
            try:
                self._tar = tarfile.open(self.path, "r:*")
                members = [m for m in self._tar.getmembers() if m.isfile()]
            except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
                raise CorpusError(f"{self.path}: damaged archive ({type(err).__name__}: {err})") from None
            self._tar_members = {m.name.removeprefix("./"): m for m in members}
            self.names = list(self._tar_members)
        else:
            raise CorpusError(f"{self.path}: not a folder, a .zip or a .tar.gz archive")

    def read(self, names: tp.Iterable[str]) -> tp.Iterator[tuple[str, bytes]]:
        """``(name, content)`` of each of ``names``, in the order the source stores them (a
        compressed tar is read in one forward pass)."""
        todo = list(names)
        if self._tar is not None:
            todo.sort(key=lambda n: self._tar_members[n].offset)
        for name in todo:
            try:
                yield name, self._read_one(name)
            except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error) as err:
                raise CorpusError(
                    f"{self.path}: {name}: damaged member ({type(err).__name__}: {err})"
                ) from None

    def _read_one(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        if self._tar is not None:
            handle = self._tar.extractfile(self._tar_members[name])
            assert handle is not None  # members are regular files
            return handle.read()
        return (self.path.resolve().parent / name).read_bytes()

    def close(self) -> None:
        for archive in (self._zip, self._tar):
            if archive is not None:
                archive.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- plans
def _matches(pattern: re.Pattern[str], names: tp.Iterable[str]) -> list[tuple[str, re.Match[str]]]:
    return [(n, m) for n in names if (m := pattern.search(n))]


def _not_this(corpus: str, src: Source) -> CorpusError:
    """The error for a source without any file of ``corpus``, naming the corpus it looks like."""
    msg = f"{src.path}: not {TITLES[corpus]}: no {EXPECTED[corpus]} inside"
    others = [c for c, pattern in _RECOGNISERS.items() if c != corpus and _matches(pattern, src.names)]
    if others:
        guess = others[0]
        msg += f"; it looks like {TITLES[guess]}: run `pase data prepare {guess} {src.path} --out DIR`"
    return CorpusError(msg)


def _plan_ravdess(src: Source) -> list[Job]:
    return [
        Job(name, f"ravdess/{m[1]}.flac", speaker=m[2], group="ravdess")
        for name, m in _matches(_RAVDESS, src.names)
    ]


def _plan_emodb(src: Source) -> list[Job]:
    wavs = _matches(_EMODB_WAV, src.names)
    labels = _matches(_EMODB_LABELS, src.names)
    if wavs and not any(m[1].startswith("lablaut/") for _, m in labels):
        raise CorpusError(
            f"{src.path}: EmoDB without its lablaut/ folder (the phone labels emodb-phone reads); "
            "use the official download.zip"
        )
    if not wavs:
        return []
    jobs = [Job(name, f"emodb/wav/{m[1]}.flac", speaker=m[2], group="emodb") for name, m in wavs]
    return jobs + [Job(name, f"emodb/{m[1]}", audio=False, group="emodb") for name, m in labels]


def _plan_fsdd(src: Source) -> list[Job]:
    return [
        Job(name, f"fsdd/{m[1]}.flac", rate=None, speaker=m[2], group="fsdd")
        for name, m in _matches(_FSDD, src.names)
    ]


def _plan_librispeech(src: Source) -> list[Job]:
    audio = _matches(_LS_AUDIO, src.names)
    subsets = sorted({m[1] for _, m in audio})
    transcripts = _matches(_LS_TRANS, src.names)
    tops = _matches(_LS_TOP, src.names)
    jobs: list[Job] = []
    for subset in subsets:
        mine = [(n, m) for n, m in audio if m[1] == subset]
        if subset == "test-other":
            jobs += _speaker_task_subset(mine, tops)
            continue
        if not any(m[1] == subset for _, m in transcripts):
            raise CorpusError(f"{src.path}: {subset} has no SPK-CHAPTER.trans.txt transcripts")
        base = f"LibriSpeech/{subset}"
        jobs += [
            Job(n, f"{base}/{m[2]}/{m[3]}/{m[4]}.flac", rate=None, speaker=m[2], group=base) for n, m in mine
        ]
        jobs += [
            Job(n, f"{base}/{m[2]}/{m[3]}/{m[4]}.trans.txt", audio=False, group=base)
            for n, m in transcripts
            if m[1] == subset
        ]
    if any(s != "test-other" for s in subsets):
        jobs += [Job(n, f"LibriSpeech/{m[1]}", audio=False, group="LibriSpeech") for n, m in tops]
    return jobs


def _speaker_task_subset(
    audio: list[tuple[str, re.Match[str]]], tops: list[tuple[str, re.Match[str]]]
) -> list[Job]:
    """The ``librispeech-speaker`` files of test-other, flat per speaker as the bundle has them."""
    by_speaker: dict[str, list[tuple[str, str]]] = {}
    for name, m in audio:
        by_speaker.setdefault(m[2], []).append((m[4], name))
    base = "librispeech/test-other"
    jobs = []
    for speaker in sorted(by_speaker, key=int)[:SPEAKER_TASK_SPEAKERS]:
        for utt, name in sorted(by_speaker[speaker])[:SPEAKER_TASK_UTTERANCES]:
            jobs.append(Job(name, f"{base}/{speaker}/{utt}.flac", rate=None, speaker=speaker, group=base))
    keep = ("SPEAKERS.TXT", "LICENSE.TXT")
    return jobs + [Job(n, f"{base}/{m[1]}", audio=False, group=base) for n, m in tops if m[1] in keep]


def _plan_noise(src: Source) -> list[Job]:
    return [Job(name, f"noise/{m[1]}.flac", group="noise") for name, m in _matches(_NOISE, src.names)]


def _plan_rir(src: Source) -> list[Job]:
    for corpus, pattern in _RECOGNISERS.items():
        if _matches(pattern, src.names):
            raise CorpusError(
                f"{src.path}: this is {TITLES[corpus]}, not room impulse responses; "
                f"run `pase data prepare {corpus} {src.path} --out DIR`"
            )
    names = [n for n in src.names if Path(n).suffix.lower() in AUDIO_EXTENSIONS]
    # the folders every file is in (the archive's or the folder's own name) are dropped
    parts = [n.split("/")[:-1] for n in names]
    common = 0
    while parts and all(len(p) > common and p[common] == parts[0][common] for p in parts):
        common += 1
    return [
        Job(n, "rir/" + str(Path(*n.split("/")[common:]).with_suffix(".flac").as_posix()), group="rir")
        for n in names
    ]


_PLANS: dict[str, tp.Callable[[Source], list[Job]]] = {
    "ravdess": _plan_ravdess,
    "emodb": _plan_emodb,
    "fsdd": _plan_fsdd,
    "librispeech": _plan_librispeech,
    "noise": _plan_noise,
    "rir": _plan_rir,
}


# --------------------------------------------------------------------------- writing
def _save_bytes(out: Path, data: bytes) -> None:
    write_atomic(out, lambda tmp: Path(tmp).write_bytes(data))


def _write_audio(data: bytes, where: str, out: Path, rate: int | None) -> float:
    """Decode ``data`` (member ``where``), write it to ``out`` as mono FLAC; its seconds."""
    import soundfile as sf

    try:
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError)
        raise CorpusError(f"{where}: cannot decode audio ({type(exc).__name__}: {exc})") from None
    if wav.shape[0] == 0:
        raise CorpusError(f"{where}: empty audio (0 samples)")
    target = rate or int(sr)
    if where.lower().endswith(".flac") and wav.shape[1] == 1 and sr == target:
        _save_bytes(out, data)
        return wav.shape[0] / sr
    mono = resample(np.ascontiguousarray(wav.mean(axis=1)), int(sr), target)
    # resampling can overshoot full scale; 16-bit PCM must not wrap around
    mono = np.clip(mono, -1.0, 32767 / 32768)
    write_atomic(out, lambda tmp: sf.write(tmp, mono, target, format="FLAC", subtype="PCM_16"))
    return mono.size / target


def prepare(
    corpus: str, src: str | Path, out: str | Path, warn: tp.Callable[[str], None] | None = None
) -> list[Summary]:
    """Lay out corpus ``corpus`` from ``src`` (archive or folder) under ``out``; one
    :class:`Summary` per group of files (the corpus, or each LibriSpeech subset).

    Files already under ``out`` are kept. Raises :class:`CorpusError` for a source that is not
    ``corpus`` or has a damaged member; ``warn`` gets a line when a release looks incomplete.
    """
    import soundfile as sf

    from pase.progress import progress

    if corpus not in _PLANS:
        raise CorpusError(f"unknown corpus {corpus!r}; choose from {', '.join(CORPORA)}")
    report = warn or (lambda msg: print(msg, file=sys.stderr))
    out = Path(out)
    with Source(src) as source:
        jobs = _PLANS[corpus](source)
        if not any(job.audio for job in jobs):
            raise _not_this(corpus, source)
        expected = OFFICIAL_FILES.get(corpus)
        found = sum(job.audio for job in jobs)
        if expected and found < expected:
            official = f"{found} of the {expected} files of the official {TITLES[corpus]}"
            report(f"pase data prepare: {source.path}: {official}")
        summaries: dict[str, Summary] = {}
        for job in jobs:
            if job.audio:
                summary = summaries.setdefault(job.group, Summary(job.group, out / job.group))
                summary.files += 1
                if job.speaker:
                    summary.speakers.add(job.speaker)
        todo = [job for job in jobs if not (out / job.out).exists()]
        for job in jobs:
            if job.audio and (out / job.out).exists():
                summaries[job.group].seconds += sf.info(str(out / job.out)).duration
        by_member = {job.member: job for job in todo}
        bar = progress(total=len(todo), desc=f"{corpus}", unit="file")
        with bar:
            for name, data in source.read(by_member):
                job = by_member[name]
                target = out / job.out
                if job.audio:
                    summaries[job.group].seconds += _write_audio(
                        data, f"{source.path}: {name}", target, job.rate
                    )
                    summaries[job.group].new += 1
                else:
                    _save_bytes(target, data)
                bar.update()
    return list(summaries.values())


# --------------------------------------------------------------------------- command line
def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "data", help="lay out the official downloads of the evaluation corpora for pase eval"
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    prep = actions.add_parser(
        "prepare",
        help="lay out one corpus (archive or extracted folder) under DIR",
        description="Lay out the official download of one corpus as the folders `pase eval --data DIR` "
        "reads; run it once per corpus with the same --out. Files already there are kept. "
        "Sources, licences and layouts: docs/data.md.",
    )
    prep.add_argument("corpus", choices=CORPORA, help="which corpus SRC is")
    prep.add_argument(
        "src", metavar="SRC", help="the downloaded archive (.zip, .tar.gz) or its extracted folder"
    )
    prep.add_argument(
        "--out", required=True, metavar="DIR", help="the data folder to pass to `pase eval --data`"
    )
    prep.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        summaries = prepare(args.corpus, args.src, args.out)
    except CorpusError as err:
        print(f"pase data prepare: {err}", file=sys.stderr)
        return 2
    for summary in summaries:
        print(summary.line())
    return 0
