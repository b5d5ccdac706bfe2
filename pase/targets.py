"""Self-supervised regression targets, batched on whatever device the waveform is on.

Every target maps ``wav: [B, T]`` (float, 16 kHz) to ``[B, F, D]`` float32 with
``F = ceil(T / 160)`` (:func:`pase.audio.num_frames`), frame ``t`` **centred on sample 160 t**.
The original centred LPS, MFCC and prosody frames but *started* FBANK and gammatone windows at
160 t, so those lagged by half a window (up to 6.4 frames for gammatone-long); ours centres all
of them. The encoder's frames are not centred exactly there: its asymmetric conv padding puts the
centre of frame ``t`` 0.4-1.1 frames later (the response to an impulse at sample 16 000 is
centred at frame 98.9-99.6 at init, over seeds; ``tests/test_targets.py`` measures it),
and a trained QRNN smears the response forward (centred at 106.8 in the first packaged model).
The regressors' ``r = 7`` context frames (t-3 .. t+3) cover that offset, so targets stay on 160 t.

Edges are **zero-padded** (half a window each side): reflection would need a signal longer than
the window (a 2048-sample window on a 400-sample input has nothing to reflect), and zero padding
is also librosa's default (``pad_mode="constant"``) since 0.10, so the oracles match at the edges.

The original computed all of this on the CPU in data-loader workers (librosa,
python_speech_features, the gammatone package, pysptk), which made training CPU-bound. Here
everything is a tensor op without gradients; filterbanks, windows and DCT matrices are cached per
(parameters, device, dtype).

``TARGETS`` lists the worker targets of the presets (PASE+ with ``[static; delta; delta-delta]``
stacked on the feature axis, PASE v1 without), and :class:`TargetStats` accumulates the true
per-dimension mean and std used to standardise them.
"""

from __future__ import annotations

import functools
import math
import typing as tp
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pase.audio import HOP, SAMPLE_RATE, num_frames

Tensor = torch.Tensor

#: Power floor inside every log: librosa's ``power_to_db`` ``amin`` (-100 dB).
POWER_FLOOR = 1e-10


# --------------------------------------------------------------------------------------------
# framing, windows, filterbanks (cached)
# --------------------------------------------------------------------------------------------
def _check_wav(wav: Tensor) -> Tensor:
    """Validate ``wav: [B, T]`` and return it as float32 (on its own device)."""
    if not isinstance(wav, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor wav: [B, T], got {type(wav).__name__}")
    if wav.dim() != 2 or wav.shape[-1] == 0:
        raise ValueError(f"expected wav: [B, T] with T > 0, got shape {tuple(wav.shape)}")
    if not wav.is_floating_point():
        raise ValueError(f"expected a floating-point waveform, got dtype {wav.dtype}")
    return wav.detach().float()


def _pad_centred(x: Tensor, win_length: int, centre: int | None = None) -> Tensor:
    """Zero-pad ``x: [..., T]`` so that window ``t`` of length ``win_length`` starting at
    ``160 t`` in the result has its sample ``centre`` (default ``win_length // 2``) on sample
    ``160 t`` of ``x``, for all ``F`` frames."""
    n_frames = num_frames(x.shape[-1])
    left = win_length // 2 if centre is None else centre
    right = max((n_frames - 1) * HOP + win_length - left - x.shape[-1], 0)
    return F.pad(x, (left, right))


def _frames(x: Tensor, win_length: int, centre: int | None = None) -> Tensor:
    """``x: [B, T]`` -> ``[B, F, win_length]`` frames centred as in :func:`_pad_centred`
    (a view of a padded copy)."""
    n_frames = num_frames(x.shape[-1])
    return _pad_centred(x, win_length, centre).unfold(-1, win_length, HOP)[:, :n_frames]


@functools.lru_cache(maxsize=64)
def _window(kind: str, length: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    if kind == "hann":
        return torch.hann_window(length, periodic=True, dtype=dtype, device=device)
    if kind == "boxcar":
        return torch.ones(length, dtype=dtype, device=device)
    raise ValueError(f"unknown window {kind!r}; expected 'hann' or 'boxcar'")


def _power_spectrum(wav: Tensor, win_length: int, n_fft: int, window: str) -> Tensor:
    """``wav: [B, T]`` -> power spectrum ``[B, F, n_fft // 2 + 1]``.

    The window is zero-padded to ``n_fft`` at its end rather than in the middle (librosa): that is
    a circular shift of the FFT input, which changes the phase only, not the power.
    """
    if win_length > n_fft:
        raise ValueError(f"win_length ({win_length}) must not exceed n_fft ({n_fft})")
    frames = _frames(wav, win_length) * _window(window, win_length, wav.device, wav.dtype)
    spec = torch.fft.rfft(frames, n=n_fft)
    return spec.real.square() + spec.imag.square()


def _hz_to_mel(hz: np.ndarray, htk: bool) -> np.ndarray:
    if htk:
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    # Slaney's Auditory Toolbox scale: linear below 1 kHz, logarithmic above (librosa's default).
    mel = hz / (200.0 / 3.0)
    log_region = hz >= 1000.0
    mel[log_region] = 15.0 + np.log(hz[log_region] / 1000.0) / (np.log(6.4) / 27.0)
    return mel


def _mel_to_hz(mel: np.ndarray, htk: bool) -> np.ndarray:
    if htk:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    hz = mel * (200.0 / 3.0)
    log_region = mel >= 15.0
    hz[log_region] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel[log_region] - 15.0))
    return hz


