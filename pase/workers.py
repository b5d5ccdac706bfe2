"""Self-supervised workers: one registry, one class per kind of task.

A worker holds its target, its head and its loss. During training the encoder runs ONCE on
``[chunk; ctxt; rand]`` (3B items, so every BatchNorm sees all three) and each worker turns the
encodings (plus the clean anchor waveform) into a scalar loss; the total loss is the sum.

Kinds (``WorkerConfig.kind``):

* ``regressor``: frame-wise MLP (1x1 conv 256->256, PReLU, 1x1 conv to ``dim x r``) predicting a
  standardised target of the CLEAN chunk (``pase.targets.TARGETS[target]``); each output frame
  predicts the ``r = 7`` target frames ``t-3 .. t+3`` (zero beyond the edges); MSE.
* ``waveform``: transposed-conv decoder back to the clean samples (x160); L1 on samples divided
  by their fitted std (ours; the original regressed raw samples and its decoder never learned).
* ``lim``: local info max: same utterance or not, at every frame (or pooled window); BCE.
* ``gim``: global info max: the same on time-averaged encodings; BCE.

Discriminator pairs are symmetric (ours, every preset): positives ``[a; c]`` and ``[c; a]``,
negatives ``[a; r]`` and ``[r; a]`` (``a`` the distorted anchor, ``c`` its clean context, ``r`` a
clean other file), so neither the slot nor "which input is distorted" predicts the label. The
original GIM used negatives ``[a; r]`` and ``[c; r]``: with the clean ``c`` in the first slot the
label was just "is the second input distorted?", a shortcut its head learned instead of identity.
* ``spc``: sequence predictive coding (PASE v1): future vs past 5-frame blocks; BCE.

Adding a task is one class registered with :func:`register_worker` and one ``WorkerConfig``
naming it (see the README for a 20-line example); the original never offered this.
"""

from __future__ import annotations

import dataclasses
import math
import typing as tp

import torch
import torch.nn.functional as F
from torch import nn

from pase.encoder import Encoder, EncoderConfig
from pase.targets import TARGETS, TargetStats

Tensor = torch.Tensor


@dataclasses.dataclass
class WorkerConfig:
    """One worker of a preset. ``name`` is its loss's name; ``kind`` picks the class."""

    name: str
    #: Registry key of the worker class (see ``WORKERS``).
    kind: str = "regressor"
    #: Regressors: the key in ``pase.targets.TARGETS`` (defaults to ``name``).
    target: str | None = None
    #: Regressors: target frames stacked per output frame (r; 7 in PASE+).
    context: int = 7
    #: Hidden width of the head.
    hidden: int = 256
    #: Weight of this worker's loss in the total (1 for every worker in the reference).
    weight: float = 1.0
    #: Discriminators (lim, gim): how a pair is scored. "mlp" (reference): an MLP on the
    #: concatenation ``[x; y]``; "bilinear": ``<g(x), g(y)>`` with a shared MLP ``g``; "cosine":
    #: the cosine of ``g(x)`` and ``g(y)`` over ``temperature``. The last two are symmetric.
    head: tp.Literal["mlp", "bilinear", "cosine"] = "mlp"
    #: Discriminators: "one" (reference): each anchor against its own ``rand``, balanced BCE;
    #: "batch": InfoNCE, each anchor against its context and every ``ctxt``/``rand`` of the batch.
    negatives: tp.Literal["one", "batch"] = "one"
    #: Discriminators: frames mean-pooled per decision; None: the kind's own (lim 1, gim all),
    #: 0: the whole chunk.
    pool: int | None = None
    #: Discriminators: logit scale of the cosine head (logit = cos / temperature). Measured at
    #: init on real speech (gradient norm into the encoder; regressors 0.0004-0.002): cosine +
    #: batch negatives sent 0.08 at temperature 0.1 and 0.011 at 1.0, 50-100x and 10x the median
    #: worker, and in ``pase ablate`` it raised every regression loss; bilinear + batch negatives
    #: sent 0.001-0.004, in line with the others.
    temperature: float = 0.1

    @classmethod
    def from_dict(cls, d: dict[str, tp.Any]) -> WorkerConfig:
        return cls(**d)


