"""ONNX forms of lamina's layers and the zoo's blocks. Spatial layers read and write NCHW
values (ONNX's layout), the others NHWC; :meth:`Graph.layout` converts between them only
where needed."""

from __future__ import annotations

import numpy as np

from lamina import nn
from lamina.autograd import no_grad
from lamina.export.onnx_activations import ACTIVATIONS, layer_activation
from lamina.export.onnx_graph import Graph, Value, convert, convert_chain, label, register_converter
from lamina.functional.conv_transpose import transpose_geometry
from lamina.functional.im2col import conv_pads
from lamina.models.blocks import ConvBN, PathBlock
from lamina.models.resnet import _Residual
from lamina.nn.augmentation import _Augmentation
from lamina.nn.layer import compact


# -- pass-through, shape -----------------------------------------------------------------------
@register_converter(nn.Dropout, nn.Identity, nn.GaussianNoise, nn.GaussianDropout, nn.AlphaDropout,
                    nn.SpatialDropout1D, nn.SpatialDropout2D)
def _identity(graph: Graph, layer, value: Value) -> Value:
    return value


@register_converter(nn.WeightNorm, nn.SpectralNorm)
def _normalized_weight(graph: Graph, layer, value: Value) -> Value:
    """The wrapped layer with the weight the wrapper computes now (w = g v / ||v||, or
    W / sigma with the stored power-iteration vectors), as evaluation would use it."""
    with no_grad():
        layer._set_layer_weight(layer.compute_weight().detach())
    return convert(graph, layer.layer, value)


@register_converter(_Augmentation)
def _augmentation(graph: Graph, layer, value: Value) -> Value:
    if type(layer).evaluate is not _Augmentation.evaluate:
        raise NotImplementedError(f"export_onnx: {layer._label()} ({type(layer).__name__}) changes images at "
                                  "evaluation; it has no ONNX converter")
    return value


@register_converter(nn.Flatten)
def _flatten(graph: Graph, layer, value: Value) -> Value:
    value = graph.layout(value, "nhwc")                         # features in (h, w, c) order
    shape = (value.shape[0], int(np.prod(value.shape[1:])))
    return Value(graph.node("Flatten", [value.name], label(layer), axis=1), shape)


@register_converter(nn.Reshape)
def _reshape(graph: Graph, layer, value: Value) -> Value:
    value = graph.layout(value, "nhwc")
    target = graph.constant([0, *layer.target_shape], f"{label(layer)}_shape", dtype=np.int64)
    shape = layer.compute_output_shape(value.shape)
    return Value(graph.node("Reshape", [value.name, target], label(layer)), shape)


@register_converter(nn.Cropping2D)
def _cropping(graph: Graph, layer, value: Value) -> Value:
    """x[:, top:H - bottom, left:W - right, :], one Slice in the value's layout."""
    (top, bottom), (left, right) = layer.cropping
    h, w = value.shape[1:3]
    axes = [2, 3] if value.layout == "nchw" else [1, 2]
    hint = label(layer)
    bounds = [graph.constant(v, f"{hint}_{what}", np.int64)
              for what, v in (("starts", [top, left]), ("ends", [h - bottom, w - right]), ("axes", axes))]
    out = graph.node("Slice", [value.name, *bounds], hint)
    return graph.like(value, out, layer.compute_output_shape(value.shape))


@register_converter(nn.UpSampling2D)
def _upsampling(graph: Graph, layer, value: Value) -> Value:
    """ONNX's Resize by (s_h, s_w). 'nearest': y[i, j] = x[floor(i / s_h), floor(j / s_w)]
    (asymmetric coordinates i / s, rounded down); 'bilinear': half-pixel centres, the source
    point u = (i + 1/2) / s - 1/2 clamped to the image (align_corners=False)."""
    value = graph.layout(value, "nchw")
    hint = label(layer)
    scales = graph.constant([1.0, 1.0, *layer.size], f"{hint}_scales", np.float32)
    if layer.interpolation == "nearest":
        modes = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    else:
        modes = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
    out = graph.node("Resize", [value.name, "", scales], hint, **modes)
    return graph.like(value, out, layer.compute_output_shape(value.shape))


