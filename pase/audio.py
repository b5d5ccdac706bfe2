"""Audio input: read any file soundfile can decode, downmix, resample to 16 kHz (soxr).

Every failure is an :class:`AudioError` whose message names the file and the problem, so that
batch tools can print one line per bad file and move on.
"""

from __future__ import annotations

import math
import os
import stat
import typing as tp
from pathlib import Path

import numpy as np

if tp.TYPE_CHECKING:
    import torch

SAMPLE_RATE = 16000
HOP = 160  # samples per output frame (10 ms at 16 kHz)
#: Shortest input the encoder accepts, after resampling: 25 ms (400 samples). The first conv
#: block has kernel 20 at stride 10 on a 160x-pooled grid; anything shorter than a few frames
#: carries no usable context, and reflection padding needs more samples than the pad width.
MIN_SAMPLES = 400
#: Lowest sample rate a file may declare: below it the header is wrong, not the audio (a 1 Hz
#: header would turn 100 samples into 100 s of upsampled noise).
MIN_SAMPLE_RATE = 1000
#: Samples per block (at the file's rate) when a long file is read piece by piece.
BLOCK_FRAMES = 1 << 18
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff", ".au", ".opus", ".sph")


class AudioError(ValueError):
    """A file that cannot be used as audio; ``str(err)`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def num_frames(num_samples: int) -> int:
    """Frames the encoder emits for ``num_samples`` samples: ``ceil(T / 160)``."""
    return math.ceil(num_samples / HOP)


#: Integer PCM the encoder accepts, and the divisor that maps it to [-1, 1).
PCM_SCALES = {"int16": 2.0**15, "int32": 2.0**31}


def as_waveform(x: tp.Any, device: str | torch.device | None = None) -> torch.Tensor:
    """Any waveform a user is likely to pass, as a floating tensor the encoder can take.

    - a float32 tensor is returned as is (no copy, gradients and device kept);
    - float64 (tensor or NumPy) becomes float32; float16 / bfloat16 tensors are kept, for
      half-precision encoders;
    - integer PCM is scaled to [-1, 1): int16 divided by 32768 (2**15), int32 by 2**31, the
      conventions of 16-bit and 32-bit WAV files;
    - NumPy arrays and nested lists become tensors on ``device`` (CPU by default); tensors stay
      on their own device.

    Anything else (other integer widths, whose scale is ambiguous; bool; complex; strings)
    raises a ``TypeError`` that names the dtype and what to pass instead.
    """
    import torch

    if isinstance(x, torch.Tensor):
        if x.dtype == torch.float32 or x.dtype in (torch.float16, torch.bfloat16):
            return x
        kind = str(x.dtype).removeprefix("torch.")
        if x.dtype == torch.float64:
            return x.float()
        if kind in PCM_SCALES:
            return x.float() / PCM_SCALES[kind]
        raise TypeError(_unsupported(kind))
    if isinstance(x, (str, bytes, os.PathLike)):
        raise TypeError(
            f"expected a waveform (tensor or NumPy array), got a {type(x).__name__}; "
            "read a file with pase.load_audio(path) first"
        )
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as err:
        got = type(x).__name__
        raise TypeError(f"expected a waveform (tensor or NumPy array), got {got}: {err}") from None
    kind = arr.dtype.name
    if kind in ("float32", "float64"):
        return torch.as_tensor(np.ascontiguousarray(arr, dtype=np.float32), device=device)
    if kind in PCM_SCALES:
        scaled = np.ascontiguousarray(arr, dtype=np.float32) / np.float32(PCM_SCALES[kind])
        return torch.as_tensor(scaled, device=device)
    raise TypeError(_unsupported(kind))


def _unsupported(kind: str) -> str:
    return (
        f"unsupported waveform dtype {kind}: pass float samples in [-1, 1] "
        "(float32 or float64) or integer PCM (int16, scaled by 1/32768; int32, scaled by 1/2**31)"
    )


def resample(wav: np.ndarray, sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a mono ``[T]`` float array with soxr (high quality)."""
    if sr == target_sr:
        return wav
    import soxr

    return np.asarray(soxr.resample(wav, sr, target_sr, quality="HQ"), dtype=np.float32)


def check_waveform(wav: np.ndarray, path: str | os.PathLike[str], min_samples: int = 0) -> None:
    """Raise :class:`AudioError` for empty, non-finite or too-short waveforms."""
    if wav.size == 0:
        raise AudioError(path, "empty audio (0 samples)")
    if not np.all(np.isfinite(wav)):
        raise AudioError(path, "audio contains NaN or Inf samples")
    if wav.shape[-1] < min_samples:
        raise AudioError(
            path,
            f"too short: {wav.shape[-1]} samples at 16 kHz, the minimum is {min_samples} "
            f"({1000 * min_samples / SAMPLE_RATE:.0f} ms)",
        )


_FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


