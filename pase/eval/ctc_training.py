"""Training the CTC probe (:mod:`pase.eval.ctc`) on frozen features, and running it.

Data: :class:`AsrData` holds the utterances (features read on demand, from memory or memory-mapped
from the feature cache, and their transcripts) and cuts standardised, padded batches;
:func:`feature_stats` gives the standardisation, :func:`length_batches` groups utterances of
similar length.

Training (:func:`train_ctc_probe`): inputs standardised with the training part's per-layer,
per-dimension statistics; AdamW with warm-up and cosine decay (:func:`lr_factor`), SpecAugment-style
masks (:func:`spec_augment`), batches of utterances of similar length (at most ``batch_frames``
padded frames), gradient-norm clipping; every ``eval_every`` steps the dev part is decoded and the
state with the lowest dev error rate (CER, or PER for phones) is kept; training stops early after
``patience`` evaluations without improvement. Seeded: the same seed gives the same probe.
:func:`posteriors` and :func:`transcribe` run a trained probe over a part.
"""

from __future__ import annotations

import dataclasses
import math
import time
import typing as tp
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pase.eval.ctc import CHARACTERS, CtcConfig, CtcProbe, Units, ctc_loss, greedy_transcripts
from pase.eval.stopping import EarlyStopping


# --------------------------------------------------------------------------- data
@dataclasses.dataclass
class AsrData:
    """Utterances for the probe: features read on demand, plus transcripts.

    ``load(i)`` returns utterance ``i``'s features ``[L, F, D]`` (from the disk cache, memory-mapped,
    so ``--layers all`` on 5 h of audio does not need 9 GB of RAM); ``lengths: [N]`` frames;
    ``texts``: normalised transcripts.
    """

    load: tp.Callable[[int], np.ndarray]
    lengths: np.ndarray
    texts: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def batch(
        self, index: tp.Sequence[int], mean: torch.Tensor, std: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised, zero-padded ``x: [B, F, L, D]`` and ``lengths: [B]``."""
        feats = [torch.from_numpy(np.asarray(self.load(i), dtype=np.float32)) for i in index]
        lengths = torch.tensor([f.shape[1] for f in feats])
        num_layers, _, dim = feats[0].shape
        x = torch.zeros(len(feats), int(lengths.max()), num_layers, dim)
        for b, f in enumerate(feats):
            x[b, : f.shape[1]] = ((f - mean[:, None]) / std[:, None]).transpose(0, 1)
        return x, lengths

    def targets(
        self, index: tp.Sequence[int], units: Units = CHARACTERS
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Concatenated class indices and their lengths ``[B]``, as ``ctc_loss`` takes them."""
        seqs = [units.encode(self.texts[i]) for i in index]
        flat = torch.tensor([c for s in seqs for c in s], dtype=torch.long)
        return flat, torch.tensor([len(s) for s in seqs], dtype=torch.long)


def in_memory(feats: tp.Sequence[np.ndarray], texts: tp.Sequence[str]) -> AsrData:
    """:class:`AsrData` over arrays already in memory (each ``[L, F, D]``)."""
    return AsrData(lambda i: feats[i], np.array([f.shape[1] for f in feats]), list(texts))


def from_files(paths: tp.Sequence[Path], lengths: tp.Sequence[int], texts: tp.Sequence[str]) -> AsrData:
    """:class:`AsrData` over ``.npy`` files (memory-mapped on every read)."""
    return AsrData(lambda i: np.load(paths[i], mmap_mode="r"), np.asarray(lengths), list(texts))


def feature_stats(data: AsrData, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer, per-dimension ``(mean, std)``, each ``[L, D]``, over every frame of ``data``."""
    total = sq = None
    count = 0
    for i in range(len(data)):
        f = np.asarray(data.load(i), dtype=np.float64)  # [L, F, D]
        s, q = f.sum(axis=1), (f * f).sum(axis=1)
        total, sq = (s, q) if total is None or sq is None else (total + s, sq + q)
        count += f.shape[1]
    if total is None or sq is None or count == 0:
        raise ValueError("no frames to compute feature statistics on")
    mean = total / count
    var = np.maximum(sq / count - mean * mean, 0.0)
    return torch.from_numpy(mean).float(), torch.from_numpy(np.sqrt(var)).float().clamp_min(eps)


def length_batches(lengths: np.ndarray, batch_frames: int, max_batch: int) -> list[list[int]]:
    """Utterance indices grouped by similar length: at most ``batch_frames`` padded frames and
    ``max_batch`` utterances per batch (a longer utterance gets a batch of its own)."""
    order = np.argsort(lengths, kind="stable")
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = max(int(lengths[i]), max((int(lengths[j]) for j in current), default=0))
        if current and (longest * (len(current) + 1) > batch_frames or len(current) >= max_batch):
            batches.append(current)
            current = []
        current.append(int(i))
    if current:
        batches.append(current)
    return batches


# --------------------------------------------------------------------------- training
def spec_augment(
    x: torch.Tensor, lengths: torch.Tensor, cfg: CtcConfig, gen: torch.Generator
) -> torch.Tensor:
    """Mask standardised features ``x: [B, F, L, D]`` in place (0 is the training mean) and return it.

    Per utterance, ``cfg.time_masks`` spans of 0 to ``cfg.time_mask_frames`` frames within its
    valid frames and ``cfg.channel_masks`` bands of 0 to ``cfg.channel_mask_fraction * D``
    dimensions, the same for every layer (SpecAugment without time warping).
    """
    dim = x.shape[-1]
    widest_band = int(cfg.channel_mask_fraction * dim)

    def draw(high: int) -> int:  # uniform on 0..high
        return int(torch.randint(0, high + 1, (1,), generator=gen))

    for b, n in enumerate(lengths.tolist()):
        for _ in range(cfg.time_masks):
            width = draw(min(cfg.time_mask_frames, n))
            start = draw(n - width)
            x[b, start : start + width] = 0.0
        for _ in range(cfg.channel_masks):
            width = draw(widest_band)
            start = draw(dim - width)
            x[b, :n, :, start : start + width] = 0.0
    return x


def lr_factor(step: int, cfg: CtcConfig, total_steps: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based) as a fraction of ``cfg.lr``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.decay == "none":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    return cfg.final_lr_ratio + (1 - cfg.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclasses.dataclass
class CtcResult:
    """Test transcripts of one trained probe and how training went."""

    hypotheses: list[str]
    references: list[str]
    steps: int
    best_step: int
    #: The kept probe's dev error rate (CER for characters, PER for phones).
    valid_error: float
    layer_weights: list[float]
    #: The kept (lowest dev error) probe weights, on the CPU.
    state: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict, repr=False)
    #: ``(step, dev error rate)`` of every dev evaluation.
    curve: list[tuple[int, float]] = dataclasses.field(default_factory=list)


def posteriors(
    model: CtcProbe,
    data: AsrData,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: str | torch.device = "cpu",
    batch_frames: int = 40000,
) -> list[np.ndarray]:
    """Log-probabilities ``[F', V]`` (valid frames only) of every utterance of ``data``, in order."""
    model.eval()
    out: dict[int, np.ndarray] = {}
    with torch.no_grad():
        for index in length_batches(data.lengths, batch_frames, 64):
            x, lengths = data.batch(index, mean, std)
            log_probs, out_lengths = model(x.to(device), lengths.to(device))
            for b, i in enumerate(index):
                out[i] = log_probs[b, : int(out_lengths[b])].cpu().numpy()
    return [out[i] for i in range(len(data))]


def transcribe(
    model: CtcProbe,
    data: AsrData,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: str | torch.device = "cpu",
    units: Units = CHARACTERS,
) -> list[str]:
    """Greedy transcripts of every utterance of ``data``, in order."""
    return greedy_transcripts(posteriors(model, data, mean, std, device), units)


def train_ctc_probe(
    train: AsrData,
    valid: AsrData,
    test: AsrData,
    seed: int,
    config: CtcConfig | None = None,
    device: str | torch.device = "cpu",
    stats: tuple[torch.Tensor, torch.Tensor] | None = None,
    log: tp.Callable[[str], None] | None = None,
    units: Units = CHARACTERS,
) -> CtcResult:
    """Fit a CTC probe on ``train`` with early stopping on ``valid``'s error rate; transcribe ``test``.

    ``stats``: the standardisation ``(mean, std)`` (computed from ``train`` when not given);
    ``log``: called with one line per dev evaluation (step, training loss, dev error, seconds);
    ``units``: what the probe writes (characters, dev CER; or phones, dev PER).
    """
    cfg = config or CtcConfig()
    if len(train) == 0 or len(valid) == 0 or len(test) == 0:
        raise ValueError(f"empty ASR split: train {len(train)}, valid {len(valid)}, test {len(test)}")
    mean, std = stats if stats is not None else feature_stats(train)
    batches = length_batches(train.lengths, cfg.batch_frames, cfg.max_batch)
    total_steps = cfg.budget(len(batches))
    gen = torch.Generator().manual_seed(seed)
    # masks draw from their own generator, so a preset without masks sees the same batches
    mask_gen = torch.Generator().manual_seed(seed + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # init and dropout draw from the global generator
        num_layers, dim = mean.shape
        model = CtcProbe(num_layers, dim, cfg, units.size).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg, total_steps))
        stopper = EarlyStopping([model], cfg.patience, higher_is_better=False)  # the dev error rate
        step, start, losses = 0, time.time(), list[float]()
        curve: list[tuple[int, float]] = []
        while step < total_steps and not stopper.should_stop:
            for b in torch.randperm(len(batches), generator=gen).tolist():
                model.train()
                x, lengths = train.batch(batches[b], mean, std)
                if cfg.time_masks or cfg.channel_masks:
                    x = spec_augment(x, lengths, cfg, mask_gen)
                targets, target_lengths = train.targets(batches[b], units)
                log_probs, out_lengths = model(x.to(device), lengths.to(device))
                loss = ctc_loss(log_probs, out_lengths, targets.to(device), target_lengths.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                schedule.step()
                step += 1
                losses.append(loss.item())
                if step % cfg.eval_every == 0 or step == total_steps:
                    dev_err = units.error_rate(
                        valid.texts, transcribe(model, valid, mean, std, device, units)
                    )
                    curve.append((step, dev_err))
                    if log is not None:
                        log(
                            f"seed {seed} step {step}/{total_steps}: loss {np.mean(losses):.3f}, "
                            f"dev {units.metric.upper()} {dev_err:.4f} ({time.time() - start:.0f} s)"
                        )
                    losses = []
                    stopper.update(step, dev_err)
                if step >= total_steps or stopper.should_stop:
                    break
        stopper.restore()
        hyps = transcribe(model, test, mean, std, device, units)
    return CtcResult(
        hypotheses=hyps,
        references=list(test.texts),
        steps=step,
        best_step=stopper.best_step,
        valid_error=stopper.best_score,
        layer_weights=[float(w) for w in model.layer_weights().detach().cpu()],
        state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        curve=curve,
    )
