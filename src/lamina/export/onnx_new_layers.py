"""ONNX forms of the group-equivariant layers, the deformable convolution and Conv-TasNet
(evaluation mode):

    P4ConvZ2, P4MConvZ2       x (N, H, W, C) -> Conv with the filter bank (K |G|, f, f, C), fixed at
                              export -> Reshape to (N, H', W', K, |G|)
    P4ConvP4, P4MConvP4M      x (N, H, W, C, |G|) -> Reshape (N, H, W, C |G|) -> Conv with the bank
                              (K |G|, f, f, C |G|) -> Reshape (N, H', W', K, |G|)
    GroupPool                 ReduceMax / ReduceMean over the group axis
    GroupBatchNorm            x s + t with s = gamma / sqrt(var + eps), t = beta - mean s per filter,
                              broadcast over the group axis
    DeformConv2D              its offset Conv, then ONNX's DeformConv (opset 19 or later) with the
                              offsets and, when modulated, the sigmoid masks
    GlobalLayerNorm,          (x - mean) / sqrt(var + eps) gamma + beta, the statistics over the
    ChannelwiseLayerNorm      frames and channels (gLN) or the channels (cLN)
    ConvTasNet                the encoder Conv, the separator's MatMuls, PReLUs, norms and
                              dilated depthwise Convs, the masks, and the decoder's ConvTranspose

The bank is :func:`lamina.functional.group_filter_bank` of the weights as they are at export, so
a group convolution is one Conv whose bias repeats each filter's bias over the |G| maps.
Conv-TasNet's frame count depends on the mixture's length: the graph is for the exported one.
A TemporalConvBlock alone gives two tensors (the residual and skip paths) and is refused.
"""

from __future__ import annotations

import numpy as np

from lamina import nn
from lamina.autograd import no_grad
from lamina.export.onnx_activations import layer_activation
from lamina.export.onnx_graph import Graph, Value, convert, convert_chain, label, register_converter
from lamina.export.onnx_layers import _conv
from lamina.export.onnx_rearrange import _reduce
from lamina.functional.group_conv import group_filter_bank
from lamina.models.conv_tasnet import ChannelwiseLayerNorm, ConvTasNet, GlobalLayerNorm, TemporalConvBlock
from lamina.models.p4cnn import P4CNN

__all__: list[str] = []

_GROUP_CONVS = (nn.P4ConvZ2, nn.P4ConvP4, nn.P4MConvZ2, nn.P4MConvP4M)


def _reshape(graph: Graph, name: str, target, hint: str) -> str:
    return graph.node("Reshape", [name, graph.constant(list(target), f"{hint}_shape", np.int64)], hint)


def _check_group_map(layer, value: Value) -> None:
    if len(value.shape) != 5:
        raise NotImplementedError(f"export_onnx: {layer._label()} ({type(layer).__name__}) reads a group feature "
                                  f"map (N, H, W, K, |G|); got a value of shape {value.shape}")


# -- group-equivariant layers ------------------------------------------------------------------
@register_converter(*_GROUP_CONVS)
def _group_conv(graph: Graph, layer, value: Value) -> Value:
    hint = label(layer)
    order, k = layer.group_order, layer.filters
    if layer.lifting:
        merged = value
    else:
        _check_group_map(layer, value)
        n, h, w, c, g = value.shape
        merged = Value(_reshape(graph, value.name, (0, h, w, c * g), f"{hint}_merge"), (n, h, w, c * g))
    with no_grad():
        bank = group_filter_bank(layer.weight, layer.group).numpy()
    bias = np.repeat(layer.bias.numpy(), order) if layer.use_bias else None
    out = graph.layout(_conv(graph, merged, bank, bias, 1, f"{hint}_conv", layer.stride, layer.padding), "nhwc")
    n, h, w, _ = out.shape
    return Value(_reshape(graph, out.name, (0, h, w, k, order), hint), (n, h, w, k, order))


@register_converter(nn.GroupPool)
def _group_pool(graph: Graph, layer: nn.GroupPool, value: Value) -> Value:
    _check_group_map(layer, value)
    op = "ReduceMax" if layer.reduction == "max" else "ReduceMean"
    return Value(_reduce(graph, op, value.name, (4,), label(layer)), value.shape[:4])


