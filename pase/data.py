"""Training data: corpora of audio files and deterministic, resumable batches of chunks.

A *source* is a folder of audio (recursive), a list file (one path per line), a CSV manifest
(column ``path``, optional ``speaker``) or a Kaldi ``wav.scp`` (``utt path``; a ``utt2spk``
beside it gives the speakers). :func:`load_corpus` reads every file once, downmixes and
resamples it to 16 kHz (soxr) and, with a cache folder, stores it as one int16 ``.npy`` per file
keyed by path, size and a digest of its content, so later runs start in seconds and windows are read
through memory maps (50 h of audio never has to sit in RAM, and takes 5.8 GB on disk at 16 bits,
half of float32). Files are decoded and resampled in parallel (``num_workers`` processes).

:class:`ChunkBatches` turns a corpus into batches of three windows per example, as PASE+ trains
on them: ``chunk`` (a random window, the anchor), ``ctxt`` (another window of the same file: the
corpus has no segment structure) and ``rand`` (a window of another speaker's file). The content of a batch
is a pure function of ``(seed, epoch, position, rank, world_size)``, so a run resumes at the
exact next batch from ``{"epoch", "position"}`` and DDP ranks read disjoint examples.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import hashlib
import math
import os
import sys
import typing as tp
from pathlib import Path

import numpy as np
import torch

from pase import caching
from pase.audio import (
    AUDIO_EXTENSIONS,
    SAMPLE_RATE,
    AudioError,
    content_key,
    find_audio_files,
    load_audio,
    write_atomic,
)

#: Files shorter than this (after resampling) are skipped. A shorter file would be more than half
#: padding in a 2 s chunk, and the original's reflection padding needed at least half a chunk.
MIN_SECONDS = 1.0

Reporter = tp.Callable[[str], None]
#: Cached audio is 16-bit PCM: ``float = int16 / PCM_SCALE``. Sources are almost always 16-bit
#: already, so this adds about the quantisation noise the recordings carry anyway.
PCM_SCALE = 32768.0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class AudioEntry:
    """One file named by a source: its path and speaker label."""

    path: Path
    speaker: str


def speaker_of(name: str) -> str:
    """Speaker of a LibriSpeech/Kaldi-style name: its first ``-`` field (``103-1240-0000``: 103)."""
    return Path(name).name.split(".")[0].split("-")[0]


def _entries_from_list(path: Path) -> list[AudioEntry]:
    entries = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line) if os.path.isabs(line) else path.parent / line
            entries.append(AudioEntry(p, speaker_of(p.name)))
    return entries


def _entries_from_csv(path: Path) -> list[AudioEntry]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise AudioError(path, f"CSV manifest needs a 'path' column, found {reader.fieldnames}")
        entries = []
        for row in reader:
            p = Path(row["path"]) if os.path.isabs(row["path"]) else path.parent / row["path"]
            speaker = (row.get("speaker") or "").strip() or speaker_of(p.name)
            entries.append(AudioEntry(p, speaker))
    return entries


def _entries_from_scp(path: Path, report: Reporter) -> list[AudioEntry]:
    utt2spk: dict[str, str] = {}
    spk_file = path.parent / "utt2spk"
    if spk_file.exists():
        for line in spk_file.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 2:
                utt2spk[fields[0]] = fields[1]
    entries, piped = [], []
    for line in path.read_text().splitlines():
        fields = line.strip().split(maxsplit=1)
        if len(fields) < 2:
            continue
        utt, where = fields
        if where.rstrip().endswith("|") or " " in where.strip():
            piped.append(utt)
            continue
        p = Path(where) if os.path.isabs(where) else path.parent / where
        entries.append(AudioEntry(p, utt2spk.get(utt, speaker_of(utt))))
    if piped:
        report(
            f"{path}: skipped {len(piped)} piped command entries (first: {piped[0]}); pase reads "
            "audio files only: run the commands to files first (e.g. Kaldi wav-copy)"
        )
    return entries


def read_source(source: str | os.PathLike[str], report: Reporter = _stderr) -> list[AudioEntry]:
    """The audio files a source names: a folder, one audio file, a ``.csv`` manifest, a
    ``wav.scp``/``.scp``, or a list file. Relative paths in manifests are relative to the
    manifest's folder."""
    path = Path(source)
    if path.is_dir():
        return [AudioEntry(p, speaker_of(p.name)) for p in find_audio_files(path)]
    if not path.exists():
        raise AudioError(path, "no such file or folder (expected a folder, list, CSV or wav.scp)")
    if path.suffix.lower() in AUDIO_EXTENSIONS:  # one audio file
        return [AudioEntry(path, speaker_of(path.name))]
    if path.suffix.lower() == ".csv":
        return _entries_from_csv(path)
    if path.name == "wav.scp" or path.suffix.lower() == ".scp":
        return _entries_from_scp(path, report)
    return _entries_from_list(path)


