"""Post-training int8 quantization: the array functions against PyTorch's quantized tensors and
observers (bit for bit), the quantized Dense and Conv2D layers against integer references
computed here and against the float layers' error bound, whole models (digits MLP and CNN)
that keep their accuracy in a quarter of the bytes, the walk through containers, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as torch_F
from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver

import lamina
from helpers import randn
from lamina import functional as F
from lamina import nn, optim
from lamina.data import load_digits, train_val_test_split
from lamina.errors import ShapeError
from lamina.nn import quantize as Q
from lamina.nn.quantize import QuantizedConv2D, QuantizedDense
from lamina.train import Trainer

# torch warns that its quantized tensor types are deprecated; they are the reference here
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TORCH_DTYPES = {"int8": torch.qint8, "uint8": torch.quint8}
RANGES = {"int8": (-128, 127), "uint8": (0, 255)}


def torch_per_tensor(x, scale, zero_point, dtype):
    return torch.quantize_per_tensor(torch.tensor(x), float(scale), int(zero_point), TORCH_DTYPES[dtype])


def torch_per_channel(x, scales, zero_points, axis, dtype):
    return torch.quantize_per_channel(torch.tensor(x), torch.tensor(np.asarray(scales, np.float64)),
                                      torch.tensor(np.asarray(zero_points, np.int64)), axis, TORCH_DTYPES[dtype])


def observed(observer, *batches):
    """torch's (scale, zero point) after ``observer`` has seen ``batches``, as NumPy arrays.
    Observers get ``reduce_range=False``: torch's x86 default for dynamic quantization is 7-bit
    activations (reduce_range=True), while lamina's layers use the full 8 bits."""
    for batch in batches:
        observer(torch.tensor(np.asarray(batch, np.float32)))
    scale, zero_point = (t.numpy() for t in observer.calculate_qparams())
    if not isinstance(observer, PerChannelMinMaxObserver):       # one value, in an array of one
        return scale.reshape(()), zero_point.reshape(())
    return scale, zero_point


# -- array level, against torch ----------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("shape", [(5,), (3, 4, 7), (2, 6, 6, 3), (1001,)])
def test_quantize_per_tensor_equals_torch(shape, dtype):
    rng = np.random.default_rng(len(shape))
    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    q_min, q_max = RANGES[dtype]
    for scale, zero_point in [(0.0123, 0), (0.004, int(rng.integers(q_min, q_max + 1))), (0.25, q_max - 3)]:
        q = Q.quantize_per_tensor(x, scale, zero_point, dtype)
        theirs = torch_per_tensor(x, scale, zero_point, dtype)
        assert q.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(q, theirs.int_repr().numpy())
        np.testing.assert_array_equal(Q.dequantize(q, scale, zero_point), theirs.dequantize().numpy())


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("shape, axis", [((4, 9), 0), ((4, 9), 1), ((6, 3, 3, 2), 0), ((6, 3, 3, 2), 3),
                                         ((2, 5, 7), -1)])
def test_quantize_per_channel_equals_torch(shape, axis, dtype):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    channels = shape[axis]
    scales = rng.uniform(0.005, 0.05, channels).astype(np.float32)
    zero_points = rng.integers(*RANGES[dtype], channels)
    q = Q.quantize_per_channel(x, scales, zero_points, axis, dtype)
    theirs = torch_per_channel(x, scales, zero_points, axis % len(shape), dtype)
    np.testing.assert_array_equal(q, theirs.int_repr().numpy())
    np.testing.assert_array_equal(Q.dequantize(q, scales, zero_points, axis=axis), theirs.dequantize().numpy())


@pytest.mark.parametrize("length", [3, 20])          # torch's scalar tail and its vector loop
def test_ties_round_half_to_even_after_the_zero_point_as_torch(length):
    x = np.resize(np.array([1.25, 0.75, -1.25, 0.25, 1.75, -0.25, 2.25], np.float32), length)  # x / 0.5 = k + 0.5
    for zero_point in (3, 0):
        q = Q.quantize_per_tensor(x, 0.5, zero_point, "int8")
        np.testing.assert_array_equal(q, torch_per_tensor(x, 0.5, zero_point, "int8").int_repr().numpy())
        per_channel = Q.quantize_per_channel(x[None], [0.5], [zero_point], 0, "int8")
        np.testing.assert_array_equal(per_channel, torch_per_channel(x[None], [0.5], [zero_point], 0,
                                                                     "int8").int_repr().numpy())
    # 2.5 + 3 = 5.5 rounds to 6 (round(2.5) + 3 would be 5); 1.5 + 3 -> 4.5 -> 4; -2.5 + 3 -> 0.5 -> 0
    np.testing.assert_array_equal(Q.quantize_per_tensor(x[:3], 0.5, 3, "int8"), [6, 4, 0])


