"""1-D convolution and pooling layers on (batch, steps, channels) sequences, against PyTorch
(which takes (batch, channels, steps): transposed at the boundary)."""

import json
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from nn_checks import gradcheck_layer

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import nn, optim
from lamina.errors import ShapeError
from lamina.nn.conv1d import AvgPool1D, Conv1D, GlobalAvgPool1D, GlobalMaxPool1D, MaxPool1D, _as_image
from lamina.nn.layer import layer_from_config, layer_to_config

TOL = {np.float64: 1e-9, np.float32: 1e-5}


@pytest.fixture(autouse=True)
def f64():
    previous = lamina.get_default_dtype()
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(previous)


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _to_torch(a):
    """(N, L, C) -> (N, C, L)."""
    return np.ascontiguousarray(a.transpose(0, 2, 1))


def _same_pads(length, f, s, d):
    """TF/Keras 'same': ceil(L / s) outputs, the odd zero of the total padding on the right."""
    extent = d * (f - 1) + 1
    out = -(-length // s)
    total = max((out - 1) * s + extent - length, 0)
    return total // 2, total - total // 2


def compare_1d(layer, torch_fn, x, dtype=np.float64, params=(), seed=0):
    """Run ``layer`` on x (N, L, C) and ``torch_fn`` on its (N, C, L) transpose; compare the
    outputs, the input gradients and the gradients of ``params`` ((name, torch tensor,
    permutation from lamina's layout to torch's)) under one random upstream gradient."""
    rtol = TOL[dtype]
    x = np.asarray(x, dtype=dtype)
    xl = lamina.tensor(x, requires_grad=True, dtype=dtype)
    out = layer(xl)
    xt = torch.tensor(_to_torch(x), requires_grad=True)
    out_t = torch_fn(xt)
    expected = out_t.detach().numpy()
    expected = expected.transpose(0, 2, 1) if expected.ndim == 3 else expected
    assert_close(out.numpy(), expected, rtol, "output")
    assert out.shape == layer.compute_output_shape(x.shape)
    up = np.random.default_rng(seed).standard_normal(out.shape).astype(dtype)
    out.backward(up)
    up_t = _to_torch(up) if up.ndim == 3 else up
    (out_t * torch.from_numpy(up_t)).sum().backward()
    assert_close(xl.grad, xt.grad.numpy().transpose(0, 2, 1), rtol, "input gradient")
    named = dict(layer.named_parameters())
    for name, tparam, perm in params:
        got = named[name].grad
        assert got is not None, f"no gradient reached {name}"
        want = tparam.grad.numpy()
        assert_close(got, want.transpose(np.argsort(perm)) if perm else want, rtol, f"gradient of {name}")
    return out


# -- Conv1D against torch.nn.Conv1d --------------------------------------------------------

CONV_CASES = [
    # filters, kernel, stride, padding, dilation, groups, steps
    (4, 3, 1, "valid", 1, 1, 9),
    (4, 3, 2, "valid", 1, 1, 10),
    (5, 4, 3, "valid", 1, 1, 11),
    (4, 3, 1, "same", 1, 1, 8),
    (4, 4, 1, "same", 1, 1, 9),
    (4, 3, 2, "same", 1, 1, 9),
    (4, 4, 3, "same", 1, 1, 10),
    (6, 3, 1, 2, 1, 1, 8),
    (6, 3, 3, 1, 1, 1, 11),
    (6, 3, 1, "same", 2, 1, 10),
    (4, 3, 1, 1, 2, 2, 9),
    (8, 3, 1, "same", 1, 4, 9),
    (4, 3, 2, 1, 1, 4, 10),
    (5, 1, 1, "valid", 1, 1, 7),
    (5, 1, 2, "valid", 1, 1, 8),
    (4, 3, 1, "causal", 1, 1, 9),
    (4, 2, 1, "causal", 3, 1, 8),
    (4, 3, 2, "causal", 1, 1, 9),
    (8, 3, 1, "causal", 2, 4, 10),
]


def _torch_conv(layer, c_in, dtype):
    """torch.nn.Conv1d with the lamina layer's weights, and the function running it with the
    layer's padding (a manual pad where torch's own padding differs)."""
    f, s, d, pad = layer.kernel_size, layer.stride, layer.dilation, layer.padding
    conv = torch.nn.Conv1d(c_in, layer.filters, f, stride=s, dilation=d, groups=layer.groups, padding=0)
    conv = conv.to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(layer.weight.numpy().transpose(0, 2, 1))))
        conv.bias.copy_(torch.from_numpy(layer.bias.numpy()))

    def run(xt):
        length = xt.shape[-1]
        if pad == "causal":
            xt = TF.pad(xt, (d * (f - 1), 0))
        elif pad == "same":
            xt = TF.pad(xt, _same_pads(length, f, s, d))
        elif pad != "valid":
            xt = TF.pad(xt, (pad, pad))
        return conv(xt)

    return conv, run


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("filters, kernel, stride, padding, dilation, groups, steps", CONV_CASES)
def test_conv1d_matches_torch(filters, kernel, stride, padding, dilation, groups, steps, dtype):
    lamina.set_default_dtype(dtype)
    c_in = 4
    x = _x((2, steps, c_in), steps)
    layer = Conv1D(filters, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
                   bias_init="normal")
    layer.build(x.shape)
    assert layer.weight.shape == (filters, kernel, c_in // groups)
    conv, run = _torch_conv(layer, c_in, dtype)
    compare_1d(layer, run, x, dtype, [("weight", conv.weight, (0, 2, 1)), ("bias", conv.bias, None)])


@pytest.mark.parametrize("padding", ["same", 1])
def test_conv1d_padding_matches_torch_own_padding(padding):
    x = _x((2, 9, 3), 1)
    layer = Conv1D(5, 3, padding=padding, bias_init="normal")
    layer.build(x.shape)
    conv = torch.nn.Conv1d(3, 5, 3, padding=padding).double()
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(layer.weight.numpy().transpose(0, 2, 1))))
        conv.bias.copy_(torch.from_numpy(layer.bias.numpy()))
    compare_1d(layer, conv, x, params=[("weight", conv.weight, (0, 2, 1)), ("bias", conv.bias, None)])


