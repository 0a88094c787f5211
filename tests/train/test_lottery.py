"""Lottery tickets by iterative magnitude pruning: nested masks, sparsity 1 - 0.8^k, rewinding
to theta_0 or theta_k (the unpruned weights equal the saved ones), global and per-layer scope,
the random-reinitialisation control, errors, and an MLP on the digits pruned to 83% that keeps
its accuracy; the README example."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import run_readme_section
from lamina import functional as F
from lamina import nn, optim
from lamina.data import load_digits, train_val_test_split
from lamina.nn import module as module_state
from lamina.train import iterative_magnitude_pruning


@pytest.fixture(autouse=True)
def _pruned_models_end_with_their_test():
    """Pruned models install forward hooks; the hook interceptor must not outlive the test."""
    yield
    module_state._HOOKED_MODULES.clear()
    module_state._stop_running_hooks()


def _mlp():
    model = nn.Sequential(nn.Dense(16, activation="relu"), nn.Dense(10, activation="relu"), nn.Dense(3))
    model.build((None, 8))
    return model


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)


def _trainer(log: list | None = None, steps: int = 6):
    """Train a few SGD steps; records (on entry) each model's weights as the round starts."""
    x, y = _data()

    def train(model, on_step):
        if log is not None:
            log.append({name: p.data.copy() for name, p in model.named_parameters()})
        opt = optim.SGD(model, lr=0.1)
        for s in range(steps):
            batch = slice(8 * s % 64, 8 * s % 64 + 8)
            opt.zero_grad()
            F.categorical_cross_entropy(model(lamina.tensor(x[batch])), y[batch], from_logits=True).backward()
            opt.step()
            on_step()
        return float((model(lamina.tensor(x)).data.argmax(axis=1) == y).mean())
    return train


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_masks_nest_and_sparsity_follows_the_rate(scope):
    result = iterative_magnitude_pruning(_mlp, _trainer(), rounds=4, scope=scope)
    sizes = {"dense.weight": 128, "dense_1.weight": 160, "dense_2.weight": 30}
    assert list(result.masks[0]) == list(sizes)
    for k, (earlier, later) in enumerate(zip(result.masks, result.masks[1:]), start=1):
        for name in sizes:
            assert not (later[name] & ~earlier[name]).any()                    # nothing comes back
        assert abs(result.sparsities[k] - (1 - 0.8 ** k)) < 0.01
    # each round prunes round(0.2 * kept) of the weights still kept, of all layers or of each
    groups = [list(sizes)] if scope == "global" else [[name] for name in sizes]
    for group in groups:
        kept = sum(sizes[name] for name in group)
        for k in range(1, 5):
            kept -= round(0.2 * kept)
            assert sum(int(result.masks[k][name].sum()) for name in group) == kept
    assert len(result.scores) == 5 and result.sparsities[0] == 0.0


def test_rewinding_to_init_restores_the_saved_weights_at_unpruned_positions():
    log = []
    result = iterative_magnitude_pruning(_mlp, _trainer(log), rounds=3)
    init = log[0]
    for k in range(1, 4):
        start = log[k]
        for name, mask in result.masks[k].items():
            np.testing.assert_array_equal(start[name + "_orig"][mask], init[name][mask])
        for name in ("dense.bias", "dense_1.bias", "dense_2.bias"):
            np.testing.assert_array_equal(start[name], init[name])
    # the trained model computes with the last mask
    model = result.model
    for name, mask in result.masks[-1].items():
        layer = model[name.split(".")[0]]
        assert np.all(layer.weight.data[~mask] == 0)


def test_rewinding_to_iteration_k_uses_the_weights_after_k_steps():
    log, weights_at_step = [], {}

    def train(model, on_step):
        steps = {"n": 0}

        def counting():
            steps["n"] += 1
            if steps["n"] == 2 and not weights_at_step:
                weights_at_step.update({n: p.data.copy() for n, p in model.named_parameters()})
            on_step()
        return _trainer(log)(model, counting)

    result = iterative_magnitude_pruning(_mlp, train, rounds=2, rewind_to=2)
    for k in (1, 2):
        for name, mask in result.masks[k].items():
            np.testing.assert_array_equal(log[k][name + "_orig"][mask], weights_at_step[name][mask])
    assert not np.array_equal(log[0]["dense.weight"], weights_at_step["dense.weight"])


