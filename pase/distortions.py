"""Online distortions of PASE+ (spec section 4), batched as tensor ops on the batch's device.

Only the anchor chunk is distorted; the targets come from the clean chunk. Each distortion
fires independently per example with its probability, in the spec's fixed order: reverberation,
overlapped speech, additive noise, clipping, Codec2 (optional), chopping, band-drop,
downsampling. The original ran them per utterance with NumPy/SciPy in the data-loader processes
(unseeded RNG, so draws repeated across workers); ours draws every parameter per example from
an optional ``torch.Generator``, so a seeded generator reproduces a batch exactly.

This module holds the recipe (:class:`DistortionConfig`, saved in a run's ``config.json``), the
:class:`Distorter` that draws each distortion's parameters, and :func:`apply_distortion` for one
named distortion (the eval's test conditions). The operations themselves (:func:`reverberate`,
:func:`mix_at_snr`, :func:`clip`, :func:`chop`, :func:`band_stop`, :func:`lowpass`) are public
and deterministic; they live in :mod:`pase.distortion_ops` and are re-exported here.
``pase show-distortions FILE --out DIR`` (:mod:`pase.show_distortions`) renders each one on a file.
"""

from __future__ import annotations

import dataclasses
import math
import typing as tp

import numpy as np
import torch

from pase.audio import HOP, SAMPLE_RATE
from pase.distortion_ops import (
    VAD_FRAME,
    band_stop,
    chop,
    clip,
    codec2_available,
    codec2_roundtrip,
    fft_convolve,
    lowpass,
    match_energy,
    mix_at_snr,
    reverberate,
    speech_regions,
)
from pase.rirs import NoiseBank, RirBank, RoomSpec

__all__ = [
    "DISTORTIONS",
    "ROOM_FIELDS",
    "DistortionConfig",
    "Distorter",
    "rir_bank_from_config",
    "available_distortions",
    "parse_spec",
    "apply_distortion",
    "drawn_rir",
    # the operations, from pase.distortion_ops
    "match_energy",
    "fft_convolve",
    "reverberate",
    "mix_at_snr",
    "clip",
    "speech_regions",
    "chop",
    "band_stop",
    "lowpass",
    "codec2_available",
    "codec2_roundtrip",
]

Tensor = torch.Tensor

DISTORTIONS = ("reverb", "overlap", "noise", "clip", "codec2", "chop", "bandrop", "downsample")
#: DistortionConfig's simulated-room fields (its ``--distortions.*`` flags and ``config.json``
#: keys) and the :class:`~pase.rirs.RoomSpec` field each one sets: RoomSpec is the recipe, and
#: its defaults are these fields' defaults.
ROOM_FIELDS = {
    "n_sim_rooms": "n_rooms",
    "rooms_seed": "seed",
    "room_size_min": "size_min",
    "room_size_max": "size_max",
    "room_rt60_range": "rt60_range",
    "rir_max_len": "max_len",
}
_ROOMS = RoomSpec()