@functools.lru_cache(maxsize=32)
def _mel_filterbank(n_mels: int, n_fft: int, htk: bool, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Triangular mel filters ``[n_fft // 2 + 1, n_mels]``, 0 Hz to 8 kHz, area-normalised
    (Slaney norm, librosa's default) so that the result equals ``librosa.filters.mel(...).T``."""
    fft_hz = np.linspace(0.0, SAMPLE_RATE / 2, n_fft // 2 + 1)
    edges_mel = np.linspace(
        _hz_to_mel(np.array([0.0]), htk)[0],
        _hz_to_mel(np.array([SAMPLE_RATE / 2]), htk)[0],
        n_mels + 2,
    )
    edges = _mel_to_hz(edges_mel, htk)
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return torch.as_tensor(weights.T, dtype=dtype, device=device)


@functools.lru_cache(maxsize=16)
def _dct_matrix(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Orthonormal DCT-II ``[n_in, n_out]`` (``x @ M`` = ``scipy.fft.dct(x, norm="ortho")[:n_out]``)."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    mat = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    mat[:, 0] /= np.sqrt(2.0)
    return torch.as_tensor(mat, dtype=dtype, device=device)


def _power_db(power: Tensor) -> Tensor:
    return 10.0 * torch.log10(power.clamp_min(POWER_FLOOR))


# --------------------------------------------------------------------------------------------
# spectral targets
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def lps(wav: Tensor, win_length: int = 400, n_fft: int = 2048) -> Tensor:
    """Log power spectrum ``10 log10(|STFT|^2)`` (floored at -100 dB), hop 160.

    ``wav: [B, T]`` -> ``[B, F, n_fft // 2 + 1]`` (1025 by default). Rectangular window of
    ``win_length`` samples, as in the original (the spec leaves the window shape to it).

    The 2048-point FFT (zero-padded 400- or 512-sample windows) is the original's choice, kept as
    the reference: it interpolates the spectrum 5x / 4x beyond the window's resolution, which
    makes each LPS head 21,525 outputs wide and about 13 % of a CPU training step. A smaller
    ``n_fft`` would lose no information; the CPU recipe's choice about the LPS pair is measured
    by ``pase ablate`` (README, "The CPU recipe").
    """
    return _power_db(_power_spectrum(_check_wav(wav), win_length, n_fft, "boxcar"))


@torch.no_grad()
def fbank(
    wav: Tensor, n_mels: int = 40, win_length: int = 400, n_fft: int = 512, preemph: float = 0.97
) -> Tensor:
    """Log (natural) HTK-mel filterbank energies of the pre-emphasised signal.

    ``wav: [B, T]`` -> ``[B, F, n_mels]``. Pre-emphasis ``y[n] = x[n] - preemph x[n-1]``
    (``x[-1] = 0``), rectangular window of ``win_length`` (as in the original), power spectrum
    with ``n_fft`` points, area-normalised triangular filters on the HTK mel scale, 0-8 kHz.
    """
    x = _check_wav(wav)
    if preemph:
        x = torch.cat([x[:, :1], x[:, 1:] - preemph * x[:, :-1]], dim=1)
    power = _power_spectrum(x, win_length, n_fft, "boxcar")
    mel = power @ _mel_filterbank(n_mels, n_fft, True, x.device, x.dtype)
    return torch.log(mel.clamp_min(POWER_FLOOR))


@torch.no_grad()
def mfcc(wav: Tensor, n_mfcc: int = 13, win_length: int = 400, n_fft: int = 400, n_mels: int = 40) -> Tensor:
    """MFCCs as ``librosa.feature.mfcc`` computes them (on our centred frames).

    ``wav: [B, T]`` -> ``[B, F, n_mfcc]``: Hann-windowed power spectrum, ``n_mels`` Slaney-mel
    filters (librosa's default scale), dB limited to the top 80 dB below each item's maximum,
    orthonormal DCT-II.
    """
    x = _check_wav(wav)
    power = _power_spectrum(x, win_length, n_fft, "hann")
    mel_db = _power_db(power @ _mel_filterbank(n_mels, n_fft, False, x.device, x.dtype))
    # top_db is relative to each item's own maximum (as librosa does per utterance), so an item's
    # MFCCs do not depend on what else is in the batch.
    peak = mel_db.amax(dim=(1, 2), keepdim=True)
    mel_db = torch.maximum(mel_db, peak - 80.0)
    return mel_db @ _dct_matrix(n_mels, n_mfcc, x.device, x.dtype)


def erb_centre_frequencies(n_filters: int = 40, f_min: float = 500.0) -> np.ndarray:
    """``n_filters`` centre frequencies in Hz, ascending, equally spaced on the ERB-rate scale
    (Glasberg & Moore: ERB = f / 9.26449 + 24.7) from ``f_min`` up to just below 8 kHz.

    The same set as the ``gammatone`` package's ``centre_freqs(16000, n, f_min)`` (which lists
    them descending); ``f_min`` itself is the lowest.
    """
    ear_q, min_bw = 9.26449, 24.7
    f_max = SAMPLE_RATE / 2
    fraction = np.arange(n_filters, 0, -1) / n_filters
    low, high = np.log(f_min + ear_q * min_bw), np.log(f_max + ear_q * min_bw)
    return np.exp(high + fraction * (low - high)) - ear_q * min_bw


@functools.lru_cache(maxsize=4)
def _gammatone_irs(n_filters: int, f_min: float) -> np.ndarray:
    """Impulse responses ``[n_filters, L]`` (float64) of 4th-order gammatone filters,
    ``t^3 exp(-2 pi b t) cos(2 pi f t)`` with ``b = 1.019 ERB(f)``, unit gain at ``f``.

    ``L`` is where the slowest (lowest) filter's envelope has decayed below 1e-6 of its peak.
    """
    cf = erb_centre_frequencies(n_filters, f_min)
    b = 1.019 * (cf / 9.26449 + 24.7)
    length = math.ceil(SAMPLE_RATE * 25.0 / (2 * math.pi * b.min()))
    t = np.arange(length) / SAMPLE_RATE
    irs = t**3 * np.exp(-2 * np.pi * b[:, None] * t) * np.cos(2 * np.pi * cf[:, None] * t)
    gain = np.abs(irs @ np.exp(-2j * np.pi * np.outer(t, cf))).diagonal()
    return irs / gain[:, None]


@functools.lru_cache(maxsize=16)
def _gammatone_spectra(
    n_filters: int, f_min: float, n_fft: int, device: torch.device, dtype: torch.dtype
) -> Tensor:
    irs = torch.as_tensor(_gammatone_irs(n_filters, f_min), dtype=dtype, device=device)
    return torch.fft.rfft(irs, n=n_fft)


def _fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: FFT-friendly without doubling the work like a power of two."""
    best = 1 << max(n - 1, 0).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            size = p35
            while size < n:
                size *= 2
            best = min(best, size)
            p35 *= 3
        p5 *= 5
    return best


def _window_mean_square(x: Tensor, win_length: int, n_frames: int) -> Tensor:
    """Mean of ``x ** 2`` over windows of ``win_length`` centred on ``160 t`` -> ``[B, C, F]``.

    ``x: [B, C, T']`` holds samples ``0 .. T'-1``; windows read zeros before 0 and beyond ``T'``.
    Window starts (``160 t - win_length // 2``) and lengths are whole multiples of
    ``g = gcd(160, win_length // 2, win_length)`` samples (40 for 400, 32 for 2048): sum blocks of
    ``g`` first, then difference a float64 cumulative sum over the g-times-fewer blocks, so the
    full-rate signal is only squared and summed once, never padded or copied.
    """
    block = math.gcd(HOP, win_length // 2, win_length)
    end = (n_frames - 1) * HOP + win_length - win_length // 2  # past the last window's end
    n_blocks = -(-end // block)
    x = x[..., : n_blocks * block]
    if x.shape[-1] < n_blocks * block:
        x = F.pad(x, (0, n_blocks * block - x.shape[-1]))
    sums = x.square().unflatten(-1, (n_blocks, block)).sum(-1)
    left_blocks = (win_length // 2) // block
    csum = F.pad(sums.double().cumsum(-1), (left_blocks + 1, 0))
    starts = torch.arange(n_frames, device=x.device) * (HOP // block)
    window = csum[..., starts + win_length // block] - csum[..., starts]
    return (window / win_length).to(x.dtype)


@torch.no_grad()
def gammatone(wav: Tensor, n_filters: int = 40, f_min: float = 500.0, win_length: int = 400) -> Tensor:
    """Log RMS of 4th-order ERB-spaced gammatone filter outputs.

    ``wav: [B, T]`` -> ``[B, F, n_filters]``, bands ascending in frequency from ``f_min`` to
    just below 8 kHz (the order of ``gammatone.gtgram`` rows). Each band is the (causal)
    FIR convolution of the zero-extended signal with the filter's impulse response (ringing on past
    the end), via one batched FFT; its RMS
    over a rectangular centred window of ``win_length``, then the natural log (as ``0.5 log(mean
    square)``, floored at -100 dB). The original used the package's IIR (Slaney) filters on the
    CPU and started each window at ``160 t``.
    """
    x = _check_wav(wav)
    n_frames = num_frames(x.shape[-1])
    ir_length = _gammatone_irs(n_filters, f_min).shape[-1]
    # Long enough for the full linear convolution (no wrap-around) and for the last window: the
    # filters ring on past the input's end, as they do on a zero-padded input.
    last_sample = (n_frames - 1) * HOP + win_length
    n_fft = _fft_size(max(x.shape[-1] + ir_length - 1, last_sample))
    spectra = _gammatone_spectra(n_filters, f_min, n_fft, x.device, x.dtype)
    bands = torch.fft.irfft(torch.fft.rfft(x, n=n_fft)[:, None, :] * spectra, n=n_fft)
    mean_square = _window_mean_square(bands, win_length, n_frames)
    return 0.5 * torch.log(mean_square.clamp_min(POWER_FLOOR)).transpose(1, 2)


# --------------------------------------------------------------------------------------------
# prosody
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def pitch(
    wav: Tensor,
    f_min: float = 60.0,
    f_max: float = 300.0,
    win_length: int = 320,
    threshold: float = 0.15,
    voicing_threshold: float = 0.45,
    silence_threshold: float = 0.03,
) -> tuple[Tensor, Tensor]:
    """Batched YIN pitch tracker: ``wav: [B, T]`` -> ``(f0 [B, F] Hz, voiced [B, F] bool)``.

    Why YIN in torch rather than a CPU tracker cached on disk: training draws random chunks and
    computes every target on the training device, so F0 must be a batched tensor op too; a cache
    keyed by file would also tie targets to whole files. Validated against Praat (parselmouth) on
    real speech in the tests (gross errors and voicing agreement).

    Per frame (centred on 160 t): the difference function over a ``win_length`` integration
    window for lags up to ``SR / f_min``, cumulative-mean normalised (YIN, de Cheveigne &
    Kawahara 2002); the period is the first local minimum below ``threshold`` in
    ``[SR / f_max, SR / f_min]`` (else the global minimum), refined by a parabola. A frame is
    voiced when that minimum is below ``voicing_threshold`` and the frame's peak amplitude is at
    least ``silence_threshold`` of the item's peak (Praat's silence criterion); octave jumps are
    then fixed against the neighbouring frames (:func:`_fix_octave_jumps`). ``f0`` is 0 where
    unvoiced. The thresholds were tuned against Praat on LibriSpeech/EmoDB/RAVDESS files that
    the tests do not use.
    """
    x = _check_wav(wav)
    tau_min = int(SAMPLE_RATE // f_max)
    tau_max = math.ceil(SAMPLE_RATE / f_min)
    n_lags = tau_max + 2  # one lag past tau_max for the neighbour test and the parabola
    seg_length = win_length + n_lags - 1
    # At lag tau the window [0, W) is compared with [tau, tau + W): centre the comparison of a
    # mid-range lag on 160 t rather than the whole segment, which would sit up to 5 ms late.
    centre = win_length // 2 + (tau_min + tau_max) // 4
    frames = _frames(x, seg_length, centre)  # [B, F, seg_length]
    n_fft = _fft_size(seg_length)

    head = frames[..., :win_length]
    xcorr = torch.fft.irfft(torch.fft.rfft(head, n=n_fft).conj() * torch.fft.rfft(frames, n=n_fft), n=n_fft)[
        ..., :n_lags
    ]
    energy = F.pad(frames.square().cumsum(-1), (1, 0))
    lagged = energy[..., win_length : win_length + n_lags] - energy[..., :n_lags]
    diff = (energy[..., win_length : win_length + 1] + lagged - 2 * xcorr).clamp_min(0.0)

    lags = torch.arange(n_lags, device=x.device, dtype=x.dtype)
    running = diff[..., 1:].cumsum(-1)
    cmnd = torch.ones_like(diff)
    cmnd[..., 1:] = torch.where(
        running > 0, diff[..., 1:] * lags[1:] / running.clamp_min(1e-20), torch.ones_like(running)
    )

    inner = cmnd[..., tau_min : tau_max + 1]
    prev, nxt = cmnd[..., tau_min - 1 : tau_max], cmnd[..., tau_min + 1 : tau_max + 2]
    dips = (inner < prev) & (inner <= nxt) & (inner < threshold)
    first_dip = dips.int().argmax(-1)
    tau = torch.where(dips.any(-1), first_dip, inner.argmin(-1)) + tau_min

    lag, aperiodicity = _refine_lag(cmnd, tau)
    start = centre - win_length // 2
    peak = frames[..., start : start + win_length].abs().amax(-1)
    item_peak = x.abs().amax(-1, keepdim=True).clamp_min(1e-12)
    voiced = (aperiodicity < voicing_threshold) & (peak >= silence_threshold * item_peak)
    lag = _fix_octave_jumps(cmnd, lag, voiced, tau_min, tau_max, voicing_threshold)
    f0 = SAMPLE_RATE / lag
    voiced = voiced & (f0 >= f_min) & (f0 <= f_max)
    return torch.where(voiced, f0, 0.0), voiced


def _refine_lag(cmnd: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
    """Parabolic interpolation of ``cmnd: [B, F, L]`` around integer lags ``tau: [B, F]``
    -> (fractional lag ``[B, F]``, ``cmnd`` at ``tau``)."""
    around = torch.gather(cmnd, -1, torch.stack([tau - 1, tau, tau + 1], -1))
    before, centre, after = around.unbind(-1)
    curvature = before - 2 * centre + after
    shift = torch.where(curvature > 0, 0.5 * (before - after) / curvature.clamp_min(1e-12), 0.0)
    return tau.to(cmnd.dtype) + shift.clamp(-1.0, 1.0), centre


def _fix_octave_jumps(
    cmnd: Tensor,
    lag: Tensor,
    voiced: Tensor,
    tau_min: int,
    tau_max: int,
    max_aperiodicity: float,
    context: int = 9,
) -> Tensor:
    """Move each frame's ``lag: [B, F]`` to whichever of ``lag``, ``lag / 2``, ``2 lag``,
    ``lag / 3``, ``3 lag`` is closest to the median log-lag of the voiced frames among its
    ``context`` neighbours, if that lag is periodic too (``cmnd < max_aperiodicity``).

    Frame-wise YIN jumps an octave (or a twelfth) now and then (creaky voice, weak fundamentals); Praat avoids
    that with a Viterbi path over candidates, this is the batched, local equivalent.
    """
    log_lag = torch.where(voiced, lag.log(), math.nan)
    half = context // 2
    reference = F.pad(log_lag, (half, half), value=math.nan).unfold(-1, context, 1)
    reference = reference.nanmedian(-1).values
    candidates = lag[..., None] * lag.new_tensor([1.0, 0.5, 2.0, 1 / 3, 3.0])
    rounded = candidates.round().long()
    in_range = (rounded >= tau_min) & (rounded <= tau_max)
    periodic = torch.gather(cmnd, -1, rounded.clamp(tau_min, tau_max)) < max_aperiodicity
    allowed = in_range & periodic
    allowed[..., 0] = True
    distance = (candidates.log() - reference[..., None]).abs()
    distance = torch.where(allowed, distance, math.inf).nan_to_num(math.inf)
    choice = torch.where(reference.isnan(), 0, distance.argmin(-1))
    moved = torch.gather(rounded.clamp(tau_min, tau_max), -1, choice[..., None])[..., 0]
    return torch.where(choice == 0, lag, _refine_lag(cmnd, moved)[0])


def _interpolate_log_f0(f0: Tensor, voiced: Tensor, floor_hz: float) -> Tensor:
    """``log f0`` ``[B, F]`` with unvoiced frames linearly interpolated between the neighbouring
    voiced frames; edges hold the nearest voiced value; an item with no voiced frame gets
    ``log(floor_hz)`` (ours; the original left -23 there)."""
    n_frames = f0.shape[-1]
    idx = torch.arange(n_frames, device=f0.device).expand_as(f0)
    log_f0 = torch.log(f0.clamp_min(floor_hz))
    before = torch.where(voiced, idx, -1).cummax(-1).values
    after = torch.where(voiced, idx, n_frames).flip(-1).cummin(-1).values.flip(-1)
    has_before, has_after = before >= 0, after < n_frames
    val_before = torch.gather(log_f0, -1, before.clamp(0, n_frames - 1))
    val_after = torch.gather(log_f0, -1, after.clamp(0, n_frames - 1))
    span = (after - before).clamp_min(1).to(f0.dtype)
    weight = (idx - before).to(f0.dtype) / span
    between = val_before + weight * (val_after - val_before)
    filled = torch.where(has_before & has_after, between, torch.where(has_before, val_before, val_after))
    filled = torch.where(has_before | has_after, filled, math.log(floor_hz))
    return torch.where(voiced, log_f0, filled)


@torch.no_grad()
def prosody(wav: Tensor, win_length: int = 320) -> Tensor:
    """``[log F0, voiced flag, RMS energy, zero-crossing rate]`` per frame.

    ``wav: [B, T]`` -> ``[B, F, 4]``. F0 from :func:`pitch` (60-300 Hz; the original used SWIPE'
    from pysptk), log-F0 interpolated over unvoiced frames (see :func:`_interpolate_log_f0`),
    flag 1/0. RMS (linear) and zero-crossing rate (sign changes between consecutive samples per
    sample, zero counted as positive, like librosa) over a centred ``win_length`` window.
    """
    x = _check_wav(wav)
    f0, voiced = pitch(x, win_length=win_length)
    frames = _frames(x, win_length)
    rms = frames.square().mean(-1).sqrt()
    negative = frames < 0
    zcr = (negative[..., 1:] != negative[..., :-1]).sum(-1).to(x.dtype) / win_length
    log_f0 = _interpolate_log_f0(f0, voiced, floor_hz=60.0)
    return torch.stack([log_f0, voiced.to(x.dtype), rms, zcr], dim=-1)


# --------------------------------------------------------------------------------------------
# derivatives
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _savgol_matrix(width: int, order: int) -> np.ndarray:
    """``[width, width]``: row ``p`` holds the weights that give the ``order``-th derivative, at
    position ``p``, of the degree-``order`` polynomial least-squares fitted to ``width`` samples."""
    pos = np.arange(width, dtype=np.float64)
    vander = pos[:, None] ** np.arange(order + 1)[None, :]
    deriv = np.zeros_like(vander)
    deriv[:, order] = math.factorial(order)
    return deriv @ np.linalg.pinv(vander)


@torch.no_grad()
def deltas(x: Tensor, width: int = 9, order: int = 1) -> Tensor:
    """Savitzky-Golay derivative along frames, as ``librosa.feature.delta(x, width, order)``.

    ``x: [B, F, D]`` -> ``[B, F, D]``. Interior frames use the centred ``width``-frame fit; the
    first and last ``width // 2`` frames evaluate the fit of the first / last ``width`` frames
    (scipy's ``mode="interp"``). Items shorter than ``width`` frames use the longest odd window
    that fits; with too few frames for a fit the derivative is 0.
    """
    if x.dim() != 3:
        raise ValueError(f"expected x: [B, F, D], got shape {tuple(x.shape)}")
    n_frames = x.shape[1]
    if width < 3 or width % 2 == 0:
        raise ValueError(f"width must be odd and >= 3, got {width}")
    width = min(width, n_frames if n_frames % 2 else n_frames - 1)
    if width <= order:
        return torch.zeros_like(x)
    weights = torch.as_tensor(_savgol_matrix(width, order), dtype=x.dtype, device=x.device)
    half = width // 2
    # Shifted sums, not unfold: unfold @ kernel would materialise [B, F, D, width].
    interior = torch.zeros_like(x[:, : n_frames - width + 1])
    for j, w in enumerate(weights[half].tolist()):
        interior.add_(x[:, j : n_frames - width + 1 + j], alpha=w)
    head = torch.einsum("pw,bwd->bpd", weights[:half], x[:, :width])
    tail = torch.einsum("pw,bwd->bpd", weights[half + 1 :], x[:, -width:])
    return torch.cat([head, interior, tail], dim=1)


@torch.no_grad()
def with_deltas(x: Tensor) -> Tensor:
    """``x: [B, F, D]`` -> ``[B, F, 3 D]``: ``[static; delta; delta-delta]`` on the feature axis
    (width 9; delta-delta is the second-order fit, like ``librosa.feature.delta(order=2)``)."""
    return torch.cat([x, deltas(x, order=1), deltas(x, order=2)], dim=-1)


# --------------------------------------------------------------------------------------------
# registry and statistics
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """A worker target: ``fn(wav: [B, T]) -> [B, F, dim]``."""

    name: str
    dim: int
    fn: tp.Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class _WithDeltas:
    """``wav -> with_deltas(fn(wav))``; a class rather than a lambda so targets pickle."""

    fn: tp.Callable[[Tensor], Tensor]

    def __call__(self, wav: Tensor) -> Tensor:
        return with_deltas(self.fn(wav))


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        # PASE+: static + delta + delta-delta.
        Target("lps", 3 * 1025, _WithDeltas(lps)),
        Target("lps_long", 3 * 1025, _WithDeltas(functools.partial(lps, win_length=512))),
        # The same two windows on a 512-point FFT (257 bins): heads 4x smaller than the 2048-point
        # pair's 21 525 outputs, a candidate for the CPU recipe (recipes/pase_plus_v3).
        Target("lps_512", 3 * 257, _WithDeltas(functools.partial(lps, n_fft=512))),
        Target("lps_long_512", 3 * 257, _WithDeltas(functools.partial(lps, win_length=512, n_fft=512))),
        Target("fbank", 3 * 40, _WithDeltas(fbank)),
        Target("fbank_long", 3 * 40, _WithDeltas(functools.partial(fbank, win_length=1024, n_fft=1024))),
        Target("gammatone", 3 * 40, _WithDeltas(gammatone)),
        Target("gammatone_long", 3 * 40, _WithDeltas(functools.partial(gammatone, win_length=2048))),
        Target("mfcc", 3 * 13, _WithDeltas(mfcc)),
        Target(
            "mfcc_long",
            3 * 20,
            _WithDeltas(functools.partial(mfcc, n_mfcc=20, win_length=2048, n_fft=2048)),
        ),
        Target("prosody", 3 * 4, _WithDeltas(prosody)),
        # PASE v1: static only; its 20 MFCCs use the short (25 ms) window.
        Target("lps_v1", 1025, lps),
        Target("mfcc_v1", 20, functools.partial(mfcc, n_mfcc=20)),
        Target("prosody_v1", 4, prosody),
    ]
}


class TargetStats:
    """True per-dimension mean and std of a target over every frame seen by :meth:`update`.

    Ours; the original divided by the std across chunks of each chunk's std, a much smaller
    divisor than the true spread, computed on 1 s unscaled chunks. Batches are merged with Chan's
    parallel update in float64, so the result equals the mean/std of all frames concatenated.
    """

    def __init__(self, dim: int | None = None, std_floor: float = 1e-5) -> None:
        self.dim = dim
        self.std_floor = std_floor
        self.count = 0
        self._mean: Tensor | None = None
        self._m2: Tensor | None = None

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Accumulate ``x: [B, F, D]`` (or any ``[..., D]``); state stays on ``x``'s device."""
        if self.dim is None:
            self.dim = x.shape[-1]
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected {self.dim} features on the last axis, got {tuple(x.shape)}")
        flat = x.detach().reshape(-1, self.dim).double()
        n = flat.shape[0]
        if n == 0:
            return
        batch_mean = flat.mean(0)
        batch_m2 = (flat - batch_mean).square().sum(0)
        if self._mean is None or self._m2 is None:
            self._mean, self._m2 = batch_mean, batch_m2
        else:
            mean, m2 = self._mean.to(flat.device), self._m2.to(flat.device)
            total = self.count + n
            delta = batch_mean - mean
            self._mean = mean + delta * (n / total)
            self._m2 = m2 + batch_m2 + delta.square() * (self.count * n / total)
        self.count += n

    def _require(self) -> tuple[Tensor, Tensor]:
        if self._mean is None or self._m2 is None:
            raise RuntimeError("TargetStats has seen no data yet: call update() first")
        return self._mean, self._m2

    @property
    def mean(self) -> Tensor:
        """``[D]`` float32."""
        return self._require()[0].float()

    @property
    def std(self) -> Tensor:
        """``[D]`` float32 population std (``ddof=0``), floored at ``std_floor``."""
        m2 = self._require()[1]
        return (m2 / self.count).sqrt().clamp_min(self.std_floor).float()

    def normalize(self, x: Tensor) -> Tensor:
        """``(x - mean) / std`` for ``x: [..., D]``."""
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return (x - mean) / std

    def state_dict(self) -> dict[str, Tensor]:
        mean, m2 = self._require()
        return {"count": torch.tensor(self.count), "mean": mean.cpu(), "m2": m2.cpu()}

    def load_state_dict(self, state: tp.Mapping[str, Tensor]) -> None:
        self._mean = state["mean"].detach().double().clone()
        self._m2 = state["m2"].detach().double().clone()
        self.count = int(state["count"])
        self.dim = self._mean.shape[-1]
