"""EGNNLayer and CFConv: outputs and gradients against torch re-implementations, symmetry
under rotations, reflections, translations and permutations, and error messages."""

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import nn
from lamina.data import radius_graph
from lamina.errors import ShapeError
from lamina.nn.functional_call import functional_call

N, HIDDEN, DIMS = 6, 4, 3
POS = randn(N, DIMS, seed=11)
EDGES = radius_graph(POS, 2.5)          # both directions, no self-loops; node degrees differ


def _t(index):
    return torch.from_numpy(np.asarray(index))


def _torch_sum(values, index, n):
    return torch.zeros((n,) + values.shape[1:], dtype=values.dtype).index_add_(0, _t(index), values)


def _linear(p, name, x):
    out = x @ p[f"{name}.weight"]
    return out + p[f"{name}.bias"] if f"{name}.bias" in p else out


def torch_egnn(p, h, x, edge_attr, edges=EDGES, update_coords=True, normalize=False, tanh=False, coords_agg="mean"):
    """The reference update written with index_add_: i = edges[1] (target), j = edges[0]."""
    n, silu = h.shape[0], torch.nn.functional.silu
    j, i = _t(edges[0]), _t(edges[1])
    diff = x[i] - x[j]
    radial = (diff ** 2).sum(dim=1, keepdim=True)
    parts = [h[i], h[j], radial] + ([edge_attr] if edge_attr is not None else [])
    m = silu(_linear(p, "edge_out", silu(_linear(p, "edge_in", torch.cat(parts, dim=1)))))
    if update_coords:
        if normalize:
            diff = diff / (radial.detach().sqrt() + 1e-8)
        scale = _linear(p, "coord_out", silu(_linear(p, "coord_in", m)))
        scale = torch.tanh(scale) if tanh else scale
        shift = _torch_sum(diff * scale, edges[1], n)
        if coords_agg == "mean":
            shift = shift / torch.bincount(i, minlength=n).clamp(min=1)[:, None].to(x.dtype)
        x = x + shift
    h = h + _linear(p, "node_out", silu(_linear(p, "node_in", torch.cat([h, _torch_sum(m, edges[1], n)], dim=1))))
    return h, x


def torch_cfconv(p, h, x, num_rbf, cutoff, edges=EDGES):
    j, i = _t(edges[0]), _t(edges[1])
    d = ((x[i] - x[j]) ** 2).sum(dim=1).sqrt()
    mu = torch.linspace(0.0, cutoff, num_rbf, dtype=x.dtype)
    rbf = torch.exp(-0.5 / (mu[1] - mu[0]) ** 2 * (d[:, None] - mu) ** 2)
    ssp = torch.nn.functional.softplus(_linear(p, "filter_in", rbf)) - math.log(2.0)
    cut = 0.5 * (torch.cos(d * math.pi / cutoff) + 1.0) * (d < cutoff).to(x.dtype)
    w = _linear(p, "filter_out", ssp) * cut[:, None]
    return _linear(p, "lin_out", _torch_sum(_linear(p, "lin_in", h)[j] * w, edges[1], h.shape[0]))


def _f64(a):
    return lamina.tensor(a, dtype=np.float64)


def _params(layer, scale=1.0):
    """The layer's parameter names and random float64 values (non-zero coordinate weights)."""
    names = [k for k, _ in layer.named_parameters()]
    return names, [randn(*v.shape, seed=20 + k, scale=scale) for k, (_, v) in enumerate(layer.named_parameters())]


EGNN_OPTIONS = [
    {},
    {"edge_dim": 2, "coords_agg": "sum", "normalize": True, "tanh": True},
    {"update_coords": False, "edge_dim": 1},
]


@pytest.mark.parametrize("options", EGNN_OPTIONS)
def test_egnn_layer_matches_torch(options):
    layer = nn.EGNNLayer(HIDDEN, **options).to(np.float64)
    names, values = _params(layer, scale=0.5)
    edge_dim = options.get("edge_dim", 0)
    attr = randn(EDGES.shape[1], max(edge_dim, 1), seed=3)
    torch_options = {k: v for k, v in options.items() if k != "edge_dim"}

    def ours(h, x, attr, *params):
        h, x = functional_call(layer, dict(zip(names, params)), h, x, EDGES, attr if edge_dim else None)
        return [h, x] if layer.update_coords else [h]

    def theirs(h, x, attr, *params):
        h, x = torch_egnn(dict(zip(names, params)), h, x, attr if edge_dim else None, **torch_options)
        return [h, x] if layer.update_coords else [h]

    arrays = (randn(N, HIDDEN, seed=1), POS, attr, *values)
    compare_with_torch(ours, theirs, *arrays, dtype=np.float64)
    # normalize holds the edge lengths constant (as the reference does): no true derivative in x
    wants = [True, not options.get("normalize", False)] + [True] * (len(arrays) - 2)
    assert check_gradients(lambda *a: ours(*a)[-1], *arrays, grad=wants)


