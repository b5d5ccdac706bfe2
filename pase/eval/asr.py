"""Speech recognition on frozen features: a CTC probe, greedy or word n-gram decoding, WER/CER/PER.

Text side (no model needed): the alphabet and transcript normalisation live in
:mod:`pase.eval.text`, the phone set in :mod:`pase.eval.phones`; :class:`Units` says what a probe
writes (characters, or phones); :func:`greedy_decode` collapses repeats and drops blanks;
:class:`LmDecoder` runs a beam search with a word n-gram (pyctcdecode + KenLM, an ARPA file);
:func:`edit_distance`, :func:`wer` and :func:`cer` score hypotheses against references through
jiwer (corpus level: summed edits over summed reference length, so long utterances weigh more,
as every ASR toolkit reports it).

Model side: :class:`CtcProbe` is the same for every feature set; :class:`CtcConfig` holds its
shape and its training recipe, with named presets. ``small`` is the first probe (a 2-layer
BiGRU of 128 units on two stacked 10 ms frames, 800 steps: WER 0.95-1.0 for every feature set,
too weak to reach words). ``base``, the default, follows SUPERB's ASR probe (a 2-layer BiLSTM of
1024 units on 100 h) at the size 5 hours of training audio and two CPU cores afford: three
stacked frames every 20 ms, a 3-layer BiLSTM of 320 units, SpecAugment-style masks on the frozen
features, warm-up and cosine decay of the learning rate, a budget in epochs.
``recipes/asr_probe`` measures the presets against each other (WER and CER against steps).
With several layers (``--layers all``) a softmax-weighted sum of them comes first, as for the
other probes.

Training (:func:`train_ctc_probe`): inputs standardised with the training part's per-layer,
per-dimension statistics; AdamW, batches of utterances of similar length (at most
``batch_frames`` padded frames), gradient-norm clipping; every ``eval_every`` steps the dev part
is decoded and the state with the lowest dev error rate (CER, or PER for phones) is kept;
training stops early after ``patience`` evaluations without improvement. Seeded: the same seed
gives the same probe.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import time
import typing as tp
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pase.eval.asr_scoring import cer, edit_distance, error_counts, wer
from pase.eval.ctc import (
    CHARACTERS,
    PHONE_UNITS,
    PRESETS,
    BiRNN,
    CtcConfig,
    CtcProbe,
    Units,
    ctc_loss,
    greedy_decode,
    greedy_transcripts,
    units_for,
)
from pase.eval.lm_decoding import LmConfig, LmDecoder

if tp.TYPE_CHECKING:
    from pase.eval.features import EvalCondition, FeatureCache, FeatureSet
    from pase.eval.probes import TrainedProbes
    from pase.eval.tasks import Item, Task

Result = dict[str, tp.Any]

#: The public names, those defined in the modules :mod:`pase.eval.asr` was split into included,
#: so that ``from pase.eval.asr import wer`` and ``asr.CtcProbe`` keep working.
__all__ = [
    # scoring (pase.eval.asr_scoring)
    "cer", "edit_distance", "error_counts", "wer",
    # units, greedy decoding, the probe (pase.eval.ctc)
    "CHARACTERS", "PHONE_UNITS", "Units", "units_for", "greedy_decode", "greedy_transcripts",
    "CtcConfig", "PRESETS", "BiRNN", "CtcProbe", "ctc_loss",
    # word n-gram decoding (pase.eval.lm_decoding)
    "LmConfig", "LmDecoder",
    # data and training (pase.eval.ctc_training)
    "AsrData", "in_memory", "from_files", "feature_stats", "length_batches",
    "spec_augment", "lr_factor", "CtcResult", "posteriors", "transcribe", "train_ctc_probe",
    # the evaluation and its reports (here)
    "Result", "ProbeCache", "EXAMPLES", "scores", "evaluate_asr", "METRICS", "score_line",
    "results_markdown", "write_results", "write_phone_summary",
]  # fmt: skip


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
        best_err, best_step, best_state = float("inf"), 0, copy.deepcopy(model.state_dict())
        step, since_best, start, losses = 0, 0, time.time(), list[float]()
        curve: list[tuple[int, float]] = []
        while step < total_steps and since_best < cfg.patience:
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
                    if dev_err < best_err:
                        best_err, best_step, since_best = dev_err, step, 0
                        best_state = copy.deepcopy(model.state_dict())
                    else:
                        since_best += 1
                if step >= total_steps or since_best >= cfg.patience:
                    break
        model.load_state_dict(best_state)
        hyps = transcribe(model, test, mean, std, device, units)
    return CtcResult(
        hypotheses=hyps,
        references=list(test.texts),
        steps=step,
        best_step=best_step,
        valid_error=best_err,
        layer_weights=[float(w) for w in model.layer_weights().detach().cpu()],
        state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        curve=curve,
    )


# --------------------------------------------------------------------------- probe cache
class ProbeCache:
    """Trained CTC probes on disk (safetensors: no code runs on load), one per training setup.

    The probe trains on clean audio whatever ``--distort`` says, so the noisy and reverberant
    test conditions of a feature set reuse the clean run's probe (same features, training and
    dev files, probe config and seed) and only extract and decode the test audio: a robust-ASR
    table of three conditions costs one probe training per feature set, not three.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root) / "ctc-probes"

    @staticmethod
    def key(fingerprint: str, train_keys: tp.Sequence[str], config: CtcConfig, seed: int) -> str:
        import json

        from pase.eval.features import _sha

        settings = json.dumps(dataclasses.asdict(config), sort_keys=True)
        return _sha(fingerprint, settings, str(seed), *train_keys)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key[2:34]}.safetensors"

    def load(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, tp.Any]] | None:
        """The probe's weights and its training record, or None (absent or damaged)."""
        import json

        from safetensors import SafetensorError, safe_open

        path = self.path(key)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = json.loads((fh.metadata() or {})["record"])
                state = {name: fh.get_tensor(name) for name in fh.keys()}
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError):
            return None  # a damaged entry is retrained, never trusted
        return state, meta

    def save(self, key: str, state: dict[str, torch.Tensor], record: dict[str, tp.Any]) -> None:
        import json

        from safetensors.torch import save_file

        from pase.audio import write_atomic

        tensors = {k: v.contiguous() for k, v in state.items()}
        write_atomic(
            self.path(key), lambda tmp: save_file(tensors, tmp, metadata={"record": json.dumps(record)})
        )


