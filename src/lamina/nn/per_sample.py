r"""Per-sample gradients: the gradient of each sample's own loss, for every parameter, from
one forward and one backward pass over the batch.

For a batch of N samples with losses l_1 ... l_N, :func:`per_sample_gradients` gives, for
each trainable parameter w, the array (N, \*w.shape) of g_i(w) = dl_i/dw (what
``torch.func.vmap(torch.func.grad(...))`` computes). Differentially private training
(:class:`lamina.optim.DPOptimizer`) clips each of them; they also serve data attribution and
gradient-noise studies.

How: while a :class:`PerSampleGradients` tracker is attached, every module call that owns a
tracked parameter is intercepted (:func:`lamina.nn.module.intercept_calls`). Its input is kept
and its (pre-activation) output z passes through an identity node whose backward receives
dJ/dz, the gradient of the output. The per-sample gradients are then outer products
(Goodfellow 2015), one batched contraction per layer:

- Dense, z = x W + b:            g_i(W) = x_i^T dz_i,   g_i(b) = sum of dz_i
  (the sums run over any axes between the batch and the features, such as time);
- Conv2D / DepthwiseConv2D:      g_i(W) = dz_i^T P(x_i), g_i(b) = sum over pixels of dz_i,
  P(x_i) the im2col patch rows of the padded input (stride, dilation and groups included);
- Embedding:                     g_i(E) = the rows dy_i added at the sample's word ids;
- LayerNorm, GroupNorm, InstanceNorm (y = gamma x_hat + beta):
                                 g_i(gamma) = sum of dy_i x_hat_i, g_i(beta) = sum of dy_i;
- any other layer with its own parameters: a correct but slow fallback that runs the layer
  again on each sample alone and back-propagates that sample's output gradient through it
  (one small forward and backward per sample). The layer must treat samples independently
  and draw nothing at random inside (put dropout in a layer of its own).

Batch normalization in training mode mixes the samples of a batch (each output depends on
the batch's mean and variance), so no per-sample gradient exists: it is refused with an error
naming the layer; GroupNorm or LayerNorm are the per-sample alternatives.

Loss convention (``loss_reduction``): the backward pass must start from the batch's loss,
either the sum of the per-sample losses (``"sum"``: then sum_i g_i = the batch gradient) or
their mean (``"mean"``: the gradient reaching each layer carries a factor 1/N, which is
undone, so g_i is still dl_i/dw and mean_i g_i = the batch gradient). Every traced layer must
see the samples on its leading axis. Parameters used outside module calls (a penalty on the
weights added to the loss) contribute to no per-sample gradient.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager

from lamina import backend
from lamina.autograd import Function, Tensor, graph, no_grad
from lamina.autograd.graph import recomputing
from lamina.errors import ShapeError
from lamina.functional.fold import WindowGeometry, unfold_array
from lamina.functional.im2col import conv_pads, pad_nhwc
from lamina.nn.activation import activate_fresh
from lamina.nn.conv import Conv2D, DepthwiseConv2D
from lamina.nn.dense import Dense
from lamina.nn.embedding import Embedding
from lamina.nn.functional_call import functional_call
from lamina.nn.instance_norm import InstanceNorm1D, InstanceNorm2D
from lamina.nn.module import Module, as_tensor, intercept_calls
from lamina.nn.normalization import BatchNorm
from lamina.nn.parameter import Parameter
from lamina.nn.sample_norm import GroupNorm, LayerNorm

__all__ = ["PerSampleGradients", "gradient_tap", "per_sample_gradients"]

REDUCTIONS = ("sum", "mean")


class _Tap(Function):
    """The identity on a layer's output; its backward hands dJ/dz to ``on_gradient`` (keyword)."""

    def forward(self, z):
        return z

    def backward(self, dy):
        self.on_gradient(dy)
        return (dy,)

    def backward_graph(self, dy):
        return (dy,)


def gradient_tap(z: Tensor, on_gradient: Callable) -> Tensor:
    """z unchanged, with ``on_gradient(dJ/dz)`` called when the backward pass reaches it."""
    return _Tap.apply(z, on_gradient=on_gradient) if z.requires_grad else z


