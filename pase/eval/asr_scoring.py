"""Error rates of transcripts against references: :func:`wer`, :func:`cer` (and PER: :func:`wer`
over phone labels), :func:`edit_distance`, all through jiwer.

Corpus level: edits summed over utterances divided by the summed reference length, so long
utterances weigh more, as every ASR toolkit reports it. Text only: no model, no torch.
"""

from __future__ import annotations

import typing as tp


def edit_distance(ref: str | tp.Sequence[str], hyp: str | tp.Sequence[str]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1), by jiwer.

    Two strings are compared character by character (spaces included), two lists of words word
    by word.
    """
    if isinstance(ref, str) and isinstance(hyp, str):
        return error_counts([ref], [hyp], "char")[0]
    return error_counts([" ".join(ref)], [" ".join(hyp)], "word")[0]


def error_counts(
    refs: tp.Sequence[str], hyps: tp.Sequence[str], unit: tp.Literal["word", "char"]
) -> tuple[int, int]:
    """``(edits, reference length)`` summed over utterances, in words or characters (spaces count)."""
    import jiwer

    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        return 0, 0
    if unit == "char":
        # every character counts, edge spaces too: jiwer's default would strip them first
        chars = jiwer.ReduceToListOfListOfChars()
        out: jiwer.CharacterOutput | jiwer.WordOutput = jiwer.process_characters(
            list(refs), list(hyps), reference_transform=chars, hypothesis_transform=chars
        )
        total = sum(len(r) for r in refs)
    else:
        out = jiwer.process_words(list(refs), list(hyps))
        total = sum(len(r.split()) for r in refs)
    return int(out.substitutions + out.deletions + out.insertions), total


def wer(refs: tp.Sequence[str], hyps: tp.Sequence[str]) -> float:
    """Word error rate, a fraction: ``wer(["a b c"], ["a c"]) == 1 / 3``. A blank output scores 1."""
    edits, total = error_counts(refs, hyps, "word")
    return edits / max(total, 1)


def cer(refs: tp.Sequence[str], hyps: tp.Sequence[str]) -> float:
    """Character error rate, a fraction (spaces are characters). A blank output scores 1."""
    edits, total = error_counts(refs, hyps, "char")
    return edits / max(total, 1)
