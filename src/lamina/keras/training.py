"""Keras's model methods (compile, fit, evaluate, predict, ...) over lamina's Trainer.

:class:`KerasTraining` is mixed into :class:`lamina.keras.Sequential` and
:class:`lamina.keras.Model`. ``compile`` resolves Keras's identifiers into lamina objects
(the optimizer is built once, over the model's parameters, and keeps its state from one
``fit`` to the next); every method then hands the work to a :class:`lamina.train.Trainer`:
``fit`` to ``Trainer.fit``, ``evaluate`` and ``test_on_batch`` to ``Trainer.evaluate``,
``predict`` and ``predict_on_batch`` to ``Trainer.predict``, ``train_on_batch`` to
``Trainer.train_step``. Arguments and defaults are Keras's: ``batch_size`` 32, ``epochs``
1, ``shuffle`` True, ``verbose`` "auto" (1: a progress bar on a terminal, otherwise one line
per epoch; 2: one line per epoch; 0: quiet), ``validation_batch_size`` the ``batch_size``.
"""

from __future__ import annotations

import functools
import os
import sys

import numpy as np

from lamina import optim
from lamina.data.dataset import is_multi_input
from lamina.io import load_file, save_file
from lamina.keras import losses, optimizers
from lamina.keras import metrics as keras_metrics
from lamina.keras.callbacks import History
from lamina.keras.masking import MaskedLoss, mask_of, tracking_masks, uses_masks
from lamina.keras.outputs import (
    LabelLayout,
    OutputLoss,
    OutputMasks,
    OutputMetric,
    PackedOutputs,
    WeightedLosses,
    output_metrics,
    pack_labels,
    per_output,
)
from lamina.optim import clip_grad_norm
from lamina.train import Callback, ProgressBar, Trainer

__all__ = ["KerasTrainer", "KerasTraining", "clip_each_norm"]

EXECUTION_OPTIONS = ("run_eagerly", "steps_per_execution", "jit_compile", "auto_scale_loss")
"""``compile`` options about how a Keras backend runs the steps; nothing to choose here."""


class _EpochLine(Callback):
    """Keras's ``verbose=2``: one line per epoch, ``Epoch 3/10 - loss: 0.3127 - accuracy: 0.9012``."""

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        shown = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items() if k != "samples_per_s")
        print(f"Epoch {epoch + 1}/{self.trainer.epochs} - {shown}", file=sys.stdout)


def _verbosity(verbose) -> int:
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 'auto', 0, 1 or 2, got {verbose!r}")
    return int(verbose)


def _reporting(verbose) -> list[Callback]:
    level = _verbosity(verbose)
    if level == 0:
        return [ProgressBar(verbose=0)]
    if level == 1 and sys.stderr.isatty():
        return [ProgressBar(verbose=1)]
    return [ProgressBar(verbose=0), _EpochLine()]


