"""Deep equilibrium layers: the implicit gradient against back-propagation through the
iteration run to convergence (lamina and a torch rewrite), the phantom gradient, the Jacobian
penalty, what is recorded, nn.DEQ, and a DEQ classifier learning the digits."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from helpers import randn
from lamina import backend, nn, parallel
from lamina import functional as F
from lamina.autograd import Tensor, grad, gradcheck, is_grad_enabled
from lamina.errors import ShapeError
from lamina.functional import DEQStats, FixedPointError, deq_fixed_point, jacobian_penalty
from lamina.models import DEQMLP, ContractiveCell, ContractiveConvCell, DEQConvNet

N, BATCH = 5, 3


@contextlib.contextmanager
def _single_threaded():
    """Small products: lamina's and BLAS's threads only cost here (more so on a busy machine)."""
    previous = parallel.get_num_threads()
    parallel.set_num_threads(1)
    try:
        with parallel.one_blas_thread():
            yield
    finally:
        parallel.set_num_threads(previous)


def _problem(seed: int = 0, gamma: float = 0.7):
    """W scaled to spectral norm gamma (tanh(z W + x U + c) is then a contraction), U, c, x and
    an upstream gradient, float64."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((N, N))
    w *= gamma / np.linalg.norm(w, 2)
    return w, rng.standard_normal((N, N)) * 0.5, rng.standard_normal(N) * 0.3, rng.standard_normal((BATCH, N)), \
        rng.standard_normal((BATCH, N))


def _leaves(*arrays):
    return [Tensor(a, requires_grad=True, dtype=np.float64) for a in arrays]


def _cell(w, u, c, calls=None):
    def f(z, x):
        if calls is not None:
            calls.append(is_grad_enabled())
        return F.tanh(z @ w + x @ u + c)
    return f


def _unrolled(f, x, steps: int = 120):
    z = Tensor(np.zeros(x.shape), dtype=np.float64)
    for _ in range(steps):
        z = f(z, x)
    return z


@pytest.mark.parametrize("solver", ["anderson", "broyden", "fixed_point"])
def test_implicit_gradient_equals_unrolled_backprop(solver):
    w_a, u_a, c_a, x_a, up = _problem()
    w, u, c, x = _leaves(w_a, u_a, c_a, x_a)
    f = _cell(w, u, c)
    stats = DEQStats()
    z = deq_fixed_point(f, x, params=[w, u, c], solver=solver, tol=1e-14, max_iter=300, stats=stats,
                        raise_on_failure=True)
    implicit = grad((z * Tensor(up, dtype=np.float64)).sum(), [x, w, u, c])
    assert stats.forward.converged and stats.backward.converged
    unrolled_z = _unrolled(f, x)
    unrolled = grad((unrolled_z * Tensor(up, dtype=np.float64)).sum(), [x, w, u, c])
    np.testing.assert_allclose(z.data, unrolled_z.data, atol=1e-13)
    for ours, reference in zip(implicit, unrolled):
        np.testing.assert_allclose(ours, reference, rtol=1e-10, atol=1e-12)


