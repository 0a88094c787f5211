"""Certified bounds on a network's outputs over an input box [l, u], e.g. the L-inf ball
|x' - x|_inf <= eps clipped to the valid range.

* :func:`interval_bounds`, interval bound propagation (IBP; Gowal et al. 2018): each layer
  maps a box to a box containing its image. With centre mu = (u + l) / 2 and radius
  r = (u - l) / 2, an affine map z = W x + b (Dense, Conv2D, BatchNorm in evaluation mode,
  average pooling) gives mu' = W mu + b, r' = |W| r, exactly the tightest box; a monotone
  map (ReLU and other non-decreasing activations, max pooling) sends l and u to the new
  ends. The bounds are lamina Tensors, differentiable in the weights (IBP training).
* :func:`worst_case_margins` and :func:`certified_accuracy`: with the last Dense layer
  folded into the specification (Gowal et al.'s elision), an upper bound of z_k - z_y for
  every class k; a sample is certified when every bound for k != y is below 0.
* :func:`crown_bounds`, CROWN (Zhang et al. 2018) for Dense/ReLU networks: each ReLU of
  pre-activation bounds l < 0 < u is enclosed between the lines alpha z (alpha = 1 when
  u >= -l, else 0) and u (z - l) / (u - l); a bound of z_m is propagated backward to a
  linear function A x + c of the input, whose extremes over the box are
  A mu +- |A| r + c. Each layer's pre-activation bounds come the same way. CROWN alone can
  be looser than IBP on some outputs (a lower slope of 1 may reach below 0 where IBP's ReLU
  stops), so every layer's bounds are intersected with IBP's: never looser, still sound.
"""

from __future__ import annotations

from typing import NamedTuple

from lamina import backend
from lamina import functional as F
from lamina.analysis.adversarial import _check_clip, _check_radius
from lamina.analysis.saliency import as_input_batch, class_indices
from lamina.autograd import Tensor, no_grad, tensor
from lamina.errors import ShapeError
from lamina.nn.module import Module, evaluation_mode

__all__ = ["Bounds", "certified_accuracy", "crown_bounds", "input_box", "interval_bounds", "margin_specification",
           "worst_case_margins"]

# Non-decreasing activations: f([l, u]) = [f(l), f(u)].
MONOTONE_ACTIVATIONS = ("relu", "relu6", "sigmoid", "tanh", "leaky_relu", "elu", "softplus", "hard_sigmoid",
                        "hard_tanh", "linear", "identity")
_PASS_THROUGH = ("Dropout", "Identity", "InputLayer", "GaussianNoise", "SpatialDropout2D", "AlphaDropout")
_MONOTONE_LAYERS = {"ReLU": "relu", "ReLU6": "relu6", "Sigmoid": "sigmoid", "Tanh": "tanh",
                    "LeakyReLU": "leaky_relu", "ELU": "elu", "Softplus": "softplus"}


class Bounds(NamedTuple):
    """Elementwise lower and upper bounds (Tensors for IBP, arrays for CROWN)."""

    lower: object
    upper: object


def input_box(x, epsilon: float, clip=(0.0, 1.0)):
    """(l, u) = (max(x - eps, lo), min(x + eps, hi)): the L-inf ball within the valid range."""
    epsilon = _check_radius(epsilon, "input_box", "epsilon", allow_zero=True)
    clip = _check_clip(clip, "input_box")
    x = as_input_batch(x, "input_box")
    lower, upper = x - x.dtype.type(epsilon), x + x.dtype.type(epsilon)
    if clip is not None:
        xp = backend.xp
        lower, upper = xp.clip(lower, *clip), xp.clip(upper, *clip)
    return lower, upper


def _layers(model: Module, fn: str) -> list:
    if hasattr(model, "__iter__") and type(model).__name__ == "Sequential":
        flat = []
        for layer in model:
            flat.extend(_layers(layer, fn))
        return flat
    return [model]


def _unsupported(layer: Module, fn: str, what: str = "") -> TypeError:
    name = getattr(layer, "name", None)
    label = f"{type(layer).__name__}" + (f" {name!r}" if name else "")
    return TypeError(f"{fn}: layer {label} is not supported{what}; supported: Dense, Conv2D, ReLU and other "
                     f"non-decreasing activations {MONOTONE_ACTIVATIONS}, Flatten, Reshape, AvgPool2D, "
                     f"GlobalAvgPool2D, MaxPool2D, "
                     f"BatchNorm (evaluation mode), {', '.join(_PASS_THROUGH)}")


