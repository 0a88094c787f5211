"""Privacy attacks on small digits MLPs: an overfitted model leaks membership (loss attack,
LiRA, shadow models), one trained with DP-SGD leaks far less, and model inversion recovers
inputs the model is sure of."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

import lamina
from lamina import functional as F
from lamina import nn
from lamina.analysis import (
    attack_report,
    entropy_attack,
    lira,
    lira_confidence,
    loss_threshold_attack,
    model_inversion,
    shadow_model_attack,
)
from lamina.autograd import no_grad, tensor
from lamina.data import ArrayDataset, DataLoader, PoissonSampler
from lamina.errors import ShapeError
from lamina.optim import SGD, Adam, DPOptimizer

MEMBERS = 100           # the target trains on the first half of a pool of 2 * MEMBERS records
EXTRA_OUT = 400         # further non-members for the threshold attacks
REFERENCE_MODELS = 8


def _mlp(seed: int):
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Dense(128, activation="relu"), nn.Dense(10))
    model.build((None, 64))
    return model


def _overfit(x, y, seed: int, epochs: int = 200):
    """Full-batch Adam until the training loss is tiny: the model remembers its records."""
    model = _mlp(seed)
    optimizer = Adam(model, lr=1e-2)
    for _ in range(epochs):
        optimizer.zero_grad()
        F.cross_entropy(model(tensor(x)), tensor(y)).backward()
        optimizer.step()
    return model


def _probs(model, x):
    with no_grad():
        return F.softmax(model(tensor(x)), axis=-1).data.astype(np.float64)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    return (x[order] / 16.0).astype(np.float32), y[order]


@pytest.fixture(scope="module")
def setting(digits):
    x, y = digits
    pool = slice(0, 2 * MEMBERS)
    outside = slice(2 * MEMBERS, 2 * MEMBERS + EXTRA_OUT)
    member = np.r_[np.ones(MEMBERS, bool), np.zeros(MEMBERS, bool)]
    target = _overfit(x[:MEMBERS], y[:MEMBERS], seed=0)
    return {"x": x, "y": y, "pool": pool, "outside": outside, "member": member, "target": target}


def _threshold_setup(setting, model):
    """Probabilities, labels and membership over the pool and the extra non-members."""
    x, y = setting["x"], setting["y"]
    rows = np.r_[np.arange(2 * MEMBERS), np.arange(2 * MEMBERS, 2 * MEMBERS + EXTRA_OUT)]
    member = np.r_[setting["member"], np.zeros(EXTRA_OUT, bool)]
    return _probs(model, x[rows]), y[rows], member


@pytest.fixture(scope="module")
def dp_model(setting):
    """DP-SGD (sigma 3, C 1, q 1/4, 10 epochs: epsilon about 2.6 at delta 1e-5)."""
    x, y = setting["x"][:MEMBERS], setting["y"][:MEMBERS]
    model = _mlp(seed=0)
    rate = 0.25
    optimizer = DPOptimizer(SGD(model, lr=1.0, momentum=0.5), noise_multiplier=3.0, max_grad_norm=1.0,
                            expected_batch_size=int(rate * MEMBERS), sample_rate=rate)
    loader = DataLoader(ArrayDataset(x, y), sampler=PoissonSampler(rate), seed=0)
    for _ in range(10):
        for xb, yb in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            optimizer.step()
    optimizer.detach()
    return model, optimizer.epsilon(1e-5)


def test_overfitted_model_leaks_to_the_loss_attack_and_dp_sgd_hides_it(setting, dp_model):
    probs, labels, member = _threshold_setup(setting, setting["target"])
    plain = attack_report(loss_threshold_attack(probs, labels).scores, member)
    mentr = attack_report(entropy_attack(probs, labels, modified=True).scores, member)
    model, epsilon = dp_model
    private = attack_report(loss_threshold_attack(*_threshold_setup(setting, model)[:2]).scores, member)
    assert epsilon < 3
    # seeds 0-4: plain AUC 0.66-0.72, DP AUC 0.49-0.55, gap >= 0.14 (AUC noise ~0.03 here)
    assert plain.auc > 0.62 and mentr.auc > 0.62
    assert abs(private.auc - 0.5) < 0.1
    assert plain.auc - private.auc > 0.08


def test_lira_finds_members_at_low_false_positive_rates(setting):
    x, y = setting["x"][setting["pool"]], setting["y"][setting["pool"]]
    rng = np.random.default_rng(1)
    inside = np.zeros((REFERENCE_MODELS, len(x)), dtype=bool)
    confidences = []
    for m in range(REFERENCE_MODELS):
        if m % 2 == 0:                                   # pairs of complementary halves
            half = rng.permutation(len(x))[:len(x) // 2]
            inside[m, half] = True
        else:
            inside[m] = ~inside[m - 1]
        reference = _overfit(x[inside[m]], y[inside[m]], seed=100 + m)
        confidences.append(lira_confidence(_probs(reference, x), y))
    phi = lira_confidence(_probs(setting["target"], x), y)
    member = setting["member"]
    online = attack_report(lira(phi, np.array(confidences), inside, fixed_variance=True), member)
    offline = attack_report(lira(phi, np.array(confidences), inside, online=False, fixed_variance=True), member)
    # seeds 0-4: TPR at 1% FPR 0.09-0.29, AUC 0.79-0.83
    assert online.tpr_at_fpr[0.01] > 0.05
    assert online.auc > 0.72
    assert offline.auc > 0.65


def test_shadow_models_learn_to_tell_members(setting):
    x, y = setting["x"], setting["y"]
    shadow = slice(2 * MEMBERS + EXTRA_OUT, 2 * MEMBERS + EXTRA_OUT + 8 * MEMBERS)

    def train_shadow(xs, ys):
        model = _overfit(xs, ys, seed=len(xs))
        return lambda inputs: _probs(model, inputs)

    probs = _probs(setting["target"], x[setting["pool"]])
    scores = shadow_model_attack(train_shadow, x[shadow], y[shadow], probs, y[setting["pool"]], num_shadows=4)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert attack_report(scores, setting["member"]).auc > 0.58      # seeds 0-2: 0.63-0.69


def test_model_inversion_raises_the_target_probability(setting):
    target = setting["target"]
    result = model_inversion(target, target_class=3, input_shape=(64,), steps=60, lr=1.0, l2_weight=1e-3,
                             objective="log")
    assert result.start_probability[0] < 0.5
    assert result.probability[0] > 0.9
    assert result.probability[0] > result.start_probability[0] + 0.4
    assert result.reconstruction.shape == (1, 64)
    assert result.reconstruction.min() >= 0 and result.reconstruction.max() <= 1
    with no_grad():
        again = F.softmax(target(tensor(result.reconstruction)), axis=-1).data[0, 3]
    assert again == pytest.approx(result.probability[0], rel=1e-5)


def test_model_inversion_on_images_with_the_tv_prior(setting):
    dense = list(setting["target"])
    images = nn.Sequential(nn.Flatten(), *dense)
    start = np.full((2, 8, 8, 1), 0.3, dtype=np.float32)
    result = model_inversion(images, target_class=[0, 7], init=start, steps=80, lr=0.5, tv_weight=1e-2)
    assert (result.probability > result.start_probability + 0.4).all()
    rough = model_inversion(images, target_class=[0, 7], init=start, steps=80, lr=0.5)
    smoothness = [float(np.sum(np.diff(r.reconstruction, axis=1) ** 2)) for r in (result, rough)]
    assert smoothness[0] < smoothness[1]
    with pytest.raises(ShapeError, match="model_inversion: the TV prior"):
        model_inversion(setting["target"], 0, input_shape=(64,), tv_weight=1.0)


def test_readme_privacy_example_prints_what_it_says():
    from helpers import run_readme_section

    printed, names = run_readme_section("Privacy attacks: membership inference, model inversion, DP auditing")
    assert printed.splitlines() == ["True [0.001, 0.01]", "True", "2.94 True"]
    assert names["report"].auc > 0.6
