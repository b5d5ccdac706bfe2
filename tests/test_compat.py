"""The drop-in ``pase.models.frontend`` API for code written against santi-pdp/pase.

The call sequences below follow the documented behaviour of the original README and of s3prl's
``pase_plus`` upstream; the reference forward pass is written here from the spec (reflect padding
of the raw length, dense skips pooled by ``L // F``), independently of ``pase.encoder``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import perturbed_encoder

from pase import Encoder, FeatureLoss
from pase.hub import CheckpointError, ours_to_original
from pase.models.frontend import WaveFe, wf_builder

PASE_PLUS_CFG = {
    "kwidths": [251, 20, 11, 11, 11, 11, 11, 11],
    "strides": [1, 10, 2, 1, 2, 1, 2, 2],
    "fmaps": [64, 64, 128, 128, 256, 256, 512, 512],
    "emb_dim": 256,
    "denseskips": True,
    "norm_out": True,
    "rnn_pool": True,
    "rnn_layers": 1,
    "rnn_type": "qrnn",
    "rnn_dim": 512,
}
PASE_CFG = {
    "kwidths": [251, 20, 11, 11, 11, 11, 11, 11],
    "strides": [1, 10, 2, 1, 2, 1, 2, 2],
    "fmaps": [64, 64, 128, 128, 256, 256, 512, 512],
    "emb_dim": 100,
    "norm_out": True,
}
LENGTHS = (33333, 32155, 16120, 45360)


def expected_frames(T: int) -> int:
    return T // 160 + (1 if T % 160 >= 151 else 0)


@pytest.fixture(scope="module")
def original_plus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Encoder]:
    """(PASE+.cfg, FE_e199.ckpt in the original layout wrapped as the trainer saved it, source encoder)."""
    d = tmp_path_factory.mktemp("orig")
    enc = perturbed_encoder("pase+", seed=11)
    ckpt = d / "FE_e199.ckpt"
    torch.save({"step": 199, "state_dict": ours_to_original(enc.state_dict())}, ckpt)
    cfg = d / "PASE+.cfg"
    cfg.write_text(json.dumps(PASE_PLUS_CFG, indent=1))
    return cfg, ckpt, enc


def reference_forward(
    state: dict[str, torch.Tensor], filters: torch.Tensor, wav: torch.Tensor
) -> torch.Tensor:
    """The original PASE+ function, from the spec: ``wav: [T]`` -> ``[256, F]``.

    ``state`` is in the original checkpoint layout; ``filters`` is the sinc filterbank ``[64, 1, 251]``.
    """
    kernels, strides = PASE_PLUS_CFG["kwidths"], PASE_PLUS_CFG["strides"]
    x = wav[None, None]
    skip_outputs = []
    for i in range(8):
        k, s = kernels[i], strides[i]
        pad = (k // 2, k // 2) if s == 1 and k % 2 == 1 else (k // 2 - 1, k // 2)
        x = F.pad(x, pad, mode="reflect")
        if i == 0:
            x = F.conv1d(x, filters)
        else:
            x = F.conv1d(x, state[f"blocks.{i}.conv.weight"], state[f"blocks.{i}.conv.bias"], stride=s)
        n = f"blocks.{i}.norm."
        x = F.batch_norm(
            x,
            state[n + "running_mean"],
            state[n + "running_var"],
            state[n + "weight"],
            state[n + "bias"],
            eps=1e-5,
        )
        x = F.prelu(x, state[f"blocks.{i}.act.weight"])
        if i < 7:
            skip_outputs.append(F.conv1d(x, state[f"denseskips.{i}.weight"]))
    n_frames = x.shape[-1]
    # QRNN: [x_t; x_{t-1}] -> Z, F, O; c_t = f z + (1 - f) c_{t-1}; h = o c.
    seq = x[0].T
    prev = torch.cat([torch.zeros_like(seq[:1]), seq[:-1]])
    gates = (
        torch.cat([seq, prev], dim=1) @ state["rnn.layers.0.linear.weight"].T
        + state["rnn.layers.0.linear.bias"]
    )
    z, f, o = gates.chunk(3, dim=1)
    z, f, o = torch.tanh(z), torch.sigmoid(f), torch.sigmoid(o)
    c = torch.zeros(z.shape[1])
    hs = []
    for t in range(n_frames):
        c = f[t] * z[t] + (1 - f[t]) * c
        hs.append(o[t] * c)
    h = torch.stack(hs, dim=1)[None]
    out = F.conv1d(h, state["W.weight"], state["W.bias"])
    for skip in skip_outputs:
        factor = skip.shape[-1] // n_frames  # 159 or 161 for the sinc skip when T is not k * 160
        pooled = torch.stack([skip[..., j * factor : (j + 1) * factor].mean(-1) for j in range(n_frames)], -1)
        out = out + pooled
    out = F.batch_norm(out, state["norm_out.running_mean"], state["norm_out.running_var"], eps=1e-5)
    return out[0]


def test_original_readme_sequence(
    original_plus: tuple[Path, Path, Encoder], capsys: pytest.CaptureFixture
) -> None:
    cfg, ckpt, _ = original_plus
    pase = wf_builder(str(cfg)).eval()
    pase.load_pretrained(str(ckpt), load_last=True, verbose=True)
    assert "FE_e199.ckpt" in capsys.readouterr().out
    x = torch.randn(1, 1, 100000)
    with torch.no_grad():
        y = pase(x)
    assert y.shape == (1, 256, 625)


def test_s3prl_upstream_sequence(original_plus: tuple[Path, Path, Encoder]) -> None:
    """Build, load, then a padded batch [B, 1, T] with forward hooks on W, denseskips[i] and the
    model; s3prl pools each skip by ``L // F`` itself and needs 9 states of [B, F, 256]."""
    cfg, ckpt, _ = original_plus
    model = wf_builder(str(cfg))
    model.load_pretrained(str(ckpt), load_last=True, verbose=False)
    model.eval()
    captured: dict[str, torch.Tensor] = {}
    names = [f"denseskips[{i}]" for i in range(7)] + ["W", "model"]
    modules = [model.denseskips[i] for i in range(7)] + [model.W, model]
    for name, module in zip(names, modules, strict=True):
        module.register_forward_hook(lambda m, i, o, name=name: captured.__setitem__(name, o))
    wavs = [torch.randn(16000), torch.randn(12345)]
    batch = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True).unsqueeze(1)
    with torch.no_grad():
        features = model(batch).transpose(1, 2).contiguous()
    n_frames = expected_frames(16000)
    assert features.shape == (2, n_frames, 256) and model.emb_dim == 256
    assert captured["denseskips[0]"].shape == (2, 256, 16000)  # the sinc-rate projection
    states = []
    for name in names[:-1]:
        skip = captured[name]
        factor = skip.shape[-1] // n_frames
        states.append(
            skip[..., : n_frames * factor].unflatten(-1, (n_frames, factor)).mean(-1).transpose(1, 2)
        )
    states.append(captured["model"].transpose(1, 2))
    assert len(states) == 9 and all(s.shape == (2, n_frames, 256) for s in states)
    torch.testing.assert_close(states[-1], features)