@functools.lru_cache(maxsize=256)
def _open_cached(path: str) -> np.ndarray:
    # A bounded pool of memory maps: each holds a file descriptor, and a 50 h corpus has tens of
    # thousands of files, more than the usual descriptor limit.
    return np.load(path, mmap_mode="r")


@dataclasses.dataclass
class Utterance:
    """A prepared file: 16 kHz mono samples, in RAM (``wav``) or in a cached ``.npy`` (``npy``)."""

    path: Path
    speaker: str
    num_samples: int
    wav: np.ndarray | None = None
    npy: str | None = None

    def stored(self) -> np.ndarray:
        """The samples as stored: float32 in RAM, or a memory map of the cached int16 ``.npy``
        (float32 for caches written by older versions)."""
        if self.wav is not None:
            return self.wav
        assert self.npy is not None
        return _open_cached(self.npy)

    def samples(self) -> np.ndarray:
        """All samples ``[T]``, float32 (a full copy when cached)."""
        return _to_float(self.stored())

    def window(self, offset: int, size: int) -> np.ndarray:
        """``size`` float32 samples from ``offset``, reflection-padded at the end when the file is
        shorter.

        The original also reflection-padded files shorter than a chunk at the end (and needed
        them longer than half a chunk); numpy's reflect mode keeps mirroring when it must.
        """
        wav = _to_float(self.stored()[offset : offset + size])
        if wav.shape[0] < size:
            wav = np.pad(wav, (0, size - wav.shape[0]), mode="reflect")
        return wav


def _to_float(stored: np.ndarray) -> np.ndarray:
    if stored.dtype == np.int16:
        return stored.astype(np.float32) / np.float32(PCM_SCALE)
    return np.asarray(stored, dtype=np.float32)


def to_pcm16(wav: np.ndarray) -> np.ndarray:
    """float32 ``[T]`` -> int16 for the cache. A file that exceeds full scale (float sources,
    resampling overshoot) is divided by its peak rather than clipped: only its level changes, and
    training's random amplitude scaling discards the level anyway."""
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    limit = (PCM_SCALE - 1) / PCM_SCALE
    if peak > limit:
        wav = wav * (limit / peak)
    return np.round(wav * PCM_SCALE).astype(np.int16)


def _cache_key(path: Path, sample_rate: int) -> str:
    # content_key, not the mtime: a re-provisioned data folder must not re-decode the corpus
    ident = f"{content_key(path)}|{sample_rate}"
    return hashlib.sha1(ident.encode()).hexdigest()


