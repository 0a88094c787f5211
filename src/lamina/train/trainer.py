"""``Trainer``: the fit loop, evaluation and prediction.

One iteration of mini-batch gradient descent: forward the batch, compute the cost J,
back-propagate dJ/dtheta, let the optimizer update theta, step an iteration schedule.
Training data, validation data and the held-out test data stay apart: ``fit`` tunes on
``val`` only, and the test set is for ``evaluate`` at the end.

A model of several inputs (a functional :class:`lamina.nn.Model` of a list of inputs) takes
its inputs as a tuple or list of arrays of the same length, one per input, wherever one
array would go: ``fit(((x_image, x_meta), y))``, ``predict([x_image, x_meta])``.

The training step (forward, cost, backward, update) is in :mod:`lamina.train.trainer_steps`,
the handling of the data (loaders, checks before training, passes) in
:mod:`lamina.train.trainer_data`; ``Trainer`` builds on both.
"""

from __future__ import annotations

import itertools
import math
import os
import time
import warnings

import numpy as np

import lamina
from lamina import backend
from lamina.autograd import no_grad
from lamina.data import ArrayDataset, DataLoader
from lamina.data.dataset import num_samples
from lamina.data.iterable import is_iterable_dataset
from lamina.distributed import is_main_process
from lamina.train import checkpoint
from lamina.train.callbacks import Callback, ProgressBar
from lamina.train.history import History
from lamina.train.metrics import get_metric
from lamina.train.rank_logs import any_rank_stops, reduce_over_ranks, trains_over_ranks
from lamina.train.trainer_data import (  # noqa: F401  (the helpers that moved there, importable from here too)
    _array_dataset,
    _check_metrics_have_labels,
    _labelled_batches,
    _prepend,
    _TrainerData,
    _with_sample_weight,
)
from lamina.train.trainer_steps import (  # noqa: F401  (the helpers that moved there, importable from here too)
    LOSSES,
    _expected_inputs,
    _input_list,
    _is_cross_entropy,
    _mixed_precision,
    _output_layer,
    _plain,
    _set_optimizer_mode,
    _with_evaluation_weights,
)
from lamina.train.weighting import NORMALIZATIONS, check_weights, get_weighted_metric