def _activation_name(layer: Module, fn: str) -> str | None:
    """The name of a Dense/Conv2D layer's own activation (None: linear)."""
    if layer.activation is None:
        return None
    spec = layer.activation_spec
    if isinstance(spec, str) and spec.lower() in MONOTONE_ACTIVATIONS:
        return spec.lower()
    if isinstance(layer.activation, Module) and type(layer.activation).__name__ in _MONOTONE_LAYERS:
        return _MONOTONE_LAYERS[type(layer.activation).__name__]
    raise _unsupported(layer, fn, f" with the activation {spec or layer.activation!r} (not known to be monotone)")


def _monotone(lower: Tensor, upper: Tensor, layer_fn) -> tuple[Tensor, Tensor]:
    return layer_fn(lower), layer_fn(upper)


def _affine(lower: Tensor, upper: Tensor, linear, absolute) -> tuple[Tensor, Tensor]:
    """mu' = linear(mu) (with its bias), r' = absolute(r) (|W| r, no bias)."""
    centre, radius = (upper + lower) * 0.5, (upper - lower) * 0.5
    centre, radius = linear(centre), absolute(radius)
    return centre - radius, centre + radius


def _ibp_layer(layer: Module, lower: Tensor, upper: Tensor, fn: str) -> tuple[Tensor, Tensor]:
    kind = type(layer).__name__
    if kind in ("Dense", "Conv2D"):
        activation = _activation_name(layer, fn)
        if kind == "Dense":
            weight, bias = layer.weight, layer.bias if layer.use_bias else None

            def linear(v):
                out = F.matmul(v, weight)
                return out + bias if bias is not None else out

            def absolute(v):
                return F.matmul(v, F.abs(weight))
        else:
            bias = layer.bias if layer.use_bias else None
            options = {"stride": layer.stride, "padding": layer.padding, "groups": layer._groups_for(lower.shape[-1]),
                       "dilation": layer.dilation}

            def linear(v):
                return F.conv2d(v, layer.weight, bias, **options)

            def absolute(v):
                return F.conv2d(v, F.abs(layer.weight), None, **options)
        lower, upper = _affine(lower, upper, linear, absolute)
        if activation not in (None, "linear", "identity"):
            lower, upper = _monotone(lower, upper, layer.activation)
        return lower, upper
    if kind in _MONOTONE_LAYERS or kind == "Activation" and str(layer.activation).lower() in MONOTONE_ACTIVATIONS:
        return _monotone(lower, upper, layer)
    if kind in _PASS_THROUGH:  # dropout and noise act in training only: the identity, as in evaluation
        return lower, upper
    if kind in ("Flatten", "Reshape", "MaxPool2D"):
        if kind == "MaxPool2D" and layer.return_indices:
            raise _unsupported(layer, fn, " with return_indices=True")
        return _monotone(lower, upper, layer)
    if kind in ("AvgPool2D", "GlobalAvgPool2D"):
        return _affine(lower, upper, layer, layer)  # non-negative weights: |W| = W
    if kind == "BatchNorm":
        if layer.training:
            raise _unsupported(layer, fn, " in training mode (its statistics depend on the batch)")
        xp = backend.xp
        inverse_std = tensor(1 / xp.sqrt(layer.running_var + layer.eps), dtype=lower.dtype)
        mean = tensor(layer.running_mean, dtype=lower.dtype)
        if layer.affine:  # y = gamma (x - mean) / std + beta, gamma and beta kept in the graph
            scale_t = layer.weight * inverse_std
            shift_t = layer.bias - mean * scale_t
        else:
            scale_t, shift_t = inverse_std, mean * inverse_std * -1.0
        return _affine(lower, upper, lambda v: v * scale_t + shift_t, lambda v: v * F.abs(scale_t))
    raise _unsupported(layer, fn)


def _as_tensor(a) -> Tensor:
    if isinstance(a, Tensor):
        return a
    a = backend.xp.asarray(a)
    return tensor(a, dtype=a.dtype)


