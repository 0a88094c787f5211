"""lamina.train.adversarial_training: the TRADES and MART costs and their gradients against
torch rewrites of the published code (float64) and gradient checks; on the 8x8 digits,
adversarially trained MLPs (fast FGSM, PGD, TRADES, MART) keep more accuracy under PGD than
a standard one (free training's replays included), an IBP-trained one is certified where the standard one is not, and a
Gaussian-noise-trained one gets certified radii from randomized smoothing."""

import functools

import numpy as np
import pytest
import torch
from tests.helpers import check_gradients, compare_with_torch, randn

import lamina
from lamina import functional as F
from lamina import nn, optim
from lamina.analysis import SmoothedClassifier, certified_accuracy, pgd, robust_accuracy
from lamina.data import load_digits, train_val_test_split
from lamina.train import (
    AdversarialTrainer,
    FastAdversarialTraining,
    FreeAdversarialTraining,
    GaussianAugmentation,
    IBPTraining,
    MARTLoss,
    PGDAdversarialTraining,
    TRADESLoss,
    mart_loss,
    trades_loss,
)

LABELS = np.array([0, 2, 1, 2, 3])


def torch_trades(clean, adversarial, beta=6.0):
    natural = torch.nn.functional.cross_entropy(clean, torch.tensor(LABELS))
    robust = torch.nn.functional.kl_div(torch.log_softmax(adversarial, 1), torch.softmax(clean, 1),
                                        reduction="sum") / len(clean)
    return natural + beta * robust


def torch_mart(clean, adversarial, beta=6.0):
    y = torch.tensor(LABELS)
    adversarial_p = torch.softmax(adversarial, 1)
    top_two = torch.argsort(adversarial_p, 1)[:, -2:]
    rival = torch.where(top_two[:, -1] == y, top_two[:, -2], top_two[:, -1])
    boosted = (torch.nn.functional.cross_entropy(adversarial, y)
               + torch.nn.functional.nll_loss(torch.log(1.0001 - adversarial_p + 1e-12), rival))
    clean_p = torch.softmax(clean, 1)
    true_p = clean_p.gather(1, y[:, None]).squeeze(1)
    kl = torch.nn.functional.kl_div(torch.log(adversarial_p + 1e-12), clean_p, reduction="none").sum(1)
    return boosted + beta * (kl * (1.0000001 - true_p)).mean()


@pytest.mark.parametrize("ours,theirs", [(trades_loss, torch_trades), (mart_loss, torch_mart)])
def test_costs_and_gradients_equal_torch_rewrites(ours, theirs):
    clean, adversarial = randn(5, 4, seed=1), randn(5, 4, seed=2)
    compare_with_torch(lambda a, b: ours(a, b, LABELS), theirs, clean, adversarial, dtype=np.float64)
    compare_with_torch(lambda a, b: ours(a, b, LABELS, beta=1.5), lambda a, b: theirs(a, b, 1.5), clean, adversarial,
                       dtype=np.float64)
    assert check_gradients(lambda a, b: ours(a, b, LABELS), clean, adversarial)


@pytest.fixture(scope="module")
def digits():
    """The 8x8 digits as 64 features in [0, 1]: 75% to train, 25% to test."""
    lamina.set_default_dtype(np.float32)
    x, y = load_digits(size=8)
    x = (x.astype(np.float32) / 255).reshape(len(x), -1)
    (x_train, y_train), _, (x_test, y_test) = train_val_test_split(x, y, val=0.0, test=0.25, seed=0)
    return x_train, y_train, x_test, y_test


def standard_objective(model, x, y):
    logits = model(lamina.tensor(x))
    return F.categorical_cross_entropy(logits, y, from_logits=True), logits


def fit(digits, objective, epochs=15):
    x_train, y_train, _, _ = digits
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(64, activation="relu"), nn.Dense(10))
    model.build((None, 64))
    trainer = AdversarialTrainer(model, objective, optim.Adam(model, lr=3e-3), verbose=0)
    trainer.fit((x_train, y_train), epochs=epochs, batch_size=64, seed=0)
    model.eval()
    return model


def test_adversarial_training_resists_pgd_better_than_standard_training(digits):
    _, _, x_test, y_test = digits
    epsilon = 0.1
    attack = functools.partial(pgd, epsilon=epsilon, steps=10, seed=0)
    report = {}
    for name, objective, epochs in [("standard", standard_objective, 15),
                                    ("fast", FastAdversarialTraining(epsilon, seed=0), 15),
                                    ("free", FreeAdversarialTraining(epsilon, replays=4), 8),
                                    ("pgd", PGDAdversarialTraining(epsilon, steps=5, seed=0), 15),
                                    ("trades", TRADESLoss(epsilon=epsilon, step_size=0.03, steps=5, seed=0), 15),
                                    ("mart", MARTLoss(epsilon=epsilon, step_size=0.03, steps=5, seed=0), 15)]:
        model = fit(digits, objective, epochs)
        report[name] = (robust_accuracy(model, x_test, y_test, lambda m, x, y: x),
                        robust_accuracy(model, x_test, y_test, attack))
    print("clean and PGD(eps=0.1) accuracy:", report)
    assert all(clean >= 0.88 for clean, _ in report.values()), report
    for name in ("fast", "free", "pgd", "trades", "mart"):
        assert report[name][1] >= report["standard"][1] + 0.12, report