@register_converter(nn.ZeroPadding2D)
def _zero_padding(graph: Graph, layer, value: Value) -> Value:
    (top, bottom), (left, right) = layer.padding
    if value.layout == "nchw":
        pads = [0, 0, top, left, 0, 0, bottom, right]
    else:
        pads = [0, top, left, 0, 0, bottom, right, 0]
    out = graph.node("Pad", [value.name, graph.constant(pads, f"{label(layer)}_pads", dtype=np.int64)],
                     label(layer))
    return graph.like(value, out, layer.compute_output_shape(value.shape))


@register_converter(nn.ReflectionPad2D, nn.ReplicationPad2D)
def _mode_padding(graph: Graph, layer, value: Value) -> Value:
    """ONNX's Pad in 'reflect' (the edge not repeated, as PyTorch's) or 'edge' mode."""
    top, bottom, left, right = layer.padding
    if value.layout == "nchw":
        pads = [0, 0, top, left, 0, 0, bottom, right]
    else:
        pads = [0, top, left, 0, 0, bottom, right, 0]
    mode = "reflect" if isinstance(layer, nn.ReflectionPad2D) else "edge"
    out = graph.node("Pad", [value.name, graph.constant(pads, f"{label(layer)}_pads", dtype=np.int64)],
                     label(layer), mode=mode)
    return graph.like(value, out, layer.compute_output_shape(value.shape))


@register_converter(nn.PixelShuffle)
def _pixel_shuffle(graph: Graph, layer, value: Value) -> Value:
    """DepthToSpace in 'CRD' order, which is PyTorch's pixel_shuffle on NCHW."""
    value = graph.layout(value, "nchw")
    out = graph.node("DepthToSpace", [value.name], label(layer), blocksize=layer.upscale_factor, mode="CRD")
    return graph.like(value, out, layer.compute_output_shape(value.shape))


# -- dense, embedding, normalization -------------------------------------------------------
@register_converter(nn.Dense)
def _dense(graph: Graph, layer, value: Value) -> Value:
    """z = x W + b on the last axis: Gemm for (N, n_in), MatMul + Add otherwise."""
    value = graph.layout(value, "nhwc")
    hint = label(layer)
    weight = graph.constant(layer.weight.numpy(), f"{hint}_weight")
    inputs = [value.name, weight]
    if layer.use_bias:
        inputs.append(graph.constant(layer.bias.numpy(), f"{hint}_bias"))
    if len(value.shape) == 2:
        out = graph.node("Gemm", inputs, hint)
    else:
        out = graph.node("MatMul", inputs[:2], f"{hint}_matmul" if layer.use_bias else hint)
        if layer.use_bias:
            out = graph.node("Add", [out, inputs[2]], hint)
    return layer_activation(graph, layer, Value(out, (*value.shape[:-1], layer.units)))


@register_converter(nn.Embedding)
def _embedding(graph: Graph, layer, value: Value) -> Value:
    table = graph.constant(layer.weight.numpy(), f"{label(layer)}_weight")
    out = graph.node("Gather", [table, value.name], label(layer), axis=0)
    return Value(out, (*value.shape, layer.weight.shape[1]))


@register_converter(nn.BatchNorm)
def _batch_norm(graph: Graph, layer, value: Value) -> Value:
    """Evaluation mode: the running statistics, y = gamma (x - mu) / sqrt(var + eps) + beta."""
    if len(value.shape) == 4:
        value = graph.layout(value, "nchw")
    elif len(value.shape) != 2:
        raise NotImplementedError(f"export_onnx: {layer._label()} on {len(value.shape)}-D inputs; ONNX's "
                                  "BatchNormalization takes (N, C) or images")
    layer.require_running_statistics("export_onnx")
    hint = label(layer)
    channels = layer.running_mean.shape[0]
    gamma = layer.weight.numpy() if layer.affine else np.ones(channels)
    beta = layer.bias.numpy() if layer.affine else np.zeros(channels)
    inputs = [value.name, graph.constant(gamma, f"{hint}_scale"), graph.constant(beta, f"{hint}_bias"),
              graph.constant(np.asarray(layer.running_mean), f"{hint}_mean"),
              graph.constant(np.asarray(layer.running_var), f"{hint}_var")]
    return graph.like(value, graph.node("BatchNormalization", inputs, hint, epsilon=layer.eps))


