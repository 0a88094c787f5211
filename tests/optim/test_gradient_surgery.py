"""Gradient surgery against NumPy/SciPy rewrites of the published algorithms and hand values."""

import numpy as np
import pytest
from scipy.optimize import minimize

from lamina.optim import (
    cagrad,
    combine_task_gradients,
    graddrop,
    imtl_g,
    mgda,
    min_norm_frank_wolfe,
    min_norm_two,
    pcgrad,
    project_conflicting,
)

RNG = np.random.default_rng(0)


def reference_pcgrad(grads, orders):
    """Yu et al.'s Algorithm 1: project g_i against each conflicting original g_j in the given order."""
    total = np.zeros(grads.shape[1])
    for i, order in enumerate(orders):
        projected = grads[i].copy()
        for j in order:
            dot = projected @ grads[j]
            if dot < 0:
                projected = projected - dot / (grads[j] @ grads[j]) * grads[j]
        total += projected
    return total


def simplex_minimum(objective, tasks):
    """The minimiser of ``objective`` over the probability simplex, by SciPy's SLSQP."""
    result = minimize(objective, np.full(tasks, 1.0 / tasks), method="SLSQP", bounds=[(0, 1)] * tasks,
                      constraints=({"type": "eq", "fun": lambda w: 1 - w.sum()},),
                      options={"ftol": 1e-15, "maxiter": 1000})
    return result.x


def test_pcgrad_by_hand():
    # g1.g2 = -1: g1 -> g1 + g2/2 = (0.5, 0.5), g2 -> g2 + g1 = (0, 1)
    grads = np.array([[1.0, 0.0], [-1.0, 1.0]])
    np.testing.assert_allclose(pcgrad(grads, shuffle=False), [0.5, 1.5])


@pytest.mark.parametrize("tasks", [2, 3])
def test_pcgrad_matches_the_algorithm_in_a_fixed_order(tasks):
    grads = np.array([[1.0, 2.0, -1.0], [-2.0, 0.5, 1.0], [0.5, -3.0, 0.2]])[:tasks]
    orders = [[j for j in range(tasks) if j != i] for i in range(tasks)]
    np.testing.assert_allclose(pcgrad(grads, shuffle=False), reference_pcgrad(grads, orders), rtol=1e-12)
    np.testing.assert_allclose(pcgrad(grads, shuffle=False, reduction="mean"),
                               reference_pcgrad(grads, orders) / tasks, rtol=1e-12)


def test_pcgrad_random_order_follows_the_generator():
    grads = RNG.normal(size=(4, 6))
    draws = np.random.default_rng(7)
    orders = []
    for i in range(4):
        others = [j for j in range(4) if j != i]
        orders.append([others[k] for k in draws.permutation(3)])
    np.testing.assert_allclose(pcgrad(grads, rng=np.random.default_rng(7)), reference_pcgrad(grads, orders),
                               rtol=1e-12)


def test_pcgrad_leaves_no_conflict_between_two_tasks():
    for _ in range(20):
        g1 = RNG.normal(size=5)
        g2 = -0.7 * g1 + 0.5 * RNG.normal(size=5)
        assert g1 @ g2 < 0
        projected = project_conflicting(np.stack([g1, g2]))
        rounding = 1e-12 * np.linalg.norm(g1) * np.linalg.norm(g2)
        assert projected[0] @ g2 >= -rounding and projected[1] @ g1 >= -rounding
        assert abs(projected[0] @ g2) < rounding and abs(projected[1] @ g1) < rounding  # on the normal planes
        np.testing.assert_allclose(pcgrad(np.stack([g1, g2])), projected.sum(axis=0))
    np.testing.assert_allclose(project_conflicting(np.stack([g1, np.zeros(5)])), [g1, np.zeros(5)])


def test_pcgrad_keeps_agreeing_gradients():
    grads = np.abs(RNG.normal(size=(3, 4)))
    np.testing.assert_allclose(pcgrad(grads), grads.sum(axis=0))


def test_mgda_two_task_closed_form_is_the_quadratic_programs_solution():
    for _ in range(10):
        grads = RNG.normal(size=(2, 6)) + RNG.normal(size=6)
        gram = grads @ grads.T
        expected = simplex_minimum(lambda w, gram=gram: w @ gram @ w, 2)
        np.testing.assert_allclose(min_norm_two(gram), expected, atol=1e-6)
        np.testing.assert_allclose(mgda(grads), expected @ grads, atol=1e-6)


def test_mgda_two_task_by_hand():
    # (1, 0) and (0, 2): gamma = 4/5 gives the point (0.8, 0.4), orthogonal to g1 - g2
    np.testing.assert_allclose(mgda(np.array([[1.0, 0.0], [0.0, 2.0]])), [0.8, 0.4])
    # one gradient inside the other's half: the shorter one is the answer
    np.testing.assert_allclose(mgda(np.array([[1.0, 0.0], [3.0, 0.0]])), [1.0, 0.0])


