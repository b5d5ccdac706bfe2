"""Drop-in for the original package's frontend API (santi-pdp/pase, ``pase.models.frontend``).

Code written for the original keeps working::

    from pase.models.frontend import wf_builder
    fe = wf_builder("cfg/frontend/PASE+.cfg").eval()
    fe.load_pretrained("FE_e199.ckpt", load_last=True, verbose=True)
    y = fe(wav)  # wav: [B, 1, T] -> y: [B, 256, F]

The object is our :class:`pase.Encoder` run in its ``padding="original"`` mode, so it computes the
original's function for every input length (see :class:`WaveFe`). New code should use
:class:`pase.Encoder` directly.
"""

from __future__ import annotations

import json
import os
import typing as tp
import warnings
from pathlib import Path

import torch
from torch import nn

from pase.encoder import Encoder, EncoderConfig

#: Keys of the original frontend JSON configs that this module understands.
_KNOWN_KEYS = {
    "name",
    "kwidths",
    "strides",
    "fmaps",
    "emb_dim",
    "denseskips",
    "norm_out",
    "rnn_pool",
    "rnn_layers",
    "rnn_type",
    "rnn_dim",
    "sincnet",
}
#: The original repository's config files, by file name, for scripts whose cfg/ folder is gone.
_CONFIG_FILES = {"PASE+.cfg": "pase+", "PASE.cfg": "pase"}


