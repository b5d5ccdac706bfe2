"""PASE+ as a training loss: the distance between the features of an estimate and a reference.

    loss_fn = FeatureLoss()                               # the packaged, frozen pase+
    loss = loss_fn(enhanced, clean, lengths=lengths)      # [B, T] each; differentiable in enhanced

The encoder is frozen: eval mode (BatchNorm with its running statistics) whatever ``train()``
says, and no parameter requires a gradient, so an optimizer over the model being trained never
sees it and the encoder is never updated.
"""

from __future__ import annotations

import typing as tp
from pathlib import Path

import torch
from torch import nn

from pase.audio import as_waveform
from pase.encoder import Encoder

Distance = tp.Literal["l1", "l2"]


class FeatureLoss(nn.Module):
    """Mean L1 / L2 distance between PASE features of ``estimate`` and ``reference``.

    ``encoder``: an :class:`~pase.encoder.Encoder` or a name / directory for
    :meth:`Encoder.from_pretrained` (default: the packaged ``"pase+"``). ``layers``: ``None`` for
    the final output, or ``{index: weight}`` over the hidden states of
    :meth:`Encoder.extract_features` (9 for PASE+: the 7 pooled skips, W's output, the final
    output; negative indices count from the end); the loss is then the weighted sum of the
    per-layer means.
    """

    def __init__(
        self,
        encoder: Encoder | str | Path = "pase+",
        distance: Distance = "l1",
        layers: dict[int, float] | None = None,
    ) -> None:
        super().__init__()
        if distance not in ("l1", "l2"):
            raise ValueError(f"distance must be 'l1' or 'l2', got {distance!r}")
        if not isinstance(encoder, Encoder):
            encoder = Encoder.from_pretrained(encoder)
        self.encoder = encoder.eval().requires_grad_(False)
        self.distance = distance
        self.layers: dict[int, float] | None = None
        if layers is not None:
            n = encoder.num_layers
            if not layers:
                raise ValueError("layers must name at least one hidden state")
            bad = [i for i in layers if not -n <= i < n]
            if bad:
                raise ValueError(f"layer indices {bad} out of range for {n} hidden states")
            self.layers = {i % n: float(w) for i, w in layers.items()}
            if len(self.layers) != len(layers):
                raise ValueError(f"layers {sorted(layers)} name the same hidden state twice")

    def train(self, mode: bool = True) -> FeatureLoss:
        """Only this wrapper's flag follows ``mode``; the encoder always stays in eval mode."""
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(
        self, estimate: torch.Tensor, reference: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``estimate, reference: [B, T]`` (or ``[T]``) -> a scalar.

        ``lengths: [B]`` (valid samples per item): samples past an item's length are zeroed
        before encoding, so whatever the padding holds it changes nothing, and only the
        ``ceil(length / 160)`` valid frames enter the mean. (An item's last ~8 valid frames see
        those zeros, as offline features of the item alone see its end padding instead.)
        """
        device, dtype = self.encoder.W.weight.device, self.encoder.W.weight.dtype
        # In the encoder's dtype, so that ``.to(torch.float64)`` or ``.half()`` moves the loss whole.
        estimate = as_waveform(estimate, device).to(dtype)
        reference = as_waveform(reference, device).to(dtype)
        if estimate.shape != reference.shape:
            raise ValueError(
                f"estimate {tuple(estimate.shape)} and reference {tuple(reference.shape)} differ"
            )
        if estimate.dim() == 1:
            estimate, reference = estimate[None], reference[None]
        if estimate.dim() != 2:
            raise ValueError(f"expected waveforms [B, T] or [T], got shape {tuple(estimate.shape)}")
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=device)
            keep = torch.arange(estimate.shape[-1], device=device)[None] < lengths[:, None]
            estimate = estimate * keep.to(estimate.dtype)
            reference = reference * keep.to(reference.dtype)
        with torch.no_grad():
            ref_states = self._features(reference)
        est_states = self._features(estimate)
        mask = None
        if lengths is not None:
            n_frames = est_states[0].shape[-1]
            frames = Encoder.feat_lengths(lengths)
            mask = (torch.arange(n_frames, device=device)[None] < frames[:, None]).to(est_states[0].dtype)
        weights = [1.0] if self.layers is None else list(self.layers.values())
        total = est_states[0].new_zeros(())
        for w, e, r in zip(weights, est_states, ref_states, strict=True):
            total = total + w * self._mean_distance(e, r, mask)
        return total

    def _features(self, wav: torch.Tensor) -> list[torch.Tensor]:
        """The chosen states, each ``[B, D, F]``."""
        if self.layers is None:
            return [self.encoder.encode(wav)]
        states = self.encoder.hidden_states(wav)
        return [states[i] for i in self.layers]

    def _mean_distance(self, e: torch.Tensor, r: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        d = (e - r).abs() if self.distance == "l1" else (e - r).square()
        if mask is None:
            return d.mean()
        return (d * mask[:, None]).sum() / (mask.sum() * d.shape[1])
