"""The CTC probe of the ASR and phone tasks: what it writes, the model, its loss, greedy decoding.

:class:`Units` says what a probe writes: characters (:data:`CHARACTERS`, the alphabet of
:mod:`pase.eval.text`) or phones (:data:`PHONE_UNITS`, the set of :mod:`pase.eval.phones`).
:func:`greedy_decode` and :func:`greedy_transcripts` read the best path (collapse repeats, drop
blanks); word n-gram beam search is :mod:`pase.eval.lm_decoding`.

:class:`CtcProbe` is the same for every feature set; :class:`CtcConfig` holds its shape and its
training recipe, with named presets (:data:`PRESETS`). ``small`` is the first probe (a 2-layer
BiGRU of 128 units on two stacked 10 ms frames, 800 steps: WER 0.95-1.0 for every feature set,
too weak to reach words). ``base``, the default, follows SUPERB's ASR probe (a 2-layer BiLSTM of
1024 units on 100 h) at the size 5 hours of training audio and two CPU cores afford: 30 ms
windows (three stacked 10 ms frames) every 30 ms, a 3-layer BiLSTM of 320 units,
SpecAugment-style masks on the frozen features, warm-up and cosine decay of the learning rate,
a budget in epochs.
``recipes/asr_probe`` measures the presets against each other (WER and CER against steps).
With several layers (``--layers all``) a softmax-weighted sum of them comes first, as for the
other probes. Training the probe is :mod:`pase.eval.ctc_training`.
"""

from __future__ import annotations

import dataclasses
import math
import typing as tp

import numpy as np
import torch
from torch import nn

from pase.eval.asr_scoring import cer, wer
from pase.eval.phones import PHONES
from pase.eval.text import BLANK, CHARS, VOCAB_SIZE

if tp.TYPE_CHECKING:
    from pase.eval.tasks import Task


# --------------------------------------------------------------------------- units and greedy decoding
@dataclasses.dataclass(frozen=True)
class Units:
    """What a CTC probe writes: class ``i + 1`` is ``symbols[i]``, class 0 is the blank.

    ``sep`` joins symbols into a label: ``""`` for characters (the space is a symbol itself),
    ``" "`` for phones. ``metric`` is the error rate that picks the dev checkpoint: ``cer`` for
    characters, ``per`` (the token error rate over phones) for phones.
    """

    symbols: tuple[str, ...]
    sep: str
    metric: tp.Literal["cer", "per"]

    @property
    def size(self) -> int:
        return len(self.symbols) + 1

    def encode(self, label: str) -> list[int]:
        """Class indices of a label (raises ``ValueError`` on a symbol outside the set)."""
        index = {s: i + 1 for i, s in enumerate(self.symbols)}
        tokens = list(label) if not self.sep else label.split(self.sep)
        try:
            return [index[t] for t in tokens]
        except KeyError as exc:
            raise ValueError(f"{exc.args[0]!r} is not a probe symbol; normalise() first") from None

    def decode(self, ids: tp.Iterable[int]) -> str:
        """Class indices (no blanks) -> label."""
        return self.sep.join(self.symbols[i - 1] for i in ids)

    def error_rate(self, refs: tp.Sequence[str], hyps: tp.Sequence[str]) -> float:
        return cer(refs, hyps) if not self.sep else wer(refs, hyps)


#: The character probe of ``librispeech-asr`` (:data:`pase.eval.text.CHARS`, same class indices).
CHARACTERS = Units(tuple(CHARS), "", "cer")
#: The phone probe of ``librispeech-phone`` (:data:`pase.eval.phones.PHONES`).
PHONE_UNITS = Units(PHONES, " ", "per")


def units_for(task: Task) -> Units:
    """The probe's output symbols for a sequence task, from its class list."""
    for units in (CHARACTERS, PHONE_UNITS):
        if list(task.classes) == list(units.symbols):
            return units
    raise ValueError(f"task {task.name}: classes are neither the ASR alphabet nor the phone set")


def greedy_decode(logits: torch.Tensor, length: int | None = None) -> list[int]:
    """Best path of one utterance: ``logits: [F, V]`` (or class ids ``[F]``) -> class ids.

    Takes the arg max per frame (first ``length`` frames), merges runs of the same class, then
    drops blanks, so ``a a _ a b b`` reads ``a a b`` -> ``aab``.
    """
    ids = logits.argmax(dim=-1) if logits.dim() == 2 else logits
    if length is not None:
        ids = ids[:length]
    ids = ids.cpu()
    if ids.numel() == 0:
        return []
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[1:] = ids[1:] != ids[:-1]
    return [int(i) for i in ids[keep & (ids != BLANK)]]


def greedy_transcripts(log_probs: tp.Sequence[np.ndarray], units: Units = CHARACTERS) -> list[str]:
    """Best-path labels of every utterance's log-probabilities ``[F', V]``."""
    return [units.decode(greedy_decode(torch.from_numpy(lp))) for lp in log_probs]


