"""Probes on frozen features: the same small classifier for every feature set.

- utterance tasks: mean + std pooling over frames, then the probe;
- frame tasks: the probe sees each frame with ``context`` frames either side (zeros, i.e. the
  training mean after standardisation, past the file's edges).

``kind="mlp"``: one hidden layer (ReLU, dropout). ``kind="linear"``: multinomial logistic
regression on the same inputs. With several layers (``--layers all``) the probe learns a
softmax-weighted sum of them first, as SUPERB does; for utterance tasks the sum is taken over
the per-layer pooled vectors (SUPERB sums frames, then pools; pooling each layer first keeps
memory at one vector per file and is identical for the mean part).

Inputs are standardised with statistics of the probe's training part. Training is Adam with a
fixed seed and early stopping on the validation part (best validation accuracy, ties broken by
lower loss); the best state is tested.
"""

from __future__ import annotations

import dataclasses
import math
import typing as tp

import numpy as np
import torch
from torch import nn

from pase.eval.stopping import EarlyStopping

ProbeKind = tp.Literal["mlp", "linear"]
#: Frames either side of the centre frame that frame-level probes see (+-20 ms), frozen or fine-tuned.
FRAME_CONTEXT = 2


@dataclasses.dataclass
class ProbeData:
    """Examples for a probe, stored without duplicating context frames.

    ``rows: [R, L, D]`` holds every example's feature rows (for frame tasks, each file's frames
    with ``context`` zero rows either side); example ``i`` reads rows
    ``centres[i] - context ... centres[i] + context``; ``labels: [N]``; ``real: [R]`` bool marks
    the rows that are frames, not padding.
    """

    rows: torch.Tensor
    centres: torch.Tensor
    labels: torch.Tensor
    real: torch.Tensor
    context: int = 0

    def __len__(self) -> int:
        return int(self.centres.numel())

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x: [B, 2 * context + 1, L, D]``, ``y: [B]`` for the examples in ``index``."""
        offsets = torch.arange(-self.context, self.context + 1)
        rows = self.rows[self.centres[index, None] + offsets]
        return rows, self.labels[index]


def pool_utterance(feats: np.ndarray) -> np.ndarray:
    """``[L, F, D] -> [L, 2D]``: mean and standard deviation over frames."""
    return np.concatenate([feats.mean(axis=1), feats.std(axis=1)], axis=-1)


def utterance_data(pooled: tp.Sequence[np.ndarray], labels: tp.Sequence[int] | np.ndarray) -> ProbeData:
    """Probe data from pooled vectors ``[L, 2D]``, one per file."""
    rows = torch.from_numpy(np.stack(pooled).astype(np.float32))
    labels_t = torch.as_tensor(list(labels), dtype=torch.long)
    return ProbeData(rows, torch.arange(len(pooled)), labels_t, torch.ones(len(pooled), dtype=torch.bool))


def frame_data(
    feats: tp.Sequence[np.ndarray], labels: tp.Sequence[np.ndarray], context: int, ignore: int = -1
) -> ProbeData:
    """Probe data from per-file frames ``[L, F, D]`` and per-frame labels ``[F]``.

    Frames labelled ``ignore`` are not examples but still serve as context. Pads are zeros,
    which :func:`standardise` leaves alone, so they read as the training mean.
    """
    blocks, centres, ys, real = [], [], [], []
    offset = 0
    for x, y in zip(feats, labels, strict=True):
        if x.shape[1] != len(y):
            raise ValueError(f"{x.shape[1]} frames but {len(y)} frame labels")
        num_layers, num_frames, dim = x.shape
        pad = np.zeros((num_layers, context, dim), dtype=np.float32)
        blocks.append(np.concatenate([pad, x, pad], axis=1).transpose(1, 0, 2))
        real.append(np.r_[np.zeros(context, bool), np.ones(num_frames, bool), np.zeros(context, bool)])
        keep = np.flatnonzero(y != ignore)
        centres.append(offset + context + keep)
        ys.append(y[keep])
        offset += num_frames + 2 * context
    return ProbeData(
        torch.from_numpy(np.concatenate(blocks).astype(np.float32)),
        torch.from_numpy(np.concatenate(centres)).long(),
        torch.from_numpy(np.concatenate(ys)).long(),
        torch.from_numpy(np.concatenate(real)),
        context,
    )


def standardise(train: ProbeData, *others: ProbeData, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardise every part in place with the training part's per-layer, per-dim statistics.

    Statistics come from ``train``'s real rows only (not the zero padding). Returns
    ``(mean, std)``, each ``[L, D]``.
    """
    frames = train.rows[train.real]
    mean, std = frames.mean(dim=0), frames.std(dim=0).clamp_min(eps)
    for data in (train, *others):
        data.rows[data.real] = (data.rows[data.real] - mean) / std
    return mean, std


