"""Character ASR on frozen features: a small CTC probe, greedy decoding, WER and CER.

Text side (no model needed): the alphabet and transcript normalisation live in
:mod:`pase.eval.text` (the task definitions need them too); :func:`greedy_decode` collapses
repeats and drops blanks; :func:`edit_distance`, :func:`wer` and
:func:`cer` score hypotheses against references (corpus level: summed edits over summed
reference length, so long utterances weigh more, as every ASR toolkit reports it).

Model side: :class:`CtcProbe` is the same for every feature set. SUPERB's ASR probe is a 2-layer
BiLSTM of 1024 units on every 20 ms frame; that costs hours per epoch on 2 CPU cores. Ours keeps
the recipe's shape at a CPU-affordable size: two 10 ms frames stacked (20 ms, which halves the
recurrent cost and still leaves ~3 outputs per LibriSpeech character), a 256-unit projection, a
2-layer bidirectional GRU of 128 units per direction (a GRU has 3/4 of an LSTM's gates for the
same width), and a linear layer to the 29 outputs. One training step (8000 padded frames, ~80 s
of audio) took about 1 s on one shared core with FBANK inputs. With several layers
(``--layers all``) a softmax-weighted sum of them comes first, as for the other probes.

Training (:func:`train_ctc_probe`): inputs standardised with the training part's per-layer,
per-dimension statistics; AdamW, batches of utterances of similar length (at most
``batch_frames`` padded frames), gradient-norm clipping; a fixed budget of ``max_steps`` steps;
every ``eval_every`` steps the dev part is decoded and the state with the lowest dev CER is kept;
training stops early after ``patience`` evaluations without improvement. Seeded: the same seed
gives the same probe.
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

from pase.eval.text import BLANK, VOCAB_SIZE, decode, encode

if tp.TYPE_CHECKING:
    from pase.eval.features import Distortion, FeatureCache, FeatureSet
    from pase.eval.probes import TrainedProbes
    from pase.eval.tasks import Item, Task

Result = dict[str, tp.Any]


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


# --------------------------------------------------------------------------- scoring
def edit_distance(ref: tp.Sequence[tp.Any], hyp: tp.Sequence[tp.Any]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1).

    One row of the table at a time, vectorised: within a row, an insertion chain is a running
    minimum of ``cost[j] - j``, so no inner Python loop is needed.
    """
    if not ref or not hyp:
        return max(len(ref), len(hyp))
    hyp_arr = np.asarray([hash(h) for h in hyp])
    cols = np.arange(len(hyp) + 1)
    prev = cols.copy()
    for i, r in enumerate(ref, 1):
        sub = prev[:-1] + (hyp_arr != hash(r))
        best = np.empty_like(prev)
        best[0] = i
        best[1:] = np.minimum(prev[1:] + 1, sub)
        prev = np.minimum.accumulate(best - cols) + cols
    return int(prev[-1])


def error_counts(
    refs: tp.Sequence[str], hyps: tp.Sequence[str], unit: tp.Literal["word", "char"]
) -> tuple[int, int]:
    """``(edits, reference length)`` summed over utterances, in words or characters (spaces count)."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    edits = total = 0
    for ref, hyp in zip(refs, hyps, strict=True):
        r, h = (ref.split(), hyp.split()) if unit == "word" else (ref, hyp)
        edits += edit_distance(r, h)
        total += len(r)
    return edits, total


def wer(refs: tp.Sequence[str], hyps: tp.Sequence[str]) -> float:
    """Word error rate, a fraction: ``wer(["a b c"], ["a c"]) == 1 / 3``. A blank output scores 1."""
    edits, total = error_counts(refs, hyps, "word")
    return edits / max(total, 1)


def cer(refs: tp.Sequence[str], hyps: tp.Sequence[str]) -> float:
    """Character error rate, a fraction (spaces are characters). A blank output scores 1."""
    edits, total = error_counts(refs, hyps, "char")
    return edits / max(total, 1)


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

    def targets(self, index: tp.Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Concatenated class indices and their lengths ``[B]``, as ``ctc_loss`` takes them."""
        seqs = [encode(self.texts[i]) for i in index]
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


