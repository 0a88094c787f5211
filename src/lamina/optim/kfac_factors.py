"""Recording K-FAC's Kronecker factors: for every Dense and Conv2D (groups=1) layer, the
layer's input rows or im2col patches with a homogeneous 1 (abar) and the per-sample gradients
reaching its pre-activation (g), caught by intercepting the layer's call; A = E[abar abar^T] and
G = E[g g^T] as in :mod:`lamina.optim.kfac`, whose optimizers read them.

:func:`kronecker_factors` and :func:`exact_fisher_block` give one batch's factors and the exact
empirical Fisher block, for tests and teaching.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import ExitStack
from typing import Any

from lamina import backend
from lamina.autograd import graph
from lamina.autograd.derivatives import grad as gradients_of
from lamina.functional import cross_entropy
from lamina.functional.fold import WindowGeometry, unfold_array
from lamina.functional.im2col import conv_pads, pad_nhwc
from lamina.nn.activation import activate_fresh
from lamina.nn.conv import Conv2D
from lamina.nn.dense import Dense
from lamina.nn.module import Module, as_tensor, intercept_calls
from lamina.nn.per_sample import PerSampleGradients, gradient_tap

__all__ = ["FactorRecorder", "exact_fisher_block", "gradient_matrix", "kronecker_factors", "preconditioned_layers",
           "split_matrix", "supported"]



# -- layers and their matrices ------------------------------------------------------------------

def supported(module: Module) -> bool:
    """Whether K-FAC preconditions ``module``: a Dense layer, or a Conv2D layer without groups."""
    return type(module) is Dense or (type(module) is Conv2D and module.groups == 1)


def layer_inputs(module: Module, x) -> Any:
    """abar: the (N, T, d_A) rows the layer multiplies by its weight, with a 1 appended for the bias."""
    xp = backend.xp
    if type(module) is Dense:
        rows = x.reshape(x.shape[0], -1, x.shape[-1])
    else:
        fh, fw = module.kernel_size
        dh, dw = module.dilation
        extent = (dh * (fh - 1) + 1, dw * (fw - 1) + 1)
        pads = conv_pads(module.padding, x.shape[1:3], extent, module.stride, module._label())
        geometry = WindowGeometry(module._label(), module.kernel_size, module.dilation, 0, module.stride)
        rows = unfold_array(pad_nhwc(x, pads), geometry)
    if module.use_bias:
        rows = xp.concatenate([rows, xp.ones(rows.shape[:2] + (1,), dtype=rows.dtype)], axis=2)
    return rows


def gradient_matrix(module: Module, weight, bias=None):
    """The (d_A, d_G) matrix of a layer's weight-shaped array (and bias-shaped one, as the last row)."""
    xp = backend.xp
    matrix = weight if type(module) is Dense else weight.reshape(weight.shape[0], -1).T
    if module.use_bias:
        matrix = xp.concatenate([matrix, bias.reshape(1, -1)], axis=0)
    return matrix


def split_matrix(module: Module, matrix) -> tuple[Any, Any]:
    """The inverse of :func:`gradient_matrix`: (weight-shaped, bias-shaped or None)."""
    rows = matrix[:-1] if module.use_bias else matrix
    bias = matrix[-1] if module.use_bias else None
    weight = rows if type(module) is Dense else rows.T.reshape(module.weight.shape)
    return weight, bias


# -- recording the factors ----------------------------------------------------------------------

class _Batch:
    """The sums one batch adds to a layer's statistics: A's, G's and (for EKFAC) the raw rows."""

    def __init__(self):
        self.a_sum = None
        self.a_count = 0.0
        self.g_sum = None
        self.g_count = 0.0
        self.samples: list[tuple[Any, Any, float]] = []      # (abar, g, weight) for EKFAC

    def add_inputs(self, abar) -> None:
        n = abar.shape[0]
        flat = abar.reshape(-1, abar.shape[-1])
        a = flat.T @ flat
        self.a_sum = a if self.a_sum is None else self.a_sum + a
        self.a_count += n

    def add_gradients(self, abar, g, weight: float, keep_samples: bool) -> None:
        n, t = g.shape[0], g.shape[1]
        flat = g.reshape(-1, g.shape[-1])
        contribution = flat.T @ flat
        self.g_sum = contribution if self.g_sum is None else self.g_sum + contribution
        self.g_count += weight * n * t
        if keep_samples:
            self.samples.append((abar, g, weight))

    @property
    def complete(self) -> bool:
        return self.a_sum is not None and self.g_sum is not None