def test_ibp_training_certifies_where_standard_training_does_not(digits):
    _, _, x_test, y_test = digits
    standard = fit(digits, standard_objective)
    ibp = fit(digits, IBPTraining(0.1, kappa=0.5, warmup=30, ramp=200))
    report = {name: (certified_accuracy(model, x_test, y_test, 0.1),
                     robust_accuracy(model, x_test, y_test, lambda m, x, y: x),
                     certified_accuracy(model, x_test, y_test, 0.1, method="crown"))
              for name, model in (("standard", standard), ("ibp", ibp))}
    print("certified accuracy at eps=0.1 by IBP, clean accuracy, certified by CROWN:", report)
    assert report["standard"][0] <= 0.02 and report["ibp"][0] >= 0.3 and report["ibp"][1] >= 0.85, report
    assert all(crown >= ibp for ibp, _, crown in report.values())
    # sound: no certified sample falls to PGD
    attack = functools.partial(pgd, epsilon=0.1, steps=10, seed=0)
    assert robust_accuracy(ibp, x_test, y_test, attack) >= report["ibp"][2]


def test_ibp_schedule_ramps_epsilon_and_kappa():
    schedule = IBPTraining(0.2, kappa=0.5, warmup=10, ramp=20)
    assert schedule.schedule(0) == (0.0, 1.0) and schedule.schedule(10) == (0.0, 1.0)
    eps, kappa = schedule.schedule(20)
    assert eps == pytest.approx(0.1) and kappa == pytest.approx(0.75)
    assert schedule.schedule(30) == schedule.schedule(100) == (0.2, 0.5)


def test_gaussian_augmentation_trains_a_base_that_smoothing_certifies(digits):
    _, _, x_test, y_test = digits
    model = fit(digits, GaussianAugmentation(0.25, seed=0), epochs=10)
    classes, radii = SmoothedClassifier(model, sigma=0.25, seed=0).certify(x_test[:30], n0=20, n=300, alpha=0.01)
    right = classes == y_test[:30]
    print(f"smoothed: {right.mean():.0%} certified right, median radius {np.median(radii[right]):.2f}")
    assert right.mean() >= 0.6 and np.median(radii[right]) >= 0.3


def test_trades_attack_stays_in_the_ball_and_raises_the_kl(digits):
    x_train, y_train, _, _ = digits
    model = fit(digits, standard_objective, epochs=2)
    objective = TRADESLoss(epsilon=0.1, step_size=0.03, steps=5, seed=0)
    x = x_train[:50]
    adversarial = objective.attack(model, x, y_train[:50])
    assert np.abs(adversarial - x).max() <= 0.1 + 1e-6 and adversarial.min() >= 0 and adversarial.max() <= 1
    with lamina.no_grad():
        p = F.softmax(model(lamina.tensor(x)), axis=-1).numpy()
        q = F.softmax(model(lamina.tensor(adversarial)), axis=-1).numpy()
    assert (p * np.log(p / q)).sum(axis=1).mean() > 0.05


def test_objectives_reject_bad_settings(digits):
    x_train, y_train, _, _ = digits
    with pytest.raises(ValueError, match="PGDAdversarialTraining: epsilon must be a finite number >= 0"):
        PGDAdversarialTraining(-0.1)
    with pytest.raises(ValueError, match="PGDAdversarialTraining: norm must be 'linf' or 'l2', got 'l3'"):
        PGDAdversarialTraining(0.1, norm="l3")
    with pytest.raises(ValueError, match="TRADESLoss: clip must have low < high"):
        TRADESLoss(clip=(1.0, 0.0))
    with pytest.raises(ValueError, match="IBPTraining: kappa must lie in \\[0, 1\\]"):
        IBPTraining(0.1, kappa=2)
    with pytest.raises(TypeError, match="AdversarialTrainer: objective must be callable"):
        AdversarialTrainer(nn.Dense(2), 3, optim.SGD([lamina.tensor([1.0], requires_grad=True)], lr=0.1))
    model = nn.Sequential(nn.Dense(10))
    trainer = AdversarialTrainer(model, FastAdversarialTraining(0.1), optim.Adam(model, lr=1e-3), verbose=0)
    with pytest.raises(ValueError, match="cannot accumulate gradients"):
        AdversarialTrainer(model, FreeAdversarialTraining(0.1), optim.Adam(model, lr=1e-3), accumulate=2)
    with pytest.raises(ValueError, match="takes no sample or class weights"):
        trainer.fit((x_train[:20], y_train[:20]), sample_weight=np.linspace(0.1, 1, 20), epochs=1)


def test_free_training_replays_each_batch_and_carries_the_perturbation(digits):
    x_train, y_train, _, _ = digits
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(10))
    model.build((None, 64))
    objective = FreeAdversarialTraining(0.05, replays=3)
    optimizer = optim.SGD(model, lr=0.1)
    steps = []
    original_step = optimizer.step

    def counting_step(*args, **kwargs):
        steps.append(1)
        return original_step(*args, **kwargs)
    optimizer.step = counting_step
    trainer = AdversarialTrainer(model, objective, optimizer, verbose=0)
    trainer.fit((x_train[:64], y_train[:64]), epochs=2, batch_size=32, shuffle=False)
    assert len(steps) == 2 * 2 * 3                       # epochs x batches x replays
    perturbation = objective.perturbation
    assert perturbation.shape == (32, 64) and np.abs(perturbation).max() == pytest.approx(0.05)
    magnitude = np.abs(perturbation)
    assert (np.isclose(magnitude, 0) | np.isclose(magnitude, 0.05)).all()  # signed steps of eps, clipped
