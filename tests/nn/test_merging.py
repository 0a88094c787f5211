"""Model merging against independent NumPy / torch versions of each paper's formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import nn
from lamina.errors import ShapeError
from lamina.nn import merging

SHAPES = {"0.weight": (6, 5), "0.bias": (5,), "1.weight": (5, 3)}


def _states(count: int, seed: int = 0, spread: float = 1.0) -> list[dict]:
    """``count`` random state dicts sharing an integer entry (a counter)."""
    rng = np.random.default_rng(seed)
    states = []
    for _ in range(count):
        state = {key: (spread * rng.standard_normal(shape)).astype(np.float64) for key, shape in SHAPES.items()}
        state["steps"] = np.array(7, dtype=np.int64)
        states.append(state)
    return states


def _check_all(merged: dict, expected: dict, rtol: float = 1e-12) -> None:
    assert list(merged) == list(expected)
    for key, value in expected.items():
        assert_close(merged[key], value, rtol, key)


# -- soups -------------------------------------------------------------------------------------

def test_uniform_soup_is_the_mean_and_weights_give_the_weighted_mean():
    states = _states(3)
    expected = {key: np.mean([s[key] for s in states], axis=0) for key in SHAPES}
    _check_all({k: v for k, v in merging.uniform_soup(states).items() if k != "steps"}, expected)
    w = [1.0, 2.0, 5.0]
    weighted = merging.uniform_soup(states, weights=w)
    for key in SHAPES:
        assert_close(weighted[key], np.tensordot(w, [s[key] for s in states], axes=1) / 8.0, 1e-12, key)
    assert weighted["steps"] == 7 and weighted["steps"].dtype == np.int64


def test_greedy_soup_keeps_an_ingredient_only_if_the_score_does_not_fall():
    models = [{"w": np.array([v])} for v in (0.5, 1.25, 0.25, 8.0)]
    calls = []

    def evaluate(state):                       # best at w = 1
        calls.append(float(state["w"][0]))
        return -abs(float(state["w"][0]) - 1.0)

    soup, kept = merging.greedy_soup(models, evaluate, return_ingredients=True)
    # by own score: 1.25 (-0.25), 0.5 (-0.5), 0.25 (-0.75), 8 (-7); 1.25 & 0.5 -> 0.875 improves; the rest hurt
    assert kept == [1, 0]
    assert soup["w"][0] == pytest.approx(0.875)
    assert len(calls) == 4 + 3
    assert evaluate(soup) >= max(-abs(m["w"][0] - 1.0) for m in models)


def test_greedy_soup_with_given_scores_does_not_rescore_the_models():
    models = [{"w": np.array([v])} for v in (0.0, 2.0)]
    soup, kept = merging.greedy_soup(models, lambda s: 1.0, scores=[0.1, 0.9], return_ingredients=True)
    assert kept == [1, 0] and soup["w"][0] == pytest.approx(1.0)
    _, kept = merging.greedy_soup([{"w": np.array([2.0])}] * 3, lambda s: 0.5, return_ingredients=True)
    assert kept == [0, 1, 2]                                              # an equal score keeps the ingredient


# -- task arithmetic ---------------------------------------------------------------------------

def test_task_vectors_and_task_arithmetic_follow_the_formula():
    base, *finetuned = _states(3)
    vectors = merging.task_vectors(base, finetuned)
    assert len(vectors) == 2 and "steps" not in vectors[0]
    for vector, model in zip(vectors, finetuned):
        _check_all(vector, {key: model[key] - base[key] for key in SHAPES})
    for scaling in (0.7, [0.3, -1.2]):
        lambdas = [scaling] * 2 if np.isscalar(scaling) else scaling
        merged = merging.task_arithmetic(base, vectors, scaling)
        expected = {key: base[key] + sum(lam * (m[key] - base[key]) for lam, m in zip(lambdas, finetuned))
                    for key in SHAPES}
        _check_all({k: v for k, v in merged.items() if k != "steps"}, expected)
    negated = merging.task_arithmetic(base, [vectors[0]], -1.0)
    assert_close(negated["0.weight"], 2 * base["0.weight"] - finetuned[0]["0.weight"], 1e-12)
    assert merging.task_vectors(base, finetuned[0])[0].keys() == vectors[0].keys()


# -- TIES ---------------------------------------------------------------------------------------

def _ties_reference(base, finetuned, density, scaling):
    """Yadav et al.'s three steps written out with NumPy sorting."""
    merged = {}
    for key in SHAPES:
        taus = []
        for model in finetuned:
            tau = (model[key] - base[key]).ravel()
            k = int(np.ceil(density * tau.size - 1e-9))
            threshold = np.sort(np.abs(tau))[::-1][k - 1]
            taus.append(np.where(np.abs(tau) >= threshold, tau, 0.0))
        taus = np.array(taus)
        gamma = np.sign(taus.sum(axis=0))
        chosen = (np.sign(taus) == gamma) & (taus != 0)
        mean = np.array([taus[chosen[:, j], j].mean() if chosen[:, j].any() else 0.0 for j in range(taus.shape[1])])
        merged[key] = base[key] + scaling * mean.reshape(base[key].shape)
    return merged


