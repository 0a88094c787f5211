"""Token merging in a Vision Transformer (Bolya et al. 2023; ToMe): :func:`apply_tome`
swaps a :class:`~lamina.models.vit.VisionTransformer`'s ``encoder`` for a
:class:`ToMeEncoder` holding the same pre-norm layers under the same names (so the
parameters and their names are unchanged). Each layer then runs

    x <- x + Attn(LN_1(x)) with proportional attention (log sizes added to the logits)
    x, s <- merge_wavg(bipartite_soft_matching(mean over heads of K, r), x, s)
    x <- x + MLP(LN_2(x))

so every layer drops r tokens (T, T - r, T - 2r, ... while T - 1 >= 2r); the token sizes s
are carried from layer to layer. :func:`remove_tome` puts the plain encoder back. Merging is a
way of running the model, not part of its architecture: a saved model is read back with the
plain encoder (the same weights), and :func:`apply_tome` is called again after loading.
"""

from __future__ import annotations

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.functional.token_merging import bipartite_soft_matching, merge_wavg, proportional_attention
from lamina.nn.dense import linear
from lamina.nn.module import Module, as_tensor, read_parameter
from lamina.nn.sequential import Sequential

__all__ = ["ToMeEncoder", "apply_tome", "remove_tome", "tome_encoder_macs", "tome_token_counts"]


def _attention_and_keys(attention, x, size) -> tuple[Tensor, Tensor]:
    """The self-attention of ``x`` (N, T, E) with proportional attention, and the keys
    averaged over heads (N, T, d), the metric ToMe matches tokens by."""
    q, k, v = (attention._project(x, part) for part in range(3))
    heads = proportional_attention(q, k, v, size, scale=attention.scale)
    n, t = x.shape[0], x.shape[1]
    joined = F.reshape(F.transpose(heads, 0, 2, 1, 3), n, t, attention.query_dim)
    out_bias = read_parameter(attention, "out_bias") if attention.use_out_bias else None
    return linear(joined, read_parameter(attention, "out_weight"), out_bias), F.mean(k, axis=1)


class ToMeEncoder(Module):
    """A ViT's pre-norm encoder layers run with token merging of ``r`` tokens per layer
    (module docstring); the layers are children '0', '1', ... as in the plain encoder.
    Inputs (N, T, E) -> (N, T - depth r, E) (fewer merges once T - 1 < 2r). The class
    token stays first."""

    default_name = "encoder"

    def __init__(self, layers, r: int, name: str | None = "encoder"):
        super().__init__(name=name)
        if int(r) != r or r < 0:
            raise ValueError(f"ToMeEncoder: r must be a non-negative int, got {r!r}")
        self.r = int(r)
        for key, layer in enumerate(layers):
            if not getattr(layer, "norm_first", False):
                raise ValueError(f"ToMeEncoder: layer {key} must be a pre-norm TransformerEncoderLayer")
            setattr(self, str(key), layer)
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        size = None
        for layer in self._modules.values():
            layers = layer._modules
            attended, keys = _attention_and_keys(layers["self_attention"], layers["norm1"](x), size)
            x = F.add(x, layers["dropout1"](attended))
            merge, _ = bipartite_soft_matching(keys, self.r, class_token=True)
            x, size = merge_wavg(merge, x, size)
            x = F.add(x, layer._feed_forward(layers["norm2"](x)))
        return x

    def compute_output_shape(self, input_shape):
        counts = tome_token_counts(input_shape[1], len(self._modules), self.r)
        return (input_shape[0], counts[-1], input_shape[2])

    def get_config(self) -> dict:
        return {"r": self.r, "name": self.name}

    def extra_repr(self) -> str:
        return f"r={self.r}, depth={len(self._modules)}"


def tome_token_counts(num_tokens: int, depth: int, r: int, class_token: bool = True) -> list[int]:
    """The token counts [T_0, T_1, ..., T_depth] entering each layer and leaving the last, for
    ``num_tokens`` = T_0 and ``r`` merges per layer (capped at (T - class_token) // 2)."""
    counts = [int(num_tokens)]
    for _ in range(depth):
        t = counts[-1]
        counts.append(t - min(r, (t - int(class_token)) // 2))
    return counts


def tome_encoder_macs(model, num_tokens: int, r: int) -> int:
    """Multiply-accumulates per sample of ``model``'s encoder layers with ``r`` merges per layer:
    each layer's attention over T_l tokens (4 T E^2 + 2 T^2 E) and its MLP over T_{l+1}
    (2 T E d_ff); r = 0 is the plain encoder. Merging itself (a 0/1 matrix product) is not
    counted."""
    layers = list(model.encoder._modules.values())
    counts = tome_token_counts(num_tokens, len(layers), r)
    total = 0
    for layer, t_in, t_out in zip(layers, counts, counts[1:]):
        e = layer.d_model
        total += layer.self_attention.macs([(t_in, e)], [(t_in, e)]) + 2 * t_out * e * layer.dim_feedforward
    return total


def apply_tome(model, r: int):
    """Make ``model`` (a built VisionTransformer) merge ``r`` tokens per encoder layer, in
    place (its encoder becomes a :class:`ToMeEncoder` of the same layers); returns the model.
    Called again, it only changes r."""
    if isinstance(model.encoder, ToMeEncoder):
        model.encoder.r = ToMeEncoder([], r).r
        return model
    model.encoder = ToMeEncoder(list(model.encoder._modules.values()), r)
    return model


def remove_tome(model):
    """Undo :func:`apply_tome`: the plain Sequential encoder of the same layers; returns the model."""
    if isinstance(model.encoder, ToMeEncoder):
        model.encoder = Sequential(*model.encoder._modules.values(), name="encoder")
    return model
