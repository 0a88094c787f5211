"""Parametrizations and ``orthogonal``, MaxPool1D/3D with indices and MaxUnpool1D/3D,
AdaptiveLogSoftmaxWithLoss, FractionalMaxPool2D and pad_sequence: PyTorch's modules in
outputs and gradients (layouts converted at the boundary), float64 gradient checks, second
derivatives, config round trips and named errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, check_second_derivatives, compare_with_torch
from lamina import ShapeError, nn
from lamina import functional as F
from lamina.nn.orthogonal import Orthogonal


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _ncl(a):
    """Channels-last array to torch's channels-first."""
    return torch.tensor(np.moveaxis(a, -1, 1))


def _nhwc(t):
    return np.moveaxis(t.detach().numpy(), 1, -1)


def _dense(n_in, units):
    layer = nn.Dense(units)
    layer.build((None, n_in))
    layer.built = True
    return layer


# -- parametrizations and orthogonal -------------------------------------------------------------
MAPS = [("matrix_exp", 4, 4), ("cayley", 4, 4), ("householder", 4, 4), ("householder", 5, 3),
        ("householder", 3, 5), ("matrix_exp", 5, 3), ("cayley", 3, 5)]


@pytest.mark.parametrize("orthogonal_map, n_in, units", MAPS, ids=[f"{m}_{a}x{b}" for m, a, b in MAPS])
def test_orthogonal_matches_torch_for_the_same_original(f64, orthogonal_map, n_in, units):
    layer = nn.orthogonal(_dense(n_in, units), orthogonal_map=orthogonal_map)
    theirs = torch.nn.utils.parametrizations.orthogonal(torch.nn.Linear(n_in, units).double(),
                                                        orthogonal_map=orthogonal_map)
    lists = layer.parametrizations.weight
    lists.original.data = lists.original.data + 0.3 * _x(lists.original.shape, 1)
    # lamina's Dense weight is torch's transposed: the same map on the tall form, unless square,
    # where neither is transposed and the parametrization is compared on the same matrix
    square = n_in == units
    to_torch = (lambda a: a) if square else (lambda a: a.T)
    with torch.no_grad():
        theirs.parametrizations.weight.original.copy_(torch.tensor(to_torch(lists.original.data)))
        theirs.parametrizations.weight[0].base.copy_(torch.tensor(lists[0].base))
    upstream = _x((n_in, units), 2)
    ours = layer.weight
    assert_close(ours.numpy(), to_torch(theirs.weight.detach().numpy()), 1e-10, "weight")
    (ours * lamina.tensor(upstream)).sum().backward()
    (theirs.weight * torch.tensor(to_torch(upstream))).sum().backward()
    assert_close(lists.original.grad, to_torch(theirs.parametrizations.weight.original.grad.numpy()), 1e-9,
                 "gradient of original")


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley", "householder"])
def test_orthogonal_stays_orthogonal_under_training(f64, orthogonal_map):
    shape = (6, 4) if orthogonal_map == "householder" else (4, 4)
    layer = nn.orthogonal(_dense(*shape), orthogonal_map=orthogonal_map)
    w0 = layer.weight.numpy()
    assert_close(w0.T @ w0, np.eye(shape[1]), 1e-12, "W^T W at the start")
    optimizer = lamina.optim.SGD(layer.parameters(), lr=0.1)
    x, y = _x((8, shape[0]), 3), _x((8, shape[1]), 4)
    for _ in range(5):
        optimizer.zero_grad()
        F.mean(F.square(F.sub(layer(x), y))).backward()
        optimizer.step()
    w = layer.weight.numpy()
    assert np.abs(w - w0).max() > 1e-3                      # it learned
    assert_close(w.T @ w, np.eye(shape[1]), 1e-10, "W^T W after training")


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley", "householder"])
def test_orthogonal_map_gradients_and_second_derivatives(f64, orthogonal_map):
    shape = (4, 3) if orthogonal_map == "householder" else (3, 3)
    ortho = Orthogonal(shape, orthogonal_map)
    ortho.right_inverse(_x(shape, 5))
    x = _x(shape, 6) * 0.3 - np.eye(*shape)
    assert check_gradients(ortho, x)
    assert check_second_derivatives(ortho, x)


