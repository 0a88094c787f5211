"""WeightNorm and SpectralNorm: the reparametrised weight, gradients against PyTorch's
parametrizations, gradient checks, power iteration against NumPy's SVD, buffers and modes,
state dicts and configs, errors, and a weight-normalised network that learns the digits."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from nn_checks import gradcheck_layer
from torch.nn.utils import parametrizations

import lamina
from helpers import assert_close, randn
from lamina import functional as F
from lamina import nn, optim
from lamina.analysis import summary
from lamina.data import load_digits, train_val_test_split
from lamina.nn import Conv2D, Conv2DTranspose, Dense, layer_from_config, layer_to_config
from lamina.nn.weight_norms import SpectralNorm, WeightNorm
from lamina.train import Trainer

# lamina kernel -> torch weight: Dense (n_in, units) -> (units, n_in); Conv2D (K, f, f, c) -> (K, c, f, f)
TO_TORCH = {"dense": (1, 0), "conv2d": (0, 3, 1, 2)}


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)


def make_pair(kind):
    """A lamina layer (unbuilt), its torch twin, and an input for both (NHWC for lamina)."""
    if kind == "dense":
        return Dense(5, activation="tanh"), torch.nn.Linear(6, 5).double(), randn(4, 6), torch.tanh
    return Conv2D(3, 3, padding=1), torch.nn.Conv2d(2, 3, 3, padding=1).double(), randn(2, 5, 5, 2), None


def run_torch(module, x, kind, activation=None):
    xt = torch.tensor(x if kind == "dense" else x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    out = module(xt)
    out = activation(out) if activation is not None else out
    return xt, out


def to_lamina_layout(array, kind):
    return array.transpose(np.argsort(TO_TORCH[kind]))


def to_torch_layout(array, kind):
    return torch.from_numpy(np.ascontiguousarray(array.transpose(TO_TORCH[kind])))


def output_to_nhwc(out, kind):
    out = out.detach().numpy()
    return out if kind == "dense" else out.transpose(0, 2, 3, 1)


def v_to_torch(v, kind):
    """SpectralNorm's v in torch's order: a Conv2D's weight rows flatten (f, f, c) in lamina,
    (c, f, f) in torch (the 3x3 kernels on 2 channels of ``make_pair``)."""
    return v if kind == "dense" else np.ascontiguousarray(v.reshape(3, 3, 2).transpose(2, 0, 1).reshape(-1))


# -- WeightNorm -----------------------------------------------------------------------------------


@pytest.mark.parametrize("make, x, unit_axes", [
    (lambda: Dense(4, activation="relu"), randn(3, 6), (0,)),
    (lambda: Conv2D(3, 3, stride=2, padding=1), randn(2, 7, 7, 2), (1, 2, 3)),
    (lambda: Conv2DTranspose(3, 3, stride=2), randn(2, 4, 4, 2), (0, 1, 2)),
], ids=["dense", "conv2d", "conv2d_transpose"])
def test_weight_norm_starts_as_the_plain_layer(f64, make, x, unit_axes):
    layer = make()
    expected = layer(x).numpy()
    weight = layer.weight.numpy().copy()
    wrapped = WeightNorm(layer)                              # a built layer is taken over at once
    assert_close(wrapped(x).numpy(), expected, 1e-14)
    np.testing.assert_array_equal(wrapped.v.numpy(), weight)
    norms = np.sqrt((weight**2).sum(axis=unit_axes))        # one gain per output unit
    assert_close(wrapped.g.numpy(), norms, 1e-14)
    assert [name for name, _ in wrapped.named_parameters()] == ["g", "v", "layer.bias"]


def test_weight_norm_builds_the_wrapped_layer_lazily(f64):
    wrapped = WeightNorm(Dense(4))
    assert not wrapped.layer.built and wrapped.parameters() == []
    assert wrapped.compute_output_shape((None, 6)) == (None, 4)
    out = wrapped(randn(2, 6))
    assert out.shape == (2, 4) and wrapped.layer.built and wrapped.g.shape == (4,) and wrapped.v.shape == (6, 4)
    assert "weight" not in wrapped.layer._parameters          # only g and v are learned
    assert_close(out.numpy(), randn(2, 6) @ wrapped.v.numpy() + wrapped.layer.bias.numpy(), 1e-14)


def test_weight_norm_scales_each_unit_by_its_gain(f64):
    wrapped = WeightNorm(Dense(3, use_bias=False))
    x = randn(5, 4)
    wrapped(x)
    v = wrapped.v.numpy()
    wrapped.g.data = np.array([2.0, 0.5, -1.0])
    expected = x @ (v / np.linalg.norm(v, axis=0) * np.array([2.0, 0.5, -1.0]))
    assert_close(wrapped(x).numpy(), expected, 1e-13)
    wrapped.v.data = v * 7.0                                  # the length of v does not matter
    assert_close(wrapped(x).numpy(), expected, 1e-13)


@pytest.mark.parametrize("kind", ["dense", "conv2d"])
def test_weight_norm_gradients_match_torch(f64, kind):
    layer, module, x, activation = make_pair(kind)
    wrapped = WeightNorm(layer)
    wrapped.build(x.shape)
    g = np.random.default_rng(5).uniform(0.5, 2.0, wrapped.g.shape)   # a gain other than ||v||
    wrapped.g.data = g.copy()
    parametrizations.weight_norm(module, "weight", dim=0)
    with torch.no_grad():
        module.parametrizations.weight.original0.copy_(torch.from_numpy(g).reshape(-1, *[1] * (x.ndim - 1)))
        module.parametrizations.weight.original1.copy_(to_torch_layout(wrapped.v.numpy(), kind))
        module.bias.copy_(torch.from_numpy(wrapped.layer.bias.numpy()))
    xl = lamina.tensor(x, requires_grad=True)
    out = wrapped(xl)
    xt, out_t = run_torch(module, x, kind, activation)
    assert_close(out.numpy(), output_to_nhwc(out_t, kind), 1e-12, "output")
    upstream = randn(*out.shape, seed=1)
    out.backward(upstream)
    (out_t * torch.from_numpy(upstream if kind == "dense" else upstream.transpose(0, 3, 1, 2).copy())).sum().backward()
    torch_x_grad = xt.grad.numpy() if kind == "dense" else xt.grad.numpy().transpose(0, 2, 3, 1)
    assert_close(xl.grad, torch_x_grad, 1e-12, "input gradient")
    assert_close(wrapped.g.grad, module.parametrizations.weight.original0.grad.numpy().reshape(-1), 1e-12, "g grad")
    torch_v_grad = to_lamina_layout(module.parametrizations.weight.original1.grad.numpy(), kind)
    assert_close(wrapped.v.grad, torch_v_grad, 1e-12, "v gradient")
    assert_close(wrapped.layer.bias.grad, module.bias.grad.numpy(), 1e-12, "bias gradient")


def test_weight_norm_of_a_grouped_conv_transpose_is_per_output_channel_as_in_torch(f64):
    """A grouped transposed convolution is one ungrouped one per group; torch's weight_norm
    with dim=1 (the output channels of a ConvTranspose2d weight) on each gives the
    reference: one gain per output channel, normalised over its own group's inputs."""
    groups, c_in, k = 2, 4, 6
    x = randn(2, 3, 3, c_in)
    wrapped = WeightNorm(Conv2DTranspose(k, 3, stride=2, groups=groups))
    wrapped.build(x.shape)
    assert wrapped.g.shape == (k,) and wrapped.v.shape == (c_in, 3, 3, k // groups)
    g = np.random.default_rng(7).uniform(0.5, 2.0, k)
    wrapped.g.data = g.copy()
    v = wrapped.v.numpy()
    modules = []
    for i in range(groups):
        module = parametrizations.weight_norm(torch.nn.ConvTranspose2d(2, 3, 3, stride=2).double(), dim=1)
        with torch.no_grad():
            module.parametrizations.weight.original0.copy_(torch.from_numpy(g[3 * i:3 * i + 3]).reshape(1, 3, 1, 1))
            module.parametrizations.weight.original1.copy_(torch.from_numpy(v[2 * i:2 * i + 2].transpose(0, 3, 1, 2)))
            module.bias.copy_(torch.from_numpy(wrapped.layer.bias.numpy()[3 * i:3 * i + 3]))
        modules.append(module)
    xl = lamina.tensor(x, requires_grad=True)
    out = wrapped(xl)
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    out_t = torch.cat([module(part) for module, part in zip(modules, xt.split(2, dim=1))], dim=1)
    assert_close(out.numpy(), out_t.detach().numpy().transpose(0, 2, 3, 1), 1e-12, "output")
    upstream = randn(*out.shape, seed=3)
    out.backward(upstream)
    (out_t * torch.from_numpy(upstream.transpose(0, 3, 1, 2).copy())).sum().backward()
    assert_close(xl.grad, xt.grad.numpy().transpose(0, 2, 3, 1), 1e-12, "input gradient")
    torch_g_grad = np.concatenate([m.parametrizations.weight.original0.grad.numpy().reshape(-1) for m in modules])
    assert_close(wrapped.g.grad, torch_g_grad, 1e-12, "g gradient")
    torch_v_grad = np.concatenate([m.parametrizations.weight.original1.grad.numpy().transpose(0, 2, 3, 1)
                                   for m in modules])
    assert_close(wrapped.v.grad, torch_v_grad, 1e-12, "v gradient")
    torch_bias_grad = np.concatenate([m.bias.grad.numpy() for m in modules])
    assert_close(wrapped.layer.bias.grad, torch_bias_grad, 1e-12, "bias gradient")


@pytest.mark.parametrize("make, shape", [
    (lambda: WeightNorm(Dense(3, activation="tanh")), (4, 5)),
    (lambda: WeightNorm(Conv2D(2, 2, padding=1)), (1, 3, 3, 2)),
    (lambda: WeightNorm(Conv2DTranspose(4, 2, stride=2, groups=2)), (1, 2, 2, 4)),
    (lambda: SpectralNorm(Dense(3, activation="tanh")).eval(), (4, 5)),
    (lambda: SpectralNorm(Conv2D(2, 2)).eval(), (1, 3, 3, 2)),
], ids=["weight_norm_dense", "weight_norm_conv2d", "weight_norm_grouped_conv2d_transpose",
        "spectral_norm_dense", "spectral_norm_conv2d"])
def test_gradcheck(f64, make, shape):
    """SpectralNorm in evaluation: u and v stay fixed, so its gradient (u and v constant) is
    the exact gradient of the function each evaluation computes."""
    assert gradcheck_layer(make(), randn(*shape))


# -- SpectralNorm ---------------------------------------------------------------------------------


@pytest.mark.parametrize("make, x", [
    (lambda: Dense(7), randn(2, 12)),
    (lambda: Conv2D(6, 3), randn(1, 4, 4, 3)),
], ids=["dense", "conv2d"])
def test_spectral_norm_sigma_converges_to_the_largest_singular_value(f64, make, x):
    layer = make()
    layer(x)
    raw = layer.weight.numpy().copy()
    matrix = raw if raw.ndim == 2 else raw.reshape(raw.shape[0], -1)
    largest = np.linalg.svd(matrix, compute_uv=False)[0]
    wrapped = SpectralNorm(layer, n_power_iterations=200)
    out = wrapped(x)
    assert wrapped.sigma == pytest.approx(largest, rel=1e-10)
    normalized = wrapped.layer.weight.numpy()
    assert_close(normalized, raw / largest, 1e-10)
    normalized_matrix = normalized if normalized.ndim == 2 else normalized.reshape(normalized.shape[0], -1)
    assert np.linalg.svd(normalized_matrix, compute_uv=False)[0] == pytest.approx(1.0, rel=1e-10)
    # the wrapped layer computed with W / sigma_max in place of W
    assert_close(out.numpy(), layer.apply_weights(lamina.tensor(x), lamina.tensor(raw / largest)).numpy(), 1e-10)


@pytest.mark.parametrize("make, x, torch_layer", [
    (lambda: nn.Conv1DTranspose(3, 2), randn(1, 5, 4), lambda: torch.nn.ConvTranspose1d(4, 3, 2)),
    (lambda: nn.Conv3DTranspose(3, 2), randn(1, 3, 3, 3, 4),
     lambda: torch.nn.ConvTranspose3d(4, 3, 2)),
], ids=["conv1d_transpose", "conv3d_transpose"])
def test_spectral_norm_of_nd_transposed_convolutions_uses_the_output_channels_as_torch(f64, make, x, torch_layer):
    """sigma: the largest singular value of the (K, c_in f...) matrix, as torch's spectral_norm (dim=1)."""
    layer = make()
    layer(x)
    raw = layer.weight.numpy().copy()                       # (c_in, f..., K)
    by_output = np.linalg.svd(np.moveaxis(raw, -1, 0).reshape(raw.shape[-1], -1), compute_uv=False)[0]
    wrapped = SpectralNorm(layer, n_power_iterations=300)
    wrapped(x)
    assert wrapped.u.shape == (raw.shape[-1],)
    assert wrapped.sigma == pytest.approx(by_output, rel=1e-10)
    module = torch_layer().double()
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(np.moveaxis(raw, -1, 1).copy()))   # (c_in, K, f...)
    parametrizations.spectral_norm(module, n_power_iterations=300)
    module.train()
    module(torch.zeros(1, raw.shape[0], *(4,) * (raw.ndim - 2), dtype=torch.float64))
    with torch.no_grad():
        assert_close(np.moveaxis(module.weight.numpy(), 1, -1), wrapped.layer.weight.numpy(), 1e-10)


