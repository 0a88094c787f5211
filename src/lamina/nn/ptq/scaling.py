"""Per-input-channel scales that leave a float model's function unchanged, shared by AWQ and
SmoothQuant: for linears y = x W fed by an op P,

    y = (x diag(s)^-1) (diag(s) W),     P's output channels divided by s, W's rows multiplied by s

so the scale is folded into P and the linears. P is a norm (its weight and bias divided by s),
a Dense layer without activation (its columns and bias), or the value projection of an
attention layer whose output projection W_o reads the heads (attention is linear in the
values, so dividing W_v's columns by s divides the heads by s; only without grouped-query
heads, where head and value features pair one to one). Without such an op the division stays
on the linears' inputs (:class:`~lamina.nn.ptq.QuantDense`'s ``input_scale``), which an
attention projection cannot take: its weights are then not scaled.

A weight is a Dense layer, or (attention layer, 'in_weight' or 'out_weight') for the
projections of a :class:`~lamina.nn.MultiHeadAttention`. :func:`scale_groups` finds, in a
block, the weights that share an input and the op before them: a Llama-style block
(``input_layernorm`` then ``self_attn``'s W_q, W_k, W_v; W_v then W_o;
``post_attention_layernorm`` then ``mlp.gate_proj`` and ``mlp.up_proj``; ``mlp.up_proj`` then
``mlp.down_proj``) and a pre-norm :class:`~lamina.nn.TransformerEncoderLayer` (GPT-2's: ``norm1``
then the attention's W_q, W_k, W_v; W_v then W_o; ``norm2`` then ``linear1``); every other
weight stands alone, without an op to fold into.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy

from lamina.autograd import Tensor, no_grad
from lamina.nn.dense import Dense
from lamina.nn.module import Module
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.nn.rms_norm import RMSNorm
from lamina.nn.sample_norm import LayerNorm

__all__ = ["ScaleGroup", "fold_scales", "scale_groups", "set_site_weight", "site_weight"]

VALUES = "values"
"""The name of an attention layer's value projection as the op before W_o: (layer, VALUES)."""


def site_weight(site) -> numpy.ndarray:
    """The float weight (n_in, units) of a Dense layer or an (attention layer, name) pair."""
    return site.weight.data if isinstance(site, Dense) else site[0]._parameters[site[1]].data


def set_site_weight(site, weight: numpy.ndarray) -> None:
    if isinstance(site, Dense):
        site.weight.data = weight
    else:
        site[0]._parameters[site[1]].data = weight


def _projection_output(site, x):
    layer, name = site
    bias = None
    if name == "in_weight" and layer.use_bias:
        bias = layer.in_bias.data
    elif name == "out_weight" and layer.use_out_bias:
        bias = layer.out_bias.data
    y = x @ site_weight(site)
    return y if bias is None else y + bias


@dataclass
class ScaleGroup:
    """Weights sharing one input; ``previous`` the op whose outputs they read (None: nothing
    to fold into); ``inspect(x, **kwargs)`` the computation on their input whose output AWQ
    keeps (default the first weight's layer)."""

    name: str
    linears: list
    previous: object = None
    inspect: Callable | None = field(default=None, repr=False)

    @property
    def scalable(self) -> bool:
        """Whether scales can be applied: folded into ``previous``, or on Dense inputs."""
        return self.previous is not None or all(isinstance(site, Dense) for site in self.linears)

    def output(self, x, kwargs: dict | None = None) -> numpy.ndarray:
        with no_grad():
            if self.inspect is not None:
                return self.inspect(Tensor._wrap(x), **(kwargs or {})).data
            first = self.linears[0]
            if isinstance(first, Dense):
                return first(Tensor._wrap(x)).data
            return _projection_output(first, x)


def _foldable(module) -> bool:
    if type(module) is LayerNorm:
        return module.affine and len(module.axes) == 1
    if type(module) is RMSNorm:
        return module.elementwise_affine and module.axes == 1
    return type(module) is Dense and module.activation is None


def _child(module: Module, path: str):
    for name in path.split("."):
        module = getattr(module, "_modules", {}).get(name)
        if module is None:
            return None
    return module


def _dense(*modules) -> bool:
    return all(type(m) is Dense for m in modules)


def _attention_groups(norm, attention) -> list[ScaleGroup]:
    if not isinstance(attention, MultiHeadAttention) or norm is None or not _foldable(norm):
        return []
    values = (attention, VALUES) if attention.kv_dim == attention.query_dim else None
    return [ScaleGroup("attention.in_weight", [(attention, "in_weight")], norm, attention),
            ScaleGroup("attention.out_weight", [(attention, "out_weight")], values)]


def scale_groups(block: Module, sites: list) -> list[ScaleGroup]:
    """The groups of ``sites`` (the weights of ``block`` to quantize, in the order used)."""
    groups = []
    norm, mlp = _child(block, "post_attention_layernorm"), _child(block, "mlp")
    gate, up, down = (_child(block, f"mlp.{name}") for name in ("gate_proj", "up_proj", "down_proj"))
    groups += _attention_groups(_child(block, "input_layernorm"), _child(block, "self_attn"))
    if norm is not None and _dense(gate, up, down) and _foldable(norm):
        groups.append(ScaleGroup("mlp.gate_proj+up_proj", [gate, up], norm, mlp))
        groups.append(ScaleGroup("mlp.down_proj", [down], up if _foldable(up) else None))
    if getattr(block, "norm_first", False):
        groups += _attention_groups(_child(block, "norm1"), _child(block, "self_attention"))
        norm, first = _child(block, "norm2"), _child(block, "linear1")
        if norm is not None and _dense(first) and _foldable(norm):
            groups.append(ScaleGroup("linear1", [first], norm))
    key = _site_key
    chosen = {key(site) for site in sites}
    groups = [g for g in groups if all(key(site) in chosen for site in g.linears)]
    kept = {key(site) for group in groups for site in group.linears}
    alone = [ScaleGroup(_site_name(site), [site]) for site in sites if key(site) not in kept]
    order = {key(site): i for i, site in enumerate(sites)}
    return sorted(groups + alone, key=lambda g: min(order[key(site)] for site in g.linears))


def _site_key(site) -> tuple:
    return (id(site), None) if isinstance(site, Dense) else (id(site[0]), site[1])


def _site_name(site) -> str:
    return site.name if isinstance(site, Dense) else f"{site[0].name}.{site[1]}"


def _divide(param, s, columns=None) -> None:
    if columns is None:
        param.data = (param.data / s).astype(param.data.dtype)
    else:
        data = param.data.copy()
        data[..., columns] = data[..., columns] / s
        param.data = data


def fold_scales(group: ScaleGroup, s: numpy.ndarray) -> None:
    """Divide the outputs of ``group.previous`` by ``s`` and multiply the weights' rows by
    ``s`` (in place). Without a previous op only the weights change: the caller divides the
    inputs (``input_scale``)."""
    previous = group.previous
    if isinstance(previous, tuple):                                    # (attention, VALUES)
        attention = previous[0]
        columns = attention.projection_columns(2)
        _divide(attention._parameters["in_weight"], s, columns)
        if attention.use_bias:
            _divide(attention._parameters["in_bias"], s, columns)
    elif previous is not None:
        for name in ("weight", "bias"):
            param = previous._parameters.get(name)
            if param is not None:
                _divide(param, s)
    for site in group.linears:
        weight = site_weight(site)
        set_site_weight(site, (weight * s[:, None]).astype(weight.dtype))
