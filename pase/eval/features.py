"""Frozen feature sets for the benchmark, extracted once per file and cached on disk.

Feature sets by name (:func:`make_feature_set`):

- ``mfcc``: 13 MFCC + deltas + delta-deltas (39), ``fbank``: 40 log mel + deltas (120), both
  from :mod:`pase.targets` at the encoder's 10 ms frame rate;
- ``random:pase+`` / ``random:pase`` (``random:PRESET:SEED`` for another seed): the untrained
  encoder, initialised from a fixed seed.
  Its BatchNorm running statistics are re-estimated on the task's training audio (running
  stats reset, ``momentum=None`` i.e. a cumulative average, one file per forward pass in train
  mode under ``no_grad``, at most :data:`CALIBRATION_FILES` files, each cut to
  :data:`CALIBRATION_SECONDS`). Init-time statistics (mean 0, variance 1) are wrong by orders of
  magnitude after the sinc layer, so without this the random baseline measures a scaling bug,
  not an architecture;
- any other encoder spec of :func:`pase.load_encoder`: ``pase+`` (the packaged pretrained
  weights), a ``save_pretrained`` folder, a training run folder or its ``checkpoint.pt``, an
  original-format ``.ckpt`` file, a Hub repo.

``layers="final"`` gives the encoder output ``[1, F, D]``; ``layers="all"`` the 9 hidden states
``[9, F, D]`` for a learned weighted sum in the probe (encoders only: MFCC and FBANK have a
single layer and ignore it).

The cache key of a file is the feature set's fingerprint (a hash of its weights, config, layer
choice and, for calibrated encoders, the calibration files), the file's identity
(:func:`pase.audio.content_key`: resolved path, size and a digest of its first and last 64 KiB;
not its mtime, so a copied or re-provisioned data folder keeps its cache) and the distortion spec,
so a changed checkpoint or file does not serve stale features.
"""

from __future__ import annotations

import abc
import collections
import hashlib
import os
import random
import re
import typing as tp
from pathlib import Path

import numpy as np
import torch

from pase import caching
from pase.audio import MIN_SAMPLES, SAMPLE_RATE, AudioError, content_key, load_audio, write_atomic
from pase.encoder import Encoder
from pase.loading import RANDOM_INIT_SEED, RANDOM_PREFIX, EncoderSpecError, load_encoder

#: BatchNorm re-estimation of random encoders: at most this many training files ...
CALIBRATION_FILES = 256
#: ... each cut to this many seconds, which bounds memory on long files.
CALIBRATION_SECONDS = 20.0
LAYER_CHOICES = ("final", "all")


class FeatureError(ValueError):
    """A feature set name or checkpoint that cannot be used."""


def file_key(path: Path) -> str:
    """Identity of a file's content for the cache (:func:`pase.audio.content_key`: path, size and
    a digest of its ends; not the mtime, which copies and re-provisioned folders reset)."""
    return content_key(path)


def _sha(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def safe_name(spec: str) -> str:
    """A feature set name usable as a folder name (``random:pase+`` -> ``random-pase+``)."""
    if os.sep in spec or spec.endswith(".ckpt"):
        spec = Path(spec).name or spec
    return re.sub(r"[^A-Za-z0-9+._-]+", "-", spec).strip("-") or "features"


def folder_names(specs: tp.Sequence[str]) -> dict[str, str]:
    """A distinct folder name per feature set: :func:`safe_name`, with as many parent folders
    as it takes to tell two apart (``runs/a/encoder`` and ``runs/b/encoder`` -> ``a-encoder``
    and ``b-encoder``), so their results never overwrite each other."""
    specs = list(dict.fromkeys(specs))
    parts = {s: Path(s).parts if (os.sep in s or s.endswith(".ckpt")) else (s,) for s in specs}
    depth = dict.fromkeys(specs, 1)
    while True:
        names = {s: safe_name("-".join(parts[s][-depth[s] :])) for s in specs}
        counts = collections.Counter(names.values())
        deeper = [s for s in specs if counts[names[s]] > 1 and depth[s] < len(parts[s])]
        if not deeper:
            break
        for s in deeper:
            depth[s] += 1
    seen: set[str] = set()
    for s in specs:  # the same folder spelled two ways: told apart by a hash
        if names[s] in seen:
            names[s] = f"{names[s]}-{_sha(s)[:8]}"
        seen.add(names[s])
    return names


class FeatureSet(abc.ABC):
    """A frozen frame-level feature extractor: ``wav: [T] -> feats: [L, F, D]``."""

    name: str
    layers: str = "final"  # "all": every hidden state, for a learned weighted sum
    num_layers: int = 1

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A hash of everything that determines the output (weights, config, options)."""

    @abc.abstractmethod
    def extract(self, wav: np.ndarray) -> np.ndarray:
        """``wav: [T]`` float32 at 16 kHz -> ``[L, F, D]`` float32, ``F = ceil(T / 160)``."""

    @abc.abstractmethod
    def calibrate_on(self, paths: tp.Sequence[Path]) -> None:
        """Tell the feature set the task's training files (used by random encoders only)."""


class SpectralFeatures(FeatureSet):
    """MFCC or FBANK from :mod:`pase.targets`, with deltas and delta-deltas."""

    def __init__(self, kind: tp.Literal["mfcc", "fbank"]) -> None:
        self.name = kind

    def calibrate_on(self, paths: tp.Sequence[Path]) -> None:
        """Fixed transforms have nothing to calibrate."""

    def fingerprint(self) -> str:
        import pase.targets

        # the targets module's source is part of the key: a changed MFCC recipe re-extracts
        source = Path(pase.targets.__file__).read_bytes()
        return _sha("spectral", self.name, source)

    def extract(self, wav: np.ndarray) -> np.ndarray:
        from pase import targets

        x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))[None]
        with torch.no_grad():
            static = targets.mfcc(x) if self.name == "mfcc" else targets.fbank(x)
            feats = targets.with_deltas(static)
        return feats.numpy().astype(np.float32)  # [1, F, D]: the batch axis is the layer axis