def test_values_a_float32_rounding_away_from_ties_match_torch_per_tensor_and_per_channel():
    """Right next to k + 0.5, where rounding x · (1 / s) + z once or twice gives different
    integers: each function rounds as its torch namesake."""
    rng = np.random.default_rng(3)
    scale, zero_point = np.float32(0.0371), 17
    x = ((rng.integers(-100, 100, 4000) + 0.5) * np.float64(scale)).astype(np.float32)
    x = np.nextafter(x, x + rng.choice([-1, 0, 1], x.size).astype(np.float32))
    q = Q.quantize_per_tensor(x, scale, zero_point, "int8")
    np.testing.assert_array_equal(q, torch_per_tensor(x, scale, zero_point, "int8").int_repr().numpy())
    per_channel = Q.quantize_per_channel(x.reshape(2, -1), [scale] * 2, [zero_point] * 2, 0, "int8")
    theirs = torch_per_channel(x.reshape(2, -1), [scale] * 2, [zero_point] * 2, 0, "int8").int_repr().numpy()
    np.testing.assert_array_equal(per_channel, theirs)
    assert (per_channel.reshape(-1) != q).any()      # the case where the two ways differ does occur


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_values_at_and_beyond_the_clamp_edges(dtype):
    q_min, q_max = RANGES[dtype]
    scale, zero_point = 0.5, q_min + 10
    edges = np.array([q_min - zero_point, q_max - zero_point], np.float64)
    x = np.concatenate([edges * scale, (edges + [-0.49, 0.49]) * scale, (edges + [-0.51, 0.51]) * scale,
                        (edges + [-1, 1]) * scale, [-1e30, 1e30, 0.0]]).astype(np.float32)
    q = Q.quantize_per_tensor(x, scale, zero_point, dtype)
    np.testing.assert_array_equal(q, torch_per_tensor(x, scale, zero_point, dtype).int_repr().numpy())
    np.testing.assert_array_equal(q, [q_min, q_max] * 4 + [q_min, q_max, zero_point])


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("data", ["mixed", "positive", "negative", "zeros", "constant", "tiny"])
def test_choose_qparams_equals_torch_min_max_observer(data, dtype):
    rng = np.random.default_rng(7)
    x = {"mixed": rng.standard_normal(50) * 3, "positive": rng.uniform(0.2, 5, 50),
         "negative": -rng.uniform(0.2, 5, 50), "zeros": np.zeros(50), "constant": np.full(50, 2.5),
         "tiny": rng.standard_normal(50) * 1e-9}[data].astype(np.float32)
    for symmetric, qscheme in ((False, torch.per_tensor_affine), (True, torch.per_tensor_symmetric)):
        scale, zero_point = Q.choose_qparams(x.min(), x.max(), dtype, symmetric=symmetric)
        theirs = observed(MinMaxObserver(dtype=TORCH_DTYPES[dtype], qscheme=qscheme, reduce_range=False), x)
        assert scale.dtype == np.float32 and scale.shape == ()
        np.testing.assert_array_equal(scale, theirs[0])
        np.testing.assert_array_equal(zero_point, theirs[1])


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("qscheme", [torch.per_channel_symmetric, torch.per_channel_affine])
@pytest.mark.parametrize("axis", [0, 3])
def test_per_channel_qparams_equal_torch_per_channel_observer(axis, qscheme, dtype):
    w = randn(5, 3, 3, 4, seed=axis).astype(np.float32)
    w[1 if axis == 0 else (..., 1)] = np.abs(w[1 if axis == 0 else (..., 1)])     # a channel without negatives
    others = tuple(i for i in range(4) if i != axis)
    scales, zero_points = Q.choose_qparams(w.min(axis=others), w.max(axis=others), dtype,
                                           symmetric=qscheme == torch.per_channel_symmetric)
    theirs = observed(PerChannelMinMaxObserver(ch_axis=axis, dtype=TORCH_DTYPES[dtype], qscheme=qscheme,
                                               reduce_range=False), w)
    np.testing.assert_array_equal(scales, theirs[0])
    np.testing.assert_array_equal(zero_points, theirs[1])


