"""Survival analysis: the Cox partial likelihood (Breslow and Efron ties) against a direct
double loop and torch's autograd of a torch rewrite, Harrell's C on hand-counted cases, the
Breslow baseline hazard, DeepSurv on synthetic proportional-hazards data, and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import functional as F
from lamina.models import DeepSurv
from lamina.optim import Adam

# durations with ties among events, between an event and a censoring, and among censorings
DURATIONS = np.array([2.0, 5.0, 5.0, 3.0, 5.0, 8.0, 1.0, 3.0, 8.0, 6.0])
EVENTS = np.array([1, 1, 1, 0, 0, 1, 1, 1, 0, 1])


def double_loop_loss(h, t, e, ties):
    """-(1/E) sum over event times of the partial log-likelihood, written out subject by subject."""
    total, n_events = 0.0, int(e.sum())
    for time in sorted(set(t[e == 1])):
        tied = [i for i in range(len(t)) if t[i] == time and e[i] == 1]
        risk = sum(math.exp(h[j]) for j in range(len(t)) if t[j] >= time)
        tie = sum(math.exp(h[i]) for i in tied)
        for rank, i in enumerate(tied):
            fraction = rank / len(tied) if ties == "efron" else 0.0
            total += h[i] - math.log(risk - fraction * tie)
    return -total / n_events


def torch_cox(ties):
    def loss(h, t, e):
        order_terms = []
        for time in torch.unique(t[e == 1]):
            tied = (t == time) & (e == 1)
            risk = torch.exp(h[t >= time]).sum()
            tie = torch.exp(h[tied]).sum()
            d = int(tied.sum())
            fractions = torch.arange(d, dtype=h.dtype) / d if ties == "efron" else torch.zeros(d, dtype=h.dtype)
            order_terms.append(h[tied].sum() - torch.log(risk - fractions * tie).sum())
        return -torch.stack(order_terms).sum() / e.sum()
    return loss


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_cox_loss_against_a_double_loop_and_torch(ties):
    h = randn(10, seed=1)
    loss = F.cox_ph_loss(lamina.tensor(h, dtype=np.float64), DURATIONS, EVENTS, ties=ties)
    np.testing.assert_allclose(loss.item(), double_loop_loss(h, DURATIONS, EVENTS, ties), rtol=1e-12)
    compare_with_torch(lambda h, t, e: F.cox_ph_loss(h, t, e, ties=ties), torch_cox(ties),
                       h, DURATIONS, EVENTS, grad=[True, False, False], dtype=np.float64)
    assert check_gradients(lambda h: F.cox_ph_loss(h, DURATIONS, EVENTS, ties=ties), h)


def test_without_ties_breslow_and_efron_agree_and_large_risks_do_not_overflow():
    t = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    e = np.array([1, 0, 1, 1, 0])
    h = randn(5, seed=2) + 800.0                                # exp(800) overflows float64
    breslow = F.cox_ph_loss(lamina.tensor(h, dtype=np.float64), t, e).item()
    efron = F.cox_ph_loss(lamina.tensor(h[:, None], dtype=np.float64), t, e, ties="efron").item()
    np.testing.assert_allclose(breslow, efron, rtol=1e-12)
    np.testing.assert_allclose(breslow, double_loop_loss(h - 800.0, t, e, "breslow"), rtol=1e-9)


def test_concordance_index_on_hand_counted_cases():
    t = np.array([1.0, 2.0, 3.0, 4.0])
    e = np.array([1, 1, 1, 1])
    assert F.concordance_index(t, np.array([4.0, 3.0, 2.0, 1.0]), e) == 1.0     # earlier death, higher risk
    assert F.concordance_index(t, np.array([1.0, 2.0, 3.0, 4.0]), e) == 0.0
    # 6 comparable pairs; (0, 1) reversed, (2, 3) tied in risk: (4 + 0.5) / 6
    assert F.concordance_index(t, np.array([3.0, 4.0, 1.0, 1.0]), e) == 4.5 / 6
    # censoring: subject 1 (censored at 2) is comparable only with subject 0 (event at 1);
    # subject 2 (event at 3) and subject 3 (censored at 3, the same time) are comparable;
    # pairs: (0,1) (0,2) (0,3) (2,3) -> risks 5>1 yes, 5>4 yes, 5>2 yes, 4>2 yes, so 4/4
    assert F.concordance_index(t[:3].tolist() + [3.0], np.array([5.0, 1.0, 4.0, 2.0]), [1, 0, 1, 0]) == 1.0
    # two events at the same time are not comparable: only (0, 1), (0, 2) count, one concordant
    assert F.concordance_index([1.0, 2.0, 2.0], [1.0, 2.0, 0.5], [1, 1, 1]) == 0.5


def test_breslow_baseline_hazard_and_survival_function_by_hand():
    t = np.array([1.0, 2.0, 2.0, 3.0])
    e = np.array([1, 1, 0, 1])
    h = np.log(np.array([1.0, 2.0, 3.0, 4.0]))
    times, hazard = F.breslow_baseline_hazard(h, t, e)
    np.testing.assert_array_equal(times, [1.0, 2.0, 3.0])
    expected = np.cumsum([1 / 10, 1 / 9, 1 / 4])                 # deaths / sum of exp(h) at risk
    np.testing.assert_allclose(hazard, expected, rtol=1e-12)
    survival = F.survival_function(h, hazard)
    np.testing.assert_allclose(survival, np.exp(-expected[None, :] * np.exp(h)[:, None]), rtol=1e-12)
    assert survival.shape == (4, 3) and np.all(np.diff(survival, axis=1) <= 0)


def proportional_hazards_data(n, rng):
    """Exponential times with hazard exp(x beta) (a linear log-risk) and uniform censoring."""
    x = rng.standard_normal((n, 5)).astype(np.float32)
    beta = np.array([1.0, -0.8, 0.6, 0.0, 0.0])
    risk = x @ beta
    event_time = rng.exponential(1.0, n) / np.exp(risk)
    censor_time = rng.uniform(0, 3.0, n)
    return x, np.minimum(event_time, censor_time), (event_time <= censor_time).astype(np.float64), risk


def test_deepsurv_approaches_the_true_risks_concordance():
    rng = np.random.default_rng(0)
    x, t, e, _ = proportional_hazards_data(800, rng)
    x_test, t_test, e_test, risk_test = proportional_hazards_data(800, rng)
    lamina.manual_seed(0)
    model = DeepSurv(hidden=(16,), dropout=0.0)
    model.build((None, 5))
    optimizer = Adam(model, lr=0.01)
    for _ in range(150):                                          # full batch
        optimizer.zero_grad()
        loss = F.cox_ph_loss(model(x), t, e, ties="efron")
        loss.backward()
        optimizer.step()
    model.eval()
    predicted = model(x_test).numpy()
    ours, truth = F.concordance_index(t_test, predicted, e_test), F.concordance_index(t_test, risk_test, e_test)
    print(f"DeepSurv: test C-index {ours:.3f}, true risk {truth:.3f}, events {e.mean():.2f}")
    assert ours > truth - 0.03 and ours > 0.7
    _, hazard = F.breslow_baseline_hazard(model(x).numpy(), t, e)
    assert np.all(np.diff(hazard) > 0)


def test_errors_name_the_function_and_values():
    h = np.zeros(3)
    with pytest.raises(ValueError, match=r"cox_ph_loss: durations must be finite and >= 0, got the minimum -1.0"):
        F.cox_ph_loss(h, [1.0, -1.0, 2.0], [1, 0, 1])
    with pytest.raises(ValueError, match=r"events must be 0 \(censored\) or 1 \(event\), got the values \[0, 1, 2\]"):
        F.cox_ph_loss(h, [1.0, 2.0, 3.0], [1, 0, 2])
    with pytest.raises(lamina.ShapeError, match=r"cox_ph_loss: durations \(4,\) and events \(3,\)"):
        F.cox_ph_loss(h, [1.0, 2.0, 3.0, 4.0], [1, 0, 1])
    with pytest.raises(ValueError, match="has no event"):
        F.cox_ph_loss(h, [1.0, 2.0, 3.0], [0, 0, 0])
    with pytest.raises(ValueError, match="ties must be one of"):
        F.cox_ph_loss(h, [1.0, 2.0, 3.0], [1, 0, 1], ties="exact")
    with pytest.raises(lamina.ShapeError, match=r"log_risk must be \(N,\) or \(N, 1\)"):
        F.cox_ph_loss(np.zeros((3, 2)), [1.0, 2.0, 3.0], [1, 0, 1])
    with pytest.raises(ValueError, match="concordance_index: no comparable pair"):
        F.concordance_index([1.0, 2.0], [0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="DeepSurv: dropout"):
        DeepSurv(dropout=1.0)


def test_deepsurv_config_and_save_round_trip(tmp_path):
    model = DeepSurv(hidden=(8, 4), activation="tanh", dropout=0.2, batch_norm=True)
    x = randn(6, 3).astype(np.float32)
    model(x)
    config = lamina.nn.layer_to_config(model)
    assert lamina.nn.layer_to_config(lamina.nn.layer_from_config(config)) == config
    model.eval()
    assert model(x).shape == (6,)
    lamina.save(model, tmp_path / "deepsurv.safetensors")
    loaded = lamina.load(tmp_path / "deepsurv.safetensors")
    loaded.eval()
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)