@register_converter(nn.GroupBatchNorm)
def _group_batch_norm(graph: Graph, layer: nn.GroupBatchNorm, value: Value) -> Value:
    """Evaluation mode: the running statistics of each filter, shared by its |G| maps."""
    _check_group_map(layer, value)
    hint = label(layer)
    mean, var = np.asarray(layer.running_mean, np.float64), np.asarray(layer.running_var, np.float64)
    gamma = layer.weight.numpy() if layer.affine else np.ones_like(mean)
    beta = layer.bias.numpy() if layer.affine else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + layer.eps)
    shift = beta - mean * scale
    scaled = graph.node("Mul", [value.name, graph.constant(scale[:, None], f"{hint}_scale")], f"{hint}_scaled")
    return Value(graph.node("Add", [scaled, graph.constant(shift[:, None], f"{hint}_shift")], hint), value.shape)


# -- deformable convolution --------------------------------------------------------------------
DEFORM_CONV_OPSET = 19


@register_converter(nn.DeformConv2D)
def _deform_conv2d(graph: Graph, layer: nn.DeformConv2D, value: Value) -> Value:
    """ONNX's DeformConv reads the offsets (N, 2 G f_h f_w, H', W') in torchvision's (dy, dx)
    order and the masks (N, G f_h f_w, H', W'): lamina's offset convolution's channels as they are."""
    if (graph.opset or 0) < DEFORM_CONV_OPSET:
        raise NotImplementedError(f"export_onnx: {layer._label()} (DeformConv2D) needs ONNX's DeformConv, added in "
                                  f"opset {DEFORM_CONV_OPSET}; export with opset={DEFORM_CONV_OPSET} (got opset "
                                  f"{graph.opset})")
    hint = label(layer)
    predicted = convert(graph, layer.offset_conv, value)
    predicted = graph.layout(predicted, "nchw")
    x = graph.layout(value, "nchw")
    fh, fw = layer.kernel_size
    taps = layer.offset_groups * fh * fw
    inputs = [x.name, graph.constant(layer.weight.numpy().transpose(0, 3, 1, 2), f"{hint}_weight")]
    if layer.modulated:
        offsets = graph.node("Slice", [predicted.name, graph.constant([0], f"{hint}_offset_start", np.int64),
                                       graph.constant([2 * taps], f"{hint}_offset_end", np.int64),
                                       graph.constant([1], f"{hint}_channel_axis", np.int64)], f"{hint}_offsets")
        logits = graph.node("Slice", [predicted.name, graph.constant([2 * taps], f"{hint}_mask_start", np.int64),
                                      graph.constant([3 * taps], f"{hint}_mask_end", np.int64),
                                      graph.constant([1], f"{hint}_mask_axis", np.int64)], f"{hint}_mask_logits")
        inputs.append(offsets)
        mask = graph.node("Sigmoid", [logits], f"{hint}_masks")
    else:
        inputs.append(predicted.name)
        mask = ""
    inputs.append(graph.constant(layer.bias.numpy(), f"{hint}_bias") if layer.use_bias else "")
    inputs.append(mask)
    while inputs[-1] == "":
        inputs.pop()
    ph, pw = layer.padding
    out = graph.node("DeformConv", inputs, hint, kernel_shape=[fh, fw], strides=list(layer.stride),
                     pads=[ph, pw, ph, pw],
                     dilations=list(layer.dilation), offset_group=layer.offset_groups)
    return layer_activation(graph, layer, Value(out, (*predicted.shape[:3], layer.filters), "nchw"))


# -- Conv-TasNet -------------------------------------------------------------------------------
def _mean(graph: Graph, name: str, axes: tuple, hint: str) -> str:
    as_input = (graph.opset or 17) >= 18
    if as_input:
        return graph.node("ReduceMean", [name, graph.constant(list(axes), f"{hint}_axes", np.int64)], hint,
                          keepdims=1)
    return graph.node("ReduceMean", [name], hint, axes=list(axes), keepdims=1)


