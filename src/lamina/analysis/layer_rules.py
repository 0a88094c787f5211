"""Per-layer rules of the layer table: the multiply-accumulates of one call and the
hyperparameter column ('K=6 f=5 s=1 p=0', 'n=120', 'f=2 s=2').

MACs, which the course notes call "flops" (one multiply-accumulate = one flop), per sample:

    convolution      h_out w_out K f_h f_w c_in / groups   (weights (K, f_h, f_w, c_in / groups))
    depthwise conv   h_out w_out (c_in m) f_h f_w          (the same with groups = c_in)
    separable conv   the depthwise part + h_out w_out K (c_in m) for the 1x1 pointwise part
    pooling          h_out w_out c f_h f_w                 (global average pooling: f = h, w)
    3-D convolution  d_out h_out w_out K f_d f_h f_w c_in / groups
    3-D pooling      d_out h_out w_out c f_d f_h f_w       (global average pooling: d h w c)
    fully connected  n^[l] n^[l-1]
    upsampling       bilinear: h_out w_out c t_h t_w, t = 2 along an axis of factor s > 1, else 1
                     (each output the weighted sum of its 4 neighbours: 4 per output value);
                     Upsample: the same with t = 2 (bilinear) or 4 (bicubic) along each resized
                     axis, h w c for 'area' (every input added once);
                     nearest, zero padding, cropping: 0 (copies)

    recurrent        T G H (D + H) for T steps of G gate blocks (simple 1, GRU 3, LSTM 4)
    embedding        0 (a lookup); attention layers report their own count: multi-head
                     E^2 (2 T_q + 2 T_k) for the projections + 2 T_q T_k E for the scores
                     and the context

The bias additions are not counted, and every other layer (batch norm, activations,
additions, concatenations, local response normalization, dropout, reshaping) counts 0: their
cost is a few operations per activation, negligible next to the convolutions, and the
course's tables and the published totals leave them out. A custom layer can report its own
count with a ``macs(input_shapes, output_shapes)`` method (shapes without the batch axis);
the volumetric layers (Conv3D, MaxPool3D, AvgPool3D, GlobalAvgPool3D) count theirs so, by
the 3-D rules above, and only there.

Hyperparameters of the volumetric layers: the kernel or window always as f_d x f_h x f_w
('K=8 f=3x3x3 s=1 p=same', 'f=2x2x2 s=2'), so that it reads as 3-D; stride, padding and
dilation as one number when they are equal along the three axes.
"""

from __future__ import annotations

import math

from lamina.functional.adaptive_pool import adaptive_windows
from lamina.nn.conv import SeparableConv2D, _Conv
from lamina.nn.conv1d import Conv1D, _Pool1D
from lamina.nn.conv3d import Conv3D, GlobalAvgPool3D, _Pool3D
from lamina.nn.conv_transpose import Conv2DTranspose
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.embedding import Embedding
from lamina.nn.merge import Concatenate
from lamina.nn.module import Module
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.nn.normalization import LocalResponseNorm
from lamina.nn.pooling import GlobalAvgPool2D, _Pool2D
from lamina.nn.recurrent import _Recurrent
from lamina.nn.resize import Cropping2D, UpSampling2D, ZeroPadding2D
from lamina.nn.upsample import Upsample

__all__ = ["adaptive_windows", "layer_hyperparameters", "layer_macs"]