def test_cfconv_matches_torch():
    layer = nn.CFConv(HIDDEN, 3, num_filters=5, num_rbf=6, cutoff=2.5).to(np.float64)
    names, values = _params(layer, scale=0.5)

    def ours(h, x, *params):
        return functional_call(layer, dict(zip(names, params)), h, x, EDGES)

    def theirs(h, x, *params):
        return torch_cfconv(dict(zip(names, params)), h, x, 6, 2.5)

    arrays = (randn(N, HIDDEN, seed=1), POS, *values)
    compare_with_torch(ours, theirs, *arrays, dtype=np.float64)
    assert check_gradients(ours, *arrays)


# -- symmetries ------------------------------------------------------------------------------
def random_orthogonal(seed, reflect):
    q, r = np.linalg.qr(randn(DIMS, DIMS, seed=seed))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q


def _transform(seed, reflect):
    """(rotation/reflection Q, translation t, permutation, edges relabelled by the permutation)."""
    perm = np.random.default_rng(seed).permutation(N)
    inverse = np.argsort(perm)                    # new position of old node v
    return random_orthogonal(seed, reflect), randn(DIMS, seed=seed + 1), perm, inverse[EDGES]


@pytest.mark.parametrize("reflect", [False, True])
def test_egnn_layer_is_equivariant(reflect):
    layer = nn.EGNNLayer(HIDDEN, edge_dim=2).to(np.float64)
    parameters = dict(layer.named_parameters())
    for name, value in zip(*_params(layer, scale=0.5)):
        parameters[name].data[...] = value
    h, attr = randn(N, HIDDEN, seed=1), randn(EDGES.shape[1], 2, seed=2)
    q, shift, perm, edges = _transform(5, reflect)
    order = np.lexsort(edges[::-1])               # any edge order: shuffle the edges too
    h1, x1 = layer(_f64(h), _f64(POS), EDGES, _f64(attr))
    h2, x2 = layer(_f64(h[perm]), _f64(POS[perm] @ q.T + shift), edges[:, order],
                   _f64(attr[order]))
    np.testing.assert_allclose(h2.numpy(), h1.numpy()[perm], rtol=0, atol=1e-10)
    np.testing.assert_allclose(x2.numpy(), x1.numpy()[perm] @ q.T + shift, rtol=0, atol=1e-10)
    assert np.abs(x1.numpy() - POS).max() > 1e-3          # the coordinates did move


@pytest.mark.parametrize("reflect", [False, True])
def test_cfconv_is_invariant(reflect):
    layer = nn.CFConv(HIDDEN, 3, num_filters=5, num_rbf=6, cutoff=2.5).to(np.float64)
    h = randn(N, HIDDEN, seed=1)
    q, shift, perm, edges = _transform(7, reflect)
    out1 = layer(_f64(h), _f64(POS), EDGES).numpy()
    out2 = layer(_f64(h[perm]), _f64(POS[perm] @ q.T + shift), edges).numpy()
    np.testing.assert_allclose(out2, out1[perm], rtol=0, atol=1e-10)


def test_cosine_cutoff_and_rbf():
    d = np.array([0.0, 0.5, 1.0, 1.999, 2.0, 3.0])
    np.testing.assert_allclose(nn.graph.cosine_cutoff(_f64(d), 2.0).numpy(), [1, 0.5 * (np.cos(np.pi / 4) + 1), 0.5,
                                                                         0.5 * (np.cos(np.pi * 0.9995) + 1), 0, 0])
    rbf = nn.graph.gaussian_rbf(_f64(d), 5, 2.0).numpy()
    assert rbf.shape == (6, 5) and np.allclose(rbf[[0, 2, 4], [0, 2, 4]], 1.0)
    np.testing.assert_allclose(nn.graph.shifted_softplus(_f64([0.0, 30.0])).numpy(), [0.0, 30 - np.log(2)])


# -- errors ------------------------------------------------------------------------------------
def test_errors_name_the_layer_and_the_shapes():
    layer = nn.EGNNLayer(HIDDEN, edge_dim=2).to(np.float64)
    h, x = _f64(randn(N, HIDDEN)), _f64(POS)
    with pytest.raises(ShapeError, match=r"EGNNLayer.*\(6, 3\).*\(5, dims\)"):
        layer(_f64(randn(5, HIDDEN)), x, EDGES[:, EDGES.max(axis=0) < 5], randn(3, 2))
    with pytest.raises(ShapeError, match=r"EGNNLayer.*\(6, 5\).*features"):
        layer(_f64(randn(N, 5)), x, EDGES, randn(EDGES.shape[1], 2))
    with pytest.raises(ShapeError, match=rf"EGNNLayer: edge_attr of shape \(3, 2\).*\({EDGES.shape[1]}, 2\)"):
        layer(h, x, EDGES, randn(3, 2))
    with pytest.raises(ValueError, match="EGNNLayer.*edge_dim=2"):
        layer(h, x, EDGES)
    with pytest.raises(ValueError, match="EGNNLayer.*out of range for 6 nodes"):
        layer(h, x, EDGES + 1, randn(EDGES.shape[1], 2))
    with pytest.raises(ShapeError, match=r"CFConv.*\(4, 3\).*\(6, dims\)"):
        nn.CFConv(HIDDEN, 2).to(np.float64)(h, _f64(POS[:4]), EDGES)
    with pytest.raises(ValueError, match="EGNNLayer: coords_agg"):
        nn.EGNNLayer(HIDDEN, coords_agg="max")
