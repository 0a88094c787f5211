"""Layer-wise relevance propagation (Bach et al., 2015; Montavon et al., "Layer-wise
relevance propagation: an overview", 2019), as Captum's LRP.

The relevance of the output, R = z_c on the target class (0 on the others), is passed back
layer by layer. A layer a -> z = w a + b hands its input the relevance

    R_i = a_i sum_j rho(w_ij) R_j / n(z_j),     z_j = sum_i a_i rho(w_ij) + rho(b_j)

computed by the gradient trick: c = d/da (sum_j z_j s_j) with s = R / n(z) held fixed,
R_in = a * c. The rules (:class:`LRPZero` and the others) choose rho and n:

* LRP-0: rho(w) = w, n(z) = z (R / z is 0 where z = 0); on a ReLU network it is gradient x input;
* LRP-epsilon: n(z) = z + eps sign(z) (sign(0) = 1), which absorbs weak, contradictory relevance;
* LRP-gamma: rho(w) = w + gamma w+ (and b + gamma b+), which favours positive contributions;
* z^B, for the first layer when the input lies in a box [low, high]:
  R_i = (a_i w_ij - l_i w+_ij - h_i w-_ij) R_j / z_j summed over j, z_j the sum over i of the
  same (the bias transformed alike, so that it cancels).

Without biases and with eps = 0 the relevance is conserved: every layer's sum equals the
output's, R_c = z_c. ReLU and Dropout pass relevance on unchanged, Flatten reshapes it,
pooling layers (MaxPool2D: to each window's maximum; AvgPool2D, GlobalAvgPool2D) use their
own forward with the rule's n(z), BatchNorm (evaluation mode, an affine map per channel) is
folded into the Dense or Conv2D layer before it, or taken as its own layer with weights
gamma / sqrt(var + eps). The model is a Sequential (nested ones are read through) of such
layers; Dense and Conv2D layers may carry a ReLU activation; a final Softmax is left out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lamina import backend
from lamina.analysis.saliency import _predicted, as_input_batch, input_analysis
from lamina.autograd import is_grad_enabled, no_grad, tensor
from lamina.errors import ShapeError
from lamina.functional import relu
from lamina.nn.activation import ReLU
from lamina.nn.conv import Conv2D
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.module import Module
from lamina.nn.normalization import BatchNorm, affine_form
from lamina.nn.pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from lamina.nn.reshape import Flatten
from lamina.nn.sequential import Sequential

__all__ = ["LRPEpsilon", "LRPGamma", "LRPRule", "LRPZBox", "LRPZero", "lrp", "lrp_relevances"]


class LRPRule:
    """How a layer shares out relevance: rho on its weights, n on its outputs."""

    def modify(self, weight, bias):
        return weight, bias

    def stabilize(self, z):
        return z


@dataclass(frozen=True)
class LRPZero(LRPRule):
    """LRP-0: R_i = sum_j a_i w_ij R_j / z_j."""


@dataclass(frozen=True)
class LRPEpsilon(LRPRule):
    """LRP-epsilon: z_j + eps sign(z_j) in the denominator."""

    epsilon: float = 1e-9

    def stabilize(self, z):
        return z + self.epsilon * backend.xp.where(z >= 0, 1, -1).astype(z.dtype)


@dataclass(frozen=True)
class LRPGamma(LRPRule):
    """LRP-gamma: weights w + gamma w+ and biases b + gamma b+."""

    gamma: float = 0.25

    def modify(self, weight, bias):
        xp = backend.xp
        grown = weight + self.gamma * xp.maximum(weight, 0)
        return grown, None if bias is None else bias + self.gamma * xp.maximum(bias, 0)


@dataclass(frozen=True)
class LRPZBox(LRPRule):
    """z^B for inputs known to lie in [low, high] (numbers or arrays that broadcast to x)."""

    low: object = 0.0
    high: object = 1.0


RULE_NAMES = {"zero": LRPZero, "epsilon": LRPEpsilon, "gamma": LRPGamma}
SUPPORTED = "Dense, Conv2D, BatchNorm, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Flatten, ReLU, Dropout"


# -- the network as steps ---------------------------------------------------------------------

def _through_linear_part(layer: Module, a, weight, bias):
    """The Dense or Conv2D layer's w a (no bias, no activation) with ``weight``, plus ``bias``."""
    saved = layer.use_bias
    layer.use_bias = False
    try:
        z = layer.apply_weights(a, tensor(weight, dtype=weight.dtype), activate=False)
    finally:
        layer.use_bias = saved
    return z if bias is None else z + tensor(bias, dtype=bias.dtype)


