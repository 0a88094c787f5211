"""SegFormer (Xie et al. 2021, "SegFormer: Simple and Efficient Design for Semantic Segmentation
with Transformers") in Hugging Face's layout and names (``SegformerForSemanticSegmentation``).

A hierarchical transformer encoder, the Mix Transformer (MiT), gives four NHWC maps at 1/4,
1/8, 1/16 and 1/32 of the input; a light all-MLP head joins them into per-pixel logits at 1/4
of the input. In NHWC a map is already a grid of tokens (channels last), so every "linear
layer over the tokens" is a Dense on the last axis.

Stage i (widths C_i, heads h_i, reduction ratio R_i):

    overlapping patch embedding   x = LayerNorm(conv(x)), conv k7 s4 p3 (stage 0) or k3 s2 p1
    blocks                        x = x + drop_path(attention(layer_norm_1(x)))
                                  x = x + drop_path(mlp(layer_norm_2(x)))
    stage norm                    x = layer_norm[i](x)

Efficient self-attention shortens the keys and values R times along each axis: with
x' = LayerNorm(conv_{R x R, stride R}(x)) ('sr', 'layer_norm'; x' = x when R = 1),

    Q = x W_q,  K = x' W_k,  V = x' W_v,  A = softmax(Q K^T / sqrt(d)) V    per head (d = C / h)

then the output projection ('attention.output.dense'). Mix-FFN puts a 3x3 depthwise
convolution inside the MLP, which gives the positional cue (there is no position embedding):

    mlp(x) = dense2(GELU(dwconv(dense1(x))))          (4C hidden channels)

The decode head: each stage's map through a Dense to D channels ('linear_c.i.proj'), resized
to the 1/4 map (bilinear, align_corners=False), the four joined in the reversed order
(stage 3 first, as Hugging Face), then a 1x1 conv without bias ('linear_fuse'), BatchNorm,
ReLU, dropout and the 1x1 classifier conv. :func:`segformer_loss` resizes the logits to the
labels' size (bilinear) and takes the cross-entropy over the pixels whose label is not 255
(one label: the binary cross-entropy over the valid pixels, as Hugging Face).

LayerNorms use eps 1e-5 (PyTorch's default, as Hugging Face's modules); the drop-path
probability of block j of the L blocks is ``drop_path_rate`` j / (L - 1). Variants (widths,
blocks per stage, D; heads (1, 2, 5, 8), ratios (8, 4, 2, 1) for all) and parameters with 150
labels: b0 (32, 64, 160, 256), (2, 2, 2, 2), 256: 3,752,694; b1 (64, 128, 320, 512),
(2, 2, 2, 2), 256: 13,715,798; b2 (3, 4, 6, 3), 768: 27,461,974; b3 (3, 4, 18, 3), 768:
47,337,814; b4 (3, 8, 27, 3), 768: 64,108,374; b5 (3, 6, 40, 3), 768: 84,708,694.

The MiT blocks are in :mod:`lamina.models.segformer_blocks` (re-exported here).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, check_input, finish, nhwc, nhwc_channels
from lamina.models.hf_weights import HFWeight, copied, linear, load_hf_state_dict, read_state_dict
from lamina.models.segformer_blocks import (  # noqa: F401  (moved there, importable from here too)
    LAYER_NORM_EPS,
    WEIGHT_STD,
    SegformerAttention,
    SegformerEfficientSelfAttention,
    SegformerLayer,
    SegformerMixFFN,
    SegformerOverlapPatchEmbeddings,
    _conv,
    _dense,
    _layer_norm,
)
from lamina.nn.layer import positive_int, register_layer

__all__ = [
    "SEGFORMER_VARIANTS", "SegformerAttention", "SegformerConfig", "SegformerDecodeHead",
    "SegformerEfficientSelfAttention", "SegformerEncoder", "SegformerForSemanticSegmentation", "SegformerLayer",
    "SegformerMixFFN", "SegformerModel", "SegformerOverlapPatchEmbeddings", "hf_segformer_table",
    "load_hf_segformer_state_dict", "segformer", "segformer_loss",
]

IGNORE_INDEX = 255


@dataclass(frozen=True)
class SegformerConfig:
    """The fields of Hugging Face's ``SegformerConfig`` that shape the model (same names)."""

    hidden_sizes: tuple[int, ...] = (32, 64, 160, 256)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_attention_heads: tuple[int, ...] = (1, 2, 5, 8)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    patch_sizes: tuple[int, ...] = (7, 3, 3, 3)
    strides: tuple[int, ...] = (4, 2, 2, 2)
    mlp_ratios: tuple[int, ...] = (4, 4, 4, 4)
    decoder_hidden_size: int = 256
    num_labels: int = 150
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    classifier_dropout_prob: float = 0.1
    drop_path_rate: float = 0.1
    semantic_loss_ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        stage_fields = ("hidden_sizes", "depths", "num_attention_heads", "sr_ratios", "patch_sizes", "strides",
                        "mlp_ratios")
        for name in stage_fields:
            values = getattr(self, name)
            if (not isinstance(values, (tuple, list)) or not values
                    or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values)):
                raise ValueError(f"SegformerConfig: {name} must be a sequence of positive ints, got {values!r}")
            object.__setattr__(self, name, tuple(values))
        stages = {len(getattr(self, name)) for name in stage_fields}
        if len(stages) != 1:
            raise ValueError("SegformerConfig: " + ", ".join(f"{n}={getattr(self, n)}" for n in stage_fields)
                             + " must give one value per stage each")
        for width, heads in zip(self.hidden_sizes, self.num_attention_heads):
            if width % heads:
                raise ValueError(f"SegformerConfig: hidden size {width} is not divisible by its {heads} heads "
                                 f"(hidden_sizes={self.hidden_sizes}, num_attention_heads={self.num_attention_heads})")
        positive_int(self.decoder_hidden_size, "SegformerConfig: decoder_hidden_size")
        positive_int(self.num_labels, "SegformerConfig: num_labels")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob",
                     "drop_path_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"SegformerConfig: {name} must lie in [0, 1), got {getattr(self, name)!r}")

    @property
    def num_encoder_blocks(self) -> int:
        return len(self.hidden_sizes)