def test_array_functions_name_what_is_wrong():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"quantize_per_tensor: dtype must be one of \['int8', 'uint8'\], got 'int4'"):
        Q.quantize_per_tensor(x, 0.1, 0, "int4")
    with pytest.raises(ValueError, match="quantize_per_tensor: scales must be positive"):
        Q.quantize_per_tensor(x, -0.1, 0, "int8")
    with pytest.raises(ValueError, match=r"quantize_per_tensor: zero points must lie in the uint8 range \[0, 255\]"):
        Q.quantize_per_tensor(x, 0.1, -1, "uint8")
    with pytest.raises(ShapeError, match=r"quantize_per_channel: expected 3 scales .*axis 1 of shape \(2, 3\)"):
        Q.quantize_per_channel(x, [0.1, 0.1], [0, 0], 1)
    with pytest.raises(ValueError, match="quantize_per_channel: axis must be an int in"):
        Q.quantize_per_channel(x, [0.1] * 3, [0] * 3, 2)
    with pytest.raises(ValueError, match="choose_qparams: expected x_min <= x_max"):
        Q.choose_qparams(1.0, -1.0)
    with pytest.raises(ValueError, match="choose_qparams: the range must be finite"):
        Q.choose_qparams(0.0, np.inf)
    with pytest.raises(ValueError, match="dequantize: expected an integer array"):
        Q.dequantize(x, 0.1, 0)


# -- quantized layers, against integer references --------------------------------------------------

def torch_quantized_operands(x, weight, weight_axis):
    """(q_x, s_x, z_x) and (q_w, s_w) as torch quantizes them: the input uint8 per tensor from its
    min and max, the weight int8 per output channel, symmetric."""
    s_x, z_x = observed(MinMaxObserver(dtype=torch.quint8, reduce_range=False), x)
    q_x = torch_per_tensor(x, s_x, z_x, "uint8").int_repr().numpy()
    s_w, z_w = observed(PerChannelMinMaxObserver(ch_axis=weight_axis, dtype=torch.qint8,
                                                 qscheme=torch.per_channel_symmetric, reduce_range=False), weight)
    q_w = torch_per_channel(weight, s_w, z_w, weight_axis, "int8").int_repr().numpy()
    return (q_x, np.float32(s_x), int(z_x)), (q_w, s_w.astype(np.float32))


def rescaled(acc, s_x, s_w, bias):
    """z = (s_x s_w) acc + b in float32, the float part both layers share."""
    return acc.astype(np.float32) * (s_x * s_w) + bias


def make_dense(activation=None):
    lamina.manual_seed(0)
    layer = nn.Dense(6, activation=activation, name="fc")
    x = randn(2, 3, 9, seed=1).astype(np.float32)
    layer(x)
    layer.bias.data[...] = randn(6, seed=2) * 0.1
    layer.weight.data[:, 2] *= 0.05                     # a unit of small weights gets its own small scale
    return layer, x


def test_quantized_dense_equals_an_integer_reference():
    layer, x = make_dense()
    (q_x, s_x, z_x), (q_w, s_w) = torch_quantized_operands(x, layer.weight.numpy(), weight_axis=1)
    acc = np.einsum("abi,ik->abk", q_x.astype(np.int64) - z_x, q_w.astype(np.int64))
    quantized = QuantizedDense(layer).eval()
    out = quantized(x).numpy()
    assert out.dtype == np.float32 and out.shape == (2, 3, 6)
    np.testing.assert_array_equal(out, rescaled(acc, s_x, s_w, layer.bias.numpy()))
    np.testing.assert_array_equal(quantized.weight, q_w)


def test_quantized_dense_is_within_the_quantization_error_bound_of_the_float_layer():
    layer, x = make_dense(activation=None)
    quantized = QuantizedDense(layer).eval()
    w = layer.weight.numpy().astype(np.float64)
    (_, s_x, _), (_, s_w) = torch_quantized_operands(x, layer.weight.numpy(), weight_axis=1)
    exact = x.astype(np.float64) @ w + layer.bias.numpy()
    bound = (s_x / 2 * np.abs(w).sum(axis=0) + s_w / 2 * np.abs(x).sum(axis=-1, keepdims=True)
             + w.shape[0] * s_x * s_w / 4)
    error = np.abs(quantized(x).numpy() - exact)
    assert (error <= bound + 1e-5 * np.abs(exact).max()).all()
    assert error.max() > 0


