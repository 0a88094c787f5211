"""Per-head activations of a model's attention layers.

:func:`enable_head_hooks` gives every :class:`~lamina.nn.MultiHeadAttention` of a model its
hook point ``head_outputs`` (see :mod:`lamina.nn.head_hooks`): the heads' contexts z
(N, T, h, d) before the output projection, recorded by :func:`run_with_cache` under names such
as ``'h.0.self_attention.head_outputs'`` (GPT-2) or ``'layers.0.self_attn.head_outputs'``
(Llama) and patched per head by :func:`activation_patching` / :func:`attribution_patching`
(``heads=``) and :func:`patching_grid` (``component='head'``).

:func:`head_contributions` splits an attention layer's output into what each head writes to
the residual stream, z_i W_o[i d:(i + 1) d], so that

    attention output = sum_i contribution_i + b_o.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.analysis.interpretability.activation_cache import ActivationCache, transformer_parts
from lamina.nn.head_hooks import HEAD_OUTPUTS, HeadOutputs
from lamina.nn.module import Module

__all__ = ["disable_head_hooks", "enable_head_hooks", "head_contributions", "head_hook_names"]


def _attention_layers(model: Module, who: str) -> list[tuple[str, Module]]:
    if not isinstance(model, Module):
        raise TypeError(f"{who}: expected a lamina Module, got {type(model).__name__}")
    return [(name, module) for name, module in model.named_modules()
            if callable(getattr(module, "enable_head_hooks", None))]


def enable_head_hooks(model: Module) -> list[str]:
    """Give every attention layer of ``model`` its per-head hook point; returns their module
    paths (``'<attention layer>.head_outputs'``), in ``named_modules`` order. The outputs stay
    bit-identical while no hook changes the heads' contexts."""
    layers = _attention_layers(model, "enable_head_hooks")
    if not layers:
        raise ValueError(f"enable_head_hooks: {type(model).__name__} has no MultiHeadAttention layer")
    for _, layer in layers:
        layer.enable_head_hooks()
    return [_hook_path(name) for name, _ in layers]


def disable_head_hooks(model: Module) -> None:
    """Remove the per-head hook point of every attention layer of ``model``."""
    for _, layer in _attention_layers(model, "disable_head_hooks"):
        layer.disable_head_hooks()


def _hook_path(layer_path: str) -> str:
    return f"{layer_path}.{HEAD_OUTPUTS}" if layer_path else HEAD_OUTPUTS


def head_hook_names(model: Module, who: str = "head_hook_names") -> list[str]:
    """The path of the per-head hook point of each block of a decoder language model (see
    :func:`transformer_parts`); ValueError when a block's attention has none enabled."""
    parts = transformer_parts(model)
    names = []
    for block in parts.blocks:
        inside = [(f"{block}.{name}", module) for name, module in model.get_submodule(block).named_modules() if name]
        hooks = [name for name, module in inside if isinstance(module, HeadOutputs)]
        if len(hooks) == 1:
            names.append(hooks[0])
            continue
        if hooks:
            raise ValueError(f"{who}: block {block!r} has {len(hooks)} per-head hook points {hooks}; expected one")
        attention = [name for name, module in inside if callable(getattr(module, "enable_head_hooks", None))]
        if attention:
            raise ValueError(f"{who}: head hooks are not enabled on {attention[0]!r}; call "
                             "lamina.analysis.interpretability.enable_head_hooks(model) first")
        raise TypeError(f"{who}: block {block!r} has no MultiHeadAttention layer, so no per-head outputs")
    return names


def _hook_name_of(cache: ActivationCache, layer: int | str, who: str) -> str:
    model = cache.model
    if isinstance(layer, str):
        return layer if layer.endswith(HEAD_OUTPUTS) else _hook_path(layer)
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise TypeError(f"{who}: layer must be a block index or an attention layer's module path, got {layer!r}")
    names = head_hook_names(model, who)
    if not -len(names) <= layer < len(names):
        raise ValueError(f"{who}: layer {layer} is out of range for a model of {len(names)} blocks")
    return names[layer]


def head_contributions(cache: ActivationCache, layer: int | str) -> np.ndarray:
    """What each head of an attention layer adds to the residual stream in the cached run:
    c[n, t, i] = z[n, t, i] W_o[i d:(i + 1) d], shape (N, T, h, E), from the heads' contexts z
    the cache recorded (``run_with_cache`` with the layer's head hooks enabled) and the layer's
    current ``out_weight``; ``c.sum(axis=2) + out_bias`` is the layer's output. ``layer``: a
    block index of a decoder language model, or the module path of an attention layer (or of
    its ``head_outputs``)."""
    who = "head_contributions"
    if not isinstance(cache, ActivationCache) or cache.model is None:
        raise TypeError(f"{who}: expected an ActivationCache from run_with_cache (which knows its model), got "
                        f"{type(cache).__name__}")
    name = _hook_name_of(cache, layer, who)
    if name not in cache:
        raise KeyError(f"{who}: the cache lacks the per-head outputs {name!r}; enable head hooks "
                       "(enable_head_hooks(model)) and run run_with_cache with names=None or with this name")
    attention = cache.model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else cache.model
    z = cache[name]
    h, d = attention.num_heads, attention.head_dim
    weight = backend.to_numpy(attention.out_weight.data).astype(z.dtype, copy=False)
    return np.einsum("nthd,hde->nthe", z, weight.reshape(h, d, -1))