def interval_bounds(model: Module, lower, upper) -> Bounds:
    """IBP bounds (Tensors) of ``model``'s outputs for every input in the box [lower, upper]
    (arrays or Tensors of one shape, with a batch axis), layer after layer (see the module
    notes). ``model``: a layer or a Sequential of supported layers; a final Softmax layer is
    left out (the bounds are on the logits). Dropout and noise layers count as the identity
    (their evaluation-mode behaviour); batch norm must be in evaluation mode."""
    fn = "interval_bounds"
    lower, upper = _as_tensor(lower), _as_tensor(upper)
    if lower.shape != upper.shape:
        raise ShapeError(f"{fn}: lower bounds of shape {lower.shape} and upper bounds of shape {upper.shape}; "
                         "expected one shape")
    if bool((lower.data > upper.data).any()):
        raise ValueError(f"{fn}: every lower bound must be at most its upper bound")
    layers = _layers(model, fn)
    if layers and type(layers[-1]).__name__ == "Softmax":
        layers = layers[:-1]
    for layer in layers:
        lower, upper = _ibp_layer(layer, lower, upper, fn)
    return Bounds(lower, upper)


def worst_case_margins(model: Module, lower, upper, labels) -> Tensor:
    """Upper bounds of z_k - z_y (n, classes) over the box, 0 at k = y, with the last layer,
    a Dense layer without activation, folded in: its input's box [l, u] gives
    (W_k - W_y) . mu + |W_k - W_y| . r + b_k - b_y. Training on cross-entropy of these
    (Gowal et al.) pushes them below 0."""
    fn = "worst_case_margins"
    layers = _layers(model, fn)
    if layers and type(layers[-1]).__name__ == "Softmax":
        layers = layers[:-1]
    last = layers[-1] if layers else None
    if type(last).__name__ != "Dense" or last.activation is not None:
        raise _unsupported(last, fn, " as the last layer (it must be a Dense layer without activation)")
    lower, upper = _as_tensor(lower), _as_tensor(upper)
    for layer in layers[:-1]:
        lower, upper = _ibp_layer(layer, lower, upper, fn)
    if lower.ndim != 2:
        raise ShapeError(f"{fn}: the input of the last Dense layer has shape {lower.shape}; expected 2-D")
    xp = backend.xp
    classes = last.units
    labels = class_indices(labels, xp.zeros((lower.shape[0], classes)), fn)
    one_hot = xp.zeros((lower.shape[0], classes), dtype=lower.dtype)
    one_hot[xp.arange(len(labels)), labels] = 1
    one_hot = tensor(one_hot, dtype=lower.dtype)
    weight = last.weight                                                  # (d, C)
    own = F.matmul(one_hot, weight.T)                                      # (n, d): W_y
    difference = F.reshape(weight, (1,) + weight.shape) - F.reshape(own, own.shape + (1,))  # (n, d, C)
    centre, radius = (upper + lower) * 0.5, (upper - lower) * 0.5
    bound = ((F.reshape(centre, centre.shape + (1,)) * difference).sum(axis=1)
             + (F.reshape(radius, radius.shape + (1,)) * F.abs(difference)).sum(axis=1))
    if last.use_bias:
        bias = last.bias
        bound = bound + F.reshape(bias, (1, classes)) - F.reshape((one_hot * bias).sum(axis=1), (-1, 1))
    return bound


def margin_specification(labels, classes: int):
    """C (n, classes, classes) with rows e_k - e_y (row y zero): C z holds z_k - z_y."""
    xp = backend.xp
    labels = xp.asarray(labels)
    spec = xp.broadcast_to(xp.eye(classes), (len(labels), classes, classes)).copy()
    spec[xp.arange(len(labels)), :, labels] -= 1.0
    return spec


def _crown_margins(model: Module, lower, upper, labels):
    """CROWN's upper bounds of z_k - z_y, intersected with the elided IBP ones where the
    network ends in a linear Dense layer (so never fewer certified than by IBP)."""
    stack = _dense_relu_stack(model, "certified_accuracy")
    bounds = crown_bounds(model, lower, upper, margin_specification(labels, stack[-1][0].shape[0])).upper
    last = _layers(model, "certified_accuracy")[-1]
    if type(last).__name__ == "Dense" and last.activation is None:
        bounds = backend.xp.minimum(bounds, worst_case_margins(model, lower, upper, labels).data)
    return bounds