@pytest.mark.parametrize("kind", ["dense", "conv2d"])
@pytest.mark.parametrize("iterations", [1, 3])
def test_spectral_norm_matches_torch_given_the_same_u(f64, kind, iterations):
    layer, module, x, activation = make_pair(kind)
    wrapped = SpectralNorm(layer, n_power_iterations=iterations)
    wrapped.build(x.shape)
    with torch.no_grad():
        module.weight.copy_(to_torch_layout(wrapped.weight_orig.numpy(), kind))
        module.bias.copy_(torch.from_numpy(wrapped.layer.bias.numpy()))
    parametrizations.spectral_norm(module, n_power_iterations=iterations)
    rng = np.random.default_rng(3)                           # u and v far from converged
    u, v = rng.standard_normal(wrapped.u.shape), rng.standard_normal(wrapped.v.shape)
    wrapped.u, wrapped.v = u / np.linalg.norm(u), v / np.linalg.norm(v)
    norm = module.parametrizations.weight[0]
    with torch.no_grad():
        norm._u.copy_(torch.from_numpy(wrapped.u))
        norm._v.copy_(torch.from_numpy(v_to_torch(wrapped.v, kind)))
    # one training forward and backward
    xl = lamina.tensor(x, requires_grad=True)
    out = wrapped(xl)
    xt, out_t = run_torch(module, x, kind, activation)
    assert_close(out.numpy(), output_to_nhwc(out_t, kind), 1e-12, "output")
    assert_close(wrapped.u, norm._u.numpy(), 1e-12, "u")
    assert_close(v_to_torch(wrapped.v, kind), norm._v.numpy(), 1e-12, "v")
    upstream = randn(*out.shape, seed=1)
    out.backward(upstream)
    (out_t * torch.from_numpy(upstream if kind == "dense" else upstream.transpose(0, 3, 1, 2).copy())).sum().backward()
    torch_x_grad = xt.grad.numpy() if kind == "dense" else xt.grad.numpy().transpose(0, 2, 3, 1)
    assert_close(xl.grad, torch_x_grad, 1e-12, "input gradient")
    torch_w_grad = to_lamina_layout(module.parametrizations.weight.original.grad.numpy(), kind)
    assert_close(wrapped.weight_orig.grad, torch_w_grad, 1e-12, "weight gradient")
    assert_close(wrapped.layer.bias.grad, module.bias.grad.numpy(), 1e-12, "bias gradient")
    # evaluation: both use the stored u and v
    wrapped.eval()
    module.eval()
    x2 = randn(*x.shape, seed=2)
    with torch.no_grad():
        assert_close(wrapped(x2).numpy(), output_to_nhwc(run_torch(module, x2, kind, activation)[1], kind), 1e-12)


