"""The QRNN fast path equals the sequential reference, values and gradients."""

from __future__ import annotations

import pytest
import torch

from pase.qrnn import QRNN, recurrence_loop, recurrence_scan


@pytest.mark.parametrize("T", [1, 5, 17, 200, 333])
def test_scan_equals_loop_values_and_grads(T: int) -> None:
    g = torch.Generator().manual_seed(T)
    z = torch.randn(3, T, 16, generator=g, dtype=torch.float64).tanh().requires_grad_()
    f = torch.rand(3, T, 16, generator=g, dtype=torch.float64).requires_grad_()
    c0 = torch.randn(3, 16, generator=g, dtype=torch.float64)
    ref = recurrence_loop(z, f, c0)
    fast = recurrence_scan(z, f, c0)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=0)
    w = torch.randn_like(ref)
    gz_ref, gf_ref = torch.autograd.grad((ref * w).sum(), (z, f))
    gz, gf = torch.autograd.grad((fast * w).sum(), (z, f))
    torch.testing.assert_close(gz, gz_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(gf, gf_ref, atol=1e-5, rtol=0)


def test_scan_safe_for_saturated_gates() -> None:
    """Forget gates at exactly 0 and 1 (and 1 - 1e-7) give the loop's answer, no NaN/Inf."""
    T = 257
    z = torch.randn(2, T, 8)
    f = torch.randint(0, 2, (2, T, 8)).float()
    f[:, ::7] = 1 - 1e-7
    f[:, 3::11] = 1e-7
    ref = recurrence_loop(z, f)
    fast = recurrence_scan(z, f)
    assert torch.isfinite(fast).all()
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=0)


def test_qrnn_layer_fast_equals_loop_with_state() -> None:
    torch.manual_seed(0)
    layer = QRNN(12, 10, impl="loop")
    x = torch.randn(2, 50, 12, requires_grad=True)
    h_ref, (c_ref, x_last) = layer(x)
    layer.impl = "scan"
    h, (c, _) = layer(x)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(c, c_ref, atol=1e-5, rtol=0)
    g_ref = torch.autograd.grad(h_ref.sum(), x)[0]
    g = torch.autograd.grad(h.sum(), x)[0]
    torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=0)
    # Carrying the state across a split gives the unsplit result (window 2 needs x_{t-1} too).
    h1, st = layer(x[:, :20])
    h2, _ = layer(x[:, 20:], st)
    torch.testing.assert_close(torch.cat([h1, h2], 1), h, atol=1e-5, rtol=0)
    assert torch.equal(x_last, x[:, -1])


def test_gate_convention_f_multiplies_new_value() -> None:
    """With f = 1 the cell is the new value z; with f = 0 it keeps the previous cell."""
    z = torch.tensor([[[0.5], [0.2]]])
    assert recurrence_loop(z, torch.ones_like(z))[0, :, 0].tolist() == pytest.approx([0.5, 0.2])
    c0 = torch.tensor([[0.7]])
    assert recurrence_loop(z, torch.zeros_like(z), c0)[0, :, 0].tolist() == pytest.approx([0.7, 0.7])


def test_bf16_autocast_cpu() -> None:
    layer = QRNN(8, 8)
    x = torch.randn(2, 30, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, _ = layer(x)
    ref, _ = layer(x)
    assert h.dtype == torch.float32 and torch.isfinite(h).all()
    assert (h - ref).abs().max() < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_scan_cuda_matches_cpu() -> None:
    layer = QRNN(16, 16)
    x = torch.randn(2, 100, 16)
    h_cpu, _ = layer(x)
    h_gpu, _ = layer.cuda()(x.cuda())
    torch.testing.assert_close(h_gpu.cpu(), h_cpu, atol=1e-4, rtol=0)
