"""The Swin Transformer (Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer
using Shifted Windows") in torchvision's layout and names.

A vision transformer that keeps a pyramid of feature maps, as a CNN does, and attends only
inside non-overlapping M x M windows, so that its cost grows linearly with the image area.
In NHWC the maps are already token grids (the channels last), so no permutes are needed.

Window attention on an (H, W, C) map with h heads of d = C / h features:

    pad the map (bottom, right, zeros) to multiples of M; in a shifted block, roll it by
    (-s, -s) (s = M / 2) so that the new windows straddle the old ones' borders
    cut it into windows of N = M^2 tokens; Q, K, V = x W_qkv + b_qkv ('qkv')
    A = softmax(Q K^T / sqrt(d) + B + mask) V  per head, B[i, j] = T[index(i, j)]
    out = A W_proj + b_proj ('proj'), windows put back, the roll undone, the padding cropped

B is the relative position bias: a learned table T of (2M - 1)^2 rows (one per relative
offset (dy, dx) of two tokens of a window), one column per head
(``relative_position_bias_table``), read through the fixed index of every token pair
(buffer ``relative_position_index``: (dy + M - 1)(2M - 1) + dx + M - 1). The mask stops
tokens that the roll brought together from distant parts of the map from attending to each
other: -100 is added to the scores of pairs from different regions. On an axis the padded
map spans in one window the shift is skipped, as torchvision does.

The block (``SwinTransformerBlock``), pre-norm with stochastic depth on both branches:

    x = x + drop_path(attn(norm1(x)));   x = x + drop_path(mlp(norm2(x)))

with ``mlp`` = Dense 4C ('0') - GELU - Dense C ('3'). Patch merging halves the map: the four
pixels of every 2x2 cell concatenated (4C channels, in the order (0, 0), (1, 0), (0, 1),
(1, 1) as (row, column)), LayerNorm ('norm') and a Dense 2C without bias ('reduction').

The network: features.0 the 4x4/4 patch embedding (conv '0', LayerNorm '2'); stages of
blocks (features.1, 3, 5, 7) with C, 2C, 4C, 8C channels, consecutive blocks alternating
unshifted and shifted windows, joined by patch merging (features.2, 4, 6); LayerNorm
('norm'), global average pooling, ``head``. LayerNorms use eps 1e-5; block l of the L blocks
drops its branches with probability p l / (L - 1). Configurations (C, blocks per stage,
heads per stage, p; window 7) and parameters with 1000 classes: T 96, (2, 2, 6, 2), (3, 6,
12, 24), 0.2: 28,288,354; S 96, (2, 2, 18, 2), (3, 6, 12, 24), 0.3: 49,606,258; B 128,
(2, 2, 18, 2), (4, 8, 16, 32), 0.5: 87,768,224.

Swin Transformer V2 (Liu et al. 2022, "Swin Transformer V2: Scaling Up Capacity and
Resolution") keeps the network and changes three things so that large models train stably
and windows can grow after training:

* scaled cosine attention (``ShiftedWindowAttentionV2``): the scores are cosines of each
  query and key, multiplied by a learned temperature per head, whatever the features' size:

      scores = cos(q_i, k_j) exp(min(tau_h, log 100)) + B[i, j]     (tau: ``logit_scale``, log 10 at first)

  and the key has no bias (the middle third of the ``qkv`` bias is not used);
* a continuous relative position bias: B comes from a 2-layer MLP (``cpb_mlp``: Dense 512 -
  ReLU - Dense heads, no bias) applied to every offset (dy, dx) of the window, each scaled to
  c = 8 d / (M - 1) and log-spaced as sign(c) log2(1 + |c|) / 3 (buffer
  ``relative_coords_table``), then bounded: B = 16 sigmoid(MLP(offset)), gathered by the same
  index as v1's table;
* post-norm residual blocks (``SwinTransformerBlockV2``), and patch merging with the
  LayerNorm after the reduction (``PatchMergingV2``, 2C features):

      x = x + drop_path(norm1(attn(x)));   x = x + drop_path(norm2(mlp(x)))

torchvision's V2 models use windows of 8 at 256x256; parameters with 1000 classes: V2-T
28,351,570; V2-S 49,737,442; V2-B 87,930,848 (the v1 configurations otherwise).

The v1 blocks are in :mod:`lamina.models.swin_blocks` and the V2 blocks in
:mod:`lamina.models.swin_v2_blocks`; this module builds the networks and re-exports both.
"""

from __future__ import annotations

from collections.abc import Sequence