def certified_accuracy(model: Module, x, labels, epsilon: float, clip=(0.0, 1.0), batch_size: int = 256,
                       method: str = "ibp") -> float:
    """The fraction of samples whose class no input within |x' - x|_inf <= eps (in ``clip``)
    can change: every upper bound of z_k - z_y, k != y, below 0, by ``method`` 'ibp'
    (:func:`worst_case_margins`) or 'crown' (:func:`crown_bounds` of the margins, Dense/ReLU
    networks); run in evaluation mode."""
    fn = "certified_accuracy"
    if method not in ("ibp", "crown"):
        raise ValueError(f"{fn}: method must be 'ibp' or 'crown', got {method!r}")
    x = as_input_batch(x, fn)
    labels = backend.xp.asarray(labels)
    bound = worst_case_margins if method == "ibp" else _crown_margins
    certified = 0
    with no_grad(), evaluation_mode(model):
        for start in range(0, len(x), batch_size):
            lower, upper = input_box(x[start:start + batch_size], epsilon, clip)
            margins = bound(model, lower, upper, labels[start:start + batch_size])
            margins = backend.xp.array(margins.data if isinstance(margins, Tensor) else margins)
            rows = backend.xp.arange(len(margins))
            margins[rows, labels[start:start + batch_size]] = -backend.xp.inf
            certified += int((margins.max(axis=1) < 0).sum())
    return certified / max(len(x), 1)


# -- CROWN -----------------------------------------------------------------------------
def _dense_relu_stack(model: Module, fn: str) -> list[tuple]:
    """[(W (out, in), b (out,), relu after?)] of a network of Dense and ReLU layers."""
    stack: list[list] = []
    for layer in _layers(model, fn):
        kind = type(layer).__name__
        if kind == "Flatten" and not stack:
            continue
        if kind == "Dense":
            activation = _activation_name(layer, fn)
            if activation not in (None, "relu", "linear", "identity"):
                raise _unsupported(layer, "crown_bounds", f" with the activation {activation!r} (Dense and ReLU only)")
            xp = backend.xp
            bias = layer.bias.data if layer.use_bias else xp.zeros(layer.units)
            stack.append([layer.weight.data.T.astype(xp.float64), bias.astype(xp.float64), activation == "relu"])
        elif kind == "ReLU" or (kind == "Activation" and layer.activation == "relu"):
            if not stack or stack[-1][2]:
                raise _unsupported(layer, fn, " here (a ReLU must follow a Dense layer)")
            stack[-1][2] = True
        elif kind in _PASS_THROUGH:
            continue
        else:
            raise _unsupported(layer, fn, " (CROWN takes networks of Dense and ReLU layers)")
    if not stack:
        raise ValueError(f"{fn}: the model has no Dense layer")
    if stack[-1][2]:
        stack.append([backend.xp.eye(len(stack[-1][1])), backend.xp.zeros(len(stack[-1][1])), False])
    return [tuple(item) for item in stack]


def _relaxations(lower, upper):
    """Per neuron (n, d): slopes and intercepts of the ReLU's upper line and lower slope."""
    xp = backend.xp
    active, inactive = lower >= 0, upper <= 0
    unstable = ~active & ~inactive
    width = xp.where(unstable, upper - lower, 1.0)
    upper_slope = xp.where(active, 1.0, xp.where(unstable, upper / width, 0.0))
    upper_intercept = xp.where(unstable, -upper * lower / width, 0.0)
    lower_slope = xp.where(active, 1.0, xp.where(unstable, (upper >= -lower).astype(xp.float64), 0.0))
    return upper_slope, upper_intercept, lower_slope


