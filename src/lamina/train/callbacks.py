"""Callbacks: code the fit loop calls at the start and end of training, epochs and batches.

A callback sees the trainer (``self.trainer``) and the logs (loss and metrics so far);
setting ``trainer.stop_training = True`` ends training after the current batch or epoch.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import sys

import numpy as np

from lamina.distributed import is_main_process
from lamina.io import atomic_write
from lamina.optim.schedules.plateau import higher_is_better


def main_process_only(method):
    """A callback method that writes files: in a distributed run it runs on rank 0 only (every
    rank holds the same weights and the same reduced logs), elsewhere always."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        if is_main_process():
            return method(self, *args, **kwargs)
        return None

    return run


class Callback:
    trainer = None

    def set_trainer(self, trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, logs: dict) -> None: ...

    def on_train_end(self, logs: dict) -> None: ...

    def on_epoch_begin(self, epoch: int, logs: dict) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict) -> None: ...

    def on_batch_end(self, iteration: int, logs: dict) -> None: ...

    def on_test_begin(self, logs: dict) -> None:
        """Called before ``fit`` evaluates on the validation data (Keras's name)."""

    def on_test_end(self, logs: dict) -> None:
        """Called after ``fit`` has evaluated on the validation data, with the ``val_`` logs."""

    def checkpoint_to_resume(self) -> str | None:
        """A training checkpoint that ``fit`` should resume from (in place of ``resume_from`` and
        ``initial_epoch``), or None; asked before training starts."""
        return None

    def on_exception(self, error: BaseException) -> None:
        """Called instead of ``on_train_end`` when ``fit`` is left by an exception (a
        ``KeyboardInterrupt`` included), before it propagates: close what the callback holds open."""

    def state_dict(self) -> dict | None:
        """What a training checkpoint keeps of this callback (numbers, strings, arrays, nested
        dicts and lists), so that a resumed ``fit`` carries on where it stopped; None keeps nothing."""
        return None

    def load_state_dict(self, state: dict) -> None:
        """Take back :meth:`state_dict`'s value; called by a resumed ``fit`` after ``on_train_begin``."""


