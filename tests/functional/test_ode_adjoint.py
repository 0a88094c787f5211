"""odeint_adjoint: the same solution as odeint, gradients equal to back-propagation through
the solver at tight tolerances, a graph of one node whatever the number of steps."""

import numpy as np
import pytest

import lamina
from helpers import check_second_derivatives, randn
from lamina import nn
from lamina.autograd import grad
from lamina.autograd.graph import topological_order


class Field(nn.Module):
    """f(t, y) = W2 tanh(W1 y + b1) + b2 + 0.1 t y."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Dense(8, activation="tanh")
        self.out = nn.Dense(2)

    def forward(self, t, y):
        return self.out(self.hidden(y)) + y * t * 0.1


class PairField(nn.Module):
    """A tuple state (x, v): x' = v, v' = tanh(x W) - 0.2 v."""

    def __init__(self):
        super().__init__()
        self.force = nn.Dense(2, activation="tanh", use_bias=False)

    def forward(self, t, state):
        x, v = state
        return v, self.force(x) - v * 0.2


def float64_field(cls=Field, shape=(3, 2)):
    lamina.manual_seed(0)
    field = cls()
    with lamina.no_grad():
        field(lamina.tensor(0.0), lamina.tensor(np.zeros(shape)) if cls is Field else
              (lamina.tensor(np.zeros(shape)), lamina.tensor(np.zeros(shape))))
    return field.double()


def gradients(solver, field, y0, times, weights, **kwargs):
    """dL/dy0 and dL/dparameters for L = sum_i <w_i, y(t_i)>."""
    solution = solver(field, y0, times, **kwargs)
    parts = solution if isinstance(solution, tuple) else (solution,)
    loss = sum((part * lamina.tensor(w, dtype=np.float64)).sum() for part, w in zip(parts, weights))
    leaves = list(y0) if isinstance(y0, tuple) else [y0]
    return [solution, *grad(loss, leaves + field.parameters())]


def assert_same(adjoint, direct, rtol):
    for k, (a, b) in enumerate(zip(adjoint, direct)):
        a, b = (a.numpy(), b.numpy()) if isinstance(a, lamina.Tensor) else (a, b)
        assert np.abs(a - b).max() <= rtol * np.abs(b).max(), f"entry {k}: {np.abs(a - b).max()} vs {np.abs(b).max()}"


@pytest.mark.parametrize("times", [[0.0, 1.0], [0.0, 0.3, 0.5, 1.2], [1.0, 0.4, -0.5]],
                         ids=["one interval", "loss on several times", "decreasing times"])
def test_adjoint_gradients_equal_the_gradients_through_the_solver(times):
    field = float64_field()
    y0 = lamina.tensor(randn(3, 2), dtype=np.float64, requires_grad=True)
    weights = [randn(len(times), 3, 2, seed=1)]
    tight = {"rtol": 1e-10, "atol": 1e-12}
    direct = gradients(lamina.odeint, field, y0, times, weights, **tight)
    adjoint = gradients(lamina.odeint_adjoint, field, y0, times, weights, **tight)
    assert_same(adjoint, direct, 1e-6)


def test_adjoint_with_a_tuple_state_and_other_adjoint_settings():
    field = float64_field(PairField, (4, 2))
    y0 = tuple(lamina.tensor(randn(4, 2, seed=s), dtype=np.float64, requires_grad=True) for s in (0, 1))
    times = [0.0, 0.5, 1.5]
    weights = [randn(3, 4, 2, seed=2), randn(3, 4, 2, seed=3)]
    direct = gradients(lamina.odeint, field, y0, times, weights, rtol=1e-10, atol=1e-12)
    adjoint = gradients(lamina.odeint_adjoint, field, y0, times, weights, rtol=1e-10, atol=1e-12,
                        adjoint_method="rk4", adjoint_options={"step_size": 0.01})
    assert_same(list(adjoint[0]) + adjoint[1:], list(direct[0]) + direct[1:], 1e-6)


def test_adjoint_of_a_fixed_step_forward_uses_its_method_backwards():
    field = float64_field()
    y0 = lamina.tensor(randn(3, 2), dtype=np.float64, requires_grad=True)
    weights = [randn(2, 3, 2, seed=1)]
    exact = gradients(lamina.odeint, field, y0, [0.0, 1.0], weights, rtol=1e-10, atol=1e-12)
    fine = gradients(lamina.odeint_adjoint, field, y0, [0.0, 1.0], weights, method="rk4", options={"step_size": 0.05})
    coarse = gradients(lamina.odeint_adjoint, field, y0, [0.0, 1.0], weights, method="rk4",
                       options={"step_size": 0.5})
    fine_error = np.abs(fine[1] - exact[1]).max()
    assert fine_error < 1e-6 < np.abs(coarse[1] - exact[1]).max()


def test_the_graph_is_one_node_whatever_the_number_of_steps():
    field = float64_field()
    y0 = lamina.tensor(randn(3, 2), dtype=np.float64, requires_grad=True)
    direct = lamina.odeint(field, y0, [0.0, 2.0], rtol=1e-9, atol=1e-11)
    adjoint = lamina.odeint_adjoint(field, y0, [0.0, 2.0], rtol=1e-9, atol=1e-11)
    leaves = 1 + len(field.parameters())
    assert len(topological_order(adjoint)) == leaves + 1
    assert len(topological_order(direct)) > 50 * leaves
    np.testing.assert_allclose(adjoint.numpy(), direct.numpy(), rtol=1e-12, atol=1e-14)


def test_parameters_of_a_module_get_gradients_and_unbuilt_modules_are_built():
    lamina.manual_seed(0)
    field = Field()                               # not called yet: no weights
    y0 = lamina.tensor(randn(5, 2), requires_grad=True)
    solution = lamina.odeint_adjoint(field, y0, [0.0, 0.5])
    solution[-1].sum().backward()
    assert all(p.grad is not None and np.abs(p.grad).sum() > 0 for p in field.parameters())
    assert y0.grad.shape == (5, 2)


def test_second_derivatives_through_the_solver():
    field = float64_field()

    def solve(y0):
        return lamina.odeint_adjoint(field, y0, [0.0, 0.5], method="rk4", options={"step_size": 0.25})

    assert check_second_derivatives(solve, randn(3, 2))


def test_a_plain_function_needs_adjoint_params():
    w = lamina.tensor(randn(2, 2), dtype=np.float64, requires_grad=True)
    y0 = lamina.tensor(randn(2), dtype=np.float64)
    with pytest.raises(TypeError, match="odeint_adjoint: func must be a Module"):
        lamina.odeint_adjoint(lambda t, y: y @ w, y0, [0.0, 1.0])
    solution = lamina.odeint_adjoint(lambda t, y: y @ w, y0, [0.0, 1.0], adjoint_params=(w,))
    (g,) = grad(solution[-1].sum(), [w])
    expected = grad(lamina.odeint(lambda t, y: y @ w, y0, [0.0, 1.0])[-1].sum(), [w])[0]
    np.testing.assert_allclose(g, expected, rtol=1e-5)