def test_parametrization_state_dict_remove_and_assignment(f64):
    layer = nn.orthogonal(_dense(3, 3))
    assert type(layer).__name__ == "ParametrizedDense" and isinstance(layer, nn.Dense)
    assert nn.parametrize.is_parametrized(layer, "weight")
    state = layer.state_dict()
    assert list(state) == list(torch.nn.utils.parametrizations.orthogonal(torch.nn.Linear(3, 3)).state_dict())
    assert "weight" not in dict(layer.named_parameters())
    other = nn.orthogonal(_dense(3, 3))
    other.load_state_dict(state)
    assert_close(other.weight.numpy(), layer.weight.numpy(), 1e-14)

    q = np.linalg.qr(_x((3, 3), 7))[0]
    layer.weight = q                                          # right_inverse: base <- q, original <- -I
    assert_close(layer.weight.numpy(), q, 1e-12)
    assert_close(layer.parametrizations.weight.original.numpy(), -np.eye(3), 0)

    value = layer.weight.numpy()
    nn.parametrize.remove_parametrizations(layer, "weight")
    assert type(layer) is nn.Dense and "parametrizations" not in layer._modules
    assert_close(layer.weight.numpy(), value, 0)
    assert sorted(layer.state_dict()) == ["bias", "weight"]
    assert nn.layer_to_config(layer)["class_name"] == "Dense"

    nn.orthogonal(layer)
    nn.parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
    assert_close(layer.weight.numpy(), -np.eye(3), 0)


class _Symmetric(nn.Module):
    def forward(self, x):
        return F.add(lamina.linalg.triu(x), F.swapaxes(lamina.linalg.triu(x, 1), 0, 1))


class _Scale(nn.Module):
    def forward(self, x):
        return F.mul(x, 2.0)

    def right_inverse(self, x):
        return F.mul(x, 0.5)


def test_custom_parametrizations_compose_and_cache(f64):
    layer = _dense(3, 3)
    w = layer.weight.numpy().copy()
    nn.parametrize.register_parametrization(layer, "weight", _Scale())
    assert_close(layer.parametrizations.weight.original.numpy(), w / 2, 1e-15)
    assert_close(layer.weight.numpy(), w, 1e-15)
    nn.parametrize.register_parametrization(layer, "weight", _Symmetric())
    sym = layer.weight.numpy()
    assert_close(sym, np.triu(w) + np.triu(w, 1).T, 1e-15)
    layer(_x((2, 3))).sum().backward()
    assert layer.parametrizations.weight.original.grad is not None
    with nn.parametrize.cached():
        assert layer.weight is layer.weight
    assert layer.weight is not layer.weight
    layer.bias = nn.Parameter(np.ones(3))                     # other names are set as usual
    assert "bias" in dict(layer.named_parameters())


def test_parametrizations_leave_weight_norms_working(f64):
    wrapped = nn.WeightNorm(_dense(3, 2))
    nn.parametrize.register_parametrization(wrapped, "g", _Scale())
    out = wrapped(_x((4, 3)))
    out.sum().backward()
    assert wrapped.parametrizations.g.original.grad.shape == (2,)


def test_parametrization_errors(f64):
    with pytest.raises(ValueError, match="not built yet"):
        nn.orthogonal(nn.Dense(3))
    with pytest.raises(ValueError, match="no parameter 'kernel'"):
        nn.parametrize.register_parametrization(_dense(3, 3), "kernel", _Scale())
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        nn.orthogonal(_dense(3, 3), "bias")
    with pytest.raises(ValueError, match="orthogonal_map"):
        nn.orthogonal(_dense(3, 3), orthogonal_map="svd")

    class Row(nn.Module):
        def forward(self, x):
            return x[0]

    with pytest.raises(ValueError, match="must keep"):
        nn.parametrize.register_parametrization(_dense(3, 3), "weight", Row())
    with pytest.raises(ValueError, match="no parametrization on 'weight'"):
        nn.parametrize.remove_parametrizations(_dense(3, 3), "weight")