@dataclasses.dataclass
class WorkerBatch:
    """What every worker sees: encodings ``[B, D, F]`` of the three chunks and the clean anchor ``[B, T]``."""

    clean: Tensor
    chunk: Tensor
    ctxt: Tensor
    rand: Tensor
    #: ``rand`` is ``ctxt`` rolled by one item (TrainConfig.rand_from_batch): the same encodings.
    rand_from_ctxt: bool = False


class Worker(nn.Module):
    """Base class: ``loss(batch) -> scalar``. Subclasses register with :func:`register_worker`.

    ``metrics(batch)`` gives validation scores beyond the loss (e.g. a discriminator's accuracy),
    named ``<worker>_<metric>`` in the run's ``valid.csv``; ``metric_names`` lists them up front.
    """

    metric_names: tp.ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: WorkerConfig, embedding_dim: int) -> None:
        super().__init__()
        self.config = config
        self.embedding_dim = embedding_dim

    def loss(self, batch: WorkerBatch) -> Tensor:
        raise NotImplementedError

    def metrics(self, batch: WorkerBatch) -> dict[str, Tensor]:
        return {}

    def loss_and_metrics(self, batch: WorkerBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """Both at once (validation); workers whose metrics reuse the loss's work override it."""
        return self.loss(batch), self.metrics(batch)


WORKERS: dict[str, type[Worker]] = {}
W = tp.TypeVar("W", bound=type[Worker])


def register_worker(kind: str) -> tp.Callable[[W], W]:
    """Class decorator: make a worker class available as ``WorkerConfig(kind=kind)``."""

    def deco(cls: W) -> W:
        if kind in WORKERS and WORKERS[kind] is not cls:
            raise ValueError(f"worker kind {kind!r} is already registered by {WORKERS[kind].__name__}")
        WORKERS[kind] = cls
        return cls

    return deco


def mlp_head(cin: int, hidden: int, cout: int) -> nn.Sequential:
    """1x1 conv -> PReLU (PyTorch's 0.25 init: the heads keep it) -> 1x1 conv, linear output."""
    return nn.Sequential(nn.Conv1d(cin, hidden, 1), nn.PReLU(hidden), nn.Conv1d(hidden, cout, 1))


class StandardisedTarget(Worker):
    """A worker whose target is standardised per dimension by statistics fitted on clean
    training chunks (:meth:`PaseModel.fit_target_stats`), kept in buffers so every checkpoint
    carries them."""

    def __init__(self, config: WorkerConfig, embedding_dim: int) -> None:
        super().__init__(config, embedding_dim)
        dim = self.target_dim
        self.register_buffer("target_mean", torch.zeros(dim))
        self.register_buffer("target_std", torch.ones(dim))
        self.register_buffer("stats_fitted", torch.tensor(False))

    @property
    def target_dim(self) -> int:
        raise NotImplementedError

    def compute_target(self, wav: Tensor) -> Tensor:
        """Raw target of the clean chunk: ``wav: [B, T] -> [B, F, dim]`` (no gradient)."""
        raise NotImplementedError

    def set_target_stats(self, mean: Tensor, std: Tensor) -> None:
        """Standardise targets as ``(t - mean) / std`` from now on (``[dim]`` each)."""
        for name, value in (("target_mean", mean), ("target_std", std)):
            tp.cast(Tensor, getattr(self, name)).copy_(value)
        tp.cast(Tensor, self.stats_fitted).fill_(True)

    def raw_target(self, wav: Tensor) -> Tensor:
        """:meth:`compute_target` as training runs it: float32 signal processing, no gradient,
        outside any autocast region."""
        with torch.no_grad(), torch.autocast(wav.device.type, enabled=False):
            return self.compute_target(wav.float())

    def _target(self, wav: Tensor) -> Tensor:
        t = self.raw_target(wav)
        mean = tp.cast(Tensor, self.target_mean)
        std = tp.cast(Tensor, self.target_std)
        return ((t - mean) / std).transpose(1, 2)  # [B, dim, F]


@register_worker("regressor")
class Regressor(StandardisedTarget):
    """Predicts ``r`` frames of a standardised target per encoder frame; MSE.

    Subclasses may override :meth:`compute_target` and :attr:`target_dim` to regress anything
    computable from the clean waveform.
    """

    def __init__(self, config: WorkerConfig, embedding_dim: int) -> None:
        super().__init__(config, embedding_dim)
        self.head = mlp_head(embedding_dim, config.hidden, self.target_dim * config.context)

    @property
    def target_name(self) -> str:
        return self.config.target or self.config.name

    @property
    def target_dim(self) -> int:
        if self.target_name not in TARGETS:
            raise ValueError(
                f"worker {self.config.name!r}: unknown target {self.target_name!r}; known: {sorted(TARGETS)}"
            )
        return TARGETS[self.target_name].dim

    def compute_target(self, wav: Tensor) -> Tensor:
        return TARGETS[self.target_name].fn(wav)

    def loss(self, batch: WorkerBatch) -> Tensor:
        target = self._target(batch.clean)
        B, D, Fr = target.shape
        r = self.config.context
        pred = self.head(batch.chunk).float().view(B, r, D, -1)
        if pred.shape[-1] != Fr:
            raise RuntimeError(f"{self.config.name}: {Fr} target frames vs {pred.shape[-1]} encoder frames")
        # Output slot k of frame t predicts target frame t + k - r//2; zero beyond the edges.
        half = r // 2
        padded = F.pad(target, (half, r - 1 - half))
        total = pred.new_zeros(())
        for k in range(r):
            total = total + (pred[:, k] - padded[..., k : k + Fr]).square().sum()
        return total / pred.numel()


@register_worker("waveform")
class WaveformDecoder(StandardisedTarget):
    """Decodes the clean waveform from the features (x160 by transposed convs); L1.

    Two **ours** changes, measured on the packaged encoder and at init: the original's
    decoder, with PyTorch's default init and PReLU slopes 0, shrank its signal about 3x per layer,
    so its output stayed near silence (std 0.001 vs 0.12 for the target) and the gradient it sent
    to the encoder was 100-500x smaller than any other worker's: it never learned. Here every conv
    is initialised to keep the variance of a ReLU network (He init, with each transposed conv's
    true fan-in ``in x kernel / stride``), and the target samples are divided by their fitted std
    (the loss is then on the scale of the standardised regressors). ``metrics`` reports
    ``rel_l1``: the L1 over that of the all-zero prediction (1.0 = the silence predictor).
    """

    metric_names = ("rel_l1",)

    def __init__(self, config: WorkerConfig, embedding_dim: int) -> None:
        super().__init__(config, embedding_dim)
        layers: list[nn.Module] = []
        cin = embedding_dim
        # (channels, kernel, stride, padding): padding (k - s) / 2 makes each layer exactly x s.
        for cout, k, s in ((512, 30, 4), (256, 30, 4), (128, 30, 10)):
            up = nn.ConvTranspose1d(cin, cout, k, stride=s, padding=(k - s) // 2)
            nn.init.normal_(up.weight, std=math.sqrt(2.0 * s / (cin * k)))
            nn.init.zeros_(tp.cast(Tensor, up.bias))
            layers += [up, nn.PReLU(cout, init=0.0)]
            cin = cout
        proj, out = nn.Conv1d(128, 64, 1), nn.Conv1d(64, 1, 1)
        nn.init.kaiming_normal_(proj.weight, nonlinearity="relu")
        nn.init.normal_(out.weight, std=math.sqrt(1.0 / 64))
        for conv in (proj, out):
            nn.init.zeros_(tp.cast(Tensor, conv.bias))
        layers += [proj, nn.PReLU(64, init=0.0), out]
        self.decoder = nn.Sequential(*layers)

    @property
    def target_dim(self) -> int:
        return 1

    def compute_target(self, wav: Tensor) -> Tensor:
        return wav[..., None]  # [B, T, 1]: one "frame" per sample

    def _pred_target(self, batch: WorkerBatch) -> tuple[Tensor, Tensor]:
        pred = self.decoder(batch.chunk)[:, 0].float()  # [B, 160 F]
        target = self._target(batch.clean)[:, 0]  # [B, T]
        return pred, F.pad(target, (0, pred.shape[-1] - target.shape[-1]))

    def loss(self, batch: WorkerBatch) -> Tensor:
        pred, target = self._pred_target(batch)
        return F.l1_loss(pred, target)

    def metrics(self, batch: WorkerBatch) -> dict[str, Tensor]:
        return self.loss_and_metrics(batch)[1]

    def loss_and_metrics(self, batch: WorkerBatch) -> tuple[Tensor, dict[str, Tensor]]:
        pred, target = self._pred_target(batch)  # the decoder runs once for both
        loss = F.l1_loss(pred, target)
        # metrics are for logs: they never carry the graph (the loss does)
        return loss, {"rel_l1": loss.detach() / target.abs().mean().clamp_min(1e-12)}


class PairDiscriminator(Worker):
    """Same utterance or not, from pairs of encodings of the anchor ``a`` (distorted), its
    context ``c`` (another window of the same file, clean) and ``r`` (another file, clean).

    Encodings are mean-pooled over windows of ``pool`` frames (0: the whole chunk) and each
    window of ``a`` is paired with the same window of ``c`` (positive) and ``r`` (negative).
    Pairs are symmetric (see the module docstring). ``negatives="batch"`` scores each anchor
    window against every ``c`` and ``r`` of the batch at that window (InfoNCE, 2B candidates,
    all clean, so distortion is no cue either).

    ``metrics`` reports ``acc``: the fraction of anchor windows whose positive scores above their
    own negative (two-alternative forced choice; chance 0.5, a tie counts half).
    """

    metric_names = ("acc",)
    default_pool = 1

    def __init__(self, config: WorkerConfig, embedding_dim: int) -> None:
        super().__init__(config, embedding_dim)
        if config.head not in ("mlp", "bilinear", "cosine"):
            raise ValueError(
                f"worker {config.name!r}: head must be mlp, bilinear or cosine, got {config.head!r}"
            )
        if config.negatives not in ("one", "batch"):
            raise ValueError(
                f"worker {config.name!r}: negatives must be one or batch, got {config.negatives!r}"
            )
        self.pool = self.default_pool if config.pool is None else config.pool
        if self.pool < 0:
            raise ValueError(f"worker {config.name!r}: pool must be >= 0 (0: whole chunk), got {self.pool}")
        if config.head == "mlp":
            self.head = mlp_head(2 * embedding_dim, config.hidden, 1)
        else:
            self.head = mlp_head(embedding_dim, config.hidden, config.hidden)
            self.bias = nn.Parameter(torch.zeros(()))

    def _pooled(self, e: Tensor) -> Tensor:
        """``[B, D, F] -> [B, D, W]`` windows (a trailing partial window is dropped)."""
        if self.pool == 0 or self.pool >= e.shape[-1]:
            return e.mean(dim=-1, keepdim=True)
        if self.pool == 1:
            return e
        return F.avg_pool1d(e, self.pool)

    def _embed(self, e: Tensor) -> Tensor:
        g = self.head(e).float()
        return F.normalize(g, dim=1) if self.config.head == "cosine" else g

    def _score(self, x: Tensor, y: Tensor) -> Tensor:
        """Logits of aligned pairs ``x[b, :, w]`` with ``y[b, :, w]``: ``[B, 1, W]``."""
        if self.config.head == "mlp":
            # Both slot orders, averaged: the score is symmetric like the similarity heads'.
            xy = self.head(torch.cat([torch.cat([x, y], 1), torch.cat([y, x], 1)])).float()
            return 0.5 * sum(xy.chunk(2))  # type: ignore[return-value]
        gx, gy = self._embed(x), self._embed(y)
        return self._logit((gx * gy).sum(1, keepdim=True))

    def _logit(self, dot: Tensor) -> Tensor:
        if self.config.head == "cosine":
            return dot / self.config.temperature + self.bias
        return dot / math.sqrt(self.config.hidden) + self.bias

    def _all_scores(self, a: Tensor, cand: Tensor) -> Tensor:
        """Logits of every anchor ``a[i]`` with every candidate ``cand[j]`` per window: ``[W, B, N]``."""
        if self.config.head == "mlp":
            B, N, W_ = a.shape[0], cand.shape[0], a.shape[-1]
            ai = a[:, None].expand(B, N, *a.shape[1:]).reshape(B * N, -1, W_)
            cj = cand[None].expand(B, N, *cand.shape[1:]).reshape(B * N, -1, W_)
            return self._score(ai, cj).view(B, N, W_).permute(2, 0, 1)
        ga, gc = self._embed(a), self._embed(cand)
        return self._logit(torch.einsum("bdw,ndw->wbn", ga, gc))

    def _pooled_triplet(self, batch: WorkerBatch) -> tuple[Tensor, Tensor, Tensor]:
        return self._pooled(batch.chunk), self._pooled(batch.ctxt), self._pooled(batch.rand)

    def loss(self, batch: WorkerBatch) -> Tensor:
        a, c, r = self._pooled_triplet(batch)
        if self.config.negatives == "one":
            return _bce_balanced(self._score(a, c), self._score(a, r))
        B = a.shape[0]
        # Candidate i is a[i]'s positive. When rand is the rolled ctxt, r[i + 1] IS c[i]: the
        # candidates are then c alone (B of them), or the positive would also count as a
        # negative (measured before this fix in the ablation rows cpu, cpu2 and fastbil).
        cand = c if batch.rand_from_ctxt else torch.cat([c, r])
        logits = self._all_scores(a, cand)  # [W, B, B or 2B]
        labels = torch.arange(B, device=a.device).expand(logits.shape[0], B)
        return F.cross_entropy(logits.reshape(-1, cand.shape[0]), labels.reshape(-1))

    def metrics(self, batch: WorkerBatch) -> dict[str, Tensor]:
        a, c, r = self._pooled_triplet(batch)
        pos, neg = self._score(a, c), self._score(a, r)
        return {"acc": (pos > neg).float().mean() + 0.5 * (pos == neg).float().mean()}


def _bce_balanced(pos: Tensor, neg: Tensor) -> Tensor:
    logits = torch.cat([pos, neg]).float()
    labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]).float()
    return F.binary_cross_entropy_with_logits(logits, labels)


