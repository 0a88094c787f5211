"""odeint: accuracy against SciPy, the methods' orders, gradients through the solver against
a PyTorch implementation of the same steps, tuple states, decreasing times, errors."""

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from scipy.linalg import expm

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina.errors import ShapeError
from lamina.functional.ode_tableaus import BOSH3, DOPRI5, interpolate, rk_step

A = randn(3, 3, seed=1) * 0.6
Y0 = randn(3, seed=2)
TIMES = np.linspace(0.0, 2.0, 5)


def f64(x, requires_grad=False):
    return lamina.tensor(x, dtype=np.float64, requires_grad=requires_grad)


def linear_field(t, y):
    return f64(A) @ y


def nonlinear_field(t, y):
    """A forced pendulum-like system: y0' = y1, y1' = -sin(y0) - 0.1 y1 + 0.5 cos(t)."""
    first, second = y[0:1], y[1:2]
    return lamina.concat([second, -first.sin() - second * 0.1 + t.cos() * 0.5])


def scipy_nonlinear(t, y):
    return [y[1], -np.sin(y[0]) - 0.1 * y[1] + 0.5 * np.cos(t)]


def counting(func):
    def counted(t, y):
        counted.calls += 1
        return func(t, y)
    counted.calls = 0
    return counted


@pytest.mark.parametrize("method, tolerance", [("dopri5", 1e-8), ("bosh3", 1e-6)])
def test_adaptive_matches_the_matrix_exponential(method, tolerance):
    exact = np.stack([expm(A * t) @ Y0 for t in TIMES])
    solution = lamina.odeint(linear_field, f64(Y0), TIMES, method=method, rtol=1e-9, atol=1e-11)
    assert solution.shape == (5, 3)
    np.testing.assert_allclose(solution.numpy(), exact, atol=tolerance)
    np.testing.assert_array_equal(solution.numpy()[0], Y0)