def test_spectral_norm_updates_u_in_training_only(f64):
    wrapped = SpectralNorm(Dense(6), n_power_iterations=1)
    x = randn(3, 8)
    wrapped(x)
    wrapped.u, wrapped.v = np.ones(6) / np.sqrt(6), np.ones(8) / np.sqrt(8)     # away from the singular vectors
    wrapped.eval()
    u, v = wrapped.u.copy(), wrapped.v.copy()
    first = wrapped(x).numpy()
    with lamina.no_grad():
        second = wrapped(x).numpy()
    np.testing.assert_array_equal(wrapped.u, u)
    np.testing.assert_array_equal(wrapped.v, v)
    np.testing.assert_array_equal(first, second)
    assert wrapped.sigma == pytest.approx(u @ wrapped.weight_orig.numpy().T @ v, rel=1e-12)
    wrapped.train()
    wrapped(x)
    assert not np.allclose(wrapped.u, u)


def test_spectral_norm_gradient_treats_u_and_v_as_constants(f64):
    """dsigma/dW = u v^T: with sigma = u^T W v, J = sum(w r) for w = W / sigma has
    dJ/dW = r / sigma - (sum(W r) / sigma^2) u v^T (u, v as stored after the forward)."""
    wrapped = SpectralNorm(Dense(4, use_bias=False))
    x = np.eye(5)                                            # the output is the normalised weight
    out = wrapped(lamina.tensor(x, requires_grad=True))
    r = randn(5, 4, seed=3)
    out.backward(r)
    w = wrapped.weight_orig.numpy()
    u, v = wrapped.u, wrapped.v
    sigma = u @ w.T @ v
    expected = r / sigma - (w * r).sum() / sigma**2 * np.outer(v, u)    # (n_in, units) layout
    assert_close(wrapped.weight_orig.grad, expected, 1e-12)