def _batch_norm_affine(layer: BatchNorm, dtype):
    xp = backend.xp
    c = layer.running_mean.shape[0]
    gamma = layer.weight.data if layer.affine else xp.ones((c,), dtype=dtype)
    beta = layer.bias.data if layer.affine else xp.zeros((c,), dtype=dtype)
    _, _, scale, shift = affine_form(gamma, beta, layer.running_mean, layer.running_var, layer.eps, dtype)
    return scale.astype(dtype), shift.astype(dtype)


@dataclass
class Step:
    """One stage of the forward pass: ``apply(a, weight, bias)`` its linear part (as tensors),
    ``after`` what follows it that passes relevance unchanged (a ReLU), ``kind`` how it
    shares relevance: 'linear' (the rules apply), 'reshape' or 'pass'."""

    name: str
    layer: Module
    kind: str
    apply: Callable
    weight: object = None
    bias: object = None
    relu_after: bool = False

    def forward(self, a):
        with no_grad():
            z = self.apply(tensor(a, dtype=a.dtype), self.weight, self.bias)
            return (relu(z) if self.relu_after else z).data


def _layer_relu(layer: Module, name: str) -> bool:
    """Whether a Dense or Conv2D layer ends in a ReLU (True) or nothing (False)."""
    act = layer.activation
    if act is None:
        return False
    if act is relu or isinstance(act, ReLU):
        return True
    raise ValueError(f"lrp: layer {name!r} ({type(layer).__name__}) has the activation {act!r}; LRP handles "
                     "Dense and Conv2D layers with no activation or a ReLU")


def _flat_layers(model: Module):
    names = {id(module): name for name, module in model.named_modules()}
    layers = []

    def visit(module):
        for child in module:
            if type(child) is Sequential:
                visit(child)
            else:
                layers.append((names.get(id(child), type(child).__name__), child))

    visit(model)
    if layers and type(layers[-1][1]).__name__ == "Softmax":
        layers.pop()
    return layers


def build_steps(model: Module, dtype) -> list[Step]:
    """The model as a list of :class:`Step`, BatchNorm folded into the layer before it."""
    if not isinstance(model, Sequential):
        raise TypeError(f"lrp: needs a Sequential model of {SUPPORTED} layers, got {type(model).__name__}")
    layers = _flat_layers(model)
    steps: list[Step] = []
    k = 0
    while k < len(layers):
        name, layer = layers[k]
        kind = type(layer)
        if kind in (Dense, Conv2D):
            relu_after = _layer_relu(layer, name)
            weight = layer.weight.data.astype(dtype)
            bias = layer.bias.data.astype(dtype) if layer.use_bias else None
            following = layers[k + 1][1] if k + 1 < len(layers) else None
            if type(following) is BatchNorm and not relu_after:
                scale, shift = _batch_norm_affine(following, dtype)
                weight = weight * (scale if kind is Dense else scale[:, None, None, None])
                bias = shift if bias is None else bias * scale + shift
                k += 1
            steps.append(Step(name, layer, "linear", lambda a, w, b, layer=layer: _through_linear_part(layer, a, w, b),
                              weight, bias, relu_after))
        elif kind is BatchNorm:
            scale, shift = _batch_norm_affine(layer, dtype)
            steps.append(Step(name, layer, "linear", lambda a, w, b: a * tensor(w, dtype=w.dtype)
                              + tensor(b, dtype=b.dtype), scale, shift))
        elif kind in (MaxPool2D, AvgPool2D, GlobalAvgPool2D):
            steps.append(Step(name, layer, "linear", lambda a, w, b, layer=layer: layer(a)))
        elif kind is Flatten:
            steps.append(Step(name, layer, "reshape", lambda a, w, b, layer=layer: layer(a)))
        elif kind in (ReLU, Dropout):
            steps.append(Step(name, layer, "pass", lambda a, w, b, layer=layer: layer(a)))
        else:
            raise ValueError(f"lrp: layer {name!r} ({kind.__name__}) is not supported; LRP handles {SUPPORTED} "
                             "layers")
        k += 1
    return steps


# -- rules ------------------------------------------------------------------------------------

def _as_rule(rule, where: str) -> LRPRule:
    if isinstance(rule, LRPRule):
        return rule
    if isinstance(rule, str) and rule in RULE_NAMES:
        return RULE_NAMES[rule]()
    raise ValueError(f"lrp: the rule for {where} must be an LRPRule (LRPZero(), LRPEpsilon(eps), LRPGamma(gamma), "
                     f"LRPZBox(low, high)) or one of {sorted(RULE_NAMES)}, got {rule!r}")


