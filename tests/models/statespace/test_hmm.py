"""HiddenMarkovModel: likelihood, posteriors and Viterbi against brute-force enumeration of
every state path; Baum-Welch never lowers the likelihood and recovers a well-separated
Gaussian HMM from its samples; the differentiable log-likelihood; errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from helpers import assert_close, run_readme_section
from lamina.errors import ShapeError
from lamina.models import HiddenMarkovModel

PI = np.array([0.6, 0.3, 0.1])
A = np.array([[0.7, 0.2, 0.1], [0.3, 0.5, 0.2], [0.2, 0.3, 0.5]])
E = np.array([[0.5, 0.4, 0.1], [0.1, 0.3, 0.6], [0.3, 0.3, 0.4]])


def categorical():
    return HiddenMarkovModel(3, "categorical", startprob=PI, transmat=A, emissionprob=E)


def gaussian():
    means = np.array([[0.0, 1.0], [1.5, -0.5], [-1.0, 0.5]])
    covars = np.array([[1.0, 0.5], [0.7, 1.2], [0.4, 0.9]])
    return HiddenMarkovModel(3, "gaussian", startprob=PI, transmat=A, means=means, covars=covars)


def path_log_probabilities(model, x):
    """log p(x, z) for every state path z (K^T of them)."""
    log_B = model.log_emissions(x)
    steps, k = log_B.shape
    paths = list(itertools.product(range(k), repeat=steps))
    scores = []
    for z in paths:
        score = np.log(model.startprob_[z[0]]) + sum(log_B[t, z[t]] for t in range(steps))
        score += sum(np.log(model.transmat_[z[t - 1], z[t]]) for t in range(1, steps))
        scores.append(score)
    return paths, np.array(scores)


def test_gaussian_emission_log_densities():
    model = gaussian()
    x = np.random.default_rng(0).standard_normal((4, 2))
    expected = np.array([[-0.5 * (((xt - m) ** 2 / v).sum() + np.log(2 * np.pi * v).sum())
                          for m, v in zip(model.means_, model.covars_)] for xt in x])
    assert_close(model.log_emissions(x), expected, 1e-12)


@pytest.mark.parametrize("make", [categorical, gaussian])
def test_likelihood_posteriors_and_viterbi_equal_brute_force(make):
    model = make()
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, 5) if model.emission == "categorical" else rng.standard_normal((5, 2))
    paths, scores = path_log_probabilities(model, x)
    total = np.logaddexp.reduce(scores)
    assert abs(model.score(x) - total) <= 1e-10 * abs(total)
    posterior = np.zeros((5, 3))
    for z, score in zip(paths, scores):
        posterior[np.arange(5), z] += np.exp(score - total)
    assert_close(model.predict_proba(x), posterior, 1e-10)
    path, best = model.decode(x)
    assert tuple(path) == paths[int(scores.argmax())]
    assert abs(best - scores.max()) <= 1e-10 * abs(best)
    differentiable = model.log_likelihood(model.log_emissions(x))
    assert abs(differentiable.item() - total) <= 1e-10 * abs(total)


def test_several_sequences_by_lengths():
    model = gaussian()
    x = np.random.default_rng(2).standard_normal((7, 2))
    separate = model.score(x[:3]) + model.score(x[3:])
    assert abs(model.score(x, lengths=[3, 4]) - separate) < 1e-10
    assert_close(model.predict(x, lengths=[3, 4]), np.concatenate([model.predict(x[:3]), model.predict(x[3:])]), 0)


@pytest.mark.parametrize("emission", ["categorical", "gaussian"])
def test_baum_welch_never_decreases_the_likelihood(emission):
    data, _ = (categorical() if emission == "categorical" else gaussian()).sample(300, seed=3)
    model = HiddenMarkovModel(3, emission, n_iter=30, tol=0.0, seed=1).fit(data, lengths=[100, 200])
    history = np.array(model.log_likelihoods_)
    assert len(history) == 30
    assert (np.diff(history) >= -1e-9 * np.abs(history[1:])).all()
    assert history[-1] > history[0] + 1.0
    assert abs(model.score(data, lengths=[100, 200]) - history[-1]) < 1.0    # one more step changes little


def test_baum_welch_recovers_a_well_separated_gaussian_hmm():
    truth = HiddenMarkovModel(2, "gaussian", startprob=[0.5, 0.5], transmat=[[0.9, 0.1], [0.2, 0.8]],
                              means=[[-3.0], [3.0]], covars=[[1.0], [0.5]])
    data, states = truth.sample(2000, seed=4)
    model = HiddenMarkovModel(2, "gaussian", seed=0).fit(data)
    order = np.argsort(model.means_[:, 0])                 # the labels are defined up to permutation
    # 2000 steps, about 1300 and 700 in each state: standard errors of the means about 0.03, of the
    # variances about 0.04 and 0.03, of the transition probabilities about 0.01 and 0.015.
    assert_close(model.means_[order], truth.means_, 0.05 / 3, "means")
    assert np.abs(model.covars_[order] - truth.covars_).max() < 0.15
    assert np.abs(model.transmat_[np.ix_(order, order)] - truth.transmat_).max() < 0.05
    assert (model.predict(data) == order[states]).mean() > 0.99


def test_sample_follows_the_transition_matrix():
    _, states = categorical().sample(4000, seed=5)
    counts = np.zeros((3, 3))
    np.add.at(counts, (states[:-1], states[1:]), 1)
    frequencies = counts / counts.sum(axis=1, keepdims=True)
    assert np.abs(frequencies - A).max() < 0.05       # over 600 visits per row: standard error <= 0.02


def test_errors_are_clear():
    with pytest.raises(ValueError, match="rows of transmat .* must sum to 1"):
        HiddenMarkovModel(2, transmat=[[0.5, 0.6], [0.5, 0.5]])
    with pytest.raises(ValueError, match="negative entries"):
        HiddenMarkovModel(2, startprob=[1.2, -0.2])
    with pytest.raises(ShapeError, match=r"transmat must have shape \(2, 2\)"):
        HiddenMarkovModel(2, transmat=np.eye(3))
    with pytest.raises(ValueError, match="covars must be positive"):
        HiddenMarkovModel(2, "gaussian", means=[[0.0], [1.0]], covars=[[1.0], [0.0]])
    with pytest.raises(ValueError, match="emission must be one of"):
        HiddenMarkovModel(2, "poisson")
    with pytest.raises(RuntimeError, match="call fit first"):
        HiddenMarkovModel(2).score([0, 1])
    with pytest.raises(ValueError, match="lengths must be positive and sum"):
        categorical().score([0, 1, 2], lengths=[1, 1])
    with pytest.raises(ShapeError, match="observations have 3 features"):
        gaussian().score(np.zeros((4, 3)))


def test_readme_example_runs():
    printed, _ = run_readme_section("HMMs, Kalman and particle filters")
    assert printed.split("\n")[:3] == ["[-3.  3.]", "True", "2"]
