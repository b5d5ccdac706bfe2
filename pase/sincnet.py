"""SincConv: a learnable band-pass filterbank on the raw waveform (SincNet, Ravanelli & Bengio 2018).

Each of the 64 filters is the difference of two Hamming-windowed sincs; only its low cut-off and
band width are learned (2 parameters per filter, 128 in all).
"""

from __future__ import annotations

import math
import typing as tp

import torch
import torch.nn.functional as F
from torch import nn


def hz_to_mel(hz: float | torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


class SincConv(nn.Module):
    """Band-pass sinc filterbank, stride 1, "same" reflect padding, no bias.

    ``x: [B, 1, T] -> [B, out_channels, T]``. Cut-offs in Hz:
    ``low = min_low_hz + |low_hz_|``, ``high = clamp(low + min_band_hz + |band_hz_|, min_low_hz, sr/2)``.
    The parameter names and shapes (``low_hz_``, ``band_hz_``: ``[C, 1]``, in Hz) match the original
    checkpoints, so ``FE_e199.ckpt`` loads without conversion of this block.

    In effect a fixed filterbank under the reference recipe: Adam moves a parameter by about its
    learning rate per step, and the parameters are in Hz, so at the encoder's 1e-3 a cut-off
    moves at most ~1 Hz per 1000 steps (measured: at most 1.7 Hz over the first packaged model's
    1900 steps, below fp16 rounding of the saved weights). The original had the same units and
    learning rate. Learning the bands at a useful rate would need parameters in a normalised unit
    (as later SincNet versions did) or their own learning rate; neither is part of any preset.
    """

    def __init__(
        self,
        out_channels: int = 64,
        kernel_size: int = 251,
        sample_rate: int = 16000,
        min_low_hz: float = 50.0,
        min_band_hz: float = 50.0,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"SincConv kernel_size must be odd, got {kernel_size}")
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.sample_rate = sample_rate
        self.min_low_hz = min_low_hz
        self.min_band_hz = min_band_hz

        # Init: out_channels + 1 points equally spaced on the mel scale between 30 Hz and
        # sr/2 - (min_low + min_band); lows are the first points, bands the differences.
        high_hz = sample_rate / 2 - (min_low_hz + min_band_hz)
        mel = torch.linspace(float(hz_to_mel(30.0)), float(hz_to_mel(high_hz)), out_channels + 1)
        hz = mel_to_hz(mel.double()).float()
        self.low_hz_ = nn.Parameter(hz[:-1].view(-1, 1).clone())
        self.band_hz_ = nn.Parameter(hz.diff().view(-1, 1).clone())

        # Left half of the Hamming window and of the time axis (the filters are symmetric).
        # The half-window is sampled at kernel_size // 2 points over [0, kernel_size/2 - 1], which
        # is how SincNet (and so the released PASE+ weights) built it; keeping it makes those
        # weights give the same filters here.
        half = kernel_size // 2
        n_lin = torch.linspace(0, kernel_size / 2 - 1, steps=half)
        self.register_buffer(
            "window_", 0.54 - 0.46 * torch.cos(2 * math.pi * n_lin / kernel_size), persistent=False
        )
        n = (kernel_size - 1) / 2.0
        self.register_buffer(
            "n_", 2 * math.pi * torch.arange(-n, 0).view(1, -1) / sample_rate, persistent=False
        )

    def cutoffs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(low, high)`` cut-off frequencies in Hz, each ``[C, 1]``."""
        low = self.min_low_hz + torch.abs(self.low_hz_)
        high = torch.clamp(
            low + self.min_band_hz + torch.abs(self.band_hz_), self.min_low_hz, self.sample_rate / 2
        )
        return low, high

    def filters(self) -> torch.Tensor:
        """The current filterbank, ``[C, 1, kernel_size]``, each filter's centre tap equal to 1."""
        low, high = self.cutoffs()
        band = (high - low)[:, 0]
        n_ = tp.cast(torch.Tensor, self.n_).to(low.dtype)
        window = tp.cast(torch.Tensor, self.window_).to(low.dtype)
        left = (torch.sin(high @ n_) - torch.sin(low @ n_)) / (n_ / 2) * window
        centre = 2 * band.view(-1, 1)
        filt = torch.cat([left, centre, torch.flip(left, dims=[1])], dim=1) / (2 * band[:, None])
        return filt.view(self.out_channels, 1, self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, 1, T] -> [B, C, T]``."""
        pad = self.kernel_size // 2
        x = F.pad(x, (pad, pad), mode="reflect")
        return F.conv1d(x, self.filters().to(x.dtype))
