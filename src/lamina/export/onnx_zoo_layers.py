"""ONNX forms of the PyTorch-parity layers and of the newer zoo's blocks.

Layers (evaluation mode):

    RMSNorm           y = x / sqrt(mean(x^2) + eps) * w over the trailing axes: Mul, ReduceMean,
                      Add, Sqrt, Div (RMSNormalization is opset 23)
    GLU               y = a sigma(b), [a, b] the halves of the axis: two Slices, Sigmoid, Mul
    LogSoftmax        LogSoftmax on the layer's axis
    Softmax2D         Softmax over the channels of each pixel, in the value's own layout
    RReLU             the mean slope (lower + upper) / 2: LeakyRelu
    ChannelShuffle    out[..., j g + i] = x[..., i n + j]: one Gather of the channels
    StochasticDepth   the identity
    Unflatten         Reshape (the axes before the split copied, so a free time axis stays free)
    padding           Pad in mode constant (with the value), reflect or edge; circular wraps
                      each axis by Slice + Concat (Pad's 'wrap' is opset 19): [x[n - b:], x, x[:a]]
    Conv1D/3DTranspose  ConvTranspose on (N, C, L) / NCDHW with the weight (c_in, K / g, f...),
                      pads p on both sides, output_padding e, dilations and groups
    LPPool1D/2D/3D    (k mean(x^p))^(1/p) per window: Pow, AveragePool (ceil_mode as the layer,
                      the overhang left out of the divisor as lamina's and PyTorch's), Mul, Pow;
                      ONNX's LpPool takes |x| and has ceil_mode only from opset 18
    AdaptiveAvg/MaxPool3D  PyTorch's windows start_i = floor(i n / o), end_i = ceil((i + 1) n / o)
                      per axis: the maximum gathers the windows end to end along each axis,
                      each padded to the longest K by repeating its last index, then MaxPool
                      with kernel and stride K; the mean is AveragePool where each o divides
                      its n, else a MatMul by the (o, n) matrix of window means per axis
    LoRADense         a Dense with the merged weight W + (alpha / r) A B (merged or not)

Blocks: SqueezeExcitation (s = sigma(fc2(delta(fc1(mean x)))), out = s x), MobileNetV3Block,
MBConv, EfficientNetV2's FusedMBConv and MnasNetBlock (the branch, plus the input where the
shortcut applies), ConvNeXtBlock
(x + gamma block(x)), Fire (squeeze, then the two expands joined along the channels),
ShuffleNetV2Unit (the halves, or both branches, joined and shuffled), RegNetBlock
(ReLU(shortcut + f(x))), and the segmentation models: ASPP, its image pooling (broadcast back
by Expand: the bilinear resize of one pixel is that pixel), the FCN and DeepLabv3 heads
(Sequentials) and the final bilinear resize to the input (Resize, linear, half_pixel); LR-ASPP
(the gated high map resized to the low map's size, the two classifiers' sum resized to the input).

MixtureOfExperts and the Swin Transformer's blocks have their converters in
:mod:`lamina.export.onnx_experts` and :mod:`lamina.export.onnx_swin`.
"""

from __future__ import annotations

import numpy as np

from lamina import nn
from lamina.errors import ShapeError
from lamina.export import onnx_layers, onnx_spatial_layers  # noqa: F401  (the converters the blocks use)
from lamina.export.onnx_activations import ACTIVATIONS, layer_activation
from lamina.export.onnx_branching import add_values, concat_values, onnx_axis
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter
from lamina.functional.adaptive_pool import adaptive_windows
from lamina.models.convnext import ConvNeXtBlock
from lamina.models.efficientnet import FusedMBConv, MBConv
from lamina.models.lraspp import LRASPP
from lamina.models.mnasnet import MnasNetBlock
from lamina.models.mobilenet_v3 import MobileNetV3Block
from lamina.models.regnet import RegNetBlock
from lamina.models.segmentation import ASPP, ImagePooling, SegmentationModel
from lamina.models.shufflenet import ShuffleNetV2Unit
from lamina.models.squeeze_excitation import SqueezeExcitation
from lamina.models.squeezenet import Fire
from lamina.nn.conv_transpose_nd import Conv1DTranspose, Conv3DTranspose
from lamina.nn.lora import LoRADense
from lamina.nn.lp_pool import LPPool1D, LPPool2D, LPPool3D
from lamina.nn.padding import _PadND