@register_converter(nn.LayerNorm)
def _layer_norm(graph: Graph, layer, value: Value) -> Value:
    value = graph.layout(value, "nhwc")
    hint = label(layer)
    shape = layer.normalized_shape
    gamma = layer.weight.numpy() if layer.affine else np.ones(shape)
    inputs = [value.name, graph.constant(gamma, f"{hint}_scale")]
    if layer.affine and layer.beta is not None:           # LayerNorm(bias=False) has no shift
        inputs.append(graph.constant(layer.bias.numpy(), f"{hint}_bias"))
    out = graph.node("LayerNormalization", inputs, hint, axis=-len(shape), epsilon=layer.eps)
    return graph.like(value, out)


@register_converter(nn.GroupNorm)
def _group_norm(graph: Graph, layer, value: Value) -> Value:
    """y = gamma (x - mu) / sqrt(var + eps) + beta, mu and the biased var over each sample's
    group of C / G channels and all its positions. Opset 17 has no GroupNormalization: x is
    reshaped to (N, G, (C / G) H W), normalised by InstanceNormalization (per sample and
    group), reshaped back, then scaled and shifted per channel. Instance normalization of an
    image (G = C) is one InstanceNormalization with gamma and beta."""
    hint = label(layer)
    if len(value.shape) == 4:
        value = graph.layout(value, "nchw")
    channels, groups = layer.num_channels, layer.groups
    gamma = layer.weight.numpy() if layer.affine else np.ones(channels)
    beta = layer.bias.numpy() if layer.affine else np.zeros(channels)
    if len(value.shape) == 4 and groups == channels:
        inputs = [value.name, graph.constant(gamma, f"{hint}_scale"), graph.constant(beta, f"{hint}_bias")]
        return graph.like(value, graph.node("InstanceNormalization", inputs, hint, epsilon=layer.eps))
    out_name = f"{hint}_ungrouped" if layer.affine else hint
    if len(value.shape) in (2, 4):
        grouped = graph.node("Reshape", [value.name, graph.constant([0, groups, -1], f"{hint}_groups", np.int64)],
                             f"{hint}_grouped")
        normalized = _instance_norm_of_groups(graph, grouped, groups, layer.eps, hint)
        dims = [0, channels, *value.shape[1:3]] if len(value.shape) == 4 else [0, channels]
        out = graph.like(value, graph.node("Reshape", [normalized, graph.constant(dims, f"{hint}_shape", np.int64)],
                                           out_name))
    else:
        out = graph.like(value, _group_norm_channels_last(graph, value, groups, layer.eps, hint, out_name))
    if not layer.affine:
        return out
    scaled = graph.node("Mul", [out.name, graph.channel_vector(gamma, out, f"{hint}_gamma")], f"{hint}_scaled")
    return graph.like(value, graph.node("Add", [scaled, graph.channel_vector(beta, out, f"{hint}_beta")], hint))


def _instance_norm_of_groups(graph: Graph, grouped: str, groups: int, eps: float, hint: str) -> str:
    """InstanceNormalization of (N, G, ...) values: each sample's group normalised alone."""
    return graph.node("InstanceNormalization", [grouped, graph.constant(np.ones(groups), f"{hint}_ones"),
                                                graph.constant(np.zeros(groups), f"{hint}_zeros")],
                      f"{hint}_normalized", epsilon=eps)


