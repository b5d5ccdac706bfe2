"""Fine-tuning: train the encoder together with the probe (``pase eval --finetune``).

The probe is the frozen benchmark's (the MLP or linear :class:`pase.eval.probes.Probe` on mean +
std pooled frames for utterance tasks, on +-2 context frames for frame tasks, the
:class:`pase.eval.ctc.CtcProbe` for ASR), fed by the encoder's frames instead of cached features.
Inputs are standardised with the statistics of the *initial* encoder's training features (fixed
during fine-tuning), so the probe starts from the same input scale as the frozen run.

- **Probe start**: by default the probe starts from the frozen run's trained probe of the same
  seed (linear probing, then fine-tuning; Kumar et al. 2022), with the frozen run's input
  standardisation, and that starting point is scored on the validation part like every later
  state; ``head_init="fresh"`` trains a new probe from step 0 (see :class:`FinetuneConfig`).
- **Learning rates**: the encoder gets its own, lower rate (``encoder_lr``, default 5e-5) than the
  probe (``probe_lr``, 1e-3), so the pretrained weights move slowly while the fresh probe fits.
- **BatchNorm**: every BatchNorm of the encoder stays in eval mode: running statistics are frozen
  (those of the pretrained model, or those re-estimated on the task's audio for a random-init
  encoder) and their affine weights are trained. Batches are small (8 crops) to fit 2 CPU cores,
  and batch statistics of 8 crops would be noisy and differ from the statistics the test sees.
- **Memory**: utterance and frame tasks train on random crops of at most ``crop_seconds``
  (start and length on the 10 ms grid, frame labels cut to match); ASR trains on whole
  utterances grouped to at most ``asr_batch_seconds`` of padded audio per step. Validation and
  test run each whole file through :meth:`pase.Encoder.infer_long`, exactly like the frozen run.
- **Budget**: at most ``max_steps`` steps; every ``eval_every`` steps the validation part is
  scored (accuracy, or CER for ASR) and the best encoder + probe state is kept; training stops
  after ``patience`` evaluations without improvement. Each seed starts from the same encoder.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import time
import typing as tp
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pase.audio import HOP, MIN_SAMPLES, load_audio, num_frames
from pase.eval import asr_scoring, ctc, ctc_training, probes, text
from pase.eval.results import TaskResult
from pase.eval.stopping import EarlyStopping
from pase.eval.tasks import IGNORE, Item, Task, TaskError, frame_labels, with_valid_split
from pase.progress import progress, say

if tp.TYPE_CHECKING:
    from pase.encoder import Encoder
    from pase.eval.features import EncoderFeatures, EvalCondition, FeatureCache


@dataclasses.dataclass
class FinetuneConfig:
    """Fine-tuning settings; the defaults are used for every encoder and task alike."""

    encoder_lr: float = 5e-5
    probe_lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 8
    crop_seconds: float = 3.0
    asr_batch_seconds: float = 40.0
    max_steps: int = 600
    eval_every: int = 100
    patience: int = 3
    grad_clip: float = 5.0
    #: "frozen": the probe starts from the frozen run's trained probe of the same seed, with its
    #: input standardisation (linear probing, then fine-tuning), and the validation part is scored
    #: before the first step too, so the kept state is never worse on it than the frozen one.
    #: "fresh": a newly initialised probe trained jointly with the encoder from step 0. Measured
    #: on fsdd-digit with the packaged pase+ (seed 0, 600 steps): fresh 0.943 against frozen
    #: 0.970; a fresh probe gets 600 updates of 8 crops where the frozen one had 47 epochs, and
    #: its early random gradients reach the encoder.
    head_init: tp.Literal["frozen", "fresh"] = "frozen"


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm of ``module`` in eval mode (frozen running statistics)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def encoder_frames(
    encoder: Encoder, wav: torch.Tensor, lengths: torch.Tensor, layers: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``wav: [B, T]`` -> frames ``[B, F, L, D]`` (zero past each item's length) and ``[B]`` lengths."""
    if layers == "final":
        feats, flen = encoder(wav, lengths)
        return feats[:, :, None], flen
    states, flen = encoder.extract_features(wav, lengths)
    return torch.stack(states, dim=2), flen


def file_frames(encoder: Encoder, wav: np.ndarray, layers: str, device: str) -> torch.Tensor:
    """One whole file in eval mode: ``[1, F, L, D]`` (what the frozen run would cache)."""
    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)).to(device)
    out = encoder.infer_long(x, layers=tp.cast(tp.Literal["final", "all"], layers))
    return (out[None] if layers == "final" else out).transpose(0, 1)[None]