__all__ = ["rms_norm"]

_CHANNELS_FIRST = {3: [0, 2, 1], 5: [0, 4, 1, 2, 3]}     # (N, L, C) -> (N, C, L); NDHWC -> NCDHW
_CHANNELS_LAST = {3: [0, 2, 1], 5: [0, 2, 3, 4, 1]}
_BIG = np.iinfo(np.int64).max                            # a Slice's "to the end"


def _ints(graph: Graph, values, hint: str) -> str:
    return graph.constant(list(values), hint, np.int64)


def _channels_first(graph: Graph, value: Value, hint: str) -> str:
    return graph.node("Transpose", [value.name], f"{hint}_channels_first", perm=_CHANNELS_FIRST[len(value.shape)])


def _channels_last(graph: Graph, name: str, shape: tuple, hint: str) -> Value:
    return Value(graph.node("Transpose", [name], hint, perm=_CHANNELS_LAST[len(shape)]), tuple(shape))


def _check_rank(layer, value: Value, rank: int) -> None:
    if len(value.shape) != rank:
        raise ShapeError(f"export_onnx: {layer._label()} expects a {rank}-D input, got a value of shape {value.shape}")


def _reduce_mean(graph: Graph, x: str, axes: list[int], hint: str) -> str:
    """ReduceMean over ``axes`` keeping them: an attribute up to opset 17, an input from 18."""
    if graph.opset is not None and graph.opset >= 18:
        return graph.node("ReduceMean", [x, _ints(graph, axes, f"{hint}_axes")], hint, keepdims=1)
    return graph.node("ReduceMean", [x], hint, axes=axes, keepdims=1)


def _slice(graph: Graph, x: str, axis: int, start: int, end: int, hint: str) -> str:
    bounds = [_ints(graph, [v], f"{hint}_{what}") for what, v in (("starts", start), ("ends", end), ("axes", axis))]
    return graph.node("Slice", [x, *bounds], hint)


# -- normalization, activations ----------------------------------------------------------------
@register_converter(nn.RMSNorm)
def _rms_norm(graph: Graph, layer, value: Value) -> Value:
    return rms_norm(graph, layer, value, layer.weight.numpy() if layer.elementwise_affine else None)


def rms_norm(graph: Graph, layer, value: Value, weight) -> Value:
    """y = x / sqrt(mean(x^2) + eps) * ``weight`` (none when None), the mean over the layer's
    trailing axes."""
    value = graph.layout(value, "nhwc")
    hint = label(layer)
    rank = len(value.shape)
    eps = layer.eps if layer.eps is not None else float(np.finfo(graph.dtype).eps)
    square = graph.node("Mul", [value.name, value.name], f"{hint}_square")
    mean = _reduce_mean(graph, square, list(range(rank - layer.axes, rank)), f"{hint}_mean_square")
    root = graph.node("Sqrt", [graph.node("Add", [mean, graph.constant(eps, f"{hint}_eps")], f"{hint}_plus_eps")],
                      f"{hint}_rms")
    if weight is None:
        return graph.like(value, graph.node("Div", [value.name, root], hint))
    normalized = graph.node("Div", [value.name, root], f"{hint}_normalized")
    return graph.like(value, graph.node("Mul", [normalized, graph.constant(weight, f"{hint}_weight")], hint))


@register_converter(nn.GLU)
def _glu(graph: Graph, layer, value: Value) -> Value:
    """y = a sigma(b), a the first half and b the second half of the layer's axis."""
    shape = layer.compute_output_shape(value.shape)
    hint = label(layer)
    axis = onnx_axis(value, layer.axis)
    half = value.shape[layer.axis] // 2
    values = _slice(graph, value.name, axis, 0, half, f"{hint}_values")
    gates = graph.node("Sigmoid", [_slice(graph, value.name, axis, half, 2 * half, f"{hint}_gate_inputs")],
                       f"{hint}_gates")
    return graph.like(value, graph.node("Mul", [values, gates], hint), shape)


@register_converter(nn.LogSoftmax)
def _log_softmax(graph: Graph, layer, value: Value) -> Value:
    return ACTIVATIONS["log_softmax"](graph, value, label(layer), axis=layer.axis)