_MIT_WIDE = (64, 128, 320, 512)
SEGFORMER_VARIANTS: dict[str, dict] = {
    "b0": {"hidden_sizes": (32, 64, 160, 256), "depths": (2, 2, 2, 2), "decoder_hidden_size": 256},
    "b1": {"hidden_sizes": _MIT_WIDE, "depths": (2, 2, 2, 2), "decoder_hidden_size": 256},
    "b2": {"hidden_sizes": _MIT_WIDE, "depths": (3, 4, 6, 3), "decoder_hidden_size": 768},
    "b3": {"hidden_sizes": _MIT_WIDE, "depths": (3, 4, 18, 3), "decoder_hidden_size": 768},
    "b4": {"hidden_sizes": _MIT_WIDE, "depths": (3, 8, 27, 3), "decoder_hidden_size": 768},
    "b5": {"hidden_sizes": _MIT_WIDE, "depths": (3, 6, 40, 3), "decoder_hidden_size": 768},
}
"""The MiT-b0..b5 encoders with their decode heads (the other fields as :class:`SegformerConfig`)."""


def _config_dict(config: SegformerConfig) -> dict:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(config).items()}


class _ConfiguredBlock(Block):
    """A block made from a :class:`SegformerConfig` (saved as its fields)."""

    def __init__(self, config: SegformerConfig | dict | None = None, name: str | None = None):
        super().__init__(name=name)
        if config is None:
            config = SegformerConfig()
        elif isinstance(config, dict):
            config = SegformerConfig(**config)
        self.config = config

    def get_config(self) -> dict:
        return {"config": _config_dict(self.config), "name": self.name}


@register_layer
class SegformerEncoder(_ConfiguredBlock):
    """The Mix Transformer: per stage ``patch_embeddings.i``, the blocks ``block.i.j`` and
    ``layer_norm.i``; ``forward`` gives the list of the stages' NHWC maps."""

    default_name = "encoder"

    def __init__(self, config: SegformerConfig | dict | None = None, name: str | None = None):
        super().__init__(config, name=name)
        c = self.config
        rates = np.linspace(0.0, c.drop_path_rate, sum(c.depths))
        self.patch_embeddings = nn.ModuleList(
            SegformerOverlapPatchEmbeddings(c.patch_sizes[i], c.strides[i], c.hidden_sizes[i], name=str(i))
            for i in range(c.num_encoder_blocks))
        stages, first = [], 0
        for i, depth in enumerate(c.depths):
            stages.append(nn.ModuleList(
                SegformerLayer(c.hidden_sizes[i], c.num_attention_heads[i], c.sr_ratios[i], c.mlp_ratios[i],
                               float(rates[first + j]), c.hidden_dropout_prob, c.attention_probs_dropout_prob,
                               name=str(j))
                for j in range(depth)))
            first += depth
        self.block = nn.ModuleList(stages)
        self.layer_norm = nn.ModuleList(_layer_norm(str(i)) for i in range(c.num_encoder_blocks))

    def _stages(self):
        return zip(self.patch_embeddings, self.block, self.layer_norm)

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        maps = []
        for embedding, blocks, norm in self._stages():
            shape = step(embedding, shape)
            for layer in blocks:
                shape = step(layer, shape)
            shape = step(norm, shape)
            maps.append(shape)
        return maps

    def forward(self, x) -> list[Tensor]:
        maps = []
        for embedding, blocks, norm in self._stages():
            x = embedding(x)
            for layer in blocks:
                x = layer(x)
            x = norm(x)
            maps.append(x)
        return maps


