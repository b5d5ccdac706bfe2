"""``pase.FeatureLoss``: PASE+ features as a frozen, differentiable training loss."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SPEECH_DIR, synth_speechlike

from pase import Encoder, EncoderConfig, FeatureLoss, load_audio

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def packaged() -> FeatureLoss:
    return FeatureLoss()


@pytest.fixture(scope="module")
def small() -> Encoder:
    torch.manual_seed(1)
    cfg = EncoderConfig(sinc_channels=8, channels=(8, 8, 16, 16, 16, 16, 32), rnn_hidden=16, embedding_dim=12)
    enc = Encoder(cfg)
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return enc.eval()


def _clean() -> torch.Tensor:
    """One second of real speech when the bundle is there, else harmonic synthetic speech."""
    path = SPEECH_DIR / "emodb" / "wav" / "03a01Fa.flac"
    if path.exists():
        return torch.from_numpy(load_audio(path))[8000:24000]
    return torch.from_numpy(synth_speechlike(1.0))


def _log_spectral_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over frames of the RMS difference of the log power spectra, in dB."""
    window = torch.hann_window(512)

    def logspec(w: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(w, 512, 128, window=window, return_complex=True).abs().square()
        return 10 * torch.log10(spec + 1e-8)

    return (logspec(x) - logspec(y)).square().mean(0).sqrt().mean().item()


def _with_noise(clean: torch.Tensor, snr_db: float, seed: int = 0) -> torch.Tensor:
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))
    return clean + noise * clean.norm() / noise.norm() * 10 ** (-snr_db / 20)


@pytest.mark.slow
def test_descent_moves_a_noisy_waveform_toward_the_clean_one(packaged: FeatureLoss) -> None:
    clean = _clean()
    estimate = _with_noise(clean, snr_db=5).requires_grad_(True)
    weights = {k: v.clone() for k, v in packaged.encoder.state_dict().items()}
    opt = torch.optim.Adam([estimate], lr=1e-2)
    with torch.no_grad():
        feat0 = packaged(estimate, clean).item()
    lsd0 = _log_spectral_distance(estimate.detach(), clean)
    for _ in range(20):
        opt.zero_grad()
        packaged(estimate, clean).backward()
        opt.step()
    with torch.no_grad():
        feat1 = packaged(estimate, clean).item()
    lsd1 = _log_spectral_distance(estimate.detach(), clean)
    # Measured on the real-speech second: features 0.46 -> 0.23, log-spectral distance 25.3 -> 22.7 dB.
    assert feat1 < 0.7 * feat0
    assert lsd1 < lsd0 - 1.0
    for k, v in packaged.encoder.state_dict().items():
        assert torch.equal(v, weights[k]), k


def test_encoder_is_frozen(small: Encoder) -> None:
    loss_fn = FeatureLoss(small)
    assert all(not p.requires_grad for p in loss_fn.parameters())
    weights = {k: v.clone() for k, v in small.state_dict().items()}
    estimate = torch.randn(2, 4000, requires_grad=True)
    # Even an optimizer handed the loss's parameters (a loss kept as a submodule of the model
    # being trained) leaves them alone: they never get a gradient.
    opt = torch.optim.AdamW([estimate, *loss_fn.parameters()], lr=0.1, weight_decay=0.5)
    loss_fn.train()
    assert loss_fn.training and not loss_fn.encoder.training
    loss_fn(estimate, torch.randn(2, 4000)).backward()
    opt.step()
    assert estimate.grad is not None and estimate.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss_fn.parameters())
    for k, v in small.state_dict().items():  # BatchNorm running statistics included
        assert torch.equal(v, weights[k]), k


def test_reference_takes_no_gradient(small: Encoder) -> None:
    reference = torch.randn(4000, requires_grad=True)
    FeatureLoss(small)(torch.randn(4000, requires_grad=True), reference).backward()
    assert reference.grad is None