@register_converter(nn.Softmax2D)
def _softmax2d(graph: Graph, layer, value: Value) -> Value:
    """Softmax over the channels, axis 1 of an NCHW value, the last of an NHWC one."""
    return graph.like(value, graph.node("Softmax", [value.name], label(layer), axis=onnx_axis(value, -1)))


@register_converter(nn.RReLU)
def _rrelu(graph: Graph, layer, value: Value) -> Value:
    slope = (layer.lower + layer.upper) / 2
    return graph.like(value, graph.node("LeakyRelu", [value.name], label(layer), alpha=slope))


# -- shape, pass-through -------------------------------------------------------------------------
@register_converter(nn.StochasticDepth)
def _stochastic_depth(graph: Graph, layer, value: Value) -> Value:
    return value


@register_converter(nn.ChannelShuffle)
def _channel_shuffle(graph: Graph, layer, value: Value) -> Value:
    """out[..., j g + i] = x[..., i n + j] for C = g n: a Gather of the channels in that order."""
    shape = layer.compute_output_shape(value.shape)
    groups, channels = layer.groups, value.shape[-1]
    if groups == 1:
        return value
    per_group = channels // groups
    order = (np.arange(groups)[None, :] * per_group + np.arange(per_group)[:, None]).reshape(-1)
    hint = label(layer)
    out = graph.node("Gather", [value.name, _ints(graph, order, f"{hint}_order")], hint, axis=onnx_axis(value, -1))
    return graph.like(value, out, shape)


@register_converter(nn.Unflatten)
def _unflatten(graph: Graph, layer, value: Value) -> Value:
    value = graph.layout(value, "nhwc")
    shape = layer.compute_output_shape(value.shape)
    axis = layer.axis % len(value.shape)
    parts = len(shape) - len(value.shape) + 1
    target = [0] * axis + list(shape[axis:axis + parts]) + list(shape[axis + parts:])
    hint = label(layer)
    return Value(graph.node("Reshape", [value.name, _ints(graph, target, f"{hint}_shape")], hint), shape)


# -- padding ---------------------------------------------------------------------------------------
_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}


@register_converter(_PadND)
def _pad(graph: Graph, layer, value: Value) -> Value:
    """(N, n_1, ..., C) -> (N, b_1 + n_1 + a_1, ..., C): Pad, or Slice + Concat when circular."""
    shape = layer.compute_output_shape(value.shape)
    hint = label(layer)
    # lamina axis -> (before, after), in the order of the value's own axes
    amounts = [(0, 0), *layer.amounts, (0, 0)]
    if value.layout == "nchw":
        amounts = [amounts[i] for i in (0, 3, 1, 2)]
    if layer.mode == "circular":
        return graph.like(value, _wrap(graph, value.name, amounts, hint), shape)
    pads = [before for before, _ in amounts] + [after for _, after in amounts]
    inputs = [value.name, _ints(graph, pads, f"{hint}_pads")]
    if layer.mode == "constant":
        inputs.append(graph.scalar(layer._value(), f"{hint}_value", graph.dtype))
    out = graph.node("Pad", inputs, hint, mode=_PAD_MODES[layer.mode])
    return graph.like(value, out, shape)


def _wrap(graph: Graph, x: str, amounts: list[tuple[int, int]], hint: str) -> str:
    """Each axis wrapped around: [x[n - b:], x, x[:a]] (Slices that read the length at run time)."""
    for axis, (before, after) in enumerate(amounts):
        if not before and not after:
            continue
        parts = [x]
        if before:
            parts.insert(0, _slice(graph, x, axis, -before, _BIG, f"{hint}_end_{axis}"))
        if after:
            parts.append(_slice(graph, x, axis, 0, after, f"{hint}_start_{axis}"))
        x = graph.node("Concat", parts, f"{hint}_wrapped_{axis}", axis=axis)
    return graph.node("Identity", [x], hint)


