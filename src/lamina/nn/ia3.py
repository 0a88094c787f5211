"""IA3, infused adapter by inhibiting and amplifying inner activations (Liu et al. 2022):
learned vectors that rescale a model's keys, values and feed-forward activations.

On an attention layer the projected keys and values are multiplied feature-wise,

    K = (k W_k + b_k) * l_k,    V = (v W_v + b_v) * l_v,

and on a Dense layer, as peft's ``target_modules`` / ``feedforward_modules``:

    feed-forward (a layer that reads the intermediate activations, GPT-2's ``linear2``):
        y = g((x * l) W + b),      l: (n_in,)
    otherwise:
        y = g((x W + b) * l),      l: (n_out,)   (before the layer's activation g)

Every l starts at ones, so the adapted model starts equal to the pretrained one. Merging
folds l into the weights: W <- diag(l) W for a feed-forward layer, W <- W diag(l) and
b <- b * l otherwise (peft's merge); unmerging divides again.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.nn.activation import activate_fresh
from lamina.nn.dense import Dense
from lamina.nn.layer import register_layer
from lamina.nn.lora import adapted_base_config, adapted_base_from_config
from lamina.nn.module import Module
from lamina.nn.multi_head_attention import IA3_SCALES, MultiHeadAttention
from lamina.nn.peft_targets import ADAPTED_LAYERS, chosen_built_layers, selector, swap

__all__ = ["IA3Dense", "IA3Scale", "apply_ia3"]


@register_layer
class IA3Scale(Module):
    """One learned rescaling vector, the parameter ``scaling`` (features,), starting at ones."""

    def __init__(self, features: int, dtype=None, name: str | None = None):
        super().__init__(name=name)
        dtype = backend.get_default_dtype() if dtype is None else dtype
        self.add_parameter("scaling", backend.xp.ones((features,), dtype=dtype))
        self.merged = False
        self.built = True

    def forward(self, x) -> Tensor:
        return x * self.scaling

    def get_config(self) -> dict:
        return {"features": int(self.scaling.shape[0]), "dtype": self.scaling.dtype.name, "merged": self.merged,
                "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> IA3Scale:
        config = dict(config)
        merged = config.pop("merged", False)
        scale = cls(**config)
        scale.merged = merged
        return scale

    def extra_repr(self) -> str:
        return f"{self.scaling.shape[0]}" + (", merged" if self.merged else "")


def _check_merge(scale: IA3Scale, sign: int, label: str) -> None:
    if scale.merged == (sign > 0):
        raise ValueError(f"{label}: the IA3 vector is {'already' if scale.merged else 'not'} merged")


@register_layer
class IA3Dense(Module):
    """A built Dense ``dense`` (frozen, the sub-module ``base``) with an IA3 vector ``ia3``
    (:class:`IA3Scale`) on its input (``feedforward=True``) or its output (see the module
    docstring)."""

    def __init__(self, dense: Dense, feedforward: bool = False, name: str | None = None):
        from lamina.nn.peft_targets import check_dense

        check_dense(dense, "IA3Dense")
        super().__init__(name=name or dense.name)
        dense.freeze()
        self.base = dense
        self.feedforward = bool(feedforward)
        n_in, n_out = dense.weight.shape
        self.ia3 = IA3Scale(n_in if self.feedforward else n_out, dtype=dense.weight.dtype)
        self.built = True

    @property
    def merged(self) -> bool:
        return self.ia3.merged

    def forward(self, x) -> Tensor:
        base, scale = self.base, self.ia3
        if self.feedforward and not scale.merged:
            x = scale(x)
        z = base.apply_weights(x, base.weight, activate=False)
        if not self.feedforward and not scale.merged:
            z = scale(z)
        return z if base.activation is None else activate_fresh(base.activation, z)

    def merge(self) -> None:
        """Fold the vector into the weight (and, on the output side, the bias)."""
        self._fold(+1)

    def unmerge(self) -> None:
        """Undo :meth:`merge`, dividing by the vector."""
        self._fold(-1)

    def _fold(self, sign: int) -> None:
        _check_merge(self.ia3, sign, self._label())
        factor = self.ia3.scaling.data if sign > 0 else 1.0 / self.ia3.scaling.data
        base = self.base
        with no_grad():
            if self.feedforward:
                base.weight.data = base.weight.data * factor[:, None]
            else:
                base.weight.data = base.weight.data * factor
                if base.use_bias:
                    base.bias.data = base.bias.data * factor
        self.ia3.merged = sign > 0

    def compute_output_shape(self, input_shape):
        return self.base.compute_output_shape(input_shape)

    def get_config(self) -> dict:
        return {**adapted_base_config(self.base), "feedforward": self.feedforward, "merged": self.ia3.merged,
                "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> IA3Dense:
        config = dict(config)
        merged = config.pop("merged", False)
        layer = cls(adapted_base_from_config(config), **config)
        layer.ia3.merged = merged
        return layer

    def extra_repr(self) -> str:
        return self.base.extra_repr() + (", ia3 on the input" if self.feedforward else ", ia3 on the output")


ADAPTED_LAYERS.extend([IA3Dense, IA3Scale])

_PARTS = {"q": 0, "k": 1, "v": 2}


def apply_ia3(model: Module, target=(Dense, MultiHeadAttention), feedforward=(), attention_parts=("k", "v")) -> Module:
    """Freeze the built ``model`` and add IA3 vectors to the layers ``target`` chooses (a
    type, names or a predicate, as :func:`~lamina.nn.apply_lora`): a chosen attention layer
    rescales the projections ``attention_parts`` (its sub-modules ``ia3_k``, ``ia3_v``), a
    chosen Dense becomes an :class:`IA3Dense`, on its input when ``feedforward`` (names, or
    any target form) also chooses it, else on its output. For GPT-2, IA3's paper setting is
    ``apply_ia3(model, target=(MultiHeadAttention, 'linear2'), feedforward='linear2')``.
    Returns the model."""
    parts = tuple(attention_parts)
    if not parts or any(p not in _PARTS for p in parts):
        raise ValueError(f"apply_ia3: attention_parts must name some of 'q', 'k', 'v', got {attention_parts!r}")
    on_input = selector(feedforward) if feedforward else (lambda path, module: False)
    found = chosen_built_layers(model, target, (Dense, MultiHeadAttention), "apply_ia3")
    model.freeze()
    result = model
    for path, module in found:
        if isinstance(module, MultiHeadAttention):
            module.require_joint_projection("apply_ia3")
            for part in parts:
                columns = module.projection_columns(_PARTS[part])
                setattr(module, IA3_SCALES[_PARTS[part]],
                        IA3Scale(columns.stop - columns.start, dtype=module.in_weight.dtype))
            continue
        result = swap(model, path, IA3Dense(module, feedforward=on_input(path, module)), "apply_ia3")
    return result


def ia3_attention_scales(module: MultiHeadAttention) -> list[tuple[int, IA3Scale]]:
    """(part, vector) of the IA3 vectors an attention layer holds."""
    return [(part, module._modules[name]) for part, name in enumerate(IA3_SCALES) if name in module._modules]


def fold_attention_scale(module: MultiHeadAttention, part: int, scale: IA3Scale, sign: int) -> None:
    """Merge (sign +1) or unmerge (-1) one IA3 vector into the attention's in-projection."""
    _check_merge(scale, sign, module._label())
    columns = module.projection_columns(part)
    factor = scale.scaling.data if sign > 0 else 1.0 / scale.scaling.data
    with no_grad():
        weight = module.in_weight.data.copy()
        weight[:, columns] *= factor
        module.in_weight.data = weight
        if module.use_bias:
            bias = module.in_bias.data.copy()
            bias[columns] *= factor
            module.in_bias.data = bias
    scale.merged = sign > 0
