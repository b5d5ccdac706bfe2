"""Beam-search decoding of the character probe's outputs with a word n-gram (``pase eval --lm``).

:class:`LmDecoder` runs pyctcdecode with a KenLM model (an ARPA file, which
:mod:`pase.eval.ngram` builds from text) over one utterance's log-probabilities and returns a
normalised transcript; :class:`LmConfig` holds the model's path and the search's weights.
Greedy (best-path) decoding is :func:`pase.eval.ctc.greedy_decode`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from pase.eval.text import CHARS, normalise


@dataclasses.dataclass(frozen=True)
class LmConfig:
    """Beam search with a word n-gram over the character probe's outputs (pyctcdecode + KenLM).

    ``path``: an ARPA file (or a KenLM binary); :mod:`pase.eval.ngram` builds one from text.
    ``alpha`` weighs the LM's log-probability, ``beta`` is a bonus per word (it offsets the
    LM's pull towards fewer, shorter words); pyctcdecode's defaults.
    """

    path: Path
    alpha: float = 0.5
    beta: float = 1.0
    beam_width: int = 64


class LmDecoder:
    """``log_probs: [F, V]`` of one utterance (numpy) -> the best transcript under the n-gram."""

    def __init__(self, config: LmConfig) -> None:
        try:
            from pyctcdecode import build_ctcdecoder
        except ImportError as exc:
            raise ImportError("--lm needs pyctcdecode and kenlm: pip install 'pase-speech[asr]'") from exc
        if not Path(config.path).is_file():
            raise FileNotFoundError(f"language model {config.path} not found")
        self.config = config
        # pyctcdecode reads the blank as "" and the word separator as " "; the unigram list
        # (which words exist) comes from the ARPA file's 1-grams
        self.decoder = build_ctcdecoder(
            ["", *CHARS], kenlm_model_path=str(config.path), alpha=config.alpha, beta=config.beta
        )

    def set_weights(self, alpha: float, beta: float) -> None:
        """Change the LM weight and the word bonus without reading the model again."""
        self.decoder.reset_params(alpha=alpha, beta=beta)
        self.config = dataclasses.replace(self.config, alpha=alpha, beta=beta)

    def __call__(self, log_probs: np.ndarray) -> str:
        return normalise(self.decoder.decode(np.asarray(log_probs), beam_width=self.config.beam_width))
