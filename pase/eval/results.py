"""The record of one evaluation run, :class:`TaskResult`, and how it reads and writes as JSON.

A result says what it is in two fields:

- :attr:`TaskResult.kind`: ``"classification"`` (utterance and frame tasks: ``accuracy`` and
  ``macro_f1``), ``"asr"`` (characters: ``wer`` and ``cer``, with a word n-gram ``wer_lm`` and
  ``cer_lm`` too) or ``"phone"`` (phones: ``per``);
- :attr:`TaskResult.stage`: ``"frozen"`` (a probe on cached features: :mod:`pase.eval.benchmark`,
  :mod:`pase.eval.asr`) or ``"finetuned"`` (:mod:`pase.eval.finetune`); the fine-tuned record
  of a frozen run is its :attr:`TaskResult.finetuned`.

``results.json`` and the ``summary*.json`` files hold :meth:`TaskResult.to_dict`, the flat layout
they have always had: neither field is written, the keys tell the kinds apart.
:meth:`TaskResult.from_dict` reads such a file back (:func:`kind_of` is the one place that reads
a kind from the keys).
"""

from __future__ import annotations

import dataclasses
import json
import typing as tp

Kind = tp.Literal["classification", "asr", "phone"]
Stage = tp.Literal["frozen", "finetuned"]

#: The headline metrics a result of each kind may carry, in the order tables print them; each is
#: a mean over seeds, with its sample standard deviation under ``<metric>_std``.
METRICS: dict[Kind, tuple[str, ...]] = {
    "classification": ("accuracy", "macro_f1"),
    "asr": ("wer", "cer", "wer_lm", "cer_lm"),
    "phone": ("per",),
}

#: The metric a one-number comparison quotes (frozen vs fine-tuned): what fine-tuning selects on.
MAIN_METRIC: dict[Kind, str] = {"classification": "accuracy", "asr": "cer", "phone": "per"}

#: Where the files put some of :attr:`TaskResult.details`: before ``per_seed``, and after
#: ``seconds``; the other details go between ``seeds`` and ``seconds``.
_BEFORE_SEEDS = ("layer_weights", "lm", "finetune_config")
_AFTER_SECONDS = ("n_test_phones", "excluded")
_COMMON = ("task", "features", "probe", "layers", "distort", "per_seed", "seeds", "seconds", "finetuned")


def kind_of(data: tp.Mapping[str, tp.Any]) -> Kind:
    """The kind of a result as the files write it (a fine-tuned record included)."""
    if "per" in data:
        return "phone"
    return "asr" if "wer" in data else "classification"


@dataclasses.dataclass
class TaskResult:
    """One (task, feature set, test condition) run: the headline scores and what they came from."""

    kind: Kind
    task: str
    features: str
    probe: str
    layers: str
    #: the test condition (``--distort``), None for clean audio
    distort: str | None
    #: headline means over seeds and their ``*_std``, e.g. ``{"wer": .., "wer_std": .., "cer": ..}``
    scores: dict[str, float]
    per_seed: list[dict[str, tp.Any]]
    seeds: list[int]
    #: wall time of the run
    seconds: float
    #: the kind's other fields, in file order: counts (``n_train``, ...), ``classes``,
    #: ``skipped_files``, ``layer_weights``, ``examples``, ``lm``, ``finetune_config``, ...
    details: dict[str, tp.Any] = dataclasses.field(default_factory=dict)
    stage: Stage = "frozen"
    #: the fine-tuned run that followed this frozen one (``pase eval --finetune``)
    finetuned: TaskResult | None = None

    @property
    def metrics(self) -> list[str]:
        """The headline metrics this result carries, in table order (``["wer", "cer"]``)."""
        return [m for m in METRICS[self.kind] if m in self.scores]

    @property
    def skipped_files(self) -> dict[str, str]:
        """Unreadable files left out of the run: ``{path: problem}``."""
        return tp.cast(dict[str, str], self.details.get("skipped_files", {}))

    def to_dict(self) -> dict[str, tp.Any]:
        """The record as ``results.json`` holds it: the same keys, in the same order, as always."""
        head = {k: getattr(self, k) for k in ("task", "features", "probe", "layers", "distort")}
        first = {k: v for k, v in self.details.items() if k in _BEFORE_SEEDS}
        last = {k: v for k, v in self.details.items() if k in _AFTER_SECONDS}
        middle = {k: v for k, v in self.details.items() if k not in first and k not in last}
        frozen = self.stage == "frozen"
        out = {
            **head,
            **(self.scores if frozen else {}),
            **first,
            "per_seed": self.per_seed,
            "seeds": self.seeds,
            **middle,
            "seconds": self.seconds,
            **last,
            **({} if frozen else self.scores),
        }
        if self.finetuned is not None:
            out["finetuned"] = self.finetuned.to_dict()
        return out

    def to_json(self) -> str:
        """``results.json``'s text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: tp.Mapping[str, tp.Any]) -> TaskResult:
        """A record read back from ``results.json`` or a summary row (files of any version)."""
        kind = kind_of(data)
        score_keys = {f"{m}{s}" for m in METRICS[kind] for s in ("", "_std")}
        tuned = data.get("finetuned")
        return cls(
            kind=kind,
            task=data["task"],
            features=data["features"],
            probe=data["probe"],
            layers=data["layers"],
            distort=data["distort"],
            scores={k: v for k, v in data.items() if k in score_keys},
            per_seed=list(data["per_seed"]),
            seeds=list(data["seeds"]),
            seconds=data["seconds"],
            details={k: v for k, v in data.items() if k not in score_keys and k not in _COMMON},
            stage="finetuned" if "finetune_config" in data else "frozen",
            finetuned=cls.from_dict(tuned) if tuned else None,
        )


def summary_json(results: tp.Iterable[TaskResult]) -> str:
    """A ``summary_*.json`` file's text: the records as a list."""
    return json.dumps([r.to_dict() for r in results], indent=2) + "\n"
