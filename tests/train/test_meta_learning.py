"""Meta-learning learns: MAML on the sinusoid tasks beats a model pretrained on all tasks jointly,
and on 5-way 1-shot digits (held-out images) ProtoNets and MAML are far above chance."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import nn
from lamina.data import FewShotTasks, SinusoidTasks, load_digits
from lamina.optim import Adam
from lamina.train.meta import MAML

INNER_LR = 0.01          # the MAML paper's step for the sinusoids


def _sinusoid_net():
    layers = [nn.Dense(40, activation="relu", kernel_init="glorot_uniform"),
              nn.Dense(40, activation="relu", kernel_init="glorot_uniform"), nn.Dense(1, kernel_init="glorot_uniform")]
    model = nn.Sequential(*layers)
    model.build((None, 1))
    return model


def _query_loss_after_one_step(model, tasks, lr):
    wrapped, total = MAML(model, lr=lr), 0.0
    for (xs, ys), (xq, yq) in tasks:
        learner = wrapped.clone()
        learner.adapt(F.mean_squared_error(learner(xs), ys))
        total += F.mean_squared_error(learner(xq), yq).item()
    return total / len(tasks)


def test_maml_beats_joint_pretraining_on_sinusoids():
    iterations, batch = 1200, 2
    train = SinusoidTasks(num_tasks=iterations * batch, seed=0)
    test = SinusoidTasks(q_queries=50, num_tasks=50, seed=1)

    maml = MAML(_sinusoid_net(), lr=INNER_LR)
    opt = Adam(maml.parameters(), lr=3e-3)
    for i in range(iterations):
        opt.zero_grad()
        for (xs, ys), (xq, yq) in (train[i * batch + b] for b in range(batch)):
            learner = maml.clone()
            learner.adapt(F.mean_squared_error(learner(xs), ys))
            (F.mean_squared_error(learner(xq), yq) / batch).backward()
        opt.step()

    joint = _sinusoid_net()                       # one regression on every task's points
    opt = Adam(joint.parameters(), lr=5e-3)
    for i in range(iterations):
        opt.zero_grad()
        for (xs, ys), (xq, yq) in (train[i * batch + b] for b in range(batch)):
            (F.mean_squared_error(joint(np.concatenate([xs, xq])), np.concatenate([ys, yq])) / batch).backward()
        opt.step()

    maml_loss = _query_loss_after_one_step(maml.module, test, INNER_LR)
    # the baseline fine-tuned with its best step size, or not at all
    with lamina.no_grad():
        joint_untuned = np.mean([F.mean_squared_error(joint(xq), yq).item() for _, (xq, yq) in test])
    joint_loss = min([joint_untuned] + [_query_loss_after_one_step(joint, test, lr) for lr in (1e-3, 1e-2, 3e-2)])
    assert maml_loss < 0.7 * joint_loss, (maml_loss, joint_loss)


@pytest.fixture(scope="module")
def digits_split():
    """Digits as 64 features in [0, 1]; half the images for meta-training, half held out."""
    x, y = load_digits(size=8)
    x = x.reshape(len(x), -1).astype(np.float32) / 255.0
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:len(x) // 2], order[len(x) // 2:]
    return (x[train], y[train]), (x[test], y[test])


def test_prototypical_networks_on_5_way_1_shot_digits(digits_split):
    train_data, test_data = digits_split
    train = FewShotTasks(train_data, n_way=5, k_shot=1, q_queries=5, num_tasks=300, seed=0)
    test = FewShotTasks(test_data, n_way=5, k_shot=1, q_queries=5, num_tasks=100, seed=1)
    embed = nn.Sequential(nn.Dense(64, activation="relu"), nn.Dense(32))
    embed.build((None, 64))

    def accuracy():
        with lamina.no_grad():
            hits = [F.prototypical_logits(embed(xs), ys, embed(xq)).numpy().argmax(axis=1) == yq
                    for (xs, ys), (xq, yq) in test]
        return np.mean(hits)

    before = accuracy()
    opt = Adam(embed.parameters(), lr=1e-3)
    for (xs, ys), (xq, yq) in train:
        opt.zero_grad()
        F.prototypical_loss(embed(xs), ys, embed(xq), yq).backward()
        opt.step()
    after = accuracy()
    assert after > 0.8 and after > before + 0.15, (before, after)          # chance: 0.2


def test_maml_on_5_way_1_shot_digits(digits_split):
    train_data, test_data = digits_split
    iterations, batch, steps = 200, 4, 2
    train = FewShotTasks(train_data, n_way=5, k_shot=1, q_queries=5, num_tasks=iterations * batch, seed=0)
    test = FewShotTasks(test_data, n_way=5, k_shot=1, q_queries=5, num_tasks=100, seed=1)
    net = nn.Sequential(nn.Dense(32, activation="relu"), nn.Dense(5))
    net.build((None, 64))
    maml = MAML(net, lr=1.0)

    def loss(learner, x, y):
        return F.categorical_cross_entropy(learner(x), y, from_logits=True)

    def adapted(x, y):
        learner = maml.clone()
        return learner.adapt(lambda: loss(learner, x, y), steps=steps)

    def accuracy():
        return np.mean([adapted(xs, ys)(xq).numpy().argmax(axis=1) == yq for (xs, ys), (xq, yq) in test])

    before = accuracy()
    opt = Adam(maml.parameters(), lr=3e-3)
    for i in range(iterations):
        opt.zero_grad()
        for (xs, ys), (xq, yq) in (train[i * batch + b] for b in range(batch)):
            (loss(adapted(xs, ys), xq, yq) / batch).backward()
        opt.step()
    after = accuracy()
    assert after > 0.6 and after > before + 0.2, (before, after)            # chance: 0.2
