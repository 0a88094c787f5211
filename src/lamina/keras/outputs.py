"""Models of several outputs in Keras's training methods: one loss per output, weighted.

``compile(loss=..., loss_weights=...)`` on a model of k outputs gives the total loss

    L = sum_i w_i L_i(y_pred_i, y_true_i)

with L_i the loss of output i (one loss for all, a list in output order, or a dict by output
layer name) and w_i from ``loss_weights`` (a list or a dict; 1 where not given). Each L_i is
reduced as Keras does (the mean over the samples; over the unmasked steps of a masked
sequence output), and is logged under Keras's name ``"<output layer>_loss"``.

``compile(metrics=...)`` takes, as Keras 3 does, a list with one entry per output (a metric or
a list of them), a dict by output layer name (outputs left out get none), and, as Keras 2
did, one list of metrics applied to every output when its length differs from the number
of outputs. Each is logged as ``"<output layer>_<metric>"`` (``"dense_1_accuracy"``), the
metric named by its identifier; a name met twice gets ``_1``, ``_2`` (:func:`output_metrics`).
``weighted_metrics=`` takes the same forms; those metrics also weigh the samples by the
sample (and class) weights, logged as ``"<output>_weighted_<metric>"``.

Every metric of a masked sequence output takes the output's mask m (N, T) as its weights,
times the sample weights w (N,) for a weighted metric, w_n m_nt, as Keras's ``apply_mask``
does (:func:`step_weights`; :class:`OutputMasks` holds the masks of the last forward).

lamina's Trainer takes one output and one label array per sample, so during training the
outputs are flattened per sample and joined into one (N, sum_i |y_pred_i|) tensor
(:class:`PackedOutputs`) and the labels likewise into one (N, sum_i |y_true_i|) float64 array
(:func:`pack_labels`, exact for integer labels); the loss cuts both back into their parts.
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.keras import losses
from lamina.keras.masking import mask_of, masked_loss
from lamina.nn.module import Module
from lamina.train import EpochMetric, MeanMetric

__all__ = ["LabelLayout", "OutputLoss", "OutputMasks", "OutputMetric", "PackedOutputs", "WeightedLosses",
           "output_metrics", "pack_labels", "per_output", "step_weights"]


def per_output(value, names: list[str], what: str, default=None) -> list:
    """One value per output from one value for all, a list in output order, or a dict by name."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"compile: {what} names {unknown}, which are not outputs; the outputs are {names}")
        return [value.get(name, default) for name in names]
    if isinstance(value, (list, tuple)):
        if len(value) != len(names):
            raise ValueError(f"compile: {what} holds {len(value)} values for the model's {len(names)} outputs "
                             f"{names}")
        return list(value)
    return [value if value is not None else default] * len(names)


class PackedOutputs(Module):
    """The model's outputs flattened per sample and joined, (N, sum_i |y_pred_i|); keeps the
    last call's output shapes and masks to cut them back (:meth:`unpack`)."""

    def __init__(self, model: Module):
        super().__init__(name=f"{model.name or 'model'}_outputs")
        self.model = model
        self.shapes: list[tuple] = []
        self.masks: list = []

    def forward(self, *inputs) -> Tensor:
        outputs = self.model(*inputs)
        self.shapes = [tuple(o.shape[1:]) for o in outputs]
        self.masks = [mask_of(o) for o in outputs]
        n = outputs[0].shape[0]
        return F.concat([F.reshape(o, n, -1) for o in outputs], axis=1)

    def parts(self, packed):
        """The outputs of a packed tensor or array, each (N, *shape_i)."""
        n, start, parts = packed.shape[0], 0, []
        for shape in self.shapes:
            size = int(np.prod(shape, dtype=np.int64))
            piece = packed[:, start:start + size]
            parts.append(F.reshape(piece, n, *shape) if isinstance(piece, Tensor) else piece.reshape(n, *shape))
            start += size
        return parts


