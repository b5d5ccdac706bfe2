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

from pase.train.checkpoint import CHECKPOINT, CHECKPOINT_FORMAT
from pase.train.cli import config_from_args, register_cli
from pase.train.config import PRESETS, TrainConfig, load_config_file
from pase.train.logs import CsvLog, data_manifest, write_data_record
from pase.train.loop import Trainer, learning_rate_factor, select_workers

__all__ = [
    "CHECKPOINT",
    "CHECKPOINT_FORMAT",
    "PRESETS",
    "CsvLog",
    "TrainConfig",
    "Trainer",
    "config_from_args",
    "data_manifest",
    "learning_rate_factor",
    "load_config_file",
    "register_cli",
    "select_workers",
    "write_data_record",
]
