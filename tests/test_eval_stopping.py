"""The early stopping shared by the probes, the CTC probe and fine-tuning."""

from __future__ import annotations

import math

import torch
from torch import nn

from pase.eval.stopping import EarlyStopping


def _set(module: nn.Linear, value: float) -> None:
    with torch.no_grad():
        module.weight.fill_(value)


def test_keeps_the_first_of_equal_scores_and_restores_it() -> None:
    model = nn.Linear(2, 1)
    _set(model, 0.0)
    stopper = EarlyStopping([model], patience=2)
    assert stopper.best_score == -math.inf and stopper.best_step == 0 and not stopper.should_stop
    for step, (value, score) in enumerate([(1.0, 0.5), (2.0, 0.5), (3.0, 0.7), (4.0, 0.6)], start=1):
        _set(model, value)
        gained = stopper.update(step, score)
        assert gained == (step in (1, 3))
    assert (stopper.best_score, stopper.best_step, stopper.since_best) == (0.7, 3, 1)
    assert not stopper.should_stop
    assert not stopper.update(5, 0.7)  # a tie is not a gain
    assert stopper.should_stop
    stopper.restore()
    assert torch.all(model.weight == 3.0)


def test_lower_is_better_and_the_starting_state_is_kept_when_nothing_beats_it() -> None:
    encoder, head = nn.Linear(2, 2), nn.Linear(2, 1)
    _set(encoder, 1.0)
    _set(head, -1.0)
    stopper = EarlyStopping([encoder, head], patience=1, higher_is_better=False, best=0.5)
    _set(encoder, 9.0)
    _set(head, 9.0)
    assert not stopper.update(10, 0.5) and not stopper.improves(0.6) and stopper.improves(0.4)
    assert stopper.should_stop and stopper.best_step == 0
    stopper.restore()
    assert torch.all(encoder.weight == 1.0) and torch.all(head.weight == -1.0)


def test_tuple_scores_break_ties_on_the_next_element() -> None:
    stopper = EarlyStopping([nn.Linear(1, 1)], patience=3, best=(-1.0, -math.inf))
    assert stopper.update(1, (0.5, -2.0))
    assert stopper.update(2, (0.5, -1.0))  # same accuracy, lower loss
    assert not stopper.update(3, (0.5, -1.5))
    assert stopper.update(4, (0.6, -9.0))  # higher accuracy wins whatever the loss
    assert stopper.best_score == (0.6, -9.0) and stopper.best_step == 4


def test_the_best_state_is_a_copy() -> None:
    model = nn.Linear(1, 1)
    _set(model, 2.0)
    stopper = EarlyStopping([model], patience=1)
    stopper.update(1, 1.0)
    _set(model, 5.0)
    assert torch.all(stopper.best_states[0]["weight"] == 2.0)
