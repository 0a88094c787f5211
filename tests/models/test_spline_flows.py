"""Neural spline flow layers: exact inverses, log-determinants against torch's slogdet of the
Jacobian, the autoregressive structure, gradients, errors, and learning two moons better than
a Gaussian and an affine coupling flow of similar size."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from sklearn.datasets import make_moons

import lamina
from helpers import check_gradients, randn
from lamina.autograd import jacobian
from lamina.errors import ShapeError
from lamina.models.flows import AffineCoupling, NormalizingFlow
from lamina.models.spline_flows import SplineAutoregressive, SplineCoupling
from lamina.optim import Adam


def randomized(layer, features, seed=0, spread=0.5):
    layer.build((None, features))
    layer.double()
    rng = np.random.default_rng(seed)
    for _, p in layer.named_parameters():
        p.data = rng.standard_normal(p.shape) * spread
    return layer


def jacobian_log_det(fn, x):
    """torch's slogdet of each sample's block of the exact Jacobian of ``fn`` at ``x``."""
    full = jacobian(fn, x)
    blocks = np.stack([full[i, :, i, :] for i in range(x.shape[0])])
    sign, log_abs = torch.linalg.slogdet(torch.from_numpy(blocks))
    assert torch.all(sign != 0)
    return log_abs.numpy()


LAYERS = [lambda: randomized(SplineCoupling([1, 0, 1], num_bins=4, tail_bound=2.0, hidden=(8,)), 3),
          lambda: randomized(SplineCoupling([0, 1], num_bins=3, hidden=(6, 6), activation="tanh"), 2, seed=1),
          lambda: randomized(SplineAutoregressive(num_bins=4, tail_bound=2.0, hidden=(8,)), 3, seed=2)]


@pytest.mark.parametrize("make", LAYERS)
def test_inverse_and_log_det(make):
    layer = make()
    x = lamina.tensor(randn(5, layer.features, seed=3) * 1.5, dtype=np.float64)   # some beyond the tail bound
    y, log_det = layer(x)
    back, log_det_back = layer.inverse(y)
    np.testing.assert_allclose(back.numpy(), x.numpy(), atol=1e-10, rtol=0)
    np.testing.assert_allclose(log_det_back.numpy(), -log_det.numpy(), atol=1e-10, rtol=0)
    assert np.abs(y.numpy() - x.numpy()).max() > 0.1
    np.testing.assert_allclose(log_det.numpy(), jacobian_log_det(lambda v: layer(v)[0], x), atol=1e-10, rtol=0)
    np.testing.assert_allclose(log_det_back.numpy(), jacobian_log_det(lambda v: layer.inverse(v)[0], y.detach()),
                               atol=1e-10, rtol=0)


def test_coupling_keeps_masked_features_and_autoregressive_is_triangular():
    coupling = LAYERS[0]()
    x = lamina.tensor(randn(4, 3, seed=4), dtype=np.float64)
    y = coupling(x)[0].numpy()
    np.testing.assert_array_equal(y[:, [0, 2]], x.numpy()[:, [0, 2]])
    made = LAYERS[2]()
    full = jacobian(lambda v: made(v)[0], x)[0, :, 0, :]
    assert np.all(np.triu(full, 1) == 0) and np.all(np.abs(np.tril(full, -1)[np.tril_indices(3, -1)]) > 0)


@pytest.mark.parametrize("make", [LAYERS[0], LAYERS[2]])
def test_numerical_gradients(make):
    layer = make()
    assert check_gradients(lambda x: (layer(x)[0] ** 2).sum() + layer(x)[1].sum(), randn(3, 3, seed=5))
    assert check_gradients(lambda y: (layer.inverse(y)[0] ** 2).sum() + layer.inverse(y)[1].sum(),
                           randn(3, 3, seed=6))


def test_errors():
    with pytest.raises(ValueError, match="tail_bound must be a positive number"):
        SplineCoupling([1, 0], tail_bound=0.0)
    with pytest.raises(ValueError, match="tail_bound must be a positive number"):
        SplineAutoregressive(tail_bound=-1)
    with pytest.raises(ValueError, match="mask must be 0s and 1s"):
        SplineCoupling([1, 1])
    layer = SplineCoupling([1, 0, 1])
    with pytest.raises(ShapeError, match=r"the mask has 3 entries, so expected \(batch, 3\)"):
        layer(lamina.tensor(np.zeros((2, 4))))


def moons(seed, n=512):
    return make_moons(n, noise=0.05, random_state=seed)[0]


def test_two_moons_spline_beats_gaussian_and_affine_coupling():
    train = moons(0)
    mean, std = train.mean(0), train.std(0)
    train = ((train - mean) / std).astype(np.float32)
    test = ((moons(1) - mean) / std).astype(np.float32)
    cov = np.cov(train.T)
    centred = test - train.mean(0)
    gaussian = (0.5 * np.einsum("ni,ij,nj->n", centred, np.linalg.inv(cov), centred).mean()
                + 0.5 * np.log(np.linalg.det(2 * np.pi * cov)))

    def fit(layers, steps=200):
        lamina.manual_seed(0)
        flow = NormalizingFlow(layers)
        flow.build((None, 2))
        optimizer = Adam(flow.parameters(), lr=5e-3)
        rng = np.random.default_rng(0)
        for _ in range(steps):
            loss = -flow.log_prob(lamina.tensor(train[rng.choice(len(train), 128)])).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with lamina.no_grad():
            return float(-flow.log_prob(lamina.tensor(test)).numpy().mean()), sum(p.size for p in flow.parameters())

    masks = [[1, 0], [0, 1]] * 2
    start = time.perf_counter()
    spline_nll, spline_size = fit([SplineCoupling(m, num_bins=8, tail_bound=3.0, hidden=(32,)) for m in masks])
    affine_nll, affine_size = fit([AffineCoupling(m, hidden=(32, 32)) for m in masks])
    print(f"two moons test NLL (nats): Gaussian {gaussian:.3f}, affine coupling {affine_nll:.3f} "
          f"({affine_size} weights), spline coupling {spline_nll:.3f} ({spline_size} weights); "
          f"{time.perf_counter() - start:.1f} s")
    assert affine_size >= spline_size                       # the affine flow is not the smaller one
    assert spline_nll < gaussian - 0.8
    assert spline_nll < affine_nll - 0.2


def test_config_and_weights_round_trip_with_the_other_new_layers():
    from lamina.models.variational_flows import InverseAutoregressive, PlanarFlow, RadialFlow
    from lamina.nn.layer import layer_from_config, layer_to_config

    lamina.manual_seed(2)
    flow = NormalizingFlow([SplineCoupling([1, 0], num_bins=5, tail_bound=2.5, hidden=(4,), activation="tanh"),
                            PlanarFlow(), RadialFlow(), InverseAutoregressive(hidden=(4,)),
                            SplineAutoregressive(num_bins=3, hidden=(4,))])
    flow.build((None, 2))
    for _, p in flow.named_parameters():
        p.data = (np.random.default_rng(0).standard_normal(p.shape) * 0.3).astype(p.dtype)
    copy = layer_from_config(layer_to_config(flow))
    copy.build((None, 2))
    copy.load_state_dict(flow.state_dict())
    assert copy.layers[0].bins == 5 and copy.layers[0].tail_bound == 2.5 and copy.layers[0].activation == "tanh"
    x = lamina.tensor(randn(4, 2, seed=11).astype(np.float32))
    np.testing.assert_array_equal(copy.log_prob(x).numpy(), flow.log_prob(x).numpy())