class LambdaCallback(Callback):
    """A callback made of functions, one per hook, each called with that hook's arguments:
    ``on_train_begin(logs)``, ``on_train_end(logs)``, ``on_epoch_begin(epoch, logs)``,
    ``on_epoch_end(epoch, logs)``, ``on_batch_end(iteration, logs)``, ``on_exception(error)``. A hook left ``None``
    does nothing. ``LambdaCallback(on_epoch_end=lambda epoch, logs: print(epoch, logs["loss"]))``.
    """

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_batch_end=None, on_train_begin=None,
                 on_train_end=None, on_exception=None):
        hooks = {"on_epoch_begin": on_epoch_begin, "on_epoch_end": on_epoch_end, "on_batch_end": on_batch_end,
                 "on_train_begin": on_train_begin, "on_train_end": on_train_end, "on_exception": on_exception}
        for name, function in hooks.items():
            if function is not None and not callable(function):
                raise TypeError(f"LambdaCallback: {name} must be callable or None, got {type(function).__name__}")
        self.functions = hooks

    def on_train_begin(self, logs: dict) -> None:
        if self.functions["on_train_begin"] is not None:
            self.functions["on_train_begin"](logs)

    def on_train_end(self, logs: dict) -> None:
        if self.functions["on_train_end"] is not None:
            self.functions["on_train_end"](logs)

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        if self.functions["on_epoch_begin"] is not None:
            self.functions["on_epoch_begin"](epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if self.functions["on_epoch_end"] is not None:
            self.functions["on_epoch_end"](epoch, logs)

    def on_batch_end(self, iteration: int, logs: dict) -> None:
        if self.functions["on_batch_end"] is not None:
            self.functions["on_batch_end"](iteration, logs)

    def on_exception(self, error: BaseException) -> None:
        if self.functions["on_exception"] is not None:
            self.functions["on_exception"](error)


class ProgressBar(Callback):
    """A tqdm bar per epoch with the loss, metrics, samples/s and ETA; quiet when
    ``verbose=0`` or when standard error is not a terminal (unless ``force=True``)."""

    def __init__(self, verbose: int = 1, force: bool = False):
        self.verbose = verbose
        self.force = force
        self.bar = None

    def _active(self) -> bool:
        return self.verbose > 0 and (self.force or sys.stderr.isatty())

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        if self._active():
            from tqdm import tqdm

            total = self.trainer.samples_per_epoch
            self.bar = tqdm(total=total, desc=f"epoch {epoch + 1}/{self.trainer.epochs}", unit="sample",
                            unit_scale=True, leave=True, dynamic_ncols=True)

    def on_batch_end(self, iteration: int, logs: dict) -> None:
        if self.bar is not None:
            self.bar.update(logs.get("batch_size", 0))
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items() if k != "batch_size"}, refresh=False)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()})
            self.on_exception(None)

    def on_exception(self, error: BaseException | None) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _Monitor(Callback):
    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0):
        if mode == "auto":
            mode = "max" if higher_is_better(monitor) else "min"
        if mode not in ("min", "max"):
            raise ValueError(f"{type(self).__name__}: mode must be 'min', 'max' or 'auto', got {mode!r}")
        self.monitor, self.mode, self.min_delta = monitor, mode, min_delta
        self.best = math.inf if mode == "min" else -math.inf

    def _value(self, logs: dict) -> float:
        if self.monitor not in logs:
            raise KeyError(f"{type(self).__name__}: monitored quantity {self.monitor!r} is not logged; "
                           f"available: {sorted(logs)}")
        return float(logs[self.monitor])

    def _not_validated(self, epoch: int, logs: dict) -> bool:
        """Whether the monitored ``val_`` quantity is missing because ``fit`` skipped validation
        this epoch (``validation_freq``): the epoch is then left out, as Keras does."""
        freq = getattr(self.trainer, "validation_freq", 1)
        return self.monitor.startswith("val_") and self.monitor not in logs and (epoch + 1) % freq != 0

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved (by more than ``min_delta``) for ``patience``
    epochs, as Keras's ``EarlyStopping``.

    ``start_from_epoch``: the epochs before it (counted from 0) are not watched, for a
    warm-up. ``baseline``: a value to beat; until one beats it, the wait is not reset (so
    training stops after ``patience`` epochs unless the baseline is beaten). With
    ``restore_best=True`` (Keras's name ``restore_best_weights`` also works) the weights of
    the best epoch are put back at the end of training; those of the first watched epoch
    when none improved on anything.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, mode: str = "auto",
                 min_delta: float = 0.0, restore_best: bool = False, start_from_epoch: int = 0,
                 baseline: float | None = None, restore_best_weights: bool | None = None):
        super().__init__(monitor, mode, abs(min_delta))
        if isinstance(start_from_epoch, bool) or not isinstance(start_from_epoch, (int, np.integer)) \
                or start_from_epoch < 0:
            raise ValueError(f"EarlyStopping: start_from_epoch must be an integer >= 0, got {start_from_epoch!r}")
        self.patience, self.start_from_epoch, self.baseline = patience, int(start_from_epoch), baseline
        self.restore_best = restore_best if restore_best_weights is None else bool(restore_best_weights)
        self.on_train_begin({})

    def on_train_begin(self, logs: dict) -> None:
        """Start afresh, as Keras does: an instance reused for another ``fit`` forgets the last one
        (a resumed ``fit`` then loads the checkpoint's state)."""
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait, self.best_weights, self.stopped_epoch, self.best_epoch = 0, None, None, None

    def _beats_baseline(self, value: float) -> bool:
        if self.baseline is None:
            return True
        return value < self.baseline - self.min_delta if self.mode == "min" else value > self.baseline + self.min_delta

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if epoch < self.start_from_epoch or self._not_validated(epoch, logs):
            return
        value = self._value(logs)
        if self.restore_best and self.best_weights is None:
            self._keep_weights(epoch)
        self.wait += 1
        if self._improved(value):
            self.best = value
            if self.restore_best:
                self._keep_weights(epoch)
            else:
                self.best_epoch = epoch
            if self._beats_baseline(value):
                self.wait = 0
            return
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True

    def _keep_weights(self, epoch: int) -> None:
        self.best_weights = {k: v.copy() for k, v in self.trainer.model.state_dict().items()}
        self.best_epoch = epoch

    def on_train_end(self, logs: dict) -> None:
        if self.restore_best and self.best_weights is not None:
            self.trainer.model.load_state_dict(self.best_weights)

    def state_dict(self) -> dict:
        return {"best": self.best, "wait": self.wait, "best_weights": self.best_weights,
                "best_epoch": -1 if self.best_epoch is None else self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.wait, self.best_weights = float(state["best"]), int(state["wait"]), state["best_weights"]
        best_epoch = int(state.get("best_epoch", -1))
        self.best_epoch = None if best_epoch < 0 else best_epoch


class ModelCheckpoint(_Monitor):
    """Save a training checkpoint (model, optimizer, schedule, epoch, random states and the
    callbacks' states) at the end of each epoch, or only when ``monitor`` improves. The path is
    formatted with the epoch number from 1 and the epoch's logs, as in Keras:
    ``"m-{epoch:02d}-{val_loss:.3f}.st"``. The file is written once every callback has finished
    the epoch, so it holds their states after that epoch. Writes are atomic."""

    def __init__(self, path: str | os.PathLike, monitor: str = "val_loss", save_best_only: bool = False,
                 mode: str = "auto"):
        super().__init__(monitor, mode)
        self.path, self.save_best_only = str(path), save_best_only

    def _due(self, epoch: int, logs: dict) -> bool:
        """Whether this epoch saves: always, or with ``save_best_only`` when the monitored value
        improved (then recorded as the new best)."""
        if not self.save_best_only:
            return True
        if self._not_validated(epoch, logs):
            return False
        value = self._value(logs)
        if not self._improved(value):
            return False
        self.best = value
        return True

    def _filename(self, epoch: int, logs: dict) -> str:
        """The path formatted with ``epoch`` (counted from 1) and the logged quantities."""
        try:
            return self.path.format(epoch=epoch + 1, **logs)
        except KeyError as error:
            raise KeyError(f"{type(self).__name__}: the path {self.path!r} names {error.args[0]!r}, which is not "
                           f"logged at epoch {epoch + 1}; logged: {sorted(logs)} (and 'epoch')") from None

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if self._due(epoch, logs):
            self.trainer.request_checkpoint(self._filename(epoch, logs), epoch=epoch + 1)

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.best = float(state["best"])


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate from ``schedule(epoch) -> lr`` at each epoch start."""

    def __init__(self, schedule):
        self.schedule = schedule

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        self.trainer.optimizer.lr = float(self.schedule(epoch))


class CSVLogger(Callback):
    """Append one row of epoch logs per epoch to a CSV file (rewritten atomically). Each ``fit``
    starts a new file (Keras's ``append=False``); a resumed ``fit`` keeps the rows of the epochs
    before the checkpoint."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self.rows: list[dict] = []

    def on_train_begin(self, logs: dict) -> None:
        self.rows = []

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.rows.append({"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}})
        self._write()

    @main_process_only
    def _write(self) -> None:
        fields = list(dict.fromkeys(k for row in self.rows for k in row))
        import io

        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.rows)
        with atomic_write(self.path) as handle:
            handle.write(text.getvalue().encode())

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict) -> None:
        self.rows = [dict(row) for row in state["rows"]]


class TerminateOnNaN(Callback):
    """Stop training as soon as the loss is NaN or infinite, naming the iteration. The epoch still
    ends as in Keras (validation, ``on_epoch_end``, its row in the history and CSV log), but no
    training checkpoint of its broken weights is written: the last good one stays."""

    def __init__(self):
        self.message = None

    def on_batch_end(self, iteration: int, logs: dict) -> None:
        loss = logs.get("loss")
        if loss is not None and not np.isfinite(loss):
            self.message = f"TerminateOnNaN: the loss became {loss} at iteration {iteration}; training stopped"
            print(self.message, file=sys.stderr)
            self.trainer.stop_training = True


class ReduceLROnPlateau(_Monitor):
    """Divide the learning rate when ``monitor`` stops improving, as Keras's callback of that
    name (the per-epoch schedule :class:`lamina.optim.ReduceOnPlateau` follows PyTorch's rules).

    At each epoch's end (those that ``validation_freq`` leaves unvalidated are skipped for a
    ``val_`` quantity): during a cooldown, its counter goes down and the wait is reset. A
    value better than the best by more than ``min_delta`` becomes the best and resets the
    wait; otherwise, outside a cooldown, the wait grows by one, and once it reaches
    ``patience`` the learning rate becomes max(lr * factor, min_lr) (if lr > min_lr), a
    cooldown of ``cooldown`` epochs starts and the wait is reset. ``mode='auto'`` maximises
    accuracies and scores, minimises losses and errors. The new rate is set on
    ``trainer.optimizer.lr``, so a schedule that sets the rate itself overrides it.
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, mode: str = "auto",
                 min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0, verbose: int = 0):
        super().__init__(monitor, mode, abs(min_delta))
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0.0 <= factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be in [0, 1) (new lr = lr * factor), got {factor!r}")
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"ReduceLROnPlateau: {name} must be an integer >= 0, got {value!r}")
        if not min_lr >= 0:
            raise ValueError(f"ReduceLROnPlateau: min_lr must be >= 0, got {min_lr!r}")
        self.factor, self.patience, self.cooldown = float(factor), int(patience), int(cooldown)
        self.min_lr, self.verbose = float(min_lr), verbose
        self.wait, self.cooldown_counter = 0, 0

    def on_train_begin(self, logs: dict) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait, self.cooldown_counter = 0, 0

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if self._not_validated(epoch, logs):
            return
        value = self._value(logs)
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(value):
            self.best, self.wait = value, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience:
                self._reduce(epoch)

    def _reduce(self, epoch: int) -> None:
        optimizer = self.trainer.optimizer
        old = float(optimizer.lr)
        if old > self.min_lr:
            optimizer.lr = max(old * self.factor, self.min_lr)
            if self.verbose:
                print(f"ReduceLROnPlateau: epoch {epoch + 1}: learning rate {old:.4g} -> {optimizer.lr:.4g}",
                      file=sys.stderr)
            self.cooldown_counter, self.wait = self.cooldown, 0

    def state_dict(self) -> dict:
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.wait = float(state["best"]), int(state["wait"])
        self.cooldown_counter = int(state["cooldown_counter"])
