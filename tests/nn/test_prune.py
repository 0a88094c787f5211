"""Pruning: masks against torch.nn.utils.prune (one method, methods composed, global), outputs
and gradients against PyTorch's pruned layers, masked weights that stay zero under optimizers
and under inference fusion, remove, state dicts, the sparsity report, errors, and an MLP that
keeps its accuracy on the digits with 80% of its weights pruned."""

from __future__ import annotations

import copy
import gc
import math
import pickle

import numpy as np
import pytest
import torch
from torch.nn.utils import prune as torch_prune

import lamina
from helpers import assert_close, randn
from lamina import functional as F
from lamina import nn, optim
from lamina.data import load_digits, train_val_test_split
from lamina.errors import ShapeError
from lamina.nn import Conv2D, Dense, Parameter, prune
from lamina.nn import module as module_state
from lamina.train import Trainer

# lamina weight -> torch weight: Dense (n_in, units) -> (units, n_in); Conv2D (K, f, f, c) -> (K, c, f, f)
TO_TORCH = {"dense": (1, 0), "conv": (0, 3, 1, 2)}
# the output-unit axis in lamina's layout, and torch's dim for it
UNIT_AXIS = {"dense": 1, "conv": 0}


@pytest.fixture(autouse=True)
def _pruned_models_end_with_their_test():
    """The pruned models of a test are not used after it: the hook interceptor (which turns
    off inference fusion) must not stay installed for the tests that follow."""
    yield
    module_state._HOOKED_MODULES.clear()
    module_state._stop_running_hooks()


def to_torch_layout(array, kind):
    return np.ascontiguousarray(np.asarray(array).transpose(TO_TORCH[kind]))


def make_pair(kind, seed=0):
    """A built lamina layer and a torch layer holding the same weights, and an input for each."""
    lamina.manual_seed(seed)
    if kind == "dense":
        layer, twin, x = Dense(7, name="fc"), torch.nn.Linear(9, 7), randn(4, 9, seed=seed + 1).astype(np.float32)
        x_torch = torch.tensor(x, requires_grad=True)
    else:
        layer, twin = Conv2D(6, 3, padding=1, name="conv"), torch.nn.Conv2d(3, 6, 3, padding=1)
        x = randn(2, 5, 5, 3, seed=seed + 1).astype(np.float32)
        x_torch = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    layer(x)
    layer.bias.data[...] = randn(*layer.bias.shape, seed=seed + 2)
    with torch.no_grad():
        twin.weight.copy_(torch.from_numpy(to_torch_layout(layer.weight.numpy(), kind)))
        twin.bias.copy_(torch.from_numpy(layer.bias.numpy()))
    return layer, twin, x, x_torch


def assert_same_mask(layer, twin, kind, name="weight"):
    ours = getattr(layer, name + "_mask")
    theirs = getattr(twin, name + "_mask").numpy()
    np.testing.assert_array_equal(to_torch_layout(ours, kind), theirs)


def plain_mlp(units=8, classes=3, n_in=5):
    model = nn.Sequential(Dense(units, activation="relu"), Dense(classes))
    model(np.zeros((1, n_in), np.float32))
    return model


# -- masks against PyTorch ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("amount", [0.3, 0.5, 17, 0, 1.0])
def test_l1_unstructured_mask_matches_torch(kind, amount):
    layer, twin, _, _ = make_pair(kind)
    assert prune.l1_unstructured(layer, "weight", amount) is layer
    torch_prune.l1_unstructured(twin, "weight", amount)
    assert_same_mask(layer, twin, kind)
    expected_zeros = amount if isinstance(amount, int) else round(amount * layer.weight_orig.size)
    assert (layer.weight_mask == 0).sum() == expected_zeros


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("n", [1, 2, math.inf, "fro"])
@pytest.mark.parametrize("amount", [0.5, 2])
def test_ln_structured_mask_matches_torch(kind, n, amount):
    layer, twin, _, _ = make_pair(kind)
    prune.ln_structured(layer, "weight", amount, n=n, axis=UNIT_AXIS[kind])
    torch_prune.ln_structured(twin, "weight", amount, n=2 if n == "fro" else n, dim=0)   # torch: 'fro' on 2-D only
    assert_same_mask(layer, twin, kind)
    mask = np.moveaxis(layer.weight_mask, UNIT_AXIS[kind], 0).reshape(layer.weight_mask.shape[UNIT_AXIS[kind]], -1)
    assert set(mask.min(axis=1)) == set(mask.max(axis=1)) == {0.0, 1.0}   # whole units, some of each


