"""Low-rank factorisation: the SVD, Tucker-2 and CP decompositions against NumPy/torch
references, factorised Dense and Conv2D chains against torch's layers (exact at full rank with
stride, padding, dilation, bias and activation), errors falling with the rank, the report of
compress_model against the summary, errors, and a factorised CNN fine-tuned on the digits."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import lamina
from lamina import functional as F
from lamina import nn, optim
from lamina.analysis import summary
from lamina.data import load_digits, train_val_test_split
from lamina.nn.compression import (
    compress_model,
    cp_als,
    cp_to_tensor,
    factorize_conv,
    factorize_dense,
    rank_for_energy,
    relative_error,
    truncated_svd,
    tucker2,
    tucker2_to_tensor,
)


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _dense(n_in, n_out, activation=None, use_bias=True, seed=0):
    layer = nn.Dense(n_out, activation=activation, use_bias=use_bias)
    layer.build((None, n_in))
    layer.weight.data = _rng(seed).standard_normal((n_in, n_out))
    if use_bias:
        layer.bias.data = _rng(seed + 1).standard_normal(n_out)
    return layer


def _conv(k, f, c_in, seed=0, **options):
    layer = nn.Conv2D(k, f, **options)
    layer.build((None, None, None, c_in))
    layer.weight.data = _rng(seed).standard_normal(layer.weight.shape)
    if layer.use_bias:
        layer.bias.data = _rng(seed + 1).standard_normal(k)
    return layer


def _torch_conv(layer: nn.Conv2D, x: np.ndarray) -> np.ndarray:
    """The original layer computed by torch (NCHW) on the NHWC batch x."""
    w = torch.tensor(layer.weight.data.transpose(0, 3, 1, 2))
    b = torch.tensor(layer.bias.data) if layer.use_bias else None
    padding = layer.padding if isinstance(layer.padding, str) else tuple(layer.padding)
    y = torch.nn.functional.conv2d(torch.tensor(x.transpose(0, 3, 1, 2)), w, b, stride=layer.stride,
                                   padding=padding, dilation=layer.dilation)
    if layer.activation_spec == "relu":
        y = torch.relu(y)
    return y.numpy().transpose(0, 2, 3, 1)


# -- decompositions ----------------------------------------------------------------------------

def test_truncated_svd_is_the_eckart_young_truncation():
    m = _rng().standard_normal((7, 5))
    u, s, vt = torch.linalg.svd(torch.tensor(m), full_matrices=False)
    for r in (1, 3, 5):
        ours_u, ours_s, ours_vt = truncated_svd(m, r)
        expected = (u[:, :r] * s[:r]) @ vt[:r]
        np.testing.assert_allclose((ours_u * ours_s) @ ours_vt, expected.numpy(), atol=1e-12)
        # ||M - M_r||_F^2 = sum of the dropped s_i^2
        assert np.isclose(np.linalg.norm(m - expected.numpy()) ** 2, float((s[r:] ** 2).sum()))


def test_rank_for_energy_is_the_smallest_rank_keeping_the_energy():
    s = np.array([4.0, 2.0, 1.0, 1.0])                 # squares 16, 4, 1, 1 of 22
    assert rank_for_energy(s, 16 / 22) == 1
    assert rank_for_energy(s, 16 / 22 + 1e-6) == 2
    assert rank_for_energy(s, 0.95) == 3
    assert rank_for_energy(s, 1.0) == 4


def test_cp_als_recovers_an_exactly_low_rank_tensor():
    factors = [_rng(n).standard_normal((size, 3)) for n, size in enumerate((6, 3, 3, 5))]
    tensor = cp_to_tensor(factors)
    found, error = cp_als(tensor, 3, iterations=500)
    assert error < 1e-8
    np.testing.assert_allclose(cp_to_tensor(found), tensor, atol=1e-7)
    # the rank-one terms carry equal column norms across the four modes
    norms = np.stack([np.linalg.norm(f, axis=0) for f in found])
    np.testing.assert_allclose(norms, norms[:1].repeat(4, axis=0), rtol=1e-10)


def test_cp_to_tensor_matches_the_sum_of_outer_products():
    a, b, c = (_rng(n).standard_normal((size, 2)) for n, size in enumerate((4, 3, 5)))
    expected = sum(np.einsum("i,j,k->ijk", a[:, r], b[:, r], c[:, r]) for r in range(2))
    np.testing.assert_allclose(cp_to_tensor([a, b, c]), expected, atol=1e-12)


def test_tucker2_is_exact_at_full_ranks_and_hooi_does_not_do_worse():
    w = _rng().standard_normal((6, 3, 3, 5))
    core, u_out, u_in = tucker2(w, (0, 3), (6, 5))
    np.testing.assert_allclose(tucker2_to_tensor(core, u_out, u_in, (0, 3)), w, atol=1e-12)
    np.testing.assert_allclose(u_in.T @ u_in, np.eye(5), atol=1e-12)
    hosvd = relative_error(w, tucker2_to_tensor(*tucker2(w, (0, 3), (2, 2)), (0, 3)))
    hooi = relative_error(w, tucker2_to_tensor(*tucker2(w, (0, 3), (2, 2), iterations=5), (0, 3)))
    assert hooi <= hosvd + 1e-12
    # the core is the projection: G = W x_0 U_out^T x_3 U_in^T
    core, u_out, u_in = tucker2(w, (0, 3), (2, 3))
    np.testing.assert_allclose(core, np.einsum("kijc,ka,cb->aijb", w, u_out, u_in), atol=1e-12)


# -- Dense -------------------------------------------------------------------------------------

def test_factorized_dense_at_full_rank_equals_the_original(f64):
    layer = _dense(6, 4, activation="tanh")
    chain = factorize_dense(layer, rank=4)
    x = _rng(5).standard_normal((3, 6))
    np.testing.assert_allclose(chain[0].weight.data @ chain[1].weight.data, layer.weight.data, atol=1e-10)
    np.testing.assert_allclose(chain(lamina.tensor(x)).data, layer(lamina.tensor(x)).data, atol=1e-10)
    assert chain[0].weight.dtype == np.float64 and not chain[0].use_bias


def test_factorized_dense_at_rank_r_is_the_svd_truncation(f64):
    layer = _dense(8, 6)
    x = _rng(5).standard_normal((4, 8))
    u, s, vt = torch.linalg.svd(torch.tensor(layer.weight.data), full_matrices=False)
    for r in (1, 2, 5):
        chain = factorize_dense(layer, rank=r)
        w_r = ((u[:, :r] * s[:r]) @ vt[:r]).numpy()
        np.testing.assert_allclose(chain[0].weight.data @ chain[1].weight.data, w_r, atol=1e-10)
        np.testing.assert_allclose(chain(lamina.tensor(x)).data, x @ w_r + layer.bias.data, atol=1e-10)
    energy_chain = factorize_dense(layer, energy=0.9)
    assert energy_chain[0].units == rank_for_energy(s.numpy(), 0.9)


def test_factorized_dense_trains_through_both_factors(f64):
    chain = factorize_dense(_dense(5, 3), rank=2)
    x = _rng(1).standard_normal((4, 5))
    chain(lamina.tensor(x)).sum().backward()
    assert all(p.grad is not None and np.abs(p.grad).sum() > 0 for p in chain.parameters())


# -- Conv2D ------------------------------------------------------------------------------------

CONV_OPTIONS = [
    dict(stride=1, padding="valid"),
    dict(stride=2, padding=1),
    dict(stride=(2, 1), padding=(2, 0), activation="relu"),
    dict(stride=1, padding="same", dilation=2),
    dict(stride=1, padding="same", use_bias=False),
]


def _cp_kernel(k, f, c_in, rank, seed=0):
    """A (K, f, f, c_in) kernel of CP rank ``rank`` at most."""
    return cp_to_tensor([_rng(seed + n).standard_normal((size, rank)) for n, size in enumerate((k, f, f, c_in))])


@pytest.mark.parametrize("options", CONV_OPTIONS)
@pytest.mark.parametrize("method", ["tucker2", "svd", "cp"])
def test_conv_chains_at_full_rank_reproduce_the_conv(f64, method, options):
    layer = _conv(6, 3, 5, **options)
    if method == "cp":
        layer.weight.data = _cp_kernel(6, 3, 5, 4)
    ranks = {"tucker2": (5, 6), "svd": 15, "cp": 4}[method]
    chain, error = factorize_conv(layer, method, ranks=ranks, iterations=400 if method == "cp" else None)
    x = _rng(7).standard_normal((2, 9, 8, 5))
    np.testing.assert_allclose(chain(lamina.tensor(x)).data, _torch_conv(layer, x), atol=1e-8)
    assert error < 1e-9
    assert chain.name == layer.name and all(p.data.dtype == np.float64 for p in chain.parameters())


def test_conv_chain_shapes_follow_the_papers(f64):
    layer = _conv(8, 3, 6)
    tucker, _ = factorize_conv(layer, "tucker2", ranks=(2, 3))
    assert [tuple(c.weight.shape) for c in tucker] == [(2, 1, 1, 6), (3, 3, 3, 2), (8, 1, 1, 3)]
    cp, _ = factorize_conv(layer, "cp", ranks=4, iterations=5)
    assert [tuple(c.weight.shape) for c in cp] == [(4, 1, 1, 6), (4, 3, 1, 1), (4, 1, 3, 1), (8, 1, 1, 4)]
    assert [type(c).__name__ for c in cp] == ["Conv2D", "DepthwiseConv2D", "DepthwiseConv2D", "Conv2D"]
    svd, _ = factorize_conv(layer, "svd", ranks=5)
    assert [tuple(c.weight.shape) for c in svd] == [(5, 3, 1, 6), (8, 1, 3, 5)]
    assert [c.use_bias for c in svd] == [False, True]
    for method in ("tucker2", "svd"):
        full, error = factorize_conv(layer, method, energy=1.0)
        assert error < 1e-12
        rough, rough_error = factorize_conv(layer, method, energy=0.5)
        assert 0 < rough_error < 1 and sum(p.data.size for p in rough.parameters()) < \
            sum(p.data.size for p in full.parameters())


@pytest.mark.parametrize("method, ranks", [("tucker2", [(1, 1), (2, 3), (4, 5), (6, 8)]),
                                           ("svd", [1, 3, 8, 18]), ("cp", [1, 4, 12, 30])])
def test_reconstruction_error_falls_as_the_rank_rises(f64, method, ranks):
    layer = _conv(8, 3, 6, seed=3)
    errors = [factorize_conv(layer, method, ranks=r, iterations=60 if method == "cp" else None)[1] for r in ranks]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))
    if method != "cp":
        assert errors[-1] < 1e-12


def test_conv_error_is_the_relative_error_of_the_chain_kernel(f64):
    layer = _conv(4, 3, 3)
    chain, error = factorize_conv(layer, "svd", ranks=2)
    # the kernel of the chain, read off its response to unit impulses
    x = np.zeros((3 * 3 * 3, 3, 3, 3))
    for n, (i, j, c) in enumerate(np.ndindex(3, 3, 3)):
        x[n, i, j, c] = 1.0
    layer_nobias = copy.deepcopy(chain)
    layer_nobias[-1].bias.data[:] = 0
    kernel = layer_nobias(lamina.tensor(x)).data.reshape(3, 3, 3, 4).transpose(3, 0, 1, 2)
    assert np.isclose(error, relative_error(layer.weight.data, kernel), rtol=1e-10)


# -- compress_model ----------------------------------------------------------------------------

def _cnn(seed=0):
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Conv2D(8, 3, padding=1, activation="relu"), nn.MaxPool2D(2),
                          nn.Conv2D(16, 3, padding=1, activation="relu"), nn.Flatten(), nn.Dense(10))
    model.build((None, 8, 8, 1))
    return model


def test_compress_model_reports_parameters_and_macs_from_the_summary(f64):
    model = _cnn()
    before = [p.data.copy() for p in model.parameters()]
    small, report = compress_model(model, ranks={"conv2d_1": (4, 6), "dense": 5})
    assert all(np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))      # left unchanged
    assert [row.path for row in report.layers] == ["conv2d_1", "dense"]
    # Tucker-2 of (16, 3, 3, 8) at (4, 6): 8*4 + 9*4*6 + 6*16 + 16 bias; Dense (256, 10) at 5: 5*(256+10) + 10
    assert [row.params_after for row in report.layers] == [8 * 4 + 9 * 24 + 96 + 16, 5 * 266 + 10]
    assert report.params_before == summary(model).total_params
    assert report.params_after == summary(small).total_params == sum(p.data.size for p in small.parameters())
    saved_macs = (4 * 4 * (16 * 9 * 8) - 4 * 4 * (8 * 4 + 9 * 4 * 6 + 6 * 16)) + (256 * 10 - 5 * 266)
    assert report.macs_before - report.macs_after == saved_macs
    assert "conv2d_1" in str(report) and report.compression > 1


def test_compress_model_by_ratio_keeps_each_layer_within_budget_and_walks_nested_models(f64):
    model = nn.Sequential(nn.Sequential(nn.Conv2D(8, 3, padding=1), nn.ReLU(), name="block"), nn.Flatten(),
                          nn.Dense(10))
    model.build((None, 6, 6, 3))
    for method in ("tucker2", "cp", "svd"):
        small, report = compress_model(model, ratio=0.5, method=method, layers=["block.conv2d", "dense"])
        for row in report.layers:
            assert row.params_after - (8 if row.path == "block.conv2d" else 10) <= 0.5 * (row.params_before - 1)
        x = _rng().standard_normal((2, 6, 6, 3))
        assert small(lamina.tensor(x)).shape == (2, 10)


def test_compress_model_at_full_rank_computes_the_same_function(f64):
    model = _cnn()
    small, _ = compress_model(model, ranks={"conv2d": (1, 8), "conv2d_1": (8, 16), "dense": 10})
    x = _rng().standard_normal((3, 8, 8, 1))
    np.testing.assert_allclose(small(lamina.tensor(x)).data, model(lamina.tensor(x)).data, atol=1e-10)


def test_errors_name_the_problem(f64):
    dense, conv = _dense(4, 3), _conv(6, 3, 5)
    with pytest.raises(ValueError, match="larger than possible: at most 3"):
        factorize_dense(dense, rank=4)
    with pytest.raises(ValueError, match="exactly one of rank and energy"):
        factorize_dense(dense)
    with pytest.raises(ValueError, match="rank of mode 3 .* larger than possible"):
        factorize_conv(conv, "tucker2", ranks=(6, 6))
    with pytest.raises(ValueError, match="method must be one of"):
        factorize_conv(conv, "tt", ranks=2)
    grouped = nn.Conv2D(4, 3, groups=2)
    grouped.build((None, None, None, 4))
    with pytest.raises(ValueError, match="grouped convolution"):
        factorize_conv(grouped, ranks=2)
    with pytest.raises(ValueError, match="padding='same' with stride"):
        factorize_conv(_conv(4, 3, 2, stride=2, padding="same"), ranks=2)
    with pytest.raises(ValueError, match="expected a Conv2D"):
        factorize_conv(dense, ranks=2)
    model = _cnn()
    with pytest.raises(ValueError, match="layer 'conv9' not found"):
        compress_model(model, ratio=0.5, layers=["conv9"])
    with pytest.raises(ValueError, match="is a MaxPool2D"):
        compress_model(model, ratio=0.5, layers=["max_pool2d"])
    with pytest.raises(ValueError, match="is a MaxPool2D"):
        compress_model(model, ranks={"max_pool2d": 2})
    with pytest.raises(ValueError, match="ratio .* must be in"):
        compress_model(model, ratio=1.5)


# -- learning ----------------------------------------------------------------------------------

def _digits():
    x, y = load_digits(size=8)
    (xtr, ytr), _, (xte, yte) = train_val_test_split(x.astype(np.float32) / 255, y, val=0.0, test=0.25, seed=0)
    return xtr, ytr, xte, yte


def _train(model, x, y, steps, lr):
    opt = optim.SGD(model, lr=lr, momentum=0.9)
    order = np.random.default_rng(0).permutation(np.arange(steps * 32) % len(x))
    for s in range(steps):
        batch = order[s * 32:(s + 1) * 32]
        opt.zero_grad()
        F.categorical_cross_entropy(model(lamina.tensor(x[batch])), y[batch], from_logits=True).backward()
        opt.step()


def _accuracy(model, x, y) -> float:
    return float((model(lamina.tensor(x)).data.argmax(axis=1) == y).mean())


def test_a_factorized_cnn_recovers_its_accuracy_after_a_little_fine_tuning():
    xtr, ytr, xte, yte = _digits()
    model = _cnn()
    _train(model, xtr, ytr, steps=120, lr=0.05)
    dense_accuracy = _accuracy(model, xte, yte)
    small, report = compress_model(model, ranks={"conv2d_1": (4, 6), "dense": 6})
    compressed_accuracy = _accuracy(small, xte, yte)
    _train(small, xtr, ytr, steps=60, lr=0.02)
    tuned_accuracy = _accuracy(small, xte, yte)
    print(f"\n{report}\naccuracy: original {dense_accuracy:.3f}, factorised {compressed_accuracy:.3f}, "
          f"after 60 steps {tuned_accuracy:.3f}")
    assert dense_accuracy > 0.85
    assert tuned_accuracy > compressed_accuracy
    assert tuned_accuracy > dense_accuracy - 0.05
