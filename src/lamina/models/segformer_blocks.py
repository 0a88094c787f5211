"""The Mix Transformer's (MiT) blocks of SegFormer (Xie et al. 2021) in Hugging Face's names:
the overlapping patch embedding, the efficient self-attention (keys and values shortened by
a strided conv), its output projection, the Mix-FFN (a 3x3 depthwise conv inside the MLP) and
the pre-norm block :class:`SegformerLayer` that joins them. The formulas are in
:mod:`lamina.models.segformer`, which builds the encoder, the decode head and the model from them.
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import Block, nhwc_channels
from lamina.nn import init as initializers
from lamina.nn.layer import positive_int, register_layer

__all__ = [
    "SegformerAttention", "SegformerEfficientSelfAttention", "SegformerLayer", "SegformerMixFFN",
    "SegformerOverlapPatchEmbeddings",
]

LAYER_NORM_EPS = 1e-5
WEIGHT_STD = 0.02          # Dense and conv weights start N(0, 0.02^2), biases 0 (Hugging Face's init)


def _dense(units: int, name: str) -> nn.Dense:
    return nn.Dense(units, kernel_init=initializers.normal(WEIGHT_STD), name=name)


def _conv(filters: int, kernel_size: int, name: str, stride: int = 1, padding: int = 0, groups: int = 1,
          use_bias: bool = True) -> nn.Conv2D:
    return nn.Conv2D(filters, kernel_size, stride=stride, padding=padding, groups=groups, use_bias=use_bias,
                     kernel_init=initializers.normal(WEIGHT_STD), name=name)


def _layer_norm(name: str) -> nn.LayerNorm:
    return nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name=name)


@register_layer
class SegformerOverlapPatchEmbeddings(Block):
    """Overlapping patches: ``proj`` (conv of ``patch_size``, ``stride``, padding patch_size // 2)
    then ``layer_norm``; (N, H, W, c) to (N, ceil(H / stride), ceil(W / stride), hidden_size)
    for odd patch sizes."""

    default_name = "patch_embeddings"

    def __init__(self, patch_size: int, stride: int, hidden_size: int, name: str | None = None):
        super().__init__(name=name)
        self.patch_size = positive_int(patch_size, "SegformerOverlapPatchEmbeddings: patch_size")
        self.stride = positive_int(stride, "SegformerOverlapPatchEmbeddings: stride")
        self.hidden_size = positive_int(hidden_size, "SegformerOverlapPatchEmbeddings: hidden_size")
        self.proj = _conv(hidden_size, patch_size, "proj", stride, patch_size // 2)
        self.layer_norm = _layer_norm("layer_norm")

    def trace(self, shape, step):
        return step(self.layer_norm, step(self.proj, shape))

    def forward(self, x) -> Tensor:
        return self.layer_norm(self.proj(x))

    def get_config(self) -> dict:
        return {"patch_size": self.patch_size, "stride": self.stride, "hidden_size": self.hidden_size,
                "name": self.name}


@register_layer
class SegformerEfficientSelfAttention(Block):
    """Multi-head self-attention with sequence reduction on an NHWC map of ``hidden_size``
    channels (:mod:`lamina.models.segformer`): ``query``, ``key``, ``value`` (Dense), and for
    ``sr_ratio`` R > 1 ``sr`` (R x R conv of stride R) and ``layer_norm`` on the keys' and
    values' map. Gives the heads' outputs side by side, before the output projection."""

    default_name = "self"

    def __init__(self, hidden_size: int, num_attention_heads: int, sr_ratio: int = 1,
                 attention_probs_dropout_prob: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.hidden_size = positive_int(hidden_size, "SegformerEfficientSelfAttention: hidden_size")
        self.num_attention_heads = positive_int(num_attention_heads, "SegformerEfficientSelfAttention: heads")
        self.sr_ratio = positive_int(sr_ratio, "SegformerEfficientSelfAttention: sr_ratio")
        if hidden_size % num_attention_heads:
            raise ValueError(f"SegformerEfficientSelfAttention: hidden_size {hidden_size} is not divisible by "
                             f"num_attention_heads {num_attention_heads}")
        self.query, self.key, self.value = (_dense(hidden_size, n) for n in ("query", "key", "value"))
        self.dropout = nn.Dropout(attention_probs_dropout_prob, name="dropout")
        if self.sr_ratio > 1:
            self.sr = _conv(hidden_size, self.sr_ratio, "sr", stride=self.sr_ratio)
            self.layer_norm = _layer_norm("layer_norm")

    def reduced_shape(self, shape, step) -> tuple:
        """The shape of the map the keys and values are read from."""
        if self.sr_ratio == 1:
            return shape
        return step(self.layer_norm, step(self.sr, shape))

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.hidden_size, "hidden_size")
        step(self.query, shape)
        reduced = self.reduced_shape(shape, step)
        step(self.key, reduced)
        step(self.value, reduced)
        return shape

    def reduced(self, x) -> Tensor:
        """x' of :mod:`lamina.models.segformer`: the map shortened R times along each axis, normalised."""
        return x if self.sr_ratio == 1 else self.layer_norm(self.sr(x))

    def _heads(self, tokens: Tensor) -> Tensor:
        """(N, h, w, C) tokens as (N, heads, h w, d)."""
        batch, height, width, _ = tokens.shape
        heads = self.num_attention_heads
        return F.transpose(F.reshape(tokens, batch, height * width, heads, self.hidden_size // heads), 0, 2, 1, 3)

    def forward(self, x) -> Tensor:
        batch, height, width, _ = x.shape
        nhwc_channels(self, x.shape, self.hidden_size, "hidden_size")
        reduced = self.reduced(x)
        q, k, v = self._heads(self.query(x)), self._heads(self.key(reduced)), self._heads(self.value(reduced))
        scale = (self.hidden_size // self.num_attention_heads) ** -0.5
        scores = F.matmul(F.mul(q, scale), F.swapaxes(k, -1, -2))
        weights = self.dropout(F.softmax(scores, axis=-1))
        context = F.transpose(F.matmul(weights, v), 0, 2, 1, 3)
        return F.reshape(context, batch, height, width, self.hidden_size)

    def macs(self, input_shapes, output_shapes) -> int:
        """Q K^T and A V: 2 C h' w' per query token (h' w' the reduced map's tokens)."""
        height, width, channels = input_shapes[0]
        keys = (height // self.sr_ratio) * (width // self.sr_ratio)
        return 2 * height * width * keys * channels

    def get_config(self) -> dict:
        return {"hidden_size": self.hidden_size, "num_attention_heads": self.num_attention_heads,
                "sr_ratio": self.sr_ratio, "attention_probs_dropout_prob": self.dropout.rate, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, heads={self.num_attention_heads}, sr_ratio={self.sr_ratio}"


@register_layer
class SegformerAttention(Block):
    """The efficient self-attention (sub-layer ``self``) and its output projection
    (``output``: Dense ``dense``, then dropout), as Hugging Face's ``SegformerAttention``."""

    default_name = "attention"

    def __init__(self, hidden_size: int, num_attention_heads: int, sr_ratio: int = 1,
                 attention_probs_dropout_prob: float = 0.0, hidden_dropout_prob: float = 0.0,
                 name: str | None = None):
        super().__init__(name=name)
        # 'self' cannot be an attribute name in a method's body, so it is registered by key
        self._modules["self"] = SegformerEfficientSelfAttention(hidden_size, num_attention_heads, sr_ratio,
                                                                attention_probs_dropout_prob, name="self")
        self.output = nn.Sequential(_dense(hidden_size, "dense"), nn.Dropout(hidden_dropout_prob, name="dropout"),
                                    name="output")
        self.hidden_dropout_prob = float(hidden_dropout_prob)

    @property
    def efficient_attention(self) -> SegformerEfficientSelfAttention:
        return self._modules["self"]

    def trace(self, shape, step):
        return step(self.output, step(self.efficient_attention, shape))

    def forward(self, x) -> Tensor:
        return self.output(self.efficient_attention(x))

    def get_config(self) -> dict:
        attention = self.efficient_attention
        return {"hidden_size": attention.hidden_size, "num_attention_heads": attention.num_attention_heads,
                "sr_ratio": attention.sr_ratio, "attention_probs_dropout_prob": attention.dropout.rate,
                "hidden_dropout_prob": self.hidden_dropout_prob, "name": self.name}


@register_layer
class SegformerMixFFN(Block):
    """Mix-FFN: ``dense1`` (hidden_features), ``dwconv.dwconv`` (3x3 depthwise conv, padding 1),
    GELU, dropout, ``dense2`` (out_features), dropout."""

    default_name = "mlp"

    def __init__(self, hidden_features: int, out_features: int, hidden_dropout_prob: float = 0.0,
                 name: str | None = None):
        super().__init__(name=name)
        self.hidden_features = positive_int(hidden_features, "SegformerMixFFN: hidden_features")
        self.out_features = positive_int(out_features, "SegformerMixFFN: out_features")
        self.dense1 = _dense(hidden_features, "dense1")
        self.dwconv = nn.Sequential(_conv(hidden_features, 3, "dwconv", padding=1, groups=hidden_features),
                                    name="dwconv")
        self.intermediate_act_fn = nn.GELU(name="intermediate_act_fn")
        self.dense2 = _dense(out_features, "dense2")
        self.dropout = nn.Dropout(hidden_dropout_prob, name="dropout")

    def trace(self, shape, step):
        shape = step(self.intermediate_act_fn, step(self.dwconv, step(self.dense1, shape)))
        return step(self.dropout, step(self.dense2, step(self.dropout, shape)))

    def forward(self, x) -> Tensor:
        x = self.dropout(self.intermediate_act_fn(self.dwconv(self.dense1(x))))
        return self.dropout(self.dense2(x))

    def get_config(self) -> dict:
        return {"hidden_features": self.hidden_features, "out_features": self.out_features,
                "hidden_dropout_prob": self.dropout.rate, "name": self.name}


@register_layer
class SegformerLayer(Block):
    """One MiT block (:mod:`lamina.models.segformer`): ``layer_norm_1``, ``attention``, ``drop_path``,
    ``layer_norm_2``, ``mlp`` (:class:`SegformerMixFFN` of mlp_ratio hidden_size channels)."""

    default_name = "layer"

    def __init__(self, hidden_size: int, num_attention_heads: int, sr_ratio: int = 1, mlp_ratio: int = 4,
                 drop_path: float = 0.0, hidden_dropout_prob: float = 0.0, attention_probs_dropout_prob: float = 0.0,
                 name: str | None = None):
        super().__init__(name=name)
        self.hidden_size = positive_int(hidden_size, "SegformerLayer: hidden_size")
        self.mlp_ratio = positive_int(mlp_ratio, "SegformerLayer: mlp_ratio")
        self.layer_norm_1 = _layer_norm("layer_norm_1")
        self.attention = SegformerAttention(hidden_size, num_attention_heads, sr_ratio, attention_probs_dropout_prob,
                                            hidden_dropout_prob, name="attention")
        self.drop_path = nn.StochasticDepth(drop_path, "row", name="drop_path")
        self.layer_norm_2 = _layer_norm("layer_norm_2")
        self.mlp = SegformerMixFFN(hidden_size * mlp_ratio, hidden_size, hidden_dropout_prob, name="mlp")

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.hidden_size, "hidden_size")
        step(self.drop_path, step(self.attention, step(self.layer_norm_1, shape)))
        return step(self.drop_path, step(self.mlp, step(self.layer_norm_2, shape)))

    def forward(self, x) -> Tensor:
        x = F.add(x, self.drop_path(self.attention(self.layer_norm_1(x))))
        return F.add(x, self.drop_path(self.mlp(self.layer_norm_2(x))))

    def get_config(self) -> dict:
        attention = self.attention.efficient_attention
        return {"hidden_size": self.hidden_size, "num_attention_heads": attention.num_attention_heads,
                "sr_ratio": attention.sr_ratio, "mlp_ratio": self.mlp_ratio, "drop_path": self.drop_path.p,
                "hidden_dropout_prob": self.mlp.dropout.rate,
                "attention_probs_dropout_prob": attention.dropout.rate, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, drop_path={self.drop_path.p:.3g}"