def _backward_bound(stack, depth: int, relax, centre, radius, upper_side: bool, specification=None):
    """Bound (n, out) of layer ``depth``'s pre-activation (of C times it, C (n, s, out) the
    ``specification``) over the box: from A = W_depth (C W_depth), back through each ReLU's
    relaxation (upper line where the coefficient helps the side sought) and each Dense layer."""
    xp = backend.xp
    weight, bias, _ = stack[depth]
    n = len(centre)
    if specification is None:
        coefficients = xp.broadcast_to(weight, (n,) + weight.shape).copy()        # (n, out, in)
        constant = xp.broadcast_to(bias, (n, len(bias))).copy()
    else:
        coefficients, constant = specification @ weight, specification @ bias
    for j in range(depth - 1, -1, -1):
        upper_slope, upper_intercept, lower_slope = relax[j]                    # (n, d_j)
        positive, negative = xp.maximum(coefficients, 0), xp.minimum(coefficients, 0)
        toward_upper, toward_lower = (positive, negative) if upper_side else (negative, positive)
        constant = constant + (toward_upper * upper_intercept[:, None, :]).sum(axis=2)
        coefficients = toward_upper * upper_slope[:, None, :] + toward_lower * lower_slope[:, None, :]
        weight_j, bias_j, _ = stack[j]
        constant = constant + coefficients @ bias_j
        coefficients = coefficients @ weight_j
    sign = 1.0 if upper_side else -1.0
    return (xp.einsum("noi,ni->no", coefficients, centre) + sign * xp.einsum("noi,ni->no", xp.abs(coefficients),
                                                                             radius) + constant)


def crown_bounds(model: Module, lower, upper, specification=None) -> Bounds:
    """CROWN bounds (float64 arrays) of the outputs z of a Dense/ReLU network (Flatten first
    allowed) for every input in the box [lower, upper] (see the module notes); with a
    ``specification`` C, (n, s, outputs) or (s, outputs), bounds (n, s) of C z instead
    (e.g. rows e_k - e_y: margins), propagated through the last layer too."""
    fn = "crown_bounds"
    xp = backend.xp
    lower = xp.asarray(lower.data if isinstance(lower, Tensor) else lower, dtype=xp.float64)
    upper = xp.asarray(upper.data if isinstance(upper, Tensor) else upper, dtype=xp.float64)
    if lower.shape != upper.shape:
        raise ShapeError(f"{fn}: lower bounds of shape {lower.shape} and upper bounds of shape {upper.shape}; "
                         "expected one shape")
    if (lower > upper).any():
        raise ValueError(f"{fn}: every lower bound must be at most its upper bound")
    stack = _dense_relu_stack(model, fn)
    n = len(lower)
    lower, upper = lower.reshape(n, -1), upper.reshape(n, -1)
    if lower.shape[1] != stack[0][0].shape[1]:
        raise ShapeError(f"{fn}: inputs of {lower.shape[1]} features for a first Dense layer of "
                         f"{stack[0][0].shape[1]}")
    if specification is not None:
        outputs = len(stack[-1][1])
        specification = xp.asarray(specification, dtype=xp.float64)
        if specification.ndim == 2:
            specification = xp.broadcast_to(specification, (n,) + specification.shape)
        if specification.ndim != 3 or specification.shape[0] != n or specification.shape[2] != outputs:
            raise ShapeError(f"{fn}: a specification of shape {specification.shape}; expected (s, {outputs}) or "
                             f"({n}, s, {outputs}) for {n} samples and {outputs} outputs")
    centre, radius = (upper + lower) / 2, (upper - lower) / 2
    relax = []
    box_centre, box_radius = centre, radius
    for depth, (weight, bias, relu) in enumerate(stack):
        box_centre, box_radius = box_centre @ weight.T + bias, box_radius @ xp.abs(weight.T)  # IBP, to intersect
        last = depth == len(stack) - 1
        spec = specification if last else None
        low = _backward_bound(stack, depth, relax, centre, radius, upper_side=False, specification=spec)
        high = _backward_bound(stack, depth, relax, centre, radius, upper_side=True, specification=spec)
        if spec is None:
            low = xp.maximum(low, box_centre - box_radius)
            high = xp.minimum(high, box_centre + box_radius)
        else:                                  # IBP's bounds of C z: C mu +- |C| r of z's box
            spec_centre = xp.einsum("nso,no->ns", spec, box_centre)
            spec_radius = xp.einsum("nso,no->ns", xp.abs(spec), box_radius)
            low = xp.maximum(low, spec_centre - spec_radius)
            high = xp.minimum(high, spec_centre + spec_radius)
        if relu:
            relax.append(_relaxations(low, high))
            box_centre, box_radius = (xp.maximum(low, 0) + xp.maximum(high, 0)) / 2, (
                xp.maximum(high, 0) - xp.maximum(low, 0)) / 2
        else:
            relax.append((xp.ones_like(low), xp.zeros_like(low), xp.ones_like(low)))
            box_centre, box_radius = (low + high) / 2, (high - low) / 2
    return Bounds(low, high)
