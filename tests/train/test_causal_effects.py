"""Meta-learners, neural effect estimators and causal/uplift metrics on synthetic data with
known potential outcomes."""

import itertools

import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression

from helpers import run_readme_section
from lamina.data.causal import CausalData, confounded_data, ihdp_like
from lamina.models.causal import CFRNet, DragonNet, TARNet
from lamina.train.causal import (
    DRLearner,
    LinearRegressor,
    MLPRegressor,
    PropensityModel,
    SLearner,
    TLearner,
    XLearner,
    auuc_score,
    average_treatment_effect,
    average_treatment_effect_on_treated,
    cumulative_gain_curve,
    fit_causal_net,
    pehe,
    policy_risk,
    qini_coefficient,
    qini_curve,
)


def _naive_pehe(data: CausalData, test: CausalData) -> float:
    difference = data.y[data.t == 1].mean() - data.y[data.t == 0].mean()
    return pehe(np.full(len(test.t), difference), test.tau)


@pytest.mark.parametrize("learner", [SLearner(), TLearner(), XLearner(), DRLearner(folds=3),
                                     TLearner(lambda: MLPRegressor(hidden=(8,), epochs=20))])
def test_meta_learners_recover_a_constant_effect(learner):
    data = confounded_data(n=1000, effect="constant", tau=2.0, overlap=1.5, seed=3)
    naive = data.y[data.t == 1].mean() - data.y[data.t == 0].mean()
    assert abs(naive - 2.0) > 0.5  # the confounding biases the difference in means
    estimate = average_treatment_effect(learner.fit(data.x, data.t, data.y).effect(data.x))
    assert abs(estimate - 2.0) < 0.1, estimate


@pytest.mark.parametrize("model", [TARNet((16,), (8,)), CFRNet((16,), (8,), alpha=0.5), DragonNet((16,), (8,))])
def test_neural_estimators_recover_a_constant_effect(model):
    data = confounded_data(n=600, effect="constant", tau=2.0, overlap=1.5, seed=3)
    fit_causal_net(model, data.x, data.t, data.y, epochs=40, lr=1e-2)
    assert abs(average_treatment_effect(model.effect(data.x.astype(np.float32))) - 2.0) < 0.3


@pytest.mark.parametrize("learner", [TLearner, XLearner, DRLearner])
def test_meta_learners_beat_the_difference_in_means_on_a_nonlinear_effect(learner):
    forest = RandomForestRegressor(n_estimators=30, min_samples_leaf=5, random_state=0)
    data = confounded_data(n=1000, effect="nonlinear", seed=0)
    test = confounded_data(n=500, effect="nonlinear", seed=1)
    score = pehe(learner(forest).fit(data.x, data.t, data.y).effect(test.x), test.tau)
    assert score < 0.5 * _naive_pehe(data, test), score  # about 0.7-0.75 against 2.24


def test_cfr_and_dragonnet_beat_the_baselines_on_ihdp_like_data():
    data = ihdp_like(n=1500, seed=0)
    naive = _naive_pehe(data, data)
    s_learner = pehe(SLearner().fit(data.x, data.t, data.y).effect(data.x), data.tau)
    assert abs(data.att - 4.0) < 1e-9
    for model in (CFRNet((32,), (16,), alpha=1.0), DragonNet((32,), (16,))):
        fit_causal_net(model, data.x, data.t, data.y, epochs=30, lr=3e-3, weight_decay=1e-3)
        score = pehe(model.effect(data.x.astype(np.float32)), data.tau)
        assert score < 0.6 * min(naive, s_learner), (type(model).__name__, score, naive, s_learner)


def test_effect_metrics_by_hand():
    tau_hat, t, y = np.array([1.0, -1.0, 1.0, -1.0]), np.array([1, 1, 0, 0]), np.array([3.0, 1.0, 2.0, 0.0])
    assert average_treatment_effect(tau_hat) == 0.0
    assert average_treatment_effect_on_treated(np.array([1.0, 3.0, 5.0, 7.0]), t) == 2.0
    assert pehe(np.array([1.0, 2.0]), np.array([0.0, 0.0])) == pytest.approx(np.sqrt(2.5))
    # treat rows 0 and 2; treated-and-treated: row 0 (y 3); untreated-and-control: row 3 (y 0)
    assert policy_risk(tau_hat, t, y) == pytest.approx(1 - (3 * 0.5 + 0 * 0.5))


def test_qini_and_auuc_by_hand():
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    t, y = np.array([1, 0, 1, 0, 1, 0]), np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(qini_curve(score, t, y), [0, 1, 1, 2, 1, 0.5, 1])
    assert qini_coefficient(score, t, y) == pytest.approx(3.0 / 7)
    np.testing.assert_allclose(cumulative_gain_curve(score, t, y), [0, 1, 2, 3, 2, 5 / 6, 2])
    assert auuc_score(score, t, y) == pytest.approx(65 / 84)
    # scores only matter through their order
    assert qini_coefficient(score * 10 - 3, t, y) == pytest.approx(3.0 / 7)


def test_a_perfect_ranking_has_the_largest_qini():
    t = np.array([1, 1, 1, 0, 0, 0])
    y = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    perfect = np.array([6.0, 5.0, 2.0, 1.0, 3.0, 4.0])  # treated responders first, control responders last
    best = qini_coefficient(perfect, t, y)
    others = [qini_coefficient(np.array(p, dtype=float), t, y) for p in itertools.permutations(range(6))]
    assert best == pytest.approx(max(others))
    assert best > np.mean(others) + 0.1


def test_propensity_model_matches_penalised_logistic_regression():
    data = confounded_data(n=400, seed=2)
    ours = PropensityModel(l2=0.5, clip=0.0).fit(data.x, data.t)
    reference = LogisticRegression(C=2.0, tol=1e-12, max_iter=1000).fit(data.x, data.t)
    np.testing.assert_allclose(ours.coef_, reference.coef_[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ours.predict_proba(data.x), reference.predict_proba(data.x)[:, 1], rtol=1e-6)


def test_linear_regressor_fits_exactly():
    x = np.random.default_rng(0).standard_normal((50, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 3.0
    np.testing.assert_allclose(LinearRegressor().fit(x, y).predict(x), y, atol=1e-6)


def test_clear_errors():
    data = confounded_data(n=50, seed=0)
    with pytest.raises(ValueError, match="binary"):
        TLearner().fit(data.x, data.t + 1, data.y)
    with pytest.raises(ValueError, match="lengths differ"):
        SLearner().fit(data.x, data.t[:-1], data.y)
    with pytest.raises(ValueError, match="lengths differ"):
        XLearner().fit(data.x, data.t, data.y[:-2])
    with pytest.raises(ValueError, match="no control"):
        DRLearner().fit(data.x, np.ones(50, dtype=int), data.y)
    with pytest.raises(ValueError, match="no treated"):
        qini_curve(data.y, np.zeros(50, dtype=int), data.y)
    with pytest.raises(ValueError, match="lengths differ"):
        pehe(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="effect"):
        confounded_data(effect="quadratic")


def test_readme_treatment_effects_section():
    printed, names = run_readme_section("Treatment effects")
    assert "CFRNet: PEHE" in printed and "DragonNet: PEHE" in printed
    assert pehe(names["tau_hat"], names["data"].tau) < 0.6 * 7.42