def _normalize(graph: Graph, norm: GlobalLayerNorm, name: str, hint: str) -> str:
    """gamma (x - mean) / sqrt(var + eps) + beta over (frames, channels) for gLN, channels for cLN."""
    axes = (2,) if isinstance(norm, ChannelwiseLayerNorm) else (1, 2)
    centred = graph.node("Sub", [name, _mean(graph, name, axes, f"{hint}_mean")], f"{hint}_centred")
    squared = graph.node("Mul", [centred, centred], f"{hint}_squared")
    variance = _mean(graph, squared, axes, f"{hint}_variance")
    shifted = graph.node("Add", [variance, graph.constant(norm.eps, f"{hint}_eps")], f"{hint}_shifted")
    scaled = graph.node("Div", [centred, graph.node("Sqrt", [shifted], f"{hint}_std")], f"{hint}_normalized")
    scaled = graph.node("Mul", [scaled, graph.constant(norm.gamma.numpy(), f"{hint}_gamma")], f"{hint}_scaled")
    return graph.node("Add", [scaled, graph.constant(norm.beta.numpy(), f"{hint}_beta")], hint)


@register_converter(GlobalLayerNorm, ChannelwiseLayerNorm)
def _sequence_norm(graph: Graph, layer: GlobalLayerNorm, value: Value) -> Value:
    if len(value.shape) != 3:
        raise NotImplementedError(f"export_onnx: {layer._label()} ({type(layer).__name__}) reads sequences "
                                  f"(batch, frames, {layer.channels}); got a value of shape {value.shape}")
    value = graph.layout(value, "nhwc")
    return graph.like(value, _normalize(graph, layer, value.name, label(layer)))


@register_converter(TemporalConvBlock)
def _temporal_conv_block(graph: Graph, layer, value: Value) -> Value:
    raise NotImplementedError(f"export_onnx: {layer._label()} (TemporalConvBlock) returns two tensors (the residual "
                              "and skip paths); the exported graph has one output: export the ConvTasNet holding it")


def _affine(graph: Graph, name: str, weight, bias, hint: str) -> str:
    product = graph.node("MatMul", [name, graph.constant(weight.numpy(), f"{hint}_weight")], f"{hint}_matmul")
    return graph.node("Add", [product, graph.constant(bias.numpy(), f"{hint}_bias")], hint)


def _prelu(graph: Graph, name: str, slope, hint: str) -> str:
    return graph.node("PRelu", [name, graph.constant(slope.numpy(), f"{hint}_slope")], hint)


def _depthwise(graph: Graph, block: TemporalConvBlock, name: str, hint: str) -> str:
    """The dilated depthwise convolution of (batch, frames, H), in (batch, H, frames) for ONNX's Conv."""
    channels_first = graph.node("Transpose", [name], f"{hint}_channels_first", perm=[0, 2, 1])
    before, after = block.padding
    weight = graph.constant(block.depthwise_weight.numpy().transpose(0, 2, 1), f"{hint}_weight")
    conv = graph.node("Conv", [channels_first, weight, graph.constant(block.depthwise_bias.numpy(), f"{hint}_bias")],
                      f"{hint}_conv", kernel_shape=[block.kernel_size], pads=[before, after],
                      dilations=[block.dilation], group=block.hidden_channels)
    return graph.node("Transpose", [conv], hint, perm=[0, 2, 1])


def _block(graph: Graph, block: TemporalConvBlock, u: str, hint: str) -> tuple[str, str]:
    h = _prelu(graph, _affine(graph, u, block.in_weight, block.in_bias, f"{hint}_in"), block.in_slope,
               f"{hint}_in_prelu")
    h = _normalize(graph, block.in_norm, h, f"{hint}_in_norm")
    h = _prelu(graph, _depthwise(graph, block, h, f"{hint}_depthwise"), block.depthwise_slope,
               f"{hint}_depthwise_prelu")
    h = _normalize(graph, block.depthwise_norm, h, f"{hint}_depthwise_norm")
    skip = _affine(graph, h, block.skip_weight, block.skip_bias, f"{hint}_skip")
    if block.residual:
        u = graph.node("Add", [u, _affine(graph, h, block.residual_weight, block.residual_bias,
                                          f"{hint}_residual")], f"{hint}_out")
    return u, skip


