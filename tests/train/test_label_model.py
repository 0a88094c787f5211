"""Weak supervision: majority vote and the LF summary by hand, the Dawid-Skene label model on
synthetic labelling functions of known accuracy (recovered, and better than majority vote),
an end model trained on its soft labels, and the errors."""

import numpy as np
import pytest

import lamina
from lamina import nn
from lamina.train.label_model import LabelModel, lf_summary, majority_vote
from lamina.train.noisy_labels import fit_classifier, predict_proba

HAND = np.array([[0, 0, -1], [1, 0, -1], [-1, -1, -1], [2, 2, 1], [-1, 1, 1]])


def test_majority_vote_by_hand():
    np.testing.assert_array_equal(majority_vote(HAND, 3, tie_break="abstain"), [0, -1, -1, 2, 1])
    assert majority_vote(HAND, 3)[1] in (0, 1)


def test_lf_summary_by_hand():
    summary = lf_summary(HAND, 3, gold=np.array([0, 1, 2, 2, 1]))
    np.testing.assert_allclose(summary["coverage"], [3 / 5, 4 / 5, 2 / 5])
    np.testing.assert_allclose(summary["overlaps"], [3 / 5, 4 / 5, 2 / 5])
    np.testing.assert_allclose(summary["conflicts"], [2 / 5, 2 / 5, 1 / 5])
    np.testing.assert_allclose(summary["accuracy"], [1.0, 3 / 4, 1 / 2])


def _synthetic(accuracies, coverages, n=2000, classes=3, seed=0):
    """Votes of independent functions: each votes with its coverage, the true class with its
    accuracy and otherwise a uniformly drawn wrong class."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, n)
    votes = np.full((n, len(accuracies)), -1)
    for j, (accuracy, coverage) in enumerate(zip(accuracies, coverages)):
        wrong = (truth + rng.integers(1, classes, n)) % classes
        vote = np.where(rng.random(n) < accuracy, truth, wrong)
        votes[:, j] = np.where(rng.random(n) < coverage, vote, -1)
    return votes, truth, rng


def test_label_model_recovers_lf_accuracies_and_beats_majority_vote():
    votes, truth, rng = _synthetic([0.9, 0.75, 0.6, 0.5, 0.45], [0.9, 0.8, 0.8, 0.8, 0.8])
    model = LabelModel(3).fit(votes, max_iter=300)
    empirical = lf_summary(votes, 3, gold=truth)["accuracy"]
    estimated = model.lf_accuracies()
    label_model_accuracy = np.mean(model.predict(votes) == truth)
    majority_accuracy = np.mean(majority_vote(votes, 3) == truth)
    print("LF accuracies, empirical:", empirical.round(3), "estimated:", estimated.round(3),
          f"label model {label_model_accuracy:.3f}, majority vote {majority_accuracy:.3f}")
    # measured: estimated within 0.023 of empirical; label model 0.894, majority vote 0.803
    np.testing.assert_allclose(estimated, empirical, atol=0.05)
    assert label_model_accuracy >= majority_accuracy + 0.05
    proba = model.predict_proba(votes)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)

    centres = np.array([[0, 3], [3, -2], [-3, -2]], dtype=np.float32)
    x = (centres[truth] + rng.standard_normal((len(truth), 2))).astype(np.float32)
    lamina.manual_seed(0)
    end_model = nn.Sequential(nn.Dense(16, "relu"), nn.Dense(3))
    end_model.build((None, 2))
    fit_classifier(end_model, x[:1500], proba[:1500], epochs=5, lr=1e-2)  # expected cross-entropy on soft labels
    end_accuracy = np.mean(predict_proba(end_model, x[1500:]).argmax(axis=1) == truth[1500:])
    assert end_accuracy >= 0.95, end_accuracy


def test_agreeing_functions_give_confident_labels_and_no_votes_give_the_prior():
    votes, truth, _ = _synthetic([0.85, 0.85, 0.85], [1.0, 1.0, 1.0], n=600)
    model = LabelModel(3).fit(votes)
    unanimous = (votes == votes[:, :1]).all(axis=1)
    assert model.predict_proba(votes)[unanimous].max(axis=1).min() > 0.9
    np.testing.assert_allclose(model.predict_proba(np.full((1, 3), -1))[0], model.class_prior)


def test_errors_are_clear():
    with pytest.raises(ValueError, match=r"must lie in \[-1, 3\)"):
        majority_vote(np.array([[0, 3]]), 3)
    with pytest.raises(ValueError, match=r"must lie in \[-1, 3\)"):
        LabelModel(3).fit(np.array([[0, -2]]))
    with pytest.raises(ValueError, match="2-D integer"):
        lf_summary(np.array([0.5, 1.0]), 3)
    with pytest.raises(RuntimeError, match="call fit first"):
        LabelModel(3).predict(np.array([[0, 1]]))
    with pytest.raises(ValueError, match="fitted on 2"):
        LabelModel(3).fit(np.array([[0, 1], [1, 1]])).predict(np.array([[0, 1, 2]]))