# --------------------------------------------------------------------------- the probe
@dataclasses.dataclass
class CtcConfig:
    """The CTC probe and its training recipe, the same for every feature set.

    The field defaults are the ``base`` preset; :meth:`preset` names the others. Chosen by
    ``recipes/asr_probe`` (probe size x training steps on FBANK, WER and CER against steps).
    """

    #: Recurrent cell of the bidirectional stack.
    rnn: tp.Literal["gru", "lstm"] = "lstm"
    #: Width of the projection of the stacked frames, units per direction, layers.
    hidden: int = 320
    rnn_hidden: int = 320
    rnn_layers: int = 3
    dropout: float = 0.2
    #: ``stack`` 10 ms frames are concatenated every ``stride`` frames (``stack >= stride`` so no
    #: frame is lost). 3 and 3: 30 ms windows every 30 ms; every 20 ms (stride 2, as SUPERB's
    #: probe sees 20 ms frames) was measured against it in ``recipes/asr_probe`` and costs more
    #: than the budget allows.
    stack: int = 3
    stride: int = 3
    #: SpecAugment-style masks on the standardised features, training batches only: per
    #: utterance, ``time_masks`` spans of up to ``time_mask_frames`` 10 ms frames and
    #: ``channel_masks`` bands of up to ``channel_mask_fraction`` of the feature dimensions.
    time_masks: int = 2
    time_mask_frames: int = 40
    channel_masks: int = 2
    channel_mask_fraction: float = 0.15
    #: AdamW's peak learning rate, reached linearly over ``warmup_steps``, then held
    #: (``decay="none"``) or lowered along a cosine to ``final_lr_ratio * lr`` at the budget's end.
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 300
    decay: tp.Literal["none", "cosine"] = "cosine"
    final_lr_ratio: float = 0.05
    grad_clip: float = 5.0
    #: Padded 10 ms frames per batch (6 utterances of 13 s) and utterances per batch at most.
    batch_frames: int = 8000
    max_batch: int = 32
    #: The budget: ``epochs`` passes over the training part or ``max_steps`` steps, the smaller
    #: of the two that are set. Dev error every ``eval_every`` steps, stop after ``patience``
    #: evaluations without a gain.
    epochs: float | None = 16.0
    max_steps: int | None = None
    eval_every: int = 250
    patience: int = 6

    def __post_init__(self) -> None:
        if self.stack < self.stride or self.stride < 1:
            raise ValueError(f"need stack >= stride >= 1, got stack {self.stack}, stride {self.stride}")
        if self.rnn not in ("gru", "lstm") or self.decay not in ("none", "cosine"):
            raise ValueError(
                f"need rnn gru or lstm and decay none or cosine, got {self.rnn!r}, {self.decay!r}"
            )
        if self.epochs is None and self.max_steps is None:
            raise ValueError("set epochs or max_steps (the training budget)")

    def budget(self, batches_per_epoch: int) -> int:
        """Training steps: the smaller of ``epochs`` and ``max_steps`` (those set)."""
        limits = [self.max_steps] if self.max_steps is not None else []
        if self.epochs is not None:
            limits.append(math.ceil(self.epochs * batches_per_epoch))
        return max(1, min(limits))

    @classmethod
    def small(cls) -> CtcConfig:
        """The first probe (0.6-0.7 M parameters, 800 steps): two 10 ms frames stacked, a
        2-layer BiGRU of 128 units, constant learning rate, no masks. WER 0.95-1.0 for every
        feature set: kept for comparison and for quick runs."""
        return cls(
            rnn="gru", hidden=256, rnn_hidden=128, rnn_layers=2, dropout=0.2, stack=2, stride=2,
            time_masks=0, channel_masks=0, lr=1e-3, warmup_steps=0, decay="none",
            epochs=None, max_steps=800, eval_every=100, patience=3,
        )  # fmt: skip

    @classmethod
    def base(cls) -> CtcConfig:
        """The default: a 3-layer BiLSTM of 320 units on 30 ms windows every 30 ms, SpecAugment,
        warm-up and cosine decay, 16 epochs of train-clean-5 (``base:stride=2``: every 20 ms)."""
        return cls()

    @classmethod
    def preset(cls, name: str) -> CtcConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown ASR probe preset {name!r}; choose from {', '.join(PRESETS)}")
        return PRESETS[name]()

    @classmethod
    def from_spec(cls, spec: str) -> CtcConfig:
        """A preset with some fields replaced: ``"base"``, ``"base:stride=2"``,
        ``"small:rnn=lstm,epochs=20"`` (``epochs=none`` leaves the budget to ``max_steps``)."""
        name, _, overrides = spec.partition(":")
        cfg = cls.preset(name.strip())
        fields = {f.name for f in dataclasses.fields(cls)}
        changes: dict[str, tp.Any] = {}
        for item in filter(None, (s.strip() for s in overrides.split(","))):
            key, sep, value = (part.strip() for part in item.partition("="))
            if not sep or key not in fields:
                raise ValueError(
                    f"ASR probe {spec!r}: {item!r} is not field=value with a field of CtcConfig "
                    f"({', '.join(sorted(fields))})"
                )
            current = getattr(cfg, key)
            try:
                if value.lower() == "none" and key in ("epochs", "max_steps"):
                    changes[key] = None
                elif current is None:  # epochs or max_steps, unset in this preset
                    changes[key] = float(value) if key == "epochs" else int(value)
                else:
                    changes[key] = type(current)(value)
            except ValueError:
                raise ValueError(
                    f"ASR probe {spec!r}: {key}={value!r} is not a {type(current).__name__}"
                ) from None
        return dataclasses.replace(cfg, **changes)