@pytest.mark.parametrize("padding", ["causal", "same"])
def test_conv1d_fft_and_activation_match_torch(padding):
    x = _x((2, 10, 3), 2)
    layer = Conv1D(4, 3, padding=padding, dilation=2, activation="tanh", algorithm="fft", bias_init="normal")
    layer.build(x.shape)
    conv, run = _torch_conv(layer, 3, np.float64)
    compare_1d(layer, lambda t: torch.tanh(run(t)), x, params=[("weight", conv.weight, (0, 2, 1)),
                                                               ("bias", conv.bias, None)])


def test_conv1d_without_bias():
    x = _x((2, 7, 3), 3)
    layer = Conv1D(4, 3, padding="causal", use_bias=False)
    out = layer(x)
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    ref = F.conv2d(x[:, None], layer.weight.numpy()[:, None], padding=(0, 2)).numpy()[:, 0, :7]
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs", [
    {"stride": 2, "padding": "same"},
    {"padding": "causal", "dilation": 2, "groups": 2},
    {"padding": 1, "activation": "tanh"},
])
def test_conv1d_gradcheck(kwargs):
    assert gradcheck_layer(Conv1D(4, 3, bias_init="normal", **kwargs), _x((2, 6, 2), 4))


def test_dropconnect_on_conv1d():
    x = _x((2, 6, 2), 6)
    layer = nn.DropConnect(Conv1D(3, 3, padding="causal"), rate=0.5)
    assert gradcheck_layer(layer, x, reseed=1)
    layer.eval()
    np.testing.assert_array_equal(layer(x).numpy(), layer.layer(x).numpy())


def test_conv1d_reshapes_are_views():
    x = lamina.tensor(_x((2, 5, 3)))
    assert np.shares_memory(_as_image(x).numpy(), x.numpy())


# -- causality -----------------------------------------------------------------------------


def test_causal_output_sees_no_future_step():
    lamina.manual_seed(0)
    model = nn.Sequential(Conv1D(4, 3, padding="causal", activation="tanh"),
                          Conv1D(3, 2, padding="causal", dilation=2))
    x = _x((1, 12, 2), 5)
    y = model(x).numpy()
    assert y.shape == (1, 12, 3)
    for changed in (0, 5, 11):
        x2 = x.copy()
        x2[:, changed] += 1.0
        y2 = model(x2).numpy()
        np.testing.assert_array_equal(y2[:, :changed], y[:, :changed])
        assert np.abs(y2[:, changed] - y[:, changed]).max() > 0
    # 'same' padding looks ahead: the step before a changed one moves
    same = Conv1D(4, 3, padding="same")
    x2 = x.copy()
    x2[:, 6] += 1.0
    assert np.abs(same(x2).numpy()[:, 5] - same(x).numpy()[:, 5]).max() > 0


# -- pooling against torch -----------------------------------------------------------------