def test_a_quantized_layer_keeps_its_activation():
    layer, x = make_dense(activation="relu")
    linear = QuantizedDense(make_dense(activation=None)[0]).eval()(x).numpy()
    out = QuantizedDense(layer).eval()(x).numpy()
    np.testing.assert_array_equal(out, np.maximum(linear, 0))
    assert (out == 0).any() and (out > 0).any()


CONV_CASES = {
    "same": dict(kernel_size=3, padding="same"),
    "stride 2": dict(kernel_size=3, stride=2),
    "groups 2, padding 1": dict(kernel_size=(3, 2), padding=1, groups=2),
    "dilation 2": dict(kernel_size=3, padding="same", dilation=2),
}


def conv_reference(q_x, z_x, q_w, stride, pads, dilation, groups):
    """The int64 sums of (q_x - z_x) with q_w by one einsum per kernel tap and group."""
    shifted = np.pad(q_x.astype(np.int64) - z_x, ((0, 0), pads[0], pads[1], (0, 0)))
    k, fh, fw, c_group = q_w.shape
    (sh, sw), (dh, dw) = stride, dilation
    ho = (shifted.shape[1] - dh * (fh - 1) - 1) // sh + 1
    wo = (shifted.shape[2] - dw * (fw - 1) - 1) // sw + 1
    acc = np.zeros((q_x.shape[0], ho, wo, k), np.int64)
    k_group = k // groups
    for g in range(groups):
        channels, filters = slice(g * c_group, (g + 1) * c_group), slice(g * k_group, (g + 1) * k_group)
        for i in range(fh):
            for j in range(fw):
                rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
                cols = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
                window = shifted[:, rows, cols, channels]
                acc[..., filters] += np.einsum("nyxc,kc->nyxk", window, q_w[filters, i, j].astype(np.int64))
    return acc


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_quantized_conv2d_equals_an_integer_reference_and_torch_on_the_dequantized_operands(case):
    options = CONV_CASES[case]
    layer = nn.Conv2D(4, **options, name="conv")
    x = randn(2, 7, 6, 4, seed=3).astype(np.float32)
    layer(x)
    layer.bias.data[...] = randn(4, seed=4) * 0.1
    quantized = QuantizedConv2D(layer).eval()
    out = quantized(x).numpy()
    (q_x, s_x, z_x), (q_w, s_w) = torch_quantized_operands(x, layer.weight.numpy(), weight_axis=0)
    fh, fw = layer.kernel_size
    d = layer.dilation
    if layer.padding == "same":               # stride 1: the extent d (f - 1), extra pixel at the end
        pads = [((d[a] * (f - 1)) // 2, d[a] * (f - 1) - (d[a] * (f - 1)) // 2) for a, f in enumerate((fh, fw))]
    else:
        pads = [(0, 0)] * 2 if layer.padding == "valid" else [(p, p) for p in layer.padding]
    acc = conv_reference(q_x, z_x, q_w, layer.stride, pads, d, layer.groups)
    np.testing.assert_array_equal(out, rescaled(acc, s_x, s_w, layer.bias.numpy()))
    # the same geometry as torch's convolution of the values the integers stand for
    x_hat = torch.tensor(((q_x.astype(np.float64) - z_x) * s_x).transpose(0, 3, 1, 2))
    w_hat = torch.tensor((q_w * s_w.astype(np.float64)[:, None, None, None]).transpose(0, 3, 1, 2))
    padded = torch_F.pad(x_hat, (*pads[1], *pads[0]))
    theirs = torch_F.conv2d(padded, w_hat, torch.tensor(layer.bias.numpy(), dtype=torch.float64), stride=layer.stride,
                            dilation=d, groups=layer.groups).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(out, theirs, rtol=1e-5, atol=1e-5 * np.abs(theirs).max())
    error = np.abs(out - layer(x).numpy())
    assert error.max() < 0.05 * np.abs(theirs).max()


# -- whole models ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(size=8)
    x = x.astype(np.float32) / 255
    (x_train, y_train), _, (x_test, y_test) = train_val_test_split(x, y, val=0.0, test=0.25, seed=0)
    return x_train, y_train, x_test, y_test


def trained(model, digits, epochs):
    lamina.manual_seed(0)
    x_train, y_train, _, _ = digits
    trainer = Trainer(model, lambda out, labels: F.categorical_cross_entropy(out, labels, from_logits=True),
                      optim.Adam(model, lr=5e-3), metrics=(), verbose=0)
    trainer.fit((x_train, y_train), epochs=epochs, batch_size=32, seed=0)
    return model.eval()


@pytest.fixture(scope="module")
def mlp(digits):
    return trained(nn.Sequential(nn.Flatten(), nn.Dense(64, activation="relu"), nn.Dense(10)), digits, epochs=10)


@pytest.fixture(scope="module")
def cnn(digits):
    model = nn.Sequential(nn.Conv2D(8, 3, padding="same", activation="relu"), nn.MaxPool2D(2), nn.Flatten(),
                          nn.Dense(10))
    return trained(model, digits, epochs=6)


def accuracy(model, digits) -> float:
    _, _, x_test, y_test = digits
    with lamina.no_grad():
        return float((model(x_test).numpy().argmax(axis=1) == y_test).mean())


def snapshot(model):
    return {key: np.array(value) for key, value in model.state_dict().items()}


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_a_dynamically_quantized_model_keeps_its_accuracy_in_a_quarter_of_the_bytes(name, digits, request):
    model = request.getfixturevalue(name)
    before = snapshot(model)
    quantized = Q.quantize_dynamic(model)
    float_accuracy, quantized_accuracy = accuracy(model, digits), accuracy(quantized, digits)
    assert float_accuracy > 0.9                                 # about 0.95 (mlp) and 0.93 (cnn), the same quantized
    assert abs(quantized_accuracy - float_accuracy) <= 0.01, (float_accuracy, quantized_accuracy)
    layers = [m for m in quantized.modules() if isinstance(m, (QuantizedDense, QuantizedConv2D))]
    floats = [m for m in model.modules() if type(m) in (nn.Dense, nn.Conv2D)]
    assert len(layers) == len(floats) == 2
    for q, f in zip(layers, floats):
        assert q.weight.dtype == np.int8 and q.weight.nbytes * 4 == f.weight.data.nbytes
    size, quantized_size = Q.model_size_bytes(model), Q.model_size_bytes(quantized)  # mlp 19240 -> 5328 bytes
    assert size / quantized_size > 3.4, (size, quantized_size)
    # the original is untouched: same layers, same weights, still float
    assert all(type(m) is not QuantizedDense for m in model.modules())
    after = snapshot(model)
    assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k]) for k in before)