# --------------------------------------------------------------------------- probe
@dataclasses.dataclass
class CtcConfig:
    """The CTC probe and its training budget; the defaults are used for every feature set."""

    hidden: int = 256
    rnn_hidden: int = 128
    rnn_layers: int = 2
    dropout: float = 0.2
    #: 10 ms frames merged into one probe step (2: 20 ms, as SUPERB's ASR probe runs).
    stack: int = 2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    #: Padded 10 ms frames per batch (6 utterances of 13 s) and utterances per batch at most.
    batch_frames: int = 8000
    max_batch: int = 32
    #: The fixed budget; dev CER every ``eval_every`` steps, stop after ``patience`` without gain.
    max_steps: int = 800
    eval_every: int = 100
    patience: int = 3


class BiGRU(nn.Module):
    """A bidirectional GRU stack over padded batches, exact for every item's valid frames.

    ``x: [B, T, D]``, ``lengths: [B]`` -> ``[B, T, 2H]``. The backward direction runs on each
    item's valid frames reversed in place (padding stays at the end), so padding never reaches
    a valid frame. PyTorch's packed sequences do the same but run ~5x slower on CPU.
    """

    def __init__(self, input_size: int, hidden: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        sizes = [input_size] + [2 * hidden] * (num_layers - 1)
        self.fwd = nn.ModuleList(nn.GRU(n, hidden, batch_first=True) for n in sizes)
        self.bwd = nn.ModuleList(nn.GRU(n, hidden, batch_first=True) for n in sizes)
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
    ``F' = ceil(F / stack)``."""

    def __init__(self, num_layers: int, dim: int, config: CtcConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or CtcConfig()
        self.layer_logits = nn.Parameter(torch.zeros(num_layers)) if num_layers > 1 else None
        self.proj = nn.Sequential(nn.Linear(dim * cfg.stack, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.rnn = BiGRU(cfg.hidden, cfg.rnn_hidden, cfg.rnn_layers, cfg.dropout)
        self.out = nn.Linear(2 * cfg.rnn_hidden, VOCAB_SIZE)

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
        stack = self.config.stack
        batch, frames, dim = mixed.shape
        pad = (-frames) % stack
        if pad:
            mixed = nn.functional.pad(mixed, (0, 0, 0, pad))
        h = self.proj(mixed.reshape(batch, (frames + pad) // stack, dim * stack))
        out_lengths = torch.div(lengths + stack - 1, stack, rounding_mode="floor")
        h = self.rnn(h, out_lengths)
        return torch.log_softmax(self.out(h).float(), dim=-1), out_lengths


def ctc_loss(
    log_probs: torch.Tensor, out_lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor
) -> torch.Tensor:
    """Mean over the batch of the per-utterance CTC loss divided by its target length."""
    return nn.functional.ctc_loss(
        log_probs.transpose(0, 1), targets, out_lengths, target_lengths, blank=BLANK, zero_infinity=True
    )


@dataclasses.dataclass
class CtcResult:
    """Test transcripts of one trained probe and how training went."""

    hypotheses: list[str]
    references: list[str]
    steps: int
    best_step: int
    valid_cer: float
    layer_weights: list[float]
    #: The kept (lowest dev CER) probe weights, on the CPU.
    state: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict, repr=False)


def transcribe(
    model: CtcProbe,
    data: AsrData,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: str | torch.device = "cpu",
    batch_frames: int = 40000,
) -> list[str]:
    """Greedy transcripts of every utterance of ``data``, in order."""
    model.eval()
    hyps: dict[int, str] = {}
    with torch.no_grad():
        for index in length_batches(data.lengths, batch_frames, 64):
            x, lengths = data.batch(index, mean, std)
            log_probs, out_lengths = model(x.to(device), lengths.to(device))
            for b, i in enumerate(index):
                hyps[i] = decode(greedy_decode(log_probs[b], int(out_lengths[b])))
    return [hyps[i] for i in range(len(data))]


def train_ctc_probe(
    train: AsrData,
    valid: AsrData,
    test: AsrData,
    seed: int,
    config: CtcConfig | None = None,
    device: str | torch.device = "cpu",
    stats: tuple[torch.Tensor, torch.Tensor] | None = None,
    log: tp.Callable[[str], None] | None = None,
) -> CtcResult:
    """Fit a CTC probe on ``train`` with early stopping on ``valid``'s CER; transcribe ``test``.

    ``stats``: the standardisation ``(mean, std)`` (computed from ``train`` when not given);
    ``log``: called with one line per dev evaluation (step, training loss, dev CER, seconds).
    """
    cfg = config or CtcConfig()
    if len(train) == 0 or len(valid) == 0 or len(test) == 0:
        raise ValueError(f"empty ASR split: train {len(train)}, valid {len(valid)}, test {len(test)}")
    mean, std = stats if stats is not None else feature_stats(train)
    batches = length_batches(train.lengths, cfg.batch_frames, cfg.max_batch)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # init and dropout draw from the global generator
        num_layers, dim = mean.shape
        model = CtcProbe(num_layers, dim, cfg).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        best_cer, best_step, best_state = float("inf"), 0, copy.deepcopy(model.state_dict())
        step, since_best, start, losses = 0, 0, time.time(), list[float]()
        while step < cfg.max_steps and since_best < cfg.patience:
            for b in torch.randperm(len(batches), generator=gen).tolist():
                model.train()
                x, lengths = train.batch(batches[b], mean, std)
                targets, target_lengths = train.targets(batches[b])
                log_probs, out_lengths = model(x.to(device), lengths.to(device))
                loss = ctc_loss(log_probs, out_lengths, targets.to(device), target_lengths.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                step += 1
                losses.append(loss.item())
                if step % cfg.eval_every == 0 or step == cfg.max_steps:
                    dev_cer = cer(valid.texts, transcribe(model, valid, mean, std, device))
                    if log is not None:
                        log(
                            f"seed {seed} step {step}: loss {np.mean(losses):.3f}, dev CER {dev_cer:.4f} "
                            f"({time.time() - start:.0f} s)"
                        )
                    losses = []
                    if dev_cer < best_cer:
                        best_cer, best_step, since_best = dev_cer, step, 0
                        best_state = copy.deepcopy(model.state_dict())
                    else:
                        since_best += 1
                if step >= cfg.max_steps or since_best >= cfg.patience:
                    break
        model.load_state_dict(best_state)
        hyps = transcribe(model, test, mean, std, device)
    return CtcResult(
        hypotheses=hyps,
        references=list(test.texts),
        steps=step,
        best_step=best_step,
        valid_cer=best_cer,
        layer_weights=[float(w) for w in model.layer_weights().detach().cpu()],
        state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
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
    distortion: Distortion | None,
    desc: str,
) -> AsrData:
    """Extract (or find cached) features of ``items`` and read them back lazily from the cache."""
    from pase.eval.features import extract_files, file_key

    paths = [it.path for it in items]
    shapes = extract_files(
        features, paths, cache, distortion, desc=desc, transform=lambda f: np.array(f.shape)
    )
    # the same key extract_files stored each file under
    suffix = f"|distort={distortion.spec}" if distortion else ""
    fingerprint = features.fingerprint()
    cached = [cache.path(fingerprint, file_key(p) + suffix) for p in paths]
    missing = [str(p) for p, c in zip(paths, cached, strict=True) if not c.exists()]
    if missing:
        raise FileNotFoundError(f"feature cache {cache.root} lost the features of {missing[0]}")
    return from_files(cached, [int(s[1]) for s in shapes], [it.label for it in items])


def evaluate_asr(
    task: Task,
    features: FeatureSet,
    cache: FeatureCache,
    *,
    seeds: tp.Sequence[int] = (0, 1, 2),
    distortion: Distortion | None = None,
    device: str = "cpu",
    config: CtcConfig | None = None,
    log: tp.Callable[[str], None] | None = None,
    reuse_probes: bool = True,
    trained_out: TrainedProbes | None = None,
) -> Result:
    """Train one CTC probe per seed on ``task`` and score the test part: the result record.

    ``wer`` and ``cer`` are means over seeds (fractions; a blank output scores 1.0 on both);
    ``distortion`` applies to the test audio only. The probe trains on ``device``. With
    ``reuse_probes`` a probe trained before on the same features, files, config and seed is read
    back from ``cache`` (:class:`ProbeCache`) instead of trained again; ``per_seed`` says which.
    ``trained_out``: filled with the standardisation and every seed's probe (for fine-tuning).
    """
    start = time.time()
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
    per_seed: list[dict[str, tp.Any]] = []
    examples: list[dict[str, str]] = []
    for seed in seeds:
        key = ProbeCache.key(fingerprint, train_keys, cfg, seed)
        found = probes.load(key) if probes is not None else None
        if found is not None:
            state, record = found
            num_layers, dim = stats[0].shape
            model = CtcProbe(num_layers, dim, cfg).to(device)
            model.load_state_dict(state)
            hyps = transcribe(model, data["test"], *stats, device)
            refs = list(data["test"].texts)
            if log is not None:
                log(f"seed {seed}: probe trained before on the same features and files, reused")
        else:
            t0 = time.time()
            fit = train_ctc_probe(data["train"], data["valid"], data["test"], seed, cfg, device, stats, log)
            hyps, refs = fit.hypotheses, fit.references
            record = {
                "valid_cer": fit.valid_cer,
                "steps": fit.steps,
                "best_step": fit.best_step,
                "layer_weights": fit.layer_weights,
                "train_seconds": round(time.time() - t0, 1),
            }
            if probes is not None:
                probes.save(key, fit.state, record)
            state = fit.state
        if trained_out is not None:
            trained_out.states[seed] = state
        per_seed.append({
            "seed": seed,
            "wer": wer(refs, hyps),
            "cer": cer(refs, hyps),
            **record,
            "probe_reused": found is not None,
        })  # fmt: skip
        if not examples:
            examples = [
                {"file": it.path.name, "reference": r, "hypothesis": h}
                for it, r, h in zip(parts["test"], refs, hyps, strict=True)
            ][:EXAMPLES]

    def mean_std(key: str) -> tuple[float, float]:
        values = [float(s[key]) for s in per_seed]
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    (wer_mean, wer_std), (cer_mean, cer_std) = mean_std("wer"), mean_std("cer")
    refs = [it.label for it in parts["test"]]
    return {
        "task": task.name,
        "features": features.name,
        "probe": "ctc-bigru",
        "layers": features.layers,
        "distort": distortion.spec if distortion else None,
        "wer": wer_mean,
        "wer_std": wer_std,
        "cer": cer_mean,
        "cer_std": cer_std,
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


def results_markdown(result: Result) -> str:
    """One ASR run as markdown: the headline row, one row per seed, a few transcripts."""

    def table(header: tp.Sequence[str], rows: tp.Iterable[tp.Sequence[tp.Any]]) -> str:
        def cell(v: tp.Any) -> str:
            return f"{v:.4f}" if isinstance(v, float) else "none" if v is None else str(v)

        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]) + "\n"

    cols = ("task", "features", "probe", "layers", "distort", "wer", "wer_std", "cer", "cer_std",
            "n_train", "n_valid", "n_test", "test_speakers")  # fmt: skip
    head = table(cols, [[result[c] for c in cols]])
    seeds = table(
        ("seed", "wer", "cer", "valid_cer", "steps", "best_step"),
        [
            [s["seed"], s["wer"], s["cer"], s["valid_cer"], s["steps"], s["best_step"]]
            for s in result["per_seed"]
        ],
    )
    examples = "".join(
        f"- `{e['file']}`\n  - ref: {e['reference']}\n  - hyp: {e['hypothesis']}\n"
        for e in result["examples"]
    )
    return (
        f"# {result['task']} / {result['features']}\n\n{head}\n"
        f"WER and CER are fractions over the {result['n_test_words']} words and {result['n_test_chars']} "
        "characters of the test part (a blank output scores 1.0); spread is the sample standard "
        f"deviation over seeds. Wall time {result['seconds']:.1f} s.\n\n## Per seed\n\n{seeds}\n"
        f"## Transcripts (first seed)\n\n{examples}"
    )


def write_results(result: Result, out_dir: Path) -> None:
    """``results.json`` and ``results.md`` in ``out_dir``, each written atomically."""
    import json

    from pase.eval.report import _write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    _write_text(out_dir / "results.json", json.dumps(result, indent=2) + "\n")
    _write_text(out_dir / "results.md", results_markdown(result))
