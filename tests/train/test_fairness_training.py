"""Fairness penalties (values, gradients against torch), a penalised Trainer loss and
adversarial debiasing on a synthetic biased task."""

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch
from lamina import nn, optim
from lamina.analysis import fairness as fair
from lamina.train import Trainer
from lamina.train.fairness import (
    AdversarialDebiasing,
    FairnessPenaltyLoss,
    TrainedClassifier,
    adversary_advantage,
    demographic_parity_penalty,
    equalized_odds_penalty,
    fair_labels,
)

GROUPS = np.array([0, 0, 1, 1, 1, 2, 2, 0])
LABELS = np.array([1, 0, 1, 0, 0, 1, 1, 1])
PROBS = np.array([0.9, 0.2, 0.6, 0.4, 0.1, 0.7, 0.8, 0.3])


def _torch_gaps(p, cells, power):
    total = 0
    for within, cell in cells:
        gap = p[torch.tensor(cell)].mean() - p[torch.tensor(within)].mean()
        total = total + (gap.abs() if power == 1 else gap ** 2)
    return total


def _dp_cells(groups):
    return [(np.ones(len(groups), bool), groups == g) for g in np.unique(groups)]


def _eo_cells(labels, groups):
    return [(labels == y, (labels == y) & (groups == g)) for y in (0, 1) for g in np.unique(groups)
            if ((labels == y) & (groups == g)).any()]


def test_penalty_values_by_hand():
    # means: all 0.5; group 0 (0.9, 0.2, 0.3) 7/15, group 1 (0.6, 0.4, 0.1) 11/30, group 2 0.75
    expected = abs(7 / 15 - 0.5) + abs(11 / 30 - 0.5) + abs(0.75 - 0.5)
    assert float(demographic_parity_penalty(PROBS, GROUPS).item()) == pytest.approx(expected, rel=1e-6)
    # y = 0: mean (0.2, 0.4, 0.1) = 0.7/3, groups 0: 0.2, 1: 0.25; y = 1: mean 3.3/5, groups 0: 0.6, 1: 0.6, 2: 0.75
    eo = abs(0.2 - 0.7 / 3) + abs(0.25 - 0.7 / 3) + 2 * abs(0.6 - 0.66) + abs(0.75 - 0.66)
    assert float(equalized_odds_penalty(PROBS, LABELS, GROUPS).item()) == pytest.approx(eo, rel=1e-6)


@pytest.mark.parametrize("power", [1, 2])
def test_penalty_gradients(power):
    assert check_gradients(lambda p: demographic_parity_penalty(p, GROUPS, power), PROBS)
    assert check_gradients(lambda p: equalized_odds_penalty(p, LABELS, GROUPS, power), PROBS)
    compare_with_torch(lambda p: demographic_parity_penalty(p, GROUPS, power),
                       lambda p: _torch_gaps(p, _dp_cells(GROUPS), power), PROBS)
    compare_with_torch(lambda p: equalized_odds_penalty(p, LABELS, GROUPS, power),
                       lambda p: _torch_gaps(p, _eo_cells(LABELS, GROUPS), power), PROBS)


@pytest.fixture(scope="module")
def biased():
    x, y, a = fair.make_biased_classification(600, seed=0)
    return x.astype(np.float32), y, a


def _fit_penalised(x, y, a, weight):
    model = nn.Dense(1)
    model(lamina.tensor(x[:2]))
    trainer = Trainer(model, loss=FairnessPenaltyLoss("demographic_parity", weight=weight),
                      optimizer=optim.Adam(model.parameters(), lr=0.05), metrics=(), verbose=0)
    trainer.fit((x, fair_labels(y, a)), epochs=30, batch_size=100)
    with lamina.no_grad():
        return (model(lamina.tensor(x)).data.ravel() > 0).astype(int)


def test_penalised_trainer_loss_reduces_demographic_parity(biased):
    x, y, a = biased
    plain, penalised = _fit_penalised(x, y, a, 0.0), _fit_penalised(x, y, a, 1.0)
    dp = [fair.demographic_parity_difference(y, p, sensitive_features=a) for p in (plain, penalised)]
    acc = [fair.accuracy(y, p) for p in (plain, penalised)]
    print(f"\nBCE + DP penalty: DP difference {dp[0]:.3f} -> {dp[1]:.3f}, accuracy {acc[0]:.3f} -> {acc[1]:.3f}")
    assert dp[1] < dp[0] / 2
    assert acc[1] > max(y.mean(), 1 - y.mean()) + 0.05 and acc[0] - acc[1] < 0.12