@pytest.mark.parametrize("pool, stride, padding, ceil_mode, steps", [
    (2, None, 0, False, 8), (3, 2, 1, False, 9), (2, None, 0, True, 7), (3, 2, 0, False, 10), (4, 1, 2, False, 6),
    (3, 2, 0, True, 2), (4, 3, 1, True, 1),      # ceil mode: one window, longer than the (padded) input
])
def test_max_pool1d_matches_torch(pool, stride, padding, ceil_mode, steps):
    x = _x((2, steps, 3), steps)
    layer = MaxPool1D(pool, stride=stride, padding=padding, ceil_mode=ceil_mode)
    compare_1d(layer, lambda t: TF.max_pool1d(t, pool, stride=stride, padding=padding, ceil_mode=ceil_mode), x)


@pytest.mark.parametrize("pool, stride, padding, ceil_mode, steps", [
    (2, None, 0, False, 8), (3, 1, 1, False, 9), (3, 2, 0, True, 8), (2, None, 0, False, 20),
    (3, 2, 0, True, 2), (4, 3, 1, True, 1), (5, 3, 2, True, 3),      # ceil mode: windows past the padding
])
def test_avg_pool1d_matches_torch(pool, stride, padding, ceil_mode, steps):
    # 20 steps of 3 channels and disjoint windows take the 2-D op's row-sum path
    x = _x((2, steps, 3), steps)
    layer = AvgPool1D(pool, stride=stride, padding=padding, ceil_mode=ceil_mode)
    compare_1d(layer, lambda t: TF.avg_pool1d(t, pool, stride=stride, padding=padding, ceil_mode=ceil_mode), x)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_global_pools_match_torch(dtype):
    lamina.set_default_dtype(dtype)
    x = _x((3, 7, 4), 9)
    out = compare_1d(GlobalAvgPool1D(), lambda t: TF.adaptive_avg_pool1d(t, 1)[..., 0], x, dtype)
    assert out.shape == (3, 4)
    out = compare_1d(GlobalMaxPool1D(), lambda t: TF.adaptive_max_pool1d(t, 1)[..., 0], x, dtype)
    assert out.shape == (3, 4)


@pytest.mark.parametrize("make", [
    lambda: MaxPool1D(2), lambda: MaxPool1D(3, stride=2, padding=1), lambda: AvgPool1D(3, stride=1, padding=1),
    lambda: AvgPool1D(2), GlobalAvgPool1D, GlobalMaxPool1D,
])
def test_pool1d_gradcheck(make):
    assert gradcheck_layer(make(), _x((2, 6, 2), 10))


# -- configuration, saving, errors ---------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: Conv1D(6, 3, stride=2, padding="same", groups=2, activation="relu", name="c"),
    lambda: Conv1D(4, (2,), padding="CAUSAL", dilation=3, use_bias=False, kernel_init="glorot_uniform"),
    lambda: Conv1D(4, 3, padding=2, algorithm="fft"),
    lambda: MaxPool1D(3, stride=2, padding=1, ceil_mode=True),
    lambda: AvgPool1D(4, padding="valid"),
    GlobalAvgPool1D,
    GlobalMaxPool1D,
])
def test_config_round_trip(make):
    layer = make()
    config = json.loads(json.dumps(layer_to_config(layer)))
    again = layer_from_config(config)
    assert type(again) is type(layer)
    assert again.get_config() == layer.get_config()
    x = _x((2, 9, 4), 11)
    out = layer(x)
    if layer.parameters():
        again.build(x.shape)
        again.load_state_dict(layer.state_dict())
    np.testing.assert_array_equal(again(x).numpy(), out.numpy())
    assert again.compute_output_shape((None, 9, 4)) == (None,) + out.shape[1:]
    assert repr(again) == repr(layer)


def _text_cnn():
    return nn.Sequential(nn.Embedding(20, 8), Conv1D(16, 3, padding="same", activation="relu"),
                         GlobalMaxPool1D(), nn.Dense(2))


def test_text_cnn_saves_and_loads(tmp_path):
    lamina.manual_seed(1)
    model = _text_cnn()
    ids = np.random.default_rng(0).integers(0, 20, (5, 12))
    out = model(lamina.tensor(ids)).numpy()
    path = tmp_path / "text_cnn.lamina"
    lamina.save(model, path)
    loaded = lamina.load(path)
    assert [type(m).__name__ for m in loaded.children()] == ["Embedding", "Conv1D", "GlobalMaxPool1D", "Dense"]
    np.testing.assert_array_equal(loaded(lamina.tensor(ids)).numpy(), out)