from lamina import nn
from lamina.models.blocks import check_input, classifier_layers, finish
from lamina.models.swin_blocks import (  # noqa: F401  (moved there, importable from here too)
    LAYER_NORM_EPS,
    MASKED_SCORE,
    WEIGHT_STD,
    PatchMerging,
    ShiftedWindowAttention,
    SwinTransformerBlock,
    _dense,
    _padded,
    relative_position_index,
    shifted_window_mask,
)
from lamina.models.swin_v2_blocks import (  # noqa: F401  (moved there, importable from here too)
    CPB_BIAS_RANGE,
    CPB_HIDDEN,
    INITIAL_LOGIT_SCALE,
    MAX_LOGIT_SCALE,
    PatchMergingV2,
    ShiftedWindowAttentionV2,
    SwinTransformerBlockV2,
    log_spaced_coordinates,
)
from lamina.nn.layer import pair, positive_int

__all__ = ["SWIN_CONFIGS", "PatchMerging", "PatchMergingV2", "ShiftedWindowAttention", "ShiftedWindowAttentionV2",
           "SwinTransformerBlock", "SwinTransformerBlockV2", "swin", "swin_b", "swin_s", "swin_t", "swin_v2",
           "swin_v2_b", "swin_v2_s", "swin_v2_t"]

# variant -> (embedding width C, blocks per stage, heads per stage, stochastic-depth probability)
SWIN_CONFIGS: dict[str, tuple[int, tuple[int, ...], tuple[int, ...], float]] = {
    "t": (96, (2, 2, 6, 2), (3, 6, 12, 24), 0.2),
    "s": (96, (2, 2, 18, 2), (3, 6, 12, 24), 0.3),
    "b": (128, (2, 2, 18, 2), (4, 8, 16, 32), 0.5),
}


def _check_config(depths, num_heads) -> tuple[tuple[int, ...], tuple[int, ...]]:
    blocks = tuple(depths) if isinstance(depths, (tuple, list)) else ()
    heads = tuple(num_heads) if isinstance(num_heads, (tuple, list)) else ()
    if (not blocks or len(blocks) != len(heads)
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in blocks + heads)):
        raise ValueError(f"swin: depths and num_heads must be equally long sequences of positive ints, "
                         f"got {depths!r} and {num_heads!r}")
    return blocks, heads


