"""Self-supervised training: :class:`TrainConfig` and its presets (``config``), the loop
(``loop``), checkpoints (``checkpoint``), logs (``logs``) and the ``pase train`` command (``cli``,
whose docstring is the command's ``--help``: the run folder, resume, the schedule and DDP).
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