# -- max pooling with indices, max unpooling in 1-D and 3-D ---------------------------------
def test_max_pool1d_indices_and_unpool1d_match_torch(f64):
    x = _x((2, 9, 3))
    pool = nn.MaxPool1D(3, stride=2, padding=1, return_indices=True)
    unpool = nn.MaxUnpool1D(3, stride=2, padding=1)

    def ours(a):
        v, i = pool(a)
        return unpool(v * v, i, output_size=9)

    def theirs(a):
        v, i = torch.nn.functional.max_pool1d(a.movedim(-1, 1), 3, 2, 1, return_indices=True)
        return torch.nn.functional.max_unpool1d(v * v, i, 3, 2, 1, output_size=[9]).movedim(1, -1)

    compare_with_torch(ours, theirs, x, dtype=np.float64)
    _, indices = pool(x)
    _, expected = torch.nn.functional.max_pool1d(_ncl(x), 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(indices, _nhwc(expected))
    v = lamina.tensor(x[:, ::2])
    default = nn.MaxUnpool1D(2)(v, np.zeros(v.shape, dtype=np.int64) + 1)
    assert default.shape == (2, 10, 3)
    # overlapping windows may share a maximum, which unpooling then writes twice: no derivative
    # there, so the checks use indices from disjoint windows
    v, indices = nn.MaxPool1D(2, return_indices=True)(x)
    unpool = nn.MaxUnpool1D(2)
    assert check_gradients(lambda a: unpool(a, indices), v.numpy())
    assert check_second_derivatives(lambda a: F.square(unpool(F.square(a), indices)), v.numpy())


def test_max_pool3d_indices_and_unpool3d_match_torch(f64):
    x = _x((2, 4, 5, 6, 2))
    kwargs = dict(pool_size=(2, 3, 2), stride=(2, 2, 3), padding=(1, 1, 0))
    pool, unpool = nn.MaxPool3D(**kwargs, return_indices=True), nn.MaxUnpool3D(**kwargs)
    targs = dict(kernel_size=(2, 3, 2), stride=(2, 2, 3), padding=(1, 1, 0))

    def ours(a):
        v, i = pool(a)
        return unpool(v * v, i, output_size=(4, 5, 6))

    def theirs(a):
        v, i = torch.nn.functional.max_pool3d(a.movedim(-1, 1), return_indices=True, **targs)
        return torch.nn.functional.max_unpool3d(v * v, i, output_size=(4, 5, 6), **targs).movedim(1, -1)

    compare_with_torch(ours, theirs, x, dtype=np.float64)
    v, indices = pool(x)
    _, expected = torch.nn.functional.max_pool3d(_ncl(x), return_indices=True, **targs)
    np.testing.assert_array_equal(indices, _nhwc(expected))
    v, indices = nn.MaxPool3D((2, 1, 3), return_indices=True)(x)           # disjoint windows, as in 1-D
    unpool = nn.MaxUnpool3D((2, 1, 3))
    assert check_gradients(lambda a: unpool(a, indices), v.numpy())
    assert check_second_derivatives(lambda a: F.square(unpool(F.square(a), indices)), v.numpy())


def test_unpool_configs_and_errors():
    for layer in (nn.MaxUnpool1D(3, stride=2, padding=1), nn.MaxUnpool3D((1, 2, 2)),
                  nn.MaxPool1D(2, return_indices=True), nn.MaxPool3D(2, return_indices=True)):
        again = nn.layer_from_config(nn.layer_to_config(layer))
        assert type(again) is type(layer) and again.get_config() == layer.get_config()
    v = np.ones((1, 2, 1), dtype=np.float32)
    with pytest.raises(ValueError, match=r"max_unpool1d: indices must lie in \[0, 4\)"):
        nn.MaxUnpool1D(2)(v, np.array([[[0], [7]]]))
    with pytest.raises(ShapeError, match="indices of the same shape"):
        nn.MaxUnpool1D(2)(v, np.zeros((1, 3, 1), dtype=np.int64))
    with pytest.raises(ShapeError, match="MaxUnpool3D"):
        nn.MaxUnpool3D(2)(v, v.astype(np.int64))


# -- AdaptiveLogSoftmaxWithLoss ----------------------------------------------------------------
def _adaptive_pair(head_bias=True):
    ours = nn.AdaptiveLogSoftmaxWithLoss(8, 10, [3, 6], div_value=2.0, head_bias=head_bias)
    theirs = torch.nn.AdaptiveLogSoftmaxWithLoss(8, 10, [3, 6], div_value=2.0, head_bias=head_bias).double()
    # lamina's Dense weights are (in, out), torch's Linear weights (out, in)
    theirs.load_state_dict({k: torch.tensor(v.T if v.ndim == 2 else v) for k, v in ours.state_dict().items()})
    return ours, theirs


@pytest.mark.parametrize("head_bias", [True, False])
def test_adaptive_log_softmax_matches_torch(f64, head_bias):
    ours, theirs = _adaptive_pair(head_bias)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x, target = _x((7, 8)), np.array([0, 4, 9, 2, 7, 5, 1])
    xl, xt = lamina.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out_l, out_t = ours(xl, target), theirs(xt, torch.tensor(target))
    assert_close(out_l.output.numpy(), out_t.output.detach().numpy(), 1e-12, "output")
    assert_close(out_l.loss.numpy(), out_t.loss.detach().numpy(), 1e-12, "loss")
    weights = _x(7, 1)
    F.add(out_l.loss, F.sum(F.mul(out_l.output, weights))).backward()
    (out_t.loss + (out_t.output * torch.tensor(weights)).sum()).backward()
    assert_close(xl.grad, xt.grad.numpy(), 1e-10, "input gradient")
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert_close(p.grad, q.grad.numpy().T if q.ndim == 2 else q.grad.numpy(), 1e-10, f"gradient of {name}")
    assert_close(ours.log_prob(x).numpy(), theirs.log_prob(torch.tensor(x)).detach().numpy(), 1e-12, "log_prob")
    np.testing.assert_array_equal(ours.predict(x), theirs.predict(torch.tensor(x)).numpy())
    one_l, one_t = ours(x[0], np.array(8)), theirs(torch.tensor(x[0]), torch.tensor(8))
    assert one_l.output.shape == () and abs(one_l.output.item() - one_t.output.item()) < 1e-12


def test_adaptive_log_softmax_gradcheck_config_and_errors(f64):
    layer = nn.AdaptiveLogSoftmaxWithLoss(4, 6, [2, 4], div_value=2.0)
    target = np.array([1, 5, 3])
    assert check_gradients(lambda a, *params: layer(a, target).loss, _x((3, 4)))
    assert check_gradients(lambda a: layer.log_prob(a), _x((2, 4)))
    assert_close(np.exp(layer.log_prob(_x((3, 4))).numpy()).sum(axis=1), np.ones(3), 1e-12, "probabilities")
    again = nn.layer_from_config(nn.layer_to_config(layer))
    assert type(again) is type(layer) and again.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="cutoffs"):
        nn.AdaptiveLogSoftmaxWithLoss(4, 6, [4, 2])
    with pytest.raises(ValueError, match="cutoffs"):
        nn.AdaptiveLogSoftmaxWithLoss(4, 6, [2, 6])
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 5\]"):
        layer(_x((2, 4)), np.array([0, 6]))
    with pytest.raises(ShapeError, match=r"\(batch, 4\)"):
        layer(_x((2, 5)), np.array([0, 1]))


