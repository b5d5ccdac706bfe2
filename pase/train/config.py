"""What defines a training run: :class:`TrainConfig`, its presets, and config files.

A preset is a named constructor (``TrainConfig.pase_plus()``, ``--preset pase+``); a config file
(JSON or YAML) and the command line then change single fields. Every run writes its config to
``config.json`` beside its checkpoint, and a resumed run starts from that file.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import typing as tp
from pathlib import Path

from pase.audio import MIN_SAMPLES
from pase.data import MIN_SECONDS
from pase.distortions import DistortionConfig

#: The names ``--preset`` takes (``TrainConfig.from_preset`` also accepts ``pase_plus``-style aliases).
PRESETS = ("pase+", "pase+cpu", "pase+cpu-bilinear", "pase+v3", "pase")


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults are the PASE+ recipe (spec section 5)."""

    #: Model preset for :meth:`pase.workers.PaseModel.from_preset`: encoder + worker set.
    architecture: str = "pase+"
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
    #: Where ``ctxt`` comes from for a file shorter than two chunks, which has no window disjoint
    #: from the anchor: "file" (the reference: an overlapping window of the same file) or
    #: "speaker" (ours: another file of the same speaker, when it has one). See ``pase.data.ChunkBatches``.
    ctxt_source: tp.Literal["file", "speaker"] = "file"
    #: Distort ``ctxt`` and ``rand`` too, each with its own draws (ours, an ablation variant). The
    #: reference distorts only the anchor, so LIM/GIM compare a distorted anchor with clean
    #: chunks; with both sides distorted independently their positives are two differently
    #: distorted views of one speaker, and "is it distorted" cannot tell positives from negatives.
    #: Aimed at speaker identity under reverberation (recipes/pase_plus_v3). False: the reference.
    distort_context: bool = False
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
            architecture="pase",
            batch_size=32,
            encoder_lr=5e-4,
            workers_lr=5e-4,
            lr_schedule="step",
            distortions=DistortionConfig.none(),
        )

    @classmethod
    def pase_plus_cpu(cls) -> TrainConfig:
        """PASE+ for a CPU budget (``--preset pase+cpu``): the reference recipe without the
        waveform decoder, at batch 4; everything else (11 workers, MLP discriminator heads, three
        chunks, distortions, Adam 1e-3 / 5e-4, poly decay) is the reference. On 2 CPU cores the
        decoder sent the encoder almost no gradient and cost 30 % of a step, so dropping it buys
        more steps in the same time, and ``pase ablate`` found that the better trade downstream.
        The measurements: ``recipes/cpu_recipe_ablation/README.md``.
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
        symmetric) against every negative of the batch (InfoNCE), LIM on 20-frame means; nothing
        else changes. With the reference heads LIM stayed near chance for the whole CPU budget;
        these learn within it, and it is not the ``pase+cpu`` default because its downstream
        effect at equal CPU time is not measured. The discriminator-budget runs:
        ``recipes/pase_plus_v2/README.md``.
        """
        return cls.pase_plus_cpu().updated({"worker_options": copy.deepcopy(cls.BILINEAR_DISCRIMINATORS)})

    #: The LPS pair of ``pase+v3`` (``worker_options``): a 512-point FFT instead of 2048.
    LPS_512: tp.ClassVar[dict[str, dict[str, tp.Any]]] = {
        "lps": {"target": "lps_512"},
        "lps_long": {"target": "lps_long_512"},
    }

    @classmethod
    def pase_plus_v3(cls) -> TrainConfig:
        """PASE+ v3's recipe (``--preset pase+v3``): ``pase+cpu`` with ``distort_context`` (the
        LIM/GIM ``ctxt`` and ``rand`` chunks distorted too, each with its own draw, so that the
        discriminators' positives are two differently distorted views of one speaker) and the LPS
        pair on a 512-point FFT (257 bins per frame instead of 1025; the reference's 2048-point
        heads cost 25 % of a step). Chosen by ``pase ablate``, continuing v2 on v3's data; the
        table and the reasons: ``recipes/pase_plus_v3/README.md``.
        """
        return cls.pase_plus_cpu().updated(
            {"distort_context": True, "worker_options": copy.deepcopy(cls.LPS_512)}
        )

    @classmethod
    def from_preset(cls, name: str) -> TrainConfig:
        presets = {
            "pase+": cls.pase_plus,
            "pase_plus": cls.pase_plus,
            "pase+cpu": cls.pase_plus_cpu,
            "pase_plus_cpu": cls.pase_plus_cpu,
            "pase+cpu-bilinear": cls.pase_plus_cpu_bilinear,
            "pase+v3": cls.pase_plus_v3,
            "pase_plus_v3": cls.pase_plus_v3,
            "pase": cls.pase,
        }
        if name not in presets:
            choices = ", ".join(map(repr, PRESETS))
            raise ValueError(f"unknown training preset {name!r}; choose from {choices}")
        return presets[name]()

    def to_dict(self) -> dict[str, tp.Any]:
        return dataclasses.asdict(self)

    #: Old names of fields, still read (config files, config.json and checkpoints of older runs).
    RENAMED: tp.ClassVar[dict[str, str]] = {"model": "architecture"}

    def updated(self, overrides: tp.Mapping[str, tp.Any]) -> TrainConfig:
        """A copy with ``overrides`` applied; a nested ``distortions`` dict updates field-wise."""
        values = {self.RENAMED.get(k, k): v for k, v in overrides.items()}
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        if isinstance(values.get("distortions"), tp.Mapping):
            merged = {**self.distortions.to_dict(), **values["distortions"]}
            values["distortions"] = DistortionConfig.from_dict(merged)
        return dataclasses.replace(self, **values)

    @classmethod
    def from_dict(cls, d: tp.Mapping[str, tp.Any]) -> TrainConfig:
        return cls().updated(d)

    #: Fields that count something and must be at least 1 (0 would divide by zero or never stop).
    AT_LEAST_ONE: tp.ClassVar[tuple[str, ...]] = (
        "batch_size", "max_steps", "epochs", "log_every", "valid_every", "ckpt_every",
        "halve_every_epochs", "valid_batches", "stats_batches",
    )  # fmt: skip
    #: Fields that must be at least 0.
    AT_LEAST_ZERO: tp.ClassVar[tuple[str, ...]] = (
        "encoder_lr", "workers_lr", "weight_decay", "poly_power", "start_step", "freeze_encoder_steps",
        "min_seconds", "num_threads",
    )  # fmt: skip
    #: The longest chunk (60 s): longer ones fill memory before the first step, not a recipe.
    MAX_CHUNK_SIZE = 60 * 16000

    def validate(self, spell: tp.Callable[[str], str] = str) -> None:
        """Refuse values no run can use, before anything is read or built: a ``ValueError`` that
        names the field (as ``spell(field)`` writes it: the CLI spells its options) and the value."""
        for name in self.AT_LEAST_ONE:
            value = getattr(self, name)
            if value is not None and not _number(value, 1):
                raise ValueError(f"{spell(name)} must be at least 1, got {value}")
        for name in self.AT_LEAST_ZERO:
            if not _number(getattr(self, name), 0):
                raise ValueError(f"{spell(name)} must be at least 0, got {getattr(self, name)}")
        if not (_number(self.valid_fraction, 0) and self.valid_fraction < 1):
            raise ValueError(
                f"{spell('valid_fraction')} must be at least 0 and below 1 (a fraction held out), "
                f"got {self.valid_fraction}"
            )
        if not (_number(self.chunk_size, MIN_SAMPLES) and self.chunk_size <= self.MAX_CHUNK_SIZE):
            raise ValueError(
                f"{spell('chunk_size')} must be from {MIN_SAMPLES} to {self.MAX_CHUNK_SIZE} samples, "
                f"got {self.chunk_size}"
            )
        if self.num_workers < -1:
            raise ValueError(f"{spell('num_workers')} must be at least -1 (auto), got {self.num_workers}")
        for name in ("grad_clip", "max_seconds"):
            value = getattr(self, name)
            if value is not None and not (_number(value, 0) and value > 0):
                raise ValueError(f"{spell(name)} must be positive, got {value}")
        if not isinstance(self.encoder, dict):
            raise ValueError(f"{spell('encoder')} must map EncoderConfig fields, not {self.encoder!r}")
        from pase.encoder import EncoderConfig

        try:
            preset = EncoderConfig.from_preset(self.architecture).to_dict()
            EncoderConfig.from_dict({**preset, **self.encoder})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{spell('encoder')} {json.dumps(self.encoder)}: {err}") from None


def _number(value: tp.Any, least: float) -> bool:
    """Whether ``value`` is a finite number of at least ``least``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return math.isfinite(value) and value >= least


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