class FactorRecorder:
    """Records, for the chosen layers, the sums that make A and G while attached.

    Every call of a recorded layer made with the graph recorded runs the layer's weights
    without its activation, passes z through a :func:`~lamina.nn.per_sample.gradient_tap` and applies the activation;
    when backward reaches the tap, the layer's abar (once per call) and g are added to
    :attr:`batches`: g = dJ/dz, times N when J is the mean of the N per-sample losses
    (``loss_reduction='mean'``) and the backward is the loss's own (not ``sampling``). Hooks
    registered on a recorded layer itself do not run while attached (the layer's forward is
    computed here).
    """

    def __init__(self, layers: Iterable[Module]):
        self.index = {id(m): i for i, m in enumerate(layers)}
        self.batches: dict[int, _Batch] = {}
        self.recording = True            # whether a tap adds anything now
        self.loss_reduction = "mean"
        self.sampling = False             # a backward from targets drawn by KFAC.backward_fisher
        self.count_weight = 1.0           # a backward's share of one batch's G (1/C per class for 'true')
        self.record_gradients = True      # False: this backward is not the Fisher's (A only)
        self.keep_samples = False

    def attach(self) -> FactorRecorder:
        if not any(r is self for r in _ATTACHED):
            if not _ATTACHED:
                _INTERCEPTION.enter_context(intercept_calls(_intercept))
            _ATTACHED.append(self)
        return self

    def detach(self) -> None:
        _ATTACHED[:] = [r for r in _ATTACHED if r is not self]
        if not _ATTACHED:
            _INTERCEPTION.close()

    def __enter__(self) -> FactorRecorder:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def batch(self, index: int) -> _Batch:
        found = self.batches.get(index)
        if found is None:
            found = self.batches[index] = _Batch()
        return found

    def observe(self, module: Module, call: dict, dz) -> None:
        """Add one layer call's abar (the first time) and g from dJ/dz (see the class docstring)."""
        if not self.recording:
            return
        index = self.index[id(module)]
        if id(self) not in call["seen_by"]:
            call["seen_by"].add(id(self))
            self.batch(index).add_inputs(call["abar"])
        if self.record_gradients:
            n = dz.shape[0]
            g = dz.reshape(n, -1, dz.shape[-1])
            if self.loss_reduction == "mean" and not self.sampling:
                g = g * n
            self.batch(index).add_gradients(call["abar"], g, self.count_weight, self.keep_samples)


# The attached recorders; while there is one, _intercept wraps every module call, and one tap per
# call of a recorded layer serves every recorder that follows the layer.
_ATTACHED: list[FactorRecorder] = []
_INTERCEPTION = ExitStack()


def _intercept(module: Module, inputs: tuple, kwargs: dict, forward: Callable):
    if kwargs or len(inputs) != 1 or not graph.is_grad_enabled():
        return forward()
    watchers = [r for r in _ATTACHED if r.recording and id(module) in r.index]
    if not watchers:
        return forward()
    x = as_tensor(inputs[0])
    z = module.apply_weights(x, module.weight, activate=False)
    if z.requires_grad:
        call: dict[str, Any] = {"abar": None, "seen_by": set()}

        def on_gradient(dz):
            if call["abar"] is None:
                call["abar"] = layer_inputs(module, x.data)
            for recorder in watchers:
                recorder.observe(module, call, dz)

        z = gradient_tap(z, on_gradient)
    return activate_fresh(module.activation, z) if module.activation is not None else z


# -- helpers for tests and teaching ---------------------------------------------------------------

def preconditioned_layers(model: Module, who: str) -> list[tuple[str, Module]]:
    found = [(name, m) for name, m in model.named_modules() if supported(m)]
    if not found:
        kinds = sorted({type(m).__name__ for m in model.modules()})
        raise ValueError(f"{who}: the model has no Dense or Conv2D (groups=1) layer to precondition "
                         f"(its modules: {kinds})")
    unbuilt = [name or type(m).__name__ for name, m in found if not m.built]
    if unbuilt:
        raise ValueError(f"{who}: layer(s) {unbuilt} have no weights yet; build the model first (call it "
                         "once on an input, or build(input_shape))")
    return found


def kronecker_factors(model: Module, x, y, loss: Callable = cross_entropy) -> dict[str, tuple[Any, Any]]:
    """{layer name: (A, G)} of every Dense and Conv2D layer for one batch, with the empirical
    Fisher (the gradients of ``loss(model(x), y)``, a mean over the batch); see the module
    docstring for the formulas."""
    named = preconditioned_layers(model, "kronecker_factors")
    recorder = FactorRecorder([m for _, m in named])
    params = [m.weight for _, m in named]
    with recorder:
        cost = loss(model(x), y)
        gradients_of(cost, params, allow_unused=True)
    factors = {}
    for i, (name, _) in enumerate(named):
        batch = recorder.batches.get(i)
        if batch is not None and batch.complete:
            factors[name] = (batch.a_sum / batch.a_count, batch.g_sum / batch.g_count)
    return factors


def exact_fisher_block(model: Module, layer: Module, x, y, loss: Callable = cross_entropy):
    """The empirical Fisher block of ``layer``, (1/N) sum_i vec(M_i) vec(M_i)^T, from the
    per-sample gradients M_i of ``loss(model(x), y)`` (a mean over the batch) in the (d_A, d_G)
    layout of :func:`gradient_matrix`, vec row-major (so that it compares with A kron G)."""
    if not supported(layer):
        raise ValueError(f"exact_fisher_block: {type(layer).__name__} is not a Dense or Conv2D (groups=1) layer")
    with PerSampleGradients(model, loss_reduction="mean") as tracker:
        loss(model(x), y).backward()
    weights = tracker.grad_sample(layer.weight)
    if weights is None:
        raise ValueError(f"exact_fisher_block: backward did not reach {layer._label()}")
    biases = tracker.grad_sample(layer.bias) if layer.use_bias else None
    n = weights.shape[0]
    rows = [gradient_matrix(layer, weights[i], None if biases is None else biases[i]).reshape(-1)
            for i in range(n)]
    stacked = backend.xp.stack(rows)
    return stacked.T @ stacked / n
