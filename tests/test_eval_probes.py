"""Probes of ``pase eval``: chance on shuffled labels, context gathering, standardisation, metrics."""

from __future__ import annotations

import typing as tp

import numpy as np
import pytest
import torch

from pase.eval import probes


def _clusters(n: int, num_classes: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pooled vectors ``[n, 1, dim]`` around one random centre per class."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim)) * 1.5
    labels = rng.integers(0, num_classes, size=n)
    x = centres[labels] + rng.normal(size=(n, dim))
    return x[:, None].astype(np.float32), labels


def _parts(
    x: np.ndarray, y: np.ndarray, cuts: tp.Sequence[int]
) -> tuple[probes.ProbeData, probes.ProbeData, probes.ProbeData]:
    """Standardised train / valid / test parts from rows ``cuts[0]:cuts[1]:cuts[2]:cuts[3]``."""
    a, b, c, d = cuts
    train, valid, test = (
        probes.utterance_data(list(x[lo:hi]), y[lo:hi]) for lo, hi in ((a, b), (b, c), (c, d))
    )
    probes.standardise(train, valid, test)
    return train, valid, test


def _fit(x: np.ndarray, y: np.ndarray, num_classes: int, kind: probes.ProbeKind) -> float:
    """Test accuracy of a probe trained on the first 60 %, validated on 20 %, tested on 20 %."""
    n = len(y)
    train, valid, test = _parts(x, y, (0, int(0.6 * n), int(0.8 * n), n))
    cfg = probes.ProbeConfig(kind=kind, max_epochs=60, patience=10)
    res = probes.train_probe(train, valid, test, num_classes, seed=0, config=cfg)
    return probes.accuracy(probes.confusion_matrix(res.labels, res.predictions, num_classes))


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_probe_learns_real_labels_and_is_at_chance_on_shuffled_labels(kind: probes.ProbeKind) -> None:
    num_classes = 5
    x, y = _clusters(1000, num_classes, 16, seed=1)
    assert _fit(x, y, num_classes, kind) > 0.9
    shuffled = np.random.default_rng(2).permutation(y)
    # 200 test examples: the binomial spread around 1/5 is about 0.03
    assert abs(_fit(x, shuffled, num_classes, kind) - 1 / num_classes) < 0.1


def test_frame_data_gathers_context_with_zero_padding_and_skips_ignored_frames() -> None:
    # two files, 1 layer, dim 1, frame value = its index within the file + 1
    feats = [
        np.arange(1, 4, dtype=np.float32)[None, :, None],
        np.arange(1, 3, dtype=np.float32)[None, :, None],
    ]
    labels = [np.array([0, -1, 1]), np.array([1, 0])]
    data = probes.frame_data(feats, labels, context=1)
    assert len(data) == 4  # the ignored frame is context only
    x, y = data.batch(torch.arange(4))
    assert x.shape == (4, 3, 1, 1)
    np.testing.assert_array_equal(x[:, :, 0, 0].numpy(), [[0, 1, 2], [2, 3, 0], [0, 1, 2], [1, 2, 0]])
    np.testing.assert_array_equal(y.numpy(), [0, 1, 1, 0])


def test_standardise_uses_training_statistics_and_keeps_padding_at_zero() -> None:
    rng = np.random.default_rng(0)
    train = probes.frame_data([rng.normal(5, 3, size=(2, 50, 4)).astype(np.float32)], [np.zeros(50, int)], 2)
    test = probes.frame_data([rng.normal(5, 3, size=(2, 10, 4)).astype(np.float32)], [np.zeros(10, int)], 2)
    before = test.rows.clone()
    mean, std = probes.standardise(train, test)
    assert mean.shape == std.shape == (2, 4)
    real = train.rows[train.real]
    torch.testing.assert_close(real.mean(0), torch.zeros(2, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(real.std(0), torch.ones(2, 4), atol=1e-4, rtol=0)
    torch.testing.assert_close(test.rows[test.real], (before[test.real] - mean) / std)
    assert (train.rows[~train.real] == 0).all() and (test.rows[~test.real] == 0).all()


def test_layer_weighted_probe_trains_and_its_weights_favour_the_informative_layer() -> None:
    num_classes = 3
    x, y = _clusters(600, num_classes, 8, seed=3)
    noise = np.random.default_rng(4).normal(size=x.shape).astype(np.float32)
    stacked = np.concatenate([noise, x, noise], axis=1)  # [N, 3 layers, 8]: only layer 1 informs
    train, valid, test = _parts(stacked, y, (0, 400, 500, 600))
    res = probes.train_probe(
        train, valid, test, num_classes, seed=0, config=probes.ProbeConfig(max_epochs=60)
    )
    assert len(res.layer_weights) == 3 and abs(sum(res.layer_weights) - 1) < 1e-5
    assert res.layer_weights[1] == max(res.layer_weights)
    assert probes.accuracy(probes.confusion_matrix(res.labels, res.predictions, num_classes)) > 0.8


def test_probe_is_deterministic_for_a_seed() -> None:
    x, y = _clusters(300, 4, 8, seed=5)
    train, valid, test = _parts(x, y, (0, 200, 250, 300))
    cfg = probes.ProbeConfig(max_epochs=5)
    a = probes.train_probe(train, valid, test, 4, seed=7, config=cfg)
    b = probes.train_probe(train, valid, test, 4, seed=7, config=cfg)
    np.testing.assert_array_equal(a.predictions, b.predictions)


def test_metrics_match_hand_computed_values() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    preds = np.array([0, 0, 1, 1, 2, 2])
    cm = probes.confusion_matrix(labels, preds, 4)  # class 3 never occurs: left out of macro-F1
    assert cm.sum() == 6 and cm[0, 1] == 1
    assert probes.accuracy(cm) == pytest.approx(4 / 6)
    f1 = [2 * 2 / (3 + 2), 2 * 1 / (2 + 2), 2 * 1 / (1 + 2)]
    assert probes.macro_f1(cm) == pytest.approx(np.mean(f1))


def test_pool_utterance_is_mean_and_std_per_layer() -> None:
    feats = np.random.default_rng(0).normal(size=(2, 30, 5)).astype(np.float32)
    pooled = probes.pool_utterance(feats)
    assert pooled.shape == (2, 10)
    np.testing.assert_allclose(pooled[:, :5], feats.mean(1), rtol=1e-5)
    np.testing.assert_allclose(pooled[:, 5:], feats.std(1), rtol=1e-5)