# -- transposed convolution, pooling -----------------------------------------------------------------
@register_converter(Conv1DTranspose, Conv3DTranspose)
def _conv_transpose_nd(graph: Graph, layer, value: Value) -> Value:
    """y = ConvTranspose(x) with n_out = (n - 1) s - 2 p + q (f - 1) + e + 1 per axis."""
    _check_rank(layer, value, layer.spatial + 2)
    shape = layer.compute_output_shape(value.shape)
    hint = label(layer)
    weight = layer.weight.numpy()
    order = (0, weight.ndim - 1, *range(1, weight.ndim - 1))           # (c_in, K / g, f...)
    inputs = [_channels_first(graph, value, hint), graph.constant(weight.transpose(order), f"{hint}_weight")]
    if layer.use_bias:
        inputs.append(graph.constant(layer.bias.numpy(), f"{hint}_bias"))
    conv = graph.node("ConvTranspose", inputs, f"{hint}_conv", kernel_shape=list(layer.kernel_size),
                      strides=list(layer.stride), pads=[*layer.padding, *layer.padding],
                      output_padding=list(layer.output_padding), dilations=list(layer.dilation), group=layer.groups)
    return layer_activation(graph, layer, _channels_last(graph, conv, shape, hint))


@register_converter(LPPool1D, LPPool2D, LPPool3D)
def _lp_pool(graph: Graph, layer, value: Value) -> Value:
    """y = (k mean over the window of x^p)^(1/p), k the window's size."""
    _check_rank(layer, value, layer.spatial + 2)
    shape = layer.compute_output_shape(value.shape)
    hint = label(layer)
    p = layer.norm_type
    if layer.spatial == 2:
        value = graph.layout(value, "nchw")
        x = value.name
    else:
        x = _channels_first(graph, value, hint)
    powered = graph.node("Pow", [x, graph.scalar(p, f"{hint}_p", graph.dtype)], f"{hint}_powered")
    mean = graph.node("AveragePool", [powered], f"{hint}_mean", kernel_shape=list(layer.kernel_size),
                      strides=list(layer.stride), ceil_mode=int(layer.ceil_mode), count_include_pad=1)
    total = graph.node("Mul", [mean, graph.scalar(float(np.prod(layer.kernel_size)), f"{hint}_k", graph.dtype)],
                       f"{hint}_sum")
    root = graph.scalar(1.0 / p, f"{hint}_inverse_p", graph.dtype)
    if layer.spatial == 2:
        return Value(graph.node("Pow", [total, root], hint), shape, "nchw")
    return _channels_last(graph, graph.node("Pow", [total, root], f"{hint}_pooled"), shape, hint)


def _mean_matrix(n: int, o: int) -> np.ndarray:
    a = np.zeros((o, n))
    for i, (start, end) in enumerate(adaptive_windows(n, o)):
        a[i, start:end] = 1.0 / (end - start)
    return a


@register_converter(nn.AdaptiveMaxPool3D)
def _adaptive_max_pool3d(graph: Graph, layer, value: Value) -> Value:
    _check_rank(layer, value, 5)
    shape = layer.compute_output_shape(value.shape)
    hint = label(layer)
    out, kernel = _channels_first(graph, value, hint), []
    for axis, n, o in zip((2, 3, 4), value.shape[1:4], shape[1:4]):
        windows = adaptive_windows(n, o)
        longest = max(end - start for start, end in windows)
        indices = [min(start + t, end - 1) for start, end in windows for t in range(longest)]
        if indices != list(range(n)):
            out = graph.node("Gather", [out, _ints(graph, indices, f"{hint}_windows_{axis}")],
                             f"{hint}_gathered_{axis}", axis=axis)
        kernel.append(longest)
    if kernel != [1, 1, 1]:
        out = graph.node("MaxPool", [out], f"{hint}_pool", kernel_shape=kernel, strides=kernel)
    return _channels_last(graph, out, shape, hint)