def test_implicit_gradient_equals_torch_unrolled():
    w_a, u_a, c_a, x_a, up = _problem(seed=1, gamma=0.8)
    w, u, c, x = _leaves(w_a, u_a, c_a, x_a)
    z = deq_fixed_point(_cell(w, u, c), x, params=[w, u, c], tol=1e-14, max_iter=300)
    ours = grad((z * Tensor(up, dtype=np.float64)).sum(), [x, w, u, c])
    tw, tu, tc, tx = (torch.tensor(a, requires_grad=True) for a in (w_a, u_a, c_a, x_a))
    tz = torch.zeros(BATCH, N, dtype=torch.float64)
    for _ in range(200):
        tz = torch.tanh(tz @ tw + tx @ tu + tc)
    (tz * torch.tensor(up)).sum().backward()
    np.testing.assert_allclose(z.data, tz.detach().numpy(), atol=1e-13)
    for mine, theirs in zip(ours, (tx, tw, tu, tc)):
        np.testing.assert_allclose(mine, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_gradcheck_through_the_equilibrium():
    w_a, u_a, c_a, x_a, _ = _problem(seed=5)
    w, u, c, x = _leaves(w_a, u_a, c_a, x_a)
    assert gradcheck(lambda x, w, c: deq_fixed_point(_cell(w, u, c), x, params=[w, c], tol=1e-14, max_iter=300),
                     x, w, c, atol=1e-7, rtol=1e-5)


def test_forward_iterations_are_not_recorded_and_backward_records_f_once():
    w_a, u_a, c_a, x_a, up = _problem(seed=2)
    w, u, c, x = _leaves(w_a, u_a, c_a, x_a)
    calls: list[bool] = []
    z = deq_fixed_point(_cell(w, u, c, calls), x, params=[w, u, c], tol=1e-12, max_iter=100)
    assert len(calls) > 5 and not any(calls)                  # every forward evaluation with the graph off
    node = z._ctx
    assert type(node).__name__ == "EquilibriumSolve"
    assert all(t._ctx is None for t in node.inputs)           # one node over the leaves: no unrolled graph
    del calls[:]
    (z * Tensor(up, dtype=np.float64)).sum().backward()
    assert calls == [True]
    assert x.grad is not None and w.grad is not None


def test_phantom_gradient_is_one_recorded_step_from_the_equilibrium():
    w_a, u_a, c_a, x_a, up = _problem(seed=3, gamma=0.3)
    w, u, c, x = _leaves(w_a, u_a, c_a, x_a)
    f = _cell(w, u, c)
    z = deq_fixed_point(f, x, params=[w, u, c], gradient="phantom", tol=1e-14, max_iter=100)
    phantom = grad((z * Tensor(up, dtype=np.float64)).sum(), [x, w])
    tw, tu, tc, tx = (torch.tensor(a, requires_grad=True) for a in (w_a, u_a, c_a, x_a))
    star = torch.tensor(z.data)
    (torch.tanh(star @ tw + tx @ tu + tc) * torch.tensor(up)).sum().backward()
    np.testing.assert_allclose(phantom[0], tx.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(phantom[1], tw.grad.numpy(), rtol=1e-10)
    z_exact = deq_fixed_point(f, x, params=[w, u, c], tol=1e-14, max_iter=100)
    exact = grad((z_exact * Tensor(up, dtype=np.float64)).sum(), [x, w])
    for a, b in zip(phantom, exact):                          # a weak contraction: close to the exact gradient
        cosine = float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
        assert cosine > 0.9


def test_jacobian_penalty_matches_torch_and_estimates_the_frobenius_norm():
    w_a, u_a, c_a, x_a, _ = _problem(seed=4)
    w, u, c, x = _leaves(w_a, u_a, c_a, x_a)
    f = _cell(w, u, c)
    z = deq_fixed_point(f, x, params=[w, u, c], tol=1e-12, max_iter=100).detach()
    penalty = jacobian_penalty(f, z, x, samples=2, seed=7)
    penalty_grads = grad(penalty, [w, x])
    eps = np.random.default_rng(7).standard_normal((2, BATCH, N))
    tw, tu, tc, tx = (torch.tensor(a, requires_grad=True) for a in (w_a, u_a, c_a, x_a))
    tz = torch.tensor(z.data, requires_grad=True)
    out = torch.tanh(tz @ tw + tx @ tu + tc)
    total = 0
    for e in eps:
        (vjp,) = torch.autograd.grad(out, tz, torch.tensor(e), create_graph=True)
        total = total + (vjp ** 2).sum()
    reference = total / (2 * z.data.size)
    reference.backward()
    np.testing.assert_allclose(float(penalty.data), reference.item(), rtol=1e-12)
    np.testing.assert_allclose(penalty_grads[0], tw.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(penalty_grads[1], tx.grad.numpy(), rtol=1e-10)
    # per sample the Jacobian is diag(1 - z^2) W^T: its squared Frobenius norm, averaged over z's values
    exact = sum(np.sum(((1 - zi ** 2)[:, None] * w_a.T) ** 2) for zi in z.data) / z.data.size
    estimate = float(jacobian_penalty(f, z, x, samples=400, seed=8).data)
    assert abs(estimate - exact) < 0.2 * exact


class _Cell(nn.Module):
    def __init__(self, gamma: float = 0.6):
        super().__init__()
        self.gamma = gamma
        self.linear = nn.Dense(N, use_bias=True)

    def forward(self, z, x):
        return F.tanh(self.linear(z) * self.gamma + x)


def test_deq_module_gradients_reach_f_parameters_and_the_input():
    backend.manual_seed(0)
    cell = _Cell()
    cell(np.zeros((1, N)), np.zeros((1, N)))
    cell.double()
    layer = nn.DEQ(cell, solver="broyden", tol=1e-13, max_iter=200, jacobian_samples=1)
    x = Tensor(np.random.default_rng(0).standard_normal((BATCH, N)), requires_grad=True, dtype=np.float64)
    z = layer(x)
    assert isinstance(layer.jacobian_loss, Tensor) and layer.jacobian_loss.requires_grad
    params = [cell.linear.weight, cell.linear.bias]
    implicit = grad(z.sum(), [x, *params])
    assert layer.stats.forward.converged and layer.stats.backward.converged
    unrolled = grad(_unrolled(cell, x).sum(), [x, *params])
    for a, b in zip(implicit, unrolled):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)
    assert {id(p) for p in layer.parameters()} == {id(p) for p in params}


def test_errors_name_the_shapes_and_the_residual():
    x = Tensor(np.ones((2, 3)), dtype=np.float64)
    with pytest.raises(ShapeError, match=r"f\(z, x\) returned \(2, 4\) for z of shape \(2, 3\)"):
        deq_fixed_point(lambda z, x: F.concat([z, x[:, :1]], axis=1), x)
    with pytest.raises(FixedPointError, match="did not converge in 4 evaluations"):
        deq_fixed_point(lambda z, x: z * 2.0 + x, x, max_iter=4, raise_on_failure=True)
    with pytest.raises(ValueError, match="gradient must be one of"):
        deq_fixed_point(lambda z, x: z, x, gradient="exact")
    with pytest.raises(ValueError, match="unknown solver"):
        nn.DEQ(_Cell(), solver="newton")


def test_contractive_cell_keeps_the_weight_inside_the_ball():
    cell = ContractiveCell(6, contraction=0.5)
    cell.weight.data[...] = np.random.default_rng(0).standard_normal((6, 6)) * 10
    assert np.linalg.norm(cell.scaled_weight().data) == pytest.approx(0.5, rel=1e-6)
    cell.weight.data[...] *= 1e-3
    np.testing.assert_allclose(cell.scaled_weight().data, cell.weight.data)


@pytest.mark.parametrize("scale", [10.0, 0.01])
def test_contractive_cell_matches_torch(scale):
    backend.manual_seed(2)
    cell = ContractiveCell(4, contraction=0.8).double()
    cell.weight.data[...] *= scale
    z, u = _leaves(randn(3, 4), randn(3, 4, seed=1))
    up = randn(3, 4, seed=2)
    out = cell(z, u)
    ours = grad((out * Tensor(up, dtype=np.float64)).sum(), [z, u, cell.weight])
    tz, tu, tw = (torch.tensor(t.data, requires_grad=True) for t in (z, u, cell.weight))
    reference = torch.tanh(tz @ (tw * (0.8 / torch.clamp(tw.norm(), min=0.8))) + tu)
    (reference * torch.tensor(up)).sum().backward()
    np.testing.assert_allclose(out.data, reference.detach().numpy(), rtol=1e-12)
    for mine, theirs in zip(ours, (tz, tu, tw)):
        np.testing.assert_allclose(mine, theirs.grad.numpy(), rtol=1e-10, atol=1e-14)
    assert gradcheck(lambda z, u, w: cell(z, u), z, u, cell.weight)


def test_convolutional_cell_is_a_contraction_and_its_implicit_gradient_is_exact():
    backend.manual_seed(1)
    cell = ContractiveConvCell(3, kernel_size=3, contraction=0.9, activation="tanh").double()
    cell.weight.data[...] *= 50                                # far outside the ball: the rescaling decides
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 4, 4, 3)), requires_grad=True, dtype=np.float64)
    a, b = rng.standard_normal((2, 2, 4, 4, 3))
    with_a, with_b = cell(Tensor(a, dtype=np.float64), x), cell(Tensor(b, dtype=np.float64), x)
    assert np.linalg.norm(with_a.data - with_b.data) <= 0.9 * np.linalg.norm(a - b)
    z = deq_fixed_point(cell, x, tol=1e-14, max_iter=300)
    implicit = grad((z * z).sum(), [x, cell.weight])
    unrolled_z = _unrolled(cell, x, steps=400)
    unrolled = grad((unrolled_z * unrolled_z).sum(), [x, cell.weight])
    for ours, reference in zip(implicit, unrolled):
        np.testing.assert_allclose(ours, reference, rtol=1e-9, atol=1e-11)