@dataclasses.dataclass
class DistortionConfig:
    """Every knob of the PASE+ distortion recipe; defaults are the reference values."""

    reverb_p: float = 0.5
    """Probability of reverberation (step 1)."""
    overlap_p: float = 0.1
    """Probability of overlapped speech (step 2)."""
    noise_p: float = 0.4
    """Probability of additive noise (step 3)."""
    clip_p: float = 0.2
    """Probability of clipping (step 4)."""
    codec2: bool = False
    """Enable Codec2 (step 5); needs ``pycodec2``. The original had it on by default (**ours**:
    off unless enabled and installed)."""
    codec2_p: float = 0.3
    """Probability of Codec2 when ``codec2`` is enabled."""
    codec2_bitrate: int = 1600
    """Codec2 mode (bits per second)."""
    chop_p: float = 0.2
    """Probability of chopping (step 6)."""
    bandrop_p: float = 0.35
    """Probability of band-drop (step 7)."""
    downsample_p: float = 0.25
    """Probability of 8 kHz downsampling (step 8)."""

    rir_dir: str | None = None
    """Folder of measured RIRs added to the simulated ones (e.g. ``../shared/speech/rir``)."""
    n_sim_rooms: int = _ROOMS.n_rooms
    """Simulated rooms in the RIR bank, ``RoomSpec.n_rooms`` (0 with ``rir_dir`` for measured RIRs
    only)."""
    rooms_seed: int = _ROOMS.seed
    """Seed of the simulated rooms, ``RoomSpec.seed`` (part of the cache key)."""
    room_size_min: tuple[float, float, float] = _ROOMS.size_min
    """Smallest simulated room (length, width, height) in metres, ``RoomSpec.size_min``."""
    room_size_max: tuple[float, float, float] = _ROOMS.size_max
    """Largest simulated room (length, width, height) in metres, ``RoomSpec.size_max``."""
    room_rt60_range: tuple[float, float] = _ROOMS.rt60_range
    """Target RT60 range (s) of the simulated rooms, ``RoomSpec.rt60_range``."""
    rir_max_len: int = _ROOMS.max_len
    """RIRs are peak-normalised and truncated to this many samples, ``RoomSpec.max_len``."""
    rir_cache_dir: str | None = None
    """Where the simulated bank is cached (default ``$PASE_CACHE_DIR/rirs`` or
    ``~/.cache/pase/rirs``)."""

    overlap_snrs: tuple[float, ...] = (5.0, 7.5, 10.0)
    """SNRs (dB) of the anchor over the overlapping speech, one drawn per example."""
    overlap_max_start: float = 0.75
    """The overlapping speech starts at a random point in this first fraction of the chunk."""

    noise_dir: str | None = None
    """Folder of noise recordings; synthetic white and pink noise when ``None``."""
    noise_snrs: tuple[float, ...] = (0.0, 5.0, 10.0)
    """SNRs (dB) of the additive noise, one drawn per example."""
    noise_seed: int = 0
    """Seed of the synthetic noise (used without ``noise_dir``)."""

    clip_levels: tuple[float, ...] = (0.1, 0.3, 0.5)
    """Clip at this fraction of the chunk's own minimum and maximum."""

    chop_counts: tuple[int, int] = (1, 5)
    """Number of chopped speech regions, drawn uniformly in this inclusive range."""
    chop_durations_ms: tuple[tuple[float, float], ...] = ((50.0, 25.0), (100.0, 50.0))
    """``(mean, deviation)`` pairs: each segment picks one pair, then a duration uniform in
    ``mean +- deviation``."""
    vad_threshold_db: float = 20.0
    """A VAD frame is speech when its energy is within this many dB of the chunk's loudest."""
    vad_min_silence_ms: float = 40.0
    """Pauses up to this long (stop closures) are bridged. With these VAD defaults a 2 s chunk
    of read speech (LibriSpeech) has about 3 regions (1-6), roughly words."""
    vad_min_speech_ms: float = 40.0
    """Speech regions up to this long are dropped as clicks."""

    bandrop_ranges_hz: tuple[tuple[float, float], ...] = (
        (0.0, 1000.0),
        (1000.0, 2000.0),
        (2000.0, 4000.0),
        (4000.0, 8000.0),
    )
    """The dropped band lies inside one of these ranges, drawn uniformly."""
    bandrop_mean_widths_hz: tuple[float, ...] = (360.0, 380.0, 770.0, 1560.0)
    """Mean band width per range; widths are uniform in 0.5-1.5 times the mean."""
    bandrop_taps: int = 1025
    """Length of the band-stop FIR (odd)."""

    downsample_cutoff_hz: float = 4000.0
    """The low-pass FIR's stop band starts here (8 kHz sampling, telephone band)."""
    downsample_taps: int = 255
    """Length of the low-pass FIR (odd)."""
    fir_stopband_db: float = 60.0
    """Stop-band attenuation of both FIRs (Kaiser window design)."""

    def __post_init__(self) -> None:
        for name in DISTORTIONS:
            p = getattr(self, f"{name}_p")
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"DistortionConfig.{name}_p must be in [0, 1], got {p}")
        choices = ("overlap_snrs", "noise_snrs", "clip_levels", "chop_durations_ms")
        for name in choices:
            if len(getattr(self, name)) == 0:
                raise ValueError(f"DistortionConfig.{name} must not be empty")
        if len(self.bandrop_ranges_hz) != len(self.bandrop_mean_widths_hz):
            raise ValueError("bandrop_ranges_hz and bandrop_mean_widths_hz differ in length")
        if self.bandrop_taps % 2 == 0 or self.downsample_taps % 2 == 0:
            raise ValueError("bandrop_taps and downsample_taps must be odd (zero-phase FIRs)")
        if not 1 <= self.chop_counts[0] <= self.chop_counts[1]:
            raise ValueError(f"chop_counts must be 1 <= low <= high, got {self.chop_counts}")
        if not 0.0 <= self.overlap_max_start < 1.0:
            raise ValueError(f"overlap_max_start must be in [0, 1), got {self.overlap_max_start}")

    @classmethod
    def pase_plus(cls, **overrides: tp.Any) -> DistortionConfig:
        """The PASE+ recipe (the defaults), with any field overridden."""
        return cls(**overrides)

    @classmethod
    def none(cls, **overrides: tp.Any) -> DistortionConfig:
        """Every probability 0 (clean training), with any field overridden."""
        return cls(**{**{f"{name}_p": 0.0 for name in DISTORTIONS}, **overrides})

    def room_spec(self) -> RoomSpec:
        """The simulated-room recipe of this config (``RoomSpec``'s own values for the rest)."""
        return RoomSpec(**{spec: getattr(self, ours) for ours, spec in ROOM_FIELDS.items()})

    def to_dict(self) -> dict[str, tp.Any]:
        """JSON-ready fields (saved beside a checkpoint)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: tp.Mapping[str, tp.Any]) -> DistortionConfig:
        """Inverse of :meth:`to_dict` (JSON lists become tuples); unknown keys are an error."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"unknown DistortionConfig fields: {', '.join(unknown)}")

        def tupled(v: tp.Any) -> tp.Any:
            return tuple(tupled(x) for x in v) if isinstance(v, list) else v

        return cls(**{k: tupled(v) for k, v in d.items()})