# -- FractionalMaxPool2D --------------------------------------------------------------------
FRACTIONAL = [((9, 11), (2, 3), dict(output_size=(5, 4))), ((10, 7), 2, dict(output_ratio=(0.6, 0.5))),
              ((5, 5), 3, dict(output_size=3))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hw, kernel, kwargs", FRACTIONAL, ids=["size", "ratio", "square"])
def test_fractional_max_pool_matches_torch(dtype, hw, kernel, kwargs):
    x = _x((2, *hw, 3))
    samples = np.random.default_rng(1).random((2, 3, 2)).astype(dtype)
    layer = nn.FractionalMaxPool2D(kernel, **kwargs, return_indices=True)

    def ours(a):
        return layer(a, _random_samples=samples)[0]

    def theirs(a):
        return torch.nn.functional.fractional_max_pool2d(a.movedim(-1, 1), kernel, **kwargs,
                                                         _random_samples=torch.tensor(samples)).movedim(1, -1)

    compare_with_torch(ours, theirs, x, dtype=dtype)
    _, indices = layer(x.astype(dtype), _random_samples=samples)
    _, expected = torch.nn.functional.fractional_max_pool2d(_ncl(x.astype(dtype)), kernel, **kwargs,
                                                            return_indices=True,
                                                            _random_samples=torch.tensor(samples))
    np.testing.assert_array_equal(indices, _nhwc(expected))


def test_fractional_max_pool_gradients_draws_config_and_errors(f64):
    layer = nn.FractionalMaxPool2D(2, output_ratio=0.7)
    samples = np.random.default_rng(2).random((1, 2, 2))
    x = _x((1, 7, 6, 2))
    assert check_gradients(lambda a: layer(a, _random_samples=samples), x)
    assert check_second_derivatives(lambda a: F.square(layer(F.square(a), _random_samples=samples)), x)
    assert layer(x).shape == layer.compute_output_shape(x.shape) == (1, 4, 4, 2)
    lamina.manual_seed(0)
    first = layer(_x((2, 20, 20, 4))).numpy()
    lamina.manual_seed(0)
    assert_close(layer(_x((2, 20, 20, 4))).numpy(), first, 0)
    assert np.abs(layer(_x((2, 20, 20, 4))).numpy() - first).max() > 0          # a fresh draw
    again = nn.layer_from_config(nn.layer_to_config(layer))
    assert type(again) is type(layer) and again.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="exactly one of output_size and output_ratio"):
        nn.FractionalMaxPool2D(2)
    with pytest.raises(ShapeError, match="input height of at least 6"):
        nn.FractionalMaxPool2D(3, output_size=(4, 2))(x[:, :5])
    with pytest.raises(ShapeError, match=r"_random_samples must have shape \(N, C, 2\)"):
        layer(x, _random_samples=samples[:, :1])