def test_ln_structured_along_another_axis_matches_torch():
    layer, twin, _, _ = make_pair("dense")
    prune.ln_structured(layer, "weight", 3, n=1, axis=0)           # input features: torch's dim 1
    torch_prune.ln_structured(twin, "weight", 3, n=1, dim=1)
    assert_same_mask(layer, twin, "dense")


def test_global_unstructured_matches_torch():
    dense, dense_twin, _, _ = make_pair("dense", seed=0)
    conv, conv_twin, _, _ = make_pair("conv", seed=5)
    conv.weight.data *= 0.3                                     # so that the layers lose different shares
    conv_twin.weight.data *= 0.3
    prune.global_unstructured([(dense, "weight"), (conv, "weight")], amount=0.6)
    torch_prune.global_unstructured([(dense_twin, "weight"), (conv_twin, "weight")],
                                    pruning_method=torch_prune.L1Unstructured, amount=0.6)
    assert_same_mask(dense, dense_twin, "dense")
    assert_same_mask(conv, conv_twin, "conv")
    total = dense.weight_orig.size + conv.weight_orig.size
    zeros = (dense.weight_mask == 0).sum() + (conv.weight_mask == 0).sum()
    assert zeros == round(0.6 * total)
    assert (conv.weight_mask == 0).mean() > (dense.weight_mask == 0).mean()


# each step: (lamina call, torch call) on (layer, kind)
STEPS = {
    "l1 0.3": (lambda m, k: prune.l1_unstructured(m, "weight", 0.3),
               lambda m, k: torch_prune.l1_unstructured(m, "weight", 0.3)),
    "l1 0.5": (lambda m, k: prune.l1_unstructured(m, "weight", 0.5),
               lambda m, k: torch_prune.l1_unstructured(m, "weight", 0.5)),
    "l1 9": (lambda m, k: prune.l1_unstructured(m, "weight", 9),
             lambda m, k: torch_prune.l1_unstructured(m, "weight", 9)),
    "ln2 0.4": (lambda m, k: prune.ln_structured(m, "weight", 0.4, n=2, axis=UNIT_AXIS[k]),
                lambda m, k: torch_prune.ln_structured(m, "weight", 0.4, n=2, dim=0)),
    "ln1 2": (lambda m, k: prune.ln_structured(m, "weight", 2, n=1, axis=UNIT_AXIS[k]),
              lambda m, k: torch_prune.ln_structured(m, "weight", 2, n=1, dim=0)),
    "global 0.4": (lambda m, k: prune.global_unstructured([(m, "weight")], 0.4),
                   lambda m, k: torch_prune.global_unstructured([(m, "weight")], torch_prune.L1Unstructured,
                                                                amount=0.4)),
}


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("sequence", [
    ["l1 0.3", "l1 0.5"], ["l1 0.5", "ln2 0.4"], ["ln2 0.4", "l1 9"], ["ln1 2", "ln2 0.4", "l1 0.3"],
    ["global 0.4", "l1 0.3"], ["l1 0.3", "global 0.4"],
])
def test_pruning_again_composes_like_torch(kind, sequence):
    layer, twin, _, _ = make_pair(kind)
    previous = np.ones(layer.weight.shape)
    for step in sequence:
        ours, theirs = STEPS[step]
        ours(layer, kind)
        theirs(twin, kind)
        assert_same_mask(layer, twin, kind)
        assert (layer.weight_mask <= previous).all()              # only more zeros, never fewer
        previous = layer.weight_mask.copy()