# -- state, config, training mode -------------------------------------------------------------------


@pytest.mark.parametrize("make, keys", [
    (lambda: WeightNorm(Dense(3), name="wn"), ["g", "v", "layer.bias"]),
    (lambda: SpectralNorm(Dense(3), n_power_iterations=2, eps=1e-9, name="sn"),
     ["weight_orig", "layer.bias", "u", "v"]),
], ids=["weight_norm", "spectral_norm"])
def test_state_dict_and_config_round_trip(f64, make, keys):
    wrapped = make()
    x = randn(4, 5)
    wrapped(x)
    wrapped(x)
    assert list(wrapped.state_dict()) == keys
    config = layer_to_config(wrapped)
    assert config["class_name"] == type(wrapped).__name__
    rebuilt = layer_from_config(config)
    assert rebuilt.get_config() == wrapped.get_config() and not rebuilt.built
    rebuilt.build(x.shape)
    rebuilt.load_state_dict(wrapped.state_dict())
    for key, value in wrapped.state_dict().items():
        np.testing.assert_array_equal(rebuilt.state_dict()[key], value, err_msg=key)
    wrapped.eval()
    rebuilt.eval()
    np.testing.assert_array_equal(rebuilt(x).numpy(), wrapped(x).numpy())


def test_a_sequential_builds_saves_and_freezes_through_the_wrapper():
    model = nn.Sequential(nn.Flatten(), WeightNorm(Dense(8, activation="relu")), SpectralNorm(Dense(3)))
    model.build((None, 4, 4, 1))
    assert model.compute_output_shape((None, 4, 4, 1)) == (None, 3)
    assert model.num_parameters() == (8 + 16 * 8 + 8) + (24 + 3)
    model[1].freeze()
    assert [p.trainable for p in model.parameters()] == [False, False, False, True, True]


