"""The README's example of a user-written worker, loaded as a plugin by the tests."""

import torch

from pase.workers import Regressor, register_worker


@register_worker("log_energy")
class LogEnergy(Regressor):
    """Predict the log energy of 25 ms frames (1-d) of the clean chunk."""

    @property
    def target_dim(self) -> int:
        return 1

    def compute_target(self, wav: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, F, 1]
        frames = torch.nn.functional.pad(wav, (200, 200)).unfold(-1, 400, 160)
        n_frames = -(-wav.shape[-1] // 160)  # the encoder's ceil(T / 160)
        return frames[:, :n_frames].pow(2).mean(-1, keepdim=True).add(1e-8).log()
