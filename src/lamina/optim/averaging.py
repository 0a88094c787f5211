"""Weight averaging: a running average of a model's weights along its training path.

Late in training with a constant (or cyclic) learning rate, gradient descent keeps
bouncing around the bottom of a valley of the cost J; the average of the points it visits
lies nearer the centre of the valley than any single one of them. Two averages are kept,
in the notation of the course notes' "Exponentially weighted averages" (theta_t: the
model's weights at the t-th update, v_t: their average):

* stochastic weight averaging (SWA), the equal average of every update so far:
  v_t = (1/t) sum_{i<=t} theta_i, kept as v_t = v_{t-1} + (theta_t - v_{t-1}) / t;
* the exponentially weighted average (EMA), v_t = beta v_{t-1} + (1 - beta) theta_t.

Both start from v_1 = theta_1, so no bias correction is needed. :class:`AveragedModel`
keeps either average in a copy of the model (PyTorch's ``torch.optim.swa_utils``);
:func:`update_batch_norm` recomputes the batch-norm statistics of averaged weights, which
no single training step has produced. The training callback is
:class:`lamina.train.WeightAveraging`.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Iterable, Iterator

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.data import DataLoader
from lamina.errors import ShapeError
from lamina.nn.module import Module, intercept_calls
from lamina.nn.normalization import BatchNorm

__all__ = ["AveragedModel", "update_batch_norm"]


class AveragedModel(Module):
    """A copy of ``model`` (``self.module``) whose weights are a running average of the
    model's, updated by :meth:`update` (alias :meth:`update_parameters`). It is called,
    evaluated and saved like any module; calling it runs the copy.

    With theta_t the model's weights at the t-th call of :meth:`update` and v_t the average:

    * ``decay=None``: stochastic weight averaging, the equal average of every update,
      v_t = v_{t-1} + (theta_t - v_{t-1}) / t = (1/t) sum_{i<=t} theta_i;
    * ``decay=beta`` in [0, 1): the exponentially weighted average,
      v_t = beta v_{t-1} + (1 - beta) theta_t, about the last 1/(1 - beta) updates.

    The first update copies, v_1 = theta_1 (as PyTorch's ``AveragedModel`` and its
    ``get_ema_multi_avg_fn``), so the average carries no bias towards 0. ``n_averaged``
    counts the updates. Every parameter is averaged, frozen ones included. Buffers (the
    running statistics of batch normalization): with ``use_buffers=True`` they are
    averaged by the same rule (float ones; others are copied); otherwise each update copies
    the model's, as PyTorch does, and the statistics of the averaged weights are
    recomputed afterwards with :func:`update_batch_norm`.

    :meth:`state_dict` holds the copy's weights under ``module.`` and the count under
    ``n_averaged``; ``decay`` and ``use_buffers`` are constructor arguments, not state.
    """

    def __init__(self, model: Module, decay: float | None = None, use_buffers: bool = False):
        super().__init__()
        if not isinstance(model, Module):
            raise TypeError(f"AveragedModel: model must be a lamina Module, got {type(model).__name__}")
        if decay is not None and (isinstance(decay, bool) or not isinstance(decay, numbers.Real)
                                  or not 0.0 <= decay < 1.0):
            raise ValueError(f"AveragedModel: decay must be None (equal average) or a number in [0, 1) "
                             f"(v = decay·v + (1 - decay)·theta), got {decay!r}")
        self.decay = None if decay is None else float(decay)
        self.use_buffers = bool(use_buffers)
        self.module = _detached_copy(model)
        self.register_buffer("n_averaged", backend.xp.zeros((), dtype=np.int64))

    @property
    def n_averaged(self) -> int:
        """How many times :meth:`update` has folded the model's weights in."""
        return int(self._buffers["n_averaged"])

    def forward(self, *inputs, **kwargs):
        return self.module(*inputs, **kwargs)

    def compute_output_shape(self, input_shape):
        return self.module.compute_output_shape(input_shape)

    def update(self, model: Module) -> None:
        """Fold ``model``'s current weights into the average (see the class docstring).

        ``model`` must have the parameters (names and shapes) and buffers of the copy;
        usually it is the model the copy was made from, after more training steps.
        """
        if not isinstance(model, Module):
            raise TypeError(f"AveragedModel.update: model must be a lamina Module, got {type(model).__name__}")
        count = self.n_averaged
        if count == 0 and not self.module.built and model.built:
            self.module = _detached_copy(model)  # copied before its lazy build: take the built one
        params = _matched(dict(self.module.named_parameters()), dict(model.named_parameters()), "parameter",
                          lambda param: param.data.shape)
        buffers = _matched(_buffer_slots(self.module), _buffer_slots(model), "buffer", lambda slot: slot[2].shape)
        # Both rules are v <- v + w (theta - v): w = 1/t (equal average) or 1 - beta (EMA).
        weight = 1.0 / (count + 1) if self.decay is None else 1.0 - self.decay
        for averaged, theta in params.values():
            mean = averaged.data
            averaged.data = _copy_of(theta.data, mean.dtype) if count == 0 else _moved(mean, theta.data, weight)
        for (owner, attr, mean), (_, _, theta) in buffers.values():
            averages = self.use_buffers and count > 0 and np.issubdtype(mean.dtype, np.floating)
            setattr(owner, attr, _moved(mean, theta, weight) if averages else _copy_of(theta, mean.dtype))
        self._buffers["n_averaged"] = backend.xp.asarray(count + 1, dtype=np.int64)

    def update_parameters(self, model: Module) -> None:
        """PyTorch's name for :meth:`update`."""
        self.update(model)

    def extra_repr(self) -> str:
        rule = "equal average" if self.decay is None else f"decay={self.decay}"
        return f"{rule}, use_buffers={self.use_buffers}, n_averaged={self.n_averaged}"