class LabelLayout:
    """The shapes and dtypes of the label arrays of each output, to cut packed labels back."""

    def __init__(self, labels: list):
        arrays = [np.asarray(y) for y in labels]
        self.shapes = [a.shape[1:] for a in arrays]
        self.dtypes = [a.dtype for a in arrays]

    def parts(self, packed) -> list[np.ndarray]:
        packed = np.asarray(packed)
        n, start, parts = packed.shape[0], 0, []
        for shape, dtype in zip(self.shapes, self.dtypes):
            size = int(np.prod(shape, dtype=np.int64))
            parts.append(packed[:, start:start + size].reshape(n, *shape).astype(dtype))
            start += size
        return parts


def pack_labels(labels: list) -> np.ndarray:
    """The label arrays of each output, flattened per sample and joined as float64 (N, sum_i |y_i|)."""
    arrays = [np.asarray(y) for y in labels]
    n = {len(a) for a in arrays}
    if len(n) != 1:
        raise ValueError(f"fit: the label arrays of the outputs hold {sorted(n)} samples; they must agree")
    return np.concatenate([a.reshape(len(a), -1).astype(np.float64) for a in arrays], axis=1)


class WeightedLosses:
    """L = sum_i w_i L_i over the packed outputs and labels (see the module notes);
    ``reduction="none"`` gives sum_i w_i L_i per sample."""

    def __init__(self, losses_: list[losses.Loss], weights: list[float], packer: PackedOutputs,
                 layout: LabelLayout | None = None):
        self.losses, self.weights, self.packer, self.layout = losses_, [float(w) for w in weights], packer, layout
        self.__name__ = "loss"

    def one(self, i: int, y_pred, y_true, reduction: str = "mean"):
        """The loss of output i (masked steps left out)."""
        loss = self.losses[i]
        if isinstance(loss, losses.SparseCategoricalCrossentropy):
            y_true = losses.sparse_labels(y_true)
        mask = self.packer.masks[i] if self.packer.masks else None
        if mask is not None and np.ndim(y_true) >= 2:
            return masked_loss(loss.fn, y_pred, y_true, mask, reduction)
        return loss.fn(y_pred, y_true, reduction=reduction)

    def __call__(self, y_pred, y_true, reduction: str = "mean"):
        preds, labels = self.packer.parts(y_pred), self.layout.parts(y_true)
        total = None
        for i, (pred, label) in enumerate(zip(preds, labels)):
            term = self.one(i, pred, label, reduction) * self.weights[i]
            if reduction == "none" and term.ndim > 1:      # a masked sequence output's steps: per sample
                term = F.mean(term, axis=tuple(range(1, term.ndim)))
            total = term if total is None else total + term
        return total


class OutputLoss(MeanMetric):
    """The loss of one output, averaged over the epoch's samples (Keras's ``<name>_loss``).
    With sample (or class) weights w the batch's value is sum_n w_n L_i(n) over the batch
    size (or over sum_n w_n, following the Trainer's ``weight_normalization``), as the total
    loss weighs them, so the logged total is still sum_i w_i L_i of the logged outputs'."""

    def __init__(self, weighted: WeightedLosses, index: int, name: str, masks: OutputMasks | None = None):
        self.weighted, self.index, self.masks = weighted, index, masks
        super().__init__(self._compute, name)

    def _compute(self, y_pred, y_true) -> float:
        pred = Tensor(self.weighted.packer.parts(np.asarray(y_pred))[self.index])
        label = self.weighted.layout.parts(y_true)[self.index]
        weights = None if self.masks is None else self.masks.batch_weights
        if weights is None:
            return float(self.weighted.one(self.index, pred, label).item())
        losses_ = np.asarray(self.weighted.one(self.index, pred, label, reduction="none").data, dtype=np.float64)
        if losses_.ndim > 1:
            losses_ = losses_.mean(axis=tuple(range(1, losses_.ndim)))
        total = float(losses_ @ weights)
        if self.masks.weight_normalization == "batch_size":
            return total / len(weights)
        return total / max(float(weights.sum()), np.finfo(np.float64).tiny)


class OutputMasks:
    """The masks of the model's outputs at its last forward (None for an output without one),
    and the sample weights of the batch being scored (``batch_weights``, None when it has
    none) with the Trainer's ``weight_normalization``, for the outputs' losses."""

    def __init__(self):
        self.masks: list = []
        self.batch_weights: np.ndarray | None = None
        self.weight_normalization = "batch_size"

    def of(self, index: int):
        return self.masks[index] if index < len(self.masks) else None


