"""The PASE / PASE+ encoder: raw 16 kHz waveform in, one feature vector every 10 ms out.

    wav [B, T] -> SincConv(64) + BN + PReLU -> 7 x (Conv1d + BN + PReLU)  (total stride 160)
              -> QRNN(512) -> W: 1x1 conv to 256 -> + dense skips -> BatchNorm (no affine)

Dense skips (PASE+): the outputs of the sinc block and of conv blocks 1-6 are mean-pooled to the
output rate and projected to 256 by bias-free 1x1 convs, then summed with W's output.

Frames: the input is zero-padded to a multiple of 160 samples, so an input of ``T`` samples gives
``ceil(T / 160)`` frames and every skip pools exactly (factors 160, 16, 8, 8, 4, 4, 2). The
original reflect-padded the raw length instead, which gives ``T // 160`` frames (+1 when
``T mod 160 >= 151``) and mis-pools the sinc skip by up to ~6 frames over 10 s.
"""

from __future__ import annotations

import dataclasses
import math
import typing as tp
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pase import hub
from pase.audio import HOP, MIN_SAMPLES, as_waveform
from pase.qrnn import QRNN
from pase.sincnet import SincConv

RNNType = tp.Literal["qrnn", "lstm", "gru", "none"]
#: "hop": zero-pad the input to a multiple of 160 (ours). "original": the original code's framing,
#: see :meth:`Encoder.hidden_states`.
Padding = tp.Literal["hop", "original"]
#: Shortest window of :meth:`Encoder.infer_long`: shorter ones add little but the per-window
#: context and call overhead (a 10 ms window made a 100 s file take minutes, not seconds).
MIN_WINDOW_SECONDS = 0.25


#: Bounds of an :class:`EncoderConfig` (PASE+ has 512 channels, kernels of at most 251 and
#: 7.8 M weights): generous for any experiment, small enough that building never exhausts memory.
MAX_CHANNELS = 4096
MAX_HIDDEN = 8192
MAX_KERNEL = 4096
MAX_BLOCKS = 32
MAX_STATE_ELEMENTS = 500_000_000
MAX_SAMPLE_RATE = 192_000


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(name: str, value: object, most: int) -> None:
    if not _is_int(value) or not 1 <= tp.cast(int, value) <= most:
        raise ValueError(f"{name} must be an integer from 1 to {most}, got {value!r}")


