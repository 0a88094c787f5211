"""train_continual and the GEM metrics: ACC, BWT and FWT against their formulas on a
hand-made accuracy matrix; forgetting on permuted and split digits, less with EWC and with
experience replay than with plain fine-tuning; task-incremental masking; synaptic
intelligence driven by a Trainer through ContinualCallback; the README example."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import nn
from lamina.data import permuted_tasks, split_tasks
from lamina.data.datasets import load_digits
from lamina.errors import ShapeError
from lamina.optim import SGD
from lamina.train import Trainer
from lamina.train.continual import (
    EWC,
    ContinualCallback,
    ContinualResult,
    ExperienceReplay,
    SynapticIntelligence,
    average_accuracy,
    backward_transfer,
    evaluate_tasks,
    forward_transfer,
    penalized_loss,
    train_continual,
)


def test_metrics_follow_their_formulas_on_a_hand_made_matrix():
    r = np.array([[0.9, 0.2, 0.1, 0.0], [0.7, 0.8, 0.3, 0.2], [0.6, 0.5, 0.95, 0.4], [0.5, 0.45, 0.9, 0.85]])
    b = np.array([0.1, 0.15, 0.2, 0.25])
    t = len(r)
    assert average_accuracy(r) == pytest.approx(sum(r[t - 1, j] for j in range(t)) / t)
    assert backward_transfer(r) == pytest.approx(sum(r[t - 1, j] - r[j, j] for j in range(t - 1)) / (t - 1))
    assert forward_transfer(r, b) == pytest.approx(sum(r[j - 1, j] - b[j] for j in range(1, t)) / (t - 1))
    result = ContinualResult(r, b)
    assert result.backward_transfer < 0 < result.forward_transfer
    assert backward_transfer(r[:1, :1]) == forward_transfer(r[:1, :1], b[:1]) == 0.0
    with pytest.raises(ShapeError, match="square"):
        average_accuracy(r[:2])
    with pytest.raises(ShapeError, match="baseline"):
        forward_transfer(r, b[:2])


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(8)
    x = (x.reshape(len(x), -1) / 255.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    return (x[order[:1000]], y[order[:1000]]), (x[order[1000:1500]], y[order[1000:1500]])


def mlp(seed=0):
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Dense(64, activation="relu"), nn.Dense(10))
    model.build((None, 64))
    return model


def run(tasks, tests, strategies=lambda model: [], **options):
    model = mlp()
    return train_continual(model, tasks, strategies(model), tests, optimizer=lambda m: SGD(m, lr=0.05),
                           epochs=4, **options)


def test_ewc_forgets_less_than_fine_tuning_on_permuted_digits(digits):
    (x, y), (xt, yt) = digits
    tasks, tests = permuted_tasks(x, y, 3, seed=0), permuted_tasks(xt, yt, 3, seed=0)
    plain = run(tasks, tests)
    ewc = run(tasks, tests, lambda model: [EWC(model, lambda_=30.0, samples=300)])
    print(f"permuted digits: fine-tuning ACC {plain.average_accuracy:.3f} BWT {plain.backward_transfer:.3f}; "
          f"EWC ACC {ewc.average_accuracy:.3f} BWT {ewc.backward_transfer:.3f}")
    assert np.diag(plain.accuracy).min() > 0.85                     # every task is learnt
    assert plain.backward_transfer < -0.15                           # and fine-tuning forgets
    assert ewc.average_accuracy > plain.average_accuracy + 0.03
    assert ewc.backward_transfer > plain.backward_transfer + 0.1
    assert abs(plain.forward_transfer) < 0.2                         # a new permutation gains little


def test_replay_forgets_less_than_fine_tuning_on_class_incremental_split_digits(digits):
    (x, y), (xt, yt) = digits
    tasks, tests = split_tasks(x, y, 2), split_tasks(xt, yt, 2)
    plain = run(tasks, tests)
    replay = run(tasks, tests, lambda model: [ExperienceReplay(capacity=200, replay_size=32)])
    print(f"split digits (class-incremental): fine-tuning ACC {plain.average_accuracy:.3f} "
          f"BWT {plain.backward_transfer:.3f}; replay ACC {replay.average_accuracy:.3f} "
          f"BWT {replay.backward_transfer:.3f}")
    assert plain.average_accuracy < 0.3                              # only the last task's classes remain
    assert replay.average_accuracy > plain.average_accuracy + 0.25
    assert replay.backward_transfer > plain.backward_transfer + 0.25


def test_task_incremental_masking_keeps_the_old_tasks(digits):
    (x, y), (xt, yt) = digits
    tasks, tests = split_tasks(x, y, 2), split_tasks(xt, yt, 2)
    result = run(tasks, tests, task_incremental=True)
    assert result.average_accuracy > 0.9
    model = mlp()
    chance = evaluate_tasks(model, tests, task_incremental=True)
    assert np.all(chance <= 1.0) and chance.mean() < 0.8              # an untrained model guesses
    np.testing.assert_allclose(result.baseline, chance)


def test_si_through_a_trainer_with_continual_callback(digits):
    (x, y), _ = digits
    tasks = permuted_tasks(x[:200], y[:200], 2, seed=1)
    model = mlp()
    si = SynapticIntelligence(model, c=0.1, xi=0.1)
    cross_entropy = lambda out, labels: F.categorical_cross_entropy(out, labels, from_logits=True)  # noqa: E731
    trainer = Trainer(model, loss=penalized_loss(cross_entropy, si), optimizer=SGD(model, lr=0.05),
                      callbacks=[ContinualCallback(si)], verbose=0)
    for t, (tx, ty) in enumerate(tasks):
        si.before_task(t, tx, ty)
        before = {n: p.data.copy() for n, p in model.named_parameters()}
        trainer.fit((tx, ty), epochs=1, batch_size=50, shuffle=False)
        si.after_task(t, tx, ty)
        assert any(not np.array_equal(before[n], p.data) for n, p in model.named_parameters())
    assert set(si.importance) == {n for n, _ in model.named_parameters()}
    assert sum(float(v.sum()) for v in si.importance.values()) > 0  # the loss fell along the path
    assert si.penalty().item() == pytest.approx(0.0, abs=1e-12)     # at the anchor


def test_bad_arguments_are_named(digits):
    (x, y), _ = digits
    model = mlp()
    with pytest.raises(ValueError, match="epochs"):
        train_continual(model, [(x, y)], epochs=0)
    with pytest.raises(ValueError, match="test tasks"):
        train_continual(model, [(x, y)], test_tasks=[(x, y), (x, y)])
    with pytest.raises(ShapeError, match="task 0"):
        train_continual(model, [(x, y[:5])])
    with pytest.raises(TypeError, match="optimizer"):
        train_continual(model, [(x[:10], y[:10])], optimizer="sgd")


def test_readme_example_runs_and_ewc_and_replay_help():
    readme = pathlib.Path(__file__).resolve().parents[2] / "README.md"
    section = readme.read_text().split("### Continual learning and domain adaptation", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    names: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, str(readme), "exec"), names)
    results = names["results"]
    assert results["permuted, EWC"].average_accuracy > results["permuted, fine-tuning"].average_accuracy + 0.03
    assert results["split, replay"].average_accuracy > results["split, fine-tuning"].average_accuracy + 0.25
