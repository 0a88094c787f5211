"""EL2N and GraNd scores (against NumPy and a per-sample torch autograd loop), forgetting
events on a hand-made correctness table, pruning and self-paced weights by hand, then EL2N on
digits with 10% flipped labels (finds the flipped labels; pruning the hardest 10% helps)."""

import contextlib
import io
import pathlib
import re

import numpy as np
import pytest
import torch

import lamina
from lamina import nn
from lamina.data import inject_label_noise, load_digits
from lamina.functional import cross_entropy
from lamina.train import (
    ForgettingTracker,
    SelfPacedSchedule,
    Trainer,
    el2n_from_probabilities,
    el2n_scores,
    grand_scores,
    prune_dataset,
    self_paced_weights,
)
from lamina.train.noisy_labels import fit_classifier, predict_proba


def test_el2n_equals_numpy_formula_on_hand_made_probabilities():
    p1 = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    p2 = np.array([[0.5, 0.4, 0.1], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1]])
    y = np.array([0, 1, 1])
    expected = np.mean([np.sqrt(((p - np.eye(3)[y]) ** 2).sum(1)) for p in (p1, p2)], axis=0)
    np.testing.assert_allclose(el2n_from_probabilities(np.stack([p1, p2]), y), expected)
    # first example, model 1: sqrt(0.3^2 + 0.2^2 + 0.1^2)
    assert el2n_from_probabilities(p1, y)[0] == pytest.approx(np.sqrt(0.14))
    # models giving log-probabilities as logits reproduce the probabilities through the softmax
    models = [lambda t, p=p: lamina.Tensor(np.log(p)[: len(t.data)]) for p in (p1, p2)]
    np.testing.assert_allclose(el2n_scores(models, np.zeros((3, 2)), y), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="labels must lie"):
        el2n_from_probabilities(p1, [0, 1, 3])


def _mlp(seed, dtype="float32"):
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Dense(5, "tanh"), nn.Dense(3))
    model.build((None, 4))
    if dtype == "float64":
        model.to(dtype)
    return model


def test_grand_equals_per_sample_torch_gradient_norms_float64():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((7, 4)), rng.integers(0, 3, 7)
    models = [_mlp(0, "float64"), _mlp(1, "float64")]
    expected = np.zeros(7)
    for model in models:
        (w1, b1), (w2, b2) = [[torch.tensor(np.asarray(p.data), requires_grad=True) for p in layer.parameters()]
                              for layer in model]
        for i in range(7):
            logits = torch.tanh(torch.tensor(x[i:i + 1]) @ w1 + b1) @ w2 + b2
            grads = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, torch.tensor(y[i:i + 1])),
                                        [w1, b1, w2, b2])
            expected[i] += torch.sqrt(sum((g ** 2).sum() for g in grads)).item() / len(models)
    np.testing.assert_allclose(grand_scores(models, None, x, y, batch_size=4), expected, rtol=1e-9)


CORRECT = np.array([  # looks (rows) x examples (columns)
    [0, 1, 1, 0, 1],
    [1, 0, 1, 0, 1],
    [0, 1, 1, 0, 0],
    [1, 0, 1, 0, 1],
], dtype=bool)


def test_forgetting_counts_equal_hand_counts():
    tracker = ForgettingTracker()
    for row in CORRECT:
        tracker.update(row)
    # ex0: 0 1 0 1 -> one event; ex1: 1 0 1 0 -> two; ex2 always right; ex3 never; ex4: 1 1 0 1 -> one
    np.testing.assert_array_equal(tracker.forgetting_counts, [1, 2, 0, 0, 1])
    np.testing.assert_array_equal(tracker.unforgettable, [False, False, True, False, False])
    np.testing.assert_array_equal(tracker.never_learned, [False, False, False, True, False])
    np.testing.assert_array_equal(tracker.scores(), [1, 2, 0, np.inf, 1])
    with pytest.raises(ValueError, match="expected correctness of shape"):
        tracker.update([True, False])


def test_forgetting_tracker_as_trainer_callback_looks_each_epoch():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 4)).astype(np.float32), rng.integers(0, 3, 40)
    model = _mlp(0)
    tracker = ForgettingTracker(x, y)
    trainer = Trainer(model, cross_entropy, lamina.optim.Adam(model, lr=0.05), callbacks=[tracker], verbose=0)
    trainer.fit((x, y), epochs=3, batch_size=10, seed=0)
    assert tracker.looks == 3
    assert tracker.learned.any()
    np.testing.assert_array_equal(tracker.previous, predict_proba(model, x).argmax(1) == y)


