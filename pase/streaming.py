"""Streaming inference: feed audio piece by piece, get each 10 ms frame as soon as it is final.

    stream = encoder.stream()             # eval mode only
    for chunk in microphone:              # any length, one sample to many seconds
        frames = stream.push(chunk)       # [n, D], the frames that became final (n may be 0)
    frames = stream.flush()               # the rest; the stream is over (reset() to reuse it)

The concatenated output equals the offline features ``encoder(wav)`` of the whole signal up to
float rounding, end included: every layer keeps only the input tail its next outputs still need
and applies the reflection padding itself (the left one as soon as a few inputs exist, the right
one and the zero padding to a multiple of 160 at :meth:`EncoderStream.flush`); skips are pooled
over exact groups and the QRNN carries its state. Memory and per-push cost are therefore bounded
and independent of how long the stream has run.

A frame needs :attr:`EncoderStream.latency_samples` samples of future audio beyond its own hop
(1176 samples, 73.5 ms, for PASE and PASE+), derived from the kernels, strides and paddings.
"""

from __future__ import annotations

import typing as tp

import torch
import torch.nn.functional as F

from pase.audio import HOP, MIN_SAMPLES, as_waveform

if tp.TYPE_CHECKING:  # types only: the encoder imports this module for Encoder.stream()
    from pase.encoder import ConvBlock, Encoder, SincBlock

Layers = tp.Literal["final", "all"]


def _unpadded(block: ConvBlock) -> tp.Callable[[torch.Tensor], torch.Tensor]:
    """``block`` without its reflection padding (the stream pads itself)."""
    return lambda x: block.act(block.norm(block.conv(x)))


class _ConvStage:
    """One reflect-padded convolution (and what follows it pointwise) fed piecewise.

    ``fn`` maps an unpadded window ``[1, C, L]`` to the layer's outputs for it (a valid
    convolution). The buffer holds the padded input from padded index ``offset`` on: what the
    next outputs need, and at least the last ``pad_right + 1`` inputs that the right reflection
    mirrors at :meth:`flush`.
    """

    def __init__(
        self, fn: tp.Callable[[torch.Tensor], torch.Tensor], kernel: int, stride: int, pad: tuple[int, int]
    ) -> None:
        self.fn, self.kernel, self.stride = fn, kernel, stride
        self.pad_left, self.pad_right = pad
        self.reset()

    def reset(self) -> None:
        self.buf: torch.Tensor | None = None
        self.started = False  # left reflection applied
        self.offset = 0
        self.emitted = 0
        self.seen = 0

    def push(self, x: torch.Tensor) -> torch.Tensor | None:
        """New inputs ``[1, C, n]`` -> the outputs ``[1, C', m]`` they complete, or None."""
        if x.shape[-1] == 0:
            return None
        self.seen += x.shape[-1]
        self.buf = x if self.buf is None else torch.cat([self.buf, x], dim=-1)
        if not self.started:
            # The left reflection mirrors inputs 1..pad_left; wait until they exist.
            if self.seen <= self.pad_left:
                return None
            self.buf = F.pad(self.buf, (self.pad_left, 0), mode="reflect")
            self.started = True
        return self._run()

    def flush(self) -> torch.Tensor | None:
        """The outputs that the right reflection completes; the stage then holds nothing."""
        if self.buf is None:
            return None
        if self.started:
            if self.seen <= self.pad_right:
                raise ValueError(f"stream too short for a reflection padding of {self.pad_right}")
            self.buf = F.pad(self.buf, (0, self.pad_right), mode="reflect")
        else:  # shorter than the left padding: as offline, which raises when it is too short
            self.buf = F.pad(self.buf, (self.pad_left, self.pad_right), mode="reflect")
        out = self._run()
        self.reset()
        return out

    def _run(self) -> torch.Tensor | None:
        assert self.buf is not None
        end = self.offset + self.buf.shape[-1]
        ready = (end - self.kernel) // self.stride + 1 - self.emitted if end >= self.kernel else 0
        if ready <= 0:
            return None
        first = self.emitted * self.stride - self.offset
        out = self.fn(self.buf[..., first : first + (ready - 1) * self.stride + self.kernel])
        self.emitted += ready
        keep = max(self.offset, min(self.emitted * self.stride, end - self.pad_right - 1))
        self.buf = self.buf[..., keep - self.offset :]
        self.offset = keep
        return out

    def reach(self, out_index: int) -> int:
        """The last (unpadded) input index that output ``out_index`` reads."""
        return out_index * self.stride + self.kernel - 1 - self.pad_left