class PerSampleGradients:
    """Records per-sample gradients of ``source``'s trainable parameters while attached.

    ``source``: a model (every trainable parameter under it, also those its lazy build
    creates later) or an iterable of parameters. Use it as a context manager, or call
    :meth:`attach` and :meth:`detach`::

        with PerSampleGradients(model, loss_reduction="mean") as tracker:
            cross_entropy(model(x), y).backward()
        g = tracker.gradients()            # {"0.weight": (N, n_in, units), ...}

    Each backward pass through a tracked layer adds its per-sample gradients to those held
    (a layer called twice on the batch adds both calls); :meth:`clear` forgets them.
    Calls made without recording the graph (``no_grad``, evaluation) are not traced. A
    module with a rule (Dense, Conv2D, ...) is computed by the tracker, so hooks registered
    on that module itself do not run while tracking. See the module docstring for the rules.
    """

    def __init__(self, source: Module | Iterable[Parameter], loss_reduction: str = "sum"):
        if loss_reduction not in REDUCTIONS:
            raise ValueError(f"PerSampleGradients: loss_reduction must be one of {REDUCTIONS}, "
                             f"got {loss_reduction!r}")
        self.loss_reduction = loss_reduction
        self.model = source if isinstance(source, Module) else None
        self._fixed = None if self.model is not None else {id(p): p for p in source}
        self._known_modules: set[int] = set()
        self._samples: dict[int, object] = {}

    # -- attaching -------------------------------------------------------------------
    @property
    def attached(self) -> bool:
        return any(t is self for t in _live_trackers())

    def attach(self, weak: bool = False) -> PerSampleGradients:
        """Start recording (several trackers may be attached at once, over the same layers or
        not). ``weak``: recording also stops when nothing else holds the tracker any more (an
        owner such as :class:`~lamina.optim.DPOptimizer` that is dropped stops it)."""
        if not self.attached:
            if not _ATTACHED:
                _INTERCEPTION.enter_context(intercept_calls(_intercept))
            _ATTACHED.append(weakref.ref(self) if weak else self)
            if weak:
                weakref.finalize(self, _stop_if_unused)
        return self

    def detach(self) -> None:
        _ATTACHED[:] = [entry for entry in _ATTACHED if _resolve(entry) not in (self, None)]
        if not _ATTACHED:
            _INTERCEPTION.close()

    def __enter__(self) -> PerSampleGradients:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    # -- results ---------------------------------------------------------------------
    def grad_sample(self, param: Tensor):
        """The (N, \\*param.shape) per-sample gradients of ``param`` recorded so far, or None."""
        return self._samples.get(id(param))

    def gradients(self) -> dict[str, object]:
        """Parameter name (as ``named_parameters`` gives it; the position for a list of
        parameters) -> its per-sample gradients, for every parameter that has some."""
        named: Iterator[tuple[str, Tensor]]
        if self.model is not None:
            named = self.model.named_parameters(trainable_only=True)
        else:
            named = ((str(i), p) for i, p in enumerate(self._fixed.values()))
        return {name: self._samples[id(p)] for name, p in named if id(p) in self._samples}

    def clear(self) -> None:
        self._samples.clear()

    def add(self, param: Parameter, per_sample) -> None:
        """Add one layer call's per-sample gradients of ``param`` (sum-of-losses convention)."""
        if self.loss_reduction == "mean":
            per_sample = per_sample * per_sample.shape[0]
        per_sample = per_sample.astype(param.dtype, copy=False)
        held = self._samples.get(id(param))
        if held is None:
            self._samples[id(param)] = per_sample
        elif held.shape != per_sample.shape:
            raise ShapeError(f"PerSampleGradients: a parameter of shape {param.shape} already holds per-sample "
                             f"gradients for {held.shape[0]} samples and now gets {per_sample.shape[0]}; "
                             "call clear() between batches")
        else:
            held += per_sample

    def _covers(self, module: Module) -> bool:
        """Whether ``module`` is one of this tracker's model's layers, or owns one of its parameters."""
        if self.model is not None:
            if id(module) not in self._known_modules:
                self._known_modules = {id(m) for m in self.model.modules()}
            return id(module) in self._known_modules
        return any(id(p) in self._fixed for p in module._parameters.values())

    def _tracked_params(self, module: Module) -> dict[str, Parameter]:
        own = module._parameters
        if not own:
            return {}
        if self.model is not None and id(module) not in self._known_modules:
            self._known_modules = {id(m) for m in self.model.modules()}
        found = {}
        for key, p in own.items():
            if not (getattr(p, "trainable", True) and p.requires_grad):
                continue
            if (self._fixed is not None and id(p) in self._fixed) or (
                    self._fixed is None and id(module) in self._known_modules):
                found[key] = p
        return found


