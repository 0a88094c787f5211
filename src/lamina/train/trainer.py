"""``Trainer``: the fit loop, evaluation and prediction.

One iteration of mini-batch gradient descent: forward the batch, compute the cost J,
back-propagate dJ/dtheta, let the optimizer update theta, step an iteration schedule.
Training data, validation data and the held-out test data stay apart: ``fit`` tunes on
``val`` only, and the test set is for ``evaluate`` at the end.

A model of several inputs (a functional :class:`lamina.nn.Model` of a list of inputs) takes
its inputs as a tuple or list of arrays of the same length, one per input, wherever one
array would go: ``fit(((x_image, x_meta), y))``, ``predict([x_image, x_meta])``.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import time
import warnings

import numpy as np

import lamina
from lamina import backend
from lamina import functional as F
from lamina.amp import GradScaler, autocast
from lamina.autograd import Tensor, no_grad
from lamina.autograd.graph import recomputing
from lamina.data import ArrayDataset, DataLoader, Subset
from lamina.data.dataset import is_multi_input, num_samples, take
from lamina.data.iterable import is_iterable_dataset
from lamina.data.subsets import fetches_whole_batches, is_labelled
from lamina.distributed import is_main_process
from lamina.errors import ShapeError
from lamina.nn import Model, Sequential
from lamina.optim import clip_grad_norm, clip_grad_value
from lamina.train import checkpoint
from lamina.train.callbacks import Callback, ProgressBar
from lamina.train.history import History
from lamina.train.metrics import get_metric
from lamina.train.rank_logs import any_rank_stops, reduce_over_ranks, trains_over_ranks
from lamina.train.weighting import (
    NORMALIZATIONS,
    check_weights,
    class_indices,
    class_weight_table,
    get_weighted_metric,
    is_regression_loss,
    per_sample_loss,
)

LOSSES = {
    "categorical_cross_entropy": F.categorical_cross_entropy,
    "binary_cross_entropy": F.binary_cross_entropy,
    "mean_squared_error": F.mean_squared_error,
    "mse": F.mean_squared_error,
    "mean_absolute_error": F.mean_absolute_error,
    "mae": F.mean_absolute_error,
    "huber": F.huber,
    "hinge": F.hinge,
    "smooth_l1": F.smooth_l1,
    "multiclass_hinge": F.multiclass_hinge,
    "kl_divergence": F.kl_divergence,
    "nll": F.nll_loss,
    "binary_focal": F.binary_focal_loss,
    "categorical_focal": F.categorical_focal_loss,
    "poisson_nll": F.poisson_nll_loss,
    "soft_margin": F.soft_margin_loss,
    "multilabel_soft_margin": F.multilabel_soft_margin_loss,
    "hinge_embedding": F.hinge_embedding_loss,
    "multilabel_margin": F.multilabel_margin_loss,
    "log_cosh": F.log_cosh,
    "squared_hinge": F.squared_hinge,
    "poisson": F.poisson,
    "mean_squared_logarithmic_error": F.mean_squared_logarithmic_error,
    "msle": F.mean_squared_logarithmic_error,
    "mean_absolute_percentage_error": F.mean_absolute_percentage_error,
    "mape": F.mean_absolute_percentage_error,
    "cosine_similarity": F.cosine_similarity_loss,
}


def _plain(loss):
    """The function under a ``functools.partial`` (the loss with some options fixed)."""
    while isinstance(loss, functools.partial):
        loss = loss.func
    return loss


def _input_list(x) -> list:
    """The model's inputs in ``x``: the arrays of a group of several, or ``[x]``."""
    return list(x) if is_multi_input(x) else [x]


def _expected_inputs(model) -> tuple[int, list[str]] | None:
    """(how many inputs ``model`` takes, their names), or None when the model does not say."""
    if isinstance(model, Model):
        return len(model.inputs), list(model.input_names)
    if isinstance(model, Sequential):
        return 1, []
    return None


