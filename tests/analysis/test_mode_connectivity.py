"""lamina.analysis.mode_connectivity and lanczos_eigenvalues: curve endpoints fixed, the bend's
gradient against a torch rewrite of the Bezier curve, Lanczos Ritz values against the full
Hessian's spectrum, and on digits a trained Bezier curve whose loss barrier is far below the
straight line's; the README example."""

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, run_readme_section
from lamina import functional as F
from lamina import nn
from lamina.analysis import (
    BezierCurve,
    PolygonalChain,
    curve_losses,
    lanczos_eigenvalues,
    linear_interpolation,
    loss_barrier,
    plot_surface,
    train_curve,
)
from lamina.data import load_digits

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def cross_entropy(logits, labels):
    return F.categorical_cross_entropy(logits, labels, from_logits=True)


def small_net(seed):
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Dense(4, activation="tanh", bias_init="uniform"), nn.Dense(3, bias_init="uniform"))
    model.build((None, 3))
    return model


def flat(arrays):
    return np.concatenate([np.asarray(a).ravel() for a in arrays])


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    return rng.normal(size=(20, 3)), rng.integers(0, 3, 20)


def torch_cost(w, x, y, shapes):
    """Dense(4, tanh) -> Dense(3) at the flat weights w (lamina's Dense: z = x W + b, W (in, out))."""
    w1, b1, w2, b2 = torch.split(w, [int(np.prod(s)) for s in shapes])
    hidden = torch.tanh(torch.tensor(x) @ w1.reshape(shapes[0]) + b1)
    return torch.nn.functional.cross_entropy(hidden @ w2.reshape(shapes[2]) + b2, torch.tensor(y))


def test_curves_are_fixed_at_the_endpoints(batch):
    a, b = small_net(0), small_net(1)
    x, y = batch
    for curve_type in (BezierCurve, PolygonalChain):
        curve = curve_type(a, b)
        curve.bend[0].data += 0.3  # move the bend: the endpoints must not follow
        assert_close(flat(curve.weights(0.0)), flat(p.numpy() for p in a.parameters()), 0, "phi(0)")
        assert_close(flat(curve.weights(1.0)), flat(p.numpy() for p in b.parameters()), 0, "phi(1)")
        ends = curve_losses(curve, cross_entropy, (x, y), [0.0, 1.0])
        expected = [float(cross_entropy(m(lamina.tensor(x)), y).data) for m in (a, b)]
        assert_close(ends, expected, 1e-12, f"{curve_type.__name__} end losses")
    chain = PolygonalChain(a, b)
    assert_close(flat(chain.weights(0.5)), flat(p.numpy() for p in chain.parameters()), 1e-15, "the chain's knee")
    with pytest.raises(ValueError, match="t must lie in"):
        chain.weights(1.5)


@pytest.mark.parametrize("t", [0.3, 0.5, 0.8])
def test_bezier_bend_gradient_matches_torch(batch, t):
    a, b = small_net(0), small_net(1)
    x, y = batch
    curve = BezierCurve(a, b)
    rng = np.random.default_rng(2)
    for theta in curve.bend:
        theta.data += 0.2 * rng.normal(size=theta.shape)
    shapes = [p.shape for p in a.parameters()]
    cost = curve.accumulate_gradient(cross_entropy, x, y, t)
    w1, w2 = torch.tensor(flat(curve.start)), torch.tensor(flat(curve.end))
    theta = torch.tensor(flat(p.numpy() for p in curve.bend), requires_grad=True)
    expected = torch_cost((1 - t) ** 2 * w1 + 2 * t * (1 - t) * theta + t ** 2 * w2, x, y, shapes)
    expected.backward()
    assert abs(cost - expected.item()) < 1e-12
    assert_close(flat(p.grad for p in curve.bend), theta.grad.numpy(), 1e-10, "dJ/dtheta")
    assert all(p.grad is None for p in a.parameters())


def test_lanczos_top_eigenvalues_match_numpy(batch):
    model = small_net(3)
    x, y = batch
    shapes = [p.shape for p in model.parameters()]
    w = torch.tensor(flat(p.numpy() for p in model.parameters()))
    hessian = torch.autograd.functional.hessian(lambda v: torch_cost(v, x, y, shapes), w).numpy()
    values, vectors = np.linalg.eigh(hessian)
    found = lanczos_eigenvalues(model, cross_entropy, x, y, top_k=3, iterations=25)
    assert_close(found.eigenvalues, values[::-1][:3], 1e-6, "top 3 eigenvalues")
    for ritz, expected in zip(found.eigenvectors, vectors[:, ::-1].T):
        assert abs(abs(flat(ritz) @ expected) - 1) < 1e-6
    magnitude = lanczos_eigenvalues(model, cross_entropy, x, y, top_k=2, iterations=31, which="magnitude")
    assert_close(magnitude.eigenvalues, values[np.argsort(-np.abs(values))[:2]], 1e-9, "largest |lambda|")


def digits_mlps():
    """Two Dense(16, relu) -> Dense(10) nets trained on 1200 digits (8x8) from different seeds."""
    x, y = load_digits(size=8)
    order = np.random.default_rng(0).permutation(len(x))[:1200]
    x, y = (x[order].reshape(1200, -1) / 255.0).astype(np.float32), y[order]
    models = []
    for seed in (1, 2):
        lamina.manual_seed(seed)
        model = nn.Sequential(nn.Dense(16, activation="relu"), nn.Dense(10))
        model.build((None, 64))
        optimizer = lamina.optim.Adam(model.parameters(), lr=0.01)
        rng = np.random.default_rng(seed)
        for _ in range(300):
            rows = rng.integers(0, 1200, 64)
            optimizer.zero_grad()
            cross_entropy(model(lamina.tensor(x[rows])), y[rows]).backward()
            optimizer.step()
        models.append(model)
    return models, x, y


def test_trained_bezier_curve_has_a_far_lower_barrier_than_the_straight_line(tmp_path):
    (a, b), x, y = digits_mlps()
    t = np.linspace(0, 1, 11)
    line = linear_interpolation(a, b, t, (x, y), cross_entropy)
    curve = BezierCurve(a, b)
    batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, len(x), 64)]
    train_curve(curve, cross_entropy, batches, epochs=10, lr=0.01)
    along = curve_losses(curve, cross_entropy, (x, y), t)
    line_barrier, curve_barrier = loss_barrier(t, line), loss_barrier(t, along)
    print(f"loss barrier: straight line {line_barrier:.3f}, Bezier curve {curve_barrier:.3f}")
    assert line_barrier > 0.5 and curve_barrier < line_barrier / 4
    assert abs(along[0] - line[0]) < 1e-6 and abs(along[-1] - line[-1]) < 1e-6
    path = plot_surface(t, [line, along], tmp_path / "paths.png", labels=["line", "Bezier"])
    assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 1000


def test_readme_landscape_example_runs(tmp_path):
    printed, names = run_readme_section("Loss landscapes and mode connectivity",
                                        {'"landscape.png"': repr(str(tmp_path / "landscape.png"))})
    assert names["surface"].shape == (9, 9) and names["path"].read_bytes()[:8] == PNG_SIGNATURE
    assert names["curve_barrier"] < names["line_barrier"] / 2
    assert "barrier" in printed
