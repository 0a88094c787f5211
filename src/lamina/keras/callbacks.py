"""Keras's callbacks: lamina's, under Keras's names, arguments and defaults.

A callback sees the Keras model as ``self.model`` (and lamina's Trainer as ``self.trainer``);
``self.model.stop_training = True`` ends training as in Keras. Differences from lamina's
classes: :class:`EarlyStopping` waits ``patience=0`` epochs by default (Keras's default);
:class:`ModelCheckpoint` saves the model (``model.save``) or its weights
(``save_weights_only=True``) rather than a training checkpoint; the schedule of
:class:`LearningRateScheduler` may take ``(epoch)`` or Keras's ``(epoch, lr)``.
"""

from __future__ import annotations

import inspect
import os
import sys

from lamina import train
from lamina.train import BackupAndRestore, LambdaCallback, ReduceLROnPlateau, TerminateOnNaN

__all__ = [
    "BackupAndRestore", "CSVLogger", "Callback", "EarlyStopping", "History", "LambdaCallback",
    "LearningRateScheduler", "ModelCheckpoint", "ReduceLROnPlateau", "TerminateOnNaN",
]


class Callback(train.Callback):
    """Base class of Keras-style callbacks: ``self.model`` is the model being trained."""

    @property
    def model(self):
        return None if self.trainer is None else self.trainer.model


class History:
    """What ``fit`` returns: ``history`` (a dict of per-epoch lists: loss, metrics, their
    ``val_`` twins), ``epoch`` (the epochs trained, from 0), ``params`` and ``model``."""

    def __init__(self, history: dict[str, list[float]], epoch: list[int], params: dict, model=None):
        self.history, self.epoch, self.params, self.model = history, epoch, params, model

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


class EarlyStopping(train.EarlyStopping):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs (Keras's default 0: at the first epoch without improvement)."""

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline: float | None = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0):
        super().__init__(monitor=monitor, patience=patience, mode=mode, min_delta=min_delta,
                         restore_best=restore_best_weights, start_from_epoch=start_from_epoch, baseline=baseline)
        self.verbose = verbose

    def on_train_end(self, logs: dict) -> None:
        super().on_train_end(logs)
        if self.verbose and self.stopped_epoch is not None:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping", file=sys.stderr)


class ModelCheckpoint(train.ModelCheckpoint):
    """Save the model (or only its weights) at the end of each epoch, or only when
    ``monitor`` improves; ``{epoch}`` (and ``{epoch:02d}``) in ``filepath`` is the epoch number
    from 1, ``{val_loss:.3f}`` and the like a logged value. Writes are atomic."""

    def __init__(self, filepath: str | os.PathLike, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False, mode: str = "auto",
                 save_freq: str = "epoch", initial_value_threshold: float | None = None):
        if save_freq != "epoch":
            raise ValueError(f"ModelCheckpoint: save_freq must be 'epoch', got {save_freq!r}")
        super().__init__(filepath, monitor=monitor, save_best_only=save_best_only, mode=mode)
        self.save_weights_only, self.verbose = bool(save_weights_only), verbose
        if initial_value_threshold is not None:
            self.best = float(initial_value_threshold)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if not self._due(epoch, logs):
            return
        path = self._filename(epoch, logs)
        model = self.trainer.model
        if self.save_weights_only:
            model.save_weights(path)
        else:
            model.save(path)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved to {path}", file=sys.stderr)


class LearningRateScheduler(train.LearningRateScheduler):
    """Set the learning rate at each epoch's start to ``schedule(epoch, lr)`` (or
    ``schedule(epoch)``), epochs counted from 0."""

    def __init__(self, schedule, verbose: int = 0):
        super().__init__(schedule)
        self.verbose = verbose
        try:
            self._with_lr = len(inspect.signature(schedule).parameters) >= 2
        except (TypeError, ValueError):
            self._with_lr = True

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        optimizer = self.trainer.optimizer
        rate = self.schedule(epoch, float(optimizer.lr)) if self._with_lr else self.schedule(epoch)
        optimizer.lr = float(rate)
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {optimizer.lr}.",
                  file=sys.stderr)


class CSVLogger(train.CSVLogger):
    """Write one row of logs per epoch to ``filename`` (rewritten atomically each epoch);
    lamina numbers the epochs from 1 where Keras's column starts at 0."""

    def __init__(self, filename: str | os.PathLike, separator: str = ",", append: bool = False):
        if separator != "," or append:
            raise ValueError("CSVLogger: only separator=',' and append=False are supported")
        super().__init__(filename)
