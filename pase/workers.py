"""Self-supervised workers: one registry, one class per kind of task.

A worker holds its target, its head and its loss. During training the encoder runs ONCE on
``[chunk; ctxt; rand]`` (3B items, so every BatchNorm sees all three) and each worker turns the
encodings (plus the clean anchor waveform) into a scalar loss; the total loss is the sum.

Kinds (``WorkerConfig.kind``):

* ``regressor``: frame-wise MLP (1x1 conv 256->256, PReLU, 1x1 conv to ``dim x r``) predicting a
  standardised target of the CLEAN chunk (``pase.targets.TARGETS[target]``); each output frame
  predicts the ``r = 7`` target frames ``t-3 .. t+3`` (zero beyond the edges); MSE.
* ``waveform``: transposed-conv decoder back to the clean samples (x160); L1, not standardised.
* ``lim``: local info max, ``[e_chunk; e_ctxt]`` vs ``[e_chunk; e_rand]`` at every frame; BCE.
* ``gim``: global info max on time-averaged encodings, 4B pairs, half positive; BCE.
* ``spc``: sequence predictive coding (PASE v1): future vs past 5-frame blocks; BCE.

Adding a task is one class registered with :func:`register_worker` and one ``WorkerConfig``
naming it (see the README for a 20-line example); the original never offered this.
"""

from __future__ import annotations

import dataclasses
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


class Worker(nn.Module):
    """Base class: ``loss(batch) -> scalar``. Subclasses register with :func:`register_worker`."""

    def __init__(self, config: WorkerConfig, embedding_dim: int) -> None:
        super().__init__()
        self.config = config
        self.embedding_dim = embedding_dim

    def loss(self, batch: WorkerBatch) -> Tensor:
        raise NotImplementedError


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


@register_worker("regressor")
class Regressor(Worker):
    """Predicts ``r`` frames of a standardised target per encoder frame; MSE.

    Subclasses may override :meth:`compute_target` and :attr:`target_dim` to regress anything
    computable from the clean waveform.
    """

    def __init__(self, config: WorkerConfig, embedding_dim: int) -> None:
        super().__init__(config, embedding_dim)
        dim = self.target_dim
        self.head = mlp_head(embedding_dim, config.hidden, dim * config.context)
        # Standardisation statistics live in buffers so they are saved with every checkpoint.
        self.register_buffer("target_mean", torch.zeros(dim))
        self.register_buffer("target_std", torch.ones(dim))
        self.register_buffer("stats_fitted", torch.tensor(False))

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

    def set_target_stats(self, mean: Tensor, std: Tensor) -> None:
        """Standardise targets as ``(t - mean) / std`` from now on (``[dim]`` each)."""
        for name, value in (("target_mean", mean), ("target_std", std)):
            tp.cast(Tensor, getattr(self, name)).copy_(value)
        tp.cast(Tensor, self.stats_fitted).fill_(True)

    def compute_target(self, wav: Tensor) -> Tensor:
        """Raw target of the clean chunk: ``wav: [B, T] -> [B, F, dim]`` (no gradient)."""
        return TARGETS[self.target_name].fn(wav)

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
class WaveformDecoder(Worker):
    """Decodes the clean waveform from the features (x160 by transposed convs); L1."""

    def __init__(self, config: WorkerConfig, embedding_dim: int) -> None:
        super().__init__(config, embedding_dim)
        layers: list[nn.Module] = []
        cin = embedding_dim
        # (channels, kernel, stride, padding): padding (k - s) / 2 makes each layer exactly x s.
        for cout, k, s in ((512, 30, 4), (256, 30, 4), (128, 30, 10)):
            layers += [
                nn.ConvTranspose1d(cin, cout, k, stride=s, padding=(k - s) // 2),
                nn.PReLU(cout, init=0.0),
            ]
            cin = cout
        layers += [nn.Conv1d(128, 64, 1), nn.PReLU(64, init=0.0), nn.Conv1d(64, 1, 1)]
        self.decoder = nn.Sequential(*layers)

    def loss(self, batch: WorkerBatch) -> Tensor:
        wav = self.decoder(batch.chunk)[:, 0].float()  # [B, 160 F]
        clean = batch.clean.float()
        clean = F.pad(clean, (0, wav.shape[-1] - clean.shape[-1]))
        return F.l1_loss(wav, clean)


def _bce_balanced(pos: Tensor, neg: Tensor) -> Tensor:
    logits = torch.cat([pos, neg]).float()
    labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]).float()
    return F.binary_cross_entropy_with_logits(logits, labels)


@register_worker("lim")
class LocalInfoMax(Worker):
    """Same utterance or not, decided at every frame from ``[e_chunk; e_other]``."""

    def __init__(self, config: WorkerConfig, embedding_dim: int) -> None:
        super().__init__(config, embedding_dim)
        self.head = mlp_head(2 * embedding_dim, config.hidden, 1)

    def loss(self, batch: WorkerBatch) -> Tensor:
        pos = self.head(torch.cat([batch.chunk, batch.ctxt], dim=1))
        neg = self.head(torch.cat([batch.chunk, batch.rand], dim=1))
        return _bce_balanced(pos, neg)


@register_worker("gim")
class GlobalInfoMax(Worker):
    """Same utterance or not, from time-averaged encodings: 2B positive and 2B negative pairs."""

    def __init__(self, config: WorkerConfig, embedding_dim: int) -> None:
        super().__init__(config, embedding_dim)
        self.head = mlp_head(2 * embedding_dim, config.hidden, 1)

    def loss(self, batch: WorkerBatch) -> Tensor:
        c, x, r = (e.mean(dim=-1, keepdim=True) for e in (batch.chunk, batch.ctxt, batch.rand))
        pos = self.head(torch.cat([torch.cat([c, x], 1), torch.cat([x, c], 1)]))
        neg = self.head(torch.cat([torch.cat([c, r], 1), torch.cat([x, r], 1)]))
        return _bce_balanced(pos, neg)


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

    def regressors(self) -> dict[str, Regressor]:
        return {n: w for n, w in self.workers.items() if isinstance(w, Regressor)}

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

    def forward(self, chunk: Tensor, clean: Tensor, ctxt: Tensor, rand: Tensor) -> dict[str, Tensor]:
        """``chunk``: the (distorted) anchor, ``clean``: the same anchor undistorted, ``ctxt``/``rand``:
        the other two chunks, each ``[B, T]``. Returns the (unweighted) loss of every worker."""
        B = chunk.shape[0]
        emb = self.encoder.encode(torch.cat([chunk, ctxt, rand]))
        e_chunk, e_ctxt, e_rand = emb.split(B)
        batch = WorkerBatch(clean=clean, chunk=e_chunk, ctxt=e_ctxt, rand=e_rand)
        return {name: tp.cast(Worker, w).loss(batch) for name, w in self.workers.items()}

    def total_loss(self, losses: dict[str, Tensor]) -> Tensor:
        """Weighted sum of the worker losses (all weights 1 in the reference recipe)."""
        weights = {w.name: w.weight for w in self.worker_configs}
        return tp.cast(Tensor, sum(weights[n] * v for n, v in losses.items()))