# -- tracing -------------------------------------------------------------------------------------

# The attached trackers (or weak references to them); while there is one, _intercept wraps every
# module call.
_ATTACHED: list = []


def _resolve(entry) -> PerSampleGradients | None:
    return entry() if isinstance(entry, weakref.ref) else entry


def _stop_if_unused() -> None:
    """A weakly attached tracker was dropped: once no tracker is left, calls are no longer
    intercepted (inference fusion and the call fast path come back)."""
    if not _live_trackers():
        _INTERCEPTION.close()


def _live_trackers() -> list[PerSampleGradients]:
    """The attached trackers still alive (weakly attached ones that were dropped are forgotten)."""
    live = [t for t in map(_resolve, _ATTACHED) if t is not None]
    if len(live) != len(_ATTACHED):
        _ATTACHED[:] = [entry for entry in _ATTACHED if _resolve(entry) is not None]
    return live
_INTERCEPTION = ExitStack()
# True while a rule runs a layer again for itself (the fallback, a norm's x_hat): not traced.
_PAUSED = [False]


@contextmanager
def _untraced() -> Iterator[None]:
    _PAUSED[0] = True
    try:
        yield
    finally:
        _PAUSED[0] = False


class _Receivers:
    """The trackers that follow one layer call, each given the gradients of its own parameters."""

    def __init__(self, wanted: list[tuple[PerSampleGradients, set[int]]]):
        self.wanted = wanted

    def add(self, param: Parameter, per_sample) -> None:
        for tracker, ids in self.wanted:
            if id(param) in ids:
                tracker.add(param, per_sample)


def _intercept(module: Module, inputs: tuple, kwargs: dict, forward: Callable):
    if _PAUSED[0] or not graph.is_grad_enabled():
        return forward()
    trackers = _live_trackers()
    if not trackers:
        return forward()
    if isinstance(module, BatchNorm) and module.training and any(t._covers(module) for t in trackers):
        raise ValueError(
            f"per-sample gradients: {module._label()} normalises with the statistics of the whole batch, so "
            "a sample's output depends on the other samples and has no gradient of its own; replace it with "
            "GroupNorm or LayerNorm (or put it in evaluation mode with .eval())")
    params: dict[str, Parameter] = {}
    wanted = []
    for tracker in trackers:
        found = tracker._tracked_params(module)
        if found:
            params.update(found)
            wanted.append((tracker, {id(p) for p in found.values()}))
    if not params:
        return forward()
    rule = _RULES.get(type(module), _per_sample_loop)
    if rule is _norm_rule and not _norm_rule_fits(module, params, inputs):
        rule = _per_sample_loop
    return rule(_Receivers(wanted), module, params, inputs, kwargs, forward)


# -- rules -------------------------------------------------------------------------------------

def _batched_outer(x, dz):
    """sum over the middle axes of x_i^T dz_i: (N, ..., a), (N, ..., b) -> (N, a, b)."""
    n = x.shape[0]
    x3 = x.reshape(n, -1, x.shape[-1])
    dz3 = dz.reshape(n, -1, dz.shape[-1])
    return backend.xp.matmul(x3.transpose(0, 2, 1), dz3)