def test_dopri5_matches_scipy_on_a_nonlinear_problem():
    times = np.linspace(0.0, 6.0, 13)
    reference = solve_ivp(scipy_nonlinear, (0.0, 6.0), [1.0, 0.0], method="DOP853", t_eval=times,
                          rtol=1e-12, atol=1e-12).y.T
    field = counting(nonlinear_field)
    solution = lamina.odeint(field, f64([1.0, 0.0]), times, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(solution.numpy(), reference, atol=1e-7)
    loose = counting(nonlinear_field)
    lamina.odeint(loose, f64([1.0, 0.0]), times, rtol=1e-4, atol=1e-6)
    assert loose.calls < field.calls           # looser tolerances, fewer evaluations


@pytest.mark.parametrize("method, ratio", [("euler", 2.0), ("midpoint", 4.0), ("rk4", 16.0)])
def test_fixed_step_methods_show_their_order(method, ratio):
    exact = expm(A * TIMES[-1]) @ Y0
    errors = [np.abs(lamina.odeint(linear_field, f64(Y0), TIMES, method=method,
                                   options={"step_size": h}).numpy()[-1] - exact).max() for h in (0.1, 0.05, 0.025)]
    for coarse, fine in zip(errors, errors[1:]):
        assert ratio * 0.85 < coarse / fine < ratio * 1.15, errors


def test_default_fixed_steps_are_the_gaps_between_the_times():
    field = counting(linear_field)
    lamina.odeint(field, f64(Y0), TIMES, method="rk4")
    assert field.calls == 4 * (len(TIMES) - 1)
    field = counting(linear_field)
    lamina.odeint(field, f64(Y0), [0.0, 0.3, 1.0], method="euler", options={"step_size": 0.25})
    assert field.calls == 5                    # 0, 0.25, 0.3, 0.5, 0.75 -> 1


@pytest.mark.parametrize("tableau, ratio", [(DOPRI5, 32.0), (BOSH3, 16.0)])
def test_interpolant_order_inside_a_step(tableau, ratio):
    """dopri5's continuous extension is fourth order (local error h^5), bosh3's Hermite cubic third."""
    errors = []
    for h in (0.1, 0.05, 0.025):
        y0 = f64(Y0)
        y1, stages, _ = rk_step(lambda t, y: (f64(A) @ y).tanh(), tableau, 0.0, y0, h)
        middle = interpolate(tableau, y0, y1, stages, h, 0.37)
        exact = solve_ivp(lambda t, y: np.tanh(A @ y), (0.0, 0.37 * h), Y0, method="DOP853",
                          rtol=1e-13, atol=1e-15).y[:, -1]
        errors.append(np.abs(middle.numpy() - exact).max())
    for coarse, fine in zip(errors, errors[1:]):
        assert ratio * 0.75 < coarse / fine < ratio * 1.25, errors


def test_decreasing_times_integrate_backwards():
    end = expm(A * TIMES[-1]) @ Y0
    solution = lamina.odeint(linear_field, f64(end), TIMES[::-1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(solution.numpy()[-1], Y0, atol=1e-8)
    fixed = lamina.odeint(linear_field, f64(end), TIMES[::-1], method="rk4", options={"step_size": 0.01})
    np.testing.assert_allclose(fixed.numpy()[-1], Y0, atol=1e-7)


def test_tuple_state():
    """(x, v) of a harmonic oscillator: x = cos t, v = -sin t; the parts keep their shapes."""
    times = np.linspace(0.0, 3.0, 4)
    x, v = lamina.odeint(lambda t, s: (s[1], -s[0]), (f64(np.ones((2, 1))), f64(np.zeros((2, 1)))), times,
                         rtol=1e-9, atol=1e-11)
    assert x.shape == v.shape == (4, 2, 1)
    np.testing.assert_allclose(x.numpy()[:, 0, 0], np.cos(times), atol=1e-8)
    np.testing.assert_allclose(v.numpy()[:, 1, 0], -np.sin(times), atol=1e-8)


# -- gradients through the solver -------------------------------------------------------------
STEP_TIMES = [0.0, 0.3, 0.5]
RK = {  # (c, a, b) for the torch reference, same as the methods' tableaus
    "euler": ([0.0], [], [1.0]),
    "midpoint": ([0.0, 0.5], [[0.5]], [0.0, 1.0]),
    "rk4": ([0.0, 1 / 3, 2 / 3, 1.0], [[1 / 3], [-1 / 3, 1.0], [1.0, -1.0, 1.0]], [1 / 8, 3 / 8, 3 / 8, 1 / 8]),
}


def torch_fixed_solve(field, y0, times, method, step):
    """The same fixed-step solve in PyTorch: steps of ``step`` cut short at every time."""
    c, a, b = RK[method]
    grid = sorted(set(np.round(np.concatenate([times, np.arange(times[0], times[-1], step)]), 12)))
    outputs, y = [y0], y0
    for t, t_next in zip(grid[:-1], grid[1:]):
        h = t_next - t
        stages = [field(t, y)]
        for ci, row in zip(c[1:], a):
            stages.append(field(t + ci * h, y + h * sum(w * k for w, k in zip(row, stages))))
        y = y + h * sum(w * k for w, k in zip(b, stages))
        if any(abs(t_next - s) < 1e-12 for s in times):
            outputs.append(y)
    return torch.stack(outputs)


def lamina_mlp(w, bias):
    return lambda t, y: (y @ w + bias).tanh() * (t + 1.0)


def torch_mlp(w, bias):
    return lambda t, y: torch.tanh(y @ w + bias) * (t + 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_fixed_step_gradients_match_torch(method, dtype):
    def ours(y0, w, bias):
        return lamina.odeint(lamina_mlp(w, bias), y0, STEP_TIMES, method=method, options={"step_size": 0.2})

    def theirs(y0, w, bias):
        return torch_fixed_solve(torch_mlp(w, bias), y0, STEP_TIMES, method, 0.2)

    compare_with_torch(ours, theirs, randn(2, 3), randn(3, 3, seed=1), randn(3, seed=2), dtype=dtype,
                       rtol=1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("method, tolerance", [("rk4", 1e-7), ("dopri5", 1e-12), ("bosh3", 1e-9)])
def test_gradcheck_through_the_solver(method, tolerance):
    """The adaptive steps depend on the input, by less than the tolerance."""
    def solve(y0, w):
        return lamina.odeint(lambda t, y: (y @ w).tanh(), y0, [0.0, 0.4, 1.0], method=method, rtol=tolerance,
                             atol=tolerance)

    assert check_gradients(solve, randn(2, 3), randn(3, 3, seed=1))


def test_gradients_through_decreasing_times_and_tuples():
    def ours(x, v, w):
        xs, vs = lamina.odeint(lambda t, s: (s[1], (s[0] @ w).tanh()), (x, v), [1.0, 0.6, 0.0], method="midpoint",
                               options={"step_size": 0.25})
        return lamina.concat([xs, vs], axis=-1)

    def theirs(x, v, w):
        field = lambda t, s: -torch.cat([s[:, 2:], torch.tanh(s[:, :2] @ w)], dim=-1)  # noqa: E731
        return torch_fixed_solve(field, torch.cat([x, v], dim=-1), [-1.0, -0.6, 0.0], "midpoint", 0.25)

    compare_with_torch(ours, theirs, randn(3, 2), randn(3, 2, seed=1), randn(2, 2, seed=2), dtype=np.float64)


# -- errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("times, words", [
    ([[0.0, 1.0]], "1-D"), ([], "1-D"), ([0.0, 1.0, 0.5], "t[1]=1.0, t[2]=0.5"), ([1.0, 1.0], "strictly"),
    ([0.0, np.nan], "finite"),
])
def test_bad_times_are_named(times, words):
    with pytest.raises(ValueError, match="odeint") as info:
        lamina.odeint(linear_field, f64(Y0), times)
    assert words in str(info.value)


def test_bad_method_options_and_tolerances():
    with pytest.raises(ValueError, match=r"odeint: unknown method 'rk45'.*dopri5"):
        lamina.odeint(linear_field, f64(Y0), TIMES, method="rk45")
    with pytest.raises(ValueError, match=r"odeint: unknown option\(s\) \['step_size'\] for method 'dopri5'"):
        lamina.odeint(linear_field, f64(Y0), TIMES, options={"step_size": 0.1})
    with pytest.raises(ValueError, match="odeint: options\\['step_size'\\] must be a positive number"):
        lamina.odeint(linear_field, f64(Y0), TIMES, method="euler", options={"step_size": -1})
    with pytest.raises(ValueError, match="odeint: rtol and atol"):
        lamina.odeint(linear_field, f64(Y0), TIMES, rtol=0, atol=0)


def test_func_with_a_wrong_output_is_named():
    message = r"odeint: func\(t, y\) returned a tensor of shape \(2,\) for a state of shape \(3,\)"
    with pytest.raises(ShapeError, match=message):
        lamina.odeint(lambda t, y: y[:2], f64(Y0), TIMES)
    with pytest.raises(TypeError, match=r"odeint: func\(t, y\) must return a Tensor shaped as y0, got ndarray"):
        lamina.odeint(lambda t, y: y.numpy(), f64(Y0), TIMES)
    with pytest.raises(TypeError, match="odeint: func.* must return a tuple of tensors"):
        lamina.odeint(lambda t, s: s[0], (f64(Y0), f64(Y0)), TIMES)
    with pytest.raises(TypeError, match="odeint: y0 must be a lamina Tensor"):
        lamina.odeint(linear_field, Y0, TIMES)


def test_a_blow_up_stops_with_a_clear_error():
    with pytest.raises(RuntimeError, match="odeint: (the step size underflowed|more than max_num_steps)"):
        lamina.odeint(lambda t, y: y * y, f64([1.0]), [0.0, 2.0], options={"max_num_steps": 500})