@register_converter(ConvTasNet)
def _conv_tasnet(graph: Graph, model: ConvTasNet, value: Value) -> Value:
    """Mixtures (batch, T) -> sources (batch, S, T), T the exported length."""
    if len(value.shape) != 2:
        raise NotImplementedError(f"export_onnx: {model._label()} (ConvTasNet) reads mixtures (batch, time); got "
                                  f"a value of shape {value.shape}")
    hint = label(model)
    length = value.shape[1]
    padded, hop, n, s = model.padded_length(length), model.stride, model.N, model.num_sources
    frames = (padded - model.L) // hop + 1
    signal = _reshape(graph, value.name, (0, 1, length), f"{hint}_signal")
    encoded = graph.node("Conv", [signal, graph.constant(model.encoder_weight.numpy().transpose(0, 2, 1),
                                                         f"{hint}_encoder_weight")],
                         f"{hint}_encoder", kernel_shape=[model.L], strides=[hop], pads=[0, padded - length])
    features = graph.node("Transpose", [graph.node("Relu", [encoded], f"{hint}_encoder_relu")], f"{hint}_features",
                          perm=[0, 2, 1])
    u = _normalize(graph, model.input_norm, features, f"{hint}_input_norm")
    u = _affine(graph, u, model.bottleneck_weight, model.bottleneck_bias, f"{hint}_bottleneck")
    skip = None
    for i, block in enumerate(model.blocks):
        u, part = _block(graph, block, u, f"{hint}_block{i}")
        skip = part if skip is None else graph.node("Add", [skip, part], f"{hint}_skip_sum")
    logits = _affine(graph, _prelu(graph, skip, model.output_slope, f"{hint}_output_prelu"), model.mask_weight,
                     model.mask_bias, f"{hint}_mask_logits")
    masks = graph.node("Sigmoid" if model.mask_activation == "sigmoid" else "Relu", [logits], f"{hint}_masks")
    masks = graph.node("Transpose", [_reshape(graph, masks, (0, frames, s, n), f"{hint}_split_sources")],
                       f"{hint}_source_masks", perm=[0, 2, 1, 3])
    expanded = graph.node("Unsqueeze", [features, graph.constant([1], f"{hint}_source_axis", np.int64)],
                          f"{hint}_expanded")
    masked = graph.node("Mul", [expanded, masks], f"{hint}_masked")
    flat = graph.node("Transpose", [_reshape(graph, masked, (-1, frames, n), f"{hint}_flat")],
                      f"{hint}_decoder_input", perm=[0, 2, 1])
    decoded = graph.node("ConvTranspose", [flat, graph.constant(model.decoder_weight.numpy().transpose(0, 2, 1),
                                                                f"{hint}_decoder_weight")],
                         f"{hint}_decoder", kernel_shape=[model.L], strides=[hop])
    out_length = (frames - 1) * hop + model.L
    sources = _reshape(graph, decoded, (-1, s, out_length), f"{hint}_sources")
    cut = graph.node("Slice", [sources, graph.constant([0], f"{hint}_start", np.int64),
                               graph.constant([length], f"{hint}_end", np.int64),
                               graph.constant([2], f"{hint}_time_axis", np.int64)], hint)
    return Value(cut, (value.shape[0], s, length))

@register_converter(P4CNN)
def _p4cnn(graph: Graph, model: P4CNN, value: Value) -> Value:
    """The group convolutions, the group pool, the mean over the pixels, the classifier (built
    here for the exported shape if the model was never called: P4CNN.build leaves them)."""
    if not model.features.built:
        model.features.build(value.shape)
    if not model.classifier.built:
        model.classifier.build((None, model.channels[-1]))
    pooled = convert(graph, model.group_pool, convert_chain(graph, model.features, value))
    pooled = graph.layout(pooled, "nhwc")
    hint = label(model)
    features = _reduce(graph, "ReduceMean", pooled.name, (1, 2), f"{hint}_pixel_mean")
    return convert(graph, model.classifier, Value(features, (pooled.shape[0], pooled.shape[3])))