def _swin_network(name: str, embed_dim: int, depths, num_heads, window_size, patch_size, mlp_ratio: float,
                  dropout: float, attention_dropout: float, stochastic_depth_prob: float, num_classes: int,
                  input_shape, classifier_activation: str | None, block: type[SwinTransformerBlock],
                  merging: type[PatchMerging]) -> nn.Sequential:
    """The network both versions share (see the module docstring), with their ``block`` and
    ``merging`` layers."""
    blocks, heads = _check_config(depths, num_heads)
    positive_int(embed_dim, f"{name}: embed_dim")
    if any(embed_dim * 2 ** i % h for i, h in enumerate(heads)):
        raise ValueError(f"{name}: the stage widths {[embed_dim * 2 ** i for i in range(len(heads))]} must be "
                         f"divisible by num_heads {heads}")
    window = pair(window_size, f"{name}: window_size")
    patch = pair(patch_size, f"{name}: patch_size")
    if min(window + patch) < 1:
        raise ValueError(f"{name}: window_size and patch_size must be positive, got {window_size!r}, {patch_size!r}")
    if not 0 <= stochastic_depth_prob < 1:
        raise ValueError(f"{name}: stochastic_depth_prob must be in [0, 1), got {stochastic_depth_prob!r}")
    input_shape = check_input(input_shape, name)
    features: list = [nn.Sequential(nn.Conv2D(embed_dim, patch, stride=patch, name="0"),
                                    nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="2"))]
    total, index = sum(blocks), 0
    for stage, (count, stage_heads) in enumerate(zip(blocks, heads)):
        dim, stage_blocks = embed_dim * 2 ** stage, []
        for i in range(count):
            shift = (0, 0) if i % 2 == 0 else (window[0] // 2, window[1] // 2)
            p = stochastic_depth_prob * index / max(total - 1, 1)
            stage_blocks.append(block(dim, stage_heads, window, shift, mlp_ratio, dropout, attention_dropout, p,
                                      name=str(i)))
            index += 1
        features.append(nn.Sequential(*stage_blocks))
        if stage + 1 < len(blocks):
            features.append(merging(dim))
    for i, layer in enumerate(features):
        layer.name = str(i)
    model = nn.Sequential(
        nn.Sequential(*features, name="features"),
        nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm"),
        nn.GlobalAvgPool2D(name="avgpool"),
        _dense(num_classes, "head"),
        *classifier_layers(classifier_activation),
        name=name,
    )
    return finish(model, input_shape)


def swin(embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
         window_size=7, patch_size=4, mlp_ratio: float = 4.0, dropout: float = 0.0,
         attention_dropout: float = 0.0, stochastic_depth_prob: float = 0.2, num_classes: int = 1000,
         input_shape: tuple[int, int, int] = (224, 224, 3), classifier_activation: str | None = None,
         name: str = "swin") -> nn.Sequential:
    """A Swin Transformer (unbuilt) in torchvision's layout: stage i has ``depths[i]`` blocks of
    ``embed_dim`` 2^i channels and ``num_heads[i]`` heads, windows of ``window_size`` (see
    the module docstring). Outputs logits unless ``classifier_activation``."""
    return _swin_network(name, embed_dim, depths, num_heads, window_size, patch_size, mlp_ratio, dropout,
                         attention_dropout, stochastic_depth_prob, num_classes, input_shape, classifier_activation,
                         SwinTransformerBlock, PatchMerging)


def swin_v2(embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
            window_size=8, patch_size=4, mlp_ratio: float = 4.0, dropout: float = 0.0,
            attention_dropout: float = 0.0, stochastic_depth_prob: float = 0.2, num_classes: int = 1000,
            input_shape: tuple[int, int, int] = (256, 256, 3), classifier_activation: str | None = None,
            name: str = "swin_v2") -> nn.Sequential:
    """A Swin Transformer V2 (unbuilt) in torchvision's layout: :func:`swin` with
    :class:`SwinTransformerBlockV2` and :class:`PatchMergingV2` (see the module docstring);
    windows of at least 2."""
    return _swin_network(name, embed_dim, depths, num_heads, window_size, patch_size, mlp_ratio, dropout,
                         attention_dropout, stochastic_depth_prob, num_classes, input_shape, classifier_activation,
                         SwinTransformerBlockV2, PatchMergingV2)


def _variant(variant: str, num_classes: int, input_shape, stochastic_depth_prob: float | None,
             classifier_activation: str | None, version: int = 1) -> nn.Sequential:
    embed_dim, depths, heads, p = SWIN_CONFIGS[variant]
    builder, window, name = (swin, 7, f"swin_{variant}") if version == 1 else (swin_v2, 8, f"swin_v2_{variant}")
    return builder(embed_dim, depths, heads, window, 4, stochastic_depth_prob=p if stochastic_depth_prob is None
                   else stochastic_depth_prob, num_classes=num_classes, input_shape=input_shape,
                   classifier_activation=classifier_activation, name=name)


def swin_t(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
           stochastic_depth_prob: float | None = None, classifier_activation: str | None = None) -> nn.Sequential:
    """Swin-T: C 96, blocks (2, 2, 6, 2), heads (3, 6, 12, 24), window 7, p = 0.2; 28,288,354
    parameters with 1000 classes (about 4.49 G multiply-adds at 224x224)."""
    return _variant("t", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def swin_s(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
           stochastic_depth_prob: float | None = None, classifier_activation: str | None = None) -> nn.Sequential:
    """Swin-S: C 96, blocks (2, 2, 18, 2), heads (3, 6, 12, 24), window 7, p = 0.3; 49,606,258
    parameters (about 8.74 G multiply-adds)."""
    return _variant("s", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def swin_b(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
           stochastic_depth_prob: float | None = None, classifier_activation: str | None = None) -> nn.Sequential:
    """Swin-B: C 128, blocks (2, 2, 18, 2), heads (4, 8, 16, 32), window 7, p = 0.5;
    87,768,224 parameters (about 15.43 G multiply-adds)."""
    return _variant("b", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def swin_v2_t(num_classes: int = 1000, input_shape: tuple[int, int, int] = (256, 256, 3),
              stochastic_depth_prob: float | None = None, classifier_activation: str | None = None) -> nn.Sequential:
    """Swin-V2-T: C 96, blocks (2, 2, 6, 2), heads (3, 6, 12, 24), window 8, p = 0.2;
    28,351,570 parameters with 1000 classes (about 5.94 G multiply-adds at 256x256)."""
    return _variant("t", num_classes, input_shape, stochastic_depth_prob, classifier_activation, version=2)


def swin_v2_s(num_classes: int = 1000, input_shape: tuple[int, int, int] = (256, 256, 3),
              stochastic_depth_prob: float | None = None, classifier_activation: str | None = None) -> nn.Sequential:
    """Swin-V2-S: C 96, blocks (2, 2, 18, 2), heads (3, 6, 12, 24), window 8, p = 0.3;
    49,737,442 parameters (about 11.55 G multiply-adds at 256x256)."""
    return _variant("s", num_classes, input_shape, stochastic_depth_prob, classifier_activation, version=2)


def swin_v2_b(num_classes: int = 1000, input_shape: tuple[int, int, int] = (256, 256, 3),
              stochastic_depth_prob: float | None = None, classifier_activation: str | None = None) -> nn.Sequential:
    """Swin-V2-B: C 128, blocks (2, 2, 18, 2), heads (4, 8, 16, 32), window 8, p = 0.5;
    87,930,848 parameters (about 20.32 G multiply-adds at 256x256)."""
    return _variant("b", num_classes, input_shape, stochastic_depth_prob, classifier_activation, version=2)
