"""Workers: a full PASE+ step on a distorted batch, gradients, balanced labels, the registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import synth_speechlike

from pase.distortions import Distorter, DistortionConfig
from pase.encoder import EncoderConfig
from pase.targets import TARGETS
from pase.workers import (
    WORKERS,
    GlobalInfoMax,
    LocalInfoMax,
    PaseModel,
    Regressor,
    SequencePredictiveCoding,
    WorkerBatch,
    WorkerConfig,
    load_plugins,
    preset_workers,
)

T = 8000  # 0.5 s chunks keep the full 12-worker step fast on CPU


def batch(b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.stack([torch.from_numpy(synth_speechlike(T / 16000, seed=seed + i)) for i in range(b)])


def test_presets_match_spec() -> None:
    plus = preset_workers("pase+")
    assert len(plus) == 12
    dims = {w.name: TARGETS[w.target or w.name].dim for w in plus if w.kind == "regressor"}
    assert dims["lps"] == dims["lps_long"] == 3075
    assert dims["fbank"] == dims["gammatone"] == 120 and dims["mfcc"] == 39 and dims["mfcc_long"] == 60
    assert dims["prosody"] == 12
    assert {w.kind for w in preset_workers("pase")} == {"waveform", "regressor", "lim", "gim", "spc"}
    assert len(preset_workers("pase")) == 7


def test_worker_parameter_count() -> None:
    model = PaseModel.from_preset("pase+")
    n = sum(p.numel() for p in model.workers.parameters())
    assert 21.5e6 < n < 22.0e6  # the spec's ~21.8 M
    assert sum(p.numel() for p in model.workers["lps"].parameters()) == 256 * 256 + 256 + 256 + 257 * 21525


@pytest.mark.slow
def test_full_pase_plus_step_on_distorted_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = PaseModel.from_preset("pase+")
    cfg = DistortionConfig(n_sim_rooms=3, rir_cache_dir=str(tmp_path))
    distorter = Distorter(cfg)
    clean, ctxt, rand = batch(2, 0), batch(2, 10), batch(2, 20)
    model.fit_target_stats([clean, ctxt])
    assert model.has_target_stats
    g = torch.Generator().manual_seed(0)
    # Force every distortion on, so the step sees all of them.
    always = DistortionConfig(
        **{**cfg.to_dict(), **{f"{d}_p": 1.0 for d in ("reverb", "overlap", "noise", "clip", "chop")}}
    )
    distorted = distorter.distort(clean, always, other=rand, generator=g)
    assert not torch.allclose(distorted, clean)
    losses = model(distorted, clean, ctxt, rand)
    assert set(losses) == set(model.worker_names) and len(losses) == 12
    assert all(torch.isfinite(v) for v in losses.values())
    # Every worker's gradient reaches the encoder: its output projection W and the sinc block's
    # skip (both cheap to reach by backprop), then all of it through the total loss below.
    enc_params = [model.encoder.W.weight, model.encoder.denseskips[0].weight]
    for name, loss in losses.items():
        grads = torch.autograd.grad(loss, enc_params, retain_graph=True)
        assert all(float(g.norm()) > 0 for g in grads), f"worker {name} sends no gradient to the encoder"
    model.total_loss(losses).backward()
    assert all(p.grad is not None for p in model.workers.parameters())
    assert all(p.grad is not None and float(p.grad.norm()) > 0 for p in model.encoder.parameters())


def test_standardised_targets_have_unit_spread() -> None:
    model = PaseModel(EncoderConfig(), [WorkerConfig("mfcc")])
    wav = batch(3)
    model.fit_target_stats([wav])
    reg = model.workers["mfcc"]
    assert isinstance(reg, Regressor)
    z = reg._target(wav)  # [B, D, F]
    assert z.mean(dim=(0, 2)).abs().max() < 1e-3
    assert (z.std(dim=(0, 2), unbiased=False) - 1).abs().max() < 1e-3


def test_regressor_context_slots_predict_neighbouring_frames() -> None:
    """Slot k of frame t is scored against target frame t + k - 3, zero past the edges."""
    reg = Regressor(WorkerConfig("mfcc", context=7), 8)
    wav = batch(1)
    target = reg._target(wav)  # [1, 39, F]
    Fr = target.shape[-1]
    padded = torch.nn.functional.pad(target, (3, 3))
    perfect = torch.stack([padded[..., k : k + Fr] for k in range(7)], dim=1)  # [1, 7, 39, F]

    class Oracle(torch.nn.Module):
        def forward(self, e: torch.Tensor) -> torch.Tensor:
            return perfect.reshape(1, 7 * 39, Fr)

    reg.head = Oracle()  # type: ignore[assignment]
    emb = torch.zeros(1, 8, Fr)
    assert float(reg.loss(WorkerBatch(wav, emb, emb, emb))) == pytest.approx(0.0, abs=1e-10)
    shifted = perfect.roll(1, dims=-1)
    reg.head = type("Shifted", (torch.nn.Module,), {"forward": lambda self, e: shifted.reshape(1, -1, Fr)})()
    assert float(reg.loss(WorkerBatch(wav, emb, emb, emb))) > 0.01


@pytest.mark.parametrize("cls", [LocalInfoMax, GlobalInfoMax, SequencePredictiveCoding])
def test_discriminator_labels_balanced(cls: type, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, torch.Tensor] = {}
    real_bce = torch.nn.functional.binary_cross_entropy_with_logits

    def spy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        seen["labels"] = labels
        return real_bce(logits, labels)

    monkeypatch.setattr(torch.nn.functional, "binary_cross_entropy_with_logits", spy)
    worker = cls(WorkerConfig("d", kind="x"), 16)
    e = [torch.randn(3, 16, 60) for _ in range(3)]
    loss = worker.loss(WorkerBatch(torch.zeros(3, 60 * 160), *e))
    labels = seen["labels"]
    assert torch.isfinite(loss)
    assert float(labels.float().mean()) == 0.5
    if cls is GlobalInfoMax:
        assert labels.numel() == 4 * 3  # 4B pairs
    if cls is LocalInfoMax:
        assert labels.numel() == 2 * 3 * 60  # every frame, positives and negatives


def test_discriminators_learn_matching_pairs() -> None:
    """LIM separates same-utterance pairs from others when the encodings carry an identity."""
    torch.manual_seed(0)
    worker = LocalInfoMax(WorkerConfig("lim", kind="lim"), 8)
    opt = torch.optim.Adam(worker.parameters(), lr=1e-2)
    first = last = 0.0
    for step in range(80):
        ident = torch.randn(8, 8, 1)
        chunk = ident + 0.1 * torch.randn(8, 8, 10)
        ctxt = ident + 0.1 * torch.randn(8, 8, 10)
        rand = torch.randn(8, 8, 1) + 0.1 * torch.randn(8, 8, 10)
        loss = worker.loss(WorkerBatch(torch.zeros(8, 1600), chunk, ctxt, rand))
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = float(loss.detach()) if step == 0 else first
        last = float(loss.detach())
    assert first > 0.6 and last < 0.3


def test_user_worker_in_one_class() -> None:
    """The README's example worker, loaded from its own file, trains beside the encoder."""
    load_plugins([str(Path(__file__).with_name("example_worker.py"))])
    try:
        model = PaseModel(EncoderConfig(), [WorkerConfig("energy", kind="log_energy", context=3)])
        wav = batch(2)
        model.fit_target_stats([wav])
        losses = model(wav, wav, wav, wav)
        assert set(losses) == {"energy"} and torch.isfinite(losses["energy"])
        rebuilt = PaseModel.from_config_dict(model.config_dict())
        assert type(rebuilt.workers["energy"]).__name__ == "LogEnergy"
    finally:
        WORKERS.pop("log_energy")


def test_unknown_worker_kind_and_target_are_clear() -> None:
    with pytest.raises(ValueError, match="unknown worker kind 'nope'"):
        PaseModel(EncoderConfig(), [WorkerConfig("x", kind="nope")])
    with pytest.raises(ValueError, match="unknown target 'nope'"):
        PaseModel(EncoderConfig(), [WorkerConfig("nope")])


def test_pase_v1_step_with_spc() -> None:
    torch.manual_seed(0)
    model = PaseModel.from_preset("pase")
    wav = torch.randn(2, 16000) * 0.1
    model.fit_target_stats([wav])
    losses = model(wav, wav, wav.flip(0), torch.randn(2, 16000) * 0.1)
    assert set(losses) == {"waveform", "lps", "mfcc", "prosody", "lim", "gim", "spc"}
    assert all(torch.isfinite(v) for v in losses.values())