class KerasTrainer(Trainer):
    """lamina's Trainer with what Keras's models add: masks pass from layer to layer in
    every forward (:mod:`lamina.keras.masking`), and ``clipnorm`` clips each weight's
    gradient to its own norm before the update (then ``clipvalue`` and ``global_clipnorm``
    as the Trainer does). After each forward, ``output_masks`` holds the outputs' masks for
    the metrics; the weighted metrics keep their own names."""

    def __init__(self, *args, clipnorm: float | None = None, output_masks: OutputMasks | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.clipnorm = clipnorm
        self.output_masks = output_masks
        self.weighted_metrics = [(metric.name, metric) for _, metric in self.weighted_metrics]

    def _forward(self, x, for_loss: bool):
        with tracking_masks(self.model):
            out, logits = super()._forward(x, for_loss)
        if self.output_masks is not None:
            packed = isinstance(self.model, PackedOutputs)
            self.output_masks.masks = list(self.model.masks) if packed else [mask_of(out)]
        return out, logits

    def _weights_of(self, y, w, class_table, where: str):
        weights = super()._weights_of(y, w, class_table, where)
        if self.output_masks is not None:                  # the outputs' losses weigh by them too
            self.output_masks.batch_weights = None if weights is None else np.asarray(weights, dtype=np.float64)
            self.output_masks.weight_normalization = self.weight_normalization
        return weights

    def _update(self, group: list) -> None:
        if self.clipnorm is not None:
            clip_each_norm(self.model.parameters(), self.clipnorm)
        super()._update(group)


def clip_each_norm(parameters, max_norm: float) -> None:
    """Each gradient g rescaled to an L2 norm of at most ``max_norm`` on its own:
    g max_norm / (||g|| + 1e-6) where ||g|| > max_norm (:func:`lamina.optim.clip_grad_norm`
    per weight)."""
    for p in parameters:
        if p.grad is not None:
            clip_grad_norm([p], max_norm)


class KerasTraining:
    """Keras's training methods for a lamina Module (see the module docstring)."""

    _compiled = False
    _fit_trainer: Trainer | None = None

    # -- compile ---------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, weighted_metrics=None, loss_weights=None,
                **options) -> None:
        """Set the optimizer (a name such as ``"adam"``, a :mod:`lamina.keras.optimizers`
        object or a built lamina optimizer), the loss (a name, a :mod:`lamina.keras.losses`
        object or ``fn(y_true, y_pred)``) and the metrics (names or objects) for training.
        A model of several outputs takes one loss for all or one per output (a list, or a
        dict by output layer name) and ``loss_weights`` w_i: the loss is sum_i w_i L_i, each
        L_i logged as ``"<output>_loss"``; its metrics are one entry per output, a dict by
        output name or one list for all, logged as ``"<output>_<metric>"`` (see
        :mod:`lamina.keras.outputs`). ``weighted_metrics`` take the same forms and also weigh
        the samples by ``sample_weight`` and ``class_weight`` (logged as ``"weighted_<metric>"``,
        ``"<output>_weighted_<metric>"``). The metrics of a masked sequence output leave its
        masked steps out, as Keras's do."""
        where = f"{type(self).__name__}.compile"
        unknown = sorted(set(options) - set(EXECUTION_OPTIONS))
        if unknown:
            raise TypeError(f"{where}: unexpected argument(s) {unknown}")
        if loss is None:
            raise ValueError(f"{where}: a loss is required, e.g. loss='sparse_categorical_crossentropy'")
        spec = optimizers.get(optimizer)
        self.optimizer = spec.build(self) if isinstance(spec, optimizers.Optimizer) else spec
        self._optimizer_spec = spec
        names = self._output_names()
        weights = per_output(loss_weights, names, "loss_weights", 1.0)
        self.__dict__["_packer"] = None
        masks = self.__dict__["_output_masks"] = OutputMasks()
        if len(names) > 1:
            specs = per_output(loss, names, "loss")
            if any(s is None for s in specs):
                raise ValueError(f"{where}: every output needs a loss; got {dict(zip(names, specs))}")
            self.__dict__["_packer"] = PackedOutputs(self)
            weighted = WeightedLosses([losses.get(s) for s in specs], weights, self._packer)
            self.loss = losses.Loss(weighted, name="loss")
            self.compiled_metrics = [OutputLoss(weighted, i, f"{name}_loss", masks) for i, name in enumerate(names)]
            self.compiled_metrics += output_metrics(metrics, names, weighted, keras_metrics.get, masks)
            self.compiled_weighted_metrics = output_metrics(weighted_metrics, names, weighted, keras_metrics.get,
                                                            masks, sample_weighted=True)
        else:
            self.loss = losses.get(loss)
            made = [keras_metrics.get(m, self.loss) for m in _as_list(metrics)]
            self.compiled_metrics = [OutputMetric(m, m.name, masks) for m in made]
            made = [keras_metrics.get(m, self.loss) for m in _as_list(weighted_metrics)]
            self.compiled_weighted_metrics = [OutputMetric(m, f"weighted_{m.name}", masks, sample_weighted=True)
                                              for m in made]
        for metric in self.compiled_weighted_metrics:
            if not getattr(metric.metric, "takes_sample_weight", False):
                raise ValueError(f"{where}: the weighted metric {metric.name!r} ({type(metric.metric).__name__}) "
                                 "takes no sample weights; give it in metrics=")
        self._loss_weight = weights[0] if len(names) == 1 else 1.0
        self._compile_config = compile_config(optimizer, loss, metrics, weighted_metrics, loss_weights)
        self._compiled = True

    def _trainer(self, where: str, callbacks=(), verbose=0) -> Trainer:
        if not self._compiled:
            raise RuntimeError(f"{type(self).__name__}.{where}: the model must be compiled first: call "
                               "model.compile(optimizer=..., loss=..., metrics=...)")
        spec = self._optimizer_spec
        clipping = {}
        if isinstance(spec, optimizers.Optimizer):
            clipping = {"clip_norm": spec.global_clipnorm, "clip_value": spec.clipvalue, "clipnorm": spec.clipnorm}
        # a masked sequence output's loss ignores its masked steps (Keras's rule)
        loss = MaskedLoss(self.loss.fn) if uses_masks(self) and self._packer is None else self.loss.fn
        if self._loss_weight != 1.0:
            loss = functools.partial(_weighted, loss=loss, weight=float(self._loss_weight))
        return KerasTrainer(self._trainer_model(), loss=loss, optimizer=self.optimizer, metrics=self.compiled_metrics,
                            weighted_metrics=self.compiled_weighted_metrics, output_masks=self._output_masks,
                            callbacks=[*_reporting(verbose), *callbacks], **clipping)

    def __call__(self, *inputs, **kwargs):
        with tracking_masks(self):
            return super().__call__(*inputs, **kwargs)

    def _output_names(self) -> list[str]:
        """The names of the layers giving the outputs (one name for a model of one output)."""
        outputs = getattr(self, "outputs", None)
        if isinstance(outputs, list) and len(outputs) > 1 and all(hasattr(t, "node") for t in outputs):
            return [t.node.layer.name for t in outputs]
        return ["output"]

    def _trainer_model(self):
        """The model the Trainer sees: this one, or its outputs packed into one tensor."""
        packer = self.__dict__.get("_packer")
        if packer is None and len(self._output_names()) > 1:
            packer = self.__dict__["_packer"] = PackedOutputs(self)
        return self if packer is None else packer

    def _labels(self, y):
        if y is not None and self.__dict__.get("_packer") is not None and self._compiled:
            labels = per_output(y, self._output_names(), "y")
            self.loss.fn.layout = LabelLayout(labels)
            return pack_labels(labels)
        if y is not None and isinstance(self.loss, losses.SparseCategoricalCrossentropy):
            return losses.sparse_labels(y)
        return y

    def _data(self, x, y, sample_weight=None):
        """(x, y) or (x, y, w) arrays for the Trainer; a dataset or loader given as ``x`` as it is."""
        if y is None and not isinstance(x, (np.ndarray, list, tuple)) and hasattr(x, "__getitem__"):
            return x
        if y is None and not isinstance(x, (np.ndarray, list, tuple)) and hasattr(x, "__iter__"):
            return x
        x = list(x) if is_multi_input(x) else x
        if y is None:
            return (x,)
        data = (x, self._labels(y))
        return data if sample_weight is None else (*data, np.asarray(sample_weight))

    # -- fit, evaluate, predict ---------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size: int | None = None, epochs: int = 1, verbose="auto", callbacks=None,
            validation_split: float = 0.0, validation_data=None, shuffle: bool = True, class_weight=None,
            sample_weight=None, initial_epoch: int = 0, steps_per_epoch: int | None = None,
            validation_steps: int | None = None, validation_batch_size: int | None = None,
            validation_freq: int = 1) -> History:
        """Train for ``epochs`` epochs (from ``initial_epoch``); returns a :class:`History`
        whose ``history`` dict holds the per-epoch loss, metrics and ``val_`` ones."""
        trainer = self._trainer("fit", _as_list(callbacks), verbose)
        batch_size = 32 if batch_size is None else batch_size
        val = None
        if validation_data is not None:
            parts = tuple(validation_data)
            if len(parts) not in (2, 3):
                raise ValueError(f"{type(self).__name__}.fit: validation_data must be (x_val, y_val) or "
                                 f"(x_val, y_val, sample_weight_val); got {len(parts)} items")
            val = self._data(parts[0], parts[1], parts[2] if len(parts) == 3 else None)
        self._fit_trainer = trainer
        try:
            trainer.fit(self._data(x, y), val=val, epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                        validation_split=validation_split or None, sample_weight=sample_weight,
                        class_weight=class_weight, steps_per_epoch=steps_per_epoch, initial_epoch=initial_epoch,
                        validation_freq=validation_freq, validation_steps=validation_steps,
                        validation_batch_size=validation_batch_size or batch_size)
        finally:
            self._fit_trainer = None
        recorded = trainer.history
        logs = {k: list(v) for k, v in recorded.epoch.items() if k != "samples_per_s"}
        params = {"verbose": _verbosity(verbose), "epochs": epochs, "steps": steps_per_epoch}
        self.history = History(logs, [e - 1 for e in recorded.epochs], params, self)
        return self.history

    @property
    def stop_training(self) -> bool:
        """Set to True (by a callback) to end ``fit`` after the current batch or epoch."""
        return bool(self._fit_trainer is not None and self._fit_trainer.stop_training)

    @stop_training.setter
    def stop_training(self, value: bool) -> None:
        if self._fit_trainer is not None:
            self._fit_trainer.stop_training = bool(value)

    def _results(self, logs: dict, return_dict: bool):
        if return_dict:
            return logs
        metrics = (*self.compiled_metrics, *self.compiled_weighted_metrics)
        values = [logs["loss"], *(logs[m.name] for m in metrics)]
        return values[0] if len(values) == 1 else values

    def evaluate(self, x=None, y=None, batch_size: int | None = None, verbose="auto", sample_weight=None,
                 steps: int | None = None, callbacks=None, return_dict: bool = False):
        """The loss (a number) or [loss, *metrics] on (x, y), or a dict with ``return_dict``."""
        _verbosity(verbose)
        trainer = self._trainer("evaluate", _as_list(callbacks))
        logs = trainer.evaluate(self._data(x, y), batch_size=batch_size or 32, sample_weight=sample_weight,
                                steps=steps)
        return self._results(logs, return_dict)

    def _inference_trainer(self) -> Trainer:
        if self._compiled:
            return self._trainer("predict")
        # prediction needs no training setup: an optimizer the Trainer asks for, never stepped
        return KerasTrainer(self._trainer_model(), optimizer=optim.SGD(self, lr=0.01), metrics=(), verbose=0)

    def _outputs_of(self, packed: np.ndarray):
        """Predictions as the model gives them: a list of arrays for a model of several outputs."""
        model = self._trainer_model()
        return packed if model is self else model.parts(packed)

    def predict(self, x, batch_size: int | None = None, verbose="auto", steps: int | None = None,
                callbacks=None) -> np.ndarray:
        """The model's outputs for ``x`` in evaluation mode, ``batch_size`` (32) samples at a time."""
        _verbosity(verbose)
        batch_size = batch_size or 32
        if steps is not None:
            limit = steps * batch_size
            x = [v[:limit] for v in x] if is_multi_input(x) else x[:limit]
        packed = self._inference_trainer().predict(list(x) if is_multi_input(x) else x, batch_size=batch_size)
        return self._outputs_of(packed)

    def _batch_weights(self, y, sample_weight, class_weight) -> np.ndarray | None:
        if class_weight is None:
            return None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        labels = np.asarray(y)
        classes = labels.argmax(axis=-1) if labels.ndim == 2 and labels.shape[1] > 1 else labels.reshape(-1)
        weights = np.array([class_weight.get(int(c), 1.0) for c in classes], dtype=np.float64)
        return weights if sample_weight is None else weights * np.asarray(sample_weight, dtype=np.float64)

    def _batch_results(self, loss: float, out, y, weights, return_dict: bool):
        logs = {"loss": loss}
        masks = self.__dict__.get("_output_masks")
        if masks is not None:                              # the outputs' losses weigh by the batch's weights
            masks.batch_weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        for metric in (*self.compiled_metrics, *self.compiled_weighted_metrics):
            metric.reset()
            if metric in self.compiled_weighted_metrics:
                metric.update(out, y, weights)
            else:
                metric.update(out, y)
            logs[metric.name] = metric.result()
        return self._results(logs, return_dict)

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict: bool = False):
        """One optimizer step on the batch (x, y); returns its loss (and metrics)."""
        trainer = self._trainer("train_on_batch")
        y = self._labels(y)
        weights = self._batch_weights(y, sample_weight, class_weight)
        self.train()
        try:
            loss, out = trainer.train_step(x, y, weights)
        finally:
            self.eval()
        return self._batch_results(loss, out, y, weights, return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict: bool = False):
        """The loss (and metrics) on the batch (x, y), without training."""
        trainer = self._trainer("test_on_batch")
        x = list(x) if is_multi_input(x) else x
        n = len(x[0]) if isinstance(x, list) else len(x)
        logs = trainer.evaluate(self._data(x, y), batch_size=max(n, 1), sample_weight=sample_weight)
        return self._results(logs, return_dict)

    def predict_on_batch(self, x) -> np.ndarray:
        """The model's outputs for one batch ``x``."""
        x = list(x) if is_multi_input(x) else x
        n = len(x[0]) if isinstance(x, list) else len(x)
        return self._outputs_of(self._inference_trainer().predict(x, batch_size=max(n, 1)))

    # -- weights ---------------------------------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        """Every weight of the model, trainable or not (batch norm's moving statistics too),
        as arrays in the order of ``state_dict``."""
        return [np.array(v, copy=True) for v in self.state_dict().values()]

    def set_weights(self, weights) -> None:
        """Set every weight from arrays in the order :meth:`get_weights` gives."""
        keys = list(self.state_dict())
        weights = list(weights)
        if len(weights) != len(keys):
            raise ValueError(f"{type(self).__name__}.set_weights: got {len(weights)} arrays for the model's "
                             f"{len(keys)} weights ({', '.join(keys)})")
        self.load_state_dict(dict(zip(keys, (np.asarray(w) for w in weights))))

    def count_params(self) -> int:
        """The number of values in all weights, trainable or not, as Keras counts them."""
        return int(sum(np.size(v) for v in self.state_dict().values()))

    def save_weights(self, filepath: str | os.PathLike) -> None:
        """Write the weights (safetensors, atomically)."""
        save_file({k: np.ascontiguousarray(np.asarray(v)) for k, v in self.state_dict().items()}, filepath,
                  {"format": "lamina-keras-weights-1"})

    def load_weights(self, filepath: str | os.PathLike) -> None:
        """Read weights written by :meth:`save_weights` (or :meth:`save`) into the built model."""
        arrays, metadata = load_file(filepath)
        if metadata.get("format") != "lamina-keras-weights-1":   # a whole-model file: weights under model/
            arrays = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
        self.load_state_dict(arrays)


def _saved(value):
    """``value`` when JSON can keep it and ``compile`` can read it back (names, numbers, None,
    lists and dicts of them), else None."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_saved(v) for v in value]
        return None if any(v is None and w is not None for v, w in zip(items, value)) else items
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        items = {k: _saved(v) for k, v in value.items()}
        return None if any(items[k] is None and value[k] is not None for k in value) else items
    return None


def compile_config(optimizer, loss, metrics, weighted_metrics, loss_weights) -> dict:
    """The ``compile`` arguments that can be saved with the model and given again on loading
    (Keras's ``compile_config``): names, nested lists and dicts of names, numbers. A flat
    metric list holding objects keeps its names; other settings holding objects are left out."""
    def names_only(value):
        if isinstance(value, (list, tuple)) and not any(isinstance(v, (list, tuple, dict)) for v in value):
            return [v for v in value if isinstance(v, str)]
        return value

    return {"optimizer": optimizer if isinstance(optimizer, str) else None, "loss": _saved(loss),
            "metrics": _saved(names_only(metrics)), "weighted_metrics": _saved(names_only(weighted_metrics)),
            "loss_weights": _saved(loss_weights)}


def _weighted(y_pred, y_true, loss, weight: float, reduction: str = "mean"):
    """A model of one output with a loss weight w: w L."""
    return loss(y_pred, y_true, reduction=reduction) * weight


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