def test_ties_trim_elect_and_disjoint_mean_on_a_hand_example():
    taus = [np.array([3.0, -1.0, 0.5, -2.0]), np.array([-4.0, 2.0, 0.1, -1.0]), np.array([1.0, 1.5, -3.0, 0.2])]
    trimmed = [merging.trim_to_top(t, 0.5) for t in taus]
    np.testing.assert_array_equal(trimmed[0], [3.0, 0.0, 0.0, -2.0])
    np.testing.assert_array_equal(trimmed[1], [-4.0, 2.0, 0.0, 0.0])
    np.testing.assert_array_equal(trimmed[2], [0.0, 1.5, -3.0, 0.0])
    # summed mass [-1, 3.5, -3, -2] elects signs [-, +, -, -]; the agreeing non-zero entries are averaged
    np.testing.assert_allclose(merging.elect_and_disjoint_mean(trimmed), [-4.0, 1.75, -3.0, -2.0])
    base = {"w": np.array([1.0, 1.0, 1.0, 1.0])}
    models = [{"w": base["w"] + t} for t in taus]
    np.testing.assert_allclose(merging.ties_merge(base, models, density=0.5, scaling=0.5)["w"],
                               1.0 + 0.5 * np.array([-4.0, 1.75, -3.0, -2.0]))


@pytest.mark.parametrize("density", [0.1, 0.35, 1.0])
def test_ties_merge_matches_the_reference(density):
    base, *finetuned = _states(4, seed=1)
    merged = merging.ties_merge(base, finetuned, density=density, scaling=0.8)
    _check_all({k: v for k, v in merged.items() if k != "steps"}, _ties_reference(base, finetuned, density, 0.8))


def test_ties_with_full_density_and_agreeing_signs_is_the_mean_task_vector():
    base = _states(1)[0]
    finetuned = [{**base, **{k: base[k] + s * np.abs(base[k]) for k in SHAPES}} for s in (0.5, 1.5)]
    merged = merging.ties_merge(base, finetuned, density=1.0)
    for key in SHAPES:
        assert_close(merged[key], base[key] + np.abs(base[key]), 1e-12, key)


# -- DARE ---------------------------------------------------------------------------------------

def test_drop_and_rescale_preserves_the_expected_value():
    tau = {"w": np.linspace(-2.0, 3.0, 12).reshape(3, 4)}
    draws = np.array([merging.drop_and_rescale(tau, 0.6, seed)["w"] for seed in range(3000)])
    kept = draws != 0
    assert 0.35 < kept.mean() < 0.45                                     # keep probability 1 - p
    np.testing.assert_allclose(draws[kept], np.broadcast_to(tau["w"] / 0.4, draws.shape)[kept])
    # standard error of the mean: |tau| sqrt(p / (1 - p) / 3000) ~ 0.022 |tau|
    np.testing.assert_allclose(draws.mean(axis=0), tau["w"], atol=0.12 * np.abs(tau["w"]).max())