class EncoderFeatures(FeatureSet):
    """A frozen :class:`pase.Encoder`; ``calibrate=True`` re-estimates BatchNorm statistics."""

    def __init__(
        self,
        name: str,
        encoder: Encoder,
        layers: str = "final",
        calibrate: bool = False,
        device: str = "cpu",
    ) -> None:
        self.name = name
        self.encoder = encoder.to(device).eval()
        self.layers = layers
        self.num_layers = 1 if layers == "final" else encoder.num_layers
        self.calibrate = calibrate
        self.device = device
        self._calibration: list[Path] = []
        self._calibrated = not calibrate
        self._weights_hash = _sha(
            repr(getattr(encoder, "config", "")),
            *(
                key.encode() + t.detach().cpu().contiguous().numpy().tobytes()
                for key, t in sorted(encoder.state_dict().items())
            ),
        )

    def calibrate_on(self, paths: tp.Sequence[Path]) -> None:
        if not self.calibrate:
            return
        paths = sorted(paths)
        if len(paths) > CALIBRATION_FILES:
            paths = sorted(random.Random(RANDOM_INIT_SEED).sample(paths, CALIBRATION_FILES))
        self._calibration = paths
        self._calibrated = False

    def fingerprint(self) -> str:
        calib = [file_key(p) for p in self._calibration] if self.calibrate else []
        return _sha("encoder", self._weights_hash, self.layers, *calib)

    def _reestimate_batchnorm(self) -> None:
        if not self._calibration:
            raise FeatureError(f"{self.name}: no training files to re-estimate BatchNorm on")
        norms = [m for m in self.encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over all calibration passes
        max_len = int(CALIBRATION_SECONDS * SAMPLE_RATE)
        self.encoder.train()
        with torch.no_grad():
            for path in self._calibration:
                try:
                    wav = load_audio(path, min_samples=MIN_SAMPLES)[:max_len]
                except AudioError:
                    continue  # reported and skipped when the file's features are extracted
                self.encoder(torch.from_numpy(wav)[None].to(self.device))
        self.encoder.eval()
        self._calibrated = True

    def extract(self, wav: np.ndarray) -> np.ndarray:
        if not self._calibrated:
            self._reestimate_batchnorm()
        x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)).to(self.device)
        with torch.no_grad():
            out = self.encoder.infer_long(x, layers=tp.cast(tp.Literal["final", "all"], self.layers))
        feats = out[None] if self.layers == "final" else out  # [L, F, D] either way
        return feats.cpu().numpy().astype(np.float32)


def make_feature_set(spec: str, layers: str = "final", device: str = "cpu") -> FeatureSet:
    """Build a feature set from its name (see the module docstring)."""
    if layers not in LAYER_CHOICES:
        raise FeatureError(f"--layers must be final or all, not {layers!r}")
    if spec in ("mfcc", "fbank"):
        # A single layer: "--layers all" has nothing to weigh, so the features are used as they are.
        return SpectralFeatures(tp.cast(tp.Literal["mfcc", "fbank"], spec))
    try:
        encoder = load_encoder(spec)
    except EncoderSpecError as exc:
        raise FeatureError(f"unknown feature set {exc}; feature sets are mfcc, fbank and encoders") from None
    except (OSError, KeyError, RuntimeError, ValueError) as exc:
        raise FeatureError(f"{spec}: cannot load encoder ({exc})") from None
    return EncoderFeatures(spec, encoder, layers, calibrate=spec.startswith(RANDOM_PREFIX), device=device)


def to_half(feats: np.ndarray) -> np.ndarray:
    """The cache's storage format: float16, clipped so an outlier never becomes inf."""
    return np.clip(feats, -65000.0, 65000.0).astype(np.float16)


