"""Banks of room impulse responses and noises for the online distortions (spec section 4).

:class:`RirBank` holds simulated rooms (pyroomacoustics shoebox rooms, generated once and cached
on disk as ``.npz``) plus any folder of measured RIRs, each peak-normalised, truncated and
stored with its RT60 measured by Schroeder backward integration. :class:`NoiseBank` holds every
noise recording of a folder, or synthetic white and pink noise when no folder is given.

The original drew from 1808 measured and simulated RIRs that were never published; simulated
rooms and any folder of RIRs are the substitute (spec section 4).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import multiprocessing
import os
import sys
import time
import typing as tp
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from pase import caching
from pase.audio import SAMPLE_RATE, AudioError, find_audio_files, load_audio, write_atomic

#: Bump when the simulation changes, so that caches of the old recipe are not reused.
_SIM_VERSION = 1


@dataclasses.dataclass(frozen=True)
class RoomSpec:
    """How the simulated rooms are drawn (everything that changes the generated bank)."""

    n_rooms: int = 200
    """Number of simulated rooms (one RIR each)."""
    seed: int = 0
    """Seed of the room draws: the same spec always gives the same bank."""
    size_min: tuple[float, float, float] = (3.0, 3.0, 2.5)
    """Smallest room (length, width, height) in metres."""
    size_max: tuple[float, float, float] = (10.0, 8.0, 4.0)
    """Largest room (length, width, height) in metres."""
    rt60_range: tuple[float, float] = (0.2, 1.0)
    """Target reverberation times (s), drawn uniformly; walls follow from Sabine's formula."""
    wall_margin: float = 0.5
    """Minimum distance (m) of the source and the microphone from every wall."""
    min_distance: float = 0.5
    """Minimum source-microphone distance (m)."""
    max_len: int = 24000
    """Each RIR is truncated to this many samples at 16 kHz."""

    def key(self) -> str:
        """Hash of the spec: the cache file name, so a changed recipe never loads a stale bank."""
        blob = json.dumps({"v": _SIM_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


def measure_rt60(rir: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Reverberation time (s) of ``rir: [L]`` by Schroeder backward integration.

    A line is fitted to the energy decay curve between -5 and -25 dB (T20) and extrapolated to
    60 dB; between -5 and -15 dB (T10) when the curve is too short. NaN when neither is possible.
    """
    energy = np.cumsum(rir[::-1].astype(np.float64) ** 2)[::-1]
    if not energy[0] > 0:
        return math.nan
    edc = 10 * np.log10(np.maximum(energy / energy[0], 1e-30))
    for top, bottom in ((-5.0, -25.0), (-5.0, -15.0)):
        fit = np.nonzero((edc <= top) & (edc >= bottom))[0]
        if fit.size >= 8:
            slope = np.polyfit(fit / sample_rate, edc[fit], 1)[0]
            if slope < 0:
                return float(-60.0 / slope)
    return math.nan


Room = tuple[np.ndarray, float, np.ndarray, np.ndarray]  # dims (m), target RT60, source, mic


def _draw_rooms(spec: RoomSpec) -> list[Room]:
    """The rooms of ``spec``, drawn in one process so that the bank never depends on workers."""
    rng = np.random.default_rng(spec.seed)
    lo, hi = np.array(spec.size_min), np.array(spec.size_max)
    rooms = []
    for _ in range(spec.n_rooms):
        dims = rng.uniform(lo, hi)
        rt60 = float(rng.uniform(*spec.rt60_range))
        inner_lo, inner_hi = np.full(3, spec.wall_margin), dims - spec.wall_margin
        source = rng.uniform(inner_lo, inner_hi)
        mic = rng.uniform(inner_lo, inner_hi)
        while np.linalg.norm(mic - source) < spec.min_distance:
            mic = rng.uniform(inner_lo, inner_hi)
        rooms.append((dims, rt60, source, mic))
    return rooms


def _room_rir(room: Room, max_len: int) -> tuple[np.ndarray, float]:
    """Image-source RIR of one shoebox room (walls from Sabine's formula), truncated to
    ``max_len``, with the RT60 measured before truncation (cutting the tail bends the decay)."""
    import pyroomacoustics as pra

    dims, rt60, source, mic = room
    absorption, max_order = pra.inverse_sabine(rt60, dims)
    shoebox = pra.ShoeBox(dims, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=max_order)
    shoebox.add_source(source)
    shoebox.add_microphone(mic)
    shoebox.compute_rir()
    rir = np.asarray(shoebox.rir[0][0], dtype=np.float32)
    return rir[:max_len], measure_rt60(rir)


def _simulate(spec: RoomSpec, workers: int) -> tuple[list[np.ndarray], list[float]]:
    """RIRs ``[L_i]`` and RT60s of the rooms of ``spec``, over ``workers`` processes."""
    from pase.progress import progress

    rooms = _draw_rooms(spec)
    run = functools.partial(_room_rir, max_len=spec.max_len)
    bar = functools.partial(progress, total=len(rooms), desc="simulating rooms", unit="room")
    if workers > 1:
        # spawn, not fork: the parent may hold torch/OpenMP threads that a fork would break.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            results = list(bar(pool.map(run, rooms, chunksize=4)))
    else:
        results = [run(room) for room in bar(rooms)]
    return [r for r, _ in results], [t for _, t in results]


class RirBank:
    """Room impulse responses ``rirs: [N, L]`` (float32, peak magnitude 1, zero-padded to the
    longest, ``L <= max_len``), their measured ``rt60: [N]`` (s) and ``names`` (``sim:<i>`` or
    the source file)."""

    def __init__(self, rirs: np.ndarray, rt60: np.ndarray, names: tp.Sequence[str]) -> None:
        if rirs.ndim != 2 or rirs.shape[0] != len(rt60) or rirs.shape[0] != len(names):
            raise ValueError(
                f"RirBank needs rirs [N, L], rt60 [N] and N names; got {rirs.shape}, "
                f"{len(rt60)} RT60s, {len(names)} names"
            )
        self.rirs = np.ascontiguousarray(rirs, dtype=np.float32)
        self.rt60 = np.asarray(rt60, dtype=np.float32)
        self.names = list(names)

    def __len__(self) -> int:
        return self.rirs.shape[0]

    def __repr__(self) -> str:
        return f"RirBank({len(self)} RIRs, {self.rirs.shape[1]} samples, RT60 {self._rt60_range()})"

    def _rt60_range(self) -> str:
        finite = self.rt60[np.isfinite(self.rt60)]
        return f"{finite.min():.2f}-{finite.max():.2f} s" if finite.size else "n/a"

    @classmethod
    def from_arrays(
        cls,
        rirs: tp.Sequence[np.ndarray],
        names: tp.Sequence[str],
        max_len: int = 24000,
        rt60: tp.Sequence[float] | None = None,
    ) -> RirBank:
        """Peak-normalise and truncate ``rirs`` (each ``[L_i]``); RT60s are measured when not
        given (measure before truncating where the full response is available)."""
        if not rirs:
            raise ValueError("RirBank needs at least one impulse response")
        rt = [measure_rt60(r) for r in rirs] if rt60 is None else list(rt60)
        cut = [np.asarray(r[:max_len], dtype=np.float32) for r in rirs]
        bank = np.zeros((len(cut), max(r.size for r in cut)), dtype=np.float32)
        for i, r in enumerate(cut):
            peak = float(np.abs(r).max())
            if not peak > 0:
                raise ValueError(f"{names[i]}: impulse response is all zeros")
            bank[i, : r.size] = r / peak
        return cls(bank, np.asarray(rt, dtype=np.float32), names)

    @classmethod
    def from_dir(cls, root: str | os.PathLike[str], max_len: int = 24000) -> RirBank:
        """Every audio file under ``root`` as one RIR (first channel mix, 16 kHz)."""
        files = find_audio_files(root)
        if not files:
            raise AudioError(root, "no audio files (RIRs) found in this folder")
        return cls.from_arrays([load_audio(f) for f in files], [str(f) for f in files], max_len)

    @classmethod
    def simulated(
        cls,
        spec: RoomSpec,
        cache_dir: str | os.PathLike[str] | None = None,
        verbose: bool = False,
        workers: int | None = None,
    ) -> RirBank:
        """The bank of ``spec``: loaded from ``cache_dir/rirs-<key>.npz`` when present, else
        simulated once and written there atomically. ``workers`` processes simulate (default:
        one per 8 rooms, at most 8 and the CPU count); the result does not depend on it."""
        path = Path(cache_dir or caching.cache_dir("rirs")) / f"rirs-{spec.n_rooms}rooms-{spec.key()}.npz"
        if path.exists():
            try:
                with np.load(path) as cached:
                    return cls(cached["rirs"], cached["rt60"], [str(n) for n in cached["names"]])
            except (OSError, ValueError, KeyError) as exc:
                warnings.warn(f"{path}: unreadable RIR cache ({exc}); simulating again", stacklevel=2)
        start = time.perf_counter()
        if workers is None:
            workers = min(8, os.cpu_count() or 1, spec.n_rooms // 8)
        if verbose:
            print(
                f"simulating {spec.n_rooms} rooms for the reverberation distortion with pyroomacoustics "
                f"({workers or 1} process(es)); done once, then read from {path}",
                file=sys.stderr,
                flush=True,
            )
        raw, rt60 = _simulate(spec, workers)
        bank = cls.from_arrays(raw, [f"sim:{i}" for i in range(len(raw))], spec.max_len, rt60)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, rirs=bank.rirs, rt60=bank.rt60, names=np.array(bank.names))

        write_atomic(path, write)
        if verbose:
            print(
                f"simulated {len(bank)} rooms in {time.perf_counter() - start:.1f} s -> {path}",
                file=sys.stderr,
            )
        return bank

    @classmethod
    def concat(cls, banks: tp.Sequence[RirBank]) -> RirBank:
        """One bank holding all RIRs of ``banks`` (zero-padded to the longest)."""
        length = max(b.rirs.shape[1] for b in banks)
        rirs = np.concatenate([np.pad(b.rirs, ((0, 0), (0, length - b.rirs.shape[1]))) for b in banks])
        return cls(rirs, np.concatenate([b.rt60 for b in banks]), [n for b in banks for n in b.names])


class NoiseBank:
    """Noise clips concatenated in ``audio: [S]`` (float32, 16 kHz); clip ``i`` spans
    ``audio[starts[i] : starts[i] + lengths[i]]``."""

    def __init__(self, clips: tp.Sequence[np.ndarray], names: tp.Sequence[str]) -> None:
        if not clips or len(clips) != len(names):
            raise ValueError("NoiseBank needs at least one clip and one name per clip")
        self.lengths = np.array([c.size for c in clips], dtype=np.int64)
        if self.lengths.min() == 0:
            raise ValueError(f"{names[int(self.lengths.argmin())]}: empty noise clip")
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.audio = np.concatenate([np.asarray(c, dtype=np.float32) for c in clips])
        self.names = list(names)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"NoiseBank({len(self)} clips, {self.audio.size / SAMPLE_RATE:.1f} s)"

    @classmethod
    def from_dir(cls, root: str | os.PathLike[str]) -> NoiseBank:
        """Every audio file under ``root``, resampled to 16 kHz."""
        files = find_audio_files(root)
        if not files:
            raise AudioError(root, "no audio files (noises) found in this folder")
        return cls([load_audio(f) for f in files], [str(f) for f in files])

    @classmethod
    def synthetic(cls, seconds: float = 30.0, seed: int = 0) -> NoiseBank:
        """White and pink (1/f power) Gaussian noise, ``seconds`` each."""
        rng = np.random.default_rng(seed)
        n = int(seconds * SAMPLE_RATE)
        white = rng.standard_normal(n)
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n)
        spectrum[1:] /= np.sqrt(freqs[1:] / freqs[1])
        spectrum[0] = 0.0
        pink = np.fft.irfft(spectrum, n)
        return cls([white / white.std(), pink / pink.std()], ["synthetic:white", "synthetic:pink"])
