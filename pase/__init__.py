"""PASE / PASE+ self-supervised speech encoders.

>>> import pase, torch
>>> encoder = pase.Encoder.from_config("pase+").eval()
>>> encoder(torch.randn(2, 32000)).shape
torch.Size([2, 200, 256])

``pase.load_encoder(spec)`` loads any encoder a command takes by the same name (``"pase+"``, a
folder, a checkpoint, ``"random:pase+"``: see :mod:`pase.loading`).

``Encoder``, ``EncoderConfig`` and ``load_encoder`` are imported on first use, so ``import pase`` (and the
command line's ``pase --help``) do not pay for importing torch.
"""

import importlib
import typing as tp

from pase.audio import MIN_SAMPLES, SAMPLE_RATE, AudioError, load_audio

if tp.TYPE_CHECKING:
    from pase.encoder import Encoder, EncoderConfig
    from pase.loading import EncoderSpecError, load_encoder
    from pase.loss import FeatureLoss

__version__ = "0.1.0"

__all__ = [
    "Encoder",
    "EncoderConfig",
    "EncoderSpecError",
    "FeatureLoss",
    "load_encoder",
    "AudioError",
    "load_audio",
    "MIN_SAMPLES",
    "SAMPLE_RATE",
    "__version__",
]

_LAZY = {
    "Encoder": "pase.encoder",
    "EncoderConfig": "pase.encoder",
    "EncoderSpecError": "pase.loading",
    "FeatureLoss": "pase.loss",
    "load_encoder": "pase.loading",
}


def __getattr__(name: str) -> tp.Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'pase' has no attribute {name!r}")
