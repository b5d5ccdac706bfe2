"""The ASR alphabet and transcripts in it: :data:`CHARS` (space, apostrophe, a-z; index 0 of a
CTC probe's output is the blank), :func:`normalise` maps a transcript onto it, :func:`encode`
and :func:`decode` convert text to class indices and back. Used by the ASR task definition
(:func:`pase.eval.tasks.librispeech_asr`) and the ASR probes alike.
"""

from __future__ import annotations

import re
import typing as tp

#: Output characters; the probe's class ``i + 1`` is ``CHARS[i]`` and class 0 is the CTC blank.
CHARS = " '" + "abcdefghijklmnopqrstuvwxyz"
BLANK = 0
VOCAB_SIZE = len(CHARS) + 1
_INDEX = {c: i + 1 for i, c in enumerate(CHARS)}
_OUTSIDE = re.compile(r"[^a-z']+")


def normalise(text: str) -> str:
    """A transcript in the probe's alphabet: lower case, letters and apostrophes; anything else
    (punctuation, digits, line breaks) separates words; single spaces, no edge spaces.

    ``"HE HOPED THERE WOULD BE STEW"`` -> ``"he hoped there would be stew"``;
    ``"Don't  stop!"`` -> ``"don't stop"``.
    """
    return " ".join(_OUTSIDE.sub(" ", text.lower()).split())


def encode(text: str) -> list[int]:
    """Class indices of a normalised transcript (raises ``ValueError`` on a foreign character)."""
    try:
        return [_INDEX[c] for c in text]
    except KeyError as exc:
        raise ValueError(f"character {exc.args[0]!r} is not in the ASR alphabet; normalise() first") from None


def decode(ids: tp.Iterable[int]) -> str:
    """Class indices (no blanks) -> text."""
    return "".join(CHARS[i - 1] for i in ids)