def _save_npy(path: Path, wav: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a tmp name
            np.save(f, wav)

    write_atomic(path, write)


def prepare(
    entry: AudioEntry, cache_dir: Path | None, min_samples: int, sample_rate: int = SAMPLE_RATE
) -> Utterance:
    """Load (or find in the cache) one file; raises :class:`AudioError` for unusable ones."""
    if not entry.path.is_file():
        raise AudioError(entry.path, "no such file")
    if cache_dir is None:
        wav = load_audio(entry.path, sample_rate, min_samples)
        return Utterance(entry.path, entry.speaker, wav.shape[0], wav=wav)
    key = _cache_key(entry.path, sample_rate)
    npy = cache_dir / key[:2] / f"{key}.npy"
    if npy.exists():
        n = int(np.load(npy, mmap_mode="r").shape[0])
    else:
        wav = load_audio(entry.path, sample_rate)
        n = wav.shape[0]
        _save_npy(npy, to_pcm16(wav))
    if n < min_samples:
        raise AudioError(
            entry.path,
            f"too short: {n / sample_rate:.2f} s, the minimum for training is "
            f"{min_samples / sample_rate:.2f} s",
        )
    return Utterance(entry.path, entry.speaker, n, npy=str(npy))


def default_cache_dir() -> Path:
    """``$PASE_CACHE_DIR/audio``, beside the ``eval`` and ``rirs`` caches there, or
    ``$XDG_CACHE_HOME/pase/audio`` (``~/.cache/pase/audio``).

    Older versions put the audio cache in ``$PASE_CACHE_DIR`` itself (its two-character hash
    folders in the root): such a cache, without an ``audio`` folder beside it, is still used."""
    if "PASE_CACHE_DIR" in os.environ:
        root = caching.cache_root()
        old_layout = not (root / "audio").exists() and any(root.glob("[0-9a-f][0-9a-f]/*.npy"))
        return root if old_layout else root / "audio"
    return caching.cache_dir("audio")


def _prepare_or_problem(
    entry: AudioEntry, cache_dir: Path | None, min_samples: int
) -> Utterance | tuple[str, str]:
    """:func:`prepare`, with an unusable file as ``(path, problem)`` (picklable, for workers)."""
    try:
        return prepare(entry, cache_dir, min_samples)
    except AudioError as err:
        return err.path, err.problem


def default_num_workers() -> int:
    """Processes for corpus preparation: the available cores, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores))


def load_corpus(
    sources: tp.Sequence[str | os.PathLike[str]],
    cache_dir: str | os.PathLike[str] | None = None,
    min_seconds: float = MIN_SECONDS,
    report: Reporter | None = _stderr,
    progress: bool = False,
    num_workers: int | None = None,
) -> list[Utterance]:
    """Every usable file of ``sources``, resampled to 16 kHz once (cached when ``cache_dir``).

    Files that cannot be read or are shorter than ``min_seconds`` are reported once, one line
    each (``"<path>: <problem>"``), and skipped; ``report=None`` stays silent (DDP ranks > 0).
    ``num_workers`` processes decode and resample (default :func:`default_num_workers`; 0 or 1:
    in this process); the corpus keeps the sources' order either way. Raises :class:`AudioError`
    when no usable file is left.
    """
    say: Reporter = report if report is not None else (lambda line: None)
    entries = [e for s in sources for e in read_source(s, say)]
    cache = Path(cache_dir) if cache_dir is not None else None
    min_samples = math.ceil(min_seconds * SAMPLE_RATE)
    workers = default_num_workers() if num_workers is None else num_workers
    if workers < 0:
        raise ValueError(f"num_workers must be >= 0, not {workers}")
    prep = functools.partial(_prepare_or_problem, cache_dir=cache, min_samples=min_samples)
    with contextlib.ExitStack() as stack:
        results: tp.Iterable[Utterance | tuple[str, str]]
        if workers > 1 and len(entries) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # fork where there is one: spawned workers would each import torch again (seconds).
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
            pool = stack.enter_context(ProcessPoolExecutor(min(workers, len(entries)), mp_context=ctx))
            # Chunks amortise the round trips when most files are already cached (a stat each).
            results = pool.map(prep, entries, chunksize=max(1, min(64, len(entries) // (4 * workers))))
        else:
            results = map(prep, entries)
        if progress:
            from pase.progress import progress as progress_bar

            results = progress_bar(
                results, total=len(entries), desc="preparing audio", unit="file", leave=False
            )
        corpus = []
        for result in results:
            if isinstance(result, Utterance):
                corpus.append(result)
            else:
                say(f"skipped {AudioError(*result)}")
    if not corpus:
        raise AudioError(", ".join(map(str, sources)), "no usable audio file in the training data")
    return corpus


def split_holdout(
    corpus: list[Utterance], fraction: float, by: str = "speaker", seed: int = 0
) -> tuple[list[Utterance], list[Utterance]]:
    """``(train, valid)``: hold out ``fraction`` of the speakers (or files) for validation.

    Speaker hold-out keeps every speaker on one side, so validation measures generalisation to
    unseen voices. The choice depends only on ``seed`` and the set of labels.
    """
    if by not in ("speaker", "file"):
        raise ValueError(f"hold-out must be by 'speaker' or 'file', got {by!r}")
    if fraction <= 0:
        return corpus, []
    groups = sorted({u.speaker if by == "speaker" else str(u.path) for u in corpus})
    if len(groups) < 2:
        raise ValueError(f"cannot hold out by {by}: the corpus has only {len(groups)} {by}(s)")
    n_valid = min(len(groups) - 1, max(1, round(fraction * len(groups))))
    order = np.random.default_rng(seed).permutation(len(groups))
    held = {groups[i] for i in order[:n_valid]}
    key: tp.Callable[[Utterance], str] = (lambda u: u.speaker) if by == "speaker" else (lambda u: str(u.path))
    return [u for u in corpus if key(u) not in held], [u for u in corpus if key(u) in held]


@dataclasses.dataclass
class Batch:
    """Three windows per example, each ``[B, T]`` float32, amplitude-scaled when enabled.

    ``chunk`` is the clean anchor (distortions are applied later, on the training device),
    ``ctxt`` another window of the same file (with ``ctxt_source="speaker"``, of another file of
    the same speaker when the file is shorter than two chunks), ``rand`` a window of another file.
    """

    chunk: torch.Tensor
    ctxt: torch.Tensor
    rand: torch.Tensor
    epoch: int = 0
    position: int = 0

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        chunk, ctxt, rand = (
            t.to(device, non_blocking=non_blocking) for t in (self.chunk, self.ctxt, self.rand)
        )
        return Batch(chunk, ctxt, rand, epoch=self.epoch, position=self.position)


def _scale(wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # The original's random amplitude scaling: divide by the window's own peak, times U(0, 1).
    peak = float(np.max(np.abs(wav)))
    return wav * (rng.random() / peak) if peak > 0 else wav


def _other_offset(length: int, size: int, anchor: int, rng: np.random.Generator) -> int:
    """A window start for ``ctxt``: not overlapping the anchor when the file allows it, else any
    other start, else 0 (a file no longer than a chunk has only one window)."""
    last = max(0, length - size)
    if last == 0:
        return 0
    before, after = anchor - size, anchor + size  # disjoint windows start <= before or >= after
    n_before, n_after = max(0, before + 1), max(0, last - after + 1)
    if n_before + n_after > 0:
        k = int(rng.integers(n_before + n_after))
        return k if k < n_before else after + (k - n_before)
    k = int(rng.integers(last))
    return k if k < anchor else k + 1


class ChunkBatches:
    """Deterministic, shardable, resumable batches of ``(chunk, ctxt, rand)`` windows.

    An epoch visits every file ``max(1, T // chunk_size)`` times (so it covers about the
    corpus's audio once, as the original's ``(total samples // chunk) // batch`` steps did), in
    an order reshuffled per epoch; each visit draws fresh random windows. Under DDP, the
    ``batch_size * world_size`` examples of one step are split into contiguous per-rank slices,
    so ranks never share an example. The last incomplete global batch of an epoch is dropped.

    ``ctxt`` is a window of the anchor's file that does not overlap it when the file allows it
    (the reference). A file shorter than two chunks has no such window, so its ``ctxt`` shares
    audio with the anchor: in the Common Voice part of v3's data (3-6 s clips) that is 2 of 3
    examples, half of the window on average, an easy shortcut for LIM/GIM. ``ctxt_source="speaker"``
    (ours) takes such a file's ``ctxt`` from another file of the same speaker instead, when the
    speaker has one; the reference draw is unchanged for every other file.

    Iterating yields batches from the cursor ``(epoch, position)`` on, without moving it: the
    consumer records :meth:`state_after` of the last batch it *used* (with
    :meth:`load_state_dict`), so reading ahead in a thread never changes what a checkpoint saves.
    """

    def __init__(
        self,
        corpus: list[Utterance],
        batch_size: int,
        chunk_size: int = 32000,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        amplitude_scaling: bool = True,
        rand_other_speaker: bool = True,
        ctxt_source: tp.Literal["file", "speaker"] = "file",
    ) -> None:
        if ctxt_source not in ("file", "speaker"):
            raise ValueError(f"ctxt_source must be 'file' or 'speaker', not {ctxt_source!r}")
        if len(corpus) < 2:
            raise ValueError("training needs 2 files or more (rand windows come from another file)")
        self.corpus = corpus
        # Files grouped by speaker, for drawing ``rand`` among the other speakers' files in O(1).
        codes = {spk: k for k, spk in enumerate(sorted({u.speaker for u in corpus}))}
        speaker = np.array([codes[u.speaker] for u in corpus])
        self._by_speaker = np.argsort(speaker, kind="stable")
        counts = np.bincount(speaker)
        self._speaker_start = (np.cumsum(counts) - counts)[speaker]  # per file: its group's start
        self._speaker_count = counts[speaker]  # per file: its speaker's number of files
        self.rand_other_speaker = rand_other_speaker and len(codes) > 1
        self.ctxt_source = ctxt_source
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.amplitude_scaling = amplitude_scaling
        visits = np.array([max(1, u.num_samples // chunk_size) for u in corpus])
        self._slots = np.repeat(np.arange(len(corpus)), visits)
        self.steps_per_epoch = len(self._slots) // (batch_size * world_size)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"the corpus gives {len(self._slots)} chunks per epoch, fewer than one global "
                f"batch ({batch_size} x {world_size} ranks)"
            )
        self.epoch = 0
        self.position = 0
        self._order_cache: tuple[int, np.ndarray] | None = None

    def _order(self, epoch: int) -> np.ndarray:
        """Utterance index of every example of ``epoch`` (a seeded shuffle of the visits)."""
        if self._order_cache is None or self._order_cache[0] != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(self._slots)
            self._order_cache = (epoch, order)
        return self._order_cache[1]

    def example(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``index``-th example of ``epoch``: ``(chunk, ctxt, rand)``, each ``[chunk_size]``."""
        rng = np.random.default_rng([self.seed, epoch, index, 1])
        i = int(self._order(epoch)[index])
        utt = self.corpus[i]
        size = self.chunk_size
        anchor = int(rng.integers(max(0, utt.num_samples - size) + 1))
        if self.ctxt_source == "speaker" and utt.num_samples < 2 * size and self._speaker_count[i] > 1:
            # Too short for a window disjoint from the anchor: the same speaker's other file.
            mate = self.corpus[self._same_speaker_file(i, rng)]
            ctxt_wav = mate.window(int(rng.integers(max(0, mate.num_samples - size) + 1)), size)
        else:
            ctxt_wav = utt.window(_other_offset(utt.num_samples, size, anchor, rng), size)
        other = self.corpus[self._other_file(i, rng)]
        r = int(rng.integers(max(0, other.num_samples - size) + 1))
        wavs = [utt.window(anchor, size), ctxt_wav, other.window(r, size)]
        if self.amplitude_scaling:
            wavs = [_scale(w, rng) for w in wavs]
        return wavs[0], wavs[1], wavs[2]

    def _other_file(self, i: int, rng: np.random.Generator) -> int:
        """The file of ``rand`` for an anchor in file ``i``: uniform over the other speakers'
        files (``rand_other_speaker``), else over every other file.

        Ours: the original draws any other file. In its 2484-speaker LibriSpeech set that is
        almost always another speaker, which is what LIM/GIM are meant to tell apart; in a small
        corpus it often is not (the v2 run's speaker-disjoint validation part: 40 of its 66 files
        are one speaker's, so a third of its GIM/LIM negatives were the anchor's own speaker).
        A corpus of one speaker falls back to any other file.
        """
        if not self.rand_other_speaker:
            j = int(rng.integers(len(self.corpus) - 1))
            return j + (j >= i)
        start, count = int(self._speaker_start[i]), int(self._speaker_count[i])
        k = int(rng.integers(len(self.corpus) - count))
        return int(self._by_speaker[k + count if k >= start else k])

    def _same_speaker_file(self, i: int, rng: np.random.Generator) -> int:
        """Another file of file ``i``'s speaker (the speaker must have one)."""
        start, count = int(self._speaker_start[i]), int(self._speaker_count[i])
        own = int(np.flatnonzero(self._by_speaker[start : start + count] == i)[0])
        k = int(rng.integers(count - 1))
        return int(self._by_speaker[start + k + (k >= own)])

    def batch(self, epoch: int, position: int) -> Batch:
        """The batch this rank reads at ``position`` of ``epoch`` (a pure function)."""
        if not 0 <= position < self.steps_per_epoch:
            raise IndexError(f"position {position} past the epoch of {self.steps_per_epoch}")
        start = (position * self.world_size + self.rank) * self.batch_size
        examples = [self.example(epoch, start + k) for k in range(self.batch_size)]
        chunk, ctxt, rand = (torch.from_numpy(np.stack(col)) for col in zip(*examples, strict=True))
        return Batch(chunk, ctxt, rand, epoch=epoch, position=position)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def state_after(self, batch: Batch) -> dict[str, int]:
        """The cursor that resumes right after ``batch``."""
        position = batch.position + 1
        if position == self.steps_per_epoch:
            return {"epoch": batch.epoch + 1, "position": 0}
        return {"epoch": batch.epoch, "position": position}

    def load_state_dict(self, state: tp.Mapping[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def __iter__(self) -> tp.Iterator[Batch]:
        # A local cursor: a reader thread running ahead must not move the saved one.
        cursor = self.state_dict()
        while True:
            batch = self.batch(cursor["epoch"], cursor["position"])
            cursor = self.state_after(batch)
            yield batch