def test_random_reinit_control_trains_fresh_weights_under_the_same_mask():
    log = []
    result = iterative_magnitude_pruning(_mlp, _trainer(log), rounds=2, random_reinit=True)
    # calls: dense, round 1 ticket, round 1 control, round 2 ticket, round 2 control
    assert len(log) == 5
    for k, control in ((1, log[2]), (2, log[4])):
        mask = result.masks[k]["dense.weight"]
        assert not np.array_equal(control["dense.weight_orig"][mask], log[0]["dense.weight"][mask])
    assert all(r.random_reinit_score is not None for r in result.rounds[1:])


def test_errors_name_the_problem():
    train = _trainer()
    with pytest.raises(ValueError, match=r"rate .* must be in \(0, 1\)"):
        iterative_magnitude_pruning(_mlp, train, rounds=1, rate=1.2)
    with pytest.raises(ValueError, match="rewind_to must be 'init' or an iteration"):
        iterative_magnitude_pruning(_mlp, train, rounds=1, rewind_to="late")
    with pytest.raises(ValueError, match="the dense training took only 6 steps"):
        iterative_magnitude_pruning(_mlp, train, rounds=1, rewind_to=50)
    with pytest.raises(ValueError, match="scope must be"):
        iterative_magnitude_pruning(_mlp, train, rounds=1, scope="row")
    with pytest.raises(ValueError, match="must return a built model"):
        iterative_magnitude_pruning(lambda: nn.Sequential(nn.Dense(3)), train, rounds=1)
    with pytest.raises(ValueError, match="no module 'head'"):
        iterative_magnitude_pruning(_mlp, train, rounds=1, parameters=[("head", "weight")])


def test_a_ticket_at_83_percent_sparsity_keeps_the_accuracy_on_digits():
    x, y = load_digits(size=8)
    x = x.reshape(len(x), -1).astype(np.float32) / 255
    (xtr, ytr), _, (xte, yte) = train_val_test_split(x, y, val=0.0, test=0.25, seed=0)

    def model_fn():
        model = nn.Sequential(nn.Dense(64, activation="relu"), nn.Dense(10))
        model.build((None, 64))
        return model

    def train(model, on_step):
        opt = optim.SGD(model, lr=0.1, momentum=0.9)
        rng = np.random.default_rng(0)
        for _ in range(5):
            order = rng.permutation(len(xtr))
            for start in range(0, len(order), 32):
                batch = order[start:start + 32]
                opt.zero_grad()
                F.categorical_cross_entropy(model(lamina.tensor(xtr[batch])), ytr[batch], from_logits=True).backward()
                opt.step()
                on_step()
        return float((model(lamina.tensor(xte)).data.argmax(axis=1) == yte).mean())

    result = iterative_magnitude_pruning(model_fn, train, rounds=8, rewind_to=40, random_reinit=True)
    print(f"\n{result}")
    assert result.sparsities[-1] == pytest.approx(1 - 0.8 ** 8, abs=0.01)
    assert result.scores[0] > 0.9
    assert result.scores[-1] >= result.scores[0] - 0.02


def test_readme_example_runs():
    printed, names = run_readme_section("Compression: low-rank layers, filter pruning and lottery tickets")
    report, thin, tickets = names["report"], names["thin"], names["tickets"]
    assert report.params_after < report.params_before and report.macs_after < report.macs_before
    assert names["error"] < 1 and len(names["chain"]) == 4
    assert thin["conv2d"].filters == 12 and thin["conv2d_1"].weight.shape == (32, 3, 3, 12)
    assert tickets.sparsities == pytest.approx([0, 0.2, 0.36, 0.488], abs=0.01)
    assert "48.8%" in printed