def _dense_rule(tracker, module, params, inputs, kwargs, forward):
    x = as_tensor(inputs[0])
    z = module.apply_weights(x, module.weight, activate=False)

    def on_gradient(dz):
        if "weight" in params:
            tracker.add(params["weight"], _batched_outer(x.data, dz))
        if "bias" in params:
            tracker.add(params["bias"], dz.reshape(dz.shape[0], -1, dz.shape[-1]).sum(axis=1))

    z = gradient_tap(z, on_gradient)
    return activate_fresh(module.activation, z) if module.activation is not None else z


def _conv_patches(module, x):
    """P(x): the (N, L, f_h f_w C) patch rows the layer's kernel reads from the padded x."""
    fh, fw = module.kernel_size
    dh, dw = module.dilation
    extent = (dh * (fh - 1) + 1, dw * (fw - 1) + 1)
    pads = conv_pads(module.padding, x.shape[1:3], extent, module.stride, module._label())
    geometry = WindowGeometry(module._label(), module.kernel_size, module.dilation, 0, module.stride)
    return unfold_array(pad_nhwc(x, pads), geometry)


def _conv_rule(tracker, module, params, inputs, kwargs, forward):
    x = as_tensor(inputs[0])
    z = module.apply_weights(x, module.weight, activate=False)

    def on_gradient(dz):
        n, k = dz.shape[0], dz.shape[-1]
        if "weight" in params:
            w_shape = module.weight.shape
            rows = _conv_patches(module, x.data)                          # (N, L, f_h f_w C)
            dz3 = dz.reshape(n, -1, k)                                    # (N, L, K)
            groups = module._groups_for(module.in_channels)
            if groups == 1:
                g = backend.xp.matmul(dz3.transpose(0, 2, 1), rows)
            else:                                                         # K and C split into groups
                taps = w_shape[1] * w_shape[2]
                rows5 = rows.reshape(n, rows.shape[1], taps, groups, w_shape[3])
                dz4 = dz3.reshape(n, dz3.shape[1], groups, k // groups)
                g = backend.xp.einsum("nlgk,nltgc->ngktc", dz4, rows5, optimize=True)
            tracker.add(params["weight"], g.reshape((n,) + w_shape))
        if "bias" in params:
            tracker.add(params["bias"], dz.reshape(n, -1, k).sum(axis=1))

    z = gradient_tap(z, on_gradient)
    return activate_fresh(module.activation, z) if module.activation is not None else z


def _embedding_rule(tracker, module, params, inputs, kwargs, forward):
    out = forward()
    ids = backend.xp.asarray(getattr(inputs[0], "data", inputs[0])).astype(backend.xp.int64)

    def on_gradient(dy):
        n = dy.shape[0]
        rows, width = module.weight.shape
        flat_ids = ids.reshape(n, -1) + rows * backend.xp.arange(n)[:, None]   # row of sample i: i V + id
        g = backend.xp.zeros((n * rows, width), dtype=dy.dtype)
        backend.xp.add.at(g, flat_ids.reshape(-1), dy.reshape(-1, width))
        g = g.reshape(n, rows, width)
        if module.padding_idx is not None:
            g[:, module.padding_idx] = 0
        tracker.add(params["weight"], g)

    return gradient_tap(out, on_gradient)


def _norm_rule_fits(module, params, inputs) -> bool:
    """Whether the affine parameters line up with the output's trailing axes (numpy broadcasting)."""
    shape = tuple(getattr(inputs[0], "shape", ()))
    return set(params) <= {"weight", "bias"} and all(
        p.ndim < len(shape) and all(size in (1, full) for size, full in zip(p.shape, shape[len(shape) - p.ndim:]))
        for p in params.values())


def _sum_to(per_sample, shape):
    """(N, *out) summed down to (N, *shape), shape broadcasting against out's trailing axes."""
    lead = per_sample.ndim - 1 - len(shape)
    summed = per_sample.sum(axis=tuple(range(1, 1 + lead))) if lead else per_sample
    ones = tuple(1 + i for i, size in enumerate(shape) if size == 1 and summed.shape[1 + i] != 1)
    return summed.sum(axis=ones, keepdims=True) if ones else summed


def _norm_rule(tracker, module, params, inputs, kwargs, forward):
    out = forward()
    x = inputs[0]

    def on_gradient(dy):
        if "weight" in params:
            xp = backend.xp
            gamma, beta = module._parameters["weight"], module._parameters.get("bias")
            plain = {"weight": xp.ones(gamma.shape, dtype=gamma.dtype)}
            if beta is not None:
                plain["bias"] = xp.zeros(beta.shape, dtype=beta.dtype)
            with _untraced(), no_grad(), recomputing():
                x_hat = functional_call(module, plain, x, **kwargs).data
            tracker.add(params["weight"], _sum_to(dy * x_hat, gamma.shape))
        if "bias" in params:
            tracker.add(params["bias"], _sum_to(dy, params["bias"].shape))

    return gradient_tap(out, on_gradient)


def _sample(value, i: int, n: int):
    """Sample i of a batched argument (a tensor or array with n rows); anything else as it is."""
    if isinstance(value, Tensor) and value.ndim and value.shape[0] == n:
        return value[i:i + 1]
    if hasattr(value, "shape") and hasattr(value, "dtype") and len(value.shape) and value.shape[0] == n:
        return value[i:i + 1]
    return value


def _per_sample_loop(tracker, module, params, inputs, kwargs, forward):
    """The fallback: the layer run again on each sample alone (slow, exact)."""
    out = forward()
    outputs = [out] if isinstance(out, Tensor) else list(out) if type(out) in (tuple, list) else []
    wanted = list(params.values())

    def backprop_output(index: int) -> Callable:
        def on_gradient(dy):
            n = dy.shape[0]
            grads = [backend.xp.zeros((n,) + p.shape, dtype=p.dtype) for p in wanted]
            with _untraced(), graph.enable_grad(), recomputing():
                for i in range(n):
                    result = module(*[_sample(a, i, n) for a in inputs],
                                    **{k: _sample(v, i, n) for k, v in kwargs.items()})
                    own = result if isinstance(result, Tensor) else result[index]
                    found = graph.gradients(own, dy[i:i + 1], wanted)
                    for g, one in zip(grads, found):
                        if one is not None:
                            g[i] = one
            for p, g in zip(wanted, grads):
                tracker.add(p, g)
        return on_gradient

    tapped = [gradient_tap(o, backprop_output(i)) if isinstance(o, Tensor) else o for i, o in enumerate(outputs)]
    if isinstance(out, Tensor):
        return tapped[0]
    return type(out)(tapped) if type(out) in (tuple, list) else out


_RULES: dict[type, Callable] = {
    Dense: _dense_rule,
    Conv2D: _conv_rule,
    DepthwiseConv2D: _conv_rule,
    Embedding: _embedding_rule,
    LayerNorm: _norm_rule,
    GroupNorm: _norm_rule,
    InstanceNorm1D: _norm_rule,
    InstanceNorm2D: _norm_rule,
}


def per_sample_gradients(model: Module, loss_fn: Callable, x, y, reduction: str = "sum") -> dict[str, object]:
    """The gradient of each sample's own loss for every trainable parameter of ``model``:
    name -> array (N, \\*param.shape), g_i = d loss(model(x_i), y_i) / dw.

    ``loss_fn(output, y)`` returns the batch's loss reduced over the samples as
    ``reduction`` says (``"sum"`` or ``"mean"``; a vector of per-sample losses is summed).
    Either way g_i is the gradient of sample i's own loss: with ``"sum"`` the g_i add up to
    the gradient of the batch loss, with ``"mean"`` their mean is it. The parameters' ``grad``
    is left as it was. ``x`` may be an array, a tensor or a tuple of inputs."""
    if not isinstance(model, Module):
        raise TypeError(f"per_sample_gradients: expected a Module, got {type(model).__name__}")
    inputs = x if isinstance(x, (tuple, list)) else (x,)
    with PerSampleGradients(model, loss_reduction=reduction) as tracker:
        loss = loss_fn(model(*[as_tensor(v) for v in inputs]), y)
        if loss.ndim:
            loss = loss.sum()
        params = model.parameters(trainable_only=True)
        graph.gradients(loss, backend.xp.ones_like(loss.data), [p for p in params if p.requires_grad])
    return tracker.gradients()