def test_prune_dataset_keeps_the_right_indices():
    scores = [0.5, 0.9, 0.1, 0.7, 0.3]
    np.testing.assert_array_equal(prune_dataset(scores, 0.4, keep="hardest"), [1, 3])
    np.testing.assert_array_equal(prune_dataset(scores, 0.6, keep="easiest"), [0, 2, 4])
    kept = prune_dataset(scores, 0.6, keep="random", seed=3)
    assert len(kept) == 3 and len(set(kept)) == 3
    np.testing.assert_array_equal(kept, np.sort(np.random.default_rng(3).permutation(5)[:3]))
    assert len(prune_dataset(scores, 0.0)) == 0
    with pytest.raises(ValueError, match="keep must be"):
        prune_dataset(scores, 0.5, keep="middle")


def test_self_paced_weights_equal_their_formulas():
    losses = np.array([0.1, 0.5, 0.9, 1.5, 3.0])
    np.testing.assert_array_equal(self_paced_weights(losses, 1.0, "hard"), [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(self_paced_weights([0.95, 1.0], 1.0, "hard"), [1, 0])  # strict: l < lambda
    np.testing.assert_allclose(self_paced_weights(losses, 1.0, "linear"), [0.9, 0.5, 0.1, 0, 0])
    # lambda = 2, lambda_2 = 0.5: zeta = 2 * 0.5 / 1.5 = 2 / 3
    zeta = 2 / 3
    np.testing.assert_allclose(self_paced_weights(losses, 2.0, "mixture", lower=0.5),
                               [1, 1, zeta * (1 / 0.9 - 0.5), zeta * (1 / 1.5 - 0.5), 0])
    schedule = SelfPacedSchedule(0.5, growth=2.0, maximum=3.0)
    assert [schedule.threshold(t) for t in range(4)] == [0.5, 1.0, 2.0, 3.0]
    np.testing.assert_array_equal(schedule.weights(losses, 1), [1, 1, 1, 0, 0])
    with pytest.raises(ValueError, match="lower < threshold"):
        self_paced_weights(losses, 1.0, "mixture", lower=1.5)


def _digit_mlp(seed):
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Dense(32, "relu"), nn.Dense(10))
    model.build((None, 64))
    return model


@pytest.mark.parametrize("seed", [0, 1])
def test_el2n_finds_flipped_labels_and_pruning_the_hardest_10_percent_helps(seed):
    x, y = load_digits(size=8)
    x = x.reshape(len(x), 64).astype(np.float32) / 255
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[500:], order[:500]
    noisy = inject_label_noise(y[train], 0.1, num_classes=10, seed=seed)
    flipped = noisy != y[train]
    early = [fit_classifier(_digit_mlp(100 * seed + k), x[train], noisy, epochs=3, seed=k) for k in range(3)]
    scores = el2n_scores(early, x[train], noisy)
    # chance: 10% of the top decile would be flipped (measured: 0.94, 0.93, 0.95 for seeds 0-2)
    assert flipped[prune_dataset(scores, 0.1, keep="hardest")].mean() > 0.6

    def test_accuracy(rows):
        model = fit_classifier(_digit_mlp(7 + seed), x[train][rows], noisy[rows], epochs=60, seed=seed)
        return float(np.mean(predict_proba(model, x[test]).argmax(1) == y[test]))

    everything = test_accuracy(np.arange(len(train)))
    pruned = test_accuracy(prune_dataset(scores, 0.9, keep="easiest"))
    # measured: 0.914 -> 0.950, 0.904 -> 0.944, 0.902 -> 0.950 for seeds 0-2
    assert pruned > everything + 0.015, (everything, pruned)


def test_readme_example_runs():
    readme = pathlib.Path(__file__).resolve().parents[2] / "README.md"
    section = readme.read_text().split("### Data pruning, forgetting and self-paced learning", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(readme), "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[0] == "kept [1 3]", lines
    assert lines[1] == "forgetting events [1 0 0]", lines
    assert lines[2] == "weights [1. 1. 0.]", lines