def test_a_second_pruning_counts_among_the_remaining_weights():
    layer, _, _, _ = make_pair("dense")
    size = layer.weight.size                                     # 63
    prune.l1_unstructured(layer, "weight", 0.5)                  # round(31.5) = 32 (half to even)
    prune.l1_unstructured(layer, "weight", 0.5)                  # half of the 31 left: round(15.5) = 16
    assert (layer.weight_mask == 0).sum() == 32 + 16 and size == 63
    prune.random_unstructured(layer, "weight", 10, seed=1)
    assert (layer.weight_mask == 0).sum() == 58


# -- the pruned layer computes like PyTorch's ------------------------------------------------------


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_outputs_and_gradients_match_torch(kind):
    layer, twin, x, x_torch = make_pair(kind)
    prune.ln_structured(layer, "weight", 1, n=2, axis=UNIT_AXIS[kind])
    prune.l1_unstructured(layer, "weight", 0.4)
    torch_prune.ln_structured(twin, "weight", 1, n=2, dim=0)
    torch_prune.l1_unstructured(twin, "weight", 0.4)
    x_ours = lamina.tensor(x, requires_grad=True)
    out = layer(x_ours)
    out_torch = twin(x_torch)
    to_nhwc = (lambda a: a) if kind == "dense" else (lambda a: a.transpose(0, 2, 3, 1))
    assert_close(out.numpy(), to_nhwc(out_torch.detach().numpy()), 1e-5, "output")
    upstream = randn(*out.shape, seed=9).astype(np.float32)
    out.backward(upstream)
    out_torch.backward(torch.from_numpy(np.ascontiguousarray(upstream if kind == "dense"
                                                             else upstream.transpose(0, 3, 1, 2))))
    assert_close(to_torch_layout(layer.weight_orig.grad, kind), twin.weight_orig.grad.numpy(), 1e-5, "dJ/dw_orig")
    assert_close(layer.bias.grad, twin.bias.grad.numpy(), 1e-5, "dJ/db")
    assert_close(x_ours.grad, to_nhwc(x_torch.grad.numpy()), 1e-5, "dJ/dx")
    pruned = layer.weight_mask == 0
    assert pruned.any() and (layer.weight_orig.grad[pruned] == 0).all()


def test_the_weight_attribute_is_the_masked_weight():
    layer, _, _, _ = make_pair("dense")
    original = layer.weight.numpy().copy()
    param = layer.weight
    prune.l1_unstructured(layer, "weight", 0.5)
    assert layer.weight_orig is param and not isinstance(layer.weight, Parameter)
    np.testing.assert_array_equal(layer.weight_orig.numpy(), original)
    np.testing.assert_array_equal(layer.weight.numpy(), original * layer.weight_mask)
    assert [name for name, _ in layer.named_parameters()] == ["weight_orig", "bias"]   # same place
    assert list(layer.state_dict()) == ["weight_orig", "bias", "weight_mask"]


def test_pruning_a_bias_and_a_layer_without_apply_weights():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), Dense(3))
    ids = np.array([[1, 2, 3], [4, 5, 9]])
    model(ids)
    embedding, dense = model[0], model[2]
    dense.bias.data[...] = [1.0, -2.0, 0.5]
    prune.l1_unstructured(dense, "bias", 1)
    prune.ln_structured(embedding, "weight", 0.5, n=2, axis=0)   # half the rows of the table
    out = model(ids).numpy()
    table = embedding.weight_orig.numpy() * embedding.weight_mask
    expected = table[ids].reshape(2, -1) @ dense.weight.numpy() + np.array([1.0, -2.0, 0.0])
    assert_close(out, expected, 1e-6)


# -- pruned weights stay zero ------------------------------------------------------------------------