def _array_dataset(data: tuple, where: str) -> ArrayDataset:
    """The dataset of ``(x, y)``, ``(x, y, w)`` or ``(x,)``, the inputs of a group of several
    checked to be of one length and the sample weights ``w`` checked first (an error names
    ``where``)."""
    if len(data) > 3:
        raise ValueError(f"{where}: data must be (x, y), (x, y, sample_weight) or (x,); got a tuple of "
                         f"{len(data)} items")
    if data:
        n = num_samples(data[0], where)
        if len(data) == 3:
            data = (*data[:2], check_weights(data[2], n, where))
    return ArrayDataset(*data)


def _with_sample_weight(data, sample_weight, where: str):
    """``(x, y)`` arrays with ``sample_weight`` attached as ``(x, y, w)``; ``data`` itself
    when no weights are given."""
    if sample_weight is None:
        return data
    given_twice = (isinstance(data, tuple) and len(data) == 3) or getattr(data, "w", None) is not None
    if given_twice:
        raise ValueError(f"{where}: sample weights given twice, as the data's third item and as "
                         "sample_weight=; give one of them")
    if not (isinstance(data, tuple) and len(data) == 2):
        raise TypeError(f"{where}: sample_weight= goes with (x, y) arrays; a {type(data).__name__} carries "
                        "its weights in (x, y, w) samples instead")
    return (*data, check_weights(sample_weight, num_samples(data[0], where), where))


def _check_metrics_have_labels(trainer, loader, where: str) -> None:
    dataset = loader.dataset
    if trainer.metrics and fetches_whole_batches(dataset) and not is_labelled(dataset):
        names = ", ".join(name for name, _ in trainer.metrics)
        raise ValueError(f"{where}: the metrics ({names}) compare outputs with labels, and the data has none "
                         "(inputs alone); pass metrics=() to the Trainer to train on unlabelled data")


def _labelled_batches(loader):
    """The loader's batches as (xb, yb, wb) triples: yb is None for an unlabelled array
    dataset (``fit((x,))``), whose loader yields the inputs alone (the loss then gets None);
    the sample weights wb are None unless the batches are (xb, yb, wb) triples."""
    dataset = loader.dataset
    if fetches_whole_batches(dataset) and not is_labelled(dataset):
        return ((xb, None, None) for xb in loader)
    return (batch if isinstance(batch, tuple) and len(batch) == 3 else (*batch, None) for batch in loader)


def _prepend(first, batches):
    """``first``, then the rest of ``batches`` (closed when this generator is)."""
    try:
        yield first
        yield from batches
    finally:
        batches.close()


def _is_cross_entropy(loss) -> bool:
    """Whether ``loss`` is categorical cross-entropy, maybe with options fixed by a partial
    (``partial(F.categorical_cross_entropy, label_smoothing=0.1)``): a Softmax last layer is
    then fused into it, and the labels are checked against the classes."""
    return _plain(loss) is F.categorical_cross_entropy


def _output_layer(model):
    """The layer that gives ``model``'s output: a Sequential's last, a functional Model's
    :attr:`~lamina.nn.Model.output_layer`; None when there is no such single layer."""
    if hasattr(model, "output_layer"):
        return model.output_layer
    layers = list(model) if hasattr(model, "__iter__") else []
    return layers[-1] if layers else None


def _set_optimizer_mode(optimizer, training: bool) -> bool | None:
    """Put an optimizer with training and evaluation modes (``train()``, ``eval()`` and
    ``train_mode``: the schedule-free ones), or the one a wrapper (SAM, Lookahead) holds, in
    the mode asked for; returns the mode it was in (None for an optimizer without modes,
    left alone)."""
    while not hasattr(optimizer, "train_mode") and hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    if not (hasattr(optimizer, "train_mode") and callable(getattr(optimizer, "train", None))
            and callable(getattr(optimizer, "eval", None))):
        return None
    before = bool(optimizer.train_mode)
    if training:
        optimizer.train()
    else:
        optimizer.eval()
    return before