@pytest.mark.parametrize("T", LENGTHS)
def test_matches_the_original_function(original_plus: tuple[Path, Path, Encoder], T: int) -> None:
    cfg, ckpt, enc = original_plus
    fe = wf_builder(cfg)
    fe.load_pretrained(ckpt, load_last=True)
    fe.eval()
    torch.manual_seed(T)
    wav = torch.randn(T) * 0.3
    with torch.no_grad():
        y = fe(wav[None, None])
        ref = reference_forward(ours_to_original(enc.state_dict()), enc.blocks[0].conv.filters(), wav)
    assert y.shape == (1, 256, expected_frames(T))
    torch.testing.assert_close(y[0], ref, atol=2e-4, rtol=1e-4)


def test_differs_from_the_modern_framing_on_purpose(original_plus: tuple[Path, Path, Encoder]) -> None:
    """32155 = 200 * 160 + 155: the original pools the sinc skip by 159, so every frame differs."""
    cfg, ckpt, enc = original_plus
    fe = wf_builder(cfg)
    fe.load_pretrained(ckpt, load_last=True)
    fe.eval()
    wav = torch.randn(1, 32155)
    with torch.no_grad():
        old = fe(wav[:, None])[0].T
        new = enc(wav)[0]
    assert old.shape[0] == new.shape[0] == 201
    rel = (old[:190] - new[:190]).norm(dim=1) / new[:190].norm(dim=1)
    assert rel.min() > 1e-4  # float rounding is ~1e-6; the mis-pooling drifts further each frame
    assert rel[-20:].mean() > 3 * rel[:20].mean()


@pytest.mark.parametrize("T", [32000, 160 * 123])
def test_equals_from_original_for_multiples_of_160(original_plus: tuple[Path, Path, Encoder], T: int) -> None:
    cfg, ckpt, _ = original_plus
    fe = wf_builder(cfg)
    fe.load_pretrained(ckpt, load_last=True)
    fe.eval()
    modern = Encoder.from_original(ckpt)
    wav = torch.randn(2, T)
    with torch.no_grad():
        torch.testing.assert_close(fe(wav[:, None]), modern(wav).transpose(1, 2), atol=1e-4, rtol=1e-4)


