"""lamina.analysis.landscape: filter-wise normalised directions, 1-D and 2-D loss surfaces
against the closed form of a quadratic cost, linear interpolation between two models (batch
norm interpolated or recomputed), PCA directions of a trajectory, epsilon-sharpness and the
plots written as valid PNG files."""

import numpy as np
import pytest

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import nn
from lamina.analysis import (
    epsilon_sharpness,
    linear_interpolation,
    loss_surface_1d,
    loss_surface_2d,
    normalize_direction,
    pca_directions,
    plot_surface,
    random_direction,
)
from lamina.autograd import tensor
from lamina.errors import ShapeError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def cross_entropy(logits, labels):
    return F.categorical_cross_entropy(logits, labels, from_logits=True)


class Quadratic(nn.Module):
    """A 'network' whose output is its weight row w (1, n), for the cost 0.5 w A w^T."""

    def __init__(self, w0):
        super().__init__()
        self.add_parameter("w", np.asarray(w0, dtype=np.float64).reshape(1, -1))
        self.built = True

    def forward(self, x):
        return self.w


def quadratic_cost(matrix):
    def cost(w, _):
        return 0.5 * (w @ tensor(matrix, dtype=np.float64) * w).sum()
    return cost


@pytest.fixture
def quadratic():
    rng = np.random.default_rng(4)
    root = rng.normal(size=(5, 5))
    matrix = root @ root.T - 2 * np.eye(5)  # symmetric, indefinite
    w0 = rng.normal(size=5)
    return Quadratic(w0), quadratic_cost(matrix), matrix, w0, (np.zeros((1, 1)), None)


def conv_net(seed=0):
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Conv2D(4, 3, bias_init="uniform"), nn.BatchNorm(), nn.ReLU(), nn.Flatten(),
                          nn.Dense(3, bias_init="uniform"))
    model.build((None, 5, 5, 2))
    return model


def test_filter_normalisation_gives_each_filter_the_weights_norm():
    model = conv_net()
    names = [name for name, _ in model.named_parameters(trainable_only=True)]
    weights = [p.numpy() for p in model.parameters(trainable_only=True)]
    direction = random_direction(model, seed=1)
    assert [d.shape for d in direction] == [w.shape for w in weights]
    for name, d, w in zip(names, direction, weights):
        if name == "conv2d.weight":  # (K, f, f, c_in): one filter per output channel, axis 0
            assert_close(np.linalg.norm(d.reshape(4, -1), axis=1), np.linalg.norm(w.reshape(4, -1), axis=1),
                         1e-12, name)
        elif name == "dense.weight":  # (in, out): one filter per output unit, a column
            assert_close(np.linalg.norm(d, axis=0), np.linalg.norm(w, axis=0), 1e-12, name)
        else:  # conv and dense biases, batch-norm scale and shift
            assert d.ndim == 1 and not d.any(), name
    kept = random_direction(model, ignore=None, seed=1)
    for d, w in zip(kept, weights):
        if w.ndim == 1:
            assert_close(d, w, 0, "one-axis parameters kept as the weights")
    # the direction is random but not the normalisation: a plain rescaled draw gives the same
    raw = [np.random.default_rng(1).standard_normal(w.shape) for w in weights]
    assert_close(normalize_direction([3 * r for r in raw], weights)[0], direction[0], 1e-12, "scale invariance")
    layer = normalize_direction(raw, weights, norm="layer")
    assert abs(np.linalg.norm(layer[0]) - np.linalg.norm(weights[0])) < 1e-12


def test_surface_at_zero_is_the_models_loss_and_weights_are_restored():
    model = conv_net()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 5, 5, 2)), rng.integers(0, 3, 6)
    before = [p.numpy().copy() for p in model.parameters()]
    with lamina.no_grad():
        model.eval()
        expected = float(cross_entropy(model(tensor(x)), y).data)
        model.train()
    losses = loss_surface_1d(model, cross_entropy, (x, y), random_direction(model, seed=2), [-0.5, 0.0, 0.5])
    assert losses.shape == (3,)
    assert abs(losses[1] - expected) < 1e-12
    assert losses[0] != losses[1] != losses[2]
    assert model.training
    for p, b in zip(model.parameters(), before):
        assert np.array_equal(p.numpy(), b)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]  # batches weighted by their sizes
    assert abs(loss_surface_1d(model, cross_entropy, batches, random_direction(model, seed=2), [0.0])[0]
               - expected) < 1e-12