def test_a_statically_quantized_cnn_takes_its_input_ranges_from_the_calibration_batches(cnn, digits):
    x_train = digits[0]
    batches = [x_train[i:i + 64] for i in range(0, 256, 64)]
    quantized = Q.quantize_static(cnn, batches)
    conv, dense = quantized[0], quantized[3]
    assert conv.static and dense.static
    with lamina.no_grad():
        dense_inputs = [cnn[:3](b).numpy() for b in batches]
    for layer, inputs in ((conv, batches), (dense, dense_inputs)):
        scale, zero_point = observed(MinMaxObserver(dtype=torch.quint8, reduce_range=False), *inputs)
        np.testing.assert_array_equal(layer.input_scale, scale)
        np.testing.assert_array_equal(layer.input_zero_point, zero_point)
    assert abs(accuracy(quantized, digits) - accuracy(cnn, digits)) <= 0.01
    # outside the calibrated range the input is clamped: twice the pixels give what the brightest gives
    probe = x_train[:4]
    with lamina.no_grad():
        clamped = conv(np.minimum(probe * 2, float(conv.input_scale) * (255 - int(conv.input_zero_point)))).numpy()
        np.testing.assert_array_equal(conv(probe * 2).numpy(), clamped)
    assert "input=uint8 static (scale=" in repr(quantized)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2D(4, 3, activation="relu"), nn.BatchNorm(), nn.Flatten())
        self.blocks = nn.ModuleList([nn.Dense(8, activation="tanh"), nn.Dense(8, activation="tanh")])
        self.head = nn.Dense(3)

    def forward(self, x):
        x = self.features(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def test_the_walk_reaches_attributes_module_lists_nested_sequentials_and_functional_models():
    x = randn(5, 6, 6, 2, seed=5).astype(np.float32)
    net = Net()
    net(x)
    net.eval()
    quantized = Q.quantize_dynamic(net)
    assert isinstance(quantized.features[0], QuantizedConv2D) and type(quantized.features[1]) is nn.BatchNorm
    assert all(isinstance(block, QuantizedDense) for block in quantized.blocks) and isinstance(quantized.head,
                                                                                                 QuantizedDense)
    with lamina.no_grad():
        expected, out = net(x).numpy(), quantized(x).numpy()
    np.testing.assert_allclose(out, expected, atol=0.05 * np.abs(expected).max())

    inputs = nn.Input((6,))
    shared = nn.Dense(6, activation="relu")
    outputs = nn.Dense(2)(shared(shared(inputs)))
    functional = nn.Model(inputs, outputs)
    v = randn(4, 6, seed=6).astype(np.float32)
    functional(v)
    quantized = Q.quantize_dynamic(functional, layers=[nn.Dense])
    assert len(quantized.layers) == 2 and all(isinstance(layer, QuantizedDense) for layer in quantized.layers)
    with lamina.no_grad():
        expected, out = functional(v).numpy(), quantized(v).numpy()
    assert not np.array_equal(out, expected)            # the graph's calls run the quantized layers
    np.testing.assert_allclose(out, expected, atol=0.05 * np.abs(expected).max())


def test_quantizing_only_the_dense_layers_leaves_the_convolution_float_and_frozen(cnn, digits):
    quantized = Q.quantize_dynamic(cnn, layers=(nn.Dense,))
    assert type(quantized[0]) is nn.Conv2D and isinstance(quantized[3], QuantizedDense)
    assert not any(p.trainable for p in quantized.parameters())
    assert all(p.trainable for p in cnn.parameters())
    out = quantized(digits[2][:8])                      # gradients on: the frozen float layer makes no graph
    assert out.shape == (8, 10) and not out.requires_grad


def test_repr_shows_the_quantized_layers(mlp):
    text = repr(Q.quantize_dynamic(mlp))
    assert "QuantizedDense(64 -> 64, activation='relu', weight=int8 per channel, input=uint8 dynamic)" in text
    assert "QuantizedDense(64 -> 10, weight=int8 per channel, input=uint8 dynamic)" in text
    assert "Flatten()" in text


# -- errors -------------------------------------------------------------------------------------

def test_quantized_layers_refuse_gradients_and_training_mode(mlp):
    quantized = Q.quantize_dynamic(mlp)
    x = lamina.tensor(np.zeros((2, 8, 8, 1), np.float32), requires_grad=True)
    with pytest.raises(ValueError, match="QuantizedDense 'dense': .*inference only.*requires grad"):
        quantized(x)
    quantized.train()
    with pytest.raises(RuntimeError, match="QuantizedDense 'dense': .*inference only.*training mode"):
        quantized(np.zeros((2, 8, 8, 1), np.float32))


def test_bad_requests_and_inputs_give_named_errors(mlp):
    with pytest.raises(ValueError, match=r"quantize_dynamic: dtype must be one of \['int8'\].*'float16'"):
        Q.quantize_dynamic(mlp, dtype="float16")
    with pytest.raises(ValueError, match=r"quantize_dynamic: layers must be among \['Dense', 'Conv2D'\], got also "
                                         r"\['DepthwiseConv2D'\]"):
        Q.quantize_dynamic(mlp, layers=(nn.Dense, nn.DepthwiseConv2D))
    with pytest.raises(ValueError, match="quantize_dynamic: Dense 'late' has no weights yet"):
        Q.quantize_dynamic(nn.Sequential(nn.Dense(3, name="late")))
    with pytest.raises(ValueError, match="quantize_static: calibration_batches gave no batch"):
        Q.quantize_static(mlp, [])
    with pytest.raises(ShapeError, match="QuantizedDense 'dense_1'.*the last axis must have the 64 features"):
        Q.quantize_dynamic(mlp)[2](np.zeros((2, 5), np.float32))
    with pytest.raises(ShapeError, match="QuantizedConv2D 'c'.*C=2 channels"):
        layer = nn.Conv2D(3, 3, name="c")
        layer(np.zeros((1, 5, 5, 2), np.float32))
        QuantizedConv2D(layer).eval()(np.zeros((1, 5, 5, 3), np.float32))


def test_summary_of_a_quantized_model_traces_its_layers(mlp):
    quantized = Q.quantize_dynamic(mlp)
    assert quantized[1](np.zeros((0, 64), np.float32)).shape == (0, mlp[1].units)   # an empty batch: shapes only
    text = str(quantized.summary())
    assert "QuantizedDense" in text and f"{mlp[1].units * 64:,}" in text          # the first layer's MACs