def test_drop_and_rescale_is_exact_for_a_fixed_mask():
    tau = {"a": np.arange(1.0, 7.0).reshape(2, 3), "b": np.array([-1.0, 2.0])}
    rng = np.random.default_rng(5)
    masks = {key: rng.random(value.shape) >= 0.3 for key, value in tau.items()}
    dropped = merging.drop_and_rescale(tau, 0.3, seed=5)
    for key, value in tau.items():
        np.testing.assert_array_equal(dropped[key], np.where(masks[key], value / 0.7, 0.0))
    _check_all(merging.drop_and_rescale(tau, 0.0), tau)


@pytest.mark.parametrize("combine", ["linear", "ties"])
def test_dare_matches_drop_then_task_arithmetic_or_ties(combine):
    base, *finetuned = _states(3, seed=2)
    p, seed = 0.7, 11
    rng = np.random.default_rng(seed)
    dropped = []
    for model in finetuned:                                              # masks model after model, key after key
        dropped.append({key: np.where(rng.random(SHAPES[key]) >= p, (model[key] - base[key]) / (1 - p), 0.0)
                        for key in SHAPES})
    merged = merging.dare(base, finetuned, drop_rate=p, seed=seed, combine=combine, scaling=0.9)
    for key in SHAPES:
        taus = np.array([d[key] for d in dropped])
        if combine == "linear":
            expected = base[key] + 0.9 * taus.sum(axis=0)
        else:
            gamma = np.sign(taus.sum(axis=0))
            agree = (np.sign(taus) == gamma) & (taus != 0)
            expected = base[key] + 0.9 * (taus * agree).sum(axis=0) / np.maximum(agree.sum(axis=0), 1)
        assert_close(merged[key], expected, 1e-12, key)
    assert merged["steps"] == 7


def test_dare_without_dropping_is_task_arithmetic():
    base, *finetuned = _states(3, seed=3)
    _check_all(merging.dare(base, finetuned, drop_rate=0.0, scaling=0.4),
               merging.task_arithmetic(base, merging.task_vectors(base, finetuned), 0.4))


# -- SLERP --------------------------------------------------------------------------------------

def test_slerp_endpoints_unit_norm_and_angle():
    a, b = _states(2, seed=4)
    for key in SHAPES:
        a[key] = a[key] / np.linalg.norm(a[key])
        b[key] = b[key] / np.linalg.norm(b[key])
    _check_all(merging.slerp(a, b, 0.0), a)
    _check_all(merging.slerp(a, b, 1.0), b)
    t = 0.3
    merged = merging.slerp(a, b, t)
    for key in SHAPES:
        va, vb, vm = (x[key].ravel() for x in (a, b, merged))
        assert np.linalg.norm(vm) == pytest.approx(1.0, abs=1e-12)               # stays on the sphere
        omega = np.arccos(va @ vb)
        assert np.arccos(np.clip(va @ vm, -1, 1)) == pytest.approx(t * omega, abs=1e-9)


def test_slerp_matches_torch_formula_on_unnormalised_tensors():
    a, b = _states(2, seed=5, spread=3.0)
    t = 0.65
    merged = merging.slerp(a, b, t)
    for key in SHAPES:
        ta, tb = torch.tensor(a[key]).flatten(), torch.tensor(b[key]).flatten()
        omega = torch.arccos(torch.dot(ta / ta.norm(), tb / tb.norm()))
        expected = (torch.sin((1 - t) * omega) * ta + torch.sin(t * omega) * tb) / torch.sin(omega)
        assert_close(merged[key], expected.reshape(a[key].shape).numpy(), 1e-12, key)


