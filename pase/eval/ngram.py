"""Word n-gram language models in ARPA format, for ``pase eval --lm``: built from plain text.

KenLM's ``lmplz`` is not packaged for this platform (no Debian package; the ``kenlm`` Python
module only reads models), so :func:`build_arpa` estimates an **interpolated Witten-Bell**
model itself and writes it in the standard ARPA format, which KenLM (and so pyctcdecode) loads.

Each sentence is ``<s> w1 ... wn </s>``. For a context ``h`` seen ``c(h)`` times, followed by
``T(h)`` distinct words, and ``h'`` the context without its first word::

    P(w | h) = (c(h w) + T(h) * P(w | h')) / (c(h) + T(h))

down to the unigrams, which interpolate with a uniform distribution over the vocabulary plus
``<unk>``. A word never seen after ``h`` gets ``T(h) / (c(h) + T(h)) * P(w | h')``: that factor
is ``h``'s ARPA back-off weight, so the ARPA file stores exactly this model.

Command line: ``python -m pase.eval.ngram TEXT --order 3 --out LM.arpa`` (one sentence per line,
normalised like the ASR transcripts).
"""

from __future__ import annotations

import argparse
import math
import typing as tp
from collections import Counter, defaultdict
from pathlib import Path

from pase.eval.text import normalise

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
#: log10 probability ARPA files give ``<s>``, which is never predicted.
NEVER = -99.0


def count_ngrams(sentences: tp.Iterable[str], order: int) -> list[Counter[tuple[str, ...]]]:
    """``counts[n - 1][ngram]``: occurrences of every n-gram, ``n = 1 .. order``, with sentence marks."""
    counts: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(order)]
    for sentence in sentences:
        words = [BOS, *sentence.split(), EOS]
        for n in range(1, order + 1):
            for i in range(len(words) - n + 1):
                counts[n - 1][tuple(words[i : i + n])] += 1
    return counts


Probs = list[dict[tuple[str, ...], float]]
Backoff = dict[tuple[str, ...], float]


def witten_bell(counts: list[Counter[tuple[str, ...]]]) -> tuple[Probs, Backoff]:
    """Interpolated Witten-Bell probabilities of every seen n-gram and back-off weight of every
    seen context: ``(probs[n - 1][ngram], backoff[context])``, natural probabilities (not logs)."""
    order = len(counts)
    vocab = sorted({w for (w,) in counts[0] if w != BOS} | {UNK})
    # how often each context was followed by something, and by how many distinct words
    ctx_total: dict[tuple[str, ...], int] = defaultdict(int)
    ctx_types: dict[tuple[str, ...], int] = defaultdict(int)
    for n in range(order):
        for gram, c in counts[n].items():
            ctx_total[gram[:-1]] += c
            ctx_types[gram[:-1]] += 1
    # the empty context predicts every position but <s>
    ctx_total[()] -= counts[0][(BOS,)]
    ctx_types[()] -= 1 if (BOS,) in counts[0] else 0

    # the weight of the lower order: the back-off weight of every context
    backoff = {ctx: ctx_types[ctx] / (ctx_total[ctx] + ctx_types[ctx]) for ctx in ctx_types if ctx}
    probs: Probs = [{} for _ in range(order)]
    uniform = 1.0 / len(vocab)
    for w in vocab:
        c = counts[0].get((w,), 0)
        probs[0][(w,)] = (c + ctx_types[()] * uniform) / (ctx_total[()] + ctx_types[()])
    for n in range(1, order):
        for gram, c in counts[n].items():
            ctx = gram[:-1]
            lower = probability(probs, backoff, gram[1:])
            probs[n][gram] = (c + ctx_types[ctx] * lower) / (ctx_total[ctx] + ctx_types[ctx])
    return probs, backoff


def probability(probs: Probs, backoff: Backoff, gram: tuple[str, ...]) -> float:
    """``P(gram[-1] | gram[:-1])`` under the model, backing off as an ARPA reader does."""
    if len(gram) == 1:
        return probs[0].get(gram, probs[0][(UNK,)])
    if gram in probs[len(gram) - 1]:
        return probs[len(gram) - 1][gram]
    return backoff.get(gram[:-1], 1.0) * probability(probs, backoff, gram[1:])


def write_arpa(probs: Probs, backoff: Backoff, path: Path) -> None:
    """The model as an ARPA file: log10 probabilities and back-off weights, ``<s>`` at -99."""
    from pase.audio import write_atomic

    order = len(probs)
    grams = [dict(p) for p in probs]
    grams[0][(BOS,)] = 0.0  # listed (it has a back-off weight) but never predicted
    lines = ["", "\\data\\"] + [f"ngram {n + 1}={len(grams[n])}" for n in range(order)] + [""]
    for n in range(order):
        lines.append(f"\\{n + 1}-grams:")
        for gram in sorted(grams[n]):
            p = grams[n][gram]
            logp = NEVER if gram == (BOS,) else math.log10(p)
            row = f"{logp:.6f}\t{' '.join(gram)}"
            if n < order - 1 and gram in backoff:
                row += f"\t{math.log10(backoff[gram]):.6f}"
            lines.append(row)
        lines.append("")
    lines.append("\\end\\")

    def write(tmp: str) -> None:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")

    write_atomic(Path(path), write)


def build_arpa(sentences: tp.Iterable[str], order: int, path: Path) -> None:
    """Estimate an order-``order`` interpolated Witten-Bell model on ``sentences`` (normalised
    here like the ASR transcripts; empty ones skipped) and write it to ``path`` as ARPA."""
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    clean = [s for s in (normalise(line) for line in sentences) if s]
    if not clean:
        raise ValueError("no text to build a language model from")
    probs, backoff = witten_bell(count_ngrams(clean, order))
    write_arpa(probs, backoff, path)


def main(argv: tp.Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pase.eval.ngram",
        description="Build a word n-gram (interpolated Witten-Bell) ARPA file for pase eval --lm.",
    )
    p.add_argument("text", type=Path, help="text file, one sentence per line")
    p.add_argument("--order", type=int, default=3, help="n-gram order (default: 3)")
    p.add_argument("--out", type=Path, required=True, help="ARPA file to write")
    args = p.parse_args(argv)
    build_arpa(args.text.read_text(encoding="utf-8").splitlines(), args.order, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
