"""``WeightAveraging``: average the model's weights while it trains and, at the end, put
the average in the model: stochastic weight averaging (SWA), or the exponentially weighted
average of the weights (Keras's ``use_ema``). The averages are those of
:class:`lamina.optim.AveragedModel`."""

from __future__ import annotations

import numbers

from lamina.nn import BatchNorm
from lamina.optim.averaging import AveragedModel, update_batch_norm
from lamina.train.callbacks import Callback

__all__ = ["WeightAveraging"]

EVERY = ("epoch", "iteration")


class WeightAveraging(Callback):
    """Keep an :class:`~lamina.optim.AveragedModel` of ``trainer.model`` during ``fit``.

    With theta_t the weights at the t-th update of the average and v_t the average:
    ``decay=None`` gives the equal average v_t = v_{t-1} + (theta_t - v_{t-1}) / t (SWA),
    ``decay=beta`` in [0, 1) the exponentially weighted one v_t = beta v_{t-1} + (1 - beta)
    theta_t; both start from v_1 = theta_1.

    ``start_epoch``: the first epoch (counted from 0) whose weights enter the average,
    typically once the cost has stopped falling fast and a constant or cyclic learning rate
    keeps the weights moving around a minimum. ``every``: ``"epoch"`` updates the average
    with the weights at the end of each of those epochs, ``"iteration"`` after each
    optimizer step (one per ``accumulate`` mini-batches).

    ``swap_at_end``: when training ends the averaged weights are copied into the model
    (if any update was made) and, when the model has batch normalization, its running
    statistics are recomputed for them by :func:`~lamina.optim.update_batch_norm` with one
    pass over the trainer's training loader. ``swap_at_end=False`` leaves the model as
    trained; the average is in :attr:`averaged` either way.

    Each ``fit`` starts a new average, except a resumed one: the average is part of a training
    checkpoint, so ``fit(resume_from=...)`` carries it on.
    Among several callbacks that write the weights at the end of training (such as
    ``EarlyStopping(restore_best=True)``) the last one in the list wins.
    """

    def __init__(self, decay: float | None = None, start_epoch: int = 0, every: str = "epoch",
                 swap_at_end: bool = True):
        if decay is not None and (isinstance(decay, bool) or not isinstance(decay, numbers.Real)
                                  or not 0.0 <= decay < 1.0):
            raise ValueError(f"WeightAveraging: decay must be None (equal average) or a number in [0, 1), "
                             f"got {decay!r}")
        if isinstance(start_epoch, bool) or not isinstance(start_epoch, numbers.Integral) or start_epoch < 0:
            raise ValueError(f"WeightAveraging: start_epoch must be an integer >= 0 (epochs count from 0), "
                             f"got {start_epoch!r}")
        if every not in EVERY:
            raise ValueError(f"WeightAveraging: every must be one of {EVERY}, got {every!r}")
        self.decay = decay
        self.start_epoch = int(start_epoch)
        self.every = every
        self.swap_at_end = bool(swap_at_end)
        self.averaged: AveragedModel | None = None
        self._steps_seen = 0

    def on_train_begin(self, logs: dict) -> None:
        self.averaged = AveragedModel(self.trainer.model, decay=self.decay)
        self._steps_seen = self.trainer.steps

    def on_batch_end(self, iteration: int, logs: dict) -> None:
        # Only after an optimizer step: with gradient accumulation most mini-batches change nothing.
        stepped = self.trainer.steps != self._steps_seen
        self._steps_seen = self.trainer.steps
        if self.every == "iteration" and stepped and self.trainer.epoch >= self.start_epoch:
            self.averaged.update(self.trainer.model)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if self.every == "epoch" and epoch >= self.start_epoch:
            self.averaged.update(self.trainer.model)

    def on_train_end(self, logs: dict) -> None:
        if not self.swap_at_end or self.averaged is None or self.averaged.n_averaged == 0:
            return
        model = self.trainer.model
        model.load_state_dict(self.averaged.module.state_dict())
        if self.trainer.loader is not None and any(isinstance(m, BatchNorm) for m in model.modules()):
            update_batch_norm(model, self.trainer.loader)

    def state_dict(self) -> dict:
        return {"averaged": dict(self.averaged.state_dict())}

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state["averaged"])

    def __repr__(self) -> str:
        return (f"WeightAveraging(decay={self.decay}, start_epoch={self.start_epoch}, every={self.every!r}, "
                f"swap_at_end={self.swap_at_end})")