class Probe(nn.Module):
    """``x: [B, K, L, D] -> logits [B, C]`` (K context frames, L layers)."""

    def __init__(
        self,
        num_layers: int,
        dim: int,
        num_classes: int,
        context: int = 0,
        kind: ProbeKind = "mlp",
        hidden: int = 256,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.layer_logits = nn.Parameter(torch.zeros(num_layers)) if num_layers > 1 else None
        width = dim * (2 * context + 1)
        self.net: nn.Module
        if kind == "mlp":
            self.net = nn.Sequential(
                nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
            )
        elif kind == "linear":
            self.net = nn.Linear(width, num_classes)
        else:
            raise ValueError(f"probe must be mlp or linear, not {kind!r}")

    def layer_weights(self) -> torch.Tensor:
        """``[L]`` softmax weights of the layers (``[1.0]`` for one layer)."""
        if self.layer_logits is None:
            return torch.ones(1)
        return torch.softmax(self.layer_logits, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer_logits is None:
            mixed = x[:, :, 0]
        else:
            mixed = torch.einsum("bkld,l->bkd", x, self.layer_weights())
        return tp.cast(torch.Tensor, self.net(mixed.flatten(1)))


@dataclasses.dataclass
class ProbeConfig:
    """Training settings; the defaults are used for every feature set alike."""

    kind: ProbeKind = "mlp"
    hidden: int = 256
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    max_epochs: int = 200
    patience: int = 15


@dataclasses.dataclass
class ProbeResult:
    """Test predictions of one trained probe and how training went."""

    predictions: np.ndarray  # [N_test] class indices
    labels: np.ndarray  # [N_test]
    epochs: int
    best_epoch: int
    valid_accuracy: float
    layer_weights: list[float]
    #: The trained probe's weights (the best validation state), e.g. for fine-tuning to start from.
    state: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TrainedProbes:
    """A frozen run's probes, kept in memory: the input standardisation and each seed's weights.

    ``pase eval --finetune`` starts the fine-tuned probe from these (linear probing, then fine-tuning).
    Created empty and filled by the frozen run (``evaluate(trained_out=...)``).
    """

    mean: torch.Tensor = dataclasses.field(default_factory=lambda: torch.zeros(0))
    std: torch.Tensor = dataclasses.field(default_factory=lambda: torch.zeros(0))
    states: dict[int, dict[str, torch.Tensor]] = dataclasses.field(default_factory=dict)


def _predict(model: Probe, data: ProbeData, batch_size: int = 4096) -> tuple[torch.Tensor, float]:
    """Predicted classes ``[N]`` and mean cross-entropy on ``data``."""
    model.eval()
    preds, loss = [], 0.0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            x, y = data.batch(torch.arange(start, min(start + batch_size, len(data))))
            logits = model(x)
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            preds.append(logits.argmax(dim=1))
    return torch.cat(preds), loss / max(len(data), 1)


def train_probe(
    train: ProbeData,
    valid: ProbeData,
    test: ProbeData,
    num_classes: int,
    seed: int,
    config: ProbeConfig | None = None,
) -> ProbeResult:
    """Fit a probe on ``train`` with early stopping on ``valid``; predict ``test``."""
    cfg = config or ProbeConfig()
    if len(train) == 0 or len(valid) == 0 or len(test) == 0:
        raise ValueError(f"empty probe split: train {len(train)}, valid {len(valid)}, test {len(test)}")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # init and dropout draw from the global generator
        num_layers, dim = train.rows.shape[1:]
        model = Probe(num_layers, dim, num_classes, train.context, cfg.kind, cfg.hidden, cfg.dropout)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        # the score is (accuracy, -loss): higher accuracy, ties broken by lower loss
        stopper = EarlyStopping([model], cfg.patience, best=(-1.0, -math.inf))
        epoch = 0
        for epoch in range(1, cfg.max_epochs + 1):
            model.train()
            for index in torch.randperm(len(train), generator=gen).split(cfg.batch_size):
                x, y = train.batch(index)
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            pred, valid_loss = _predict(model, valid)
            score = (float((pred == valid.labels).float().mean()), -valid_loss)
            if not stopper.update(epoch, score) and stopper.should_stop:
                break
        stopper.restore()
        pred, _ = _predict(model, test)
    return ProbeResult(
        predictions=pred.numpy(),
        labels=test.labels.numpy(),
        epochs=epoch,
        best_epoch=stopper.best_step,
        valid_accuracy=stopper.best_score[0],
        layer_weights=[float(w) for w in model.layer_weights().detach()],
        state=stopper.best_states[0],
    )


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """``[C, C]`` counts, rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, predictions), 1)
    return cm


def accuracy(cm: np.ndarray) -> float:
    return float(np.trace(cm) / max(cm.sum(), 1))


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over the classes that occur in the labels or the predictions."""
    tp_ = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    present = (support + predicted) > 0
    f1 = np.divide(2 * tp_, support + predicted, out=np.zeros_like(tp_), where=present)
    return float(f1[present].mean()) if present.any() else 0.0