@register_layer
class SegformerModel(_ConfiguredBlock):
    """Hugging Face's ``SegformerModel``: the ``encoder``; ``forward`` gives the stages' maps."""

    default_name = "segformer"

    def __init__(self, config: SegformerConfig | dict | None = None, name: str | None = None):
        super().__init__(config, name=name)
        self.encoder = SegformerEncoder(self.config, name="encoder")

    def trace(self, shape, step):
        return step(self.encoder, shape)

    def forward(self, x) -> list[Tensor]:
        return self.encoder(x)


@register_layer
class SegformerDecodeHead(_ConfiguredBlock):
    """The all-MLP head (module docstring): ``linear_c.i.proj`` (Dense to decoder_hidden_size),
    ``linear_fuse`` (1x1 conv, no bias), ``batch_norm``, ReLU, ``dropout``, ``classifier``
    (1x1 conv). ``forward(*maps)`` takes the stages' maps, the first the largest, and gives
    logits at the first map's size."""

    default_name = "decode_head"

    def __init__(self, config: SegformerConfig | dict | None = None, name: str | None = None):
        super().__init__(config, name=name)
        c = self.config
        self.linear_c = nn.ModuleList(nn.Sequential(_dense(c.decoder_hidden_size, "proj"), name=str(i))
                                      for i in range(c.num_encoder_blocks))
        self.linear_fuse = _conv(c.decoder_hidden_size, 1, "linear_fuse", use_bias=False)
        self.batch_norm = nn.BatchNorm(name="batch_norm")
        self.activation = nn.ReLU(name="activation")
        self.dropout = nn.Dropout(c.classifier_dropout_prob, name="dropout")
        self.classifier = _conv(c.num_labels, 1, "classifier")

    def _check(self, shapes) -> list[tuple]:
        stages = self.config.num_encoder_blocks
        if len(shapes) != stages or not all(isinstance(s, (tuple, list)) for s in shapes):
            raise ShapeError(f"{self._label()}: expected the {stages} stage maps of the encoder, got shapes {shapes}")
        return [nhwc_channels(self, s, width, f"hidden_sizes[{i}]")
                for i, (s, width) in enumerate(zip(shapes, self.config.hidden_sizes))]

    def trace(self, shape, step):
        shapes = self._check(shape)
        batch, height, width = shapes[0][:3]
        for mlp, map_shape in zip(self.linear_c, shapes):
            step(mlp, map_shape)
        joined = (batch, height, width, self.config.decoder_hidden_size * len(shapes))
        shape = step(self.batch_norm, step(self.linear_fuse, joined))
        return step(self.classifier, step(self.dropout, step(self.activation, shape)))

    def forward(self, *maps) -> Tensor:
        self._check([tuple(m.shape) for m in maps])
        size = tuple(maps[0].shape[1:3])
        projected = [F.interpolate(mlp(m), size=size, mode="bilinear", align_corners=False)
                     for mlp, m in zip(self.linear_c, maps)]
        x = self.linear_fuse(F.concat(projected[::-1], axis=-1))
        x = self.dropout(self.activation(self.batch_norm(x)))
        return self.classifier(x)


@register_layer
class SegformerForSemanticSegmentation(_ConfiguredBlock):
    """SegFormer (module docstring): ``segformer`` (:class:`SegformerModel`) and
    ``decode_head`` (:class:`SegformerDecodeHead`). ``model(images)`` gives the logits
    (N, H / 4, W / 4, num_labels) of NHWC images; :meth:`compute_loss` the loss and the logits."""

    default_name = "segformer_for_semantic_segmentation"

    def __init__(self, config: SegformerConfig | dict | None = None, name: str | None = None):
        super().__init__(config, name=name)
        self.segformer = SegformerModel(self.config, name="segformer")
        self.decode_head = SegformerDecodeHead(self.config, name="decode_head")

    def trace(self, shape, step):
        return step(self.decode_head, step(self.segformer, shape))

    def forward(self, x) -> Tensor:
        return self.decode_head(*self.segformer(x))

    def loss(self, logits, labels) -> Tensor:
        """:func:`segformer_loss` with this model's ignore index."""
        return segformer_loss(logits, labels, self.config.semantic_loss_ignore_index)

    def compute_loss(self, images, labels) -> tuple[Tensor, Tensor]:
        """(loss, logits) for ``images`` and their (N, H, W) integer ``labels`` (Hugging
        Face's ``model(pixel_values, labels=labels)``)."""
        logits = self(images)
        return self.loss(logits, labels), logits