# --------------------------------------------------------------------------------------------
# Random draws and the distorter
# --------------------------------------------------------------------------------------------


class _Draw:
    """Random draws from ``generator`` (on its device) delivered on ``device``."""

    def __init__(self, generator: torch.Generator | None, device: torch.device) -> None:
        self.generator = generator
        self.device = device
        self.source = generator.device if generator is not None else device

    def uniform(self, *shape: int) -> Tensor:
        return torch.rand(shape, generator=self.generator, device=self.source).to(self.device)

    def integers(self, low: int, high: int, *shape: int) -> Tensor:
        """Uniform integers in ``[low, high)``."""
        x = torch.randint(low, high, shape, generator=self.generator, device=self.source)
        return x.to(self.device)

    def choice(self, values: tp.Sequence[float], *shape: int) -> Tensor:
        table = torch.tensor(values, dtype=torch.float32, device=self.device)
        return table[self.integers(0, len(values), *shape)]


def _on_fired(x: Tensor, fired: Tensor, fn: tp.Callable[[Tensor], Tensor]) -> Tensor:
    """``x`` with the rows of ``fired: [B]`` (bool) replaced by ``fn(row indices)``."""
    index = fired.nonzero().squeeze(1)
    if index.numel() == 0:
        return x
    return x.index_copy(0, index, fn(index))


