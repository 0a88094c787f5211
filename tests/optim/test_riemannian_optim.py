"""RiemannianSGD and RiemannianAdam: PyTorch's SGD and Adam step for step on Euclidean
parameters; on the sphere, Stiefel, the Poincaré ball and the hyperboloid they stay on the
manifold and reach known optima."""

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, randn
from lamina.manifolds import Euclidean, Lorentz, PoincareBall, Sphere, Stiefel
from lamina.nn import ManifoldParameter, Parameter
from lamina.optim import RiemannianAdam, RiemannianSGD


def _run_against_torch(make_ours, make_theirs, tagged: bool, steps: int = 6):
    starts = [randn(3, 4, seed=1), randn(5, seed=2)]
    ours = [ManifoldParameter(s.copy(), Euclidean(), dtype=np.float64) if tagged
            else Parameter(s.copy(), dtype=np.float64) for s in starts]
    theirs = [torch.tensor(s.copy(), requires_grad=True) for s in starts]
    opt, ref = make_ours(ours), make_theirs(theirs)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        for p, t in zip(ours, theirs):
            g = rng.standard_normal(p.shape)
            p.grad, t.grad = g.copy(), torch.tensor(g)
        opt.step()
        ref.step()
        for p, t in zip(ours, theirs):
            assert_close(p.data, t.detach().numpy(), 1e-12)


SGD_CONFIGS = [dict(lr=0.1), dict(lr=0.05, momentum=0.9), dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.1),
               dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)]


@pytest.mark.parametrize("config", SGD_CONFIGS, ids=str)
@pytest.mark.parametrize("tagged", [False, True])
def test_sgd_on_euclidean_equals_torch(config, tagged):
    _run_against_torch(lambda ps: RiemannianSGD(ps, **config), lambda ps: torch.optim.SGD(ps, **config), tagged)


ADAM_CONFIGS = [dict(lr=0.01), dict(lr=0.02, betas=(0.8, 0.99), weight_decay=0.1),
                dict(lr=0.01, amsgrad=True, eps=1e-6)]


@pytest.mark.parametrize("config", ADAM_CONFIGS, ids=str)
@pytest.mark.parametrize("tagged", [False, True])
def test_adam_on_euclidean_equals_torch(config, tagged):
    _run_against_torch(lambda ps: RiemannianAdam(ps, **config), lambda ps: torch.optim.Adam(ps, **config), tagged)


def _symmetric(n, seed):
    a = randn(n, n, seed=seed)
    return (a + a.T) / 2


def _minimise(param, optimizer, objective, steps):
    for _ in range(steps):
        optimizer.zero_grad()
        objective(param).backward()
        optimizer.step()


@pytest.mark.parametrize("momentum, retraction", [(0.0, "retr"), (0.5, "expmap")])
def test_sphere_rayleigh_quotient_finds_the_leading_eigenvector(momentum, retraction):
    a = _symmetric(6, seed=3)
    start = randn(6, seed=4)
    x = ManifoldParameter(start / np.linalg.norm(start), Sphere(), dtype=np.float64)
    opt = RiemannianSGD([x], lr=0.1, momentum=momentum, retraction=retraction)
    norms = []

    def objective(p):
        norms.append(np.linalg.norm(p.data))
        return -(p @ lamina.tensor(a, dtype=np.float64) @ p)

    _minimise(x, opt, objective, 300)
    values, vectors = np.linalg.eigh(a)
    assert_close(np.array(norms), np.ones(len(norms)), 1e-12)
    assert abs(abs(x.data @ vectors[:, -1]) - 1) < 1e-8
    assert abs(x.data @ a @ x.data - values[-1]) < 1e-8