def _digits_accuracy(model, flatten: bool, epochs: int, after_training=None) -> float:
    """Train ``model`` on 1400 of the 8x8 digits (Adam, batches of 100), call ``after_training``
    (if given) and return the test accuracy on the rest, single-threaded."""
    from lamina.data import load_digits
    from lamina.optim import Adam

    with _single_threaded():
        backend.manual_seed(0)
        images, labels = load_digits(size=8)
        x = (images.reshape(len(images), -1) if flatten else images).astype(np.float32) / 255
        order = np.random.default_rng(0).permutation(len(x))
        train, test = order[:1400], order[1400:]
        model(x[:2])
        optimizer = Adam(model.parameters(), lr=1e-2)
        rng = np.random.default_rng(1)
        for _ in range(epochs):
            shuffled = rng.permutation(train)
            for i in range(0, len(shuffled), 100):
                batch = shuffled[i:i + 100]
                optimizer.zero_grad()
                F.cross_entropy(model(Tensor(x[batch])), labels[batch]).backward()
                optimizer.step()
        if after_training is not None:
            after_training()
        model.eval()
        return float((model(Tensor(x[test])).data.argmax(axis=1) == labels[test]).mean())


def test_deq_convnet_learns_digits():
    accuracy = _digits_accuracy(DEQConvNet(channels=8, tol=1e-3, max_iter=20), flatten=False, epochs=3)
    print(f"DEQ conv net digits test accuracy {accuracy:.3f}")
    assert accuracy > 0.85


def test_deq_mlp_learns_digits():
    model = DEQMLP(hidden=32, tol=1e-3, max_iter=20)

    def solver_stats_kept():
        assert model.deq.stats.backward is not None and model.deq.stats.forward.steps <= 20

    accuracy = _digits_accuracy(model, flatten=True, epochs=5, after_training=solver_stats_kept)
    print(f"DEQ MLP digits test accuracy {accuracy:.3f}")
    assert accuracy > 0.88