def _group_norm_channels_last(graph: Graph, value: Value, groups: int, eps: float, hint: str, out_name: str) -> str:
    """Group normalization of channels-last (N, ..., C) values (sequences, volumes): viewed as
    (N, S, G, C / G), the groups brought before the positions, normalised, and put back."""
    channels = value.shape[-1]
    split = graph.node("Reshape", [value.name, graph.constant([0, -1, groups, channels // groups],
                                                              f"{hint}_split", np.int64)], f"{hint}_split")
    first = graph.node("Transpose", [split], f"{hint}_groups_first", perm=[0, 2, 1, 3])
    grouped = graph.node("Reshape", [first, graph.constant([0, groups, -1], f"{hint}_groups", np.int64)],
                         f"{hint}_grouped")
    normalized = _instance_norm_of_groups(graph, grouped, groups, eps, hint)
    unflat = graph.node("Reshape", [normalized, graph.constant([0, groups, -1, channels // groups],
                                                               f"{hint}_unflat", np.int64)], f"{hint}_unflat")
    back = graph.node("Transpose", [unflat], f"{hint}_groups_back", perm=[0, 2, 1, 3])
    dims = [0, *value.shape[1:]]
    return graph.node("Reshape", [back, graph.constant(dims, f"{hint}_shape", np.int64)], out_name)


@register_converter(nn.LocalResponseNorm)
def _local_response_norm(graph: Graph, layer, value: Value) -> Value:
    """b_c = a_c / (k + alpha / n sum of a_c'^2 over c' in [c - floor(n/2), c + floor((n-1)/2)])^beta:
    ONNX's LRN for an odd n; for an even n (where ONNX's window is [c - (n-1)/2, c + n/2] and
    onnxruntime refuses it) the formula itself, the mean of the squares over the window an
    AveragePool along the channels (zero-padded, the pads counted in the divisor n)."""
    value = graph.layout(value, "nchw")
    n = layer.size
    if n % 2:
        out = graph.node("LRN", [value.name], label(layer), size=n, alpha=layer.alpha, beta=layer.beta,
                         bias=layer.k)
        return graph.like(value, out)
    hint = label(layer)
    squares = graph.node("Mul", [value.name, value.name], f"{hint}_squares")
    rows_shape = graph.constant([0, 1, value.shape[-1], -1], f"{hint}_rows_shape", np.int64)
    rows = graph.node("Reshape", [squares, rows_shape], f"{hint}_rows")            # (N, 1, C, H W)
    mean = graph.node("AveragePool", [rows], f"{hint}_window", kernel_shape=[n, 1], strides=[1, 1],
                      pads=[n // 2, 0, (n - 1) // 2, 0], count_include_pad=1)
    mean = graph.node("Reshape", [mean, graph.node("Shape", [value.name], f"{hint}_shape")], f"{hint}_mean")
    scaled = graph.node("Mul", [mean, graph.constant(layer.alpha, f"{hint}_alpha")], f"{hint}_scaled")
    d = graph.node("Add", [scaled, graph.constant(layer.k, f"{hint}_k")], f"{hint}_d")
    power = graph.node("Pow", [d, graph.constant(layer.beta, f"{hint}_beta")], f"{hint}_power")
    return graph.like(value, graph.node("Div", [value.name, power], hint))


# -- convolution, pooling ------------------------------------------------------------------
def _onnx_pads(padding, value: Value, extent: tuple[int, int], stride: tuple[int, int]) -> list[int]:
    """[top, left, bottom, right] of lamina's padding (resolving 'same' for this input)."""
    top, bottom, left, right = conv_pads(padding, value.shape[1:3], extent, stride, "export_onnx")
    return [top, left, bottom, right]


def _conv(graph: Graph, value: Value, weight: np.ndarray, bias, groups: int, hint: str,
          stride=(1, 1), padding="valid", dilation=(1, 1)) -> Value:
    """ONNX Conv of an NHWC-shaped value with lamina weights (K, f_h, f_w, c / groups)."""
    value = graph.layout(value, "nchw")
    k, fh, fw, _ = weight.shape
    extent = (dilation[0] * (fh - 1) + 1, dilation[1] * (fw - 1) + 1)
    pads = _onnx_pads(padding, value, extent, tuple(stride))
    inputs = [value.name, graph.constant(weight.transpose(0, 3, 1, 2), f"{hint}_weight")]
    if bias is not None:
        inputs.append(graph.constant(bias, f"{hint}_bias"))
    out = graph.node("Conv", inputs, hint, kernel_shape=[fh, fw], strides=list(stride), pads=pads,
                     dilations=list(dilation), group=groups)
    h = (value.shape[1] + pads[0] + pads[2] - extent[0]) // stride[0] + 1
    w = (value.shape[2] + pads[1] + pads[3] - extent[1]) // stride[1] + 1
    return Value(out, (value.shape[0], h, w, k), "nchw")


@register_converter(nn.Conv2D, nn.DepthwiseConv2D)
def _conv2d(graph: Graph, layer, value: Value) -> Value:
    c_in = layer.in_channels
    bias = layer.bias.numpy() if layer.use_bias else None
    out = _conv(graph, value, layer.weight.numpy(), bias, layer._groups_for(c_in), label(layer),
                layer.stride, layer.padding, layer.dilation)
    return layer_activation(graph, layer, out)


@register_converter(nn.SeparableConv2D)
def _separable_conv2d(graph: Graph, layer, value: Value) -> Value:
    hint = label(layer)
    mid = _conv(graph, value, layer.depthwise_weight.numpy(), None, layer.in_channels, f"{hint}_depthwise",
                layer.stride, layer.padding, layer.dilation)
    bias = layer.bias.numpy() if layer.use_bias else None
    out = _conv(graph, mid, layer.pointwise_weight.numpy(), bias, 1, hint)
    return layer_activation(graph, layer, out)


@register_converter(nn.Conv2DTranspose)
def _conv2d_transpose(graph: Graph, layer, value: Value) -> Value:
    """y[n, s i + q a - p, s j + q b - p, c] += sum_k x[n, i, j, k] w[k, a, b, c] + b[c]:
    ONNX's ConvTranspose (with ``dilations`` q and ``group``), whose weight
    (C_in, C_out / groups, f_h, f_w) is lamina's (c_in, f_h, f_w, K / groups) transposed.

    The rows and columns that lamina's size has beyond (h - 1) s + q (f - 1) + 1 - p_top -
    p_bottom (the layer's output_padding, or s - f for a 'same' layer whose kernel is smaller
    than its stride) first uncrop the bottom/right padding, then go to ConvTranspose's
    ``output_padding``; ONNX Runtime takes that only below the stride, so the rest (possible
    with a dilation) is a zero Pad before the bias, rows no input reaches."""
    value = graph.layout(value, "nchw")
    hint = label(layer)
    pads, out_hw = transpose_geometry(value.shape[1:3], layer.kernel_size, layer.stride, compact(layer.padding),
                                      compact(layer.output_padding), "export_onnx", layer.dilation)
    top, bottom, left, right = pads
    extra = [out - ((n - 1) * s + q * (f - 1) + 1 - before - after)
             for out, n, s, q, f, before, after in zip(out_hw, value.shape[1:3], layer.stride, layer.dilation,
                                                      layer.kernel_size, (top, left), (bottom, right))]
    uncropped = [min(e, after) for e, after in zip(extra, (bottom, right))]
    bottom, right = bottom - uncropped[0], right - uncropped[1]
    extra = [e - u for e, u in zip(extra, uncropped)]
    padded = [e if e >= s else 0 for e, s in zip(extra, layer.stride)]
    extra = [e - p for e, p in zip(extra, padded)]
    inputs = [value.name, graph.constant(layer.weight.numpy().transpose(0, 3, 1, 2), f"{hint}_weight")]
    bias_inside = layer.use_bias and not any(padded)
    if bias_inside:
        inputs.append(graph.constant(layer.bias.numpy(), f"{hint}_bias"))
    out = graph.node("ConvTranspose", inputs, hint if not any(padded) else f"{hint}_conv",
                     kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                     pads=[top, left, bottom, right], output_padding=extra, dilations=list(layer.dilation),
                     group=layer.groups)
    result = Value(out, (value.shape[0], *out_hw, layer.filters), "nchw")
    if any(padded):
        widths = graph.constant([0, 0, 0, 0, 0, 0, *padded], f"{hint}_pads", np.int64)
        name = f"{hint}_padded" if layer.use_bias else hint
        result = graph.like(result, graph.node("Pad", [out, widths], name))
        if layer.use_bias:
            bias = graph.channel_vector(layer.bias.numpy(), result, f"{hint}_bias")
            result = graph.like(result, graph.node("Add", [result.name, bias], hint))
    return layer_activation(graph, layer, result)


@register_converter(nn.Conv1D)
def _conv1d(graph: Graph, layer, value: Value) -> Value:
    """v[n, t, k] = b[k] + sum_{i, c} xpad[n, t s + d i, c] w[k, i, c]: ONNX's 1-D Conv on
    the sequence transposed to (N, C, L), with the weight (K, c_in / groups, f), and back."""
    hint = label(layer)
    steps = value.shape[1]
    if layer.padding == "causal":                       # d (f - 1) zeros on the left only
        pads = [layer.extent - 1, 0]
    else:
        padding = layer.padding if isinstance(layer.padding, str) else (0, layer.padding)
        pads = list(conv_pads(padding, (1, steps), (1, layer.extent), (1, layer.stride), "export_onnx")[2:])
    channels_first = graph.node("Transpose", [value.name], f"{hint}_ncl", perm=[0, 2, 1])
    inputs = [channels_first, graph.constant(layer.weight.numpy().transpose(0, 2, 1), f"{hint}_weight")]
    if layer.use_bias:
        inputs.append(graph.constant(layer.bias.numpy(), f"{hint}_bias"))
    conv = graph.node("Conv", inputs, f"{hint}_conv", kernel_shape=[layer.kernel_size], strides=[layer.stride],
                      pads=pads, dilations=[layer.dilation], group=layer.groups)
    out = Value(graph.node("Transpose", [conv], hint, perm=[0, 2, 1]), layer.compute_output_shape(value.shape))
    return layer_activation(graph, layer, out)


@register_converter(nn.DropConnect)
def _drop_connect(graph: Graph, layer, value: Value) -> Value:
    """Evaluation mode: the wrapped layer with its own weights, none dropped."""
    return convert(graph, layer.layer, value)


def onnx_ceil_mode(sizes, kernel, stride, padding, out_sizes, ceil_mode: bool) -> int:
    """The ceil_mode attribute of an ONNX pool giving lamina's (PyTorch's) ``out_sizes``
    windows along the axes of ``sizes`` with ``padding`` at both ends. ONNX's ceil_mode keeps
    a last window that starts in the end padding, which lamina drops; there ceil((n + 2 p -
    f) / s) + 1 exceeds lamina's count by one, which then equals the floor count: such a pool
    is written with ceil_mode 0 (the same windows, and as none of them overhangs the padded
    input, the same divisors for an AveragePool)."""
    if not ceil_mode:
        return 0
    ceil_out = [-(-(n + 2 * p - f) // s) + 1 for n, f, s, p in zip(sizes, kernel, stride, padding)]
    return int(list(out_sizes) == ceil_out)


def _pool(op: str, **extra):
    def write(graph: Graph, layer, value: Value) -> Value:
        value = graph.layout(value, "nchw")
        ph, pw = layer.padding
        shape = layer.compute_output_shape(value.shape)
        ceil_mode = onnx_ceil_mode(value.shape[1:3], layer.pool_size, layer.stride, layer.padding, shape[1:3],
                                   layer.ceil_mode)
        out = graph.node(op, [value.name], label(layer), kernel_shape=list(layer.pool_size),
                         strides=list(layer.stride), pads=[ph, pw, ph, pw], ceil_mode=ceil_mode, **extra)
        return Value(out, shape, "nchw")
    return write


register_converter(nn.MaxPool2D)(_pool("MaxPool"))


def refuse_divisor_override(layer) -> None:
    """ONNX's AveragePool divides by the window size only: refuse a layer with a divisor_override."""
    if layer.divisor_override is not None:
        raise NotImplementedError(f"export_onnx: {layer._label()} has divisor_override={layer.divisor_override}, "
                                  f"which ONNX's AveragePool cannot express")


@register_converter(nn.AvgPool2D)
def _avg_pool(graph: Graph, layer, value: Value) -> Value:
    refuse_divisor_override(layer)
    return _pool("AveragePool", count_include_pad=int(layer.count_include_pad))(graph, layer, value)


@register_converter(nn.GlobalAvgPool2D)
def _global_avg_pool(graph: Graph, layer, value: Value) -> Value:
    value = graph.layout(value, "nchw")
    pooled = graph.node("GlobalAveragePool", [value.name], f"{label(layer)}_pool")
    return Value(graph.node("Flatten", [pooled], label(layer), axis=1), (value.shape[0], value.shape[3]))


# -- containers and blocks -------------------------------------------------------------------
@register_converter(nn.Sequential)
def _sequential(graph: Graph, layer, value: Value) -> Value:
    return convert_chain(graph, layer, value)


@register_converter(PathBlock)
def _path_block(graph: Graph, layer, value: Value) -> Value:
    return convert_chain(graph, layer._path(), value)


@register_converter(ConvBN)
def _conv_bn(graph: Graph, layer, value: Value) -> Value:
    value = convert(graph, layer.bn, convert(graph, layer.conv, value))
    if layer.activation is None:
        return value
    return ACTIVATIONS[layer.activation](graph, value, f"{label(layer)}_{layer.activation}")


@register_converter(_Residual)
def _residual(graph: Graph, layer, value: Value) -> Value:
    """out = ReLU(branch(x) + shortcut(x)), the branch's inner ReLUs after each BN but the last."""
    hint = label(layer)
    stages = [(layer.conv1, layer.bn1), (layer.conv2, layer.bn2)]
    if hasattr(layer, "conv3"):
        stages.append((layer.conv3, layer.bn3))
    out = value
    for i, (conv, bn) in enumerate(stages):
        out = convert(graph, bn, convert(graph, conv, out))
        if i < len(stages) - 1:
            out = ACTIVATIONS["relu"](graph, out, f"{hint}_relu{i + 1}")
    short = _shortcut(graph, layer, value)
    short = graph.layout(short, out.layout)
    total = graph.like(out, graph.node("Add", [out.name, short.name], f"{hint}_add"))
    return ACTIVATIONS["relu"](graph, total, f"{hint}_out")


def _shortcut(graph: Graph, layer, value: Value) -> Value:
    if not layer.has_downsample:
        return value
    if layer.shortcut == "B":
        return convert(graph, layer.downsample, value)
    # option A: every s-th pixel, zero channels appended on both sides
    hint, s = label(layer), layer.stride
    value = graph.layout(value, "nchw")
    sub = value.name
    h, w = value.shape[1:3]
    if s > 1:
        bounds = [graph.constant(v, f"{hint}_{what}", np.int64)
                  for what, v in (("starts", [0, 0]), ("ends", [h, w]), ("axes", [2, 3]), ("steps", [s, s]))]
        sub = graph.node("Slice", [sub, *bounds], f"{hint}_subsample")
    extra = layer.out_channels - value.shape[3]
    before = extra // 2
    if extra:
        pads = graph.constant([0, before, 0, 0, 0, extra - before, 0, 0], f"{hint}_pads", np.int64)
        sub = graph.node("Pad", [sub, pads], f"{hint}_shortcut")
    shape = (value.shape[0], -(-h // s), -(-w // s), layer.out_channels)
    return Value(sub, shape, "nchw")