@dataclasses.dataclass
class EncoderConfig:
    """Architecture of a PASE encoder. Defaults are PASE+ (``EncoderConfig.pase_plus()``)."""

    sample_rate: int = 16000
    #: SincConv: number of band-pass filters, kernel size, minimum low cut and band width (Hz).
    sinc_channels: int = 64
    sinc_kernel: int = 251
    sinc_min_low_hz: float = 50.0
    sinc_min_band_hz: float = 50.0
    #: The 7 conv blocks (Conv1d with bias -> BatchNorm -> PReLU).
    channels: tuple[int, ...] = (64, 128, 128, 256, 256, 512, 512)
    kernels: tuple[int, ...] = (20, 11, 11, 11, 11, 11, 11)
    strides: tuple[int, ...] = (10, 2, 1, 2, 1, 2, 2)
    #: Recurrent layer on the last block: "qrnn" (PASE+), "lstm", "gru" or "none" (PASE v1).
    rnn: RNNType = "qrnn"
    rnn_hidden: int = 512
    #: "scan" (fast, default) or "loop" (reference); same function.
    qrnn_impl: tp.Literal["loop", "scan"] = "scan"
    #: Output dimension (W: 1x1 conv from the last layer).
    embedding_dim: int = 256
    #: Dense skips from the sinc block and blocks 1..6, summed after W.
    dense_skips: bool = True
    #: Initial slope of every encoder PReLU (the original used 0, not PyTorch's 0.25).
    prelu_init: float = 0.0

    def __post_init__(self) -> None:
        # Checked before anything is allocated: a config from a file or a crafted checkpoint must
        # not ask the allocator for gigabytes (or fail inside torch with a traceback).
        for name in ("channels", "kernels", "strides"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not all(_is_int(v) for v in value):
                raise ValueError(f"{name} must be a list of integers, got {value!r}")
            setattr(self, name, tuple(value))
        if not len(self.channels) == len(self.kernels) == len(self.strides):
            raise ValueError("channels, kernels and strides must have the same length")
        if not 1 <= len(self.channels) <= MAX_BLOCKS:
            raise ValueError(f"channels must name 1 to {MAX_BLOCKS} conv blocks, got {len(self.channels)}")
        if self.rnn not in ("qrnn", "lstm", "gru", "none"):
            raise ValueError(f"rnn must be one of qrnn, lstm, gru, none; got {self.rnn!r}")
        sizes = {"sinc_channels": self.sinc_channels, "embedding_dim": self.embedding_dim}
        sizes |= {f"channels[{i}]": c for i, c in enumerate(self.channels)}
        for name, value in sizes.items():
            _check_int(name, value, MAX_CHANNELS)
        _check_int("rnn_hidden", self.rnn_hidden, MAX_HIDDEN)
        for i, (k, s) in enumerate(zip(self.kernels, self.strides, strict=True)):
            _check_int(f"kernels[{i}]", k, MAX_KERNEL)
            _check_int(f"strides[{i}]", s, HOP)
        _check_int("sinc_kernel", self.sinc_kernel, MAX_KERNEL)
        _check_int("sample_rate", self.sample_rate, MAX_SAMPLE_RATE)
        for name in ("sinc_min_low_hz", "sinc_min_band_hz", "prelu_init"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if math.prod(self.strides) != HOP:
            raise ValueError(f"the conv strides must multiply to {HOP} (10 ms), got {self.strides}")
        if self.state_elements() > MAX_STATE_ELEMENTS:
            raise ValueError(
                f"the encoder would hold {self.state_elements():,} weights, more than {MAX_STATE_ELEMENTS:,}"
            )

    def state_elements(self) -> int:
        """Elements of the encoder's state dict (parameters and buffers), computed from the config
        alone: 7,837,257 for PASE+."""
        per_block = 6  # bias, BatchNorm weight, bias, running mean and variance, PReLU slope
        total = 7 * self.sinc_channels + 1  # low and band cut-offs, BatchNorm, PReLU, counter
        cin = self.sinc_channels
        for cout, k in zip(self.channels, self.kernels, strict=True):
            total += cin * cout * k + per_block * cout + 1
            cin = cout
        h = self.rnn_hidden
        gates = {"qrnn": 3 * h * (2 * cin + 1), "lstm": 4 * h * (cin + h + 2), "gru": 3 * h * (cin + h + 2)}
        total += gates.get(self.rnn, 0)
        last = h if self.rnn != "none" else cin
        total += (last + 1) * self.embedding_dim + 2 * self.embedding_dim + 1
        if self.dense_skips:
            total += (self.sinc_channels + sum(self.channels[:-1])) * self.embedding_dim
        return total

    @classmethod
    def weights_limit(cls, config: dict[str, tp.Any]) -> int:
        """The most bytes a weights file of ``config`` may have: 10 times its state in float32."""
        return 10 * 4 * cls.from_dict(config).state_elements()

    @classmethod
    def pase_plus(cls) -> EncoderConfig:
        """PASE+ (Ravanelli et al. 2020): QRNN, dense skips, 256-d. 7,832,896 parameters."""
        return cls()

    @classmethod
    def pase(cls) -> EncoderConfig:
        """PASE v1 (Pascual et al. 2019): no recurrence, no skips, 100-d. 5,818,020 parameters."""
        return cls(rnn="none", dense_skips=False, embedding_dim=100)

    @classmethod
    def from_preset(cls, name: str) -> EncoderConfig:
        presets: dict[str, tp.Callable[[], EncoderConfig]] = {
            "pase+": cls.pase_plus,
            "pase_plus": cls.pase_plus,
            "pase": cls.pase,
        }
        if name not in presets:
            raise ValueError(f"unknown encoder preset {name!r}; choose from 'pase+', 'pase'")
        return presets[name]()

    def to_dict(self) -> dict[str, tp.Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, tp.Any]) -> EncoderConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, dict):
            raise ValueError(f"an encoder config must be a mapping of EncoderConfig fields, got {d!r}")
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown EncoderConfig fields: {sorted(unknown)}")
        return cls(**d)