@pytest.mark.parametrize("tasks", [3, 4, 6])
def test_mgda_frank_wolfe_matches_the_quadratic_program(tasks):
    for shift in (0.0, 1.0):
        grads = RNG.normal(size=(tasks, 8)) + shift * RNG.normal(size=8)
        gram = grads @ grads.T
        expected = simplex_minimum(lambda w, gram=gram: w @ gram @ w, tasks) @ grads
        found = mgda(grads)
        np.testing.assert_allclose(found, expected, atol=1e-5)
        assert found @ found <= expected @ expected + 1e-10
        # optimality: every task gradient has at least the squared norm along the min-norm point
        assert (grads @ found >= found @ found - 1e-8).all()
        weights = min_norm_frank_wolfe(gram)
        assert weights.min() >= 0 and weights.sum() == pytest.approx(1.0)


def reference_cagrad(grads, c):
    gram = grads @ grads.T
    radius = c * np.sqrt(gram.mean() + 1e-8)
    weights = simplex_minimum(lambda w: w @ gram.mean(axis=1) + radius * np.sqrt(w @ gram @ w + 1e-8),
                              len(grads))
    g_w = weights @ grads
    return (grads.mean(axis=0) + radius / (np.linalg.norm(g_w) + 1e-8) * g_w) / (1 + c * c)


@pytest.mark.parametrize("tasks, c", [(2, 0.5), (3, 0.5), (5, 0.4), (3, 0.9)])
def test_cagrad_matches_a_scipy_solution_of_its_dual(tasks, c):
    for conflict in (False, True):
        grads = RNG.normal(size=(tasks, 10))
        if conflict:
            grads[1] = -0.6 * grads[0] + 0.1 * RNG.normal(size=10)
        expected = reference_cagrad(grads, c)
        np.testing.assert_allclose(cagrad(grads, c=c), expected, atol=1e-6 * np.abs(expected).max())


def test_cagrad_special_cases():
    grads = RNG.normal(size=(3, 5))
    np.testing.assert_allclose(cagrad(grads, c=0.0), grads.mean(axis=0), atol=1e-12)
    unscaled = cagrad(grads, c=0.5, rescale=0)
    assert np.linalg.norm(unscaled - grads.mean(axis=0)) == pytest.approx(0.5 * np.linalg.norm(grads.mean(axis=0)),
                                                                          rel=1e-6)
    np.testing.assert_allclose(cagrad(grads, c=0.5, rescale=2), unscaled / 1.5)


@pytest.mark.parametrize("tasks", [2, 4])
def test_imtl_g_has_equal_projections_on_every_unit_gradient(tasks):
    grads = RNG.normal(size=(tasks, 7)) * RNG.uniform(0.1, 5, size=(tasks, 1))
    combined = imtl_g(grads)
    units = grads / np.linalg.norm(grads, axis=1, keepdims=True)
    projections = units @ combined
    np.testing.assert_allclose(projections, projections[0], rtol=1e-9)
    weights = np.linalg.lstsq(grads.T, combined, rcond=None)[0]
    assert weights.sum() == pytest.approx(1.0)


def test_graddrop_keeps_one_sign_per_coordinate():
    grads = RNG.normal(size=(3, 50))
    draws = np.random.default_rng(3).uniform(size=50)
    purity = 0.5 * (1 + grads.sum(axis=0) / np.abs(grads).sum(axis=0))
    positive = np.where(grads > 0, grads, 0).sum(axis=0)
    negative = np.where(grads < 0, grads, 0).sum(axis=0)
    expected = np.where(purity > draws, positive, negative)
    np.testing.assert_allclose(graddrop(grads, rng=np.random.default_rng(3)), expected)
    same_sign = np.abs(grads)
    np.testing.assert_allclose(graddrop(same_sign), same_sign.sum(axis=0))


def test_combine_by_name_and_errors():
    grads = [RNG.normal(size=(2, 3)), RNG.normal(size=(2, 3))]
    np.testing.assert_allclose(combine_task_gradients(grads, "sum"), (grads[0] + grads[1]).ravel())
    np.testing.assert_allclose(combine_task_gradients(grads, "mgda"), mgda(np.stack([g.ravel() for g in grads])))
    with pytest.raises(ValueError, match="unknown method 'pcgard'.*pcgrad"):
        combine_task_gradients(grads, "pcgard")
    with pytest.raises(ValueError, match="same length; got lengths \\[6, 4\\]"):
        combine_task_gradients([np.ones(6), np.ones(4)], "pcgrad")
    with pytest.raises(ValueError, match="cagrad: c must be"):
        cagrad(np.ones((2, 3)), c=-1.0)