@pytest.mark.parametrize("make_optimizer", [
    lambda params: optim.Adam(params, lr=0.05, weight_decay=0.1),
    lambda params: optim.Adam(params, lr=0.05, amsgrad=True),
    lambda params: optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.05),
], ids=["adam_weight_decay", "adam_amsgrad", "sgd_momentum"])
def test_pruned_weights_stay_zero_while_training(make_optimizer):
    model = plain_mlp()
    x, y = randn(16, 5, seed=3).astype(np.float32), np.arange(16) % 3
    opt = make_optimizer(model.parameters())                    # made before pruning: holds w_orig

    def step():
        opt.zero_grad()
        F.categorical_cross_entropy(model(x), y, from_logits=True).backward()
        opt.step()

    for _ in range(3):                                           # momentum built up before pruning
        step()
    prune.global_unstructured([(model[0], "weight"), (model[1], "weight")], 0.5)
    masks = [layer.weight_mask.copy() for layer in model]
    hidden = [layer.weight_orig.numpy().copy() for layer in model]
    for _ in range(5):
        step()
        for layer, mask in zip(model, masks):
            assert (layer.weight_orig.grad[mask == 0] == 0).all()
            np.testing.assert_array_equal(layer.weight_mask, mask)
    model(x)
    for layer, mask, before in zip(model, masks, hidden):
        assert (layer.weight.numpy()[mask == 0] == 0).all()       # what the forward used
        assert not np.allclose(layer.weight_orig.numpy()[mask == 1], before[mask == 1])   # the rest learns
    hidden_units = np.maximum(x @ (model[0].weight_orig.numpy() * masks[0]) + model[0].bias.numpy(), 0)
    expected = hidden_units @ (model[1].weight_orig.numpy() * masks[1]) + model[1].bias.numpy()
    assert_close(model(x).numpy(), expected, 1e-5)


def test_inference_fusion_does_not_bypass_the_mask():
    model = plain_mlp(units=16, classes=4)
    x = randn(8, 5, seed=4).astype(np.float32)
    prune.l1_unstructured(model[0], "weight", 0.6)
    prune.ln_structured(model[1], "weight", 1, n=1, axis=1)
    opt = optim.Adam(model.parameters(), lr=0.1)
    for _ in range(2):                                           # the weights change after the last call
        opt.zero_grad()
        F.sum(F.mul(model(x), model(x))).backward()
        opt.step()
    reference = plain_mlp(units=16, classes=4)
    for ours, theirs in zip(model, reference):
        theirs.weight.data[...] = ours.weight_orig.data * ours.weight_mask
        theirs.bias.data[...] = ours.bias.data
    model.eval()
    with lamina.no_grad():
        out = model(x).numpy()
    hidden_units = np.maximum(x @ reference[0].weight.numpy() + reference[0].bias.numpy(), 0)
    assert_close(out, hidden_units @ reference[1].weight.numpy() + reference[1].bias.numpy(), 1e-5)
    assert out[:, (model[1].weight_mask == 0).all(axis=0)].std() == 0   # the pruned unit gives its bias alone


# -- remove, state dicts ------------------------------------------------------------------------------


def test_remove_makes_the_pruning_permanent():
    model = plain_mlp()
    x = randn(6, 5, seed=2).astype(np.float32)
    param = model[0].weight
    prune.l1_unstructured(model[0], "weight", 0.5)
    prune.l1_unstructured(model[1], "weight", 0.5)
    before = model(x).numpy()
    masked = model[0].weight_orig.numpy() * model[0].weight_mask
    assert prune.is_pruned(model) and prune.is_pruned(model[0])
    assert prune.remove(model[0], "weight") is model[0]
    assert model[0].weight is param and isinstance(param, Parameter) and param.trainable
    np.testing.assert_array_equal(param.numpy(), masked)
    assert not prune.is_pruned(model[0]) and prune.is_pruned(model)
    prune.remove(model[1], "weight")
    assert not prune.is_pruned(model)
    assert list(model.state_dict()) == list(plain_mlp().state_dict())
    assert_close(model(x).numpy(), before, 1e-6)
    F.sum(model(x)).backward()                                   # the zeros are free to learn again
    assert (model[0].weight.grad[masked == 0] != 0).any()


