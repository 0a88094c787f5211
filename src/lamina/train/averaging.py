"""``WeightAveraging``: average the model's weights while it trains and, at the end, put
the average in the model: stochastic weight averaging (SWA), or the exponentially weighted
average of the weights (Keras's ``use_ema``). The averages are those of
:class:`lamina.optim.AveragedModel`."""

from __future__ import annotations

import numbers

from lamina.nn import BatchNorm
from lamina.optim.averaging import AveragedModel, update_batch_norm
from lamina.train.callbacks import Callback

__all__ = ["SwapEMAWeights", "WeightAveraging"]

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


class SwapEMAWeights(Callback):
    """Validate with the averaged weights, as Keras's ``SwapEMAWeights`` does with an EMA optimizer.

    ``source``: the :class:`WeightAveraging` callback keeping the average (by default the
    first one among the trainer's callbacks) or an :class:`~lamina.optim.AveragedModel`.
    Before ``fit`` evaluates on the validation data, the averaged parameters are loaded into
    the model (the buffers too if the average has ``use_buffers``; otherwise batch
    normalization keeps the model's running statistics); the training weights are put back
    afterwards. The ``val_`` logs thus measure the average, once a first update has made
    one (before that, the model's own weights). An average updated per epoch
    (``WeightAveraging(every="epoch")``) takes in an epoch's weights at its end, after the
    validation; ``every="iteration"`` is up to date.

    ``swap_on_epoch=True``: the averaged weights are also in the model at each epoch's end,
    for the callbacks listed after this one (``ModelCheckpoint``,
    ``EarlyStopping(restore_best=True)``: the checkpoints and the best weights are then the
    averaged ones), and are swapped out at the next epoch's start. After the last epoch they
    stay in the model, as Keras's EMA optimizer leaves them.
    """

    def __init__(self, source=None, swap_on_epoch: bool = False):
        if source is not None and not isinstance(source, (WeightAveraging, AveragedModel)):
            raise TypeError(f"SwapEMAWeights: source must be a WeightAveraging callback, an AveragedModel or "
                            f"None, got {type(source).__name__}")
        self.source = source
        self.swap_on_epoch = bool(swap_on_epoch)
        self._training_weights: dict | None = None   # set while the model holds the averaged weights

    def _average(self) -> AveragedModel | None:
        source = self.source
        if source is None:
            source = next((cb for cb in self.trainer.callbacks if isinstance(cb, WeightAveraging)), None)
            if source is None:
                raise ValueError("SwapEMAWeights: no weight average to swap in; add a WeightAveraging callback "
                                 "(e.g. WeightAveraging(decay=0.99, every='iteration')) or pass source=")
        return source.averaged if isinstance(source, WeightAveraging) else source

    def on_train_begin(self, logs: dict) -> None:
        self._training_weights = None
        self._average()                              # fail early without an average
        callbacks = list(self.trainer.callbacks)
        source = self.source if self.source is not None else next(
            cb for cb in callbacks if isinstance(cb, WeightAveraging))
        if (self.swap_on_epoch and isinstance(source, WeightAveraging) and source.every == "epoch"
                and source in callbacks and callbacks.index(source) > callbacks.index(self)):
            raise ValueError("SwapEMAWeights: with swap_on_epoch=True, a WeightAveraging(every='epoch') listed "
                             "after it would average the swapped-in weights; list the WeightAveraging first")

    def _swap_in(self) -> None:
        average = self._average()
        if self._training_weights is not None or average is None or average.n_averaged == 0:
            return
        model = self.trainer.model
        state = model.state_dict()
        self._training_weights = {k: v.copy() for k, v in state.items()}
        averaged = average.module.state_dict()
        swapped = set(averaged) if average.use_buffers else {name for name, _ in average.module.named_parameters()}
        model.load_state_dict({k: averaged[k] if k in swapped else v for k, v in state.items()})

    def _swap_out(self) -> None:
        if self._training_weights is not None:
            self.trainer.model.load_state_dict(self._training_weights)
            self._training_weights = None

    def on_test_begin(self, logs: dict) -> None:
        self._swap_in()

    def on_test_end(self, logs: dict) -> None:
        self._swap_out()

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        self._swap_out()

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if self.swap_on_epoch:
            self._swap_in()

    def on_exception(self, error: BaseException) -> None:
        self._swap_out()

    def __repr__(self) -> str:
        return f"SwapEMAWeights(source={self.source!r}, swap_on_epoch={self.swap_on_epoch})"