@pytest.mark.parametrize("retraction", ["qr", "polar", "cayley"])
def test_stiefel_optimisation_keeps_orthonormal_frames(retraction):
    a = _symmetric(6, seed=5)
    frame = ManifoldParameter(np.linalg.qr(randn(6, 2, seed=6))[0], Stiefel(retraction), dtype=np.float64)
    opt = RiemannianAdam([frame], lr=0.05)
    grams = []

    def objective(p):
        grams.append(p.data.T @ p.data)
        return -lamina.functional.trace(p.T @ lamina.tensor(a, dtype=np.float64) @ p)

    _minimise(frame, opt, objective, 300)
    assert max(np.abs(g - np.eye(2)).max() for g in grams) < 1e-10
    top = np.linalg.eigh(a)[0][-2:].sum()
    assert abs(np.trace(frame.data.T @ a @ frame.data) - top) < 1e-4


def test_poincare_sgd_step_is_nickel_kiela_update():
    ball = PoincareBall(1.0)
    start = randn(4, 3, seed=7, scale=0.3)
    x = ManifoldParameter(start.copy(), ball, dtype=np.float64)
    g = randn(4, 3, seed=8, scale=5.0)
    x.grad = g.copy()
    RiemannianSGD([x], lr=0.5).step()
    step = start - 0.5 * ((1 - (start**2).sum(-1, keepdims=True)) ** 2 / 4) * g
    norms = np.linalg.norm(step, axis=-1, keepdims=True)
    expected = np.where(norms > 1 - 1e-5, step / norms * (1 - 1e-5), step)
    assert_close(x.data, expected, 1e-12)


def _frechet_mean(manifold, points, start, optimizer_class, **options):
    x = ManifoldParameter(start, manifold, dtype=np.float64)
    opt = optimizer_class([x], **options)
    _minimise(x, opt, lambda p: (manifold.dist(p, points) ** 2).sum(), 200)
    return x.data


def test_frechet_means_agree_between_ball_and_hyperboloid():
    k = 0.8
    ball, hyperboloid = PoincareBall(k), Lorentz(k)
    points = randn(5, 2, seed=9, scale=0.4)
    on_ball = _frechet_mean(ball, points, np.zeros(2), RiemannianSGD, lr=0.1, retraction="expmap")
    lifted = hyperboloid.from_poincare(points).numpy()
    on_hyperboloid = _frechet_mean(hyperboloid, lifted, hyperboloid.origin(3, dtype=np.float64), RiemannianSGD,
                                   lr=0.05, momentum=0.5, stabilize=10)
    hyperboloid.check_point(on_hyperboloid, rtol=1e-10)
    assert_close(hyperboloid.to_poincare(on_hyperboloid).numpy(), on_ball, 1e-6)
    # the gradient of the cost vanishes there
    x = lamina.tensor(on_ball, requires_grad=True, dtype=np.float64)
    (ball.dist(x, points) ** 2).sum().backward()
    assert np.abs(x.grad).max() < 1e-6


def test_state_dict_round_trip_and_transported_momentum():
    sphere = Sphere()
    x = ManifoldParameter(np.array([1.0, 0.0, 0.0]), sphere, dtype=np.float64)
    opt = RiemannianSGD([x], lr=0.1, momentum=0.9)
    x.grad = np.array([0.3, -1.0, 0.5])
    opt.step()
    buf = opt.state[0]["momentum_buffer"]
    assert abs(buf @ x.data) < 1e-12                      # carried into the new tangent space
    restored = RiemannianSGD([ManifoldParameter(x.data.copy(), sphere, dtype=np.float64)], lr=0.1, momentum=0.9)
    restored.load_state_dict(opt.state_dict())
    assert_close(restored.state[0]["momentum_buffer"], buf, 1e-15)


def test_bad_hyperparameters():
    p = Parameter(np.zeros(3))
    with pytest.raises(ValueError, match="retraction"):
        RiemannianSGD([p], lr=0.1, retraction="cayley")
    with pytest.raises(ValueError, match="stabilize"):
        RiemannianAdam([p], stabilize=0)
    with pytest.raises(ValueError, match="nesterov"):
        RiemannianSGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta1"):
        RiemannianAdam([p], betas=(1.0, 0.9))
    with pytest.raises(TypeError, match="manifold"):
        ManifoldParameter(np.zeros(3), "ball")