def _mask(flen: torch.Tensor, frames: int) -> torch.Tensor:
    return torch.arange(frames, device=flen.device)[None] < flen[:, None]  # [B, F]


class _Head(nn.Module):
    """A probe on encoder frames ``x: [B, F, L, D]`` with valid lengths ``flen: [B]``."""

    mean: torch.Tensor
    std: torch.Tensor
    probe: nn.Module

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def standardise(self, x: torch.Tensor, flen: torch.Tensor) -> torch.Tensor:
        keep = _mask(flen, x.shape[1])[:, :, None, None]
        return torch.where(keep, (x - self.mean) / self.std, torch.zeros_like(x))


class UtteranceHead(_Head):
    """Masked mean + std pooling, standardised, then the MLP / linear probe -> ``[B, C]``."""

    def __init__(self, probe: probes.Probe, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__(mean, std)
        self.probe = probe

    def forward(self, x: torch.Tensor, flen: torch.Tensor) -> torch.Tensor:
        keep = _mask(flen, x.shape[1])[:, :, None, None].to(x.dtype)
        n = flen.clamp_min(1)[:, None, None].to(x.dtype)
        mu = (x * keep).sum(1) / n
        sd = ((((x - mu[:, None]) * keep) ** 2).sum(1) / n).sqrt()
        pooled = (torch.cat([mu, sd], dim=-1) - self.mean) / self.std  # [B, L, 2D]
        return tp.cast(torch.Tensor, self.probe(pooled[:, None]))


class FrameHead(_Head):
    """Standardised frames with ``context`` neighbours each side -> logits ``[B, F, C]``."""

    def __init__(self, probe: probes.Probe, mean: torch.Tensor, std: torch.Tensor, context: int) -> None:
        super().__init__(mean, std)
        self.probe, self.context = probe, context

    def forward(self, x: torch.Tensor, flen: torch.Tensor) -> torch.Tensor:
        x = self.standardise(x, flen)
        batch, frames = x.shape[:2]
        padded = nn.functional.pad(x, (0, 0, 0, 0, self.context, self.context))
        windows = padded.unfold(1, 2 * self.context + 1, 1).permute(0, 1, 4, 2, 3)  # [B, F, K, L, D]
        logits = self.probe(windows.reshape(batch * frames, *windows.shape[2:]))
        return tp.cast(torch.Tensor, logits.reshape(batch, frames, -1))


class CtcHead(_Head):
    """Standardised frames -> the CTC probe's log-probabilities ``[B, F', V]`` and lengths."""

    def __init__(self, probe: ctc.CtcProbe, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__(mean, std)
        self.probe = probe

    def forward(self, x: torch.Tensor, flen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return tp.cast(tuple[torch.Tensor, torch.Tensor], self.probe(self.standardise(x, flen), flen))


# --------------------------------------------------------------------------- batches
def _pad(wavs: tp.Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(w) for w in wavs])
    out = torch.zeros(len(wavs), int(lengths.max()))
    for i, w in enumerate(wavs):
        out[i, : len(w)] = torch.from_numpy(np.asarray(w, dtype=np.float32))
    return out, lengths


def _crop(wav: np.ndarray, max_samples: int, gen: torch.Generator) -> tuple[np.ndarray, int]:
    """A random crop of at most ``max_samples`` starting on the 10 ms grid: ``(crop, first frame)``."""
    if len(wav) <= max_samples:
        return wav, 0
    first = int(torch.randint(0, (len(wav) - max_samples) // HOP + 1, (1,), generator=gen))
    return wav[first * HOP : first * HOP + max_samples], first


class _Batches:
    """Training batches of one task, drawn with the seed's generator."""

    def __init__(self, task: Task, items: list[Item], cfg: FinetuneConfig, gen: torch.Generator) -> None:
        self.task, self.items, self.cfg, self.gen = task, items, cfg, gen
        self.classes = task.class_index()
        self.max_samples = int(cfg.crop_seconds * 16000) // HOP * HOP
        if task.sequence_level:
            # grouped by length once (durations from the headers), shuffled per epoch
            from pase.audio import audio_info

            frames = np.array([audio_info(it.path)[0] // HOP for it in items])
            self.groups = ctc_training.length_batches(
                frames, int(cfg.asr_batch_seconds * 100), cfg.batch_size
            )
        else:
            self.groups = [list(g) for g in torch.arange(len(items)).split(cfg.batch_size)]
        self._queue: list[list[int]] = []

    def _next_group(self) -> list[int]:
        if not self._queue:
            if self.task.sequence_level:
                order = torch.randperm(len(self.groups), generator=self.gen).tolist()
                self._queue = [self.groups[i] for i in order]
            else:
                perm = torch.randperm(len(self.items), generator=self.gen)
                self._queue = [[int(i) for i in g] for g in perm.split(self.cfg.batch_size)]
        return self._queue.pop(0)

    def next(self) -> tuple[torch.Tensor, torch.Tensor, tp.Any]:
        """``(wav [B, T], lengths [B], targets)``; targets depend on the task kind."""
        chosen = [self.items[i] for i in self._next_group()]
        wavs = [load_audio(it.path, min_samples=MIN_SAMPLES) for it in chosen]
        if self.task.sequence_level:
            wav, lengths = _pad(wavs)
            return wav, lengths, [it.label for it in chosen]
        crops = [_crop(w, self.max_samples, self.gen) for w in wavs]
        wav, lengths = _pad([c for c, _ in crops])
        if not self.task.frame_level:
            return wav, lengths, torch.tensor([self.classes[it.label] for it in chosen])
        frames = num_frames(int(lengths.max()))
        labels = torch.full((len(chosen), frames), IGNORE, dtype=torch.long)
        for b, (it, w, (crop, first)) in enumerate(zip(chosen, wavs, crops, strict=True)):
            full = frame_labels(it, num_frames(len(w)), self.classes)
            n = num_frames(len(crop))
            labels[b, :n] = torch.from_numpy(full[first : first + n])
        return wav, lengths, labels


# --------------------------------------------------------------------------- statistics, scoring
def _initial_stats(
    task: Task, features: EncoderFeatures, cache: FeatureCache, items: list[Item]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardisation of the probe's input from the initial encoder's (cached) training features:
    pooled vectors ``[L, 2D]`` for utterance tasks, frames ``[L, D]`` otherwise."""
    from pase.eval.features import cache_features

    paths = [it.path for it in items]
    desc = f"{task.name} {features.name} stats"
    if not task.frame_level and not task.sequence_level:
        pooled = torch.from_numpy(
            np.stack(cache_features(features, paths, cache, desc=desc, transform=probes.pool_utterance))
        )
        return pooled.mean(0), pooled.std(0).clamp_min(1e-5)

    def sums(f: np.ndarray) -> np.ndarray:
        f64 = f.astype(np.float64)
        return np.stack(
            [f64.sum(axis=1), (f64 * f64).sum(axis=1), np.full(f.shape[::2], f.shape[1], np.float64)]
        )

    total = np.sum(cache_features(features, paths, cache, desc=desc, transform=sums), axis=0)
    mean = total[0] / total[2]
    std = np.sqrt(np.maximum(total[1] / total[2] - mean * mean, 0.0))
    return torch.from_numpy(mean).float(), torch.from_numpy(std).float().clamp_min(1e-5)


def _build_head(
    task: Task, num_layers: int, dim: int, kind: probes.ProbeKind, stats: tuple[torch.Tensor, torch.Tensor]
) -> _Head:
    mean, std = stats
    if task.sequence_level:
        return CtcHead(ctc.CtcProbe(num_layers, dim), mean, std)
    num_classes = len(task.classes)
    if task.frame_level:
        probe = probes.Probe(num_layers, dim, num_classes, probes.FRAME_CONTEXT, kind)
        return FrameHead(probe, mean, std, probes.FRAME_CONTEXT)
    return UtteranceHead(probes.Probe(num_layers, 2 * dim, num_classes, 0, kind), mean, std)


def _loss(head: _Head, task: Task, x: torch.Tensor, flen: torch.Tensor, targets: tp.Any) -> torch.Tensor:
    device = x.device
    if task.sequence_level:
        log_probs, out_lengths = head(x, flen)
        seqs = [text.encode(t) for t in targets]
        flat = torch.tensor([c for s in seqs for c in s], dtype=torch.long, device=device)
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long, device=device)
        return ctc.ctc_loss(log_probs, out_lengths, flat, lengths)
    logits = head(x, flen)
    if task.frame_level:
        return nn.functional.cross_entropy(
            logits.flatten(0, 1), targets.to(device).flatten(), ignore_index=IGNORE
        )
    return nn.functional.cross_entropy(logits, targets.to(device))


@torch.no_grad()
def _predict(
    encoder: Encoder,
    head: _Head,
    task: Task,
    items: list[Item],
    layers: str,
    device: str,
    distortion: EvalCondition | None = None,
) -> tuple[list[tp.Any], list[tp.Any]]:
    """Whole-file predictions in eval mode: ``(predictions, references)``; class indices (one per
    file, or one per labelled frame) or transcripts."""
    encoder.eval()
    head.eval()
    classes = task.class_index()
    preds: list[tp.Any] = []
    refs: list[tp.Any] = []
    for it in items:
        wav = load_audio(it.path, min_samples=MIN_SAMPLES)
        if distortion is not None:
            wav = distortion(wav, it.path)
        x = file_frames(encoder, wav, layers, device)
        flen = torch.tensor([x.shape[1]], device=device)
        if task.sequence_level:
            log_probs, out_lengths = head(x, flen)
            preds.append(text.decode(ctc.greedy_decode(log_probs[0], int(out_lengths[0]))))
            refs.append(it.label)
        elif task.frame_level:
            labels = frame_labels(it, x.shape[1], classes)
            keep = np.flatnonzero(labels != IGNORE)
            preds += head(x, flen)[0].argmax(-1).cpu().numpy()[keep].tolist()
            refs += labels[keep].tolist()
        else:
            preds.append(int(head(x, flen).argmax(-1)[0]))
            refs.append(classes[it.label])
    return preds, refs


def _valid_score(task: Task, preds: list[tp.Any], refs: list[tp.Any]) -> float:
    """Higher is better: accuracy, or minus the CER for ASR."""
    if task.sequence_level:
        return -asr_scoring.cer(refs, preds)
    return float(np.mean(np.asarray(preds) == np.asarray(refs))) if refs else 0.0


# --------------------------------------------------------------------------- the run
def finetune(
    task: Task,
    features: EncoderFeatures,
    cache: FeatureCache,
    *,
    seeds: tp.Sequence[int] = (0, 1, 2),
    distortion: EvalCondition | None = None,
    probe: probes.ProbeKind = "mlp",
    device: str = "cpu",
    config: FinetuneConfig | None = None,
    save_encoder: Path | None = None,
    init: probes.TrainedProbes | None = None,
) -> TaskResult:
    """Fine-tune ``features``' encoder with the task's probe, once per seed; the result record.

    Classification tasks report ``accuracy`` and ``macro_f1`` (means over seeds, with ``_std``),
    ASR ``wer`` and ``cer``. ``save_encoder``: the first seed's best encoder is written there
    with :meth:`pase.Encoder.save_pretrained`. ``init``: the frozen run's probes (filled by
    ``evaluate(trained_out=...)``); with ``head_init="frozen"`` each seed's probe starts from
    them, without them (or for a seed they lack) it starts fresh and ``per_seed`` says so.
    """
    cfg = config or FinetuneConfig()
    if task.sequence_level and ctc.units_for(task) is not ctc.CHARACTERS:
        # the fine-tuning head decodes characters and is scored by WER/CER, not phones by PER
        raise TaskError(f"task {task.name}: fine-tuning supports character ASR, not phone recognition")
    start = time.time()
    if not task.sequence_level:
        task = with_valid_split(task)
    parts = {name: task.split(name) for name in ("train", "valid", "test")}
    valid, layers = parts["valid"], features.layers
    features.calibrate_on([it.path for it in parts["train"]])
    if not features._calibrated:  # a random encoder's BatchNorm statistics, re-estimated once
        features._reestimate_batchnorm()
    frozen = init if cfg.head_init == "frozen" and init is not None and init.states else None
    if frozen is not None:
        stats = (frozen.mean.float(), frozen.std.float())
    else:
        stats = _initial_stats(task, features, cache, parts["train"])
    num_layers = 1 if layers == "final" else features.encoder.num_layers
    dim = features.encoder.embedding_dim
    per_seed: list[dict[str, tp.Any]] = []
    for n, seed in enumerate(seeds):
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = copy.deepcopy(features.encoder).to(device)
            head = _build_head(task, num_layers, dim, probe, stats)
            start_state = frozen.states.get(seed) if frozen is not None else None
            head_from_frozen = start_state is not None
            if start_state is not None:
                head.probe.load_state_dict(start_state)
            head = head.to(device)
            opt = torch.optim.AdamW(
                [
                    {"params": list(encoder.parameters()), "lr": cfg.encoder_lr},
                    {"params": list(head.parameters()), "lr": cfg.probe_lr},
                ],
                weight_decay=cfg.weight_decay,
            )
            batches = _Batches(task, parts["train"], cfg, gen)
            curve: list[tuple[int, float]] = []  # (step, validation score)
            stopper = EarlyStopping([encoder, head], cfg.patience)  # validation accuracy or -CER
            if head_from_frozen:  # the starting point competes: fine-tuning must earn its place
                start_score = _valid_score(task, *_predict(encoder, head, task, valid, layers, device))
                stopper.best_score = start_score  # the state kept at step 0 is this one
                curve.append((0, round(start_score, 4)))
            step = 0
            what = f"{task.name} {features.name} fine-tune seed {seed}"
            bar = progress(total=cfg.max_steps, desc=what, unit="step")
            while step < cfg.max_steps and not stopper.should_stop:
                encoder.train()
                freeze_batchnorm(encoder)
                head.train()
                wav, lengths, targets = batches.next()
                x, flen = encoder_frames(encoder, wav.to(device), lengths.to(device), layers)
                loss = _loss(head, task, x, flen, targets)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_([*encoder.parameters(), *head.parameters()], cfg.grad_clip)
                opt.step()
                step += 1
                bar.update(1)
                best = f"{stopper.best_score:.4f}@{stopper.best_step}"
                bar.set_postfix(loss=f"{loss.item():.3f}", valid=best, refresh=False)
                if step % cfg.eval_every == 0 or step == cfg.max_steps:
                    score = _valid_score(task, *_predict(encoder, head, task, valid, layers, device))
                    curve.append((step, round(score, 4)))
                    say(f"{what} step {step}: validation {score:.4f}")
                    stopper.update(step, score)
            bar.close()
            stopper.restore()
            preds, refs = _predict(encoder, head, task, parts["test"], layers, device, distortion)
        row: dict[str, tp.Any] = {
            "seed": seed,
            "head_init": "frozen" if head_from_frozen else "fresh",
            "steps": step,
            "best_step": stopper.best_step,
            "valid_score": stopper.best_score,
            "valid_curve": curve,
        }
        if task.sequence_level:
            row.update(wer=asr_scoring.wer(refs, preds), cer=asr_scoring.cer(refs, preds))
        else:
            cm = probes.confusion_matrix(np.asarray(refs), np.asarray(preds), len(task.classes))
            row.update(accuracy=probes.accuracy(cm), macro_f1=probes.macro_f1(cm))
        per_seed.append(row)
        if n == 0 and save_encoder is not None:
            encoder.to("cpu").save_pretrained(save_encoder)

    metrics = ("wer", "cer") if task.sequence_level else ("accuracy", "macro_f1")
    seconds = round(time.time() - start, 1)
    scores: dict[str, float] = {}
    for key in metrics:
        values = [float(s[key]) for s in per_seed]
        scores[key] = statistics.fmean(values)
        scores[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return TaskResult(
        kind="asr" if task.sequence_level else "classification",
        stage="finetuned",
        task=task.name,
        features=features.name,
        probe="ctc-bigru" if task.sequence_level else probe,
        layers=layers,
        distort=distortion.spec if distortion else None,
        scores=scores,
        per_seed=per_seed,
        seeds=list(seeds),
        details={
            "finetune_config": dataclasses.asdict(cfg),
            "saved_encoder": str(save_encoder) if save_encoder is not None else None,
        },
        seconds=seconds,
    )


def comparison_markdown(frozen: TaskResult, finetuned: TaskResult) -> str:
    """Frozen vs fine-tuned, side by side (the PASE paper's table layout)."""

    def cell(r: TaskResult, k: str) -> str:
        return f"{r.scores[k]:.4f} ± {r.scores[k + '_std']:.4f}"

    rows = "".join(f"| {k} | {cell(frozen, k)} | {cell(finetuned, k)} |\n" for k in finetuned.metrics)
    rows += f"| seconds | {frozen.seconds:.1f} | {finetuned.seconds:.1f} |\n"
    cfg = finetuned.details["finetune_config"]
    inits = {s.get("head_init", "fresh") for s in finetuned.per_seed}
    start = "mixed" if len(inits) > 1 else {"frozen": "from the frozen run's probe"}.get(inits.pop(), "fresh")
    return (
        "\n## Frozen vs fine-tuned\n\n| metric | frozen | fine-tuned |\n|---|---|---|\n" + rows + "\n"
        f"Fine-tuned: encoder lr {cfg['encoder_lr']}, probe lr {cfg['probe_lr']}, batch {cfg['batch_size']}, "
        f"BatchNorm in eval mode, at most {cfg['max_steps']} steps (best validation state kept); "
        f"probe started {start}; mean ± std over seeds.\n"
    )
