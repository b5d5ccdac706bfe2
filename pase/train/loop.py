"""The training loop: :class:`Trainer` builds a run (data, model, optimizer; resumed from its
checkpoint or started from ``--init`` weights), takes optimizer steps, validates, and stops at its
horizon, its time budget or a signal. Batches are read ahead in a thread; under torchrun every
rank runs the same loop on its share of the data.
"""

from __future__ import annotations

import contextlib
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

from pase.data import Batch, ChunkBatches, Utterance, default_cache_dir, load_corpus, split_holdout
from pase.distributed import Ranks, any_rank, barrier, gather, init_group, main_rank_first
from pase.progress import say
from pase.train.checkpoint import (
    CHECKPOINT,
    has_checkpoint,
    read_checkpoint,
    read_latest,
    remove_stale_temporaries,
    rng_state,
    set_rng_state,
    write_checkpoint,
)
from pase.train.config import TrainConfig
from pase.train.logs import RunLog, data_manifest

if tp.TYPE_CHECKING:
    from pase.distortions import Distorter
    from pase.workers import WorkerConfig

T = tp.TypeVar("T")


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


def _load_data(config: TrainConfig, info: Ranks) -> tuple[list[Utterance], list[Utterance]]:
    """Train and validation corpora. Rank 0 resamples and caches first; the other ranks then read
    the cache, so no file is decoded twice and only rank 0 reports skipped files."""
    if not config.data:
        raise ValueError("no training data: pass --data (folders, list files, CSV or wav.scp)")
    cache = None if config.cache_dir.lower() == "none" else config.cache_dir or default_cache_dir()
    report = say if info.is_main else None
    corpus = main_rank_first(
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


def _build_distorter(config: TrainConfig, info: Ranks) -> Distorter:
    """Rank 0 builds (or loads) the simulated-room bank first; the other ranks then load its
    disk cache instead of all simulating the same rooms at once."""
    from pase.distortions import Distorter

    return main_rank_first(info, lambda: Distorter(config.distortions)).to(info.device)


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
        config.ctxt_source,
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


def _set_threads(config: TrainConfig, info: Ranks) -> None:
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    elif info.device.type == "cpu" and info.world_size > 1:
        # Each process would otherwise start one thread per core: N processes oversubscribe.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // info.local_world_size))


def _init_encoder(model: torch.nn.Module, spec: str) -> None:
    """Load the encoder weights named by ``spec`` into ``model.encoder`` (continued pretraining).

    ``spec``: any encoder spec of :func:`pase.load_encoder` (the packaged ``"pase+"``, a
    ``save_pretrained`` folder, an original ``.ckpt``, a run folder or its ``checkpoint.pt``, ...).
    The architecture must match the run's; BatchNorm running statistics come along (training
    updates them from there).
    """
    from pase.encoder import Encoder
    from pase.hub import CheckpointError
    from pase.loading import EncoderSpecError, load_encoder

    try:
        source = load_encoder(spec)
    except (EncoderSpecError, CheckpointError) as exc:  # each names the spec or the file read
        raise ValueError(f"--init {exc}") from None
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


def _join(device: str) -> Ranks:
    """This process's ranks on ``device``, in the torchrun job's process group when there is one."""
    ranks = Ranks.from_env().on(device)
    if ranks.world_size == 1 and ranks.device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    init_group(ranks)
    return ranks


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

        config.validate()
        self.out, self.config, self.on_step = Path(out), config, on_step
        self.info = info = _join(config.device)
        self.progress = progress and info.is_main
        _set_threads(config, info)
        checkpoint: dict[str, tp.Any] | None = None
        #: The checkpoint this run resumes (the latest, or the one before a corrupt latest).
        self.resumed_from = self.out / CHECKPOINT
        if has_checkpoint(self.out):
            if not resume:
                raise ValueError(f"{self.out} already holds a run: pass --resume, or another --out")
            self.resumed_from, checkpoint = read_latest(
                self.out, say if info.is_main else None, read_checkpoint
            )
        elif resume:
            raise ValueError(f"no checkpoint in {self.out} to resume (--resume-or-start starts a fresh run)")
        if info.is_main and self.out.is_dir():
            for path in remove_stale_temporaries(self.out):
                say(f"removed {path}, left by a checkpoint write that was killed")

        train_set, valid_set = _load_data(config, info)
        self.data_lines = data_manifest(train_set, valid_set)
        self.valid: ChunkBatches | None = None
        if valid_set:
            try:
                self.valid = _chunk_batches(config, valid_set, config.seed)
            except ValueError as err:
                if info.is_main:
                    say(f"no validation: the held-out set is too small ({err})")
        self.batches = _chunk_batches(config, train_set, config.seed, info.rank, info.world_size)
        if config.max_steps is not None:
            self.horizon = config.max_steps
        elif config.epochs is not None:
            self.horizon = config.epochs * self.batches.steps_per_epoch
        elif config.max_seconds is not None:
            self.horizon = sys.maxsize  # the time budget ends the run
        else:
            raise ValueError("set max_steps, epochs or max_seconds")
        if config.start_step and not config.init:
            raise ValueError("start_step continues a run from its exported encoder: set init too")
        if config.start_step >= self.horizon:
            raise ValueError(
                f"start_step {config.start_step} leaves nothing to train: max_steps is the whole run's "
                f"end step ({self.horizon}), not the steps of this leg"
            )
        if config.freeze_encoder_steps and info.world_size > 1:
            raise ValueError("freeze_encoder_steps works in a single process only (not under torchrun)")
        self.clock = time.process_time if config.budget_clock == "process" else time.perf_counter
        #: Seconds of training steps so far (on ``config.budget_clock``), kept across resumes.
        self.train_seconds = 0.0

        torch.manual_seed(config.seed + info.rank)
        np.random.seed(config.seed + info.rank)
        random.seed(config.seed + info.rank)
        preset = EncoderConfig.from_preset(config.architecture).to_dict()
        encoder_config = EncoderConfig.from_dict({**preset, **config.encoder})
        load_plugins(config.plugins)
        workers = (
            [WorkerConfig.from_dict(w) for w in config.workers]
            if config.workers is not None
            else preset_workers(config.architecture)
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
        except (RuntimeError, TypeError, AttributeError) as err:
            raise ValueError(
                f"{self.resumed_from} does not fit the configured model (changed --model or "
                f"--encoder?): {str(err).splitlines()[0]}"
            ) from None
        try:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.step = int(checkpoint["step"])
            self.train_seconds = float(checkpoint.get("train_seconds", 0.0))
            self.batches.load_state_dict(checkpoint["data"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(
                f"{self.resumed_from}: its optimizer or data state does not fit this run "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
            ) from None
        if self.info.is_main:
            say(f"resuming {self.out} after step {self.step} (data {checkpoint['data']})")
        rng = checkpoint["rng"]
        if len(rng) == self.info.world_size:
            set_rng_state(rng[self.info.rank], self.distortion_gen)
        elif self.info.is_main:
            say(
                f"resuming a {len(rng)}-process run with {self.info.world_size}: the data "
                "position is kept, random draws restart from the seed"
            )

    def _checkpoint(self) -> None:
        rng = [rng_state(self.distortion_gen)]
        if self.info.world_size > 1:
            # DDP broadcasts rank 0's buffers (BatchNorm running statistics) before every forward,
            # then each rank updates them from its own batch; doing that broadcast now leaves
            # every rank with the state the next step would use, so ranks agree and resume is exact.
            for buffer in self.model.buffers():
                dist.broadcast(buffer, 0)
            rng = gather(rng[0], self.info)
        if not self.info.is_main:
            return
        state = {
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
        write_checkpoint(self.out, state)

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
        interferer = batch.rand.roll(1, 0)
        distorted = self.distorter(batch.chunk, other=interferer, generator=generator)
        ctxt, rand = batch.ctxt, None if self.config.rand_from_batch else batch.rand
        if self.config.distort_context:  # new draws for each; rand from the batch is a distorted ctxt
            ctxt = self.distorter(ctxt, other=interferer, generator=generator)
            rand = None if rand is None else self.distorter(rand, other=interferer, generator=generator)
        autocast: tp.ContextManager[object] = contextlib.nullcontext()
        if self.autocast_dtype is not None:
            autocast = torch.autocast(self.info.device.type, dtype=self.autocast_dtype)
        with autocast:
            return module(distorted, batch.chunk, ctxt, rand)

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
        return self.step >= self.horizon or any_rank(spent, self.info)

    def run(self) -> int:
        """Train up to ``horizon`` steps (or ``max_seconds``) or until SIGINT/SIGTERM; returns the
        exit code."""
        info = self.info
        log = RunLog(self, resumed=self.resumed) if info.is_main else None
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
                if any_rank(stop.requested, info):
                    interrupted = True
                    break
                if self.step % self.config.ckpt_every == 0 and not done:
                    self._checkpoint()
            self._checkpoint()
        if log is not None:
            log.close()
        if interrupted:
            if info.is_main:
                say(f"interrupted at step {self.step}; checkpoint saved, continue with --resume")
            return stop.exit_code
        if info.is_main:
            self.model.encoder.save_pretrained(self.out / "encoder")
            say(f"done at step {self.step}; encoder saved to {self.out / 'encoder'}")
        barrier(info)  # ranks leave together: no rank tears its process group down mid-save
        return 0
