"""SINDy: libraries against NumPy constructions (and sklearn's PolynomialFeatures order),
finite differences exact on low-degree polynomials, STLSQ against a direct NumPy rewrite, and
recovery of the Lorenz system and of a damped linear oscillator from clean simulated data; the
README's example (SINDy and DMD) runs."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

import numpy as np
import pytest

from lamina.data import damped_oscillator_trajectory, lorenz_trajectory
from lamina.errors import ShapeError
from lamina.models import (
    SR3,
    STLSQ,
    CustomLibrary,
    FourierLibrary,
    PolynomialLibrary,
    SINDy,
    finite_difference,
    savgol_derivative,
)

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_polynomial_library_features_and_names_match_a_numpy_construction():
    x = np.random.default_rng(0).standard_normal((7, 3))
    library = PolynomialLibrary(degree=3)
    a, b, c = x.T
    expected = np.stack([np.ones(7), a, b, c, a * a, a * b, a * c, b * b, b * c, c * c,
                         a ** 3, a * a * b, a * a * c, a * b * b, a * b * c, a * c * c,
                         b ** 3, b * b * c, b * c * c, c ** 3], axis=1)
    np.testing.assert_allclose(library.transform(x), expected, rtol=1e-14)
    names = library.feature_names(n_inputs=3)
    assert names[:7] == ["1", "x0", "x1", "x2", "x0^2", "x0 x1", "x0 x2"]
    assert names[-3:] == ["x1^2 x2", "x1 x2^2", "x2^3"]
    interactions = PolynomialLibrary(2, include_bias=False, interaction_only=True)
    assert interactions.feature_names(["u", "v", "w"]) == ["u", "v", "w", "u v", "u w", "v w"]
    np.testing.assert_allclose(interactions.transform(x), np.stack([a, b, c, a * b, a * c, b * c], axis=1))


@pytest.mark.parametrize("degree, interaction_only, bias", [(2, False, True), (3, False, False), (3, True, True)])
def test_polynomial_library_follows_sklearn_polynomial_features(degree, interaction_only, bias):
    sklearn = pytest.importorskip("sklearn.preprocessing")
    x = np.random.default_rng(1).standard_normal((5, 3))
    theirs = sklearn.PolynomialFeatures(degree, interaction_only=interaction_only, include_bias=bias).fit(x)
    ours = PolynomialLibrary(degree, include_bias=bias, interaction_only=interaction_only)
    np.testing.assert_allclose(ours.transform(x), theirs.transform(x), rtol=1e-13)
    assert ours.feature_names(n_inputs=3) == list(theirs.get_feature_names_out())


def test_fourier_custom_concatenated_and_tensored_libraries():
    x = np.random.default_rng(2).standard_normal((6, 2))
    fourier = FourierLibrary(n_frequencies=2)
    expected = np.stack([np.sin(x[:, 0]), np.cos(x[:, 0]), np.sin(x[:, 1]), np.cos(x[:, 1]),
                         np.sin(2 * x[:, 0]), np.cos(2 * x[:, 0]), np.sin(2 * x[:, 1]), np.cos(2 * x[:, 1])], axis=1)
    np.testing.assert_allclose(fourier.transform(x), expected)
    assert fourier.feature_names(["a", "b"])[:2] == ["sin(1 a)", "cos(1 a)"]
    custom = CustomLibrary([np.exp, lambda u, v: u / (1 + v ** 2)],
                           [lambda u: f"exp({u})", lambda u, v: f"{u}/(1+{v}^2)"])
    np.testing.assert_allclose(custom.transform(x), np.stack([np.exp(x[:, 0]), np.exp(x[:, 1]),
                                                              x[:, 0] / (1 + x[:, 1] ** 2)], axis=1))
    assert custom.feature_names(["a", "b"]) == ["exp(a)", "exp(b)", "a/(1+b^2)"]
    both = PolynomialLibrary(1) + fourier
    assert both.feature_names(n_inputs=2) == ["1", "x0", "x1"] + fourier.feature_names(n_inputs=2)
    np.testing.assert_allclose(both.transform(x)[:, 3:], expected)
    tensored = PolynomialLibrary(1, include_bias=False) * FourierLibrary(1, include_cos=False)
    assert tensored.feature_names(n_inputs=2) == ["x0 sin(1 x0)", "x0 sin(1 x1)", "x1 sin(1 x0)", "x1 sin(1 x1)"]
    np.testing.assert_allclose(tensored.transform(x)[:, 1], x[:, 0] * np.sin(x[:, 1]))


def test_finite_differences_are_exact_on_polynomials_up_to_their_order():
    t = np.cumsum(np.random.default_rng(3).uniform(0.05, 0.2, 30))        # non-uniform steps
    quadratic = np.stack([3 - 2 * t + 0.7 * t ** 2, t], axis=1)
    np.testing.assert_allclose(finite_difference(quadratic, t), np.stack([-2 + 1.4 * t, np.ones_like(t)], axis=1),
                               rtol=1e-10, atol=1e-10)
    cubic = t ** 3
    assert np.abs(finite_difference(cubic, t)[:, 0] - 3 * t ** 2).max() > 1e-4      # order 2, not 3
    dt = 0.1
    tu = dt * np.arange(40)
    poly = 1 - tu + 0.5 * tu ** 2 - 0.2 * tu ** 3
    np.testing.assert_allclose(savgol_derivative(poly, dt, window_length=7, polyorder=3)[:, 0],
                               -1 + tu - 0.6 * tu ** 2, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="uniformly spaced"):
        savgol_derivative(np.sin(t), t)


def _stlsq_rewrite(theta, y, threshold, alpha, max_iter=20):
    """Ridge, threshold, refit on the kept terms until the kept set is stable; then least squares."""
    n_features = theta.shape[1]
    coef = np.linalg.solve(theta.T @ theta + alpha * np.eye(n_features), theta.T @ y).T
    keep = np.abs(coef) >= threshold
    coef[~keep] = 0
    for _ in range(max_iter - 1):
        for i in range(y.shape[1]):
            k = keep[i]
            coef[i] = 0
            coef[i, k] = np.linalg.solve(theta[:, k].T @ theta[:, k] + alpha * np.eye(k.sum()), theta[:, k].T @ y[:, i])
        new_keep = np.abs(coef) >= threshold
        coef[~new_keep] = 0
        if (new_keep == keep).all():
            break
        keep = new_keep
    for i in range(y.shape[1]):
        coef[i, keep[i]] = np.linalg.lstsq(theta[:, keep[i]], y[:, i], rcond=None)[0]
    return coef


@pytest.mark.parametrize("threshold, alpha", [(0.3, 0.05), (0.8, 1.0), (0.0, 0.1)])
def test_stlsq_matches_a_numpy_rewrite(threshold, alpha):
    rng = np.random.default_rng(4)
    theta = rng.standard_normal((60, 8))
    truth = rng.standard_normal((3, 8)) * (rng.uniform(size=(3, 8)) < 0.4)
    y = theta @ truth.T + 0.05 * rng.standard_normal((60, 3))
    ours = STLSQ(threshold, alpha).fit(theta, y).coef_
    np.testing.assert_allclose(ours, _stlsq_rewrite(theta, y, threshold, alpha), rtol=1e-10, atol=1e-12)
    if threshold > 0:
        assert (ours == 0).any()


def _sr3_rewrite(theta, y, threshold, nu, regularizer, iterations):
    """Alternate the relaxed least squares and the prox (hard or soft threshold at ``threshold``)."""
    xi = w = np.linalg.lstsq(theta, y, rcond=None)[0]
    for _ in range(iterations):
        xi = np.linalg.inv(theta.T @ theta + np.eye(theta.shape[1]) / nu) @ (theta.T @ y + w / nu)
        if regularizer == "l0":
            w = xi * (np.abs(xi) > threshold)
        else:
            w = np.sign(xi) * np.clip(np.abs(xi) - threshold, 0, None)
    return w.T


@pytest.mark.parametrize("regularizer", ["l0", "l1"])
def test_sr3_matches_a_numpy_rewrite(regularizer):
    rng = np.random.default_rng(6)
    theta = rng.standard_normal((40, 6))
    y = theta @ (rng.standard_normal((6, 2)) * (rng.uniform(size=(6, 2)) < 0.5)) + 0.1 * rng.standard_normal((40, 2))
    ours = SR3(threshold=0.4, nu=0.05, regularizer=regularizer, max_iter=7, tol=0.0, unbias=False).fit(theta, y)
    assert ours.iterations_ == 7
    np.testing.assert_allclose(ours.coef_, _sr3_rewrite(theta, y, 0.4, 0.05, regularizer, 7), rtol=1e-10, atol=1e-13)
    assert (ours.coef_ == 0).any()


def test_sindy_recovers_the_lorenz_coefficients():
    t = np.arange(0, 10, 0.002)
    x = lorenz_trajectory(t)
    model = SINDy(PolynomialLibrary(2), STLSQ(threshold=0.5, alpha=0.0)).fit(x, t)
    names = model.feature_names()
    truth = np.zeros((3, len(names)))
    for row, term, value in [(0, "x0", -10), (0, "x1", 10), (1, "x0", 28), (1, "x1", -1), (1, "x0 x2", -1),
                             (2, "x2", -8 / 3), (2, "x0 x1", 1)]:
        truth[row, names.index(term)] = value
    found = model.coefficients_
    assert ((found != 0) == (truth != 0)).all()
    relative = np.abs(found - truth)[truth != 0] / np.abs(truth[truth != 0])
    assert relative.max() < 1e-2, relative                      # measured 1.5e-3 (z' = -2.666 z)
    assert model.score(x, t) > 0.9999
    relaxed = SINDy(PolynomialLibrary(2), SR3(threshold=0.5, regularizer="l1")).fit(x, t).coefficients_
    np.testing.assert_allclose(relaxed, found, rtol=1e-8, atol=1e-10)        # same support, same unbiased fit
    assert model.equations(["x", "y", "z"])[0] == "-9.999 x + 9.999 y"
    np.testing.assert_allclose(model.simulate(x[0], t[:200]), x[:200], atol=1e-2)


def test_sindy_finds_a_damped_oscillator_exactly(capsys):
    dt = 0.01
    x = damped_oscillator_trajectory(np.arange(0, 20, dt), omega=2.0, zeta=0.1)
    model = SINDy(PolynomialLibrary(3), STLSQ(threshold=0.05), differentiation="savgol").fit(x, dt)
    expected = np.zeros((2, 10))
    expected[0, 2], expected[1, 1], expected[1, 2] = 1.0, -4.0, -0.4           # x' = v, v' = -4 x - 0.4 v
    assert ((model.coefficients_ != 0) == (expected != 0)).all()
    np.testing.assert_allclose(model.coefficients_, expected, atol=1e-3)
    model.print(["x", "v"])
    assert capsys.readouterr().out == "x' = 1.000 v\nv' = -4.000 x + -0.400 v\n"
    np.testing.assert_allclose(model.predict(x[:5]), x[:5] @ expected[:, 1:3].T, atol=1e-3)


def test_sindy_fits_several_trajectories_at_once():
    dt = 0.01
    t = np.arange(0, 3, dt)
    runs = [damped_oscillator_trajectory(t, x0=x0, omega=2.0, zeta=0.1) for x0 in [(1.0, 0.0), (0.0, -2.0)]]
    together = SINDy(PolynomialLibrary(2), STLSQ(threshold=0.05)).fit(runs, dt).coefficients_
    theta = np.concatenate([PolynomialLibrary(2).transform(run) for run in runs])
    rates = np.concatenate([finite_difference(run, t) for run in runs])
    np.testing.assert_allclose(together, STLSQ(threshold=0.05).fit(theta, rates).coef_, rtol=1e-12)
    np.testing.assert_allclose(together[1, 1:3], [-4.0, -0.4], atol=2e-3)
    with pytest.raises(ValueError, match="2 trajectories but 3 time arrays"):
        SINDy().fit(runs, [t, t, t])


def test_clear_errors():
    x = np.zeros((10, 2))
    with pytest.raises(ShapeError, match="10 samples but t has shape"):
        SINDy().fit(x, np.arange(9.0))
    with pytest.raises(ValueError, match="strictly increasing"):
        SINDy().fit(x, np.r_[np.arange(9.0), 3.0])
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        STLSQ(threshold=-0.1)
    with pytest.raises(ValueError, match="'l0' or 'l1'"):
        SR3(regularizer="l2")
    with pytest.raises(RuntimeError, match="call fit first"):
        SINDy().predict(x)
    with pytest.raises(ValueError, match="degree"):
        PolynomialLibrary(-1)


def test_readme_example_runs():
    section = README.read_text().split("### Data-driven dynamics", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[0] == "x' = -9.999 x + 9.999 y"
    assert lines[3].startswith("4 [2. 2. 5. 5.]")