def test_slerp_falls_back_to_linear_for_colinear_and_zero_tensors():
    a = {"w": np.array([1.0, 2.0, 3.0]), "z": np.zeros(2)}
    b = {"w": 2.0 * a["w"], "z": np.array([1.0, -1.0])}
    merged = merging.slerp(a, b, 0.25)
    np.testing.assert_allclose(merged["w"], 1.25 * a["w"])
    np.testing.assert_allclose(merged["z"], 0.25 * b["z"])


# -- Fisher -------------------------------------------------------------------------------------

def _torch_fisher(state, x, y):
    """mean over samples of the squared gradient of each sample's cross-entropy (lamina's layout)."""
    squares = {key: np.zeros_like(value) for key, value in state.items()}
    for xi, yi in zip(x, y):
        params = {key: torch.tensor(value, requires_grad=True) for key, value in state.items()}
        hidden = torch.tanh(torch.tensor(xi[None]) @ params["hidden.weight"] + params["hidden.bias"])
        logits = hidden @ params["out.weight"] + params["out.bias"]
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([int(yi)]))
        for key, grad in zip(params, torch.autograd.grad(loss, list(params.values()))):
            squares[key] += grad.numpy() ** 2
    return {key: value / len(x) for key, value in squares.items()}


def test_fisher_of_a_tiny_model_and_fisher_merge_match_torch():
    lamina.set_default_dtype(np.float64)
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((7, 4)), rng.integers(0, 3, 7)
    models, fishers, expected_fishers = [], [], []
    for seed in (0, 1):
        lamina.manual_seed(seed)
        model = nn.Sequential(nn.Dense(5, activation="tanh", name="hidden"), nn.Dense(3, name="out"))
        model.build((None, 4))
        fisher = merging.diagonal_fisher(
            model, lambda out, t: F.categorical_cross_entropy(out, t, from_logits=True, reduction="sum"), x, y,
            batch_size=3)
        reference = _torch_fisher({k: v.copy() for k, v in model.state_dict().items()}, x, y)
        for key in reference:
            assert_close(fisher[key], reference[key], 1e-10, f"Fisher {key}")
        models.append(model)
        fishers.append(fisher)
        expected_fishers.append(reference)
    weights = [1.0, 3.0]
    merged = merging.fisher_merge(models, fishers, weights=weights, epsilon=0.0)
    for key in expected_fishers[0]:
        precisions = [w * f[key] for w, f in zip(weights, expected_fishers)]
        values = [m.state_dict()[key] for m in models]
        assert_close(merged[key], sum(p * v for p, v in zip(precisions, values)) / sum(precisions), 1e-10, key)


def test_fisher_merge_with_equal_fishers_is_the_uniform_soup():
    states = _states(3, seed=7)
    ones = [{key: np.ones(shape) for key, shape in SHAPES.items()}] * 3
    _check_all(merging.fisher_merge(states, ones), merging.uniform_soup(states))


# -- buffers, non-float entries, the front -------------------------------------------------------

def _batch_norm_model(seed: int):
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Dense(4), nn.BatchNorm())
    model.build((None, 3))
    rng = np.random.default_rng(seed)
    model(lamina.tensor(rng.standard_normal((8, 3)) * (seed + 1)))   # moves the running statistics
    return model


def test_buffers_are_averaged_not_passed_through_the_method():
    base, *finetuned = [_batch_norm_model(seed) for seed in range(3)]
    buffers = [key for key, _ in base.named_buffers()]
    assert buffers
    for merged in (merging.ties_merge(base, finetuned, density=0.5),
                   merging.dare(base, finetuned, drop_rate=0.5),
                   merging.task_arithmetic(base, merging.task_vectors(base, finetuned), -2.0)):
        for key in buffers:
            assert_close(merged[key], np.mean([m.state_dict()[key] for m in finetuned], axis=0), 1e-6, key)
    merged = merging.slerp(base, finetuned[0], 0.25)
    for key in buffers:
        assert_close(merged[key], 0.75 * base.state_dict()[key] + 0.25 * finetuned[0].state_dict()[key], 1e-6)
    target = _batch_norm_model(9)
    target.load_state_dict(merging.uniform_soup([base, *finetuned]))
    assert all(merged[key].dtype == value.dtype for key, value in base.state_dict().items())