@register_converter(nn.AdaptiveAvgPool3D)
def _adaptive_avg_pool3d(graph: Graph, layer, value: Value) -> Value:
    _check_rank(layer, value, 5)
    shape = layer.compute_output_shape(value.shape)
    hint = label(layer)
    (d, h, w), (od, oh, ow) = value.shape[1:4], shape[1:4]
    out = _channels_first(graph, value, hint)
    if d % od == 0 and h % oh == 0 and w % ow == 0:
        window = [d // od, h // oh, w // ow]
        if window != [1, 1, 1]:
            out = graph.node("AveragePool", [out], f"{hint}_pool", kernel_shape=window, strides=window)
        return _channels_last(graph, out, shape, hint)
    if ow != w:
        out = graph.node("MatMul", [out, graph.constant(_mean_matrix(w, ow).T, f"{hint}_columns")], f"{hint}_w")
    if oh != h:
        out = graph.node("MatMul", [graph.constant(_mean_matrix(h, oh), f"{hint}_rows"), out], f"{hint}_h")
    if od != d:
        planes = graph.node("Reshape", [out, _ints(graph, [0, 0, d, oh * ow], f"{hint}_planes_shape")],
                            f"{hint}_planes")
        pooled = graph.node("MatMul", [graph.constant(_mean_matrix(d, od), f"{hint}_depths"), planes], f"{hint}_d")
        out = graph.node("Reshape", [pooled, _ints(graph, [0, 0, od, oh, ow], f"{hint}_volume_shape")],
                         f"{hint}_volume")
    return _channels_last(graph, out, shape, hint)


# -- LoRA ------------------------------------------------------------------------------------------
@register_converter(LoRADense)
def _lora_dense(graph: Graph, layer, value: Value) -> Value:
    """g(x W' + b), W' = W + (alpha / r) A B unless the adapter is merged into W already."""
    value = graph.layout(value, "nhwc")
    base, hint = layer.base, label(layer)
    weight = base.weight.numpy()
    if not layer.lora.merged:
        weight = weight + np.asarray(layer.lora.delta_weight())
    out = graph.node("MatMul", [value.name, graph.constant(weight, f"{hint}_weight")],
                     f"{hint}_matmul" if base.use_bias else hint)
    if base.use_bias:
        out = graph.node("Add", [out, graph.constant(base.bias.numpy(), f"{hint}_bias")], hint)
    return layer_activation(graph, base, Value(out, (*value.shape[:-1], weight.shape[1])))


# -- zoo blocks ------------------------------------------------------------------------------------
def _residual(graph: Graph, out: Value, shortcut: Value, hint: str) -> Value:
    return add_values(graph, [out, shortcut], f"{hint}_add")


@register_converter(SqueezeExcitation)
def _squeeze_excitation(graph: Graph, layer, value: Value) -> Value:
    """out = sigma(fc2(delta(fc1(mean x)))) x, the (N, 1, 1, C) gates broadcast over the pixels."""
    scale = value
    for sub in (layer.avgpool, layer.fc1, layer.activation, layer.fc2, layer.scale_activation):
        scale = convert(graph, sub, scale)
    scale = graph.layout(scale, value.layout)
    return graph.like(value, graph.node("Mul", [scale.name, value.name], label(layer)))


@register_converter(MobileNetV3Block, MBConv, FusedMBConv, MnasNetBlock)
def _inverted_residual(graph: Graph, layer, value: Value) -> Value:
    branch = layer.layers if isinstance(layer, MnasNetBlock) else layer.block
    out = convert(graph, branch, value)
    return _residual(graph, out, value, label(layer)) if layer.use_shortcut else out


@register_converter(ConvNeXtBlock)
def _convnext_block(graph: Graph, layer, value: Value) -> Value:
    """out = x + gamma block(x), gamma one value per channel."""
    hint = label(layer)
    out = convert(graph, layer.block, value)
    gamma = graph.channel_vector(layer._parameters["layer_scale"].numpy(), out, f"{hint}_layer_scale")
    scaled = graph.like(out, graph.node("Mul", [out.name, gamma], f"{hint}_scaled"))
    return _residual(graph, scaled, value, hint)


@register_converter(Fire)
def _fire(graph: Graph, layer, value: Value) -> Value:
    squeezed = convert(graph, layer.squeeze_activation, convert(graph, layer.squeeze, value))
    expanded = [convert(graph, layer.expand1x1_activation, convert(graph, layer.expand1x1, squeezed)),
                convert(graph, layer.expand3x3_activation, convert(graph, layer.expand3x3, squeezed))]
    return concat_values(graph, expanded, label(layer))


@register_converter(ShuffleNetV2Unit)
def _shufflenet_v2_unit(graph: Graph, layer, value: Value) -> Value:
    """stride 2: [branch1(x), branch2(x)]; stride 1: [x_1, branch2(x_2)] for the channel halves
    x_1, x_2; then the channel shuffle of 2 groups."""
    hint = label(layer)
    if layer.stride == 2:
        parts = [convert(graph, layer.branch1, value), convert(graph, layer.branch2, value)]
    else:
        axis, half = onnx_axis(value, -1), value.shape[3] // 2
        halves = [graph.like(value, _slice(graph, value.name, axis, start, start + half, f"{hint}_half{k}"),
                             (*value.shape[:3], half)) for k, start in enumerate((0, half))]
        parts = [halves[0], convert(graph, layer.branch2, halves[1])]
    return convert(graph, layer.shuffle, concat_values(graph, parts, f"{hint}_concat"))


@register_converter(RegNetBlock)
def _regnet_block(graph: Graph, layer, value: Value) -> Value:
    out = convert(graph, layer.f, value)
    shortcut = convert(graph, layer.proj, value) if layer.has_projection else value
    return convert(graph, layer.activation, _residual(graph, out, shortcut, label(layer)))


@register_converter(ImagePooling)
def _image_pooling(graph: Graph, layer, value: Value) -> Value:
    """ReLU(BN(conv(mean x))) broadcast to the map's height and width (Expand)."""
    hint = label(layer)
    pooled = value
    for key in ("0", "1", "2"):
        pooled = convert(graph, layer._modules[key], pooled)
    pooled = ACTIVATIONS["relu"](graph, pooled, f"{hint}_relu")
    h, w = value.shape[1:3]
    target = [1, 1, h, w] if pooled.layout == "nchw" else [1, h, w, 1]
    out = graph.node("Expand", [pooled.name, _ints(graph, target, f"{hint}_size")], hint)
    return graph.like(pooled, out, (value.shape[0], h, w, pooled.shape[3]))


@register_converter(ASPP)
def _aspp(graph: Graph, layer, value: Value) -> Value:
    branches = [convert(graph, branch, value) for branch in layer.convs]
    return convert(graph, layer.project, concat_values(graph, branches, f"{label(layer)}_concat"))


@register_converter(SegmentationModel)
def _segmentation_model(graph: Graph, layer, value: Value) -> Value:
    """The classifier's scores on the backbone's features, resized to the input's height and
    width (bilinear, half-pixel centres); the auxiliary head only trains."""
    scores = convert(graph, layer.classifier, convert(graph, layer.backbone, value))
    return _resize_bilinear(graph, scores, value.shape[1:3], label(layer))


def _resize_bilinear(graph: Graph, value: Value, size, hint: str) -> Value:
    """``value`` resized to ``size`` (height, width): bilinear, half-pixel centres
    (align_corners=False)."""
    h, w = size
    value = graph.layout(value, "nchw")
    shape = graph.node("Shape", [value.name], f"{hint}_scores_shape")
    batch_and_classes = _slice(graph, shape, 0, 0, 2, f"{hint}_batch_and_classes")
    sizes = graph.node("Concat", [batch_and_classes, _ints(graph, [h, w], f"{hint}_hw")], f"{hint}_sizes", axis=0)
    out = graph.node("Resize", [value.name, "", "", sizes], hint, mode="linear",
                     coordinate_transformation_mode="half_pixel")
    return Value(out, (value.shape[0], h, w, value.shape[3]), "nchw")


@register_converter(LRASPP)
def _lraspp(graph: Graph, layer, value: Value) -> Value:
    """low_classifier(low) + high_classifier(resize(cbr(high) scale(high))), resized to the input."""
    hint = label(layer)
    x, low = value, value
    for name, child in layer.backbone.named_children():
        x = convert(graph, child, x)
        if name == layer.low_layer:
            low = x
    head = layer.classifier
    features = convert(graph, head.cbr, x)
    gates = graph.layout(convert(graph, head.scale, x), features.layout)
    gated = graph.like(features, graph.node("Mul", [features.name, gates.name], f"{hint}_gated"))
    upsampled = _resize_bilinear(graph, gated, low.shape[1:3], f"{hint}_upsampled")
    parts = [convert(graph, head.low_classifier, low), convert(graph, head.high_classifier, upsampled)]
    return _resize_bilinear(graph, add_values(graph, parts, f"{hint}_scores"), value.shape[1:3], hint)