class _Pool:
    """Non-overlapping mean pooling by ``factor`` (a dense skip's), fed piecewise."""

    def __init__(self, factor: int) -> None:
        self.factor = factor
        self.rest: torch.Tensor | None = None

    def push(self, x: torch.Tensor) -> torch.Tensor | None:
        """``[1, C, n]`` -> the means of the groups it completes, ``[1, C, m]``, or None."""
        if self.rest is not None:
            x = torch.cat([self.rest, x], dim=-1)
        whole = x.shape[-1] // self.factor * self.factor
        self.rest = x[..., whole:]
        if whole == 0:
            return None
        x = x[..., :whole]
        return F.avg_pool1d(x, self.factor) if self.factor > 1 else x


class EncoderStream:
    """Stateful streaming feature extraction with an :class:`~pase.encoder.Encoder` in eval mode.

    Build it with :meth:`Encoder.stream`. ``push(samples: [T])`` (16 kHz, NumPy or tensor, any
    length) returns the frames that became final, ``[n, D]`` for ``layers="final"`` or
    ``[L, n, D]`` (the hidden states of :meth:`Encoder.extract_features`) for ``"all"``;
    :meth:`flush` returns the rest and ends the stream; :meth:`reset` starts a new one.
    """

    def __init__(self, encoder: Encoder, layers: Layers = "final") -> None:
        if layers not in ("final", "all"):
            raise ValueError(f"layers must be 'final' or 'all', got {layers!r}")
        self.encoder = encoder
        self.layers = layers
        self._check_eval()
        sinc = tp.cast("SincBlock", encoder.blocks[0])
        # The filterbank is a function of two parameters; build it once, not per push.
        with torch.no_grad():
            filters = sinc.conv.filters().to(encoder.W.weight.dtype)
        half = sinc.conv.kernel_size // 2
        self._stages = [
            _ConvStage(
                lambda x: sinc.act(sinc.norm(F.conv1d(x, filters.to(x.dtype)))),
                sinc.conv.kernel_size,
                1,
                (half, half),
            )
        ]
        for block in tp.cast("list[ConvBlock]", list(encoder.blocks[1:])):
            self._stages.append(
                _ConvStage(
                    _unpadded(block),
                    block.conv.kernel_size[0],
                    block.conv.stride[0],
                    block.pad,
                )
            )
        self.latency_samples = self._latency_samples()
        self.reset()

    @property
    def latency_ms(self) -> float:
        """Future audio a frame needs beyond its own 10 ms hop, in milliseconds."""
        return 1000.0 * self.latency_samples / self.encoder.config.sample_rate

    def reset(self) -> None:
        """Forget everything pushed so far; the next push starts a new stream."""
        for stage in self._stages:
            stage.reset()
        self._pools = [_Pool(r) for r in self.encoder.skip_pools]
        # Frames computed by the last block and by each skip, not yet emitted (they become final
        # at different times; a frame is emitted when all its parts exist).
        self._queues: list[list[torch.Tensor]] = [[] for _ in range(len(self._pools) + 1)]
        self._state: tp.Any = None
        self._samples = 0
        self._ended = False

    @torch.no_grad()
    def push(self, samples: tp.Any) -> torch.Tensor:
        """``samples: [T]`` -> the frames that became final: ``[n, D]`` (or ``[L, n, D]``), n >= 0."""
        self._check_eval()
        if self._ended:
            raise RuntimeError("the stream has ended (flush was called); call reset() to start a new one")
        device = self.encoder.W.weight.device
        # live audio arrives in host memory: a pushed tensor is moved to the encoder's device
        wav = as_waveform(samples, device).to(device)
        if wav.dim() != 1:
            raise ValueError(f"push expects one waveform [T], got shape {tuple(wav.shape)}")
        self._samples += wav.shape[0]
        self._feed(wav[None, None], flush=False)
        return self._emit()

    @torch.no_grad()
    def flush(self) -> torch.Tensor:
        """End the stream: the remaining frames, with the offline end (zero padding to a multiple
        of 160, reflection) reproduced exactly."""
        self._check_eval()
        if self._ended:
            raise RuntimeError("the stream has ended (flush was called); call reset() to start a new one")
        self._ended = True
        if 0 < self._samples < MIN_SAMPLES:
            raise ValueError(
                f"stream too short: {self._samples} samples; the encoder needs at least {MIN_SAMPLES} "
                f"samples ({1000 * MIN_SAMPLES // self.encoder.config.sample_rate} ms at 16 kHz)"
            )
        device = self.encoder.W.weight.device
        zeros = torch.zeros(1, 1, -self._samples % HOP, device=device, dtype=self.encoder.W.weight.dtype)
        self._feed(zeros, flush=True)
        return self._emit()

    def _feed(self, x: torch.Tensor | None, flush: bool) -> None:
        """Run new samples through the conv stages, queueing pooled skips and last-block frames."""
        for i, stage in enumerate(self._stages):
            outs = [stage.push(x)] if x is not None else []
            if flush:
                outs.append(stage.flush())
            kept = [o for o in outs if o is not None]
            x = torch.cat(kept, dim=-1) if kept else None
            if x is None:
                if not flush:
                    return
                continue
            if i < len(self._pools):
                pooled = self._pools[i].push(x)
                if pooled is not None:
                    self._queues[i + 1].append(self.encoder.denseskips[i](pooled))
            if i == len(self._stages) - 1:
                self._queues[0].append(x)

    def _emit(self) -> torch.Tensor:
        """Frames whose every part exists go through the head (RNN state carried)."""
        joined = [torch.cat(q, dim=-1) if q else None for q in self._queues]
        n = min(0 if j is None else j.shape[-1] for j in joined)
        self._queues = [[] if j is None or j.shape[-1] == n else [j[..., n:]] for j in joined]
        if n == 0:
            return self._empty()
        parts = [j[..., :n] for j in joined if j is not None]
        head, self._state = self.encoder._top(parts[0], parts[1:], self._state)
        states = parts[1:] + head
        if self.layers == "final":
            return states[-1][0].T
        return torch.stack([s[0].T for s in states])

    def _empty(self) -> torch.Tensor:
        w = self.encoder.W.weight
        shape: tuple[int, ...] = (0, self.encoder.embedding_dim)
        if self.layers == "all":
            shape = (self.encoder.num_layers, *shape)
        return w.new_zeros(shape)

    def _check_eval(self) -> None:
        if self.encoder.training:
            raise RuntimeError(
                "streaming needs eval mode (BatchNorm with its running statistics): call encoder.eval()"
            )

    def _latency_samples(self) -> int:
        """Samples a frame needs beyond its hop, from the kernels, strides and paddings: the last
        sample read by any path to frame ``t`` (through the last block, or through a skip's pooling
        group), minus the hop's last sample. Affine in ``t`` with slope 160, so ``t = 0`` serves."""
        t = 0

        def last_sample(stage: int, index: int) -> int:
            for s in reversed(self._stages[: stage + 1]):
                index = s.reach(index)
            return index

        paths = [last_sample(len(self._stages) - 1, t)]
        paths += [last_sample(i, (t + 1) * r - 1) for i, r in enumerate(self.encoder.skip_pools)]
        return max(paths) - (HOP * (t + 1) - 1)
