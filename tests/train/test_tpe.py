"""lamina.train.tpe: the Parzen estimators (densities that integrate to 1, the bandwidth and
categorical formulas), TPE beating random search on synthetic objectives, determinism."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from lamina import models, optim
from lamina.data import load_digits, train_val_test_split
from lamina.train.search import random_search, tune_trainer
from lamina.train.search_space import Choice, IntUniform, LogUniform, Uniform
from lamina.train.tpe import ParzenEstimator, _split, _suggest, observation_weights, tpe_search

PENALTY = {"sgd": 1.0, "adam": 0.0, "rmsprop": 0.6}


def log_lr_bowl(config):
    """Peaks at 0 for lr = 10^-2.5."""
    return -(math.log10(config["lr"]) + 2.5) ** 2


def bowl_with_optimizer(config):
    """Peaks at 0 for lr = 10^-2.5 with adam."""
    return log_lr_bowl(config) - PENALTY[config["opt"]]


@pytest.mark.parametrize("distribution, values", [
    (Uniform(-2.0, 3.0), [-1.9, 0.4, 0.5, 2.9]),
    (LogUniform(1e-5, 1.0), [1e-3, 2e-3, 0.5]),
    (Uniform(0.0, 1.0), []),
])
def test_continuous_densities_integrate_to_one_in_their_own_space(distribution, values):
    estimator = ParzenEstimator(distribution, values)
    low, high = estimator.low, estimator.high
    if isinstance(distribution, LogUniform):
        assert (low, high) == pytest.approx((math.log(1e-5), 0.0))

    def density(u):
        x = math.exp(u) if isinstance(distribution, LogUniform) else u
        return float(np.exp(estimator.log_pdf([x])[0]))

    points = sorted(set(estimator.to_space(np.array(values, dtype=float)).tolist()))
    total, _ = integrate.quad(density, low, high, points=points or None, limit=200)
    assert total == pytest.approx(1.0, abs=1e-6)


def test_integer_probabilities_sum_to_one_and_draws_follow_them():
    estimator = ParzenEstimator(IntUniform(2, 9), [3, 3, 8])
    assert (estimator.low, estimator.high) == (1.5, 9.5)
    probabilities = np.exp(estimator.log_pdf(list(range(2, 10))))
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-12)
    draws = estimator.sample(np.random.default_rng(0), 6000)
    assert all(isinstance(v, int) and 2 <= v <= 9 for v in draws)
    counts = np.bincount(draws, minlength=10)[2:]
    assert stats.chisquare(counts, 6000 * probabilities).pvalue > 1e-3


def test_bandwidths_are_the_neighbour_gaps_clipped():
    estimator = ParzenEstimator(Uniform(0.0, 10.0), [1.0, 2.0, 9.0])
    # centres 1, 2, 9 and the prior's 5: gaps 1, 3, 4 -> sigmas 1 (one neighbour), max(1, 3), 4 (one
    # neighbour), prior 10; clipped below at 10 / min(100, 1 + 4) = 2
    assert estimator.mus.tolist() == [1.0, 2.0, 9.0, 5.0]
    assert estimator.sigmas.tolist() == [2.0, 3.0, 4.0, 10.0]
    assert estimator.weights.tolist() == [0.25] * 4
    only_prior = ParzenEstimator(Uniform(0.0, 10.0), [])
    assert only_prior.sigmas.tolist() == [10.0] and only_prior.weights.tolist() == [1.0]


def test_categorical_weights_are_the_formula():
    options = ["sgd", "adam", "rmsprop"]
    values = ["adam", "adam", "sgd", "adam"]
    estimator = ParzenEstimator(Choice(options), values, prior_weight=2.0)
    total = len(values) + 2.0
    expected = [(values.count(c) + 2.0 / 3) / total for c in options]
    assert np.exp(estimator.log_pdf(options)) == pytest.approx(expected, abs=1e-12)
    draws = estimator.sample(np.random.default_rng(1), 6000)
    assert stats.chisquare([draws.count(c) for c in options], 6000 * np.array(expected)).pvalue > 1e-3


def test_older_observations_weigh_less_from_25_on():
    assert observation_weights(24).tolist() == [1.0] * 24
    weights = observation_weights(30)
    assert weights[:5] == pytest.approx(np.linspace(1 / 30, 1.0, 5)) and weights[5:].tolist() == [1.0] * 25


@pytest.mark.parametrize("objective, space, trials, margin", [
    (log_lr_bowl, {"lr": LogUniform(1e-6, 1.0)}, 30, 0.01),
    (bowl_with_optimizer, {"lr": LogUniform(1e-6, 1.0), "opt": Choice(list(PENALTY))}, 40, 0.04),
])
def test_tpe_beats_random_search_on_average(objective, space, trials, margin):
    tpe = [tpe_search(objective, space, trials=trials, seed=seed).best.score for seed in range(10)]
    drawn = [random_search(objective, space, trials=trials, seed=seed).best.score for seed in range(10)]
    assert np.mean(tpe) > np.mean(drawn) + margin
    assert sum(t > r for t, r in zip(tpe, drawn, strict=True)) >= 8


def test_each_value_maximizes_l_over_g_among_candidates_drawn_from_l():
    space = {"lr": LogUniform(1e-6, 1.0), "opt": Choice(list(PENALTY))}
    trials = random_search(bowl_with_optimizer, space, trials=20, seed=0).trials
    config = _suggest(space, trials, "maximize", 0.25, 24, 1.0, np.random.default_rng(7))
    good, bad = _split(trials, "maximize", 0.25)
    rng = np.random.default_rng(7)  # the same draws, parameter by parameter in the space's order
    for name, distribution in space.items():
        below = ParzenEstimator(distribution, [t.config[name] for t in good])
        above = ParzenEstimator(distribution, [t.config[name] for t in bad])
        candidates = below.sample(rng, 24)
        ratio = below.log_pdf(candidates) - above.log_pdf(candidates)
        assert config[name] == candidates[int(np.argmax(ratio))]
        assert ratio.max() > ratio.min()


def test_tpe_is_deterministic_by_seed_and_starts_at_random():
    space = {"lr": LogUniform(1e-6, 1.0), "units": IntUniform(4, 64), "opt": Choice(list(PENALTY)), "act": "relu"}

    def configs(seed):
        return [t.config for t in tpe_search(bowl_with_optimizer, space, trials=15, n_startup_trials=5,
                                             seed=seed).trials]

    first = configs(3)
    assert first == configs(3) and first != configs(4)
    assert first[:5] == [t.config for t in random_search(bowl_with_optimizer, space, 5, seed=3).trials]
    assert all(c["act"] == "relu" and isinstance(c["units"], int) and 1e-6 <= c["lr"] <= 1.0 for c in first)


def test_failed_trials_count_as_bad():
    def objective(config):
        if config["x"] < 0.5:
            raise RuntimeError("below half")
        return -abs(config["x"] - 0.6)

    result = tpe_search(objective, {"x": Uniform(0.0, 1.0)}, trials=30, n_startup_trials=10, seed=0)
    failed = [t for t in result.trials if not t.ok]
    assert failed and abs(result.best_config["x"] - 0.6) < 0.02
    good, bad = _split(result.trials, "maximize", gamma=0.5)
    assert len(good) == 15 and all(t.ok for t in good) and {t.index for t in failed} <= {t.index for t in bad}
    assert min(t.score for t in good) >= max(t.score for t in bad if t.ok)
    assert [t.index for t in good] == sorted(t.index for t in good)  # in the order they ran, for the weights
    minimized, _ = _split(result.trials, "minimize", gamma=0.1)
    assert sorted(t.score for t in minimized) == sorted(t.score for t in result.trials if t.ok)[:3]


@pytest.mark.parametrize("kwargs, words", [
    ({"gamma": 0.0}, r"gamma must be a fraction in \(0, 1\)"),
    ({"gamma": 1.5}, r"gamma must be a fraction in \(0, 1\)"),
    ({"n_startup_trials": 0}, "n_startup_trials must be an integer >= 1"),
    ({"n_ei_candidates": 0}, "n_ei_candidates must be an integer >= 1"),
    ({"prior_weight": -1.0}, "prior_weight must be a finite number > 0"),
    ({"trials": 0}, "trials must be a positive integer"),
])
def test_bad_arguments_raise(kwargs, words):
    arguments = {"trials": 3, **kwargs}
    with pytest.raises(ValueError, match=words):
        tpe_search(log_lr_bowl, {"lr": LogUniform(1e-6, 1.0)}, **arguments)


def test_tune_trainer_with_tpe_on_digits():
    x, y = load_digits(size=8)
    x = x.reshape(len(x), -1).astype(np.float32) / 255.0
    train, val, _ = train_val_test_split(x, y, val=0.2, test=0.2, seed=0)

    def build(config):
        model = models.mlp(hidden=(16,), num_classes=10, input_shape=(64,))
        return model, optim.SGD(model, lr=config["lr"])

    space = {"lr": LogUniform(1e-5, 10.0)}
    result = tune_trainer(build, train, val, space, trials=13, epochs=2, strategy="tpe")
    drawn = tune_trainer(build, train, val, space, trials=10, epochs=2)
    assert [t.config for t in result.trials[:10]] == [t.config for t in drawn.trials]
    assert len(result.trials) == 13 and result.best.score >= drawn.best.score > 0.8
    # the model-based trials go near the best random one (within a decade of its learning rate)
    near = [abs(math.log10(t.config["lr"] / drawn.best_config["lr"])) < 1 for t in result.trials[10:]]
    assert sum(near) >= 2
