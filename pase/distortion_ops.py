"""The deterministic signal operations behind the online distortions, batched over rows.

Each function maps ``wav: [B, T]`` (float, 16 kHz, any device) to ``[B, T]`` with every
parameter given per row: convolution with a room impulse response (:func:`reverberate`), mixing
at an SNR (:func:`mix_at_snr`), clipping (:func:`clip`), an energy VAD (:func:`speech_regions`)
and chopping of its regions (:func:`chop`), Kaiser-window FIRs (:func:`band_stop`,
:func:`lowpass`) and the optional Codec2 round trip (:func:`codec2_roundtrip`). Nothing here is
random: :class:`pase.distortions.Distorter` draws the parameters and applies these.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import torch
import torch.nn.functional as F

from pase.audio import HOP, SAMPLE_RATE

Tensor = torch.Tensor

#: VAD frame: 20 ms windows every 10 ms.
VAD_FRAME = 320


def _energy(x: Tensor) -> Tensor:
    """``x: [B, T]`` -> ``[B, 1]`` sum of squares."""
    return x.pow(2).sum(-1, keepdim=True)


def match_energy(y: Tensor, ref: Tensor) -> Tensor:
    """Rescale each row of ``y: [B, T]`` to the energy of the same row of ``ref: [B, T]``."""
    return y * torch.sqrt(_energy(ref) / _energy(y).clamp_min(1e-20))


def fft_convolve(x: Tensor, h: Tensor) -> Tensor:
    """Full linear convolution of ``x: [B, T]`` with ``h: [B or 1, L]`` -> ``[B, T + L - 1]``."""
    n = x.shape[-1] + h.shape[-1] - 1
    nfft = 1 << (n - 1).bit_length()
    y = torch.fft.irfft(torch.fft.rfft(x, nfft) * torch.fft.rfft(h, nfft), nfft)
    return y[..., :n]


def reverberate(wav: Tensor, rir: Tensor, peak: Tensor) -> Tensor:
    """Convolve ``wav: [B, T]`` with ``rir: [B, L]``, shift left by the RIR's ``peak: [B]``
    index (the direct path stays where the dry sound was), cut to ``T``, restore the energy."""
    wet = fft_convolve(wav, rir)
    index = peak[:, None] + torch.arange(wav.shape[-1], device=wav.device)
    return match_energy(wet.gather(1, index), wav)


def mix_at_snr(clean: Tensor, interference: Tensor, snr_db: Tensor) -> Tensor:
    """Add ``interference: [B, T]`` to ``clean: [B, T]`` at ``snr_db: [B]`` (energy over the
    chunk), then rescale the mix to the clean energy. A silent interference leaves ``clean``."""
    gain = torch.sqrt(
        _energy(clean) / (_energy(interference).clamp_min(1e-20) * 10 ** (snr_db[:, None] / 10))
    )
    return match_energy(clean + gain * interference, clean)


def clip(wav: Tensor, level: Tensor) -> Tensor:
    """Clip each row of ``wav: [B, T]`` to ``level: [B]`` times its own minimum and maximum."""
    return torch.clamp(
        wav, min=level[:, None] * wav.amin(-1, keepdim=True), max=level[:, None] * wav.amax(-1, keepdim=True)
    )


def _dilate(mask: Tensor, radius: int) -> Tensor:
    return F.max_pool1d(mask[:, None], 2 * radius + 1, stride=1, padding=radius)[:, 0]


def speech_regions(
    wav: Tensor, threshold_db: float = 20.0, min_silence_ms: float = 40.0, min_speech_ms: float = 40.0
) -> tuple[Tensor, Tensor]:
    """Energy VAD: speech regions of ``wav: [B, T]`` as ``(first, last): [B, R]`` frame indices
    (frame ``f`` covers samples ``[160 f, 160 f + 320)``; ``last = -1`` pads absent regions).

    A frame is speech when its energy is within ``threshold_db`` of the row's loudest frame
    (and above -100 dB); pauses up to ``min_silence_ms`` are bridged and regions up to
    ``min_speech_ms`` dropped (morphological closing, then opening). The original fed malformed
    frames to its VAD; **ours** is computed on the true frames, batched.
    """
    batch = wav.shape[0]
    if wav.shape[-1] < VAD_FRAME:
        empty = torch.zeros(batch, 0, dtype=torch.long, device=wav.device)
        return empty, empty
    db = 10 * torch.log10(wav.unfold(-1, VAD_FRAME, HOP).pow(2).mean(-1).clamp_min(1e-10))
    mask = ((db > db.amax(-1, keepdim=True) - threshold_db) & (db > -100.0)).float()
    ms_per_frame = 1000 * HOP / SAMPLE_RATE
    close, open_ = round(min_silence_ms / ms_per_frame / 2), round(min_speech_ms / ms_per_frame / 2)
    mask = 1 - _dilate(1 - _dilate(mask, close), close)
    speech = _dilate(1 - _dilate(1 - mask, open_), open_) > 0.5
    starts = speech & ~F.pad(speech[:, :-1], (1, 0), value=False)
    region = (torch.cumsum(starts.long(), -1) * speech.long()).long()  # 0 = silence, 1.. = region
    n_regions = int(starts.sum(-1).max())
    frames = torch.arange(speech.shape[-1], device=wav.device).expand_as(region)
    first = torch.full((batch, n_regions + 1), speech.shape[-1], device=wav.device, dtype=torch.long)
    last = torch.full_like(first, -1)
    first = first.scatter_reduce(1, region, frames, "amin")[:, 1:]
    last = last.scatter_reduce(1, region, frames, "amax")[:, 1:]
    return first, last


def chop(wav: Tensor, durations: Tensor, scores: Tensor, **vad: float) -> Tensor:
    """Zero one segment centred in each of the best-scoring speech regions of ``wav: [B, T]``.

    ``durations: [B, K]`` (samples) are the segment lengths, 0 for no segment; segment ``k``
    goes to the region with the ``k``-th highest ``scores: [B, F]`` value at its first frame
    (``F >= (T - 320) // 160 + 1``), so a row with fewer regions than segments gets one per
    region. ``vad`` goes to :func:`speech_regions`. The original always chopped the first
    regions; **ours** picks them at random through ``scores``.
    """
    first, last = speech_regions(wav, **vad)
    n_regions = first.shape[-1]
    k = min(durations.shape[-1], n_regions)
    if k == 0:
        return wav
    region_score = scores.gather(1, first.clamp_max(scores.shape[-1] - 1))
    region_score = region_score.masked_fill(last < 0, -math.inf)
    best = region_score.topk(k, dim=-1)
    centre = ((first + last).gather(1, best.indices) * HOP + VAD_FRAME) // 2
    length = durations[:, :k].round().long() * torch.isfinite(best.values)
    lo = centre - length // 2
    t = torch.arange(wav.shape[-1], device=wav.device)
    zero = ((t >= lo[..., None]) & (t < (lo + length)[..., None])).any(1)
    return wav.masked_fill(zero, 0.0)


def _kaiser_design(n_taps: int, stopband_db: float) -> tuple[float, float]:
    """Kaiser window ``beta`` and transition width (Hz) for a given length and attenuation."""
    if stopband_db > 50:
        beta = 0.1102 * (stopband_db - 8.7)
    elif stopband_db > 21:
        beta = 0.5842 * (stopband_db - 21) ** 0.4 + 0.07886 * (stopband_db - 21)
    else:
        beta = 0.0
    width = (stopband_db - 8) / (2.285 * (n_taps - 1)) / (2 * math.pi) * SAMPLE_RATE
    return beta, width


def _lowpass_taps(cutoff_hz: Tensor, n_taps: int, beta: float) -> Tensor:
    """Windowed-sinc low-pass FIRs ``[K, n_taps]`` with -6 dB points at ``cutoff_hz: [K]``."""
    n = torch.arange(n_taps, device=cutoff_hz.device, dtype=cutoff_hz.dtype) - (n_taps - 1) / 2
    fc = (cutoff_hz / SAMPLE_RATE)[:, None]
    window = torch.kaiser_window(n_taps, periodic=False, beta=beta, device=cutoff_hz.device)
    return 2 * fc * torch.sinc(2 * fc * n) * window.to(cutoff_hz.dtype)


def _filter_same(wav: Tensor, taps: Tensor) -> Tensor:
    """Zero-phase FIR filtering of ``wav: [B, T]`` with odd-length ``taps: [B or 1, N]``."""
    delay = (taps.shape[-1] - 1) // 2
    return fft_convolve(wav, taps)[..., delay : delay + wav.shape[-1]]


def band_stop(
    wav: Tensor, low_hz: Tensor, high_hz: Tensor, n_taps: int = 1025, stopband_db: float = 60.0
) -> Tensor:
    """Remove ``[low_hz, high_hz]`` (``[B]`` each) from ``wav: [B, T]`` with one band-stop FIR
    per row, then restore each row's energy. The transitions lie outside the band, so the
    whole nominal band is attenuated by ``stopband_db``."""
    beta, width = _kaiser_design(n_taps, stopband_db)
    nyquist = SAMPLE_RATE / 2
    edges = torch.stack([(low_hz - width / 2).clamp_min(0.0), (high_hz + width / 2).clamp_max(nyquist)])
    lp = _lowpass_taps(edges.flatten().to(wav), n_taps, beta).view(2, -1, n_taps)
    taps = -(lp[1] - lp[0])
    taps[:, (n_taps - 1) // 2] += 1.0
    return match_energy(_filter_same(wav, taps), wav)


def lowpass(wav: Tensor, stop_hz: float = 4000.0, n_taps: int = 255, stopband_db: float = 60.0) -> Tensor:
    """Low-pass ``wav: [B, T]`` with one FIR whose stop band starts at ``stop_hz`` (the 16 ->
    8 kHz telephone band for 4 kHz). Like the original, the level is not restored."""
    beta, width = _kaiser_design(n_taps, stopband_db)
    cutoff = torch.tensor([stop_hz - width / 2], device=wav.device, dtype=wav.dtype)
    return _filter_same(wav, _lowpass_taps(cutoff, n_taps, beta))


def codec2_available() -> bool:
    """Whether the optional ``pycodec2`` binding is installed."""
    return importlib.util.find_spec("pycodec2") is not None


def codec2_roundtrip(wav: Tensor, bitrate: int = 1600) -> Tensor:
    """Encode and decode each row of ``wav: [B, T]`` with Codec2 at 8 kHz (CPU, per row), back
    to 16 kHz at the original energy. Needs ``pycodec2``."""
    import pycodec2
    import soxr

    codec = pycodec2.Codec2(bitrate)
    frame = codec.samples_per_frame()
    rows = []
    for row in wav.detach().float().cpu().numpy():
        peak = max(float(np.abs(row).max()), 1e-9)
        narrow = soxr.resample(row / peak, SAMPLE_RATE, 8000)
        pcm = np.clip(narrow * 32767, -32768, 32767).astype(np.int16)
        pcm = np.pad(pcm, (0, -pcm.size % frame))
        decoded = np.concatenate(
            [codec.decode(codec.encode(pcm[i : i + frame])) for i in range(0, pcm.size, frame)]
        )
        wide = soxr.resample(decoded.astype(np.float32) / 32767, 8000, SAMPLE_RATE)
        rows.append(np.pad(wide, (0, max(0, row.size - wide.size)))[: row.size] * peak)
    return match_energy(torch.from_numpy(np.stack(rows)).to(wav), wav)