def test_summary_traces_unbuilt_wrappers_without_building_or_computing_weights():
    model = nn.Sequential(nn.Flatten(), WeightNorm(Dense(8, activation="relu")), SpectralNorm(Dense(3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                        # no 0 / 0 on the shape-only weights
        table = summary(model, (4, 4, 1))
    assert not model.built and not model[1].layer.built
    assert table.rows[-1]["output_shape"] == [3]
    model(np.zeros((1, 4, 4, 1), np.float32))
    assert table.total_params == model.num_parameters() == (8 + 16 * 8 + 8) + (24 + 3)


# -- errors ---------------------------------------------------------------------------------------------


def test_errors():
    with pytest.raises(TypeError, match=r"^WeightNorm: expected a layer with a weight .* got function"):
        WeightNorm(F.relu)
    with pytest.raises(TypeError, match=r"^SpectralNorm 'sn': the wrapped ReLU creates no weights; wrap a layer "
                                        r"with a 'weight' parameter"):
        SpectralNorm(nn.ReLU(), name="sn")
    lazy = WeightNorm(Dense(3), weight="kernel")
    with pytest.raises(TypeError, match=r"^WeightNorm: the wrapped Dense has no parameter 'kernel' to normalize "
                                        r"\(its parameters: \['bias', 'weight'\]\)"):
        lazy(np.ones((2, 4), np.float32))
    dense = Dense(3)
    dense(np.ones((2, 4), np.float32))
    WeightNorm(dense)
    with pytest.raises(TypeError, match=r"has no parameter 'weight' to normalize \(its parameters: \['bias'\]\)"):
        SpectralNorm(dense)                                     # its weight already belongs to a wrapper
    with pytest.raises(ValueError, match=r"^WeightNorm: axis 2 is out of range for the 2-D weight 'weight'"):
        WeightNorm(Dense(3), axis=2)(np.ones((2, 4), np.float32))
    zeros = Dense(3, kernel_init="zeros")
    with pytest.raises(ValueError, match=r"^WeightNorm: output units \[0, 1, 2\] of the wrapped Dense have an "
                                         r"all-zero weight"):
        WeightNorm(zeros)(np.ones((2, 4), np.float32))
    assert sorted(zeros._parameters) == ["bias", "weight"]     # the refused layer keeps its weight
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=rf"^SpectralNorm: n_power_iterations must be an int >= 1, got {bad!r}"):
            SpectralNorm(Dense(3), n_power_iterations=bad)
    with pytest.raises(ValueError, match=r"^SpectralNorm: eps must be a positive number, got 0"):
        SpectralNorm(Dense(3), eps=0)
    with pytest.raises(ValueError, match=r"^WeightNorm: axis must be None .* got 'last'"):
        WeightNorm(Dense(3), axis="last")


# -- learning ---------------------------------------------------------------------------------------------


def test_weight_normalised_network_learns_the_digits():
    lamina.manual_seed(0)
    x, y = load_digits(size=8)
    x = x.astype(np.float32) / 255
    (x_train, y_train), _, (x_test, y_test) = train_val_test_split(x, y, val=0.0, test=0.25, seed=0)
    model = nn.Sequential(nn.Flatten(), WeightNorm(Dense(64, activation="relu")), WeightNorm(Dense(10)))
    model.build((None, 8, 8, 1))
    gains = model[1].g.numpy().copy()
    trainer = Trainer(model, lambda out, labels: F.categorical_cross_entropy(out, labels, from_logits=True),
                      optim.Adam(model.parameters(), lr=5e-3), metrics=(), verbose=0)
    trainer.fit((x_train, y_train), epochs=15, batch_size=32, seed=0)
    accuracy = (trainer.predict(x_test).argmax(axis=1) == y_test).mean()
    assert accuracy > 0.93, accuracy                          # about 0.97 with these seeds
    assert not np.allclose(model[1].g.numpy(), gains)          # the gains learn too