PRESETS: dict[str, tp.Callable[[], CtcConfig]] = {"small": CtcConfig.small, "base": CtcConfig.base}


class BiRNN(nn.Module):
    """A bidirectional GRU or LSTM stack over padded batches, exact for every item's valid frames.

    ``x: [B, T, D]``, ``lengths: [B]`` -> ``[B, T, 2H]``. The backward direction runs on each
    item's valid frames reversed in place (padding stays at the end), so padding never reaches
    a valid frame. PyTorch's packed sequences do the same but run ~5x slower on CPU.
    """

    def __init__(
        self, input_size: int, hidden: int, num_layers: int, dropout: float, cell: tp.Literal["gru", "lstm"]
    ) -> None:
        super().__init__()
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        sizes = [input_size] + [2 * hidden] * (num_layers - 1)
        self.fwd = nn.ModuleList(rnn(n, hidden, batch_first=True) for n in sizes)
        self.bwd = nn.ModuleList(rnn(n, hidden, batch_first=True) for n in sizes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        t = torch.arange(x.shape[1], device=x.device)[None]
        lengths = lengths.to(x.device)[:, None]
        index = torch.where(t < lengths, lengths - 1 - t, t)  # [B, T], its own inverse

        def flip(h: torch.Tensor) -> torch.Tensor:
            return h.gather(1, index[..., None].expand_as(h))

        for i, (fwd, bwd) in enumerate(zip(self.fwd, self.bwd, strict=True)):
            if i:
                x = self.dropout(x)
            x = torch.cat([fwd(x)[0], flip(bwd(flip(x))[0])], dim=-1)
        return x


class CtcProbe(nn.Module):
    """``x: [B, F, L, D]``, ``lengths: [B]`` -> log-probabilities ``[B, F', V]`` and ``[B]`` lengths,
    ``F' = ceil(F / stride)``; ``V = num_outputs`` (blank included: 29 for characters)."""

    def __init__(
        self, num_layers: int, dim: int, config: CtcConfig | None = None, num_outputs: int = VOCAB_SIZE
    ) -> None:
        super().__init__()
        cfg = self.config = config or CtcConfig()
        self.layer_logits = nn.Parameter(torch.zeros(num_layers)) if num_layers > 1 else None
        self.proj = nn.Sequential(nn.Linear(dim * cfg.stack, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.rnn = BiRNN(cfg.hidden, cfg.rnn_hidden, cfg.rnn_layers, cfg.dropout, cfg.rnn)
        self.out = nn.Linear(2 * cfg.rnn_hidden, num_outputs)

    def layer_weights(self) -> torch.Tensor:
        """``[L]`` softmax weights of the layers (``[1.0]`` for one layer)."""
        if self.layer_logits is None:
            return torch.ones(1)
        return torch.softmax(self.layer_logits, dim=0)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.layer_logits is None:
            mixed = x[:, :, 0]
        else:
            mixed = torch.einsum("bfld,l->bfd", x, self.layer_weights())
        stack, stride = self.config.stack, self.config.stride
        batch, frames, dim = mixed.shape
        steps = -(-frames // stride)
        # zero frames (the training mean) complete the last windows, as padding does in a batch
        mixed = nn.functional.pad(mixed, (0, 0, 0, (steps - 1) * stride + stack - frames))
        windows = mixed.unfold(1, stack, stride).transpose(2, 3)  # [B, F', stack, D]
        h = self.proj(windows.reshape(batch, steps, stack * dim))
        out_lengths = torch.div(lengths + stride - 1, stride, rounding_mode="floor")
        h = self.rnn(h, out_lengths)
        return torch.log_softmax(self.out(h).float(), dim=-1), out_lengths


def ctc_loss(
    log_probs: torch.Tensor, out_lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor
) -> torch.Tensor:
    """Mean over the batch of the per-utterance CTC loss divided by its target length."""
    return nn.functional.ctc_loss(
        log_probs.transpose(0, 1), targets, out_lengths, target_lengths, blank=BLANK, zero_infinity=True
    )