def _detached_copy(model: Module) -> Module:
    """A deep copy of ``model`` with no gradients."""
    duplicate = copy.deepcopy(model)
    duplicate.zero_grad()
    return duplicate


def _copy_of(values, dtype):
    return backend.xp.array(values, dtype=dtype, copy=True)


def _moved(mean, theta, weight: float):
    """mean + weight (theta - mean), in mean's dtype."""
    return (mean + weight * (theta.astype(mean.dtype, copy=False) - mean)).astype(mean.dtype, copy=False)


def _buffer_slots(model: Module) -> dict:
    """Every buffer that is set, by dotted name: (owner module, attribute, array)."""
    slots = {}
    for path, owner in model.named_modules():
        for attr, values in owner._buffers.items():
            if values is not None:
                slots[f"{path}.{attr}" if path else attr] = (owner, attr, values)
    return slots


def _matched(own: dict, theirs: dict, kind: str, shape_of) -> dict:
    """{name: (own entry, their entry)}, after checking both have the same names and shapes."""
    if set(own) != set(theirs):
        missing = [name for name in own if name not in theirs]
        unexpected = [name for name in theirs if name not in own]
        raise ValueError(f"AveragedModel.update: the model's {kind}s do not match the averaged copy's: "
                         f"missing from the model {missing}, not in the copy {unexpected}")
    for name in own:
        own_shape, their_shape = tuple(shape_of(own[name])), tuple(shape_of(theirs[name]))
        if own_shape != their_shape:
            raise ShapeError(f"AveragedModel.update: {kind} {name!r} has shape {their_shape} in the model "
                             f"but {own_shape} in the averaged copy")
    return {name: (own[name], theirs[name]) for name in own}


def update_batch_norm(model: Module, data, batch_size: int = 128) -> None:
    """Recompute the running mean and variance of every :class:`~lamina.nn.BatchNorm` in
    ``model`` by one pass over ``data`` in training mode, without gradients (PyTorch's
    ``torch.optim.swa_utils.update_bn``).

    Averaged weights were never trained with, so the running statistics that came with
    them describe other activations. Each layer's statistics are reset and replaced by the
    cumulative mean of its batch statistics, running_k = running_{k-1} + (batch_k -
    running_{k-1}) / k at its k-th call (the layer's momentum set to (k-1)/k), with the
    unbiased batch variance as BatchNorm keeps it. Afterwards every layer gets back its
    momentum and every module its training mode; if the pass fails, the statistics too.

    ``data``: a :class:`~lamina.data.DataLoader` (its batches as they come), a dataset, an
    array of inputs or a tuple ``(x, ...)`` whose first element is the inputs, the last
    three cut into batches of ``batch_size`` in order. A batch that is a tuple or list
    feeds its first element to the model. A model without batch norm is left alone.
    """
    if not isinstance(model, Module):
        raise TypeError(f"update_batch_norm: model must be a lamina Module, got {type(model).__name__}")
    batches = _input_batches(data, batch_size)
    layers = [module for module in model.modules() if isinstance(module, BatchNorm)]
    if not layers:
        return
    momenta = {layer: layer.momentum for layer in layers}
    saved = {layer: (layer.running_mean, layer.running_var) for layer in layers if layer.built}
    modes = [(module, module.training) for module in model.modules()]
    calls = dict.fromkeys(layers, 0)

    def cumulative(module, inputs, kwargs, forward):
        if module in calls:
            calls[module] += 1
            module.momentum = (calls[module] - 1) / calls[module]
        return forward()

    completed = False
    try:
        for layer, (mean, var) in saved.items():
            layer.running_mean, layer.running_var = backend.xp.zeros_like(mean), backend.xp.ones_like(var)
        model.train()
        seen = 0
        with no_grad(), intercept_calls(cumulative):
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x if isinstance(x, Tensor) else Tensor(x))
                seen += 1
        if seen == 0:
            raise ValueError("update_batch_norm: data gave no batches; the statistics were left as they were")
        completed = True
    finally:
        if not completed:
            for layer, (mean, var) in saved.items():
                layer.running_mean, layer.running_var = mean, var
        for layer, momentum in momenta.items():
            layer.momentum = momentum
        for module, training in modes:
            object.__setattr__(module, "training", training)


def _input_batches(data, batch_size: int) -> Iterable:
    """The batches ``update_batch_norm`` feeds to the model (see its docstring)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"update_batch_norm: batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, tuple):
        if not data:
            raise ValueError("update_batch_norm: data is an empty tuple; expected (x, ...) with the inputs first")
        data = data[0]
    if isinstance(data, Tensor):
        data = data.data
    if hasattr(data, "shape"):
        if len(data.shape) == 0:
            raise ShapeError(f"update_batch_norm: the inputs must have a batch axis, got shape {tuple(data.shape)}")
        return _slices(data, batch_size)
    if hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        return DataLoader(data, batch_size=batch_size, shuffle=False, seed=0)
    raise TypeError(f"update_batch_norm: data must be a DataLoader, a dataset, an array or a tuple (x, ...); "
                    f"got {type(data).__name__}")


def _slices(x, batch_size: int) -> Iterator:
    for start in range(0, len(x), batch_size):
        yield x[start:start + batch_size]