@register_worker("lim")
class LocalInfoMax(PairDiscriminator):
    """LIM: decided at every frame (frame t of the anchor with frame t of the other chunk)."""

    default_pool = 1


@register_worker("gim")
class GlobalInfoMax(PairDiscriminator):
    """GIM: decided once per chunk, on time-averaged encodings."""

    default_pool = 0


@register_worker("spc")
class SequencePredictiveCoding(Worker):
    """PASE v1's SPC: does a 5-frame block come from the future (>= 16 frames after t) or the past?"""

    block = 5
    gap = 16

    def __init__(self, config: WorkerConfig, embedding_dim: int) -> None:
        super().__init__(config, embedding_dim)
        self.head = nn.Sequential(
            nn.Linear((self.block + 1) * embedding_dim, config.hidden),
            nn.PReLU(config.hidden),
            nn.Linear(config.hidden, 1),
        )

    def loss(self, batch: WorkerBatch) -> Tensor:
        e = batch.chunk
        B, D, Fr = e.shape
        margin = self.gap + self.block
        if Fr < 2 * margin + 1:
            raise ValueError(f"SPC needs chunks of at least {2 * margin + 1} frames, got {Fr}")
        dev = e.device
        t = torch.randint(margin, Fr - margin, (B,), device=dev)
        # Extra distance beyond the minimum gap, drawn per item within what the chunk allows.
        fut_room = Fr - margin - t
        past_room = t - margin
        fut = t + self.gap + (torch.rand(B, device=dev) * (fut_room + 1)).long().clamp_max(fut_room)
        past_end = t - self.gap - (torch.rand(B, device=dev) * (past_room + 1)).long().clamp_max(past_room)
        offs = torch.arange(self.block, device=dev)
        idx_b = torch.arange(B, device=dev)[:, None]
        et = e.transpose(1, 2)  # [B, F, D]
        cur = et[torch.arange(B, device=dev), t]
        future = et[idx_b, fut[:, None] + offs].flatten(1)
        past = et[idx_b, past_end[:, None] - self.block + offs].flatten(1)
        pos = self.head(torch.cat([cur, future], dim=1))
        neg = self.head(torch.cat([cur, past], dim=1))
        return _bce_balanced(pos, neg)


