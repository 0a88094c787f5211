"""Volumetric layers (Conv3D, MaxPool3D, AvgPool3D, GlobalAvgPool3D) on NDHWC batches: against
PyTorch's NCDHW layers (transposed at the boundary), gradient checks, configuration round
trips, input errors, the summary's shapes and MACs, and a small network that learns to tell
two kinds of volumes apart."""

import json
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from nn_checks import gradcheck_layer

import lamina
from helpers import assert_close
from lamina import nn, optim
from lamina.analysis import summary
from lamina.errors import ShapeError
from lamina.nn.conv3d import AvgPool3D, Conv3D, GlobalAvgPool3D, MaxPool3D
from lamina.nn.layer import layer_from_config, layer_to_config
from lamina.train import Trainer


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _to_torch(a):
    """NDHWC -> NCDHW."""
    return np.ascontiguousarray(a.transpose(0, 4, 1, 2, 3))


def _from_torch(a):
    """NCDHW -> NDHWC."""
    return a.transpose(0, 2, 3, 4, 1)


def _same_pads(n, f, s):
    """TF/Keras 'same' along one axis: ceil(n / s) outputs, the odd padding value after."""
    total = max((-(-n // s) - 1) * s + f - n, 0)
    return total // 2, total - total // 2


def _check_against_torch(layer, torch_fn, x, params=()):
    """Run ``layer`` on x (NDHWC) and ``torch_fn`` on its NCDHW copy; compare outputs and the
    gradients of the input and of ``params`` ((lamina name, torch tensor, lamina -> torch axes))
    under one random upstream gradient."""
    xl = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    out = layer(xl)
    assert out.shape == layer.compute_output_shape(x.shape)
    xt = torch.tensor(_to_torch(x), requires_grad=True)
    out_t = torch_fn(xt)
    expected = out_t.detach().numpy()
    assert_close(out.numpy(), _from_torch(expected) if expected.ndim == 5 else expected, 1e-9, "output")
    up = np.random.default_rng(1).standard_normal(out.shape)
    out.backward(up)
    (out_t * torch.from_numpy(_to_torch(up) if up.ndim == 5 else up)).sum().backward()
    assert_close(xl.grad, _from_torch(xt.grad.numpy()), 1e-9, "input gradient")
    named = dict(layer.named_parameters())
    for name, tensor, axes in params:
        assert_close(named[name].grad, tensor.grad.numpy().transpose(np.argsort(axes)), 1e-9, f"gradient of {name}")


# -- Conv3D ---------------------------------------------------------------------------------

LAYER_CASES = [
    # filters, kernel, stride, padding, groups, x shape
    (4, 3, 1, "same", 1, (2, 6, 5, 6, 3)),
    (4, 3, 2, "same", 1, (2, 7, 6, 8, 2)),
    (3, 2, 3, "valid", 1, (1, 8, 7, 9, 2)),
    (5, (3, 1, 1), 1, (1, 0, 0), 1, (2, 5, 4, 4, 3)),
    (6, 3, (1, 2, 2), 1, 2, (1, 6, 6, 6, 4)),
    (4, 3, 1, "same", 4, (2, 5, 5, 5, 4)),
    (3, 1, 1, "valid", 1, (2, 3, 4, 5, 6)),
]


@pytest.mark.parametrize("filters, kernel, stride, padding, groups, shape", LAYER_CASES)
def test_conv3d_layer_matches_torch(f64, filters, kernel, stride, padding, groups, shape):
    layer = Conv3D(filters, kernel, stride=stride, padding=padding, groups=groups, bias_init="uniform")
    x = _x(shape)
    layer(lamina.tensor(x))
    axes = (0, 4, 1, 2, 3)                   # lamina's (K, f_d, f_h, f_w, c) -> torch's (K, c, f_d, f_h, f_w)
    weight = torch.tensor(np.ascontiguousarray(layer.weight.numpy().transpose(axes)), requires_grad=True)
    bias = torch.tensor(layer.bias.numpy(), requires_grad=True)

    def run(xt):
        pad = layer.padding
        if pad == "same":
            pads = [_same_pads(n, f, s) for n, f, s in zip(shape[1:4], layer.kernel_size, layer.stride)]
            xt, pad = TF.pad(xt, [p for pair in reversed(pads) for p in pair]), 0
        elif pad == "valid":
            pad = 0
        return TF.conv3d(xt, weight, bias, stride=layer.stride, padding=pad, groups=groups)

    _check_against_torch(layer, run, x, [("weight", weight, axes), ("bias", bias, (0,))])


def test_conv3d_layer_gradcheck_with_an_activation(f64):
    layer = Conv3D(2, (2, 3, 2), stride=(1, 2, 1), padding="same", activation="tanh", bias_init="uniform")
    assert gradcheck_layer(layer, _x((1, 3, 4, 3, 2)))


def test_conv3d_weights_follow_the_layout_and_he_uniform_bound():
    layer = Conv3D(8, (3, 2, 1), groups=2)
    layer.build((None, 6, 6, 6, 4))
    assert layer.weight.shape == (8, 3, 2, 1, 2) and layer.bias.shape == (8,)
    bound = np.sqrt(6 / (3 * 2 * 1 * 2))      # He uniform, fan_in = f_d f_h f_w c_in / groups
    assert np.abs(layer.weight.numpy()).max() <= bound and np.abs(layer.weight.numpy()).max() > 0.5 * bound
    assert layer.weight.numpy().dtype == np.float32 and not layer.bias.numpy().any()


# -- pools ----------------------------------------------------------------------------------


@pytest.mark.parametrize("layer_cls, torch_fn", [(MaxPool3D, TF.max_pool3d), (AvgPool3D, TF.avg_pool3d)])
@pytest.mark.parametrize("pool, stride, padding", [(2, None, 0), (3, 2, 1), ((2, 3, 1), (1, 2, 1), (1, 1, 0))])
def test_pool_layers_match_torch(f64, layer_cls, torch_fn, pool, stride, padding):
    layer = layer_cls(pool, stride=stride, padding=padding)
    _check_against_torch(layer, lambda xt: torch_fn(xt, pool, stride=stride or pool, padding=padding),
                         _x((2, 7, 6, 5, 3)))


def test_global_avg_pool_layer_matches_torch(f64):
    _check_against_torch(GlobalAvgPool3D(), lambda xt: xt.mean(dim=(2, 3, 4)), _x((2, 3, 4, 5, 3)))


@pytest.mark.parametrize("layer", [MaxPool3D(3, stride=2, padding=1), AvgPool3D((2, 3, 2), stride=1)])
def test_pool_layers_gradcheck(f64, layer):
    assert gradcheck_layer(layer, _x((1, 4, 5, 4, 2)))


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize("layer", [
    Conv3D(6, (3, 1, 1), stride=(1, 2, 2), padding=(1, 0, 0), groups=2, activation="relu", use_bias=False,
           kernel_init="glorot_uniform", dilation=(2, 1, 1), name="c3"),
    Conv3D(4, 3, padding="same"),
    MaxPool3D(3, stride=2, padding=1),
    AvgPool3D((2, 2, 1)),
    GlobalAvgPool3D(name="gap"),
])
def test_config_round_trips_through_json(layer):
    config = json.loads(json.dumps(layer_to_config(layer)))
    rebuilt = layer_from_config(config)
    assert type(rebuilt) is type(layer) and rebuilt.get_config() == layer.get_config()
    assert repr(rebuilt) == repr(layer)


def test_rebuilt_conv3d_computes_the_same_with_the_same_weights():
    layer = Conv3D(3, (3, 2, 2), stride=2, padding="same", activation="relu")
    x = _x((2, 5, 6, 7, 2)).astype(np.float32)
    out = layer(lamina.tensor(x)).numpy()
    rebuilt = layer_from_config(layer_to_config(layer))
    rebuilt.build(x.shape)
    rebuilt.load_state_dict(layer.state_dict())
    assert np.array_equal(rebuilt(lamina.tensor(x)).numpy(), out)


def test_extra_repr_shows_what_differs_from_the_defaults():
    assert repr(Conv3D(8, 3)) == "Conv3D(8, kernel_size=(3, 3, 3))"
    assert repr(Conv3D(8, (3, 1, 1), stride=2, padding="same", groups=2, activation="relu")) == (
        "Conv3D(8, kernel_size=(3, 1, 1), stride=(2, 2, 2), padding='same', groups=2, activation='relu')")
    assert repr(MaxPool3D(3, stride=2, padding=1)) == (
        "MaxPool3D(pool_size=(3, 3, 3), stride=(2, 2, 2), padding=(1, 1, 1))")
    assert repr(AvgPool3D()) == "AvgPool3D(pool_size=(2, 2, 2))"


# -- bad input ------------------------------------------------------------------------------


def test_conv3d_refuses_a_4d_input_naming_the_layer_and_the_shape():
    with pytest.raises(ShapeError, match=r"Conv3D: got an input shape \(2, 8, 8, 3\); expected a 5-D NDHWC"):
        Conv3D(4, 3)(np.zeros((2, 8, 8, 3), dtype=np.float32))


def test_conv3d_refuses_a_changed_channel_count_after_build():
    layer = Conv3D(4, 3, name="c")
    layer(np.zeros((1, 4, 4, 4, 2), dtype=np.float32))
    with pytest.raises(ShapeError, match=r"Conv3D 'c': got an input of shape \(1, 4, 4, 4, 3\) \(float32\); "
                                         r"expected NDHWC with C=2"):
        layer(np.zeros((1, 4, 4, 4, 3), dtype=np.float32))
    with pytest.raises(ShapeError, match="looks like NCDHW"):
        layer(np.zeros((1, 2, 4, 4, 4), dtype=np.float32))
    with pytest.raises(ShapeError, match=r"input shape \(None, 4, 4, 4, 3\) has 3 channels"):
        layer.compute_output_shape((None, 4, 4, 4, 3))


def test_windows_larger_than_the_input_are_refused_with_the_shapes():
    with pytest.raises(ShapeError, match=r"Conv3D: the 3x5x3 kernel is larger than the padded input \(input shape "
                                         r"\(1, 4, 4, 4, 1\)"):
        Conv3D(2, (3, 5, 3))(np.zeros((1, 4, 4, 4, 1), dtype=np.float32))
    with pytest.raises(ShapeError, match=r"MaxPool3D: the 3x3x3 pool is larger than the input of shape "
                                         r"\(1, 2, 8, 8, 1\)"):
        MaxPool3D(3)(np.zeros((1, 2, 8, 8, 1), dtype=np.float32))
    with pytest.raises(ShapeError, match=r"GlobalAvgPool3D: got an input of shape \(2, 8, 8, 3\)"):
        GlobalAvgPool3D()(np.zeros((2, 8, 8, 3), dtype=np.float32))


def test_bad_hyperparameters_are_refused():
    with pytest.raises(ValueError, match="Conv3D: groups=3 must divide filters=4"):
        Conv3D(4, 3, groups=3)
    with pytest.raises(ValueError, match="Conv3D: kernel_size must be an int or 3 ints"):
        Conv3D(4, (3, 3))
    with pytest.raises(ValueError, match="Conv3D: padding must be 'valid', 'same'"):
        Conv3D(4, 3, padding="causal")
    with pytest.raises(ValueError, match=r"MaxPool3D: padding \(2, 2, 2\) must be at most half"):
        MaxPool3D(3, padding=2)
    with pytest.raises(ShapeError, match=r"Conv3D: groups=2 must divide the 3 input channels"):
        Conv3D(4, 3, groups=2).build((None, 4, 4, 4, 3))


# -- summary --------------------------------------------------------------------------------


def test_summary_shows_the_shapes_and_the_macs_of_a_3d_network():
    model = nn.Sequential(Conv3D(4, 3, padding="same", activation="relu"), MaxPool3D(2),
                          Conv3D(8, (3, 1, 1), stride=(1, 2, 2), groups=2), AvgPool3D(3, stride=1, padding=1),
                          GlobalAvgPool3D(), nn.Dense(2))
    rows = summary(model, (8, 8, 8, 2)).rows
    assert [r["output_shape"] for r in rows] == [[8, 8, 8, 4], [4, 4, 4, 4], [2, 2, 2, 8], [2, 2, 2, 8], [8], [2]]
    assert [r["params"] for r in rows] == [4 * (27 * 2 + 1), 0, 8 * (3 * 2 + 1), 0, 0, 8 * 2 + 2]
    assert rows[0]["macs"] == 8 * 8 * 8 * 4 * 27 * 2                  # d' h' w' K f_d f_h f_w c_in
    assert rows[1]["macs"] == 4 * 4 * 4 * 4 * 8                       # d' h' w' c f_d f_h f_w
    assert rows[2]["macs"] == 2 * 2 * 2 * 8 * 3 * (4 // 2)            # c_in / groups per filter
    assert rows[3]["macs"] == 2 * 2 * 2 * 8 * 27
    assert rows[4]["macs"] == 2 * 2 * 2 * 8                           # one whole-volume window per channel
    assert not model.built                                            # summarised by shape inference alone


# -- learning -------------------------------------------------------------------------------


def _volumes(count: int, seed: int):
    """8x8x8 volumes with noise and one bright shape at a random place: label 0 a 3x3x3 cube
    (27 voxels), label 1 a one-voxel-thick 5x5 plate (25 voxels) across a random axis. The
    totals barely differ; the shapes do."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.3, (count, 8, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 2, count)
    for volume, label in zip(x, y):
        if label == 0:
            z, r, c = rng.integers(0, 6, 3)
            volume[z:z + 3, r:r + 3, c:c + 3] += 1.0
        else:
            where = [slice(a, a + 5) for a in rng.integers(0, 4, 3)]
            layer = rng.integers(0, 8)
            where[rng.integers(0, 3)] = slice(layer, layer + 1)
            volume[tuple(where)] += 1.0
    return x, y


def test_a_tiny_conv3d_network_tells_cubes_from_plates():
    lamina.manual_seed(0)
    x_train, y_train = _volumes(192, seed=1)
    x_test, y_test = _volumes(200, seed=2)
    model = nn.Sequential(Conv3D(8, 3, padding="same", activation="relu"),
                          MaxPool3D(8),                     # the whole volume: each filter's strongest response
                          nn.Flatten(), nn.Dense(2, activation="softmax"))
    model.build((None, 8, 8, 8, 1))
    started = time.perf_counter()
    Trainer(model, "categorical_cross_entropy", optim.Adam(model.parameters(), lr=1e-2), verbose=0).fit(
        (x_train, y_train), epochs=8, batch_size=32, seed=0)
    model.eval()
    with lamina.no_grad():
        accuracy = float((model(lamina.tensor(x_test)).numpy().argmax(axis=1) == y_test).mean())
    assert accuracy >= 0.95, f"test accuracy {accuracy:.3f} after {time.perf_counter() - started:.1f} s"