def config_from_original(cfg: dict[str, tp.Any], source: str = "config") -> EncoderConfig:
    """Translate an original frontend config (``kwidths``, ``strides``, ``fmaps``, ``emb_dim``,
    ``denseskips``, ``rnn_pool``, ...) to an :class:`EncoderConfig`; ``ValueError`` naming
    ``source`` and the key for anything this package cannot build."""
    unknown = sorted(set(cfg) - _KNOWN_KEYS)
    if unknown:
        warnings.warn(f"{source}: ignoring unknown frontend config keys {unknown}", stacklevel=3)

    def bad(key: str, why: str) -> ValueError:
        return ValueError(f"{source}: {key!r} = {cfg.get(key)!r}: {why}")

    plus = EncoderConfig.pase_plus()
    kw = list(cfg.get("kwidths", [plus.sinc_kernel, *plus.kernels]))
    st = list(cfg.get("strides", [1, *plus.strides]))
    fm = list(cfg.get("fmaps", [plus.sinc_channels, *plus.channels]))
    if not len(kw) == len(st) == len(fm) >= 2:
        raise bad("kwidths", "kwidths, strides and fmaps must be lists of the same length (>= 2)")
    if st[0] != 1:
        raise bad("strides", "the first (sinc) layer must have stride 1")
    if not cfg.get("sincnet", True):
        raise bad("sincnet", "only the SincNet first layer is supported")
    if not cfg.get("norm_out", True):
        raise bad("norm_out", "only configs with the output BatchNorm are supported")
    rnn: tp.Any = "none"
    if cfg.get("rnn_pool", False):
        rnn = cfg.get("rnn_type", "qrnn")
        if rnn not in ("qrnn", "lstm", "gru"):
            raise bad("rnn_type", "supported recurrent layers are qrnn, lstm and gru")
        if int(cfg.get("rnn_layers", 1)) != 1:
            raise bad("rnn_layers", "only one recurrent layer is supported")
    try:
        return EncoderConfig(
            sinc_channels=int(fm[0]),
            sinc_kernel=int(kw[0]),
            channels=tuple(int(c) for c in fm[1:]),
            kernels=tuple(int(k) for k in kw[1:]),
            strides=tuple(int(s) for s in st[1:]),
            rnn=rnn,
            rnn_hidden=int(cfg.get("rnn_dim", fm[-1])),
            embedding_dim=int(cfg.get("emb_dim", 256)),
            dense_skips=bool(cfg.get("denseskips", False)),
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: invalid frontend config ({exc})") from None


def _resolve_config(cfg: str | os.PathLike[str] | dict[str, tp.Any]) -> EncoderConfig:
    if isinstance(cfg, dict):
        return config_from_original(cfg)
    path = Path(cfg)
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a JSON frontend config ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a JSON frontend config (expected an object)")
        return config_from_original(data, str(path))
    name = str(cfg)
    preset = _CONFIG_FILES.get(path.name) or name.lower().replace("pase_plus", "pase+")
    if preset in ("pase+", "pase"):
        return EncoderConfig.from_preset(preset)
    raise FileNotFoundError(
        f"{name}: no such frontend config file; pass an original JSON config or a preset name "
        "('PASE+', 'pase+', 'pase')"
    )


class WaveFe(nn.Module):
    """The original frontend's public surface on top of our :class:`pase.Encoder`.

    ``fe(wav: [B, 1, T], device=None) -> [B, emb_dim, F]`` (channels first), with the original's
    framing: the raw length is reflect-padded in the sinc layer and in every conv block (no padding
    to a multiple of 160), so ``F = T // 160`` (+1 when ``T mod 160 >= 151``), and each dense skip
    is projected at its own rate and mean-pooled by ``L // F`` steps with the tail dropped.

    How it differs from the modern API (``pase.Encoder``):

    - ``Encoder(wav: [B, T]) -> [B, F, D]`` (frames first), ``F = ceil(T / 160)``: the input is
      zero-padded to a multiple of 160 so every skip pools exactly. For T a multiple of 160 both
      give the same features; otherwise the original's last ~8 frames (and, when ``T mod 160 >= 151``
      or ``F < T mod 160 < 151``, every frame) differ by design. Use this class only when a
      downstream model was trained on the original's features.
    - ``load_pretrained`` reads the original checkpoint layout; ``Encoder.from_pretrained`` reads
      safetensors directories and the Hub. ``pase convert-original`` converts once.
    - The attributes ``W``, ``denseskips``, ``blocks``, ``rnn``, ``norm_out`` and ``emb_dim`` are the
      encoder's own modules, so forward hooks on them (as s3prl's upstream registers) see the same
      tensors as the original: ``denseskips[i]`` outputs ``[B, 256, L_i]`` at the block's own rate.
    """

    def __init__(self, config: EncoderConfig | None = None, encoder: Encoder | None = None) -> None:
        super().__init__()
        self.encoder = encoder if encoder is not None else Encoder(config)

    @property
    def W(self) -> nn.Conv1d:  # the original's attribute name
        return self.encoder.W

    @property
    def denseskips(self) -> nn.ModuleList:
        return self.encoder.denseskips

    @property
    def blocks(self) -> nn.ModuleList:
        return self.encoder.blocks

    @property
    def rnn(self) -> nn.Module | None:
        return self.encoder.rnn

    @property
    def norm_out(self) -> nn.BatchNorm1d:
        return self.encoder.norm_out

    @property
    def emb_dim(self) -> int:
        return self.encoder.embedding_dim

    def load_pretrained(
        self, ckpt: str | os.PathLike[str], load_last: bool = False, verbose: bool = False
    ) -> None:
        """Load a checkpoint in the original layout (e.g. ``FE_e199.ckpt``), never executing code.

        Every tensor is loaded whatever ``load_last`` says (it is accepted so existing calls run);
        a checkpoint that does not match this frontend's config raises ``CheckpointError`` naming
        the file instead of loading part of it.
        """
        from pase.hub import read_original

        state, _ = read_original(ckpt)
        self.encoder.load_weights(state, str(ckpt))
        if verbose:
            n = sum(p.numel() for p in self.encoder.parameters())
            print(f"loaded {len(state)} tensors ({n:,} parameters) from {ckpt}")

    def forward(self, wav: torch.Tensor, device: str | torch.device | None = None) -> torch.Tensor:
        """``wav: [B, 1, T] -> [B, emb_dim, F]``; ``device`` moves the input (not the model)."""
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise ValueError(f"expected a waveform batch [B, 1, T], got shape {tuple(wav.shape)}")
        if device is not None:
            wav = wav.to(device)
        return self.encoder.encode(wav[:, 0], padding="original")


def wf_builder(cfg: str | os.PathLike[str] | dict[str, tp.Any]) -> WaveFe:
    """Build a frontend from an original JSON config file (``cfg/frontend/PASE+.cfg``,
    ``PASE.cfg``), a dict of the same keys, or a preset name (``"PASE+"``, ``"pase+"``, ``"pase"``).

    A path to ``PASE+.cfg`` or ``PASE.cfg`` that does not exist falls back to the preset of that
    name (the original repository's files, with the values of the published models).
    """
    return WaveFe(_resolve_config(cfg))