def load_plugins(names: tp.Iterable[str]) -> None:
    """Import user modules that register workers: a module name (found from the current
    directory too) or a path to a ``.py`` file. Errors name the plugin."""
    import importlib
    import importlib.util
    import sys
    from pathlib import Path

    for name in names:
        try:
            if name.endswith(".py"):
                path = Path(name)
                spec = importlib.util.spec_from_file_location(path.stem, path)
                if spec is None or spec.loader is None or not path.is_file():
                    raise FileNotFoundError(f"no such file {path}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[path.stem] = module
                spec.loader.exec_module(module)
            else:
                if "" not in sys.path and str(Path.cwd()) not in sys.path:
                    sys.path.insert(0, str(Path.cwd()))
                importlib.import_module(name)
        except Exception as exc:
            raise ValueError(f"cannot load worker plugin {name!r}: {type(exc).__name__}: {exc}") from exc


def build_worker(config: WorkerConfig, embedding_dim: int) -> Worker:
    if config.kind not in WORKERS:
        raise ValueError(f"unknown worker kind {config.kind!r} for {config.name!r}; known: {sorted(WORKERS)}")
    return WORKERS[config.kind](config, embedding_dim)


PASE_PLUS_REGRESSORS = (
    "lps",
    "lps_long",
    "fbank",
    "fbank_long",
    "gammatone",
    "gammatone_long",
    "mfcc",
    "mfcc_long",
    "prosody",
)


def preset_workers(name: str) -> list[WorkerConfig]:
    """The workers of a preset: ``"pase+"`` (12) or ``"pase"`` (7)."""
    if name in ("pase+", "pase_plus"):
        return [
            WorkerConfig("waveform", kind="waveform"),
            *(WorkerConfig(n) for n in PASE_PLUS_REGRESSORS),
            WorkerConfig("lim", kind="lim"),
            WorkerConfig("gim", kind="gim"),
        ]
    if name == "pase":
        # PASE v1 regressed single frames (r = 1) of static features.
        return [
            WorkerConfig("waveform", kind="waveform"),
            WorkerConfig("lps", target="lps_v1", context=1),
            WorkerConfig("mfcc", target="mfcc_v1", context=1),
            WorkerConfig("prosody", target="prosody_v1", context=1),
            WorkerConfig("lim", kind="lim"),
            WorkerConfig("gim", kind="gim"),
            WorkerConfig("spc", kind="spc"),
        ]
    raise ValueError(f"unknown worker preset {name!r}; choose 'pase+' or 'pase'")


class PaseModel(nn.Module):
    """Encoder + workers: ``model(chunk_in, chunk_clean, ctxt, rand) -> {worker: loss}``."""

    def __init__(self, encoder_config: EncoderConfig, workers: tp.Sequence[WorkerConfig]) -> None:
        super().__init__()
        names = [w.name for w in workers]
        if len(set(names)) != len(names):
            raise ValueError(f"worker names must be unique, got {names}")
        self.encoder = Encoder(encoder_config)
        self.worker_configs = list(workers)
        self.workers = nn.ModuleDict({w.name: build_worker(w, encoder_config.embedding_dim) for w in workers})

    @classmethod
    def from_preset(
        cls,
        name: str,
        encoder_config: EncoderConfig | None = None,
        extra_workers: tp.Sequence[WorkerConfig] = (),
    ) -> PaseModel:
        enc = encoder_config or EncoderConfig.from_preset(name)
        return cls(enc, [*preset_workers(name), *extra_workers])

    def config_dict(self) -> dict[str, tp.Any]:
        return {
            "encoder": self.encoder.config.to_dict(),
            "workers": [dataclasses.asdict(w) for w in self.worker_configs],
        }

    @classmethod
    def from_config_dict(cls, d: dict[str, tp.Any]) -> PaseModel:
        return cls(EncoderConfig.from_dict(d["encoder"]), [WorkerConfig.from_dict(w) for w in d["workers"]])

    @property
    def worker_names(self) -> list[str]:
        return list(self.workers.keys())

    def regressors(self) -> dict[str, StandardisedTarget]:
        """The workers whose targets are standardised by fitted statistics."""
        return {n: w for n, w in self.workers.items() if isinstance(w, StandardisedTarget)}

    @property
    def metric_names(self) -> list[str]:
        """``<worker>_<metric>`` of every validation metric, in order."""
        return [f"{n}_{m}" for n, w in self.workers.items() for m in tp.cast(Worker, w).metric_names]

    @property
    def has_target_stats(self) -> bool:
        return all(bool(w.stats_fitted) for w in self.regressors().values())

    @torch.no_grad()
    def fit_target_stats(self, batches: tp.Iterable[Tensor], max_batches: int | None = None) -> int:
        """Set every regressor's standardisation from the true per-dimension mean and std of its
        target over ``batches`` of CLEAN chunks ``[B, T]`` (amplitude-scaled as training sees them).
        Returns the number of frames seen."""
        regs = self.regressors()
        stats = {n: TargetStats(w.target_dim) for n, w in regs.items()}
        for i, wav in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            for n, w in regs.items():
                stats[n].update(w.raw_target(wav))
        frames = 0
        for n, w in regs.items():
            st = stats[n]
            if st.count == 0:
                raise ValueError("fit_target_stats got no batches")
            w.set_target_stats(st.mean, st.std)
            frames = st.count
        return frames

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def worker_parameters(self) -> list[nn.Parameter]:
        return list(self.workers.parameters())

    def _worker_batch(self, chunk: Tensor, clean: Tensor, ctxt: Tensor, rand: Tensor | None) -> WorkerBatch:
        B = chunk.shape[0]
        if rand is None:
            # rand from the batch: item i's negative is item i-1's context, so the encoder runs on
            # 2B chunks instead of 3B (a third less encoder compute per step).
            if B < 2:
                raise ValueError("rand from the batch needs a batch of 2 or more")
            e_chunk, e_ctxt = self.encoder.encode(torch.cat([chunk, ctxt])).split(B)
            rand_enc = e_ctxt.roll(1, 0)
            return WorkerBatch(clean=clean, chunk=e_chunk, ctxt=e_ctxt, rand=rand_enc, rand_from_ctxt=True)
        emb = self.encoder.encode(torch.cat([chunk, ctxt, rand]))
        e_chunk, e_ctxt, e_rand = emb.split(B)
        return WorkerBatch(clean=clean, chunk=e_chunk, ctxt=e_ctxt, rand=e_rand)

    def forward(self, chunk: Tensor, clean: Tensor, ctxt: Tensor, rand: Tensor | None) -> dict[str, Tensor]:
        """``chunk``: the (distorted) anchor, ``clean``: the same anchor undistorted, ``ctxt``/``rand``:
        the other two chunks, each ``[B, T]`` (``rand=None``: the previous item's ``ctxt``).
        Returns the (unweighted) loss of every worker."""
        batch = self._worker_batch(chunk, clean, ctxt, rand)
        return {name: tp.cast(Worker, w).loss(batch) for name, w in self.workers.items()}

    def evaluate(
        self, chunk: Tensor, clean: Tensor, ctxt: Tensor, rand: Tensor | None
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Like :meth:`forward`, plus every worker's validation metrics (``<worker>_<metric>``)
        computed on the same encodings."""
        batch = self._worker_batch(chunk, clean, ctxt, rand)
        losses, metrics = {}, {}
        for name, w in self.workers.items():
            worker = tp.cast(Worker, w)
            losses[name], scores = worker.loss_and_metrics(batch)
            metrics.update({f"{name}_{k}": v for k, v in scores.items()})
        return losses, metrics

    def total_loss(self, losses: dict[str, Tensor]) -> Tensor:
        """Weighted sum of the worker losses (all weights 1 in the reference recipe)."""
        weights = {w.name: w.weight for w in self.worker_configs}
        return tp.cast(Tensor, sum(weights[n] * v for n, v in losses.items()))
