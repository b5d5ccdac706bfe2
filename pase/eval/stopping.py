"""Early stopping on a validation score, shared by the probes, the CTC probe and fine-tuning.

A training loop scores its validation part every so often (each epoch, every ``eval_every``
steps) and hands the score to :meth:`EarlyStopping.update`, which copies the modules' states when
the score beats the best so far; :attr:`EarlyStopping.should_stop` turns true after ``patience``
evaluations in a row without a gain, and :meth:`EarlyStopping.restore` loads the best states back.

In a loop (an error rate here, so lower is better)::

    stopper = EarlyStopping([model], patience=3, higher_is_better=False)
    for step in range(1, max_steps + 1):
        train_one_step()
        if step % eval_every == 0:
            stopper.update(step, dev_error())
            if stopper.should_stop:
                break
    stopper.restore()
"""

from __future__ import annotations

import copy
import math
import typing as tp

if tp.TYPE_CHECKING:
    import torch
    from torch import nn

#: A validation score: one number, or a tuple compared element by element (the first element
#: decides, the next ones break ties), e.g. ``(accuracy, -loss)``.
S = tp.TypeVar("S", float, tuple[float, ...])


class EarlyStopping(tp.Generic[S]):
    """The best validation score of ``modules``, the step it came at, and copies of their states.

    ``higher_is_better``: an accuracy (True) or an error rate (False). Only a strictly better
    score counts as a gain, so of equal scores the earliest state is kept. ``best``: the score to
    beat at first (default ``-inf``, or ``+inf`` when lower is better); until something beats it
    the modules' states at construction are the best ones, at step 0. A loop whose starting point
    is scored too sets :attr:`best_score` to that score. ``patience``: :attr:`should_stop` after
    that many evaluations in a row without a gain.
    """

    def __init__(
        self,
        modules: tp.Sequence[nn.Module],
        patience: int,
        *,
        higher_is_better: bool = True,
        best: S | None = None,
    ) -> None:
        self.modules = tuple(modules)
        self.patience = patience
        self.higher_is_better = higher_is_better
        if best is None:
            best = tp.cast(S, -math.inf if higher_is_better else math.inf)
        self.best_score: S = best
        self.best_step = 0
        #: Evaluations since the last gain (or since the start).
        self.since_best = 0
        #: One ``state_dict()`` copy per module, of the best state.
        self.best_states = self._copy_states()

    def _copy_states(self) -> list[dict[str, torch.Tensor]]:
        return [copy.deepcopy(m.state_dict()) for m in self.modules]

    def improves(self, score: S) -> bool:
        """Whether ``score`` beats the best score so far (strictly)."""
        return score > self.best_score if self.higher_is_better else score < self.best_score

    def update(self, step: int, score: S) -> bool:
        """Record the evaluation at ``step``: on a gain, keep ``score``, ``step`` and copies of the
        modules' states and return True; otherwise count one more evaluation without a gain."""
        if self.improves(score):
            self.best_score, self.best_step, self.since_best = score, step, 0
            self.best_states = self._copy_states()
            return True
        self.since_best += 1
        return False

    @property
    def should_stop(self) -> bool:
        """``patience`` evaluations in a row brought no gain."""
        return self.since_best >= self.patience

    def restore(self) -> None:
        """Load the best states back into the modules."""
        for module, state in zip(self.modules, self.best_states, strict=True):
            module.load_state_dict(state)
