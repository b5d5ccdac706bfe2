"""PASE / PASE+ self-supervised speech encoders.

>>> import pase, torch
>>> encoder = pase.Encoder.from_config("pase+").eval()
>>> encoder(torch.randn(2, 32000)).shape
torch.Size([2, 200, 256])
"""

from pase.audio import MIN_SAMPLES, SAMPLE_RATE, AudioError, load_audio
from pase.encoder import Encoder, EncoderConfig

__version__ = "0.1.0"

__all__ = [
    "Encoder",
    "EncoderConfig",
    "AudioError",
    "load_audio",
    "MIN_SAMPLES",
    "SAMPLE_RATE",
    "__version__",
]