def step_weights(mask, y_pred, sample_weight=None) -> np.ndarray | None:
    """The weights a metric gives each sample (N,) or step (N, T): the sample weights, the
    output's mask where ``y_pred`` is a masked sequence (N, T, ...), or both multiplied."""
    if mask is not None and tuple(np.shape(y_pred)[:2]) != mask.shape:
        mask = None
    if mask is None:
        return None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    steps = mask.astype(np.float64)
    return steps if sample_weight is None else steps * np.asarray(sample_weight, dtype=np.float64).reshape(-1, 1)


class OutputMetric(EpochMetric):
    """A metric of one output: ``metric`` fed that output's predictions and labels (cut from
    the packed ones of a model of several outputs, ``weighted``), weighted by the output's
    mask and, with ``sample_weighted``, the sample weights; logged as ``name``."""

    takes_sample_weight = True

    def __init__(self, metric: EpochMetric, name: str, masks: OutputMasks, weighted: WeightedLosses | None = None,
                 index: int = 0, sample_weighted: bool = False):
        self.metric, self.name, self.masks = metric, name, masks
        self.weighted, self.index, self.sample_weighted = weighted, index, sample_weighted

    def reset(self) -> None:
        self.metric.reset()

    def _parts(self, y_pred, y_true):
        if self.weighted is None:
            return y_pred, y_true
        pred = self.weighted.packer.parts(np.asarray(y_pred))[self.index]
        label = self.weighted.layout.parts(y_true)[self.index]
        if isinstance(self.weighted.losses[self.index], losses.SparseCategoricalCrossentropy):
            label = losses.sparse_labels(label)
        return pred, label

    def update(self, y_pred, y_true, sample_weight=None) -> float:
        pred, label = self._parts(y_pred, y_true)
        given = sample_weight if self.sample_weighted else None
        weights = step_weights(self.masks.of(self.index), pred, given)
        if weights is None or not getattr(self.metric, "takes_sample_weight", False):
            return self.metric.update(pred, label)
        return self.metric.update(pred, label, weights)

    def result(self) -> float:
        return self.metric.result()


def _metric_lists(metrics, names: list[str], what: str) -> list[list]:
    """The metrics of each output (see the module notes)."""
    if isinstance(metrics, dict):
        chosen = per_output(metrics, names, what, None)
    elif isinstance(metrics, (list, tuple)) and len(metrics) == len(names):
        chosen = list(metrics)
    elif isinstance(metrics, (list, tuple)):
        if any(isinstance(m, (list, tuple, dict)) for m in metrics):
            raise ValueError(f"compile: {what} holds {len(metrics)} lists for the model's {len(names)} outputs "
                             f"{names}; give one entry per output, a dict by output name, or one flat list for "
                             "every output")
        chosen = [list(metrics)] * len(names)
    else:
        chosen = [metrics] * len(names)
    return [[] if m is None else list(m) if isinstance(m, (list, tuple)) else [m] for m in chosen]


def output_metrics(metrics, names: list[str], weighted: WeightedLosses, resolve, masks: OutputMasks,
                   sample_weighted: bool = False) -> list[OutputMetric]:
    """The compiled metrics of a model of several outputs, named ``"<output>_<metric>"``
    (``"<output>_weighted_<metric>"`` with ``sample_weighted``); ``resolve(identifier, loss)``
    makes one metric."""
    made, seen = [], {}
    infix, what = ("weighted_", "weighted_metrics") if sample_weighted else ("", "metrics")
    for index, (name, identifiers) in enumerate(zip(names, _metric_lists(metrics, names, what))):
        for identifier in identifiers:
            metric = resolve(identifier, weighted.losses[index])
            label = f"{name}_{infix}{identifier if isinstance(identifier, str) else metric.name}"
            count = seen.get(label, 0)
            seen[label] = count + 1
            made.append(OutputMetric(metric, label if count == 0 else f"{label}_{count}", masks, weighted, index,
                                     sample_weighted))
    return made