def check_file(path: str | os.PathLike[str]) -> None:
    """Raise :class:`AudioError` unless ``path`` is a readable, non-empty regular file (symlinks
    followed): a directory, a device or a FIFO is named as such, not as a missing or empty file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AudioError(path, "no such file") from None
    except OSError as exc:
        raise AudioError(path, f"cannot read file ({os_problem(exc)})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise AudioError(path, f"is {kind}, not an audio file")
    if st.st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as exc:  # libsndfile would only say "System error."
        raise AudioError(path, f"cannot read file ({os_problem(exc)})") from None


def os_problem(exc: OSError) -> str:
    """An ``OSError`` as a short lower-case phrase (``"no space left on device"``)."""
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def _check_rate(path: str | os.PathLike[str], sr: int) -> None:
    if sr < MIN_SAMPLE_RATE:
        raise AudioError(path, f"implausible sample rate {sr} Hz (the minimum is {MIN_SAMPLE_RATE} Hz)")


def load_audio(
    path: str | os.PathLike[str],
    sample_rate: int = SAMPLE_RATE,
    min_samples: int = 0,
) -> np.ndarray:
    """Read ``path`` as mono float32 ``[T]`` at ``sample_rate`` Hz.

    Multi-channel audio is averaged to mono; other rates are resampled with soxr.
    Raises :class:`AudioError` (naming the file) for a missing, unreadable, empty, non-finite or
    too-short file (``min_samples`` counted after resampling), one that is not a regular file,
    or one whose sample rate is below :data:`MIN_SAMPLE_RATE`.
    """
    import soundfile as sf

    check_file(path)
    try:
        data, sr = sf.read(os.fspath(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError)
        raise AudioError(path, f"cannot decode audio ({type(exc).__name__}: {exc})") from None
    _check_rate(path, int(sr))
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    check_waveform(wav, path)
    wav = resample(np.ascontiguousarray(wav, dtype=np.float32), int(sr), sample_rate)
    check_waveform(wav, path, min_samples)
    return wav


def resampled_length(frames: int, sr: int, target_sr: int = SAMPLE_RATE) -> int:
    """Samples soxr makes of ``frames`` samples at ``sr`` (whole or streamed alike)."""
    return frames if sr == target_sr else round(frames * target_sr / sr)


def read_blocks(
    path: str | os.PathLike[str],
    sample_rate: int = SAMPLE_RATE,
    block_frames: int = BLOCK_FRAMES,
) -> tuple[int, tp.Iterator[np.ndarray]]:
    """``path`` read piece by piece: ``(expected_samples, blocks)``, each block mono float32
    ``[n]`` at ``sample_rate``, so memory is set by ``block_frames``, not the file.

    The blocks concatenated equal :func:`load_audio` (the streamed soxr resampler gives the same
    samples as the one-shot one); ``expected_samples`` is their total according to the header.
    The checks of :func:`load_audio` hold, raised while iterating for what only the samples show
    (NaN/Inf, a file that decodes empty). ``min_samples`` is the caller's to check.
    """
    import soundfile as sf

    check_file(path)
    try:
        f = sf.SoundFile(os.fspath(path))
    except Exception as exc:
        raise AudioError(path, f"cannot decode audio ({type(exc).__name__}: {exc})") from None
    sr = int(f.samplerate)
    try:
        _check_rate(path, sr)
    except AudioError:
        f.close()
        raise
    return resampled_length(int(f.frames), sr, sample_rate), _blocks(f, path, sr, sample_rate, block_frames)


def _blocks(
    f: tp.Any, path: str | os.PathLike[str], sr: int, sample_rate: int, block_frames: int
) -> tp.Iterator[np.ndarray]:
    import soxr

    stream = None if sr == sample_rate else soxr.ResampleStream(sr, sample_rate, 1, "float32", "HQ")
    total = 0
    with f:
        while True:
            try:
                data = f.read(block_frames, dtype="float32", always_2d=True)
            except Exception as exc:
                raise AudioError(path, f"cannot decode audio ({type(exc).__name__}: {exc})") from None
            last = len(data) < block_frames
            wav = np.ascontiguousarray(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0])
            if not np.all(np.isfinite(wav)):
                raise AudioError(path, "audio contains NaN or Inf samples")
            total += len(wav)
            if last and total == 0:
                raise AudioError(path, "empty audio (0 samples)")
            out = wav if stream is None else np.asarray(stream.resample_chunk(wav, last=last), np.float32)
            if len(out):
                yield out
            if last:
                return


def audio_info(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(frames, sample_rate)`` of a file without decoding it (raises :class:`AudioError`)."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise AudioError(path, f"cannot read audio header ({type(exc).__name__}: {exc})") from None
    return int(info.frames), int(info.samplerate)


def find_audio_files(root: str | os.PathLike[str]) -> list[Path]:
    """All audio files under ``root`` (recursive, sorted, by extension)."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


CONTENT_KEY_BYTES = 1 << 16


def content_key(path: str | os.PathLike[str]) -> str:
    """A cache identity of a file: its resolved path, size and a digest of its first and last
    64 KiB. Not its modification time: copies, checkouts and folders provisioned afresh reset
    mtimes and would make every cached result look stale (one shared data folder here did, every
    session). Read cost: two 64 KiB reads per file. A same-size edit confined to the middle of a
    large file would go unnoticed; delete the cache after such an edit."""
    import hashlib

    p = Path(path)
    with open(p, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        digest = hashlib.blake2b(f.read(CONTENT_KEY_BYTES), digest_size=16)
        if size > 2 * CONTENT_KEY_BYTES:
            f.seek(size - CONTENT_KEY_BYTES)
        digest.update(f.read())  # the rest when small, else the last 64 KiB
    return f"{p.resolve()}|{size}|{digest.hexdigest()}"


def write_atomic(path: str | os.PathLike[str], write: tp.Callable[[str], object]) -> None:
    """Write a file atomically: ``write(tmp_path)`` then rename over ``path``.

    A crash mid-write leaves the old file (or none), never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(str(tmp))
        # Some writers (safetensors) create private 0600 files; give every output the mode a
        # plain open() would, so weights are as readable as the rest of the folder.
        os.chmod(tmp, _new_file_mode())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 without the process's umask (0o644 usually)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere the umask can only be read by setting it
    os.umask(mask)
    return 0o666 & ~mask
