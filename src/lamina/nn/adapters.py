"""Bottleneck adapters: a small residual network inserted into each Transformer block of a
frozen model, the only part that learns.

    adapter(h) = h + act(h W_down + b_down) W_up + b_up,   W_down: (d, m),  W_up: (m, d),  m << d

Houlsby et al. (2019) put one after the attention's output and one after the feed-forward
network of every block (``placement='houlsby'``); Pfeiffer et al. (2021) one after the
feed-forward network only (``'pfeiffer'``). The adapter acts on the sub-layer's output
before the residual addition (and, in a post-norm block such as BERT's, before the
normalization). W_up and b_up start at zero (``up_std=0``, exact identity) or, as Houlsby
et al., near zero (N(0, up_std)); W_down is N(0, 0.01).

In a :class:`~lamina.nn.TransformerEncoderLayer` (GPT-2's and BERT's blocks among them) the
adapter wraps the sub-layer ``dropout1`` (the attention branch) or ``dropout2`` (the
feed-forward branch): each acts on one step at a time, so a key/value cache for generation
works as before.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.nn.activation import activate_fresh, get_activation, serialize_activation
from lamina.nn.dense import linear
from lamina.nn.layer import build_for_shape, input_shape_config, layer_from_config, layer_to_config, register_layer
from lamina.nn.module import Module
from lamina.nn.peft_targets import ADAPTED_LAYERS, chosen_layers
from lamina.nn.transformer import TransformerEncoderLayer

__all__ = ["BottleneckAdapter", "WithAdapter", "apply_bottleneck_adapters"]

_PLACEMENTS = {"houlsby": ("dropout1", "dropout2"), "pfeiffer": ("dropout2",)}


@register_layer
class BottleneckAdapter(Module):
    """h -> h + act(h W_down + b_down) W_up + b_up for features ``d`` and a bottleneck of
    ``m`` units; parameters ``down_weight`` (d, m), ``down_bias``, ``up_weight`` (m, d),
    ``up_bias``."""

    def __init__(self, features: int, bottleneck: int, activation="relu", up_std: float = 0.0, dtype=None,
                 name: str | None = None):
        super().__init__(name=name)
        if isinstance(bottleneck, bool) or not isinstance(bottleneck, int) or not 1 <= bottleneck <= features:
            raise ValueError(f"BottleneckAdapter: the bottleneck must be an integer in [1, {features}] (the "
                             f"features), got {bottleneck!r}")
        if not float(up_std) >= 0:
            raise ValueError(f"BottleneckAdapter: up_std must be >= 0, got {up_std!r}")
        dtype = backend.get_default_dtype() if dtype is None else dtype
        xp, rng = backend.xp, backend.rng()
        self.activation_spec = activation
        self.activation = get_activation(activation)
        self.up_std = float(up_std)
        self.add_parameter("down_weight", xp.asarray(rng.normal(0.0, 0.01, (features, bottleneck)).astype(dtype)))
        self.add_parameter("down_bias", xp.zeros((bottleneck,), dtype=dtype))
        up = rng.normal(0.0, up_std, (bottleneck, features)) if up_std else xp.zeros((bottleneck, features))
        self.add_parameter("up_weight", xp.asarray(up.astype(dtype)))
        self.add_parameter("up_bias", xp.zeros((features,), dtype=dtype))
        self.built = True

    def forward(self, h) -> Tensor:
        inner = activate_fresh(self.activation, linear(h, self.down_weight, self.down_bias))
        return h + linear(inner, self.up_weight, self.up_bias)

    def get_config(self) -> dict:
        features, bottleneck = self.down_weight.shape
        act = self.activation
        return {"features": int(features), "bottleneck": int(bottleneck),
                "activation": serialize_activation(act if isinstance(act, Module) else self.activation_spec),
                "up_std": self.up_std, "dtype": self.down_weight.dtype.name, "name": self.name}

    def extra_repr(self) -> str:
        features, bottleneck = self.down_weight.shape
        return f"{features} -> {bottleneck} -> {features}, activation={self.activation_spec}"


@register_layer
class WithAdapter(Module):
    """``layer`` followed by ``adapter``: adapter(layer(x)), standing in for the layer."""

    def __init__(self, layer: Module, adapter: BottleneckAdapter, name: str | None = None):
        super().__init__(name=name or layer.name)
        self.layer = layer
        self.adapter = adapter
        self.built = True

    @property
    def streamable(self) -> bool:
        return True

    def forward(self, x) -> Tensor:
        return self.adapter(self.layer(x))

    def get_config(self) -> dict:
        return {"layer": layer_to_config(self.layer), "layer_input_shape": input_shape_config(self.layer),
                "adapter": layer_to_config(self.adapter), "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> WithAdapter:
        """The wrapped layer is built for the input shape it had (see :func:`~lamina.nn.layer.build_for_shape`)."""
        config = dict(config)
        layer = build_for_shape(layer_from_config(config.pop("layer")), config.pop("layer_input_shape"))
        return cls(layer, layer_from_config(config.pop("adapter")), **config)


ADAPTED_LAYERS.extend([BottleneckAdapter, WithAdapter])


def apply_bottleneck_adapters(model: Module, bottleneck: int = 16, placement: str = "houlsby",
                              activation="relu", up_std: float = 0.0, target=TransformerEncoderLayer) -> Module:
    """Freeze the built ``model`` and insert bottleneck adapters of ``bottleneck`` units into
    the Transformer blocks ``target`` chooses (a type, names or a predicate, as
    :func:`~lamina.nn.apply_lora`): two per block for ``placement='houlsby'``, one after the
    feed-forward network for ``'pfeiffer'`` (see the module docstring). Returns the model."""
    if placement not in _PLACEMENTS:
        raise ValueError(f"apply_bottleneck_adapters: placement must be one of {tuple(_PLACEMENTS)}, got "
                         f"{placement!r}")
    found = chosen_layers(model, target, (TransformerEncoderLayer,), "apply_bottleneck_adapters")
    for path, block in found:
        if not block.built:
            raise ValueError(f"apply_bottleneck_adapters: {block._label()} ({path or 'the model'}) has no weights "
                             "yet; call the model on an input first")
    model.freeze()
    for _, block in found:
        dtype = block.norm1.weight.dtype if "weight" in block.norm1._parameters else backend.get_default_dtype()
        for slot in _PLACEMENTS[placement]:
            inner = block._modules[slot]
            if isinstance(inner, WithAdapter):
                raise ValueError(f"apply_bottleneck_adapters: {block._label()}.{slot} already has an adapter")
            adapter = BottleneckAdapter(block.d_model, bottleneck, activation, up_std, dtype=dtype)
            setattr(block, slot, WithAdapter(inner, adapter))
    return model