def segformer_loss(logits, labels, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Hugging Face's SegFormer loss: the (N, h, w, K) ``logits`` resized to the (N, H, W)
    ``labels``' size (bilinear, align_corners=False), then for K > 1 the mean cross-entropy
    over the pixels whose label is not ``ignore_index``; for K = 1 the binary cross-entropy
    with logits, zero on pixels labelled ``ignore_index`` or negative, averaged over all pixels."""
    logits = logits if isinstance(logits, Tensor) else Tensor(logits)
    targets = np.asarray(labels.numpy() if isinstance(labels, Tensor) else labels)
    if logits.ndim != 4 or targets.ndim != 3 or targets.shape[0] != logits.shape[0]:
        raise ShapeError(f"segformer_loss: expected (N, h, w, K) logits and (N, H, W) labels, got shapes "
                         f"{tuple(logits.shape)} and {targets.shape}")
    if targets.dtype.kind not in "iu":
        raise ShapeError(f"segformer_loss: labels must be integers, got {targets.dtype}")
    if tuple(logits.shape[1:3]) != targets.shape[1:]:
        logits = F.interpolate(logits, size=targets.shape[1:], mode="bilinear", align_corners=False)
    if logits.shape[-1] > 1:
        return F.categorical_cross_entropy(logits, targets.astype(np.int64), from_logits=True,
                                           ignore_index=ignore_index)
    valid = ((targets >= 0) & (targets != ignore_index)).reshape(-1, 1).astype(logits.dtype)
    targets = targets.reshape(-1, 1).astype(logits.dtype) * valid
    # one row per pixel: 'none' then gives each pixel's loss
    losses = F.binary_cross_entropy(F.reshape(logits, -1, 1), targets, from_logits=True, reduction="none")
    return F.mean(F.mul(F.reshape(losses, -1, 1), valid))


def segformer(variant: str = "b0", num_labels: int = 150, input_shape: tuple[int, int, int] = (512, 512, 3),
              name: str | None = None, **config) -> SegformerForSemanticSegmentation:
    """SegFormer-``variant`` ('b0'..'b5', module docstring) for ``num_labels`` classes, unbuilt.
    Other :class:`SegformerConfig` fields (``drop_path_rate``, ``hidden_sizes``, ...) may be
    given to change the variant's."""
    if variant not in SEGFORMER_VARIANTS:
        raise ValueError(f"segformer: unknown variant {variant!r}; expected one of {sorted(SEGFORMER_VARIANTS)}")
    known = {f.name for f in fields(SegformerConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise TypeError(f"segformer: unknown options {unknown}; SegformerConfig has {sorted(known)}")
    settings = replace(SegformerConfig(), **{**SEGFORMER_VARIANTS[variant], "num_labels": num_labels, **config})
    input_shape = check_input(input_shape, f"segformer_{variant}")
    model = SegformerForSemanticSegmentation(settings, name=name or f"segformer_{variant}")
    return finish(model, input_shape)


def _torch_conv(key: str) -> HFWeight:
    """A PyTorch conv weight (K, c_in, f, f) as lamina's (K, f, f, c_in)."""
    return HFWeight((key,), lambda w: np.transpose(w, (0, 2, 3, 1)))


def hf_segformer_table(model: SegformerForSemanticSegmentation) -> dict[str, HFWeight]:
    """lamina key -> Hugging Face key and conversion; the names are the same, Dense weights
    are transposed and conv weights moved from NCHW to lamina's (K, f, f, c_in)."""
    kinds = {}
    for prefix, module in model.named_modules():
        if isinstance(module, (nn.Dense, nn.Conv2D)):
            kinds[f"{prefix}.weight"] = linear if isinstance(module, nn.Dense) else _torch_conv
    return {key: kinds.get(key, copied)(key) for key in model.state_dict()}


def load_hf_segformer_state_dict(model: SegformerForSemanticSegmentation, state_dict, strict: bool = True) -> None:
    """Load a Hugging Face ``SegformerForSemanticSegmentation`` state dict (a mapping of arrays
    or torch tensors, or safetensors files, see :func:`lamina.models.hf_weights.read_state_dict`)
    into ``model``. BatchNorm's ``num_batches_tracked`` is ignored. An unbuilt model is built
    first for its ``input_shape``. ``strict``: every key must be used and present."""
    who = "load_hf_segformer_state_dict"
    if not isinstance(model, SegformerForSemanticSegmentation):
        raise TypeError(f"{who}: expected a SegformerForSemanticSegmentation, got {type(model).__name__}")
    arrays = read_state_dict(state_dict, who)
    if not model.built:
        model.build(getattr(model, "input_shape", None) or (None, 64, 64, 3))
    load_hf_state_dict(model, arrays, hf_segformer_table(model), lambda key: key.endswith("num_batches_tracked"),
                       strict, who)
