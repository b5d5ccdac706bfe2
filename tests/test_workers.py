"""Workers: a full PASE+ step on a distorted batch, gradients, balanced labels, the registry."""

from __future__ import annotations

import math
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
    norms = {}
    for name, loss in losses.items():
        grads = torch.autograd.grad(loss, enc_params, retain_graph=True)
        assert all(float(g.norm()) > 0 for g in grads), f"worker {name} sends no gradient to the encoder"
        norms[name] = float(torch.cat([g.flatten() for g in grads]).norm())
    # ... and none is negligible: every worker's gradient is within 10x of the median worker's.
    # (The first waveform decoder sent ~100x less than the median: its output stayed at silence.)
    median = sorted(norms.values())[len(norms) // 2]
    weak = {n: round(v / median, 4) for n, v in norms.items() if not median / 10 <= v <= median * 10}
    assert not weak, f"gradient into the encoder / median worker's, outside [0.1, 10]: {weak}"
    model.total_loss(losses).backward()
    assert all(p.grad is not None for p in model.workers.parameters())
    assert all(p.grad is not None and float(p.grad.norm()) > 0 for p in model.encoder.parameters())


def test_standardised_targets_have_unit_spread() -> None:
    model = PaseModel(EncoderConfig(), [WorkerConfig("mfcc"), WorkerConfig("waveform", kind="waveform")])
    wav = batch(3)
    model.fit_target_stats([wav])
    reg = model.workers["mfcc"]
    assert isinstance(reg, Regressor)
    z = reg._target(wav)  # [B, D, F]
    assert z.mean(dim=(0, 2)).abs().max() < 1e-3
    assert (z.std(dim=(0, 2), unbiased=False) - 1).abs().max() < 1e-3


def test_target_stats_hold_on_audio_they_were_not_fitted_on() -> None:
    """Fitted on 8 chunks, the standardisation still gives about zero mean and unit spread on 8
    other chunks, for every kind of target (the waveform's too)."""
    names = ["mfcc", "fbank_long", "gammatone", "prosody"]
    model = PaseModel(
        EncoderConfig(), [*(WorkerConfig(n) for n in names), WorkerConfig("w", kind="waveform")]
    )
    model.fit_target_stats([batch(4, seed=0), batch(4, seed=4)])
    held_out = torch.cat([batch(4, seed=50), batch(4, seed=54)])
    for name, w in model.regressors().items():
        z = w._target(held_out)
        mean, std = float(z.mean()), float(z.std())
        assert abs(mean) < 0.25 and 0.75 < std < 1.25, (name, mean, std)


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
        assert labels.numel() == 2 * 3  # one positive and one negative pair per item
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


def test_infonce_with_rand_from_the_batch_counts_the_positive_once() -> None:
    """With rand = ctxt rolled by one item, rand[i + 1] is ctxt[i]: InfoNCE must not score the
    positive a second time as a negative (that puts a floor of ln 2 under the loss)."""
    torch.manual_seed(0)
    cfg = WorkerConfig("gim", kind="gim", head="cosine", negatives="batch", temperature=0.02)
    worker = GlobalInfoMax(cfg, 16)
    ctxt = torch.randn(6, 16, 20)
    batch = WorkerBatch(torch.zeros(6, 3200), ctxt.clone(), ctxt, ctxt.roll(1, 0), rand_from_ctxt=True)
    flagless = WorkerBatch(torch.zeros(6, 3200), ctxt.clone(), ctxt, ctxt.roll(1, 0))
    with torch.no_grad():
        assert float(worker.loss(batch)) < 0.2  # the anchor equals its positive: near-certain
        assert float(worker.loss(flagless)) > math.log(2) - 1e-4  # the duplicated positive


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


def _old_gim_loss(worker: GlobalInfoMax, a: torch.Tensor, c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The first version's GIM (the original's "augmented" pairs), kept here as the control that
    proves the shortcut test below can see a shortcut: positives [a; c], [c; a], negatives
    [a; r], [c; r], one MLP on the concatenation."""
    a, c, r = (e.mean(-1, keepdim=True) for e in (a, c, r))
    pos = worker.head(torch.cat([torch.cat([a, c], 1), torch.cat([c, a], 1)]))
    neg = worker.head(torch.cat([torch.cat([a, r], 1), torch.cat([c, r], 1)]))
    logits = torch.cat([pos, neg])
    labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)])
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)


def _shortcut_batches(n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Triplets that differ ONLY in "distorted or not": a = distort(x), c = x, r = x, encoded by
    a frozen log-mel front end (any fixed features carry the distortion cue)."""
    from pase.targets import TARGETS

    cfg = DistortionConfig(reverb_p=0.0, overlap_p=0.0, noise_p=1.0, clip_p=0.5, chop_p=0.0)
    distorter = Distorter(cfg)
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        x = batch(4, seed=100 * seed + 4 * i)
        a = distorter.distort(x, generator=g)
        ea, ex = (TARGETS["fbank"].fn(w).transpose(1, 2) for w in (a, x))
        out.append((ea, ex, ex.clone()))
    return out


@pytest.mark.parametrize("pairing", ["old", "mlp", "bilinear", "cosine"])
def test_discriminator_cannot_learn_distorted_or_not(pairing: str) -> None:
    """GIM's label must not be learnable from "which input is distorted": with c == r every
    positive pair equals a negative pair, so no head can beat chance (BCE ln 2). The control, the
    old pairing, does learn it (validation BCE far below ln 2): the test can see a shortcut."""
    torch.manual_seed(0)
    head = "mlp" if pairing == "old" else pairing
    worker = GlobalInfoMax(WorkerConfig("gim", kind="gim", head=head), 120)
    opt = torch.optim.Adam(worker.parameters(), lr=3e-3)
    train, valid = _shortcut_batches(6, 0), _shortcut_batches(2, 1)

    def loss(a: torch.Tensor, c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        if pairing == "old":
            return _old_gim_loss(worker, a, c, r)
        return worker.loss(WorkerBatch(torch.zeros(1), a, c, r))

    for _ in range(25):
        for a, c, r in train:
            opt.zero_grad()
            loss(a, c, r).backward()
            opt.step()
    with torch.no_grad():
        held_out = sum(float(loss(*t)) for t in valid) / len(valid)
    if pairing == "old":
        assert held_out < 0.55, f"control: the old pairing should learn the shortcut, BCE {held_out:.3f}"
    else:
        assert held_out > math.log(2) - 1e-4, f"{pairing}: BCE {held_out:.4f} < ln 2: a shortcut"


@pytest.mark.parametrize("head", ["mlp", "bilinear", "cosine"])
@pytest.mark.parametrize("negatives", ["one", "batch"])
@pytest.mark.parametrize("kind", [LocalInfoMax, GlobalInfoMax])
def test_discriminator_forms_learn_identity(kind: type, head: str, negatives: str) -> None:
    """Every head/negatives form learns to tell same-utterance pairs from others when the identity
    sits in 4 of 16 dimensions, under a per-chunk nuisance 2x larger in the other 12 (so no head
    separates the pairs at init), and reports it as ``acc``."""
    torch.manual_seed(0)
    worker = kind(WorkerConfig("d", kind="x", head=head, negatives=negatives), 16)
    opt = torch.optim.Adam(worker.parameters(), lr=1e-2)

    def chunk(ident: torch.Tensor) -> torch.Tensor:
        nuisance = 6 * torch.randn(6, 12, 1)
        return torch.cat([ident, nuisance], 1) + 0.3 * torch.randn(6, 16, 30)

    def triplet() -> WorkerBatch:
        ident = 3 * torch.randn(6, 4, 1)
        return WorkerBatch(torch.zeros(1), chunk(ident), chunk(ident), chunk(3 * torch.randn(6, 4, 1)))

    def acc() -> float:
        with torch.no_grad():
            return float(sum(worker.metrics(triplet())["acc"] for _ in range(10)) / 10)

    first = acc()
    for _ in range(200):
        opt.zero_grad()
        worker.loss(triplet()).backward()
        opt.step()
    final = acc()
    assert first < 0.7 and final > 0.8 and final > first + 0.2, (first, final)


def test_discriminator_pool_windows() -> None:
    lim = LocalInfoMax(WorkerConfig("lim", kind="lim", pool=10), 8)
    gim = GlobalInfoMax(WorkerConfig("gim", kind="gim"), 8)
    e = torch.randn(2, 8, 45)
    assert lim._pooled(e).shape == (2, 8, 4)
    assert gim._pooled(e).shape == (2, 8, 1)
    with pytest.raises(ValueError, match="head must be"):
        LocalInfoMax(WorkerConfig("lim", kind="lim", head="dot"), 8)  # type: ignore[arg-type]


def test_waveform_worker_reports_skill_against_silence() -> None:
    model = PaseModel(EncoderConfig(), [WorkerConfig("waveform", kind="waveform")])
    wav = batch(2)
    model.fit_target_stats([wav])
    w = model.workers["waveform"]
    e = torch.randn(2, 256, T // 160)
    # A decoder that outputs zeros scores exactly 1.0 (the silence predictor).
    for p in w.parameters():
        torch.nn.init.zeros_(p)
    assert float(w.metrics(WorkerBatch(wav, e, e, e))["rel_l1"]) == pytest.approx(1.0)