# --------------------------------------------------------------------------- evaluation
#: Test utterances whose reference and hypothesis (first seed) are kept in the report.
EXAMPLES = 5


def _cached_data(
    features: FeatureSet,
    items: tp.Sequence[Item],
    cache: FeatureCache,
    distortion: EvalCondition | None,
    desc: str,
) -> AsrData:
    """Extract (or find cached) features of ``items`` and read them back lazily from the cache."""
    from pase.eval.features import cache_features, file_key

    paths = [it.path for it in items]
    shapes = cache_features(
        features, paths, cache, distortion, desc=desc, transform=lambda f: np.array(f.shape)
    )
    # the same key cache_features stored each file under
    suffix = f"|distort={distortion.spec}" if distortion else ""
    fingerprint = features.fingerprint()
    cached = [cache.path(fingerprint, file_key(p) + suffix) for p in paths]
    missing = [str(p) for p, c in zip(paths, cached, strict=True) if not c.exists()]
    if missing:
        raise FileNotFoundError(f"feature cache {cache.root} lost the features of {missing[0]}")
    return from_files(cached, [int(s[1]) for s in shapes], [it.label for it in items])


def scores(
    units: Units, refs: tp.Sequence[str], hyps: tp.Sequence[str], suffix: str = ""
) -> dict[str, float]:
    """The headline error rates of one decoding: ``wer`` and ``cer`` for characters, ``per`` for phones."""
    if units.sep:
        return {f"per{suffix}": wer(refs, hyps)}
    return {f"wer{suffix}": wer(refs, hyps), f"cer{suffix}": cer(refs, hyps)}