def test_merge_models_front_equals_the_functions():
    base, *finetuned = _states(3, seed=8)
    _check_all(nn.merge_models(finetuned, "uniform"), merging.uniform_soup(finetuned))
    _check_all(nn.merge_models(finetuned, "slerp", t=0.4), merging.slerp(*finetuned, 0.4))
    _check_all(nn.merge_models(finetuned, "task_arithmetic", base=base, scaling=0.5),
               merging.task_arithmetic(base, merging.task_vectors(base, finetuned), 0.5))
    _check_all(nn.merge_models(finetuned, "ties", base=base, density=0.3),
               merging.ties_merge(base, finetuned, density=0.3))
    _check_all(nn.merge_models(finetuned, "dare_ties", base=base, drop_rate=0.4, seed=3),
               merging.dare(base, finetuned, drop_rate=0.4, seed=3, combine="ties"))


# -- errors -------------------------------------------------------------------------------------

def test_architecture_mismatches_name_the_key():
    a, b = _states(2)
    with pytest.raises(ShapeError, match="'0.bias'.*\\(4,\\)"):
        merging.uniform_soup([a, {**b, "0.bias": np.zeros(4)}])
    with pytest.raises(KeyError, match="1.weight"):
        merging.ties_merge(a, [{k: v for k, v in b.items() if k != "1.weight"}])
    with pytest.raises(KeyError, match="extra"):
        merging.slerp(a, {**b, "extra": np.zeros(1)}, 0.5)
    with pytest.raises(ValueError, match="'steps'.*differs"):
        merging.uniform_soup([a, {**b, "steps": np.array(8)}])
    with pytest.raises(TypeError, match="'steps'"):
        merging.uniform_soup([a, {**b, "steps": np.array(7.0)}])
    with pytest.raises(ShapeError, match="'0.weight'.*task vector 0"):
        merging.task_arithmetic(a, [{**merging.task_vectors(a, b)[0], "0.weight": np.zeros((5, 6))}])


def test_out_of_range_arguments_are_refused():
    base, *finetuned = _states(3)
    for density in (0.0, 1.5, -0.2, "half"):
        with pytest.raises(ValueError, match="density must be a number in \\(0, 1\\]"):
            merging.ties_merge(base, finetuned, density=density)
    with pytest.raises(ValueError, match="drop_rate must be a number in \\[0, 1\\)"):
        merging.dare(base, finetuned, drop_rate=1.0)
    with pytest.raises(ValueError, match="combine"):
        merging.dare(base, finetuned, combine="mean")
    with pytest.raises(ValueError, match="t must be"):
        merging.slerp(base, finetuned[0], 1.2)
    with pytest.raises(ValueError, match="one number per model"):
        merging.task_arithmetic(base, merging.task_vectors(base, finetuned), [1.0])
    with pytest.raises(ValueError, match="one Fisher"):
        merging.fisher_merge(finetuned, [{}])
    with pytest.raises(ValueError, match="negative"):
        merging.fisher_merge(finetuned, [{"0.bias": -np.ones(5)}, {"0.bias": np.ones(5)}])
    with pytest.raises(ValueError, match="needs the base"):
        nn.merge_models(finetuned, "ties")
    with pytest.raises(ValueError, match="unknown method"):
        nn.merge_models(finetuned, "average")
    with pytest.raises(TypeError, match="list of models"):
        merging.uniform_soup(base)