def _rule_picker(model: Module, rules, default) -> Callable[[Step], LRPRule]:
    """The rule of a step: ``rules`` keyed by the layer itself, its name or its type (the
    first matching type in order), else ``default``."""
    default = _as_rule(default, "the default")
    rules = dict(rules or {})
    names = {name for name, _ in model.named_modules()}
    by_layer, by_name, by_type = {}, {}, []
    for key, rule in rules.items():
        if isinstance(key, Module):
            by_layer[id(key)] = _as_rule(rule, key._label())
        elif isinstance(key, str):
            if key not in names:
                raise ValueError(f"lrp: rules name the layer {key!r}, which the model does not have; its layers: "
                                 f"{sorted(n for n in names if n)}")
            by_name[key] = _as_rule(rule, repr(key))
        elif isinstance(key, type):
            by_type.append((key, _as_rule(rule, key.__name__)))
        else:
            raise TypeError(f"lrp: a key of rules must be a layer, a layer name or a layer type, got {key!r}")

    def pick(step: Step) -> LRPRule:
        if id(step.layer) in by_layer:
            return by_layer[id(step.layer)]
        if step.name in by_name:
            return by_name[step.name]
        return next((rule for kind, rule in by_type if isinstance(step.layer, kind)), default)

    return pick


def _safe_divide(numerator, denominator):
    xp = backend.xp
    nonzero = denominator != 0
    return xp.where(nonzero, numerator / xp.where(nonzero, denominator, 1), 0)


def _linear_relevance(step: Step, a, relevance, rule: LRPRule):
    """R_in = a * d/da (sum z s), s = R / n(z) fixed (for z^B, the three-term form)."""
    xp = backend.xp
    inputs = tensor(a, requires_grad=True, dtype=a.dtype)
    if isinstance(rule, LRPZBox) and step.weight is not None:
        low = tensor(xp.broadcast_to(xp.asarray(rule.low, dtype=a.dtype), a.shape), requires_grad=True, dtype=a.dtype)
        high = tensor(xp.broadcast_to(xp.asarray(rule.high, dtype=a.dtype), a.shape), requires_grad=True,
                      dtype=a.dtype)

        def part(values, sign):
            w = xp.maximum(step.weight, 0) if sign > 0 else xp.minimum(step.weight, 0)
            b = None if step.bias is None else (xp.maximum(step.bias, 0) if sign > 0 else xp.minimum(step.bias, 0))
            return step.apply(values, w, b)

        z = step.apply(inputs, step.weight, step.bias) - part(low, 1) - part(high, -1)
        s = _safe_divide(relevance, z.data)
        (z * tensor(s, dtype=a.dtype)).sum().backward()
        return a * inputs.grad + low.data * low.grad + high.data * high.grad
    weight, bias = (step.weight, step.bias) if step.weight is None else rule.modify(step.weight, step.bias)
    z = step.apply(inputs, weight, bias)
    s = _safe_divide(relevance, rule.stabilize(z.data))
    (z * tensor(s, dtype=a.dtype)).sum().backward()
    grad = inputs.grad if inputs.grad is not None else xp.zeros_like(a)
    return a * grad


def lrp_relevances(model: Module, x, target=None, rules: dict | None = None, default_rule="epsilon"):
    """The relevance at every stage: [R at the input, after step 1, ..., at the output]
    (module docstring); the input's is what :func:`lrp` returns. Arguments as :func:`lrp`."""
    if not is_grad_enabled():
        raise RuntimeError("lrp: needs gradients, but it was called inside lamina.no_grad()")
    xp = backend.xp
    x = as_input_batch(x, "lrp")
    with input_analysis(model):
        steps = build_steps(model, x.dtype)
        pick = _rule_picker(model, rules, default_rule)
        chosen = _predicted(model, x, target, "lrp")
        activations = [x]
        for step in steps:
            activations.append(step.forward(activations[-1]))
        logits = activations[-1]
        if logits.ndim != 2:
            raise ShapeError(f"lrp: the model's output has shape {logits.shape}; expected (batch, classes)")
        relevance = xp.zeros_like(logits)
        rows = xp.arange(len(x))
        relevance[rows, chosen] = logits[rows, chosen]
        relevances = [relevance]
        for step, a in zip(reversed(steps), reversed(activations[:-1])):
            if step.kind == "reshape":
                relevance = relevance.reshape(a.shape)
            elif step.kind == "linear":
                relevance = _linear_relevance(step, a, relevance, pick(step))
            relevances.append(relevance)
    return relevances[::-1]


def lrp(model: Module, x, target=None, rules: dict | None = None, default_rule="epsilon"):
    """LRP relevance of each input value, the shape of ``x`` (module docstring).

    ``target``: None (each sample's predicted class), an int or one class per sample.
    ``rules``: {key: rule}, key a layer of the model, its name (as ``named_modules``) or a
    layer type; rule an :class:`LRPRule` or 'zero', 'epsilon', 'gamma'. Layers no key
    matches take ``default_rule`` (LRP-epsilon with eps = 1e-9). For the input layer of an
    image model, ``rules={model[0]: LRPZBox(low, high)}``."""
    return lrp_relevances(model, x, target, rules, default_rule)[0]
