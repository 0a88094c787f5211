"""ONNX forms of the spectral convolutions (SpectralConv1D / SpectralConv2D) and the Fourier
neural operators (FNO1D / FNO2D), on ONNX's DFT operator (opset 17).

The real FFT is DFT with ``onesided=1`` on a real input (a trailing axis of 1). ONNX defines
no inverse real FFT (``onesided`` is for real inputs only), so the inverse is written as the
complex inverse DFT of the Hermitian-completed spectrum, X_{n-k} = conj(X_k) for the kept
k >= 1, whose real part is irfft's result (irfft also ignores the imaginary parts of X_0 and,
for even n, of X_{n/2}, which add only to the imaginary part). The channel mixing at each
kept frequency is one batched MatMul with lamina's real 2x2-block form of the complex weights.
"""

from __future__ import annotations

import numpy as np

from lamina import nn
from lamina.errors import ShapeError
from lamina.export.onnx_activations import ACTIVATIONS
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter
from lamina.models.fno import FNO1D, FNO2D, grid_coordinates


def _ints(graph: Graph, values, hint: str) -> str:
    return graph.constant(list(values), hint, np.int64)


def _slice(graph: Graph, x: str, axis: int, start: int, stop: int, hint: str, step: int = 1) -> str:
    bounds = [_ints(graph, [v], f"{hint}_{what}") for what, v in (("starts", start), ("ends", stop),
                                                                   ("axes", axis), ("steps", step))]
    return graph.node("Slice", [x, *bounds], hint)


def _block_weights(weight: np.ndarray) -> np.ndarray:
    """(K, C_in, C_out, 2) complex weights -> (K, 2 C_in, 2 C_out) real matrices acting on
    interleaved (re, im) rows: [[wr, wi], [-wi, wr]] per channel pair, as lamina mixes them."""
    wr, wi = weight[..., 0], weight[..., 1]
    k, c_in, c_out = wr.shape
    blocks = np.stack([np.stack([wr, wi], axis=-1), np.stack([-wi, wr], axis=-1)], axis=2)
    return blocks.reshape(k, 2 * c_in, 2 * c_out)


def _mix(graph: Graph, spectrum: str, weight: np.ndarray, kept_shape: tuple, hint: str) -> str:
    """The channel mixing of a spectrum (N, *kept_shape, C_in, 2) -> (N, *kept_shape, C_out, 2)."""
    k = int(np.prod(kept_shape))
    c_in, c_out = weight.shape[-3], weight.shape[-2]
    rows = graph.node("Reshape", [spectrum, _ints(graph, [0, k, 2 * c_in], f"{hint}_rows_shape")], f"{hint}_rows")
    rows = graph.node("Transpose", [rows], f"{hint}_by_frequency", perm=[1, 0, 2])
    blocks = graph.constant(_block_weights(weight.reshape(k, c_in, c_out, 2)), f"{hint}_blocks")
    mixed = graph.node("Transpose", [graph.node("MatMul", [rows, blocks], f"{hint}_matmul")], f"{hint}_by_sample",
                       perm=[1, 0, 2])
    return graph.node("Reshape", [mixed, _ints(graph, [0, *kept_shape, c_out, 2], f"{hint}_shape")], f"{hint}_mixed")


def _zero_pad(graph: Graph, x: str, rank: int, axis: int, after: int, hint: str) -> str:
    if after == 0:
        return x
    pads = [0] * (2 * rank)
    pads[rank + axis] = after
    return graph.node("Pad", [x, _ints(graph, pads, f"{hint}_pads")], hint)