# -- pad_sequence --------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_first, side", [(True, "right"), (False, "right"), (True, "left")])
def test_pad_sequence_matches_torch(batch_first, side):
    seqs = [_x((n, 3), n) for n in (4, 2, 5)]
    compare_with_torch(lambda *s: nn.pad_sequence(s, batch_first, -1.0, side),
                       lambda *s: torch.nn.utils.rnn.pad_sequence(s, batch_first, -1.0, side), *seqs,
                       dtype=np.float64)
    assert check_gradients(lambda *s: nn.pad_sequence(s, batch_first, 0.5, side), *seqs)


def test_pad_sequence_errors():
    with pytest.raises(ShapeError, match=r"sequence 1"):
        nn.pad_sequence([np.ones((2, 3)), np.ones((2, 4))])
    with pytest.raises(ValueError, match="padding_side"):
        nn.pad_sequence([np.ones(2)], padding_side="middle")


def test_a_parametrized_layer_config_is_refused_with_the_way_out():
    from lamina.nn.layer import layer_to_config

    layer = nn.Dense(3)
    layer.build((None, 3))
    nn.orthogonal(layer)
    with pytest.raises(ValueError, match=r"has parametrizations \(weight\).*state_dict.*remove_parametrizations"):
        layer_to_config(layer)
    nn.parametrize.remove_parametrizations(layer, "weight")
    assert layer_to_config(layer)["class_name"] == "Dense"
