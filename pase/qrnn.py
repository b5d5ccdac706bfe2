"""Quasi-recurrent layer (Bradbury et al. 2017) in pure PyTorch: no CUDA kernel, CPU and GPU.

The original PASE+ needed a cupy/pynvrtc CUDA kernel that no longer builds; without it the model
could not be constructed at all. The recurrence

    c_t = f_t * z_t + (1 - f_t) * c_{t-1},    h_t = o_t * c_t

is linear in ``c``, so it can be evaluated without a step-by-step Python loop. Two
implementations are kept:

* ``loop``: the plain sequential reference, one step per frame.
* ``scan`` (the fast path, default): a two-level (square-root) chunked scan. Frames are cut
  into chunks of ``L ~ sqrt(T)``; all chunks run their ``L`` local steps at once (zero initial
  state, plus the running product of the decays), then ``T / L`` carry steps stitch the chunks
  together: ``~2 sqrt(T)`` Python steps instead of ``T``, for about twice the elementwise work.
  It only multiplies numbers in ``[0, 1]`` and adds; there is no division by a cumulative
  product and no log/exp, so forget gates at exactly 0 or 1 are as safe as in the loop.

The fast path uses the chunked scan on accelerators, where each Python step is a kernel launch,
and whenever gradients flow (its backward graph has ``~2 sqrt(T)`` nodes instead of ``T``: ~8x
faster fwd+bwd on CPU for 2 s chunks). For CPU inference it runs the sequential pass instead: there
per-step overhead is small, the scan's extra memory passes are not, and the single pass measured
~3x faster (bench/extract.py reports both). Either way the numbers are the loop's.

The recurrence runs in float32 even under bf16 autocast: a long product of bf16 decays drifts.
"""

from __future__ import annotations

import math
import typing as tp

import torch
from torch import nn

QRNNState = tuple[torch.Tensor, torch.Tensor]  # (c_last [B, H], x_last [B, I])


def recurrence_loop(z: torch.Tensor, f: torch.Tensor, c0: torch.Tensor | None = None) -> torch.Tensor:
    """Reference ``c_t = f_t z_t + (1 - f_t) c_{t-1}``.

    ``z, f: [B, T, H]``, ``c0: [B, H]`` -> ``c: [B, T, H]``.
    """
    c = torch.zeros_like(z[:, 0]) if c0 is None else c0
    out = []
    for t in range(z.shape[1]):
        c = f[:, t] * z[:, t] + (1 - f[:, t]) * c
        out.append(c)
    return torch.stack(out, dim=1)


def recurrence_scan(z: torch.Tensor, f: torch.Tensor, c0: torch.Tensor | None = None) -> torch.Tensor:
    """Chunked scan with the same result as :func:`recurrence_loop` (see the module docstring)."""
    B, T, H = z.shape
    if T <= 4:
        return recurrence_loop(z, f, c0)
    L = max(1, math.isqrt(T - 1) + 1)  # ceil(sqrt(T))
    n = -(-T // L)
    pad = n * L - T
    b = f * z
    a = 1 - f
    if pad:
        # Padded steps are identities (a = 1, b = 0), so they change nothing downstream.
        b = torch.cat([b, b.new_zeros(B, pad, H)], dim=1)
        a = torch.cat([a, a.new_ones(B, pad, H)], dim=1)
    b = b.view(B, n, L, H)
    a = a.view(B, n, L, H)

    # Level 1: every chunk from a zero state, with the running product of decays.
    local, prod = [], []
    c = b[:, :, 0]
    p = a[:, :, 0]
    local.append(c)
    prod.append(p)
    for i in range(1, L):
        c = a[:, :, i] * c + b[:, :, i]
        p = a[:, :, i] * p
        local.append(c)
        prod.append(p)
    local_t = torch.stack(local, dim=2)  # [B, n, L, H]
    prod_t = torch.stack(prod, dim=2)

    # Level 2: the state entering each chunk.
    carry = [torch.zeros_like(z[:, 0]) if c0 is None else c0]
    for k in range(n - 1):
        carry.append(local_t[:, k, -1] + prod_t[:, k, -1] * carry[-1])
    carry_t = torch.stack(carry, dim=1)  # [B, n, H]

    c_all = local_t + prod_t * carry_t[:, :, None]
    return c_all.reshape(B, n * L, H)[:, :T]


class QRNN(nn.Module):
    """One unidirectional QRNN layer with window 2 (PASE+: 512 -> 512).

    ``[x_t; x_{t-1}]`` (``x_{-1} = 0``) goes through one ``Linear(2 I, 3 H)`` split into Z, F, O;
    ``z = tanh(Z)``, ``f = sigmoid(F)``, ``o = sigmoid(O)``. Note the gate convention of the
    original: ``f`` multiplies the *new* value. No zoneout, no dropout.

    ``forward(x: [B, T, I], state=None) -> (h: [B, T, H], state)``; the state
    ``(c_last [B, H], x_last [B, I])`` lets a long input be processed window by window.
    """

    def __init__(self, input_size: int, hidden_size: int, impl: tp.Literal["loop", "scan"] = "scan") -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.impl = impl
        self.linear = nn.Linear(2 * input_size, 3 * hidden_size)

    def gates(
        self, x: torch.Tensor, state: QRNNState | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x: [B, T, I]`` -> float32 ``(z, f, o)``, each ``[B, T, H]``."""
        B, T, _ = x.shape
        x_prev0 = x.new_zeros(B, 1, self.input_size) if state is None else state[1][:, None].to(x.dtype)
        x_prev = torch.cat([x_prev0, x[:, :-1]], dim=1)
        gates = self.linear(torch.cat([x, x_prev], dim=-1)).float()
        Z, Fg, O = gates.chunk(3, dim=-1)
        return torch.tanh(Z), torch.sigmoid(Fg), torch.sigmoid(O)

    def forward(self, x: torch.Tensor, state: QRNNState | None = None) -> tuple[torch.Tensor, QRNNState]:
        z, f, o = self.gates(x, state)
        c0 = None if state is None else state[0].float()
        if self.impl == "loop":
            c = recurrence_loop(z, f, c0)
        elif self.impl == "scan":
            cpu_inference = z.device.type == "cpu" and not (torch.is_grad_enabled() and z.requires_grad)
            c = recurrence_loop(z, f, c0) if cpu_inference else recurrence_scan(z, f, c0)
        else:
            raise ValueError(f"unknown QRNN impl {self.impl!r}; expected 'loop' or 'scan'")
        h = o * c
        return h, (c[:, -1], x[:, -1])