def _with_evaluation_weights(method):
    """Run a Trainer method with the optimizer in evaluation mode (the model's weights then
    the schedule-free average x), and put back the mode it was in."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        before = _set_optimizer_mode(self.optimizer, training=False)
        try:
            return method(self, *args, **kwargs)
        finally:
            if before:
                _set_optimizer_mode(self.optimizer, training=True)

    return run


class Trainer:
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
    schedule stepped per iteration or per epoch as its ``per`` says. ``clip_norm`` /
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
        self.schedule = schedule
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

    # -- the model's output and the cost --------------------------------------
    def _fused_softmax(self) -> bool:
        """Softmax followed by cross-entropy is computed as one stable op on the logits."""
        return _is_cross_entropy(self.loss) and type(_output_layer(self.model)).__name__ == "Softmax"

    def _check_input_count(self, where: str, given: int) -> None:
        """Raise unless the model takes ``given`` inputs (when it says how many it takes)."""
        expected = _expected_inputs(self.model)
        if expected is None or expected[0] == given:
            return
        count, names = expected
        named = f" ({', '.join(names)})" if names else ""
        how = "one array" if count == 1 else f"a tuple or list of {count} arrays, one per input"
        raise ValueError(f"{where}: the model takes {count} input(s){named} but the data holds {given} input "
                         f"array(s); give x as {how}")

    def _forward(self, x, for_loss: bool):
        inputs = _input_list(x)
        self._check_input_count("Trainer", len(inputs))
        inputs = [v if isinstance(v, Tensor) else lamina.tensor(v) for v in inputs]
        if for_loss and self._fused_softmax():
            if hasattr(self.model, "forward_to_output_layer"):
                return self.model.forward_to_output_layer(*inputs), True
            out = inputs[0]  # a Sequential: one input
            for layer in list(self.model)[:-1]:
                out = layer(out)
            return out, True
        return self.model(*inputs), False

    def _cost(self, out, logits: bool, y):
        if logits:
            return self.loss(out, y, from_logits=True)
        return self.loss(out, y)

    def _weighted_cost(self, out, logits: bool, y, weights: np.ndarray):
        """sum_i w_i L_i over the batch size, or over sum_i w_i (``weight_normalization``)."""
        if type(self)._cost is not Trainer._cost:
            raise ValueError(f"{type(self).__name__}: its cost is its own, and takes no sample or class weights; "
                             "give (x, y) data without weights")
        if self._unreduced_loss is None:
            self._unreduced_loss = per_sample_loss(self.loss)
            if self._unreduced_loss is None:
                raise ValueError(f"Trainer: sample or class weights need the loss's per-sample values, and "
                                 f"the loss {self.loss_name!r} takes no reduction argument; give a loss "
                                 "function taking reduction='none' or a loss module with a reduction")
        losses = self._unreduced_loss(out, y, from_logits=True) if logits else self._unreduced_loss(out, y)
        if losses.ndim > 1:                          # a sample of several rows: their mean
            losses = losses.mean(axis=tuple(range(1, losses.ndim)))
        if losses.shape != (len(weights),):
            raise ShapeError(f"Trainer: the loss {self.loss_name!r} with reduction='none' gave shape "
                             f"{losses.shape} for a batch of {len(weights)} weighted samples; expected "
                             f"({len(weights)},)")
        total = (losses * backend.xp.asarray(weights, dtype=losses.dtype)).sum()
        if self.weight_normalization == "batch_size":
            return total / float(len(weights))
        return total / max(float(weights.sum()), np.finfo(np.float64).tiny)

    def _weights_of(self, y, w, class_table: np.ndarray | None, where: str) -> np.ndarray | None:
        """A batch's sample weights times its samples' class weights; None when there are
        none, or when all are 1 (the unweighted cost is then the same)."""
        if w is None and class_table is None:
            return None
        n = len(y) if y is not None else len(w)
        weights = np.ones(n) if w is None else check_weights(w, n, where)
        if class_table is not None:
            classes = class_indices(y, where)
            inside = (classes >= 0) & (classes < len(class_table))
            weights = weights * np.where(inside, class_table[np.clip(classes, 0, len(class_table) - 1)], 1.0)
        return None if bool((weights == 1).all()) else weights

    def train_step(self, x, y, w=None) -> tuple[float, np.ndarray]:
        """One optimizer step on the mini-batch (x, y), with sample weights ``w`` if given,
        whatever ``accumulate`` is; returns the cost and the model's output. A schedule-free
        optimizer is put in (and left in) training mode."""
        _set_optimizer_mode(self.optimizer, training=True)
        self.optimizer.zero_grad()
        loss, out = self._backward(x, y, 1.0, self._weights_of(y, w, self._class_weights, "Trainer.train_step"))
        self._update([(x, y, w)])
        return loss, out

    def _backward(self, x, y, weight: float, weights: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """Forward (x, y) and add ``weight`` times the gradient of its cost (with the samples
        weighted by ``weights``) to the gradients."""
        with self._autocast:
            out, logits = self._forward(x, for_loss=True)
            cost = self._cost(out, logits, y) if weights is None else self._weighted_cost(out, logits, y, weights)
        scaled = self._scaler.scale(cost)
        if weight == 1.0:
            scaled.backward()
        else:
            scaled.backward(backend.xp.full_like(scaled.data, weight))
        return float(cost.item()), out.data

    def _update(self, group: list) -> None:
        """Clip the gradients, let the optimizer step, step an iteration schedule. An optimizer
        that ``needs_closure`` (SAM) gets one that recomputes the gradients of ``group``, the
        mini-batches whose gradients it steps on."""
        self._scaler.unscale_(self.optimizer)        # clipping must see the true gradients
        if self.clip_value is not None:
            clip_grad_value(self.model, self.clip_value)
        if self.clip_norm is not None:
            clip_grad_norm(self.model, self.clip_norm)
        if getattr(self.optimizer, "needs_closure", False):
            self.optimizer.step(self._closure(group))
        else:
            self._scaler.step(self.optimizer)
            self._scaler.update()
        if self.schedule is not None and getattr(self.schedule, "per", "epoch") == "iteration":
            self.schedule.step()

    def _closure(self, group: list):
        """A closure for ``optimizer.step``: zero the gradients, add those of ``group``'s
        mini-batches weighted as in the fit loop, return the group's cost."""
        group_size = sum(num_samples(xb) for xb, _, _ in group)

        def closure() -> float:
            self.optimizer.zero_grad()
            # The weights differ from the first pass's (SAM perturbs them), so this is no
            # checkpoint's rerun; but recomputing() does nothing except make layers skip their
            # side effects, and batch norm's running statistics were already updated from
            # these mini-batches: they must not move twice in one step.
            cost = 0.0
            with recomputing():
                for xb, yb, wb in group:
                    share = num_samples(xb) / group_size
                    weights = self._weights_of(yb, wb, self._class_weights, "Trainer.fit")
                    cost += share * self._backward(xb, yb, share, weights)[0]
            return cost

        return closure

    def _groups(self, batches):
        """The epoch's mini-batches, ``accumulate`` at a time (fewer in the epoch's last group)."""
        group = []
        for batch in batches:
            group.append(batch)
            if len(group) == self.accumulate:
                yield group
                group = []
        if group:
            yield group

    # -- checks before training ----------------------------------------------
    def _validate(self, x, y) -> int:
        """Before training: the inputs (one array or a tuple of several) are finite, and are as
        many and of the shapes the model takes; the labels fit the model's classes. Returns the
        number of classes the model's outputs give (2 for one output)."""
        inputs = _input_list(x)
        self._check_input_count("Trainer.fit", len(inputs))
        for k, values in enumerate(inputs):
            values = np.asarray(values)
            if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
                bad = np.argwhere(~np.isfinite(values.reshape(len(values), -1)))[0][0]
                which = f"input {k} contains" if len(inputs) > 1 else "the inputs contain"
                raise ValueError(f"Trainer.fit: {which} NaN or infinity (first at sample {bad}); "
                                 "clean or impute them before training")
        shapes = [tuple(np.shape(values)) for values in inputs]
        self.model.eval()
        try:
            with no_grad():
                out = self.model(*[lamina.tensor(np.asarray(values[:2])) for values in inputs])
        except ShapeError as exc:
            shown = shapes[0] if len(shapes) == 1 else ", ".join(f"input {k}: {s}" for k, s in enumerate(shapes))
            raise ShapeError(f"Trainer.fit: the model cannot take inputs of shape {shown}: {exc}") from exc
        finally:
            self.model.train()
        outputs = out.shape[-1] if out.ndim >= 2 else 1
        if y is None or not _is_cross_entropy(self.loss):
            return max(outputs, 2)
        labels = np.asarray(y)
        if labels.ndim == 1 and labels.size:
            classes = out.shape[-1]
            if labels.min() < 0 or labels.max() >= classes:
                raise ValueError(f"Trainer.fit: labels must lie in [0, {classes}) for a model with {classes} "
                                 f"outputs; found values from {labels.min()} to {labels.max()}")
        return max(outputs, 2)

    def _class_table(self, class_weight, labelled: bool, classes: int) -> np.ndarray | None:
        """The weight of each class from ``fit``'s ``class_weight``, checked against the loss,
        the labels and the model's ``classes``."""
        if class_weight is None:
            return None
        if is_regression_loss(self.loss):
            raise ValueError(f"Trainer.fit: class_weight needs a classification loss; the loss "
                             f"{self.loss_name!r} compares real values, which have no classes: use sample_weight")
        if not labelled:
            raise ValueError("Trainer.fit: class_weight needs labels, and the data has none (inputs alone)")
        return class_weight_table(class_weight, classes, "Trainer.fit")

    @staticmethod
    def _hold_out(train, val, fraction) -> tuple:
        """(training part, validation part) of ``train``: its last ``fraction`` of the samples,
        before any shuffling, is the validation set (as Keras's ``validation_split``)."""
        if val is not None:
            raise ValueError("Trainer.fit: give either val or validation_split, not both")
        if (isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.integer, np.floating))
                or not 0 < fraction < 1):
            raise ValueError(f"Trainer.fit: validation_split must be a fraction in (0, 1), got {fraction!r}")
        if isinstance(train, tuple):
            train = _array_dataset(train, "Trainer.fit")
        if isinstance(train, DataLoader) or not (hasattr(train, "__len__") and hasattr(train, "__getitem__")):
            raise TypeError(f"Trainer.fit: validation_split needs arrays, (x, y) or a dataset, to hold out "
                            f"their last samples; got a {type(train).__name__}: pass val= instead")
        n = len(train)
        cut = int(math.floor(n * (1.0 - fraction)))
        if cut == 0 or cut == n:
            raise ValueError(f"Trainer.fit: validation_split={fraction!r} of {n} samples leaves "
                             f"{cut} for training and {n - cut} for validation; both need at least one")
        if not isinstance(train, ArrayDataset):
            return Subset(train, np.arange(cut)), Subset(train, np.arange(cut, n))
        y, w = train.y, train.w
        return (ArrayDataset(take(train.x, slice(None, cut)), None if y is None else y[:cut],
                             None if w is None else w[:cut]),
                ArrayDataset(take(train.x, slice(cut, None)), None if y is None else y[cut:],
                             None if w is None else w[cut:]))

    def _loader(self, data, batch_size: int, shuffle: bool, seed, where: str, num_workers: int = 0,
                worker_mode: str = "thread") -> DataLoader:
        if isinstance(data, DataLoader):
            return data
        if isinstance(data, tuple):
            data = _array_dataset(data, where)
        if is_iterable_dataset(data):
            shuffle = False
        return DataLoader(data, batch_size=batch_size, shuffle=shuffle, seed=seed, num_workers=num_workers,
                          worker_mode=worker_mode)

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

    @staticmethod
    def _check_fit_options(steps_per_epoch, initial_epoch, validation_freq, validation_batch_size,
                           validation_steps, resume_from) -> None:
        counts = {"initial_epoch": (initial_epoch, 0, False), "validation_freq": (validation_freq, 1, False),
                  "steps_per_epoch": (steps_per_epoch, 1, True),
                  "validation_batch_size": (validation_batch_size, 1, True),
                  "validation_steps": (validation_steps, 1, True)}
        for name, (value, least, optional) in counts.items():
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise ValueError(f"Trainer.fit: {name} must be an integer >= {least}{' or None' if optional else ''}"
                                 f", got {value!r}")
        if initial_epoch and resume_from is not None:
            raise ValueError(f"Trainer.fit: give either initial_epoch ({initial_epoch}) or resume_from, not both; "
                             "a checkpoint holds the epoch to continue from")

    def _passes(self, loader):
        """The loader's batches pass after pass, for epochs of ``steps_per_epoch`` batches
        that continue where the last one stopped; ends when a pass yields nothing."""
        while True:
            empty = True
            for batch in self._next_pass(loader):
                empty = False
                yield batch
            if empty:
                return

    def _next_pass(self, loader):
        """The batches of a pass over ``loader``; the first pass over a stream goes on from the
        batch that ``fit`` peeked at, so a stream that can be read only once loses nothing."""
        if self._first_pass is None:
            return _labelled_batches(loader)
        (first, batches), self._first_pass = self._first_pass, None
        return _prepend(first, batches)

    def _close_first_pass(self) -> None:
        if self._first_pass is not None:
            self._first_pass[1].close()
            self._first_pass = None

    def _epoch_batches(self, loader):
        if self._stream is None:
            return self._next_pass(loader)
        return itertools.islice(self._stream, self.steps_per_epoch)

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
            due = (epoch + 1) % self.validation_freq == 0
            validated = val is not None and due and math.isfinite(logs["loss"])
            if validated:
                logs.update(self._validate_epoch(val, validation))
            self._step_epoch_schedule(logs, validated, val is not None)
            self.history.record_epoch(epoch + 1, logs)
            if not math.isfinite(logs["loss"]) and self.stop_training:
                break
            for cb in self.callbacks:
                cb.on_epoch_end(epoch, logs)
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

    def _step_epoch_schedule(self, logs: dict, validated: bool, has_val: bool) -> None:
        """Step a per-epoch schedule. One with a ``monitor`` (:class:`~lamina.optim.ReduceOnPlateau`)
        is stepped with that logged quantity (None: 'val_loss' when there is validation data,
        else 'loss'), skipping the epochs left unvalidated when it is a ``val_`` one."""
        if self.schedule is None or getattr(self.schedule, "per", "epoch") != "epoch":
            return
        if not hasattr(self.schedule, "monitor"):
            self.schedule.step()
            return
        name = self.schedule.monitor or ("val_loss" if has_val else "loss")
        if name in logs:
            self.schedule.step(logs[name])
        elif not (name.startswith("val_") and has_val and not validated):
            raise KeyError(f"Trainer.fit: the schedule {type(self.schedule).__name__} monitors {name!r}, which "
                           f"is not logged; logged: {sorted(logs)}"
                           + ("" if has_val or not name.startswith("val_") else " (pass val= to validate)"))

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
        several inputs) in evaluation mode, batch by batch."""
        inputs = _input_list(x)
        self._check_input_count("Trainer.predict", len(inputs))
        n = num_samples(x, "Trainer.predict")
        self.model.eval()
        outputs = []
        with no_grad():
            for i in range(0, n, batch_size):
                batch = [lamina.tensor(values[i:i + batch_size]) for values in inputs]
                outputs.append(backend.to_numpy(self.model(*batch).data))
        return np.concatenate(outputs) if outputs else np.zeros((0,))

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


def _mixed_precision(amp, optimizer) -> tuple[autocast, GradScaler]:
    """The autocast context and the loss scaler for ``Trainer(amp=...)``: ``False`` gives
    disabled ones (pass-throughs), ``True`` float16, a dtype that dtype."""
    if amp is False or amp is None:
        return autocast(enabled=False), GradScaler(enabled=False)
    if getattr(optimizer, "needs_closure", False):
        raise ValueError(f"Trainer: amp does not work with {type(optimizer).__name__}, whose step needs a closure")
    return autocast(dtype=np.float16 if amp is True else amp), GradScaler()