def _inverse_real(graph: Graph, spectrum: str, rank: int, axis: int, kept: int, n: int, hint: str) -> str:
    """irfft along ``axis`` (length n) of a complex spectrum holding the frequencies 0 .. kept - 1,
    still complex (a trailing axis of 2) with the real part in [..., 0] (see the module docstring)."""
    mirrored = min(kept - 1, (n - 1) // 2)       # the kept k >= 1 whose conjugate lands at n - k
    parts = [_zero_pad(graph, spectrum, rank, axis, n - kept - mirrored, f"{hint}_pad")]
    if mirrored:
        reversed_ = _slice(graph, spectrum, axis, mirrored, 0, f"{hint}_reversed", step=-1)
        conj = graph.constant(np.array([1.0, -1.0]), f"{hint}_conj_sign")
        parts.append(graph.node("Mul", [reversed_, conj], f"{hint}_conj"))
    full = graph.node("Concat", parts, f"{hint}_full", axis=axis) if len(parts) > 1 else parts[0]
    return graph.node("DFT", [full], f"{hint}_idft", axis=axis, inverse=1)


def _real_part(graph: Graph, complex_value: str, rank: int, hint: str) -> str:
    real = _slice(graph, complex_value, rank - 1, 0, 1, f"{hint}_real")
    return graph.node("Squeeze", [real, _ints(graph, [rank - 1], f"{hint}_axis")], hint)


def _spectral_1d(graph: Graph, weight: np.ndarray, value: Value, hint: str) -> Value:
    n, length, _ = value.shape
    modes, c_out = weight.shape[0], weight.shape[2]
    x = graph.node("Unsqueeze", [value.name, _ints(graph, [3], f"{hint}_complex_axis")], f"{hint}_as_signal")
    spectrum = graph.node("DFT", [x], f"{hint}_rfft", axis=1, onesided=1)          # (N, L // 2 + 1, C, 2)
    kept = _slice(graph, spectrum, 1, 0, modes, f"{hint}_kept")
    mixed = _mix(graph, kept, weight, (modes,), hint)
    out = _inverse_real(graph, mixed, 4, 1, modes, length, hint)
    return Value(_real_part(graph, out, 4, hint), (n, length, c_out))


def _spectral_2d(graph: Graph, weight: np.ndarray, value: Value, hint: str) -> Value:
    value = graph.layout(value, "nhwc")
    n, h, w, _ = value.shape
    rows, m2, _, c_out, _ = weight.shape
    m1 = rows // 2
    x = graph.node("Unsqueeze", [value.name, _ints(graph, [4], f"{hint}_complex_axis")], f"{hint}_as_signal")
    along_w = _slice(graph, graph.node("DFT", [x], f"{hint}_rfft_w", axis=2, onesided=1), 2, 0, m2, f"{hint}_m2")
    spectrum = graph.node("DFT", [along_w], f"{hint}_fft_h", axis=1)                  # (N, H, m2, C, 2)
    ends = [_slice(graph, spectrum, 1, 0, m1, f"{hint}_low"), _slice(graph, spectrum, 1, h - m1, h, f"{hint}_high")]
    kept = graph.node("Concat", ends, f"{hint}_kept", axis=1)
    mixed = _mix(graph, kept, weight, (rows, m2), hint)
    low = _zero_pad(graph, _slice(graph, mixed, 1, 0, m1, f"{hint}_mixed_low"), 5, 1, h - rows, f"{hint}_gap")
    high = _slice(graph, mixed, 1, m1, rows, f"{hint}_mixed_high")
    columns = graph.node("Concat", [low, high], f"{hint}_rows", axis=1)
    columns = graph.node("DFT", [columns], f"{hint}_ifft_h", axis=1, inverse=1)
    out = _inverse_real(graph, columns, 5, 2, m2, w, f"{hint}_w")
    return Value(_real_part(graph, out, 5, hint), (n, h, w, c_out))


def _check_modes(layer, value: Value) -> None:
    spatial = tuple(value.shape[1:-1])
    if len(spatial) != layer.spatial_axes or any(m > most for m, most in zip(layer.modes, layer._most_modes(spatial))):
        raise ShapeError(f"export_onnx: {layer._label()} with modes={layer.modes} gets inputs of shape "
                         f"{value.shape}; {layer._modes_rule}")


@register_converter(nn.SpectralConv1D)
def _spectral_conv1d(graph: Graph, layer, value: Value) -> Value:
    _check_modes(layer, value)
    return _spectral_1d(graph, layer.weight.numpy(), value, label(layer))


@register_converter(nn.SpectralConv2D)
def _spectral_conv2d(graph: Graph, layer, value: Value) -> Value:
    _check_modes(layer, value)
    return _spectral_2d(graph, layer.weight.numpy(), value, label(layer))


def _lift(graph: Graph, model: FNO1D | FNO2D, value: Value) -> Value:
    """lift([a, x]) = a W_a + (x W_x + b): the coordinates' part is a constant of the grid."""
    lift = model.lift
    if not model.append_grid:
        return convert(graph, lift, value)
    hint = label(lift)
    weight, bias = lift.weight.numpy().astype(np.float64), lift.bias.numpy().astype(np.float64)
    grid = grid_coordinates(tuple(value.shape[1:-1]), np.float64, model.grid).numpy()
    offset = graph.constant(grid @ weight[model.in_channels:] + bias, f"{hint}_grid_term")
    product = graph.node("MatMul", [value.name, graph.constant(weight[:model.in_channels], f"{hint}_weight")],
                         f"{hint}_matmul")
    return Value(graph.node("Add", [product, offset], hint), (*value.shape[:-1], model.width))


def _pad_domain(graph: Graph, model: FNO1D | FNO2D, value: Value, hint: str) -> Value:
    """``model.padding`` zeros after the end of every spatial axis (one Pad node)."""
    rank, p = len(value.shape), model.padding
    pads = [0] * rank + [0] + [p] * model.spatial_axes + [0]
    padded = graph.node("Pad", [value.name, _ints(graph, pads, f"{hint}_pads")], hint)
    return Value(padded, (value.shape[0], *(n + p for n in value.shape[1:-1]), value.shape[-1]))


def _crop_domain(graph: Graph, value: Value, spatial: tuple, hint: str) -> Value:
    """The first ``spatial`` points of every spatial axis (one Slice node)."""
    axes = list(range(1, len(spatial) + 1))
    bounds = [_ints(graph, values, f"{hint}_{what}")
              for what, values in (("starts", [0] * len(spatial)), ("ends", list(spatial)), ("axes", axes))]
    cropped = graph.node("Slice", [value.name, *bounds], hint)
    return Value(cropped, (value.shape[0], *spatial, value.shape[-1]))


@register_converter(FNO1D, FNO2D)
def _fno(graph: Graph, model, value: Value) -> Value:
    """The FNO as it computes: lift, zero padding, Fourier blocks (spectral + pointwise, GELU
    between), cropping, projection."""
    gelu = ACTIVATIONS["gelu"]
    hint = label(model)
    v = _lift(graph, model, graph.layout(value, "nhwc"))
    spatial = tuple(v.shape[1:-1])
    if model.padding:
        v = _pad_domain(graph, model, v, f"{hint}_pad")
    for k in range(model.layers):
        spectral = convert(graph, model._modules[f"spectral{k}"], v)
        pointwise = convert(graph, model._modules[f"pointwise{k}"], v)
        v = graph.like(v, graph.node("Add", [spectral.name, pointwise.name], f"{hint}_block{k}"))
        if k < model.layers - 1:
            v = gelu(graph, v, f"{hint}_gelu{k}")
    if model.padding:
        v = _crop_domain(graph, v, spatial, f"{hint}_crop")
    v = gelu(graph, convert(graph, model.project_hidden, v), f"{hint}_project_gelu")
    return convert(graph, model.project_out, v)
