"""lamina.analysis.adversarial: FGSM against torch's gradient sign, and both attacks on a
classifier of scikit-learn's digits trained in the test."""

import numpy as np
import pytest
import torch

import lamina
from lamina import functional as F
from lamina import nn, optim
from lamina.analysis.adversarial import fgsm, targeted_adversarial
from lamina.data import load_digits, train_val_test_split


def accuracy(model, x, y) -> float:
    with lamina.no_grad():
        return float((model(lamina.tensor(x)).numpy().argmax(axis=1) == y).mean())


@pytest.fixture(scope="module")
def digits_classifier():
    """An MLP trained on 75% of the 8x8 digits (pixels in [0, 1]), and the other 25%."""
    lamina.manual_seed(0)
    x, y = load_digits(size=8)
    x = x.astype(np.float32) / 255
    (x_train, y_train), _, (x_test, y_test) = train_val_test_split(x, y, val=0.0, test=0.25, seed=0)
    model = nn.Sequential(nn.Flatten(), nn.Dense(64, activation="relu"), nn.Dense(10))
    model.build((None, 8, 8, 1))
    opt = optim.Adam(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    for _ in range(15):
        order = rng.permutation(len(x_train))
        for start in range(0, len(x_train), 64):
            batch = order[start:start + 64]
            cost = F.categorical_cross_entropy(model(lamina.tensor(x_train[batch])), y_train[batch],
                                               from_logits=True)
            opt.zero_grad()
            cost.backward()
            opt.step()
    model.eval()
    assert accuracy(model, x_test, y_test) >= 0.9
    return model, x_test, y_test


def test_fgsm_breaks_the_classifier_where_random_signs_of_the_same_size_do_not(digits_classifier):
    model, x, y = digits_classifier
    clean = accuracy(model, x, y)
    epsilon = 0.15
    adversarial = fgsm(model, x, y, epsilon)
    signs = np.random.default_rng(1).choice([-1.0, 1.0], x.shape)
    noisy = np.clip(x + epsilon * signs, 0, 1).astype(np.float32)

    assert adversarial.shape == x.shape and adversarial.dtype == np.float32
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert np.abs(adversarial - x).max() <= epsilon + 1e-6
    assert accuracy(model, adversarial, y) <= clean - 0.5
    assert accuracy(model, noisy, y) >= clean - 0.08
    assert np.array_equal(fgsm(model, x, y, 0.0), x)


def test_targeted_attack_reaches_the_chosen_class_within_the_bound(digits_classifier):
    model, x, y = digits_classifier
    x, y = x[:200], y[:200]
    target = (y + 1) % 10  # never the true class
    epsilon = 0.25  # a quarter of the pixel range, in the L-inf norm
    images, reached = targeted_adversarial(model, x, target, steps=40, epsilon=epsilon)

    assert images.shape == x.shape and reached.shape == (200,)
    assert images.min() >= 0 and images.max() <= 1
    assert np.abs(images - x).max() <= epsilon + 1e-6
    with lamina.no_grad():
        predicted = model(lamina.tensor(images)).numpy().argmax(axis=1)
    assert np.array_equal(reached, predicted == target)
    assert reached.mean() >= 0.9, f"reached the target on {reached.mean():.1%}"
    # a tighter ball leaves fewer samples able to cross to the target class
    assert targeted_adversarial(model, x, target, steps=40, epsilon=0.05).reached.mean() < reached.mean() - 0.3


def test_attacks_leave_the_model_as_they_found_it(digits_classifier):
    model, x, y = digits_classifier
    model.train()
    try:
        weights = [p.numpy().copy() for p in model.parameters()]
        grads = [p.grad.copy() for p in model.parameters()]  # from the last training step
        fgsm(model, x[:8], y[:8], 0.1)
        targeted_adversarial(model, x[:8], 3, steps=3, epsilon=0.1)
        assert all(m.training for m in model.modules())
        assert all(np.array_equal(p.grad, g) for p, g in zip(model.parameters(), grads))
        assert all(np.array_equal(p.numpy(), w) for p, w in zip(model.parameters(), weights))
    finally:
        model.eval()


def test_fgsm_steps_along_the_sign_of_torchs_cost_gradient():
    lamina.set_default_dtype(np.float64)
    model = nn.Sequential(nn.Conv2D(3, 3), nn.ReLU(), nn.Flatten(), nn.Dense(4))
    model.build((None, 6, 6, 2))
    conv, dense = model[0], model[3]
    rng = np.random.default_rng(2)
    x = rng.uniform(0.3, 0.7, (5, 6, 6, 2))
    labels = np.array([0, 1, 2, 3, 1])

    inputs = torch.tensor(x, requires_grad=True)
    h = torch.nn.functional.conv2d(inputs.permute(0, 3, 1, 2), torch.tensor(conv.weight.numpy().transpose(0, 3, 1, 2)),
                                   torch.tensor(conv.bias.numpy()))
    logits = torch.nn.functional.linear(torch.relu(h).permute(0, 2, 3, 1).flatten(1),
                                        torch.tensor(dense.weight.numpy().T), torch.tensor(dense.bias.numpy()))
    torch.nn.functional.cross_entropy(logits, torch.tensor(labels)).backward()
    gradient = inputs.grad.numpy()

    step = fgsm(model, x, labels, 0.05, clip=None) - x
    moved = gradient != 0
    assert moved.mean() > 0.5
    np.testing.assert_allclose(step[moved], 0.05 * np.sign(gradient[moved]), rtol=1e-12)
    clipped = fgsm(model, x, labels, 0.5)  # 0.3 - 0.5 and 0.7 + 0.5 leave [0, 1]
    np.testing.assert_array_equal(clipped[moved], np.clip(x + 0.5 * np.sign(gradient), 0, 1)[moved])


def test_bad_arguments_are_named():
    model = nn.Sequential(nn.Flatten(), nn.Dense(3))
    x = np.full((2, 4, 4, 1), 0.5, np.float32)
    for epsilon in (-0.1, float("nan"), True, "0.1"):
        with pytest.raises(ValueError, match="fgsm: epsilon must be a finite number >= 0"):
            fgsm(model, x, [0, 1], epsilon)
    with pytest.raises(ValueError, match=r"fgsm: target classes must lie in \[0, 3\)"):
        fgsm(model, x, [0, 3], 0.1)
    with pytest.raises(ValueError, match="fgsm: labels are required"):
        fgsm(model, x, None, 0.1)
    with pytest.raises(ValueError, match="fgsm: clip must have low < high"):
        fgsm(model, x, [0, 1], 0.1, clip=(1, 0))
    with pytest.raises(ValueError, match="targeted_adversarial: epsilon must be a finite number > 0"):
        targeted_adversarial(model, x, 1, epsilon=0)
    with pytest.raises(ValueError, match=r"targeted_adversarial: target classes must lie in \[0, 3\).*5"):
        targeted_adversarial(model, x, 5)
    with pytest.raises(ValueError, match="targeted_adversarial: target is required"):
        targeted_adversarial(model, x, None)
    with pytest.raises(ValueError, match="targeted_adversarial: steps"):
        targeted_adversarial(model, x, 1, steps=0)
    with pytest.raises(ValueError, match="targeted_adversarial: step_size"):
        targeted_adversarial(model, x, 1, step_size=-1.0)