def layer_macs(module: Module, input_shapes: list[tuple[int, ...]], output_shapes: list[tuple[int, ...]]) -> int:
    """Multiply-accumulates of one call on one sample (shapes without the batch axis)."""
    own = getattr(module, "macs", None)
    if callable(own):
        return int(own(input_shapes, output_shapes))
    if not input_shapes or not output_shapes:
        return 0
    x, y = input_shapes[0], output_shapes[0]
    if isinstance(module, _Conv) and len(y) == 3:
        h_out, w_out, k = y
        fh, fw = module.kernel_size
        c_in = x[-1]
        groups = module._groups_for(c_in)
        return h_out * w_out * k * fh * fw * (c_in // groups)
    if isinstance(module, SeparableConv2D) and len(y) == 3:
        h_out, w_out, k = y
        fh, fw = module.kernel_size
        mid = x[-1] * module.depth_multiplier
        return h_out * w_out * mid * fh * fw + h_out * w_out * k * mid
    if isinstance(module, Conv2DTranspose) and len(x) == 3:
        h, w, c_in = x                       # each input value meets f_h f_w K / groups weights
        fh, fw = module.kernel_size
        return h * w * c_in * fh * fw * (module.filters // module.groups)
    if isinstance(module, _Pool2D) and len(y) == 3:
        h_out, w_out, c = y
        fh, fw = module.pool_size
        return h_out * w_out * c * fh * fw
    if isinstance(module, GlobalAvgPool2D) and len(x) == 3:
        h, w, c = x
        return c * h * w  # one (h, w) window per channel
    if isinstance(module, UpSampling2D) and len(y) == 3:
        taps = math.prod(2 if s > 1 else 1 for s in module.size)
        return math.prod(y) * taps if module.interpolation == "bilinear" and taps > 1 else 0
    if isinstance(module, Upsample) and len(y) == 3:
        if module.mode in ("bilinear", "bicubic"):
            per_axis = 2 if module.mode == "bilinear" else 4
            return math.prod(y) * math.prod(per_axis if n_out != n_in else 1 for n_out, n_in in zip(y[:2], x[:2]))
        return math.prod(x) if module.mode == "area" else 0
    if isinstance(module, Dense):
        return math.prod(y) * x[-1]  # n^[l] n^[l-1] (per position if there are leading axes)
    if _is_adaptive_pool(module, x, y):
        return _adaptive_pool_macs(x, y)
    return 0


def _is_adaptive_pool(module: Module, x: tuple, y: tuple) -> bool:
    """An adaptive average pool (the zoo's ``AdaptiveAvgPool2D``), recognised by its
    ``output_size`` so that this module does not depend on :mod:`lamina.models`."""
    return hasattr(module, "output_size") and not module._parameters and len(x) == 3 and len(y) == 3


def _adaptive_pool_macs(x: tuple, y: tuple) -> int:
    """The sum of the window areas times the channels; 0 when the map already has the size."""
    if tuple(x[:2]) == tuple(y[:2]):
        return 0
    rows = sum(b - a for a, b in adaptive_windows(x[0], y[0]))
    cols = sum(b - a for a, b in adaptive_windows(x[1], y[1]))
    return rows * cols * y[2]


def _size(pair_or_int) -> str:
    a, b = pair_or_int if isinstance(pair_or_int, tuple) else (pair_or_int, pair_or_int)
    return f"{a}" if a == b else f"{a}x{b}"


def _padding(padding) -> str:
    if isinstance(padding, str):
        return "0" if padding == "valid" else padding
    return _size(tuple(padding))


def _dims(values: tuple[int, ...]) -> str:
    """(3, 3, 3) -> '3x3x3'."""
    return "x".join(str(v) for v in values)


def _uniform(values: tuple[int, ...]) -> str:
    """One number when all axes agree ((2, 2, 2) -> '2'), else each ('1x2x2')."""
    return f"{values[0]}" if len(set(values)) == 1 else _dims(values)


def _volume_hyperparameters(module: Module, input_shapes) -> list[str]:
    """Conv3D: K, f, s, p (d, g when not 1); the 3-D pools: f, s (p when not 0); global
    average pooling: its window, the whole d x h x w volume."""
    if isinstance(module, Conv3D):
        padding = module.padding if isinstance(module.padding, str) else _uniform(module.padding)
        parts = [f"K={module.filters}", f"f={_dims(module.kernel_size)}", f"s={_uniform(module.stride)}",
                 f"p={'0' if padding == 'valid' else padding}"]
        if module.dilation != (1, 1, 1):
            parts.append(f"d={_uniform(module.dilation)}")
        if module.groups != 1:
            parts.append(f"g={module.groups}")
        return parts
    if isinstance(module, _Pool3D):
        parts = [f"f={_dims(module.pool_size)}", f"s={_uniform(module.stride)}"]
        if module.padding != (0, 0, 0):
            parts.append(f"p={_uniform(module.padding)}")
        return parts
    if input_shapes and len(input_shapes[0]) == 4:
        return [f"f={_dims(tuple(input_shapes[0][:3]))}"]
    return []


def _edges(pairs) -> str:
    """((1, 1), (2, 2)) -> '1x2'; asymmetric ((top, bottom), (left, right)) -> '(1,2)x(0,1)'."""
    (top, bottom), (left, right) = pairs
    if top == bottom and left == right:
        return _size((top, left))
    return f"({top},{bottom})x({left},{right})"


def layer_hyperparameters(module: Module, input_shapes: list[tuple[int, ...]] | None = None) -> str:
    """The course tables' hyperparameter column: 'K=6 f=5 s=1 p=0', 'n=120', 'f=2 s=2'."""
    parts: list[str] = []
    if isinstance(module, _Conv):
        if hasattr(module, "filters"):
            parts.append(f"K={module.filters}")
        parts += [f"f={_size(module.kernel_size)}", f"s={_size(module.stride)}", f"p={_padding(module.padding)}"]
        if module.dilation != (1, 1):
            parts.append(f"d={_size(module.dilation)}")
        groups = getattr(module, "groups", 1)
        if groups != 1:
            parts.append(f"g={groups}")
        multiplier = getattr(module, "depth_multiplier", 1)
        if multiplier != 1:
            parts.append(f"m={multiplier}")
    elif isinstance(module, (SeparableConv2D, Conv2DTranspose)):
        parts += [f"K={module.filters}", f"f={_size(module.kernel_size)}", f"s={_size(module.stride)}",
                  f"p={_padding(module.padding)}"]
        if module.dilation != (1, 1):
            parts.append(f"d={_size(module.dilation)}")
        if getattr(module, "depth_multiplier", 1) != 1:
            parts.append(f"m={module.depth_multiplier}")
        if getattr(module, "output_padding", (0, 0)) != (0, 0):
            parts.append(f"op={_size(module.output_padding)}")
        if getattr(module, "groups", 1) != 1:
            parts.append(f"g={module.groups}")
    elif isinstance(module, Conv1D):
        parts += [f"K={module.filters}", f"f={module.kernel_size}", f"s={module.stride}", f"p={module.padding}"]
        if module.dilation != 1:
            parts.append(f"d={module.dilation}")
        if module.groups != 1:
            parts.append(f"g={module.groups}")
    elif isinstance(module, _Pool1D):
        parts += [f"f={module.pool_size}", f"s={module.stride}"]
    elif isinstance(module, _Pool2D):
        parts += [f"f={_size(module.pool_size)}", f"s={_size(module.stride)}"]
        if module.padding != (0, 0):
            parts.append(f"p={_size(module.padding)}")
        if module.ceil_mode:
            parts.append("ceil")
    elif isinstance(module, (Conv3D, _Pool3D, GlobalAvgPool3D)):
        parts += _volume_hyperparameters(module, input_shapes)
    elif isinstance(module, GlobalAvgPool2D):
        if input_shapes and len(input_shapes[0]) == 3:
            parts.append(f"f={_size(tuple(input_shapes[0][:2]))}")
    elif hasattr(module, "output_size") and not module._parameters:
        parts.append(f"out={_size(tuple(module.output_size))}")
    elif isinstance(module, UpSampling2D):
        parts += [f"size={_size(module.size)}", module.interpolation]
    elif isinstance(module, ZeroPadding2D):
        parts.append(f"p={_edges(module.padding)}")
    elif isinstance(module, Cropping2D):
        parts.append(f"crop={_edges(module.cropping)}")
    elif isinstance(module, Dense):
        parts.append(f"n={module.units}")
    elif isinstance(module, Embedding):
        parts.append(f"W={module.input_dim} A={module.output_dim}")
    elif isinstance(module, MultiHeadAttention):
        parts.append(f"E={module.embed_dim} h={module.num_heads}")
    elif isinstance(module, _Recurrent):
        parts.append(f"H={module.units}")
        parts += [flag for flag in ("return_sequences", "go_backwards") if getattr(module, flag)]
    elif isinstance(module, Dropout):
        parts.append(f"rate={module.rate:g}")
    elif isinstance(module, LocalResponseNorm):
        parts.append(f"size={module.size}")
    elif isinstance(module, Concatenate):
        parts.append(f"axis={module.axis}")
    spec = getattr(module, "activation_spec", None)
    if isinstance(spec, str) and spec != "linear":
        parts.append(spec)
    return " ".join(parts)
