"""``pase.eval.results.TaskResult``: each kind writes the ``results.json`` layout it always had, and
reads back from it (files written before the record existed included)."""

from __future__ import annotations

import json
import typing as tp

import pytest

from pase.eval.results import TaskResult, kind_of

HEAD = {"task": "t", "features": "mfcc", "probe": "mlp", "layers": "final", "distort": None}
PER_SEED: list[dict[str, tp.Any]] = [{"seed": 0}]

#: The key order of each layout, as pase eval wrote it before TaskResult.
CLASSIFICATION = [*HEAD, "accuracy", "accuracy_std", "macro_f1", "macro_f1_std", "layer_weights",
                  "per_seed", "seeds", "n_train", "n_valid", "n_test", "unit", "n_files", "skipped_files",
                  "n_classes", "classes", "seconds"]  # fmt: skip
ASR_LM = [*HEAD, "wer", "wer_std", "cer", "cer_std", "wer_lm", "wer_lm_std", "cer_lm", "cer_lm_std", "lm",
          "per_seed", "seeds", "probe_config", "n_train", "n_valid", "n_test", "unit", "n_test_words",
          "n_test_chars", "test_speakers", "examples", "seconds"]  # fmt: skip
PHONE = [*HEAD, "per", "per_std", "lm", "per_seed", "seeds", "probe_config", "n_train", "n_valid", "n_test",
         "unit", "test_speakers", "examples", "seconds", "n_test_phones", "excluded"]  # fmt: skip
FINETUNED = [*HEAD, "finetune_config", "per_seed", "seeds", "saved_encoder", "seconds", "wer", "wer_std",
             "cer", "cer_std"]  # fmt: skip


def _file(keys: list[str]) -> dict[str, tp.Any]:
    """A result as the files hold it: ``keys`` in that order, with placeholder values."""
    fixed = {**HEAD, "per_seed": PER_SEED, "seeds": [0], "seconds": 1.5}
    return {k: fixed.get(k, f"<{k}>") for k in keys}


@pytest.mark.parametrize(
    ("keys", "kind", "stage"),
    [
        (CLASSIFICATION, "classification", "frozen"),
        (ASR_LM, "asr", "frozen"),
        (PHONE, "phone", "frozen"),
        (FINETUNED, "asr", "finetuned"),
    ],
)
def test_each_layout_reads_back_and_writes_the_same_keys_in_the_same_order(
    keys: list[str], kind: str, stage: str
) -> None:
    data = _file(keys)
    result = TaskResult.from_dict(data)
    assert (result.kind, result.stage, result.finetuned) == (kind, stage, None)
    assert list(result.to_dict()) == keys and result.to_dict() == data
    assert result.to_json() == json.dumps(data, indent=2) + "\n"


def test_a_finetuned_record_is_nested_last_and_the_kinds_come_from_the_fields() -> None:
    frozen = TaskResult(
        kind="classification", task="t", features="enc", probe="mlp", layers="final", distort="reverb",
        scores={"accuracy": 0.9, "accuracy_std": 0.0, "macro_f1": 0.8, "macro_f1_std": 0.0},
        per_seed=PER_SEED, seeds=[0], seconds=2.0, details={"n_train": 4, "layer_weights": [1.0]},
    )  # fmt: skip
    tuned = TaskResult.from_dict(
        _file(FINETUNED[:-4] + ["accuracy", "accuracy_std", "macro_f1", "macro_f1_std"])
    )
    assert tuned.kind == "classification" and tuned.stage == "finetuned"
    frozen.finetuned = tuned
    data = frozen.to_dict()
    assert list(data) == [*HEAD, "accuracy", "accuracy_std", "macro_f1", "macro_f1_std", "layer_weights",
                          "per_seed", "seeds", "n_train", "seconds", "finetuned"]  # fmt: skip
    assert data["finetuned"] == tuned.to_dict() and TaskResult.from_dict(data) == frozen
    assert frozen.metrics == ["accuracy", "macro_f1"] and frozen.skipped_files == {}
    assert [kind_of({"per": 0.1}), kind_of({"wer": 0.1}), kind_of({"accuracy": 0.1})] == [
        "phone", "asr", "classification",
    ]  # fmt: skip


def test_files_older_than_the_newest_fields_read_back() -> None:
    """The first results.json (no layer_weights, skipped_files) and ASR file (no lm) still read."""
    old = _file([k for k in CLASSIFICATION if k not in ("layer_weights", "skipped_files")])
    result = TaskResult.from_dict(old)
    assert result.kind == "classification" and result.skipped_files == {} and result.to_dict() == old
    old_asr = _file([k for k in ASR_LM if k not in ("lm", "wer_lm", "wer_lm_std", "cer_lm", "cer_lm_std")])
    assert TaskResult.from_dict(old_asr).metrics == ["wer", "cer"]
    assert list(TaskResult.from_dict(old_asr).to_dict()) == list(old_asr)