class ConvBlock(nn.Module):
    """Conv1d (bias) -> BatchNorm -> PReLU, with the original's reflect padding."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, prelu_init: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride)
        self.norm = nn.BatchNorm1d(cout)
        self.act = nn.PReLU(cout, init=prelu_init)
        # Stride-1 odd kernels pad k//2 on both sides; otherwise k//2 - 1 left and k//2 right, so
        # a length divisible by the stride shrinks exactly by the stride.
        if stride == 1 and kernel % 2 == 1:
            self.pad = (kernel // 2, kernel // 2)
        else:
            self.pad = (kernel // 2 - 1, kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(F.pad(x, self.pad, mode="reflect"))))


class SincBlock(nn.Module):
    """SincConv -> BatchNorm -> PReLU (``blocks.0`` in the original layout)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.conv = SincConv(
            cfg.sinc_channels, cfg.sinc_kernel, cfg.sample_rate, cfg.sinc_min_low_hz, cfg.sinc_min_band_hz
        )
        self.norm = nn.BatchNorm1d(cfg.sinc_channels)
        self.act = nn.PReLU(cfg.sinc_channels, init=cfg.prelu_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class RNNLayer(nn.Module):
    """The recurrent layer: QRNN, LSTM or GRU, ``[B, T, I] -> [B, T, H]`` with a carried state."""

    def __init__(self, cfg: EncoderConfig, input_size: int) -> None:
        super().__init__()
        self.rnn: nn.Module
        if cfg.rnn == "qrnn":
            self.rnn = QRNN(input_size, cfg.rnn_hidden, impl=cfg.qrnn_impl)
        elif cfg.rnn == "lstm":
            self.rnn = nn.LSTM(input_size, cfg.rnn_hidden, batch_first=True)
        else:
            self.rnn = nn.GRU(input_size, cfg.rnn_hidden, batch_first=True)

    def forward(self, x: torch.Tensor, state: tp.Any = None) -> tuple[torch.Tensor, tp.Any]:
        out, state = self.rnn(x, state)
        return out, state


class Encoder(nn.Module):
    """PASE / PASE+ encoder.

    ``encoder(wav: [B, T]) -> feats: [B, F, D]`` with ``F = ceil(T / 160)``; with ``lengths`` (the
    valid samples of each padded item) it returns ``(feats, feat_lengths)``.
    """

    #: Frames of context each output frame depends on, each side (receptive field ~2370 samples).
    receptive_frames = 8

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or EncoderConfig()
        blocks: list[nn.Module] = [SincBlock(cfg)]
        cin = cfg.sinc_channels
        for cout, k, s in zip(cfg.channels, cfg.kernels, cfg.strides, strict=True):
            blocks.append(ConvBlock(cin, cout, k, s, cfg.prelu_init))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.rnn = RNNLayer(cfg, cin) if cfg.rnn != "none" else None
        last = cfg.rnn_hidden if self.rnn is not None else cin
        self.W = nn.Conv1d(last, cfg.embedding_dim, 1)
        # Pooling factor of each skip source: the sinc block runs at the sample rate, block i at
        # 1 / prod(strides[:i+1]); block 7 (already at the output rate) has no skip.
        self.skip_pools: list[int] = []
        skips = []
        if cfg.dense_skips:
            rate = HOP
            for c, s in zip((cfg.sinc_channels, *cfg.channels[:-1]), (1, *cfg.strides[:-1]), strict=True):
                rate //= s
                self.skip_pools.append(rate)
                # Bias-free projection, so pooling first and projecting second is the same
                # function and saves the sinc-rate matmul (~12 % of the MACs).
                skips.append(nn.Conv1d(c, cfg.embedding_dim, 1, bias=False))
        self.denseskips = nn.ModuleList(skips)
        self.norm_out = nn.BatchNorm1d(cfg.embedding_dim, affine=False)

    # ----------------------------------------------------------------------------------------
    # Construction and persistence
    @classmethod
    def from_config(cls, config: str | EncoderConfig | dict[str, tp.Any] = "pase+") -> tp.Self:
        """A randomly initialised encoder from a preset name (``"pase+"``, ``"pase"``) or config."""
        if isinstance(config, str):
            config = EncoderConfig.from_preset(config)
        elif isinstance(config, dict):
            config = EncoderConfig.from_dict(config)
        return cls(config)

    @classmethod
    def from_pretrained(
        cls,
        name_or_dir: str | Path = "pase+",
        map_location: str | torch.device = "cpu",
        revision: str | None = None,
        verify: bool = True,
    ) -> tp.Self:
        """Load the packaged ``"pase+"`` weights, a directory written by :meth:`save_pretrained`, or a
        Hugging Face Hub repo ``"org/name"`` (needs ``pip install 'pase-speech[hub]'``; offline, the
        Hub cache is used). ``verify=False`` accepts a directory whose config records no checksum."""
        saved = hub.read_pretrained(name_or_dir, revision, verify, EncoderConfig.weights_limit)
        encoder = cls.from_state(saved.state, saved.config, str(saved.weights_path), str(saved.config_path))
        return encoder.to(map_location)

    @classmethod
    def from_original(cls, path: str | Path, map_location: str | torch.device = "cpu") -> tp.Self:
        """Load a checkpoint of the original PASE+ code (e.g. ``FE_e199.ckpt``): 78 keys, flat or
        ``{"step", "state_dict"}``; the architecture (PASE+ with QRNN, or PASE v1) is inferred
        from the keys."""
        state, config = hub.read_original(path)
        return cls.from_state(state, config, str(path)).to(map_location)

    @classmethod
    def from_state(
        cls,
        state: tp.Mapping[str, torch.Tensor],
        config: dict[str, tp.Any],
        source: str,
        config_source: str | None = None,
    ) -> tp.Self:
        """An encoder of ``config`` (an :meth:`EncoderConfig.to_dict` dict, or part of one) holding
        ``state``, in eval mode; a bad config or state is a :class:`pase.hub.CheckpointError`
        naming ``config_source`` (default ``source``) or ``source``."""
        try:
            encoder = cls(EncoderConfig.from_dict(config))
        except (TypeError, ValueError) as exc:
            raise hub.CheckpointError(f"{config_source or source}: invalid encoder config ({exc})") from None
        encoder.load_weights(state, source)
        return encoder.eval()

    def load_weights(self, state: tp.Mapping[str, torch.Tensor], source: str) -> None:
        """Load ``state`` (our tensor names); any missing, extra or misshapen tensor is a
        :class:`pase.hub.CheckpointError` naming ``source``, never a partial load."""
        architecture = f"{self.config.rnn}/{self.embedding_dim}-d"
        self.load_state_dict(hub.check_state(state, self.state_dict(), source, architecture))

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float32) -> Path:
        """Write ``model.safetensors`` + ``config.json`` (with the weights' SHA-256) to ``directory``.

        ``dtype=torch.float16`` halves the file (the packaged weights are stored so); loading
        restores float32."""
        return hub.save_pretrained(self.state_dict(), self.config.to_dict(), directory, dtype=dtype)

    def push_to_hub(
        self,
        repo_id: str,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str = "Upload PASE encoder",
    ) -> str:
        """Upload to the Hugging Face Hub (``config.json`` + ``model.safetensors``); returns the commit
        URL. Needs ``pip install 'pase-speech[hub]'`` and a token (``HF_TOKEN`` or ``hf auth login``)."""
        return hub.push_to_hub(
            self.state_dict(),
            self.config.to_dict(),
            repo_id,
            private=private,
            token=token,
            commit_message=commit_message,
        )

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    @property
    def num_layers(self) -> int:
        """Number of hidden states :meth:`extract_features` returns."""
        return len(self.denseskips) + 2

    # ----------------------------------------------------------------------------------------
    # Forward passes
    def _check_input(self, wav: torch.Tensor) -> None:
        if wav.dim() != 2:
            raise ValueError(f"expected a waveform batch [B, T], got shape {tuple(wav.shape)}")
        if wav.shape[-1] < MIN_SAMPLES:
            raise ValueError(
                f"input too short: {wav.shape[-1]} samples; the encoder needs at least {MIN_SAMPLES} "
                f"samples ({1000 * MIN_SAMPLES // self.config.sample_rate} ms at 16 kHz)"
            )

    def original_num_frames(self, num_samples: int) -> int:
        """Frames the original code gives for ``num_samples`` raw samples (no padding to 160).

        For PASE+ that is ``T // 160``, plus one when ``T mod 160 >= 151``.
        """
        n = num_samples  # the sinc block keeps the length
        for block in self.blocks[1:]:
            assert isinstance(block, ConvBlock)
            k, s = block.conv.kernel_size[0], block.conv.stride[0]
            n = (n + sum(block.pad) - k) // s + 1
        return n

    def _frontend(
        self, wav: torch.Tensor, padding: Padding = "hop"
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``wav: [B, T]`` -> (last block ``[B, C, F]``, skips ``[B, D, F]``).

        ``padding="hop"``: T is a multiple of 160 and every skip pools exactly. ``"original"``: any T;
        each skip is projected at its own rate, then mean-pooled over groups of ``L // F`` steps
        with the tail dropped, as the original did (so the module hooks of ``denseskips`` see the
        full-rate projections, which s3prl's PASE+ upstream relies on).
        """
        x = wav[:, None]
        n_frames = self.original_num_frames(wav.shape[-1]) if padding == "original" else 0
        skips = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i >= len(self.denseskips):
                continue
            if padding == "original":
                skips.append(_pool_truncated(self.denseskips[i](x), n_frames))
            else:
                pooled = F.avg_pool1d(x, self.skip_pools[i]) if self.skip_pools[i] > 1 else x
                skips.append(self.denseskips[i](pooled))
        return x, skips

    def _top(
        self, x: torch.Tensor, skips: list[torch.Tensor], state: tp.Any = None
    ) -> tuple[list[torch.Tensor], tp.Any]:
        """The layers above the conv blocks (RNN, W, the sum with the skips, the output norm): last
        block ``[B, C, F]`` -> [W output, final output] (each ``[B, D, F]``) and the RNN state."""
        if self.rnn is not None:
            h, state = self.rnn(x.transpose(1, 2), state)
            x = h.transpose(1, 2).to(x.dtype)
        w = self.W(x)
        out = w
        for s in skips:
            out = out + s
        return [w, self.norm_out(out)], state

    @staticmethod
    def _pad_to_hop(wav: torch.Tensor) -> torch.Tensor:
        rem = wav.shape[-1] % HOP
        return F.pad(wav, (0, HOP - rem)) if rem else wav

    def encode(self, wav: torch.Tensor, padding: Padding = "hop") -> torch.Tensor:
        """``wav: [B, T] -> [B, D, F]`` channels first (what workers consume during training)."""
        return self.hidden_states(wav, padding=padding)[-1]

    def hidden_states(self, wav: torch.Tensor, padding: Padding = "hop") -> list[torch.Tensor]:
        """``wav: [B, T]`` -> the hidden states, each ``[B, D, F]`` (channels first).

        ``padding="hop"`` (ours): ``F = ceil(T / 160)``. ``padding="original"`` reproduces the
        original code for any T: reflect padding of the raw length only, ``F`` from
        :meth:`original_num_frames`, and skips pooled by ``L // F`` (159 or 161-163 instead of 160
        for the sinc skip when T is not a multiple of 160). Both agree when T is a multiple of 160.
        """
        self._check_input(wav)
        if padding == "hop":
            wav = self._pad_to_hop(wav)
        elif padding != "original":
            raise ValueError(f"padding must be 'hop' or 'original', got {padding!r}")
        x, skips = self._frontend(wav, padding)
        return skips + self._top(x, skips)[0]

    @staticmethod
    def feat_lengths(lengths: torch.Tensor) -> torch.Tensor:
        """Valid frames for ``lengths`` valid samples: ``ceil(lengths / 160)``."""
        return torch.div(lengths + HOP - 1, HOP, rounding_mode="floor")

    def _mask(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flen = self.feat_lengths(lengths.to(feats.device))
        keep = torch.arange(feats.shape[1], device=feats.device)[None] < flen[:, None]
        return feats * keep[..., None].to(feats.dtype), flen

    @tp.overload
    def forward(self, wav: torch.Tensor, lengths: None = None) -> torch.Tensor: ...

    @tp.overload
    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``wav: [B, T] -> feats: [B, F, D]``; with ``lengths: [B]`` -> ``(feats, feat_lengths)``.

        Frames past an item's ``feat_lengths`` are zeroed. A padded item's valid frames equal its
        unpadded features except the last ~8 (the receptive field reaching into the padding).
        """
        wav = as_waveform(wav, self.W.weight.device)
        feats = self.encode(wav).transpose(1, 2)
        if lengths is None:
            return feats
        return self._mask(feats, lengths)

    @tp.overload
    def extract_features(self, wav: torch.Tensor, lengths: None = None) -> list[torch.Tensor]: ...

    @tp.overload
    def extract_features(
        self, wav: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]: ...

    def extract_features(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> list[torch.Tensor] | tuple[list[torch.Tensor], torch.Tensor]:
        """All hidden states, each ``[B, F, D]``: the 7 pooled skips (sinc block first), W's output,
        the final output (9 for PASE+, as s3prl expects; 2 for PASE v1, which has no skips).
        With ``lengths``, returns ``(states, feat_lengths)``."""
        states = [h.transpose(1, 2) for h in self.hidden_states(wav)]
        if lengths is None:
            return states
        masked = [self._mask(s, lengths) for s in states]
        return [m[0] for m in masked], masked[0][1]

    @torch.no_grad()
    def infer_long(
        self,
        wav: torch.Tensor,
        layers: tp.Literal["final", "all"] = "final",
        window_seconds: float = 30.0,
    ) -> torch.Tensor:
        """Features of one long waveform in bounded memory (eval mode).

        ``wav: [T]`` -> ``[F, D]`` (``layers="final"``) or ``[L, F, D]`` (``"all"``, L hidden states).
        The input is cut into windows of ``window_seconds`` (finite, at least
        :data:`MIN_WINDOW_SECONDS`); each window's convolutions see ``2 * receptive_frames``
        frames of real signal on both sides (context frames are dropped), and the recurrent state
        is carried from window to window, so the result equals whole-file processing up to float
        rounding. Peak memory is set by the window, not the file; :meth:`infer_long_blocks` also
        takes the waveform piece by piece and yields the features window by window. A tensor on
        another device than the encoder's (a file read on the host, a CUDA encoder) stays there
        and each window is moved to the encoder's device, so its memory there is the window's too.
        """
        wav = as_waveform(wav, self.W.weight.device)
        if wav.dim() != 1:
            raise ValueError(f"infer_long expects one waveform [T], got shape {tuple(wav.shape)}")
        return torch.cat(list(self.infer_long_blocks([wav], layers, window_seconds)), dim=-2)

    @torch.no_grad()
    def infer_long_blocks(
        self,
        blocks: tp.Iterable[tp.Any],
        layers: tp.Literal["final", "all"] = "final",
        window_seconds: float = 30.0,
    ) -> tp.Iterator[torch.Tensor]:
        """:meth:`infer_long` of the waveform ``blocks`` (each ``[n]``, any lengths) concatenate to,
        yielded as ``[f, D]`` (or ``[L, f, D]``) pieces along frames, one per window, as soon as
        the audio a window needs has arrived: only a window and its context are held. The pieces
        concatenated equal ``infer_long`` of the whole waveform, exactly (the same windows)."""
        if self.training:
            raise RuntimeError("infer_long needs eval mode: call encoder.eval() first")
        if not (math.isfinite(window_seconds) and window_seconds >= MIN_WINDOW_SECONDS):
            raise ValueError(
                f"window_seconds must be finite and >= {MIN_WINDOW_SECONDS}, not {window_seconds}"
            )
        device = self.W.weight.device
        win = max(1, int(window_seconds * self.config.sample_rate) // HOP)
        ctx = 2 * self.receptive_frames
        pieces: list[torch.Tensor] = []  # the samples from frame `origin` on
        origin, total, a = 0, 0, 0
        state: tp.Any = None
        source = iter(blocks)
        ended = False
        while True:
            # A window is final once the audio reaches its right context (or the audio ends).
            while not ended and total < (a + win + ctx) * HOP:
                block = next(source, None)
                if block is None:
                    ended = True
                    break
                block = as_waveform(block, device)
                if block.dim() != 1:
                    raise ValueError(f"infer_long expects one waveform [T], got shape {tuple(block.shape)}")
                # A long file is usually read into host memory: its blocks stay where they come
                # (on the first block's device) and each window is moved to the encoder alone.
                pieces.append(block.to(pieces[0].device) if pieces else block)
                total += block.shape[0]
            if ended and total < MIN_SAMPLES:
                self._check_input(torch.empty(1, total))
            n_frames = math.ceil(total / HOP) if ended else a + win + ctx
            if a >= n_frames:
                return
            buf = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
            if ended:
                buf = self._pad_to_hop(buf[None])[0]
            b = min(a + win, n_frames)
            lo, hi = max(0, a - ctx), min(n_frames, b + ctx)
            if hi - lo < 3:  # reflect padding needs a few frames; widen the tiny last window left
                lo = max(0, hi - 3)
            x, skips = self._frontend(buf[(lo - origin) * HOP : (hi - origin) * HOP][None].to(device))
            keep = slice(a - lo, b - lo)
            x = x[..., keep]
            skips = [s[..., keep] for s in skips]
            top, state = self._top(x, skips, state)
            states = skips + top
            yield states[-1][0].T if layers == "final" else torch.stack([s[0].T for s in states])
            a = b
            # Later windows read from the next one's left context on (or 3 frames before its end).
            drop = max(0, a - ctx - origin)
            pieces = [buf[drop * HOP :]]
            origin += drop

    if tp.TYPE_CHECKING:  # beside its one user, so the module's imports stay as they are
        from pase.streaming import EncoderStream

    def stream(self, layers: tp.Literal["final", "all"] = "final") -> EncoderStream:
        """A stateful :class:`~pase.streaming.EncoderStream`: ``push(samples)`` returns the frames that
        became final, ``flush()`` the rest; together they equal ``self(wav)`` (eval mode only)."""
        from pase.streaming import EncoderStream

        return EncoderStream(self, layers)


def check_window_seconds(value: float, name: str = "window_seconds") -> None:
    """A ``ValueError`` naming ``name`` unless ``value`` is finite and >= :data:`MIN_WINDOW_SECONDS`."""
    if not (math.isfinite(value) and value >= MIN_WINDOW_SECONDS):
        raise ValueError(f"{name} must be a finite number >= {MIN_WINDOW_SECONDS:g}, got {value:g}")


def _pool_truncated(x: torch.Tensor, n_frames: int) -> torch.Tensor:
    """``x: [B, D, L] -> [B, D, n_frames]``: mean over consecutive groups of ``L // n_frames``
    steps, dropping the last ``L mod n_frames`` (the original's skip alignment)."""
    factor = x.shape[-1] // n_frames
    return x[..., : n_frames * factor].unflatten(-1, (n_frames, factor)).mean(-1)
