"""Self-supervised training: ``TrainConfig``, the loop, checkpoints, resume, DDP and logging.

``pase train --preset pase+ --data DIR --out RUN`` trains on one device; the same command under
``torchrun --nproc_per_node N`` trains with DDP (NCCL on CUDA, gloo on CPU). A run folder holds:

- ``config.json``: the effective :class:`TrainConfig`;
- ``checkpoint.pt``: model (encoder, workers, target statistics), optimizer, schedule, RNG states
  of every rank, data cursor, step and config; written atomically every ``ckpt_every`` steps, on
  SIGINT/SIGTERM and at the end; loads with ``torch.load(weights_only=True)``;
- ``metrics.csv`` (``step,loss,<worker>...,lr,xrt``), ``valid.csv``, ``tb/`` (TensorBoard);
- ``data.tsv`` (every training and held-out file: split, name, samples; sorted) and
  ``data.json`` (its sha256, files and hours per split, for every start and resume);
- ``encoder/``: the trained encoder, for :meth:`pase.Encoder.from_pretrained`.

Steps count completed optimizer updates from 1. ``--resume`` continues at the exact next step
with the same batches, distortions and RNG draws, and truncates the logs to the checkpoint's
step first, so every step appears once.

Learning-rate schedule. ``poly`` (PASE+): ``lr = base * (1 - step / horizon) ** 0.9``, updated
every step (the original updated it every 100 steps), where the horizon is *this invocation's*
``max_steps``. Resuming with a larger ``max_steps`` therefore recomputes the decay against the new
horizon: the learning rate jumps up to ``base * (1 - step / new_horizon) ** 0.9`` and decays to 0
at the new end. ``step`` (PASE v1): halve every ``halve_every_epochs`` epochs. A run whose folder
is lost continues as a new leg from its exported encoder with ``--init ENCODER --start-step N``:
steps count on from N and the decay stays the whole run's (workers and Adam's moments start over).

DDP: ``batch_size`` is per process, the global batch is ``batch_size * world_size``, and the
learning rate is not scaled with it. Only rank 0 logs, shows progress and writes files.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import dataclasses
import json
import math
import os
import random
import signal
import sys
import threading
import time
import types
import typing as tp
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from pase.audio import SAMPLE_RATE, AudioError, write_atomic
from pase.data import (
    MIN_SECONDS,
    Batch,
    ChunkBatches,
    Utterance,
    default_cache_dir,
    load_corpus,
    split_holdout,
)
from pase.distortions import DistortionConfig

if tp.TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from pase.distortions import Distorter
    from pase.workers import WorkerConfig

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


#: The names ``--preset`` takes (``TrainConfig.from_preset`` also accepts ``pase_plus``-style aliases).
PRESETS = ("pase+", "pase+cpu", "pase+cpu-bilinear", "pase")


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults are the PASE+ recipe (spec section 5)."""

    #: Model preset for :meth:`pase.workers.PaseModel.from_preset`: encoder + worker set.
    model: str = "pase+"
    #: Start the encoder from these weights ("pase+", a save_pretrained folder, an original .ckpt
    #: or a run's checkpoint.pt); workers start fresh. Empty: random init. Ignored on resume.
    init: str = ""
    #: With ``init``: the step of the run this one continues (a new leg of a run whose folder was
    #: lost, from an encoder exported at that step). Steps count on from it, ``max_steps`` is the
    #: whole run's end step, and the poly schedule is the whole run's at that step rather than a
    #: warm restart at the base rate. 0: a run of its own. Ignored on resume.
    start_step: int = 0
    #: Steps at the start of this run (of this leg, with ``start_step``) that train the workers
    #: only: the encoder's weights are frozen (no gradient reaches it, so these steps are cheaper;
    #: BatchNorm's running statistics follow the data as in any step), so that fresh workers on an
    #: ``init`` encoder fit its features before their gradients move it. 0 (the reference): all
    #: train from the first step. Single process only.
    freeze_encoder_steps: int = 0
    #: EncoderConfig fields that override the preset's encoder (e.g. a tiny encoder for tests).
    encoder: dict[str, tp.Any] = dataclasses.field(default_factory=dict)
    #: Training audio: folders, list files, CSV manifests or Kaldi wav.scp files.
    data: list[str] = dataclasses.field(default_factory=list)
    #: Resampled-audio cache folder; empty: ``pase.data.default_cache_dir()``; "none": in RAM.
    cache_dir: str = ""
    #: Processes that decode and resample the corpus on first use (0: this process; -1: auto).
    num_workers: int = -1
    #: Files shorter than this are skipped (shorter ones are reflection-padded to a chunk).
    min_seconds: float = MIN_SECONDS
    #: Fraction of speakers (or files) held out for validation, and how.
    valid_fraction: float = 0.1
    holdout: tp.Literal["speaker", "file"] = "speaker"
    #: Examples per optimizer step and per process (global batch = this x world size).
    batch_size: int = 16
    #: Samples per chunk (2 s at 16 kHz).
    chunk_size: int = 32000
    #: Divide each chunk by its peak and multiply by u ~ U(0, 1), as the original did.
    amplitude_scaling: bool = True
    #: Adam learning rates of the encoder and of the workers; Adam defaults otherwise.
    encoder_lr: float = 1e-3
    workers_lr: float = 5e-4
    weight_decay: float = 0.0
    #: "poly": base * (1 - step / max_steps) ** poly_power; "step": halve every N epochs.
    lr_schedule: tp.Literal["poly", "step"] = "poly"
    poly_power: float = 0.9
    halve_every_epochs: int = 30
    #: Clip the global gradient norm to this value; None (the recipe) does not clip.
    grad_clip: float | None = None
    #: Optimizer steps of this invocation's schedule (the decay horizon); or set ``epochs``.
    max_steps: int | None = None
    epochs: int | None = None
    seed: int = 0
    #: Seed of the validation hold-out; None: ``seed``. A leg that continues a run under another
    #: seed (so it draws other batches) keeps the run's held-out speakers with the run's seed here.
    split_seed: int | None = None
    #: "cpu", "cuda" or "cuda:N"; under torchrun each process uses cuda:LOCAL_RANK.
    device: str = "cpu"
    #: "auto": bf16 autocast on CUDA, fp32 on CPU. "fp32" is the exact recipe.
    precision: tp.Literal["auto", "bf16", "fp32"] = "auto"
    log_every: int = 1
    valid_every: int = 500
    #: Validation batches (fixed windows and distortions, so curves are comparable).
    valid_batches: int = 16
    ckpt_every: int = 500
    #: Batches of clean, amplitude-scaled training chunks for the target statistics.
    stats_batches: int = 32
    #: CPU threads per process; 0: all cores divided among the processes on this machine.
    num_threads: int = 0
    #: Python modules (or ``.py`` files) imported before the model is built, so that the worker
    #: classes they register with ``@pase.workers.register_worker`` can be named below.
    plugins: list[str] = dataclasses.field(default_factory=list)
    #: The workers, as ``WorkerConfig`` dicts, replacing the preset's; None: the preset's.
    workers: list[dict[str, tp.Any]] | None = None
    #: Workers added to that list, e.g. ``[{"name": "energy", "kind": "log_energy"}]``.
    extra_workers: list[dict[str, tp.Any]] = dataclasses.field(default_factory=list)
    #: Names of workers removed from that list (an ablation: ``["waveform"]``).
    drop_workers: list[str] = dataclasses.field(default_factory=list)
    #: WorkerConfig fields changed per worker, e.g. ``{"gim": {"negatives": "batch"}}``.
    worker_options: dict[str, dict[str, tp.Any]] = dataclasses.field(default_factory=dict)
    #: Take each item's negative (``rand``) from the previous item's ``ctxt`` instead of reading
    #: a third chunk: the encoder runs on 2B chunks instead of 3B. False: the reference.
    rand_from_batch: bool = False
    #: Draw ``rand`` from another speaker's file (ours; speakers as the data sources name them).
    #: False: any other file, as the original did (see ``pase.data.ChunkBatches._other_file``).
    rand_other_speaker: bool = True
    #: Training time budget in seconds (None: none): the run stops when it is spent, and the
    #: poly schedule decays over it (over whichever of max_steps and this comes first).
    max_seconds: float | None = None
    #: The clock of ``max_seconds``: "wall" (seconds of training steps), or "process" (CPU
    #: seconds of this process: equal budgets stay equal when other jobs share the machine).
    budget_clock: tp.Literal["wall", "process"] = "wall"
    #: Online distortions of the anchor chunk (PASE+); ``DistortionConfig.none()`` for PASE.
    distortions: DistortionConfig = dataclasses.field(default_factory=DistortionConfig.pase_plus)

    @classmethod
    def pase_plus(cls) -> TrainConfig:
        """PASE+ (Ravanelli et al. 2020): batch 16, Adam 1e-3 / 5e-4, poly decay, distortions."""
        return cls()

    @classmethod
    def pase(cls) -> TrainConfig:
        """PASE v1 (Pascual et al. 2019): batch 32, Adam 5e-4, halved every 30 epochs, clean."""
        return cls(
            model="pase",
            batch_size=32,
            encoder_lr=5e-4,
            workers_lr=5e-4,
            lr_schedule="step",
            distortions=DistortionConfig.none(),
        )

    @classmethod
    def pase_plus_cpu(cls) -> TrainConfig:
        """PASE+ for a CPU budget (``--preset pase+cpu``): the reference recipe without the
        waveform decoder, at batch 4. Everything else (11 workers, symmetric LIM/GIM with MLP
        heads, three chunks, distortions, Adam 1e-3 / 5e-4, poly decay) is the reference.

        Chosen with ``pase ablate`` on 2 CPU cores (``bench/ablation_cpu_recipe.sh``): every
        variant trained 900 CPU-seconds on one thread (batch 4, same data, seed and held-out
        speakers), then MLP probes on the frozen encoder; test accuracy (``@noise``: test audio
        at 5 dB SNR). The two rows that decided, 3 probe seeds (mean ± std)::

            variant                 steps  fsdd         ravdess-spk  emodb-phone  fsdd@noise   phone@noise
            all (the pase+ recipe)     99  0.862±0.017  0.420±0.047  0.346±0.006  0.373±0.020  0.163±0.007
            no-waveform (this)        149  0.901±0.018  0.506±0.011  0.372±0.009  0.279±0.020  0.162±0.007

        and the other variants, probe seed 0 only::

            no-lps+lps_long                   131  0.880  0.414  0.367  0.323  0.170
            no-lim+gim                        107  0.830  0.411  0.348  0.427  0.168
            rand2b (rand from the batch)      128  0.850  0.408  0.361  0.280  0.152
            disc (cosine InfoNCE LIM+GIM)     106  0.943  0.581  0.288  0.307  0.139

        Dropping the waveform decoder is the one change that beats the reference on 3 of the 4
        ablation tasks (digits, speakers, phones; it loses noisy digits, as did every variant
        but no-lim+gim, for a reason not established: not closeness to a random init, which
        scores 0.10 there): the decoder sends the encoder almost no
        gradient (300-500x less than any other worker at init), never left the zero predictor
        (relative L1 1.005), and costs 30 % of a step, so the same CPU time buys 1.43x the steps
        (``bench/results/train.json``: 2.21x vs 1.54x real time). Cosine InfoNCE discriminators
        help speaker and digit ID but hurt phones (their gradient is 50-100x every regressor's
        at temperature 0.1). Batch 4: more updates per CPU-second than 16 (measured for the
        first packaged model, v1: better on all 6 tasks at equal chunks seen; MODEL_CARD.md).
        """
        return cls(batch_size=4, drop_workers=["waveform"])

    #: The discriminator forms of ``pase+cpu-bilinear`` (``worker_options``).
    BILINEAR_DISCRIMINATORS: tp.ClassVar[dict[str, dict[str, tp.Any]]] = {
        "lim": {"head": "bilinear", "negatives": "batch", "pool": 20},
        "gim": {"head": "bilinear", "negatives": "batch"},
    }

    @classmethod
    def pase_plus_cpu_bilinear(cls) -> TrainConfig:
        """``pase+cpu`` with discriminators that learn within its budget (``--preset
        pase+cpu-bilinear``): LIM and GIM score a pair as ``<g(x), g(y)>`` (a shared MLP ``g``,
        symmetric) against every negative of the batch (InfoNCE), LIM on 20-frame means. Nothing
        else changes. The reference MLP on the concatenation, one negative per anchor, stays in
        ``pase+`` and ``pase+cpu``.

        Measured by ``bench/discriminators_budget_run.sh`` (1900 steps of batch 4, the first
        packaged model's budget; v2's pretraining set, one poly decay; pair accuracy on 256
        held-out-speaker pairs every 100 steps, chance 0.5, about +-3 points of sampling noise)::

            step                      1000  1200  1400  1500  1600  1700  1800  1900
            this preset        GIM    .699  .707  .762  .789  .750  .773  .754  .770
                               LIM    .600  .621  .600  .633  .634  .647  .659  .648
            LIM bilinear only  GIM    .703  .656  .680  .652  .664  .715  .707  .684
            (GIM: MLP)         LIM    .607  .632  .626  .662  .653  .698  .688  .690
            pase+cpu (v2, 12000-step horizon): GIM .70-.76, LIM .54-.61 at steps 2000-3000

        (``bench/results/disc1900_gim_valid.csv``, ``disc1900_valid.csv``). With the reference
        forms LIM stayed at 0.53-0.58 in every run under 1900 steps. Not the ``pase+cpu`` default
        (yet): its downstream effect at equal CPU time is not measured; the cosine form of the same
        idea (temperature 0.1, gradient 50-100x every regressor's) cost phones in ``pase ablate``,
        while the bilinear head sends the encoder a gradient in line with the regressors' (GIM 0.70x
        the median worker at init).
        """
        return cls.pase_plus_cpu().updated({"worker_options": copy.deepcopy(cls.BILINEAR_DISCRIMINATORS)})

    @classmethod
    def from_preset(cls, name: str) -> TrainConfig:
        presets = {
            "pase+": cls.pase_plus,
            "pase_plus": cls.pase_plus,
            "pase+cpu": cls.pase_plus_cpu,
            "pase_plus_cpu": cls.pase_plus_cpu,
            "pase+cpu-bilinear": cls.pase_plus_cpu_bilinear,
            "pase": cls.pase,
        }
        if name not in presets:
            choices = ", ".join(map(repr, PRESETS))
            raise ValueError(f"unknown training preset {name!r}; choose from {choices}")
        return presets[name]()

    def to_dict(self) -> dict[str, tp.Any]:
        return dataclasses.asdict(self)

    def updated(self, overrides: tp.Mapping[str, tp.Any]) -> TrainConfig:
        """A copy with ``overrides`` applied; a nested ``distortions`` dict updates field-wise."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        values = dict(overrides)
        if isinstance(values.get("distortions"), tp.Mapping):
            merged = {**self.distortions.to_dict(), **values["distortions"]}
            values["distortions"] = DistortionConfig.from_dict(merged)
        return dataclasses.replace(self, **values)

    @classmethod
    def from_dict(cls, d: tp.Mapping[str, tp.Any]) -> TrainConfig:
        return cls().updated(d)


def load_config_file(path: str | os.PathLike[str]) -> dict[str, tp.Any]:
    """A JSON or YAML (``.yaml``/``.yml``) file of :class:`TrainConfig` fields."""
    text = Path(path).read_text()
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        loaded = yaml.safe_load(text)
    else:
        loaded = json.loads(text)
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of TrainConfig fields")
    return loaded


# ----------------------------------------------------------------------------- distributed


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> DistInfo:
    """One process, or DDP when launched by torchrun (``RANK``/``WORLD_SIZE`` set)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine")
        return DistInfo(0, 1, torch.device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        dev, backend = torch.device(device), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return DistInfo(rank, world, dev)


# ----------------------------------------------------------------------------- schedule


def learning_rate_factor(
    config: TrainConfig, step: int, horizon: int, steps_per_epoch: int, seconds: float = 0.0
) -> float:
    """Multiplier of the base learning rates for the update that completes step ``step + 1``;
    ``seconds`` of the time budget (``config.max_seconds``) spent so far."""
    if config.lr_schedule == "poly":
        progress = step / horizon
        if config.max_seconds:
            progress = max(progress, seconds / config.max_seconds)
        return max(0.0, 1.0 - progress) ** config.poly_power
    return 0.5 ** ((step // steps_per_epoch) // config.halve_every_epochs)


# ----------------------------------------------------------------------------- RNG states


def _rng_state(distortion_gen: torch.Generator) -> dict[str, tp.Any]:
    """Every RNG this process draws from, as tensors and plain values (weights_only-loadable)."""
    np_state = tp.cast(tuple[tp.Any, ...], np.random.get_state(legacy=True))
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, tp.Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": (int(np_state[3]), float(np_state[4])),
        "python": (py_version, torch.tensor(py_state, dtype=torch.int64), py_gauss),
        "distortions": distortion_gen.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: tp.Mapping[str, tp.Any], distortion_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], *state["numpy_gauss"]))
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(int(x) for x in py_state.tolist()), py_gauss))
    distortion_gen.set_state(state["distortions"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ----------------------------------------------------------------------------- logs


class CsvLog:
    """An append-only CSV log that a resumed run first truncates to its checkpoint's step."""

    def __init__(self, path: Path, columns: list[str], keep_until: int | None) -> None:
        self.path, self.columns = path, columns
        if keep_until is not None and path.exists():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames != columns:
                    raise ValueError(f"{path}: columns {reader.fieldnames} differ from {columns}")
                kept = [row for row in reader if int(row["step"]) <= keep_until]
            write_atomic(path, lambda tmp: self._write_rows(tmp, kept))
        else:
            write_atomic(path, lambda tmp: self._write_rows(tmp, []))

    def _write_rows(self, tmp: str, rows: list[dict[str, str]]) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: tp.Mapping[str, float | int]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow({k: _fmt(v) for k, v in row.items()})


def _fmt(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"


# ----------------------------------------------------------------------------- the run


class _StopFlag:
    """Set by SIGINT/SIGTERM: the loop finishes its step, checkpoints and returns."""

    def __init__(self) -> None:
        self.requested = False
        #: Exit status for the signal received, 128 + its number (SIGINT 130, SIGTERM 143).
        self.exit_code = 128 + signal.SIGINT
        self._previous: dict[int, tp.Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        self.requested = True
        self.exit_code = 128 + signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _prefetch(batches: tp.Iterator[Batch], pin: bool, depth: int = 4) -> tp.Generator[Batch, None, None]:
    """Read batches ahead in a thread (into pinned memory for CUDA), so file reads overlap the
    step. Batches are a pure function of their position: reading ahead changes only timing."""
    import queue

    q: queue.Queue[Batch | BaseException] = queue.Queue(maxsize=depth)
    done = threading.Event()

    def put(item: Batch | BaseException) -> None:
        while not done.is_set():
            with contextlib.suppress(queue.Full):
                q.put(item, timeout=0.1)
                return

    def fill() -> None:
        try:
            for batch in batches:
                if pin:
                    batch = dataclasses.replace(
                        batch,
                        chunk=batch.chunk.pin_memory(),
                        ctxt=batch.ctxt.pin_memory(),
                        rand=batch.rand.pin_memory(),
                    )
                put(batch)
                if done.is_set():
                    return
        except BaseException as err:  # handed to the training thread, raised there
            put(err)

    worker = threading.Thread(target=fill, name="pase-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        # Stop and join the reader before returning: a daemon thread still inside torch code at
        # interpreter shutdown is killed mid-C++ and aborts the process (seen as SIGABRT in DDP).
        done.set()
        worker.join()


def _say(line: str) -> None:
    from pase.progress import say  # through the bar, so a message never tears it

    say(line)


T = tp.TypeVar("T")


def _main_rank_first(info: DistInfo, build: tp.Callable[[], T]) -> T:
    """``build()`` on rank 0 first, then on the other ranks: what rank 0 writes to a disk cache
    (resampled audio, simulated rooms) the others read instead of recomputing it all at once."""
    result: T | None = None
    for main_turn in (True, False):
        if info.is_main == main_turn:
            result = build()
        if info.world_size > 1:
            dist.barrier()
    assert result is not None
    return result


def _load_data(config: TrainConfig, info: DistInfo) -> tuple[list[Utterance], list[Utterance]]:
    """Train and validation corpora. Rank 0 resamples and caches first; the other ranks then read
    the cache, so no file is decoded twice and only rank 0 reports skipped files."""
    if not config.data:
        raise ValueError("no training data: pass --data (folders, list files, CSV or wav.scp)")
    cache = None if config.cache_dir.lower() == "none" else config.cache_dir or default_cache_dir()
    report = _say if info.is_main else None
    corpus = _main_rank_first(
        info,
        lambda: load_corpus(
            config.data,
            cache,
            config.min_seconds,
            report,
            info.is_main,
            num_workers=None if config.num_workers < 0 else config.num_workers,
        ),
    )
    split_seed = config.seed if config.split_seed is None else config.split_seed
    return split_holdout(corpus, config.valid_fraction, config.holdout, split_seed)


def data_manifest(train: tp.Sequence[Utterance], valid: tp.Sequence[Utterance]) -> list[str]:
    """The run's data as sorted lines ``<split>\t<file name>\t<samples at 16 kHz>``: no folder
    names, so the same audio gives the same lines (and hash) on any machine."""
    lines = [f"train\t{u.path.name}\t{u.num_samples}" for u in train]
    lines += [f"valid\t{u.path.name}\t{u.num_samples}" for u in valid]
    return sorted(lines)


def write_data_record(out: Path, lines: tp.Sequence[str], step: int) -> dict[str, tp.Any]:
    """``data.tsv`` (the manifest lines) and ``data.json``: its sha256, files and hours per split,
    one entry per start or resume of the run (the step it started from), so a model card can name
    the exact data of every leg."""
    import hashlib

    text = "".join(line + "\n" for line in lines)
    entry: dict[str, tp.Any] = {"step": step, "sha256": hashlib.sha256(text.encode()).hexdigest()}
    for split in ("train", "valid"):
        samples = [int(line.split("\t")[2]) for line in lines if line.startswith(split + "\t")]
        entry[f"{split}_files"] = len(samples)
        entry[f"{split}_hours"] = round(sum(samples) / SAMPLE_RATE / 3600, 4)
    record_path = out / "data.json"
    starts = json.loads(record_path.read_text())["starts"] if record_path.exists() else []
    if starts and starts[-1]["sha256"] != entry["sha256"]:
        _say(f"note: the training data differ from the previous leg's (sha256 {starts[-1]['sha256'][:12]})")
    record = {"manifest": "data.tsv", "sha256_of": "data.tsv", "starts": [*starts, entry]}
    write_atomic(out / "data.tsv", lambda tmp: Path(tmp).write_text(text))
    write_atomic(record_path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2) + "\n"))
    return entry


def _build_distorter(config: TrainConfig, info: DistInfo) -> Distorter:
    """Rank 0 builds (or loads) the simulated-room bank first; the other ranks then load its
    disk cache instead of all simulating the same rooms at once."""
    from pase.distortions import Distorter

    return _main_rank_first(info, lambda: Distorter(config.distortions)).to(info.device)


def _chunk_batches(
    config: TrainConfig, corpus: list[Utterance], seed: int, rank: int = 0, world_size: int = 1
) -> ChunkBatches:
    return ChunkBatches(
        corpus,
        config.batch_size,
        config.chunk_size,
        seed,
        rank,
        world_size,
        config.amplitude_scaling,
        config.rand_other_speaker,
    )


def select_workers(workers: list[WorkerConfig], config: TrainConfig) -> list[WorkerConfig]:
    """``workers`` less ``config.drop_workers``, with ``config.worker_options`` applied."""
    from pase.workers import WorkerConfig

    names = {w.name for w in workers}
    unknown = (set(config.drop_workers) | set(config.worker_options)) - names
    if unknown:
        raise ValueError(
            f"drop_workers/worker_options name unknown workers {sorted(unknown)}; have {sorted(names)}"
        )
    kept = [w for w in workers if w.name not in config.drop_workers]
    if not kept:
        raise ValueError("drop_workers removes every worker: nothing would train the encoder")
    return [
        WorkerConfig.from_dict({**dataclasses.asdict(w), **config.worker_options.get(w.name, {})})
        for w in kept
    ]


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    if precision in ("auto", "fp32"):
        return None
    raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")


def _set_threads(config: TrainConfig, info: DistInfo) -> None:
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    elif info.device.type == "cpu" and info.world_size > 1:
        # Each process would otherwise start one thread per core: N processes oversubscribe.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))


def _init_encoder(model: torch.nn.Module, spec: str) -> None:
    """Load the encoder weights named by ``spec`` into ``model.encoder`` (continued pretraining).

    ``spec``: a packaged name (``"pase+"``) or ``save_pretrained`` folder, an original-format
    ``.ckpt``, or a run's ``checkpoint.pt`` (its encoder part). The architecture must match the
    run's; BatchNorm running statistics come along (training updates them from there).
    """
    from pase.encoder import Encoder, EncoderConfig

    path = Path(spec)
    if path.is_file():
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle and zip errors come in many types
            raise ValueError(
                f"--init {spec}: not a PyTorch checkpoint ({type(exc).__name__}: {exc})"
            ) from None
        if isinstance(obj, dict) and "model" in obj and "model_config" in obj:
            source = Encoder(EncoderConfig.from_dict(json.loads(obj["model_config"])["encoder"]))
            prefix = "encoder."
            source.load_state_dict(
                {k[len(prefix) :]: v for k, v in obj["model"].items() if k.startswith(prefix)}
            )
        else:
            source = Encoder.from_original(path)
    else:
        source = Encoder.from_pretrained(spec)
    target = tp.cast(Encoder, model.encoder)
    ours, theirs = target.config.to_dict(), source.config.to_dict()
    differ = sorted(k for k in ours if k != "qrnn_impl" and ours[k] != theirs[k])
    if differ:
        detail = ", ".join(f"{k}: {theirs[k]} vs {ours[k]}" for k in differ)
        raise ValueError(
            f"--init {spec}: its encoder differs from this run's ({detail}); set --model or --encoder "
            "to match"
        )
    target.load_state_dict(source.state_dict())


class Trainer:
    """One training run in ``out``: build, resume if asked, loop, checkpoint, export.

    ``on_step(step, row)`` is called on rank 0 after every logged step with the metrics row.
    """

    def __init__(
        self,
        config: TrainConfig,
        out: str | os.PathLike[str],
        resume: bool = False,
        on_step: tp.Callable[[int, dict[str, float]], None] | None = None,
        progress: bool = True,
    ) -> None:
        from pase.encoder import EncoderConfig
        from pase.workers import PaseModel, WorkerConfig, load_plugins, preset_workers

        self.out, self.config, self.on_step = Path(out), config, on_step
        self.info = info = setup_distributed(config.device)
        self.progress = progress and info.is_main
        _set_threads(config, info)
        checkpoint = None
        if (self.out / CHECKPOINT).exists():
            if not resume:
                raise ValueError(f"{self.out} already holds a run: pass --resume, or another --out")
            checkpoint = torch.load(self.out / CHECKPOINT, map_location="cpu", weights_only=True)
        elif resume:
            raise ValueError(f"no checkpoint in {self.out} to resume (--resume-or-start starts a fresh run)")

        train_set, valid_set = _load_data(config, info)
        self.data_lines = data_manifest(train_set, valid_set)
        self.valid: ChunkBatches | None = None
        if valid_set:
            try:
                self.valid = _chunk_batches(config, valid_set, config.seed)
            except ValueError as err:
                if info.is_main:
                    _say(f"no validation: the held-out set is too small ({err})")
        self.batches = _chunk_batches(config, train_set, config.seed, info.rank, info.world_size)
        if config.max_steps is not None:
            self.horizon = config.max_steps
        elif config.epochs is not None:
            self.horizon = config.epochs * self.batches.steps_per_epoch
        elif config.max_seconds is not None:
            self.horizon = sys.maxsize  # the time budget ends the run
        else:
            raise ValueError("set max_steps, epochs or max_seconds")
        if config.start_step < 0:
            raise ValueError(f"start_step must be at least 0, got {config.start_step}")
        if config.start_step and not config.init:
            raise ValueError("start_step continues a run from its exported encoder: set init too")
        if config.start_step >= self.horizon:
            raise ValueError(
                f"start_step {config.start_step} leaves nothing to train: max_steps is the whole run's "
                f"end step ({self.horizon}), not the steps of this leg"
            )
        if config.freeze_encoder_steps < 0:
            raise ValueError(f"freeze_encoder_steps must be at least 0, got {config.freeze_encoder_steps}")
        if config.freeze_encoder_steps and info.world_size > 1:
            raise ValueError("freeze_encoder_steps works in a single process only (not under torchrun)")
        if config.max_seconds is not None and config.max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, got {config.max_seconds}")
        self.clock = time.process_time if config.budget_clock == "process" else time.perf_counter
        #: Seconds of training steps so far (on ``config.budget_clock``), kept across resumes.
        self.train_seconds = 0.0

        torch.manual_seed(config.seed + info.rank)
        np.random.seed(config.seed + info.rank)
        random.seed(config.seed + info.rank)
        preset = EncoderConfig.from_preset(config.model).to_dict()
        encoder_config = EncoderConfig.from_dict({**preset, **config.encoder})
        load_plugins(config.plugins)
        workers = (
            [WorkerConfig.from_dict(w) for w in config.workers]
            if config.workers is not None
            else preset_workers(config.model)
        )
        workers += [WorkerConfig.from_dict(w) for w in config.extra_workers]
        self.model = PaseModel(encoder_config, select_workers(workers, config))
        if config.init and checkpoint is None:
            _init_encoder(self.model, config.init)
        self.model.to(info.device)
        self.distorter = _build_distorter(config, info)
        self.distortion_gen = torch.Generator(device=info.device)
        self.distortion_gen.manual_seed(config.seed * 1000 + info.rank)
        self.base_lrs = [config.encoder_lr, config.workers_lr]
        groups = [self.model.encoder_parameters(), self.model.worker_parameters()]
        self.optimizer = torch.optim.Adam(
            [{"params": p, "lr": lr} for p, lr in zip(groups, self.base_lrs, strict=True)],
            weight_decay=config.weight_decay,
        )
        self.step = config.start_step
        #: Whether this invocation continues its own checkpoint (logs are kept up to its step).
        self.resumed = checkpoint is not None
        if checkpoint is not None:
            self._restore(checkpoint)
        else:
            self._fit_stats(train_set)
        self.ddp: torch.nn.Module = self.model
        if info.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [info.device.index] if info.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids)
        self.autocast_dtype = _autocast_dtype(config.precision, info.device)

    def _fit_stats(self, train_set: list[Utterance]) -> None:
        # Every rank fits on the same clean stream (its own seed, so it is not the first training
        # batches), so the statistics agree without a broadcast.
        cfg = self.config
        stream = _chunk_batches(cfg, train_set, cfg.seed + 1)
        chunks = (b.chunk.to(self.info.device) for b in stream)
        self.model.fit_target_stats(chunks, max_batches=cfg.stats_batches)

    def _restore(self, checkpoint: tp.Mapping[str, tp.Any]) -> None:
        try:
            self.model.load_state_dict(checkpoint["model"])
        except RuntimeError as err:
            raise ValueError(
                f"{self.out / CHECKPOINT} does not fit the configured model (changed --model or "
                f"--encoder?): {str(err).splitlines()[0]}"
            ) from None
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.step = int(checkpoint["step"])
        self.train_seconds = float(checkpoint.get("train_seconds", 0.0))
        self.batches.load_state_dict(checkpoint["data"])
        if self.info.is_main:
            _say(f"resuming {self.out} after step {self.step} (data {checkpoint['data']})")
        rng = checkpoint["rng"]
        if len(rng) == self.info.world_size:
            _set_rng_state(rng[self.info.rank], self.distortion_gen)
        elif self.info.is_main:
            _say(
                f"resuming a {len(rng)}-process run with {self.info.world_size}: the data "
                "position is kept, random draws restart from the seed"
            )

    def _checkpoint(self) -> None:
        rng = [_rng_state(self.distortion_gen)]
        if self.info.world_size > 1:
            # DDP broadcasts rank 0's buffers (BatchNorm running statistics) before every forward,
            # then each rank updates them from its own batch; doing that broadcast now leaves
            # every rank with the state the next step would use, so ranks agree and resume is exact.
            for buffer in self.model.buffers():
                dist.broadcast(buffer, 0)
            gathered: list[tp.Any] = [None] * self.info.world_size
            dist.all_gather_object(gathered, rng[0])
            rng = gathered
        if not self.info.is_main:
            return
        payload = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "train_seconds": self.train_seconds,
            "model": self.model.state_dict(),
            "model_config": json.dumps(self.model.config_dict()),
            "optimizer": self.optimizer.state_dict(),
            "schedule": {"horizon": self.horizon, "base_lrs": self.base_lrs},
            "data": self.batches.state_dict(),
            "rng": rng,
            "config": json.dumps(self.config.to_dict()),
        }
        write_atomic(self.out / CHECKPOINT, lambda tmp: torch.save(payload, tmp))

    def _set_lr(self) -> float:
        factor = learning_rate_factor(
            self.config, self.step, self.horizon, self.batches.steps_per_epoch, self.train_seconds
        )
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor
        return self.base_lrs[0] * factor

    def _losses(self, batch: Batch, generator: torch.Generator, module: tp.Callable[..., T]) -> T:
        """Distort the anchor on the device, then ``module(distorted, clean, ctxt, rand)``: every
        worker's loss (the model or its DDP wrapper) or, with ``PaseModel.evaluate``, also metrics."""
        batch = batch.to(self.info.device, non_blocking=True)
        # The overlapped speaker comes from ANOTHER item's rand: the item's own rand is its
        # discriminators' negative, and mixing it into the anchor made 10 % of negatives half
        # positive (the first version did that).
        distorted = self.distorter(batch.chunk, other=batch.rand.roll(1, 0), generator=generator)
        autocast: tp.ContextManager[object] = contextlib.nullcontext()
        if self.autocast_dtype is not None:
            autocast = torch.autocast(self.info.device.type, dtype=self.autocast_dtype)
        with autocast:
            rand = None if self.config.rand_from_batch else batch.rand
            return module(distorted, batch.chunk, batch.ctxt, rand)

    def train_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """One optimizer update on ``batch``: ``(total loss, worker losses, grad norm)``.

        The gradient norm is measured before clipping (and clipping is off by default).
        """
        frozen = self.step < self.config.start_step + self.config.freeze_encoder_steps
        for param in self.model.encoder_parameters():
            param.requires_grad_(not frozen)
        losses = self._losses(batch, self.distortion_gen, self.ddp)
        total = self.model.total_loss(losses)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        max_norm = self.config.grad_clip or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        self.optimizer.step()
        return total, losses, grad_norm

    def validate(self) -> dict[str, float]:
        """Mean losses and worker metrics (e.g. ``lim_acc``) over fixed validation batches: eval
        mode, fixed windows and distortions, and the training RNG streams left untouched (so
        validation never changes training). The held-out set is speaker-disjoint by default."""
        cfg, valid = self.config, self.valid
        if valid is None:
            raise ValueError("this run has no validation set (--valid-fraction 0 or too few files)")
        n = min(cfg.valid_batches, valid.steps_per_epoch)
        gen = torch.Generator(device=self.info.device)
        gen.manual_seed(cfg.seed)
        totals = dict.fromkeys(self.model.worker_names, 0.0)
        metrics = dict.fromkeys(self.model.metric_names, 0.0)
        self.model.eval()
        devices = [self.info.device] if self.info.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            for position in range(n):
                losses, scores = self._losses(valid.batch(0, position), gen, self.model.evaluate)
                for name, value in losses.items():
                    totals[name] += float(value) / n
                for name, value in scores.items():
                    metrics[name] += float(value) / n
        self.model.train()
        loss = float(self.model.total_loss({k: torch.tensor(v) for k, v in totals.items()}))
        return {"loss": loss, **totals, **metrics}

    def finished(self) -> bool:
        """Whether the step horizon or the time budget is reached (all ranks agree)."""
        spent = self.config.max_seconds is not None and self.train_seconds >= self.config.max_seconds
        return self.step >= self.horizon or _any_rank(spent, self.info)

    def run(self) -> int:
        """Train up to ``horizon`` steps (or ``max_seconds``) or until SIGINT/SIGTERM; returns the
        exit code."""
        info = self.info
        log = _RunLog(self, resumed=self.resumed) if info.is_main else None
        interrupted = False
        batches = _prefetch(iter(self.batches), pin=info.device.type == "cuda")
        with _StopFlag() as stop, contextlib.closing(batches):
            done = self.finished()
            while not done:
                started = self.clock()
                batch = next(batches)
                lr = self._set_lr()
                total, losses, grad_norm = self.train_step(batch)
                self.step += 1
                self.train_seconds += self.clock() - started
                self.batches.load_state_dict(self.batches.state_after(batch))
                done = self.finished()
                if log is not None:
                    log.step(self.step, total, losses, lr, grad_norm, last=done)
                if _any_rank(stop.requested, info):
                    interrupted = True
                    break
                if self.step % self.config.ckpt_every == 0 and not done:
                    self._checkpoint()
            self._checkpoint()
        if log is not None:
            log.close()
        if interrupted:
            if info.is_main:
                _say(f"interrupted at step {self.step}; checkpoint saved, continue with --resume")
            return stop.exit_code
        if info.is_main:
            self.model.encoder.save_pretrained(self.out / "encoder")
            _say(f"done at step {self.step}; encoder saved to {self.out / 'encoder'}")
        if info.world_size > 1:
            dist.barrier()  # ranks leave together: no rank tears its process group down mid-save
        return 0


class _RunLog:
    """Rank 0's observability: progress bar, metrics.csv, valid.csv and TensorBoard."""

    def __init__(self, trainer: Trainer, resumed: bool) -> None:
        self.trainer = trainer
        cfg, out, start = trainer.config, trainer.out, trainer.step
        if resumed and start >= trainer.horizon and trainer.info.world_size == 1:
            # Checked before config.json is rewritten: a mistyped horizon must change nothing. (The
            # CLI checks --max-steps for every rank first; alone, rank 0 must not leave its peers.)
            raise ValueError(
                f"{out} is at step {start}, and this run's horizon is {trainer.horizon} steps: "
                f"nothing to train; pass --max-steps above {start} to continue it"
            )
        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(cfg.to_dict(), indent=2)
        write_atomic(out / "config.json", lambda tmp: Path(tmp).write_text(text))
        write_data_record(out, trainer.data_lines, start)
        names = trainer.model.worker_names
        keep = start if resumed else None
        self.metrics = CsvLog(out / "metrics.csv", ["step", "loss", *names, "lr", "xrt"], keep)
        metric_names = trainer.model.metric_names
        self.valid = CsvLog(out / "valid.csv", ["step", "loss", *names, *metric_names], keep)
        self.writer = _tensorboard(out / "tb", start + 1)
        self.bar = None
        if trainer.progress:
            from pase.progress import progress

            total = None if trainer.horizon == sys.maxsize else trainer.horizon
            self.bar = progress(total=total, initial=start, unit="step", desc="training")
        world = trainer.info.world_size
        self.audio_per_step = cfg.batch_size * world * cfg.chunk_size / SAMPLE_RATE
        self.last_time, self.last_step = time.perf_counter(), start

    def step(
        self,
        step: int,
        total: torch.Tensor,
        losses: dict[str, torch.Tensor],
        lr: float,
        grad_norm: torch.Tensor,
        last: bool = False,
    ) -> None:
        cfg, trainer = self.trainer.config, self.trainer
        if step % cfg.log_every == 0 or last:
            now = time.perf_counter()
            xrt = self.audio_per_step * (step - self.last_step) / (now - self.last_time)
            self.last_time, self.last_step = now, step
            # One device-to-host copy for every value (a sync per value would stall a GPU).
            values = torch.stack([total, *losses.values(), grad_norm]).detach().float().tolist()
            row = {"step": step, "loss": values[0], **dict(zip(losses, values[1:-1], strict=True))}
            row.update(lr=lr, xrt=xrt)
            self.metrics.append(row)
            if self.writer is not None:
                _log_tb(self.writer, step, row, values[-1], trainer.optimizer)
            if self.bar is not None:
                self.bar.set_postfix(
                    loss=f"{row['loss']:.3f}", xRT=f"{xrt:.1f}", audio_h_per_s=f"{xrt / 3600:.4f}"
                )
            if trainer.on_step is not None:
                trainer.on_step(step, row)
        if self.bar is not None:
            self.bar.update(1)
        if trainer.valid is not None and (step % cfg.valid_every == 0 or last):
            n = min(cfg.valid_batches, trainer.valid.steps_per_epoch)
            self.say(f"step {step}: validating on {n} batches ...")
            start = time.perf_counter()
            scores = trainer.validate()
            seconds = time.perf_counter() - start
            self.last_time += seconds  # xRT measures training only
            self.say(f"step {step}: valid loss {scores['loss']:.4f} ({seconds:.0f} s)")
            self.valid.append({"step": step, **scores})
            if self.writer is not None:
                for name, value in scores.items():
                    self.writer.add_scalar(f"valid/{name}", value, step)
        if step % cfg.ckpt_every == 0 and not last:
            self.say(f"step {step}: writing {trainer.out / CHECKPOINT}")

    def say(self, line: str) -> None:
        """A message on its own line, the progress bar redrawn below it."""
        from pase.progress import say

        say(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


def _any_rank(flag: bool, info: DistInfo) -> bool:
    """Whether any rank was asked to stop: all ranks must leave the loop at the same step."""
    if info.world_size == 1:
        return flag
    t = torch.tensor([float(flag)], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _tensorboard(path: Path, purge_step: int) -> SummaryWriter | None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        _say("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
        return None
    # purge_step hides events that a killed run wrote after its last checkpoint.
    return SummaryWriter(str(path), purge_step=purge_step)


def _log_tb(
    writer: SummaryWriter,
    step: int,
    row: tp.Mapping[str, float],
    grad_norm: float,
    optimizer: torch.optim.Optimizer,
) -> None:
    writer.add_scalar("train/loss", row["loss"], step)
    for name, value in row.items():
        if name not in ("step", "loss", "lr", "xrt"):
            writer.add_scalar(f"worker/{name}", value, step)
    writer.add_scalar("train/lr_encoder", optimizer.param_groups[0]["lr"], step)
    writer.add_scalar("train/lr_workers", optimizer.param_groups[1]["lr"], step)
    writer.add_scalar("train/grad_norm", grad_norm, step)
    writer.add_scalar("train/xrt", row["xrt"], step)


# ----------------------------------------------------------------------------- CLI

#: TrainConfig fields the CLI exposes as one JSON value (everything else maps to its type).
_NESTED = "distortions"


def _option_kwargs(hint: tp.Any) -> dict[str, tp.Any]:
    """argparse keyword arguments that parse one dataclass field of type ``hint``."""
    origin, args = tp.get_origin(hint), tp.get_args(hint)
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin in (tp.Union, types.UnionType) and type(None) in args:
        inner = _option_kwargs(next(a for a in args if a is not type(None)))
        parse = inner.get("type", str)
        return {**inner, "type": lambda s: None if s.lower() == "none" else parse(s)}
    if hint in (int, float, str):
        return {"type": hint}
    if origin is tp.Literal:
        return {"choices": list(args)}
    if origin is list and args == (str,):
        return {"nargs": "+"}
    return {"type": json.loads, "metavar": "JSON"}  # tuples and dicts


#: Help of fields whose documentation above would describe another field; a ``#:`` comment on
#: the field itself takes precedence.
_CLI_HELP = {
    "seed": "Seed of the initialisation, the data order and the distortion draws (each rank adds its rank).",
    "log_every": "Write a metrics.csv row (and TensorBoard scalars) every this many steps.",
    "valid_every": "Validate every this many steps, and at the end (valid.csv).",
    "ckpt_every": "Write checkpoint.pt every this many steps; also on SIGINT/SIGTERM and at the end.",
}


def _show(value: tp.Any) -> str:
    """A default as the user would type it on the command line."""
    if value is None:
        return "none"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value) if value != "" else '""'


def _add_field_options(
    parser: argparse._ActionsContainer, cls: type, presets: tp.Sequence[tuple[str, tp.Any]], prefix: str = ""
) -> None:
    """One option per field of ``cls``, its help generated from the field's documentation
    (:func:`pase.cli.field_docs`) and its value in each of ``presets`` (``(name, instance)``)."""
    from pase.cli_args import field_docs

    hints = tp.get_type_hints(cls)
    docs = field_docs(cls, _CLI_HELP)
    for field in dataclasses.fields(cls):
        if not prefix and field.name == _NESTED:
            continue
        flag = f"--{prefix}{field.name.replace('_', '-')}"
        kwargs = _option_kwargs(hints[field.name])
        if "type" in kwargs or "nargs" in kwargs:
            kwargs.setdefault("metavar", field.name.upper())
        (first, value), *others = [(name, getattr(obj, field.name)) for name, obj in presets]
        default = f"default: {_show(value)}" + "".join(
            f"; {_show(v)} with --preset {name}" for name, v in others if v != value
        )
        help_text = f"{docs.get(field.name, '')} ({default})".replace("%", "%%")
        parser.add_argument(
            flag, dest=prefix + field.name, default=argparse.SUPPRESS, help=help_text, **kwargs
        )


#: Fields that count something and must be at least 1 (0 would divide by zero or never stop).
_AT_LEAST_ONE = (
    "batch_size", "chunk_size", "max_steps", "epochs", "log_every", "valid_every", "ckpt_every",
    "halve_every_epochs",
)  # fmt: skip


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's config: the preset (or, when resuming, the run's saved config), then the
    ``--config`` file, then the options given on the command line.

    Relative plugin files of a ``--config`` file are taken relative to that file's folder.
    Raises ``ValueError`` naming the file or option for a config that cannot be used.
    """
    saved = Path(args.out) / "config.json"
    if (args.resume or args.resume_or_start) and saved.exists():
        config = TrainConfig.from_dict(json.loads(saved.read_text()))
    else:
        config = TrainConfig.from_preset(args.preset)
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise ValueError(f"{path}: no such config file")
        try:
            loaded = load_config_file(path)
        except ModuleNotFoundError:
            raise  # PyYAML missing: main() names the extra to install
        except Exception as err:  # yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
            if isinstance(err, json.JSONDecodeError):
                where = f"{path}:{err.lineno}:{err.colno}"
            problem = getattr(err, "problem", None) or getattr(err, "msg", None) or str(err).splitlines()[0]
            raise ValueError(f"{where}: not a valid config file: {problem}") from None
        if isinstance(loaded.get("plugins"), list):
            loaded["plugins"] = [_relative_to(p, path.parent) for p in loaded["plugins"]]
        config = config.updated(loaded)
    given = vars(args)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides: dict[str, tp.Any] = {k: v for k, v in given.items() if k in fields}
    nested = {k.split(".", 1)[1]: v for k, v in given.items() if k.startswith(_NESTED + ".")}
    if nested:
        overrides[_NESTED] = nested
    config = config.updated(overrides)
    for name in _AT_LEAST_ONE:
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    from pase.cli_args import check_device

    check_device(config.device)
    return config


def _relative_to(plugin: tp.Any, folder: Path) -> tp.Any:
    """A relative ``.py`` plugin path of a config file, resolved against the file's folder
    (module names such as ``mypkg.workers`` are left alone)."""
    if isinstance(plugin, str) and plugin.endswith(".py") and not Path(plugin).is_absolute():
        return str(folder / plugin)
    return plugin


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    from pase.cli_args import plain

    p = subparsers.add_parser(
        "train",
        help="self-supervised training (one process, or DDP under torchrun)",
        usage="pase train [--preset PRESET] --out RUN [--config FILE] [--resume] [OPTION ...]",
        description=plain(__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset",
        default="pase+",
        choices=PRESETS,
        help="the whole recipe: pase+ (batch 16, Adam 1e-3 / 5e-4 with poly decay, 12 workers, "
        "distortions), pase+cpu (pase+ without the waveform decoder, batch 4: chosen by pase ablate "
        "on 2 CPU cores), pase+cpu-bilinear (pase+cpu with bilinear LIM/GIM heads scored against the "
        "batch's negatives: both learn within 1900 steps) "
        "or pase (PASE v1: batch 32, lr 5e-4 halved every 30 epochs, 7 workers, clean). "
        "It sets every option below, --model included; --model alone changes only the encoder "
        "and its worker set and keeps the rest of the recipe (default: pase+)",
    )
    p.add_argument("--out", required=True, help="run folder (checkpoint, logs, encoder/)")
    p.add_argument(
        "--config",
        help="JSON or YAML file of the options below (field names, e.g. batch_size: 8); "
        "precedence: --preset < --config < options given here",
    )
    resume = p.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint (an error without one)",
    )
    resume.add_argument(
        "--resume-or-start",
        action="store_true",
        help="continue the run in --out if it has a checkpoint, else start it (for job schedulers)",
    )
    presets = [(name, TrainConfig.from_preset(name)) for name in PRESETS]
    _add_field_options(p.add_argument_group("training (TrainConfig fields)"), TrainConfig, presets)
    _add_field_options(
        p.add_argument_group("distortions (DistortionConfig fields; none apply with --preset pase)"),
        DistortionConfig,
        [(name, preset.distortions) for name, preset in presets[:1]],
        prefix=_NESTED + ".",
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        ckpt = Path(args.out) / CHECKPOINT
        resume = args.resume or (args.resume_or_start and ckpt.exists())
        if resume and ckpt.exists() and config.max_steps is not None:
            # Every rank refuses a horizon already reached, before any rank builds or writes anything
            # (the memory map reads the step, not the ~360 MB of weights).
            step = int(torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["step"])
            if step >= config.max_steps:
                raise ValueError(
                    f"{args.out} is at step {step}: --max-steps {config.max_steps} leaves nothing to train; "
                    f"pass --max-steps above {step} to continue the run"
                )
        return Trainer(config, args.out, resume=resume).run()
    except (AudioError, ValueError, OSError) as err:
        print(f"pase train: {err}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
