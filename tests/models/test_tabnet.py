"""TabNet: forward, sparsity term and every gradient against a torch re-implementation of the
reference fed the same weights (float64, ghost batch norm in training mode with virtual
batches dividing the batch, and in evaluation), running statistics, the parameter count by
hand, errors naming the model, learning on breast cancer, sparse masks and feature
importances on a task where few features matter."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from helpers import assert_close
from lamina.errors import ShapeError
from lamina.models import GhostBatchNorm, TabNet
from tabular_checks import (
    accuracy,
    compare_module,
    standardized_split,
    torch_entmax15,
    torch_sparsemax,
    train_classifier,
)


class TorchTabNet:
    """The reference forward on the lamina model's weights (``p``) and running statistics (copied)."""

    def __init__(self, model, p, training: bool):
        self.model, self.p, self.training = model, p, training
        self.running = {name: torch.tensor(np.array(value)) for name, value in model.named_buffers()}

    def gbn(self, prefix, x, virtual_batch_size, momentum):
        chunks = x.chunk(math.ceil(len(x) / virtual_batch_size), 0) if self.training else [x]
        return torch.cat([TF.batch_norm(c, self.running[prefix + ".running_mean"],
                                        self.running[prefix + ".running_var"], self.p[prefix + ".weight"],
                                        self.p[prefix + ".bias"], self.training, momentum, 1e-5) for c in chunks])

    def glu_layers(self, prefix, x, shared_count, independent_count):
        m, scale = self.model, math.sqrt(0.5)
        for i in range(shared_count + independent_count):
            weight = self.p[f"shared.{i}.weight"] if i < shared_count else self.p[f"{prefix}.layers.{i}.linear.weight"]
            h = self.gbn(f"{prefix}.layers.{i}.normalization", x @ weight, m.virtual_batch_size, m.momentum)
            out = h[:, :h.shape[1] // 2] * torch.sigmoid(h[:, h.shape[1] // 2:])
            x = out if i == 0 else (x + out) * scale
        return x

    def __call__(self, x):
        m = self.model
        select = torch_sparsemax if m.mask_type == "sparsemax" else torch_entmax15
        x = self.gbn("initial_normalization", x, len(x), 0.01)
        prior = torch.ones_like(x)
        a = self.glu_layers("initial_splitter", x, m.n_shared, m.n_independent)[:, m.n_d:]
        total, entropy = 0, 0
        for step in range(m.n_steps):
            pre = f"attentive_transformers.{step}"
            scores = self.gbn(pre + ".normalization", a @ self.p[pre + ".linear.weight"], m.virtual_batch_size,
                              m.momentum)
            mask = select(scores * prior)
            entropy = entropy + (-(mask * torch.log(mask + 1e-15)).sum(dim=1)).mean()
            prior = prior * (m.gamma - mask)
            h = self.glu_layers(f"feature_transformers.{step}", mask * x, m.n_shared, m.n_independent)
            total = total + torch.relu(h[:, :m.n_d])
            a = h[:, m.n_d:]
        self.entropy = entropy / m.n_steps
        return total @ self.p["final_mapping.weight"]


def _random_weights(model, seed):
    rng = np.random.default_rng(seed)
    for name, param in model.named_parameters():
        if "normalization" in name:                    # batch-norm scales near one, shifts near zero
            param.data[...] = (1.0 if name.endswith("weight") else 0.0) + rng.normal(0, 0.2, param.shape)
        else:
            param.data[...] = rng.normal(0, 0.7, param.shape)


@pytest.mark.parametrize("mask_type, n_shared, n_independent", [("sparsemax", 2, 2), ("entmax", 1, 1),
                                                                  ("sparsemax", 0, 2)])
def test_forward_and_gradients_match_torch_in_training(f64, mask_type, n_shared, n_independent):
    model = TabNet(5, 3, n_d=4, n_a=3, n_steps=2, gamma=1.5, n_independent=n_independent, n_shared=n_shared,
                   virtual_batch_size=4, momentum=0.1, mask_type=mask_type)
    _random_weights(model, 0)
    x = np.random.default_rng(1).normal(size=(12, 5))                    # three virtual batches of four
    compare_module(model, model, lambda p, t: TorchTabNet(model, p, training=True)(t), [x])
    weights = {name: torch.tensor(np.array(p.data)) for name, p in model.named_parameters()}
    theirs = TorchTabNet(model, weights, training=True)                  # running statistics copied before
    logits, entropy = model.forward_with_sparsity(x)
    assert_close(logits.numpy(), theirs(torch.tensor(x)).numpy(), 1e-10, "logits")
    assert_close(entropy.numpy(), theirs.entropy.numpy(), 1e-10, "sparsity term")
    for name, value in model.named_buffers():            # each virtual batch updated the running statistics
        assert_close(np.array(value), theirs.running[name].numpy(), 1e-10, name)


def test_sparsity_term_gradients_match_torch(f64):
    model = TabNet(4, 2, n_d=3, n_a=3, n_steps=2, virtual_batch_size=3, mask_type="entmax")
    _random_weights(model, 2)
    x = np.random.default_rng(3).normal(size=(6, 4))

    def torch_term(p, t):
        net = TorchTabNet(model, p, training=True)
        return net(t).sum() * 0 + net.entropy

    compare_module(model, lambda t: model.forward_with_sparsity(t)[1], torch_term, [x])


def test_evaluation_uses_running_statistics(f64):
    model = TabNet(5, 2, n_d=3, n_a=2, n_steps=2, virtual_batch_size=2)
    _random_weights(model, 4)
    x = np.random.default_rng(5).normal(size=(8, 5))
    model(x)                                                              # running statistics move off 0 and 1
    model.eval()
    compare_module(model, model, lambda p, t: TorchTabNet(model, p, training=False)(t), [x])
    single = model(x[:1]).numpy()
    assert_close(single, model(x).numpy()[:1], 1e-12, "a row alone in evaluation")


def test_ghost_batch_norm_normalises_each_virtual_batch(f64):
    norm = GhostBatchNorm(3, virtual_batch_size=4, momentum=0.5)
    x = np.random.default_rng(6).normal(2.0, 3.0, size=(8, 3))
    y = norm(x).numpy()
    for part in (y[:4], y[4:]):
        assert np.abs(part.mean(axis=0)).max() < 1e-12
        assert_close(part.var(axis=0), np.ones(3), 1e-4, "virtual batch variance")
    expected = 0.25 * x[:4].mean(axis=0) + 0.5 * x[4:].mean(axis=0)      # two updates from zero, momentum 0.5
    assert_close(np.array(norm.running_mean), expected, 1e-12, "running mean")


def test_parameter_count_by_hand():
    d, out, n_d, n_a, steps = 6, 2, 4, 3, 2
    model = TabNet(d, out, n_d=n_d, n_a=n_a, n_steps=steps, n_independent=1, n_shared=2)
    w = n_d + n_a
    shared = d * 2 * w + w * 2 * w
    bn = 2 * (2 * w)                                                       # each GLU layer's ghost batch norm
    transformer = (w * 2 * w) + 3 * bn                                    # one own weight, three GLU layers
    attentive = n_a * d + 2 * d
    expected = 2 * d + shared + (steps + 1) * transformer + steps * attentive + n_d * out
    assert model.num_parameters() == expected == 808


def test_errors_name_the_model():
    model = TabNet(4, 2)
    with pytest.raises(ShapeError, match=r"TabNet: numerical features must have shape \(batch, 4\), got \(3, 5\)"):
        model(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="TabNet: mask_type must be 'sparsemax' or 'entmax', got 'softmax'"):
        TabNet(4, 2, mask_type="softmax")
    with pytest.raises(ValueError, match="TabNet: n_independent"):
        TabNet(4, 2, n_independent=0, n_shared=0)


def test_learns_breast_cancer_with_sparse_masks():
    data = load_breast_cancer()
    x_train, y_train, x_test, y_test = standardized_split(data.data, data.target)
    baseline = LogisticRegression(max_iter=1000).fit(x_train, y_train).score(x_test, y_test)
    model = TabNet(30, 2, n_d=8, n_a=8, n_steps=3, virtual_batch_size=32)
    start = time.perf_counter()
    train_classifier(model, x_train, y_train, epochs=30, lr=2e-2, batch_size=64,
                     loss_extra=lambda m, xb: _with_sparsity(m, xb, 1e-3))
    seconds = time.perf_counter() - start
    score = accuracy(model, x_test, y_test)
    masks = model.explain(x_test)[1]
    zeros = float(np.mean([(m == 0).mean() for m in masks]))
    print(f"breast cancer: logistic {baseline:.3f}, TabNet {score:.3f} ({seconds:.1f} s), mask zeros {zeros:.2f}")
    assert score > baseline - 0.05
    assert zeros > 0.5


def _with_sparsity(model, x, weight):
    logits, entropy = model.forward_with_sparsity(x)
    return logits, entropy * weight


def test_feature_importances_find_the_informative_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 10))
    y = ((x[:, 2] + x[:, 7]) > 0).astype(int)                            # only features 2 and 7 matter
    model = TabNet(10, 2, n_d=8, n_a=8, n_steps=2, virtual_batch_size=32)
    train_classifier(model, x, y, epochs=20, lr=2e-2, batch_size=64,
                     loss_extra=lambda m, xb: _with_sparsity(m, xb, 1e-3))
    importances = model.feature_importances(x)
    print(f"importances {np.round(importances, 3)}; accuracy {accuracy(model, x, y):.3f}")
    assert_close(importances.sum(), 1.0, 1e-12, "importances sum")
    assert importances[[2, 7]].sum() > 0.6
    assert set(np.argsort(importances)[-2:]) == {2, 7}