def test_is_a_mode_of_the_encoder_not_a_copy(original_plus: tuple[Path, Path, Encoder]) -> None:
    cfg, _, _ = original_plus
    fe = wf_builder(cfg)
    assert isinstance(fe, WaveFe) and isinstance(fe.encoder, Encoder)
    assert fe.W is fe.encoder.W and fe.denseskips is fe.encoder.denseskips
    assert sum(p.numel() for p in fe.parameters()) == 7_832_896
    moved = fe.to(torch.float64)
    assert moved is fe and fe.W.weight.dtype == torch.float64


def test_pase_v1_config_and_presets(tmp_path: Path) -> None:
    cfg = tmp_path / "PASE.cfg"
    cfg.write_text(json.dumps(PASE_CFG))
    v1 = wf_builder(cfg).eval()
    assert v1.emb_dim == 100 and len(v1.denseskips) == 0 and v1.rnn is None
    assert sum(p.numel() for p in v1.parameters()) == 5_818_020
    with torch.no_grad():
        assert v1(torch.randn(1, 1, 16120)).shape == (1, 100, 100)
    for name in ("PASE+", "pase+", "pase"):
        assert wf_builder(name).encoder.config == Encoder.from_config(name.lower()).config
    # Scripts that still point at the original repository's cfg/ folder keep working.
    assert wf_builder(tmp_path / "cfg" / "frontend" / "PASE+.cfg").emb_dim == 256


def test_v1_checkpoint_in_original_layout(tmp_path: Path) -> None:
    enc = perturbed_encoder("pase", seed=11)
    ckpt = tmp_path / "FE_e149.ckpt"
    torch.save(ours_to_original(enc.state_dict()), ckpt)
    fe = wf_builder("pase")
    fe.load_pretrained(ckpt)
    fe.eval()
    wav = torch.randn(1, 160 * 50)
    with torch.no_grad():
        torch.testing.assert_close(fe(wav[:, None]), enc(wav).transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_clear_errors(original_plus: tuple[Path, Path, Encoder], tmp_path: Path) -> None:
    _, ckpt, _ = original_plus
    with pytest.raises(CheckpointError, match="FE_e199.ckpt"):
        wf_builder("pase").load_pretrained(ckpt)  # a PASE+ checkpoint into a PASE v1 frontend
    with pytest.raises(FileNotFoundError, match="no such frontend config"):
        wf_builder(tmp_path / "mine.cfg")
    bad = tmp_path / "bad.cfg"
    bad.write_text(json.dumps({**PASE_PLUS_CFG, "rnn_layers": 2}))
    with pytest.raises(ValueError, match="bad.cfg.*rnn_layers"):
        wf_builder(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.cfg: not a JSON"):
        wf_builder(bad)
    with pytest.raises(ValueError, match=r"\[B, 1, T\]"):
        wf_builder("pase+")(torch.randn(2, 16000))


@pytest.mark.parametrize("freeze", ["requires_grad_", "each parameter", "not frozen"])
def test_the_original_frontend_as_a_loss(original_plus: tuple[Path, Path, Encoder], freeze: str) -> None:
    """PASE+ as a perceptual loss the way code written for the original does it: build, load,
    freeze, then an L1 between the features of an estimate and of a reference."""
    _, ckpt, _ = original_plus
    fe = wf_builder("PASE+").eval()
    fe.load_pretrained(str(ckpt), load_last=True, verbose=False)
    if freeze == "requires_grad_":
        fe.requires_grad_(False)
    elif freeze == "each parameter":
        for p in fe.parameters():
            p.requires_grad = False
    weights = {k: v.clone() for k, v in fe.state_dict().items()}
    gen = torch.Generator().manual_seed(3)
    reference = 0.3 * torch.randn(2, 1, 160 * 60, generator=gen)
    estimate = (reference + 0.1 * torch.randn(reference.shape, generator=gen)).requires_grad_(True)
    loss = F.l1_loss(fe(estimate), fe(reference))
    loss.backward()
    assert estimate.grad is not None and torch.isfinite(estimate.grad).all()
    assert estimate.grad.abs().sum() > 0
    if freeze == "not frozen":  # fine-tuning the frontend: every parameter gets its gradient
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in fe.parameters())
    else:
        assert all(p.grad is None for p in fe.parameters())
    for k, v in fe.state_dict().items():  # eval mode: BatchNorm running statistics untouched
        assert torch.equal(v, weights[k]), k
    # The gradient is pase.FeatureLoss's (the length a multiple of 160: the same features).
    modern = estimate.detach()[:, 0].clone().requires_grad_(True)
    FeatureLoss(Encoder.from_original(ckpt))(modern, reference[:, 0]).backward()
    assert modern.grad is not None
    torch.testing.assert_close(estimate.grad[:, 0], modern.grad, rtol=1e-4, atol=1e-7)