@pytest.mark.parametrize("method", ["projection", "reversal"])
def test_adversarial_debiasing_lowers_the_adversary_advantage(biased, method):
    x, y, a = biased
    results = {}
    for debias in (False, True):
        model = AdversarialDebiasing(nn.Dense(1), alpha=1.0 if method == "projection" else 3.0, method=method,
                                     debias=debias, seed=1)
        history = model.fit(x, y, a)
        p = model.predict_proba(x)
        results[debias] = (adversary_advantage(p, a),
                           fair.demographic_parity_difference(y, (p > 0.5).astype(int), sensitive_features=a),
                           fair.accuracy(y, model.predict(x)), history["adversary_loss"][-1])
    (adv0, dp0, acc0, _), (adv1, dp1, acc1, loss1) = results[False], results[True]
    print(f"\nadversarial debiasing ({method}): adversary advantage {adv0:.4f} -> {adv1:.4f} nats, "
          f"DP difference {dp0:.3f} -> {dp1:.3f}, accuracy {acc0:.3f} -> {acc1:.3f}, last adversary loss {loss1:.3f}")
    assert adv1 < adv0 / 2 and dp1 < dp0 - 0.1
    assert acc1 > max(y.mean(), 1 - y.mean())


def test_equalized_odds_adversary(biased):
    x, y, a = biased
    plain = AdversarialDebiasing(nn.Dense(1), constraint="equalized_odds", debias=False, seed=0)
    plain.fit(x, y, a)
    debiased = AdversarialDebiasing(nn.Dense(1), constraint="equalized_odds", alpha=3.0, seed=0)
    debiased.fit(x, y, a)
    adv = [adversary_advantage(m.predict_proba(x), a, y) for m in (plain, debiased)]
    eo = [fair.equalized_odds_difference(y, m.predict(x), sensitive_features=a) for m in (plain, debiased)]
    print(f"\nadversarial debiasing (equalized odds): I(s; A | Y) estimate {adv[0]:.4f} -> {adv[1]:.4f}, "
          f"EO difference {eo[0]:.3f} -> {eo[1]:.3f}")
    assert adv[1] < adv[0] / 2 and eo[1] < eo[0]


def test_exponentiated_gradient_with_a_lamina_learner():
    x, y, a = fair.make_biased_classification(300, seed=0)
    learner = TrainedClassifier(lambda: nn.Dense(1), epochs=8, batch_size=100)
    plain = learner.fit(x, y).predict(x)
    mitigated = fair.ExponentiatedGradient(learner, constraints="demographic_parity", eps=0.02, max_iter=6)
    prob = mitigated.fit(x, y, a).predict_proba(x)
    before = fair.demographic_parity_difference(y, plain, sensitive_features=a)
    after = abs(prob[a == 0].mean() - prob[a == 1].mean())
    accuracy = np.mean(prob * y + (1 - prob) * (1 - y))
    print(f"\nExponentiatedGradient(TrainedClassifier): DP difference {before:.3f} -> {after:.3f}, "
          f"accuracy {fair.accuracy(y, plain):.3f} -> {accuracy:.3f}")
    assert after < before / 3 and accuracy > max(y.mean(), 1 - y.mean())


def test_errors():
    with pytest.raises(ValueError, match=r"unknown constraint 'parity'"):
        AdversarialDebiasing(nn.Dense(1), constraint="parity")
    with pytest.raises(ValueError, match=r"3 inputs, 2 labels, 3 groups"):
        AdversarialDebiasing(nn.Dense(1)).fit(np.ones((3, 2)), [0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match=r"unknown penalty 'equal_odds'"):
        FairnessPenaltyLoss("equal_odds")
    with pytest.raises(ValueError, match=r"8 probabilities, 3 groups"):
        demographic_parity_penalty(PROBS, GROUPS[:3])
    with pytest.raises(ValueError, match=r"labels must be the \(n, 2\) array"):
        FairnessPenaltyLoss()(lamina.tensor(PROBS), LABELS)