def test_state_dict_round_trip_into_a_model_pruned_the_same_way():
    def pruned_model():
        model = plain_mlp(units=12)
        prune.global_unstructured([(model[0], "weight"), (model[1], "weight")], 0.5)
        prune.ln_structured(model[0], "weight", 3, n=2, axis=1)
        return model

    lamina.manual_seed(1)
    trained = pruned_model()
    x = randn(10, 5, seed=6).astype(np.float32)
    opt = optim.Adam(trained.parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        F.sum(F.mul(trained(x), trained(x))).backward()
        opt.step()
    lamina.manual_seed(2)
    fresh = pruned_model()
    assert not np.array_equal(fresh[0].weight_mask, trained[0].weight_mask)   # its own weights, its own masks
    state = trained.state_dict()
    assert set(state) == {"dense.weight_orig", "dense.bias", "dense.weight_mask", "dense_1.weight_orig",
                          "dense_1.bias", "dense_1.weight_mask"}
    fresh.load_state_dict(state)
    for ours, theirs in zip(fresh, trained):
        np.testing.assert_array_equal(ours.weight_mask, theirs.weight_mask)
    assert_close(fresh(x).numpy(), trained(x).numpy(), 1e-6)
    with pytest.raises(KeyError, match="weight_orig"):
        plain_mlp(units=12).load_state_dict(state)


def test_a_deep_copy_stays_pruned_and_can_be_made_permanent():
    model = plain_mlp()
    x = randn(6, 5, seed=8).astype(np.float32)
    prune.l1_unstructured(model[0], "weight", 0.5)
    prune.ln_structured(model[1], "weight", 1, n=2, axis=1)
    duplicate = copy.deepcopy(model)
    del model
    gc.collect()                                               # the copy's hooks must not need the original
    assert prune.is_pruned(duplicate)
    for layer in duplicate:
        layer.weight_orig.data += 1.0                          # what a weight average would do to the copy
    duplicate(x)
    for layer in duplicate:
        np.testing.assert_array_equal(layer.weight.numpy(), layer.weight_orig.numpy() * layer.weight_mask)
    for layer in duplicate:
        prune.remove(layer, "weight")
    assert not prune.is_pruned(duplicate)
    assert sorted(duplicate.state_dict()) == sorted(plain_mlp().state_dict())


def test_a_pickled_pruned_module_stays_pruned_and_drops_user_hooks():
    model = plain_mlp()
    x = randn(6, 5, seed=8).astype(np.float32)
    prune.l1_unstructured(model[0], "weight", 0.5)
    calls = []
    model[0].register_forward_hook(lambda m, i, o: calls.append(m.name))
    restored = pickle.loads(pickle.dumps(model))
    assert prune.is_pruned(restored)
    layer = restored[0]
    layer.weight_orig.data += 1.0                              # an optimizer step
    out = restored(x)
    assert calls == []                                         # the user's hook is not pickled
    np.testing.assert_array_equal(layer.weight.numpy(), layer.weight_orig.numpy() * layer.weight_mask)
    out.sum().backward()
    assert layer.weight_orig.grad is not None
    np.testing.assert_array_equal(layer.weight_orig.grad[layer.weight_mask == 0], 0.0)
    prune.remove(layer, "weight")
    assert not prune.is_pruned(restored)


# -- random pruning, ties, custom masks -----------------------------------------------------------------


def test_random_unstructured_draws_reproducibly():
    def mask(seed=None, manual=None):
        if manual is not None:
            lamina.manual_seed(manual)
        layer, _, _, _ = make_pair("conv")                       # the same weights every time
        if manual is not None:
            lamina.manual_seed(manual)
        prune.random_unstructured(layer, "weight", 0.25, seed=seed)
        return layer.weight_mask.copy()

    first = mask(seed=3)
    assert (first == 0).sum() == round(0.25 * first.size)
    np.testing.assert_array_equal(first, mask(seed=3))
    assert not np.array_equal(first, mask(seed=4))
    np.testing.assert_array_equal(mask(manual=7), mask(manual=7))     # lamina.manual_seed without a seed
    # the smallest weights are not favoured: pruned entries are about as large as the kept ones
    layer, _, _, _ = make_pair("conv")
    magnitudes = np.abs(layer.weight.numpy())
    assert magnitudes[first == 0].mean() > 0.7 * magnitudes[first == 1].mean()


def test_ties_are_pruned_in_index_order():
    layer = Dense(3, kernel_init="ones")
    layer(np.zeros((1, 2), np.float32))
    layer.weight.data[...] = [[1.0, -1.0, 2.0], [1.0, 3.0, -1.0]]
    prune.l1_unstructured(layer, "weight", 3)                    # four entries of |w| = 1: the first three go
    np.testing.assert_array_equal(layer.weight_mask, [[0, 0, 1], [0, 1, 1]])
    units = Dense(4, kernel_init="ones")
    units(np.zeros((1, 2), np.float32))
    prune.ln_structured(units, "weight", 2, n=1, axis=1)          # equal norms: units 0 and 1 go
    np.testing.assert_array_equal(units.weight_mask, [[0, 0, 1, 1], [0, 0, 1, 1]])


def test_custom_from_mask_combines_with_the_mask_so_far():
    layer, _, x, _ = make_pair("dense")
    prune.l1_unstructured(layer, "weight", 0.2)
    first = layer.weight_mask.copy()
    custom = np.ones(layer.weight.shape, dtype=bool)
    custom[:, 0] = False
    prune.custom_from_mask(layer, "weight", custom)
    np.testing.assert_array_equal(layer.weight_mask, first * custom)
    assert_close(layer(x).numpy(), x @ (layer.weight_orig.numpy() * first * custom) + layer.bias.numpy(), 1e-5)


def test_sparsity_report():
    model = plain_mlp(units=10, classes=4)
    model[1].bias.data[...] = 1.0
    prune.global_unstructured([(model[0], "weight"), (model[1], "weight")], 0.6)
    report = prune.sparsity(model)
    assert list(report.counts) == ["dense.weight", "dense.bias", "dense_1.weight", "dense_1.bias"]
    assert report.counts["dense.bias"] == (10, 10)               # zero-initialised, not pruned
    assert report.counts["dense_1.bias"] == (0, 4)
    weights = [model[0].weight_orig.numpy() * model[0].weight_mask, model[1].weight_orig.numpy() * model[1].weight_mask]
    assert report["dense.weight"] == (weights[0] == 0).mean()
    assert report.fraction == (sum((w == 0).sum() for w in weights) + 10) / (50 + 10 + 40 + 4)
    only = prune.sparsity(model, pruned_only=True)
    assert list(only.counts) == ["dense.weight", "dense_1.weight"]
    assert only.counts["dense.weight"][0] + only.counts["dense_1.weight"][0] == round(0.6 * 90)
    text = str(only)
    assert "dense_1.weight" in text and "60.0%" in text
    assert prune.sparsity(plain_mlp(), pruned_only=True).fraction == 0.0


# -- errors --------------------------------------------------------------------------------------------


def test_errors_name_the_function_the_module_and_the_values():
    layer, _, _, _ = make_pair("dense")
    with pytest.raises(ValueError, match=r"prune.l1_unstructured: Dense 'fc' has no parameter 'kernel' "
                                         r"\(its parameters: \['bias', 'weight'\]\)"):
        prune.l1_unstructured(layer, "kernel", 0.5)
    with pytest.raises(ValueError, match="prune.random_unstructured: .*not built yet"):
        prune.random_unstructured(Dense(3), "weight", 0.5)
    for amount in (-1, 1.5, -0.1, float("nan"), True, "half", None):
        with pytest.raises(ValueError, match=rf"prune.l1_unstructured: .*amount.*{amount!r} for parameter 'weight' "
                                             r"of Dense 'fc'"):
            prune.l1_unstructured(layer, "weight", amount)
    with pytest.raises(ValueError, match=r"prune.l1_unstructured: amount 64 is more than the 63 unpruned "
                                         r"entries of parameter 'weight' of Dense 'fc'"):
        prune.l1_unstructured(layer, "weight", 64)
    prune.l1_unstructured(layer, "weight", 60)
    with pytest.raises(ValueError, match="amount 4 is more than the 3 unpruned entries"):
        prune.l1_unstructured(layer, "weight", 4)
    with pytest.raises(ValueError, match=r"amount 8 is more than the 7 unpruned slices along axis 1"):
        prune.ln_structured(make_pair("dense")[0], "weight", 8, n=2, axis=1)
    assert (layer.weight_mask == 0).sum() == 60                  # the failed calls changed nothing


def test_structured_and_global_errors():
    layer, _, _, _ = make_pair("dense")
    with pytest.raises(ShapeError, match=r"prune.ln_structured: .*2 or more axes; 'bias' of Dense 'fc' has "
                                         r"shape \(7,\)"):
        prune.ln_structured(layer, "bias", 1, n=2, axis=0)
    with pytest.raises(ValueError, match=r"prune.ln_structured: axis must be an int in \[-2, 1\].*got 2"):
        prune.ln_structured(layer, "weight", 1, n=2, axis=2)
    for n in (0, -1, "nuc", True):
        with pytest.raises(ValueError, match=r"prune.ln_structured: n must be a positive number"):
            prune.ln_structured(layer, "weight", 1, n=n, axis=1)
    with pytest.raises(ValueError, match=r"prune.global_unstructured: each parameter may appear once"):
        prune.global_unstructured([(layer, "weight"), (layer, "weight")], 0.5)
    with pytest.raises(ValueError, match=r"prune.global_unstructured: expected a non-empty list"):
        prune.global_unstructured([], 0.5)
    with pytest.raises(ValueError, match=r"prune.global_unstructured: amount 71 is more than the 70 unpruned"):
        prune.global_unstructured([(layer, "weight"), (layer, "bias")], 71)
    with pytest.raises(ShapeError, match=r"prune.custom_from_mask: the mask has shape \(7, 9\); parameter "
                                         r"'weight' of Dense 'fc' has shape \(9, 7\)"):
        prune.custom_from_mask(layer, "weight", np.ones((7, 9)))
    with pytest.raises(ValueError, match=r"prune.custom_from_mask: the mask for parameter 'weight' of Dense 'fc' "
                                         r"must hold only zeros and ones \(False and True\), got also \[0.5\]"):
        prune.custom_from_mask(layer, "weight", np.full((9, 7), 0.5))
    with pytest.raises(ValueError, match=r"prune.remove: parameter 'weight' of Dense 'fc' is not pruned"):
        prune.remove(layer, "weight")
    assert not prune.is_pruned(layer)


# -- learning ------------------------------------------------------------------------------------------


def test_an_mlp_pruned_by_80_percent_still_reads_the_digits():
    lamina.manual_seed(0)
    x, y = load_digits(size=8)
    x = x.astype(np.float32) / 255
    (x_train, y_train), _, (x_test, y_test) = train_val_test_split(x, y, val=0.0, test=0.25, seed=0)
    model = nn.Sequential(nn.Flatten(), Dense(64, activation="relu"), Dense(10))
    trainer = Trainer(model, lambda out, labels: F.categorical_cross_entropy(out, labels, from_logits=True),
                      optim.Adam(model, lr=5e-3), metrics=(), verbose=0)
    trainer.fit((x_train, y_train), epochs=10, batch_size=32, seed=0)
    dense_accuracy = (trainer.predict(x_test).argmax(axis=1) == y_test).mean()
    prune.global_unstructured([(model[1], "weight"), (model[2], "weight")], 0.8)
    trainer.fit((x_train, y_train), epochs=2, batch_size=32, seed=1)     # fine-tune the 20% left
    accuracy = (trainer.predict(x_test).argmax(axis=1) == y_test).mean()
    kept = prune.sparsity(model, pruned_only=True)
    assert kept.fraction >= 0.8 and kept.counts["dense.weight"][1] == 64 * 64
    assert accuracy > 0.9, (accuracy, dense_accuracy)            # 0.95 unpruned, 0.96 pruned and fine-tuned