class Distorter(torch.nn.Module):
    """The PASE+ distortion pipeline with its RIR and noise banks held as tensors.

    ``Distorter(config)`` loads the banks the config needs (the simulated rooms from their disk
    cache, built once on first use); pass ``rir_bank`` / ``noise_bank`` to supply your own.
    ``.to(device)`` moves the banks; calling it on ``chunk: [B, T]`` returns the distorted
    ``[B, T]`` on the chunk's device.
    """

    rirs: Tensor
    rir_peaks: Tensor
    noise: Tensor
    noise_starts: Tensor
    noise_lengths: Tensor

    def __init__(
        self,
        config: DistortionConfig | None = None,
        *,
        rir_bank: RirBank | None = None,
        noise_bank: NoiseBank | None = None,
    ) -> None:
        super().__init__()
        self.config = config or DistortionConfig()
        cfg = self.config
        if rir_bank is None and (cfg.reverb_p > 0 or cfg.overlap_p > 0):
            rir_bank = rir_bank_from_config(cfg)
        if noise_bank is None and cfg.noise_p > 0:
            noise_bank = (
                NoiseBank.from_dir(cfg.noise_dir)
                if cfg.noise_dir
                else NoiseBank.synthetic(seed=cfg.noise_seed)
            )
        if cfg.codec2 and not codec2_available():
            raise ValueError("DistortionConfig.codec2 needs the pycodec2 package, which is not installed")
        self.rir_bank, self.noise_bank = rir_bank, noise_bank
        rirs = torch.from_numpy(rir_bank.rirs) if rir_bank else torch.zeros(0, 1)
        self.register_buffer("rirs", rirs, persistent=False)
        self.register_buffer("rir_peaks", rirs.abs().argmax(-1), persistent=False)
        noise = noise_bank or NoiseBank([np.zeros(1, np.float32)], ["none"])
        self.register_buffer("noise", torch.from_numpy(noise.audio), persistent=False)
        self.register_buffer("noise_starts", torch.from_numpy(noise.starts), persistent=False)
        self.register_buffer("noise_lengths", torch.from_numpy(noise.lengths), persistent=False)

    def extra_repr(self) -> str:
        return f"rir_bank={self.rir_bank!r}, noise_bank={self.noise_bank!r}"

    def forward(
        self, chunk: Tensor, *, other: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Distort ``chunk: [B, T]`` with this distorter's config (see :meth:`distort`)."""
        return self.distort(chunk, other=other, generator=generator)

    def distort(
        self,
        chunk: Tensor,
        config: DistortionConfig | None = None,
        *,
        other: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Distort ``chunk: [B, T]`` -> ``[B, T]`` (same dtype and device).

        ``config`` overrides this distorter's probabilities and settings (the banks stay).
        ``other: [B, T]`` is the clean speech that overlaps row ``i`` (another item's chunk);
        by default the batch rolled by one, so row ``i`` overlaps with clean row ``i - 1``.
        Each step draws its parameters for every row whether it fires or not, so a seeded
        ``generator`` (on any device) reproduces the batch exactly.
        """
        cfg = config or self.config
        if chunk.dim() != 2 or not chunk.is_floating_point():
            raise ValueError(f"chunk must be a float tensor [B, T], got {tuple(chunk.shape)} {chunk.dtype}")
        if other is not None and other.shape != chunk.shape:
            raise ValueError(f"other must match chunk {tuple(chunk.shape)}, got {tuple(other.shape)}")
        clean = chunk.float()
        draw = _Draw(generator, chunk.device)
        x = clean
        steps: list[tuple[float, tp.Callable[[Tensor, Tensor, _Draw, DistortionConfig], Tensor]]] = [
            (cfg.reverb_p, self._reverb),
            (cfg.overlap_p, lambda x_, f_, d_, c_: self._overlap(x_, f_, d_, c_, clean, other)),
            (cfg.noise_p, self._noise),
            (cfg.clip_p, self._clip),
            (cfg.codec2_p if cfg.codec2 else 0.0, self._codec2),
            (cfg.chop_p, self._chop),
            (cfg.bandrop_p, self._bandrop),
            (cfg.downsample_p, self._downsample),
        ]
        for p, step in steps:
            if p > 0:
                x = step(x, draw.uniform(x.shape[0]) < p, draw, cfg)
        return x.to(chunk.dtype)

    def _need(self, bank: tp.Any, what: str) -> None:
        if bank is None:
            raise ValueError(f"this Distorter has no {what} bank: build it with a config that uses {what}")

    def _reverb(self, x: Tensor, fired: Tensor, draw: _Draw, cfg: DistortionConfig) -> Tensor:
        self._need(self.rir_bank, "RIR")
        pick = draw.integers(0, self.rirs.shape[0], x.shape[0])
        return _on_fired(x, fired, lambda i: reverberate(x[i], self.rirs[pick[i]], self.rir_peaks[pick[i]]))

    def _overlap(
        self,
        x: Tensor,
        fired: Tensor,
        draw: _Draw,
        cfg: DistortionConfig,
        clean: Tensor,
        other: Tensor | None,
    ) -> Tensor:
        self._need(self.rir_bank, "RIR")
        batch, length = x.shape
        pick = draw.integers(0, self.rirs.shape[0], batch)
        start = (draw.uniform(batch) * cfg.overlap_max_start * length).long()
        snr = draw.choice(cfg.overlap_snrs, batch)
        source = clean.roll(1, 0) if other is None else other.to(x)

        def apply(i: Tensor) -> Tensor:
            wet = reverberate(source[i], self.rirs[pick[i]], self.rir_peaks[pick[i]])
            shift = torch.arange(length, device=x.device) - start[i, None]
            delayed = wet.gather(1, shift.clamp_min(0)) * (shift >= 0)
            return mix_at_snr(x[i], delayed, snr[i])

        return _on_fired(x, fired, apply)

    def _noise(self, x: Tensor, fired: Tensor, draw: _Draw, cfg: DistortionConfig) -> Tensor:
        self._need(self.noise_bank, "noise")
        batch, length = x.shape
        clip_index = draw.integers(0, self.noise_starts.shape[0], batch)
        clip_len = self.noise_lengths[clip_index]
        offset = (draw.uniform(batch) * clip_len).long()
        snr = draw.choice(cfg.noise_snrs, batch)

        def apply(i: Tensor) -> Tensor:
            # Wrapping inside the clip tiles clips shorter than the chunk.
            pos = (offset[i, None] + torch.arange(length, device=x.device)) % clip_len[i, None]
            return mix_at_snr(x[i], self.noise[self.noise_starts[clip_index[i], None] + pos], snr[i])

        return _on_fired(x, fired, apply)

    def _clip(self, x: Tensor, fired: Tensor, draw: _Draw, cfg: DistortionConfig) -> Tensor:
        level = draw.choice(cfg.clip_levels, x.shape[0])
        return _on_fired(x, fired, lambda i: clip(x[i], level[i]))

    def _codec2(self, x: Tensor, fired: Tensor, draw: _Draw, cfg: DistortionConfig) -> Tensor:
        return _on_fired(x, fired, lambda i: codec2_roundtrip(x[i], cfg.codec2_bitrate))

    def _chop(self, x: Tensor, fired: Tensor, draw: _Draw, cfg: DistortionConfig) -> Tensor:
        batch, length = x.shape
        most = cfg.chop_counts[1]
        count = draw.integers(cfg.chop_counts[0], most + 1, batch)
        stats = torch.tensor(cfg.chop_durations_ms, dtype=torch.float32, device=x.device)
        kind = draw.integers(0, len(cfg.chop_durations_ms), batch, most)
        ms = stats[kind, 0] + stats[kind, 1] * (2 * draw.uniform(batch, most) - 1)
        durations = ms * SAMPLE_RATE / 1000 * (torch.arange(most, device=x.device) < count[:, None])
        scores = draw.uniform(batch, max(1, (length - VAD_FRAME) // HOP + 1))
        vad = dict(
            threshold_db=cfg.vad_threshold_db,
            min_silence_ms=cfg.vad_min_silence_ms,
            min_speech_ms=cfg.vad_min_speech_ms,
        )
        return _on_fired(x, fired, lambda i: chop(x[i], durations[i], scores[i], **vad))

    def _bandrop(self, x: Tensor, fired: Tensor, draw: _Draw, cfg: DistortionConfig) -> Tensor:
        batch = x.shape[0]
        ranges = torch.tensor(cfg.bandrop_ranges_hz, dtype=torch.float32, device=x.device)
        means = torch.tensor(cfg.bandrop_mean_widths_hz, dtype=torch.float32, device=x.device)
        which = draw.integers(0, len(cfg.bandrop_ranges_hz), batch)
        lo, hi = ranges[which, 0], ranges[which, 1]
        width = torch.minimum(means[which] * (0.5 + draw.uniform(batch)), hi - lo)
        low = lo + draw.uniform(batch) * (hi - lo - width)
        return _on_fired(
            x,
            fired,
            lambda i: band_stop(x[i], low[i], low[i] + width[i], cfg.bandrop_taps, cfg.fir_stopband_db),
        )

    def _downsample(self, x: Tensor, fired: Tensor, draw: _Draw, cfg: DistortionConfig) -> Tensor:
        return _on_fired(
            x,
            fired,
            lambda i: lowpass(x[i], cfg.downsample_cutoff_hz, cfg.downsample_taps, cfg.fir_stopband_db),
        )


def rir_bank_from_config(config: DistortionConfig) -> RirBank:
    """The simulated rooms of ``config`` (from the disk cache) plus the RIRs of ``rir_dir``."""
    banks = []
    if config.n_sim_rooms > 0:
        banks.append(RirBank.simulated(config.room_spec(), config.rir_cache_dir, verbose=True))
    if config.rir_dir:
        banks.append(RirBank.from_dir(config.rir_dir, config.rir_max_len))
    if not banks:
        raise ValueError("reverberation needs RIRs: set n_sim_rooms > 0 or rir_dir")
    return RirBank.concat(banks)


def available_distortions() -> tuple[str, ...]:
    """Names :func:`apply_distortion` accepts here (``codec2`` only when installed)."""
    return tuple(d for d in DISTORTIONS if d != "codec2" or codec2_available())


def parse_spec(spec: str, base: DistortionConfig | None = None) -> DistortionConfig:
    """Config that applies exactly one distortion, always: ``"reverb"``, ``"overlap"`` /
    ``"overlap:5dB"``, ``"noise"`` / ``"noise:5dB"``, ``"clip"`` / ``"clip:0.3"``, ``"chop"``,
    ``"bandrop"``, ``"downsample"``, ``"codec2"`` (if installed). Other settings from ``base``."""
    name, _, value = spec.strip().lower().partition(":")
    valid = available_distortions()
    if name not in valid:
        raise ValueError(
            f"unknown distortion {spec!r}; valid: {', '.join(valid)} (noise:5dB, clip:0.3, overlap:7.5dB)"
        )
    settings: dict[str, tp.Any] = {**{f"{d}_p": 0.0 for d in DISTORTIONS}, f"{name}_p": 1.0}
    if name == "codec2":
        settings["codec2"] = True
    if value:
        field = {"noise": "noise_snrs", "overlap": "overlap_snrs", "clip": "clip_levels"}.get(name)
        number = value.removesuffix("db") if name != "clip" else value
        try:
            parsed = float(number)
        except ValueError:
            parsed = math.nan
        if field is None or not math.isfinite(parsed):
            raise ValueError(f"bad distortion setting {spec!r}: use noise:5dB, overlap:7.5dB or clip:0.3")
        settings[field] = (parsed,)
    base = base or DistortionConfig()
    return dataclasses.replace(base, **settings)


def apply_distortion(
    spec: str,
    wav: Tensor,
    distorter: Distorter,
    generator: torch.Generator | None = None,
    other: Tensor | None = None,
) -> Tensor:
    """Apply the one distortion named by ``spec`` (see :func:`parse_spec`) to every row of
    ``wav: [B, T]`` with ``distorter``'s banks and settings -> ``[B, T]``."""
    return distorter.distort(wav, parse_spec(spec, distorter.config), other=other, generator=generator)


def drawn_rir(distorter: Distorter, seed: int) -> int:
    """Index of the RIR that ``apply_distortion("reverb", one_row, distorter, gen)`` uses with
    ``gen`` seeded by ``seed``: the same draws in the same order (whether it fires, then the RIR)."""
    gen = torch.Generator().manual_seed(seed)
    draw = _Draw(gen, torch.device("cpu"))
    draw.uniform(1)
    return int(draw.integers(0, distorter.rirs.shape[0], 1)[0])