def test_masking_ignores_padding(small: Encoder) -> None:
    loss_fn = FeatureLoss(small, layers={0: 1.0, -1: 2.0})
    gen = torch.Generator().manual_seed(4)
    est, ref = torch.randn(2, 8000, generator=gen), torch.randn(2, 8000, generator=gen)
    lengths = torch.tensor([8000, 5000])
    base = loss_fn(est, ref, lengths=lengths)
    est2, ref2 = est.clone(), ref.clone()
    est2[1, 5000:] = 10 * torch.randn(3000, generator=gen)
    ref2[1, 5000:] = -3.0
    torch.testing.assert_close(loss_fn(est2, ref2, lengths=lengths), base)
    # Differences confined to the padding cost nothing, and get no gradient.
    est3 = ref.clone()
    est3[1, 5000:] += 1.0
    est3.requires_grad_(True)
    zero = loss_fn(est3, ref, lengths=lengths)
    assert zero.item() < 1e-6  # not 0: with gradients the QRNN takes its scan, rounding differently
    zero.backward()
    assert est3.grad is not None and est3.grad[1, 5000:].abs().sum() == 0


def test_masked_mean_is_over_valid_frames(small: Encoder) -> None:
    """A batch item padded to a longer one counts only its own frames in the mean."""
    loss_fn = FeatureLoss(small)
    gen = torch.Generator().manual_seed(5)
    est, ref = torch.randn(1, 4800, generator=gen), torch.randn(1, 4800, generator=gen)
    padded = torch.nn.functional.pad
    got = loss_fn(padded(est, (0, 3200)), padded(ref, (0, 3200)), lengths=torch.tensor([4800]))
    with torch.no_grad():
        e, r = small(padded(est, (0, 3200)))[:, :30], small(padded(ref, (0, 3200)))[:, :30]
    torch.testing.assert_close(got, (e - r).abs().mean())


def test_distances_and_layers(small: Encoder) -> None:
    gen = torch.Generator().manual_seed(6)
    est, ref = torch.randn(3, 3200, generator=gen), torch.randn(3, 3200, generator=gen)
    with torch.no_grad():
        e, r = small.extract_features(est), small.extract_features(ref)
    torch.testing.assert_close(FeatureLoss(small)(est, ref), (e[-1] - r[-1]).abs().mean())
    torch.testing.assert_close(FeatureLoss(small, "l2")(est, ref), (e[-1] - r[-1]).square().mean())
    weighted = FeatureLoss(small, "l2", layers={0: 0.5, 7: 2.0, -1: 1.0})(est, ref)
    expected = sum(w * (e[i] - r[i]).square().mean() for i, w in ((0, 0.5), (7, 2.0), (8, 1.0)))
    torch.testing.assert_close(weighted, expected)
    one = FeatureLoss(small)(est[0], ref[0])
    torch.testing.assert_close(one, FeatureLoss(small)(est[:1], ref[:1]))
    with pytest.raises(ValueError, match="out of range"):
        FeatureLoss(small, layers={9: 1.0})
    with pytest.raises(ValueError, match="twice"):
        FeatureLoss(small, layers={8: 1.0, -1: 1.0})
    with pytest.raises(ValueError, match="distance"):
        FeatureLoss(small, "cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="differ"):
        FeatureLoss(small)(est, ref[:, :1600])


def test_moves_with_to(small: Encoder) -> None:
    gen = torch.Generator().manual_seed(7)
    est, ref = torch.randn(2, 3200, generator=gen), torch.randn(2, 3200, generator=gen)
    loss_fn = FeatureLoss(Encoder(small.config).eval())
    loss_fn.encoder.load_state_dict(small.state_dict())
    base = loss_fn(est, ref)
    as64 = loss_fn.to(torch.float64)(est, ref)
    assert as64.dtype == torch.float64
    torch.testing.assert_close(as64.float(), base, rtol=1e-4, atol=1e-6)
    on_meta = loss_fn.to("meta")
    assert all(p.device.type == "meta" for p in on_meta.parameters())
    assert on_meta(est.to("meta"), ref.to("meta")).device.type == "meta"


def test_import_stays_light() -> None:
    code = "import sys, pase; pase.FeatureLoss; print(any(m.startswith('pase.train') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_docs_example() -> None:
    doc = Path(__file__).resolve().parents[1] / "docs" / "loss.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(doc), "exec"), {})