def evaluate_asr(
    task: Task,
    features: FeatureSet,
    cache: FeatureCache,
    *,
    seeds: tp.Sequence[int] = (0, 1, 2),
    distortion: EvalCondition | None = None,
    device: str = "cpu",
    config: CtcConfig | None = None,
    lm: LmConfig | None = None,
    log: tp.Callable[[str], None] | None = None,
    reuse_probes: bool = True,
    trained_out: TrainedProbes | None = None,
) -> Result:
    """Train one CTC probe per seed on ``task`` and score the test part: the result record.

    Character tasks report ``wer`` and ``cer``, phone tasks ``per``: means over seeds
    (fractions; a blank output scores 1.0), with ``*_std``. ``lm``: the test part is decoded a
    second time with the word n-gram, reported as ``wer_lm`` and ``cer_lm`` beside the greedy
    scores (character tasks only: a phone task ignores it and says so). ``distortion`` applies
    to the test audio only. The probe trains on ``device``. With ``reuse_probes`` a probe
    trained before on the same features, files, config and seed is read back from ``cache``
    (:class:`ProbeCache`) instead of trained again; ``per_seed`` says which. ``trained_out``:
    filled with the standardisation and every seed's probe (for fine-tuning).
    """
    start = time.time()
    units = units_for(task)
    if lm is not None and units is not CHARACTERS:
        if log is not None:
            log(f"{task.name}: the word n-gram applies to character tasks; decoding greedily")
        lm = None
    decoder = LmDecoder(lm) if lm is not None else None
    parts = {name: task.split(name) for name in ("train", "valid", "test")}
    features.calibrate_on([it.path for it in parts["train"]])
    data = {
        name: _cached_data(
            features,
            items,
            cache,
            distortion if name == "test" else None,
            f"{task.name} {features.name} {name}",
        )
        for name, items in parts.items()
    }
    from pase.eval.features import file_key

    cfg = config or CtcConfig()
    stats = feature_stats(data["train"])
    if trained_out is not None:
        trained_out.mean, trained_out.std = stats
    probes = ProbeCache(cache.root) if reuse_probes else None
    train_keys = [file_key(it.path) for part in ("train", "valid") for it in parts[part]]
    fingerprint = features.fingerprint()  # a random encoder's digests its calibration files: once
    num_layers, dim = stats[0].shape
    refs = list(data["test"].texts)
    per_seed: list[dict[str, tp.Any]] = []
    examples: list[dict[str, str]] = []
    for seed in seeds:
        key = ProbeCache.key(fingerprint, train_keys, cfg, seed)
        found = probes.load(key) if probes is not None else None
        if found is not None:
            state, record = found
            if log is not None:
                log(f"seed {seed}: probe trained before on the same features and files, reused")
        else:
            t0 = time.time()
            fit = train_ctc_probe(
                data["train"], data["valid"], data["test"], seed, cfg, device, stats, log, units
            )
            record = {
                f"valid_{units.metric}": fit.valid_error,
                "steps": fit.steps,
                "best_step": fit.best_step,
                "layer_weights": fit.layer_weights,
                "train_seconds": round(time.time() - t0, 1),
                "curve": fit.curve,
            }
            if probes is not None:
                probes.save(key, fit.state, record)
            state = fit.state
        if trained_out is not None:
            trained_out.states[seed] = state
        model = CtcProbe(num_layers, dim, cfg, units.size).to(device)
        model.load_state_dict(state)
        log_probs = posteriors(model, data["test"], *stats, device)
        hyps = greedy_transcripts(log_probs, units)
        seed_scores = scores(units, refs, hyps)
        lm_hyps: list[str] = []
        if decoder is not None:
            lm_hyps = [decoder(lp) for lp in log_probs]
            seed_scores |= scores(units, refs, lm_hyps, "_lm")
        per_seed.append({"seed": seed, **seed_scores, **record, "probe_reused": found is not None})
        if not examples:
            examples = [
                {"file": it.path.name, "reference": r, "hypothesis": h}
                | ({"hypothesis_lm": lm_hyps[i]} if lm_hyps else {})
                for i, (it, r, h) in enumerate(zip(parts["test"], refs, hyps, strict=True))
            ][:EXAMPLES]

    def mean_std(key: str) -> dict[str, float]:
        values = [float(s[key]) for s in per_seed]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return {key: statistics.fmean(values), f"{key}_std": spread}

    headline = {k: v for name in per_seed[0] if name in METRICS for k, v in mean_std(name).items()}
    result: Result = {
        "task": task.name,
        "features": features.name,
        "probe": f"ctc-bi{cfg.rnn}",
        "layers": features.layers,
        "distort": distortion.spec if distortion else None,
        **headline,
        "lm": {"path": str(lm.path), "alpha": lm.alpha, "beta": lm.beta, "beam_width": lm.beam_width}
        if lm is not None
        else None,
        "per_seed": per_seed,
        "seeds": list(seeds),
        "probe_config": dataclasses.asdict(cfg),
        "n_train": len(parts["train"]),
        "n_valid": len(parts["valid"]),
        "n_test": len(parts["test"]),
        "unit": "utterances",
        "n_test_words": sum(len(r.split()) for r in refs),
        "n_test_chars": sum(len(r) for r in refs),
        "test_speakers": len({it.speaker for it in parts["test"]}),
        "examples": examples,
        "seconds": round(time.time() - start, 1),
    }
    if units is PHONE_UNITS:
        result["n_test_phones"] = result.pop("n_test_words")
        del result["n_test_chars"]
    if task.excluded:
        result["excluded"] = dict(task.excluded)
    return result