class Trainer(_TrainerData):
    """Fit ``model`` by mini-batch gradient descent, evaluate it, predict with it.

    ``loss``: a name from ``LOSSES`` or a callable ``loss(output, labels)``; categorical
    cross-entropy (maybe with options fixed by ``functools.partial``) after a Softmax last
    layer is computed from the logits in one stable op. ``optimizer``: a
    :class:`lamina.optim.Optimizer` or a wrapper of one (``Lookahead``; ``SAM``, which gets a
    closure recomputing the step's mini-batches). An optimizer with ``train()``/``eval()``
    modes (the schedule-free ones, :mod:`lamina.optim.schedule_free`) is put in training mode
    for each epoch's steps and in evaluation mode after them, so that validation, the
    callbacks' ``on_epoch_end``, checkpoints, ``evaluate``, ``predict`` and the model ``fit``
    returns see the averaged weights x (``evaluate`` and ``predict`` put back the mode they
    found). ``metrics``: names (see
    :func:`lamina.train.metrics.get_metric`), :class:`~lamina.train.metrics.EpochMetric`
    objects or callables, each reported per epoch (and ``val_`` ones on the validation set).
    ``callbacks``: :class:`~lamina.train.callbacks.Callback` objects; a progress bar is added
    unless one is given (``verbose=0`` keeps it quiet). ``schedule``: a learning-rate
    schedule stepped per iteration or per epoch as its ``per`` says; one made without an
    optimizer is attached to ``optimizer`` (which takes the schedule's rate at once). ``clip_norm`` /
    ``clip_value``: before each update, the gradients are clamped into [-clip_value,
    clip_value] (:func:`lamina.optim.clip_grad_value`), then rescaled to a joint L2 norm of
    at most ``clip_norm`` (:func:`lamina.optim.clip_grad_norm`).

    ``amp``: mixed precision for training steps: ``True`` (float16) or a dtype runs the
    forward pass and the cost under :class:`lamina.amp.autocast` and scales the cost with a
    :class:`lamina.amp.GradScaler`, whose ``unscale_`` comes before clipping and whose
    ``step`` skips updates with inf/NaN gradients. Evaluation and prediction stay float32.

    ``accumulate``: gradient accumulation. The optimizer steps once every ``accumulate``
    mini-batches, on the sum of their gradients, each mini-batch's cost weighted by its
    share of the group's samples (its size / the total size of the group's mini-batches):
    with a mean cost, ``accumulate=k`` mini-batches of size b give the gradient of one
    mini-batch of size k b, for the memory of one of size b. The gradients are clipped once
    per group, just before the step, and an iteration schedule is stepped once per
    optimizer step; groups never span two epochs, and an epoch's last, incomplete group
    still steps (weighted by the sizes it has). The history and ``on_batch_end`` stay per
    mini-batch (``iteration`` counts mini-batches); ``steps`` counts the optimizer steps the
    fit loop has taken. A callback that stops training in the middle of a group ends it
    without that group's step.

    Distributed training (a :class:`lamina.distributed.DistributedDataParallel` model in an
    initialised process group, each rank fitting its shard of a
    :class:`~lamina.distributed.DistributedSampler`): the epoch's loss and metrics are reduced
    over the ranks (:mod:`lamina.train.rank_logs`), each rank's mean weighted by its sample
    count, so that every rank logs, and its callbacks see, the values over the whole data;
    metrics that are not means of per-sample values (precision, recall, F1) are averaged the
    same way, which only approximates their value on the whole data. The per-batch history
    stays per rank. Validation is not sharded: each rank evaluates the whole ``val`` data it is
    given and so logs the same ``val_`` values. Progress, checkpoints and the file-writing
    callbacks act on rank 0 only. A stop asked for in ``on_batch_end`` on one rank
    (``TerminateOnNaN`` on a NaN of its shard) stops every rank after that same batch.

    Sample and class weights (``fit``'s ``sample_weight``, ``class_weight`` and (x, y, w)
    data; see :mod:`lamina.train.weighting`): a weighted mini-batch of m samples costs
    J = (1/m) sum_i w_i L_i, the weighted sum over the batch size as in Keras 3, or
    sum_i w_i L_i / sum_i w_i with ``weight_normalization="sum_of_weights"`` (as PyTorch's
    class-weighted cross-entropy). The loss must then give per-sample values: a function
    taking ``reduction`` (every name in ``LOSSES`` does) or a loss module with a
    ``reduction`` attribute. Weights that are all 1 take the unweighted path (the same cost
    bit for bit). ``weighted_metrics``: names in
    :data:`~lamina.train.weighting.PER_SAMPLE_METRICS` or callables giving one value per
    sample, reported as ``weighted_<name>``: the weighted mean sum_i w_i v_i / sum_i w_i over
    the epoch (with no weights, the plain mean); and 'precision', 'recall', 'f1' or a
    :class:`~lamina.train.metrics.Precision` (Recall, F1Score) of any ``average``, computed
    from a confusion matrix of the sample weights.
    """

    def __init__(self, model, loss="categorical_cross_entropy", optimizer=None, metrics=("accuracy",),
                 callbacks=(), schedule=None, verbose: int = 1, clip_norm: float | None = None,
                 clip_value: float | None = None, accumulate: int = 1, weighted_metrics=(),
                 weight_normalization: str = "batch_size", amp=False):
        if optimizer is None:
            raise ValueError("Trainer: an optimizer is required, e.g. lamina.optim.Adam(model)")
        self._autocast, self._scaler = _mixed_precision(amp, optimizer)
        if isinstance(accumulate, bool) or not isinstance(accumulate, (int, np.integer)) or accumulate < 1:
            raise ValueError(f"Trainer: accumulate must be a positive integer (mini-batches per optimizer step), "
                             f"got {accumulate!r}")
        self.accumulate = int(accumulate)
        for name, value in (("clip_norm", clip_norm), ("clip_value", clip_value)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 < value < math.inf):
                raise ValueError(f"Trainer: {name} must be a positive number or None, got {value!r}")
        self.clip_norm, self.clip_value = clip_norm, clip_value
        self.model = model
        self.loss_name = loss if isinstance(loss, str) else getattr(_plain(loss), "__name__", "loss")
        if isinstance(loss, str):
            if loss not in LOSSES:
                raise ValueError(f"Trainer: unknown loss {loss!r}; expected one of {sorted(LOSSES)} or a callable")
            loss = LOSSES[loss]
        self.loss = loss
        self.optimizer = optimizer
        self.metrics = [get_metric(m) for m in metrics]
        self.weighted_metrics = [get_weighted_metric(m) for m in weighted_metrics]
        if weight_normalization not in NORMALIZATIONS:
            raise ValueError(f"Trainer: weight_normalization must be one of {NORMALIZATIONS}, "
                             f"got {weight_normalization!r}")
        self.weight_normalization = weight_normalization
        self._unreduced_loss = None
        self._class_weights: np.ndarray | None = None
        self.steps_per_epoch: int | None = None
        self.validation_freq = 1
        self._stream = None                          # the batches pass after pass, with steps_per_epoch
        self._first_pass = None                      # a stream's first pass, its first batch peeked at
        self.schedule = _attached(schedule, optimizer)
        self.callbacks: list[Callback] = list(callbacks)
        if not any(isinstance(c, ProgressBar) for c in self.callbacks):
            # in a distributed run only rank 0 shows progress
            self.callbacks.insert(0, ProgressBar(verbose=verbose if is_main_process() else 0))
        for cb in self.callbacks:
            cb.set_trainer(self)
        self.stop_training = False
        self.history = History()
        self.epoch = 0
        self.iteration = 0
        self.steps = 0
        self.epochs = 0
        self.samples_per_epoch = 0
        self.loader: DataLoader | None = None
        self._requested_checkpoints: list[tuple[str | os.PathLike, int]] = []

    # -- fit, evaluate, predict -----------------------------------------------
    def fit(self, train, val=None, epochs: int = 1, batch_size: int = 32, shuffle: bool = True,
            seed: int | None = None, resume_from: str | os.PathLike | None = None,
            validation_split: float | None = None, num_workers: int = 0, sample_weight=None,
            class_weight=None, steps_per_epoch: int | None = None, initial_epoch: int = 0,
            validation_freq: int = 1, validation_batch_size: int | None = None,
            validation_steps: int | None = None, worker_mode: str = "thread") -> History:
        """Train until epoch ``epochs``; ``train``/``val`` are (x, y), a Dataset (or an
        IterableDataset, read in its own order) or a DataLoader; for a model of several inputs
        x is a tuple or list of arrays, one per input.

        Weights (see the class docstring for the cost): ``train`` and ``val`` may carry
        per-sample weights as (x, y, w) arrays, an :class:`~lamina.data.ArrayDataset` of
        three arrays or a dataset or DataLoader yielding (x, y, w) triples; or
        ``sample_weight`` (one value >= 0 per sample) goes with (x, y) arrays.
        ``class_weight`` (``{class: weight}``, classes left out weighing 1, or one weight per
        class) multiplies each training sample's weight by its class's.

        ``steps_per_epoch``: an epoch is that many mini-batches; the next epoch continues
        where the last one stopped in the data, as in Keras, and a checkpoint keeps that
        position. Where Keras cuts an epoch short (with a warning) when a pass over finite
        data ends inside it, here the epoch goes on into a new pass (reshuffled), so every
        epoch has ``steps_per_epoch`` mini-batches; a pass that yields nothing (a spent
        stream) ends training with a warning. ``initial_epoch``: the epoch to start from
        (numbering the callbacks' epochs and the history when continuing a run by hand;
        ``resume_from`` sets it from the checkpoint; a backup of an interrupted run kept by a
        :class:`~lamina.train.BackupAndRestore` callback takes the place of both). A stream
        (an iterable dataset, a generator) is read once per pass: its first batch, checked
        before training, is the first one trained on. ``validation_freq``: validate every
        that many epochs (those whose number is a multiple of it); the other epochs' logs
        have no ``val_`` entries, so the history's ``val_`` lists hold the validated epochs
        only, and early stopping, checkpoints saving the best and plateau schedules watching
        a ``val_`` quantity skip the other epochs. ``validation_batch_size`` (default: the
        larger of ``batch_size`` and 256) and ``validation_steps`` (validate on the first
        that many batches of ``val`` only).

        ``num_workers``: for a loader built here from ``train``, the number of background
        workers making its batches, threads or, with ``worker_mode="process"``, processes
        (see :class:`~lamina.data.DataLoader`); a DataLoader passed in keeps its own.

        ``validation_split``: a fraction in (0, 1); the last samples of ``train`` ((x, y)
        arrays or an :class:`~lamina.data.ArrayDataset`), ``floor(n * (1 - fraction))``
        onwards, taken before any shuffling, are held out of training and are the
        validation set (in place of ``val``).
        """
        self._check_fit_options(steps_per_epoch, initial_epoch, validation_freq, validation_batch_size,
                                validation_steps, resume_from)
        train = _with_sample_weight(train, sample_weight, "Trainer.fit")
        if validation_split is not None:
            train, val = self._hold_out(train, val, validation_split)
        loader = self._loader(train, batch_size, shuffle, seed, "Trainer.fit", num_workers, worker_mode)
        self.loader = loader
        _check_metrics_have_labels(self, loader, "Trainer.fit")
        dataset = loader.dataset
        classes, labelled = 2, True
        if isinstance(dataset, ArrayDataset):
            classes, labelled = self._validate(dataset.x, dataset.y), dataset.y is not None
            if dataset.w is not None:
                check_weights(dataset.w, len(dataset), "Trainer.fit")
        elif is_iterable_dataset(dataset):    # a stream may be readable once: its first batch is kept
            batches = _labelled_batches(loader)
            first = next(batches, None)
            if first is not None:
                self._first_pass = (first, batches)
                classes = self._validate(*first[:2])
        elif len(dataset):                    # its first samples build the model and are checked
            first = next(iter(DataLoader(dataset, batch_size=2, shuffle=False, seed=0)))
            classes = self._validate(*(first[:2] if isinstance(first, tuple) and len(first) == 3 else first))
        self._class_weights = self._class_table(class_weight, labelled, classes)
        self.epochs = epochs
        self.steps_per_epoch, self.validation_freq = steps_per_epoch, validation_freq
        self.samples_per_epoch = len(dataset) if hasattr(dataset, "__len__") else None
        if steps_per_epoch is not None:
            self.samples_per_epoch = steps_per_epoch * loader.batch_size
        self.stop_training = False
        start, callback_states = initial_epoch, None
        backups = [path for cb in self.callbacks if hasattr(cb, "checkpoint_to_resume")
                   and (path := cb.checkpoint_to_resume()) is not None]
        if backups:                              # a run interrupted before: its backup wins
            resume_from = backups[0]
        if resume_from is not None:
            self._close_first_pass()             # the restored loader reads the stream anew
            start, callback_states = checkpoint.restore(resume_from, self)
        logs: dict = {}
        for cb in self.callbacks:
            cb.on_train_begin(logs)
        checkpoint.restore_callbacks(callback_states, self.callbacks)
        self._stream = self._passes(loader) if steps_per_epoch is not None else None
        validation = {"batch_size": validation_batch_size or max(batch_size, 256), "steps": validation_steps}
        try:
            logs = self._run_epochs(loader, val, start, epochs, validation, logs)
        except BaseException as error:
            self._tell_callbacks_of(error)
            raise
        finally:
            if self._stream is not None:
                self._stream.close()
                self._stream = None
            self._close_first_pass()
        for cb in self.callbacks:
            cb.on_train_end(logs)
        self.model.eval()
        return self.history

    def _tell_callbacks_of(self, error: BaseException) -> None:
        """Give every callback its ``on_exception`` (to close bars and files) before ``error``
        propagates; a callback failing there does not hide the original error."""
        for cb in self.callbacks:
            try:
                cb.on_exception(error)
            except Exception as callback_error:  # noqa: BLE001 - the training error matters more
                error.add_note(f"{type(cb).__name__}.on_exception also failed: {callback_error!r}")

    def _run_epochs(self, loader, val, start: int, epochs: int, validation: dict, logs: dict) -> dict:
        for epoch in range(start, epochs):
            self.epoch = epoch
            self.model.train()
            _set_optimizer_mode(self.optimizer, training=True)
            if hasattr(loader.sampler, "set_epoch"):   # a DistributedSampler: a new order every epoch
                loader.sampler.set_epoch(epoch)
            for cb in self.callbacks:
                cb.on_epoch_begin(epoch, logs)
            logs = self._train_epoch(loader)
            batches, samples = logs.pop("batches"), logs.pop("samples")
            if trains_over_ranks(self.model):
                logs = reduce_over_ranks(logs, samples)
            _set_optimizer_mode(self.optimizer, training=False)
            if batches == 0 and self._stream is not None:
                warnings.warn(f"Trainer.fit: the training data ran out of batches at epoch {epoch + 1} (a pass "
                              f"yielded none); training stopped", RuntimeWarning, stacklevel=3)
                break
            # validated even when the loss is not finite (as Keras): the callbacks then see a
            # val_loss that is no improvement rather than a missing one
            validated = val is not None and (epoch + 1) % self.validation_freq == 0
            if validated:
                logs.update(self._validate_epoch(val, validation))
            self._step_epoch_schedule(logs, validated, val is not None)
            self.history.record_epoch(epoch + 1, logs)
            for cb in self.callbacks:
                cb.on_epoch_end(epoch, logs)
            if self.stop_training and not math.isfinite(logs["loss"]):
                self._requested_checkpoints.clear()  # a stop on a NaN keeps the last good checkpoint
            self._write_requested_checkpoints()
            if self.stop_training:
                break
        return logs

    def _validate_epoch(self, val, validation: dict) -> dict:
        """The ``val_`` logs of an evaluation on ``val``, between the callbacks'
        ``on_test_begin`` and ``on_test_end``."""
        hooked = [cb for cb in self.callbacks if hasattr(cb, "on_test_begin")]
        for cb in hooked:
            cb.on_test_begin({})
        logs = {f"val_{k}": v for k, v in self.evaluate(val, **validation).items()}
        for cb in hooked:
            cb.on_test_end(logs)
        return logs

    def _train_epoch(self, loader) -> dict:
        """One pass over ``loader``: the optimizer steps once per group of ``accumulate``
        mini-batches; returns the epoch's mean loss, metrics and samples per second."""
        started, seen, batches = time.perf_counter(), 0, 0
        total_loss = 0.0
        over_ranks = trains_over_ranks(self.model)
        for _, metric in (*self.metrics, *self.weighted_metrics):
            metric.reset()
        for group in self._groups(self._epoch_batches(loader)):
            batches += len(group)
            group_size = sum(num_samples(xb) for xb, _, _ in group)
            self.optimizer.zero_grad()
            if group_size == 0:              # an empty Poisson draw: a DP-SGD step still adds its noise
                self._update(group)
                self.steps += 1
                self.iteration += len(group)
                continue
            for i, (xb, yb, wb) in enumerate(group):
                n = num_samples(xb)
                weights = self._weights_of(yb, wb, self._class_weights, "Trainer.fit")
                loss, out = self._backward(xb, yb, n / group_size, weights)
                if i == len(group) - 1:
                    self._update(group)
                    self.steps += 1
                self.iteration += 1
                seen += n
                total_loss += loss * n
                batch_logs = {"loss": loss}
                for name, metric in self.metrics:
                    batch_logs[name] = metric.update(out, yb)
                for name, metric in self.weighted_metrics:
                    batch_logs[name] = metric.update(out, yb, weights)
                self.history.record_iteration(batch_logs)
                for cb in self.callbacks:
                    cb.on_batch_end(self.iteration, {**batch_logs, "batch_size": n})
                if over_ranks:               # a stop on one rank stops them all at this batch
                    self.stop_training = any_rank_stops(self.stop_training)
                if self.stop_training:
                    break
            if self.stop_training:
                break
        logs = {"loss": total_loss / max(seen, 1)}
        logs.update({name: metric.result() for name, metric in (*self.metrics, *self.weighted_metrics)})
        logs["samples_per_s"] = seen / max(time.perf_counter() - started, 1e-9)
        logs["batches"], logs["samples"] = batches, seen
        return logs

    @_with_evaluation_weights
    def evaluate(self, data, batch_size: int = 256, sample_weight=None, steps: int | None = None) -> dict[str, float]:
        """Cost and metrics on ``data`` ((x, y) or (x, y, w), a Dataset or a DataLoader) in
        evaluation mode; ``sample_weight`` weighs the samples of (x, y) arrays (the class
        weights of ``fit`` are not applied); ``steps``: the first that many batches only."""
        data = _with_sample_weight(data, sample_weight, "Trainer.evaluate")
        loader = self._loader(data, batch_size, shuffle=False, seed=0, where="Trainer.evaluate")
        _check_metrics_have_labels(self, loader, "Trainer.evaluate")
        self.model.eval()
        total, seen = 0.0, 0
        metrics = (*self.metrics, *self.weighted_metrics)
        for _, metric in metrics:
            metric.reset()
        with no_grad():
            for xb, yb, wb in itertools.islice(_labelled_batches(loader), steps):
                out, logits = self._forward(xb, for_loss=True)
                n = num_samples(xb)
                weights = self._weights_of(yb, wb, None, "Trainer.evaluate")
                cost = self._cost(out, logits, yb) if weights is None else self._weighted_cost(out, logits, yb, weights)
                total += float(cost.item()) * n
                for _, metric in self.metrics:
                    metric.update(out.data, yb)
                for _, metric in self.weighted_metrics:
                    metric.update(out.data, yb, weights)
                seen += n
        return {"loss": total / max(seen, 1), **{name: metric.result() for name, metric in metrics}}

    @_with_evaluation_weights
    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """The model's outputs for ``x`` (one array, or a tuple or list of arrays for a model of
        several inputs) in evaluation mode, batch by batch. No samples give an empty array of the
        model's output shape, (0, classes) for a classifier."""
        inputs = _input_list(x)
        self._check_input_count("Trainer.predict", len(inputs))
        n = num_samples(x, "Trainer.predict")
        self.model.eval()
        outputs = []
        with no_grad():
            for i in range(0, n, batch_size):
                batch = [lamina.tensor(values[i:i + batch_size]) for values in inputs]
                outputs.append(backend.to_numpy(self.model(*batch).data))
            if not outputs:
                return self._empty_prediction(inputs)
        return np.concatenate(outputs)

    def _empty_prediction(self, inputs: list) -> np.ndarray:
        """The outputs for zero samples: the model run on the empty batch, or, for a model that
        cannot take one, an empty array shaped like its output for one sample of zeros."""
        try:
            return backend.to_numpy(self.model(*[lamina.tensor(values) for values in inputs]).data)
        except Exception:  # noqa: BLE001 - a layer rejecting zero samples: one sample gives the shape
            one = [lamina.tensor(np.zeros((1, *np.shape(values)[1:]), dtype=np.asarray(values).dtype))
                   for values in inputs]
            out = backend.to_numpy(self.model(*one).data)
            return np.zeros((0, *out.shape[1:]), dtype=out.dtype)

    def save_checkpoint(self, path: str | os.PathLike, epoch: int | None = None) -> None:
        """Write a training checkpoint (see :mod:`lamina.train.checkpoint`) atomically; in a
        distributed run, on rank 0 only (every rank holds the same weights)."""
        if not is_main_process():
            return
        checkpoint.save(path, self, self.epoch + 1 if epoch is None else epoch)

    def request_checkpoint(self, path: str | os.PathLike, epoch: int) -> None:
        """Ask for a checkpoint at the end of this epoch, written once every callback's
        ``on_epoch_end`` has run (so their states include this epoch)."""
        self._requested_checkpoints.append((path, epoch))

    def _write_requested_checkpoints(self) -> None:
        requested, self._requested_checkpoints = self._requested_checkpoints, []
        for path, epoch in requested:
            self.save_checkpoint(path, epoch=epoch)


def _attached(schedule, optimizer):
    """``schedule``, attached to the Trainer's ``optimizer`` when it drives none yet (stepping an
    unattached schedule would leave the learning rate as it is)."""
    if schedule is None or getattr(schedule, "optimizer", optimizer) is not None:
        return schedule
    if not callable(getattr(schedule, "attach", None)):
        raise TypeError(f"Trainer: the schedule {type(schedule).__name__} drives no optimizer (its optimizer is None) "
                        "and has no attach(optimizer) to drive the Trainer's; attach it to the optimizer first")
    schedule.attach(optimizer)
    return schedule