def test_quadratic_surfaces_equal_the_closed_form(quadratic):
    model, cost, matrix, w0, data = quadratic
    rng = np.random.default_rng(7)
    d1, d2 = rng.normal(size=5), rng.normal(size=5)
    alphas, betas = np.linspace(-1, 1, 5), np.linspace(-2, 2, 4)

    def closed_form(w):
        return 0.5 * w @ matrix @ w

    line = loss_surface_1d(model, cost, data, [d1.reshape(1, -1)], alphas)
    assert_close(line, [closed_form(w0 + a * d1) for a in alphas], 1e-12, "1-D surface")
    surface = loss_surface_2d(model, cost, data, [[d1.reshape(1, -1)], [d2.reshape(1, -1)]], alphas, betas)
    expected = [[closed_form(w0 + a * d1 + b * d2) for b in betas] for a in alphas]
    assert_close(surface, expected, 1e-12, "2-D surface")
    assert np.array_equal(model.w.numpy().ravel(), w0)
    with pytest.raises(ShapeError, match="direction 0"):
        loss_surface_1d(model, cost, data, [d1], alphas)


def test_epsilon_sharpness_of_a_convex_quadratic_is_reached_at_the_far_corner():
    matrix = np.diag([1.0, 3.0, 0.5])
    w0 = np.array([0.4, -1.2, 2.0])
    model, cost = Quadratic(w0), quadratic_cost(matrix)
    epsilon = 0.05
    corner = w0 + np.sign(w0) * epsilon * (np.abs(w0) + 1)  # convex, separable: max at the vertex away from 0
    base, top = 0.5 * w0 @ matrix @ w0, 0.5 * corner @ matrix @ corner
    found = epsilon_sharpness(model, cost, (np.zeros((1, 1)), None), epsilon=epsilon, steps=3)
    assert abs(found - 100 * (top - base) / (1 + base)) < 1e-10
    assert np.array_equal(model.w.numpy().ravel(), w0)


def test_linear_interpolation_endpoints_and_batch_norm():
    a, b = conv_net(0), conv_net(1)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(8, 5, 5, 2)), rng.integers(0, 3, 8)
    with lamina.no_grad():  # give the two models different running statistics
        b.train()
        b(tensor(x * 2 + 1))
    ends = []
    for model in (a, b):
        model.eval()
        with lamina.no_grad():
            ends.append(float(cross_entropy(model(tensor(x)), y).data))
    losses = linear_interpolation(a, b, [0.0, 0.5, 1.0], (x, y), cross_entropy)
    assert_close(losses[[0, 2]], ends, 1e-12, "endpoints")
    recomputed = linear_interpolation(a, b, [0.0, 0.5, 1.0], (x, y), cross_entropy, recompute_bn=True)
    assert abs(recomputed[1] - losses[1]) > 1e-6  # the midpoint's statistics are those of its own activations
    copy = conv_net(0)
    lamina.optim.update_batch_norm(copy, x)
    copy.eval()
    with lamina.no_grad():
        assert abs(recomputed[0] - float(cross_entropy(copy(tensor(x)), y).data)) < 1e-12


def test_pca_directions_of_a_planar_trajectory():
    rng = np.random.default_rng(5)
    u, v = np.linalg.qr(rng.normal(size=(7, 2)))[0].T
    final = rng.normal(size=7)
    coordinates = np.array([[4.0, 1.0], [3.0, -0.5], [1.0, 0.8], [0.5, 0.1], [0.0, 0.0]])
    points = [[(final + c[0] * u + c[1] * v)[:3], (final + c[0] * u + c[1] * v)[3:].reshape(2, 2)]
              for c in coordinates]
    found = pca_directions(points)
    basis = np.stack([np.concatenate([part.ravel() for part in d]) for d in found.directions])
    assert_close(basis @ basis.T, np.eye(2), 1e-12, "orthonormal")
    assert_close(np.abs(np.linalg.svd(basis @ np.stack([u, v]).T)[1]), [1, 1], 1e-12, "the trajectory's plane")
    assert abs(found.explained_variance_ratio.sum() - 1) < 1e-12
    rebuilt = found.coordinates @ basis + final
    assert_close(rebuilt, [final + c[0] * u + c[1] * v for c in coordinates], 1e-12, "coordinates")


def test_plots_are_valid_png_files(tmp_path, quadratic):
    model, cost, _, _, data = quadratic
    d1, d2 = [np.eye(5)[:1]], [np.eye(5)[1:2]]
    alphas = np.linspace(-1, 1, 5)
    line = plot_surface(alphas, [loss_surface_1d(model, cost, data, d, alphas) for d in (d1, d2)],
                        tmp_path / "line.png", labels=["d1", "d2"])
    grid = loss_surface_2d(model, cost, data, [d1, d2], alphas, alphas[:4])
    contour = plot_surface(alphas, grid, tmp_path / "contour.png", betas=alphas[:4], trajectory=[[0, 0], [0.5, 0.2]])
    for path in (line, contour):
        assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contour.png", "line.png"]
    with pytest.raises(ShapeError, match="plot_surface"):
        plot_surface(alphas, grid.T, tmp_path / "bad.png", betas=alphas[:4])
    assert not (tmp_path / "bad.png").exists()