#: Headline error rates a sequence result may carry, in the order tables print them.
METRICS = ("wer", "cer", "wer_lm", "cer_lm", "per")


def score_line(result: Result) -> str:
    """The headline of a sequence result on one line: ``WER 0.5000 ± 0.0100  CER ...``."""
    return "  ".join(
        f"{m.upper().replace('_LM', ' (LM)')} {result[m]:.4f} ± {result[m + '_std']:.4f}"
        for m in METRICS
        if m in result
    )


def results_markdown(result: Result) -> str:
    """One ASR or phone run as markdown: the headline row, one row per seed, a few transcripts."""
    from pase.eval.report import _table

    metrics = [m for m in METRICS if m in result]
    cols = ["task", "features", "probe", "layers", "distort",
            *(c for m in metrics for c in (m, f"{m}_std")),
            "n_train", "n_valid", "n_test", "test_speakers"]  # fmt: skip
    head = _table(cols, [[result[c] for c in cols]])
    valid = next(k for k in result["per_seed"][0] if k.startswith("valid_"))
    seed_cols = ["seed", *metrics, valid, "steps", "best_step"]
    seeds = _table(seed_cols, [[s[c] for c in seed_cols] for s in result["per_seed"]])
    examples = "".join(
        f"- `{e['file']}`\n  - ref: {e['reference']}\n  - hyp: {e['hypothesis']}\n"
        + (f"  - hyp (LM): {e['hypothesis_lm']}\n" if "hypothesis_lm" in e else "")
        for e in result["examples"]
    )
    if "per" in result:
        size = f"the {result['n_test_phones']} phones"
    else:
        size = f"the {result['n_test_words']} words and {result['n_test_chars']} characters"
    lm = result.get("lm")
    lm_note = (
        f" `(LM)`: beam search ({lm['beam_width']} beams) with the word n-gram `{lm['path']}`, "
        f"alpha {lm['alpha']}, beta {lm['beta']}; the others are greedy."
        if lm
        else ""
    )
    excluded = result.get("excluded")
    excluded_note = (
        " Utterances left out of the task (a word outside the lexicon): "
        + ", ".join(f"{part} {n}" for part, n in excluded.items())
        + "."
        if excluded
        else ""
    )
    return (
        f"# {result['task']} / {result['features']}\n\n{head}\n"
        f"Error rates are fractions over {size} of the test part (a blank output scores 1.0); "
        f"spread is the sample standard deviation over seeds.{lm_note}{excluded_note} "
        f"Wall time {result['seconds']:.1f} s.\n\n## Per seed\n\n{seeds}\n"
        f"## Transcripts (first seed)\n\n{examples}"
    )


def write_results(result: Result, out_dir: Path) -> None:
    """``results.json`` and ``results.md`` in ``out_dir``, each written atomically."""
    import json

    from pase.eval.report import _write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    _write_text(out_dir / "results.json", json.dumps(result, indent=2) + "\n")
    _write_text(out_dir / "results.md", results_markdown(result))


def write_phone_summary(results: tp.Sequence[Result], out_dir: Path) -> None:
    """``summary_phone.json`` and ``summary_phone.md``: PER per (task, feature set, test condition)."""
    import json

    from pase.eval.report import _table, _write_text

    rows = [[r["task"], r["features"], r["distort"], r["per"], r["per_std"]] for r in results]
    md = "# Phone recognition: PER (fraction) ± std over seeds\n\n" + _table(
        ("task", "features", "distort", "PER", "PER std"), rows
    )
    _write_text(out_dir / "summary_phone.json", json.dumps(list(results), indent=2) + "\n")
    _write_text(out_dir / "summary_phone.md", md)
