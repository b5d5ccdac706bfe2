"""ASR probe pieces on hand-made examples: alphabet, normalisation, CTC decoding, WER and CER."""

from __future__ import annotations

import pytest
import torch

from pase.eval import asr


def test_alphabet_is_blank_space_apostrophe_and_letters() -> None:
    assert asr.VOCAB_SIZE == 29 and asr.BLANK == 0
    assert asr.CHARS[:2] == " '" and asr.CHARS[2:] == "abcdefghijklmnopqrstuvwxyz"
    assert asr.encode("a b'") == [3, 1, 4, 2]
    assert asr.decode(asr.encode("don't stop")) == "don't stop"
    with pytest.raises(ValueError, match="normalise"):
        asr.encode("A")


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("HE HOPED THERE WOULD BE STEW", "he hoped there would be stew"),
        ("THE BROTHELS' DOOR DON'T", "the brothels' door don't"),
        ("  Hello,  world!\n2 times ", "hello world times"),
        ("", ""),
    ],
)
def test_normalise_maps_librispeech_text_onto_the_alphabet(raw: str, clean: str) -> None:
    assert asr.normalise(raw) == clean
    asr.encode(clean)  # everything left is in the alphabet


def _one_hot(ids: list[int]) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(ids), asr.VOCAB_SIZE).float()


def test_greedy_decoding_merges_repeats_then_drops_blanks() -> None:
    a, b = asr.encode("ab")
    # a a _ a b b _ -> "aab": the blank separates the two a's, the b's merge
    assert asr.decode(asr.greedy_decode(_one_hot([a, a, 0, a, b, b, 0]))) == "aab"
    assert asr.greedy_decode(_one_hot([0, 0, 0])) == []
    assert asr.greedy_decode(torch.tensor([a, b, b, a])) == [a, b, a]  # ids work as well as logits
    # frames past the length (padding) are ignored
    assert asr.greedy_decode(_one_hot([a, 0, b, b]), length=2) == [a]


def test_edit_distance_on_known_pairs() -> None:
    assert asr.edit_distance("kitten", "sitting") == 3
    assert asr.edit_distance("", "abc") == 3 and asr.edit_distance("abc", "") == 3
    assert asr.edit_distance("abc", "abc") == 0
    assert asr.edit_distance("ab", "ba") == 2
    assert asr.edit_distance("abcdef", "azced") == 3  # b->z, drop d, f->d
    assert asr.edit_distance("a b c".split(), "a c".split()) == 1


def test_wer_and_cer_are_corpus_level_fractions() -> None:
    assert asr.wer(["a b c"], ["a c"]) == pytest.approx(1 / 3)
    assert asr.wer(["a b c", "d"], ["a c", "e f"]) == pytest.approx(3 / 4)  # (1 + 2) / (3 + 1)
    assert asr.cer(["abc"], ["abd"]) == pytest.approx(1 / 3)
    assert asr.cer(["ab cd"], ["abcd"]) == pytest.approx(1 / 5)  # the space counts
    # a blank output deletes everything: both rates are exactly 1
    assert asr.wer(["the cat", "sat"], ["", ""]) == 1.0 and asr.cer(["the cat", "sat"], ["", ""]) == 1.0
    assert asr.wer(["a"], ["b c d"]) == 3.0  # insertions can take it above 1
    with pytest.raises(ValueError, match="hypotheses"):
        asr.wer(["a"], [])


def test_length_batches_bound_the_padded_frames() -> None:
    import numpy as np

    lengths = np.array([50, 10, 300, 20, 40, 500])
    batches = asr.length_batches(lengths, batch_frames=100, max_batch=3)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        assert len(b) == 1 or max(lengths[b]) * len(b) <= 100
        assert len(b) <= 3