def test_summary_counts_conv1d_macs():
    t, c = 32, 5
    model = nn.Sequential(Conv1D(8, 5, stride=2, padding="valid", groups=1), MaxPool1D(3, stride=2),
                          Conv1D(12, 3, padding="causal", dilation=2, groups=4), AvgPool1D(2), GlobalAvgPool1D())
    rows = lamina.analysis.summary(model, (t, c)).rows
    assert [r["output_shape"] for r in rows] == [[14, 8], [6, 8], [6, 12], [3, 12], [12]]
    assert [r["macs"] for r in rows] == [14 * 8 * 5 * c, 6 * 8 * 3, 6 * 12 * 3 * (8 // 4), 3 * 12 * 2, 3 * 12]
    text = lamina.analysis.summary(_text_cnn(), (12,))
    conv, pool = text.rows[1], text.rows[2]
    assert conv["macs"] == 12 * 16 * 3 * 8 and conv["params"] == 16 * 3 * 8 + 16
    assert pool["macs"] == 12 * 16 and pool["output_shape"] == [16]


def test_errors_name_the_layer_and_the_shape():
    layer = Conv1D(4, 3, name="c1")
    with pytest.raises(ShapeError, match=r"Conv1D 'c1'.*shape \(2, 9\) \(float64\).*\(batch, steps, channels\)"):
        layer(np.zeros((2, 9)))
    layer(np.zeros((2, 9, 3)))
    with pytest.raises(ShapeError, match=r"shape \(2, 9, 5\) \(float32\).*3 channels"):
        layer(np.zeros((2, 9, 5), dtype=np.float32))
    with pytest.raises(ShapeError, match="PyTorch's layout"):
        layer(np.zeros((2, 3, 9)))
    with pytest.raises(ShapeError, match="built for .* 3 channels"):
        layer.compute_output_shape((None, 9, 5))
    with pytest.raises(ShapeError, match="longer than the padded input"):
        layer(np.zeros((2, 2, 3)))
    with pytest.raises(ShapeError, match=r"MaxPool1D.*\(batch, steps, channels\)"):
        MaxPool1D(2)(np.zeros((2, 4, 4, 3)))
    with pytest.raises(ShapeError, match=r"GlobalMaxPool1D.*\(batch, steps, channels\)"):
        GlobalMaxPool1D().compute_output_shape((4, 3))
    with pytest.raises(ShapeError, match="groups=2 must divide the 3 input channels"):
        Conv1D(4, 3, groups=2)(np.zeros((1, 5, 3)))
    for kwargs in ({"padding": "full"}, {"dilation": 0}, {"groups": 3}, {"kernel_size": 0}):
        with pytest.raises(ValueError):
            Conv1D(**{"filters": 4, "kernel_size": 3, **kwargs})
    with pytest.raises(ValueError, match="at most half"):
        MaxPool1D(2, padding=2)


# -- learning ------------------------------------------------------------------------------


def _pattern_data(n, rng, steps=16, vocab=20, pattern=(3, 7, 11)):
    """Random id sequences; label 1 where ``pattern`` occurs somewhere (planted in half)."""
    ids = rng.integers(0, vocab, (n, steps))
    planted = rng.random(n) < 0.5
    starts = rng.integers(0, steps - len(pattern) + 1, n)
    for i in np.flatnonzero(planted):
        ids[i, starts[i]:starts[i] + len(pattern)] = pattern
    windows = np.lib.stride_tricks.sliding_window_view(ids, len(pattern), axis=1)
    labels = (windows == np.array(pattern)).all(axis=-1).any(axis=1)
    return ids, labels.astype(np.int64)


def test_text_cnn_learns_to_find_a_pattern():
    lamina.set_default_dtype(np.float32)
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    xtr, ytr = _pattern_data(2000, rng)
    xte, yte = _pattern_data(500, rng)
    model = _text_cnn()
    opt = optim.Adam(model, lr=1e-2)
    started = time.perf_counter()
    for _ in range(10):
        order = rng.permutation(len(xtr))
        for lo in range(0, len(xtr), 50):
            batch = order[lo:lo + 50]
            cost = F.categorical_cross_entropy(model(lamina.tensor(xtr[batch])), ytr[batch], from_logits=True)
            opt.zero_grad()
            cost.backward()
            opt.step()
    elapsed = time.perf_counter() - started
    with lamina.no_grad():
        accuracy = float((model(lamina.tensor(xte)).numpy().argmax(axis=1) == yte).mean())
    assert accuracy > 0.95, f"test accuracy {accuracy:.3f} after {elapsed:.1f} s"