class BadFiles:
    """Files that could not be read, shared by every feature set of a run: each one is reported
    once (through ``log``) and left out of every feature set, so all of them see the same files."""

    def __init__(self, log: tp.Callable[[str], None]) -> None:
        self.log = log
        self.problems: dict[Path, str] = {}

    def add(self, path: Path, err: AudioError) -> None:
        if path not in self.problems:
            self.problems[path] = err.problem
            self.log(f"pase eval: {err}; file skipped")

    def keep(self, paths: tp.Iterable[Path]) -> list[Path]:
        return [p for p in paths if p not in self.problems]


class FeatureCache:
    """Features on disk as float16 ``.npy`` files, one per (feature set, file, distortion)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, fingerprint: str, key: str) -> Path:
        digest = _sha(fingerprint, key)
        return self.root / fingerprint[:16] / digest[:2] / f"{digest[2:26]}.npy"

    def load(self, fingerprint: str, key: str) -> np.ndarray | None:
        path = self.path(fingerprint, key)
        if not path.exists():
            return None
        try:
            return np.load(path).astype(np.float32)
        except (OSError, ValueError):
            return None  # a damaged cache entry is recomputed, never trusted

    def save(self, fingerprint: str, key: str, feats: np.ndarray) -> None:
        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, to_half(feats))

        write_atomic(self.path(fingerprint, key), write)


class EvalCondition:
    """The test condition of an evaluation: one test-time distortion (``noise:5dB``, ``reverb``,
    ...) from :mod:`pase.distortions`, applied to the test files' waveforms.

    Each file gets its own generator, seeded from the spec and the file name, so a file is
    distorted the same way in every run and for every feature set.
    """

    def __init__(self, spec: str, data_dir: Path) -> None:
        from pase.distortions import Distorter, DistortionConfig, parse_spec

        self.spec = spec
        noise, rir = data_dir / "noise", data_dir / "rir"
        base = DistortionConfig(
            noise_dir=str(noise) if noise.is_dir() else None,
            rir_dir=str(rir) if rir.is_dir() else None,
        )
        # a config with only this distortion switched on, so only its bank (noise, RIRs) loads
        self.distorter = Distorter(parse_spec(spec, base))

    def __call__(self, wav: np.ndarray, path: Path) -> np.ndarray:
        from pase.distortions import apply_distortion

        seed = int(_sha(self.spec, path.name)[:15], 16)
        gen = torch.Generator().manual_seed(seed)
        x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))[None]
        with torch.no_grad():
            out = apply_distortion(self.spec, x, self.distorter, generator=gen)
        return out[0].numpy().astype(np.float32)


def cache_features(
    features: FeatureSet,
    paths: tp.Sequence[Path],
    cache: FeatureCache,
    distortion: EvalCondition | None = None,
    desc: str = "",
    transform: tp.Callable[[np.ndarray], np.ndarray] | None = None,
    bad_files: BadFiles | None = None,
) -> list[np.ndarray]:
    """Features ``[L, F, D]`` of every file, from the cache or extracted (and cached) now.

    ``distortion`` (test files only, chosen by the caller) is applied to the waveform first;
    ``transform`` (e.g. pooling) is applied to each file's features before they are kept, so
    only its output stays in memory. Without ``bad_files`` a file that cannot be read, or whose
    features are not finite (huge samples), raises :class:`pase.audio.AudioError` naming it;
    with it, such a file is reported there and left out, as are the files it already holds: the
    output is then one array per path of ``bad_files.keep(paths)`` (called after this returns).
    """
    from pase.progress import progress

    fingerprint = features.fingerprint()
    suffix = f"|distort={distortion.spec}" if distortion else ""
    out = []
    todo = bad_files.keep(paths) if bad_files is not None else list(paths)
    for path in progress(todo, desc=desc or features.name, unit="file", leave=False):
        key = file_key(path) + suffix
        feats = cache.load(fingerprint, key)
        if feats is None:
            try:
                wav = load_audio(path, min_samples=MIN_SAMPLES)
                if distortion is not None:
                    wav = distortion(wav, path)
                raw = features.extract(wav)
                if not np.isfinite(raw).all():  # before to_half, which would clip Inf to 65000
                    problem = f"{features.name} features contain NaN or Inf (audio out of range?)"
                    raise AudioError(path, problem)
            except AudioError as err:
                if bad_files is None:
                    raise
                bad_files.add(path, err)
                continue
            # rounded like the cache stores it, so a first run and a cached run agree exactly
            feats = to_half(raw).astype(np.float32)
            cache.save(fingerprint, key, feats)
        out.append(transform(feats) if transform else feats)
    return out


def default_cache_dir() -> Path:
    """``$PASE_CACHE_DIR/eval``, else ``$XDG_CACHE_HOME/pase/eval``, else ``~/.cache/pase/eval``."""
    return caching.cache_dir("eval")
