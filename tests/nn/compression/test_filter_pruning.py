"""Filter pruning that removes channels: the pruned model against the original with the removed
channels zeroed at the next channel-mixing layer (BatchNorm in eval mode, depthwise convs,
Flatten and GlobalAvgPool2D before a Dense layer), torch's conv on the shrunk weights, the
scores (L1, L2, BN gamma), parameter and MAC counts against the summary, and errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import lamina
from lamina import nn
from lamina.analysis import summary
from lamina.nn import module as module_state
from lamina.nn import prune
from lamina.nn.compression import filter_scores, prune_filters


@pytest.fixture(autouse=True)
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    module_state._HOOKED_MODULES.clear()         # the masked model of a test must not keep hooks running
    module_state._stop_running_hooks()


def _randomize(model, seed=1):
    """Random weights and BatchNorm statistics (so that beta and the running mean matter)."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = rng.standard_normal(p.data.shape)
    for layer in model.modules():
        if isinstance(layer, nn.BatchNorm):
            layer.running_mean = rng.standard_normal(layer.num_features)
            layer.running_var = rng.random(layer.num_features) + 0.5
    model.eval()
    return model


def _x(shape, seed=2):
    return lamina.tensor(np.random.default_rng(seed).standard_normal(shape))


def _conv_bn_model():
    model = nn.Sequential(nn.Conv2D(6, 3, padding=1), nn.BatchNorm(), nn.ReLU(), nn.MaxPool2D(2),
                          nn.DepthwiseConv2D(3, depth_multiplier=2, padding=1), nn.Conv2D(5, 3), nn.ReLU(),
                          nn.Flatten(), nn.Dense(4))
    model.build((None, 8, 8, 3))
    return _randomize(model)


def test_pruned_model_equals_the_original_with_the_channels_zeroed_at_the_next_mixing_layer():
    model = _conv_bn_model()
    pruned, removed = prune_filters(model, "conv2d", indices=[4, 1])
    assert removed.tolist() == [1, 4]
    # channel c of the depthwise conv feeds its outputs 2c, 2c + 1; the next Conv2D mixes them
    reference = copy.deepcopy(model)
    reference["conv2d_1"].weight.data[..., [2, 3, 8, 9]] = 0
    x = _x((3, 8, 8, 3))
    np.testing.assert_allclose(pruned(x).data, reference(x).data, atol=1e-12)
    # not the same as zeroing the filters: beta and the running mean still pass the BatchNorm
    zeroed = copy.deepcopy(model)
    zeroed["conv2d"].weight.data[[1, 4]] = 0
    zeroed["conv2d"].bias.data[[1, 4]] = 0
    assert np.abs(zeroed(x).data - pruned(x).data).max() > 1e-3
    assert pruned["conv2d"].filters == 4 and pruned["batch_norm"].num_features == 4
    assert pruned["depthwise_conv2d"].weight.shape == (8, 3, 3, 1)
    assert pruned["conv2d_1"].weight.shape == (5, 3, 3, 8)
    assert model["conv2d"].filters == 6                       # the original is left as it was


def test_flatten_before_dense_removes_the_rows_of_every_position():
    model = _conv_bn_model()
    pruned, removed = prune_filters(model, "conv2d_1", indices=[0, 3])
    reference = copy.deepcopy(model)
    # the Dense layer's rows are (y, x, c) of the (2, 2, 5) volume, channel fastest
    reference["dense"].weight.data.reshape(2, 2, 5, 4)[:, :, [0, 3]] = 0
    x = _x((2, 8, 8, 3))
    np.testing.assert_allclose(pruned(x).data, reference(x).data, atol=1e-12)
    assert pruned["dense"].weight.shape == (12, 4)


def test_global_average_pool_and_dense_targets():
    model = nn.Sequential(nn.Conv2D(6, 3), nn.ReLU(), nn.GlobalAvgPool2D(), nn.Dense(7, activation="relu"),
                          nn.Dropout(0.5), nn.Dense(3))
    model.build((None, 6, 6, 2))
    _randomize(model)
    x = _x((2, 6, 6, 2))
    pruned, removed = prune_filters(model, 0, amount=2)
    reference = copy.deepcopy(model)
    reference["dense"].weight.data[removed] = 0
    np.testing.assert_allclose(pruned(x).data, reference(x).data, atol=1e-12)
    units, removed_units = prune_filters(model, "dense", amount=3 / 7)
    assert removed_units.size == 3 and units["dense"].units == 4
    reference = copy.deepcopy(model)
    reference["dense_1"].weight.data[removed_units] = 0
    np.testing.assert_allclose(units(x).data, reference(x).data, atol=1e-12)


def test_shrunk_conv_matches_torch_on_the_kept_filters():
    model = nn.Sequential(nn.Conv2D(5, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2D(4, 1))
    model.build((None, 7, 7, 3))
    _randomize(model)
    pruned, removed = prune_filters(model, "conv2d", indices=[2])
    keep = [0, 1, 3, 4]
    w = torch.tensor(model["conv2d"].weight.data[keep].transpose(0, 3, 1, 2))
    x = np.random.default_rng(0).standard_normal((2, 7, 7, 3))
    y = torch.relu(torch.nn.functional.conv2d(torch.tensor(x.transpose(0, 3, 1, 2)), w,
                                              torch.tensor(model["conv2d"].bias.data[keep]), stride=2, padding=1))
    w2 = torch.tensor(model["conv2d_1"].weight.data[..., keep].transpose(0, 3, 1, 2))
    expected = torch.nn.functional.conv2d(y, w2, torch.tensor(model["conv2d_1"].bias.data))
    np.testing.assert_allclose(pruned(lamina.tensor(x)).data, expected.numpy().transpose(0, 2, 3, 1), atol=1e-12)


def test_scores_choose_the_smallest_filters():
    model = _conv_bn_model()
    w = model["conv2d"].weight.data
    l1 = np.abs(w).reshape(6, -1).sum(axis=1)
    np.testing.assert_allclose(filter_scores(model, "conv2d", "l1"), l1)
    np.testing.assert_allclose(filter_scores(model, "conv2d", "l2"), np.sqrt((w ** 2).reshape(6, -1).sum(axis=1)))
    gamma = np.abs(model["batch_norm"].weight.data)
    np.testing.assert_allclose(filter_scores(model, "conv2d", "bn_gamma"), gamma)
    _, removed = prune_filters(model, "conv2d", amount=0.5)
    assert removed.tolist() == sorted(np.argsort(l1)[:3].tolist())
    _, removed = prune_filters(model, "conv2d", amount=2, criterion="bn_gamma")
    assert removed.tolist() == sorted(np.argsort(gamma)[:2].tolist())


def test_parameter_and_mac_counts_drop_by_the_removed_channels():
    model = _conv_bn_model()
    pruned, _ = prune_filters(model, "conv2d", indices=[0, 5])
    before, after = summary(model), summary(pruned)
    k = 2
    # conv2d: k (3*3*3 + 1); BN: 2k; depthwise: 2k (9 + 1); conv2d_1: 5 * 9 * 2k
    assert before.total_params - after.total_params == k * 28 + 2 * k + 2 * k * 10 + 5 * 9 * 2 * k
    # conv2d at 8x8: k*27 each; 2x2 max pooling to 4x4 (the summary counts h_out w_out c f f):
    # k*4 each; depthwise at 4x4: 2k*9 each; conv2d_1 at 2x2: 5*9*2k each
    assert before.total_macs - after.total_macs == (64 * k * 27 + 16 * k * 4 + 16 * 2 * k * 9
                                                    + 4 * 5 * 9 * 2 * k)
    assert after.total_params == sum(p.data.size for p in pruned.parameters())


def test_nested_sequentials_are_walked_as_one_chain():
    model = nn.Sequential(nn.Sequential(nn.Conv2D(4, 3, padding=1), nn.BatchNorm(), name="block"),
                          nn.Sequential(nn.ReLU(), nn.Conv2D(3, 3), name="head"), nn.GlobalAvgPool2D(), nn.Dense(2))
    model.build((None, 5, 5, 2))
    _randomize(model)
    pruned, removed = prune_filters(model, "block.conv2d", indices=[2])
    reference = copy.deepcopy(model)
    reference["head"]["conv2d"].weight.data[..., 2] = 0
    x = _x((2, 5, 5, 2))
    np.testing.assert_allclose(pruned(x).data, reference(x).data, atol=1e-12)


def test_errors_name_the_problem():
    model = _conv_bn_model()
    with pytest.raises(ValueError, match="layer 'conv9' not found"):
        prune_filters(model, "conv9", amount=1)
    with pytest.raises(ValueError, match="amount 6 is out of range"):
        prune_filters(model, "conv2d", amount=6)
    with pytest.raises(ValueError, match=r"fractional amount must be in \[0, 1\)"):
        prune_filters(model, "conv2d", amount=1.0)
    with pytest.raises(ValueError, match=r"indices must be ints in \[0, 5\]"):
        prune_filters(model, "conv2d", indices=[7])
    with pytest.raises(ValueError, match="exactly one of indices and amount"):
        prune_filters(model, "conv2d")
    with pytest.raises(ValueError, match="is a BatchNorm"):
        prune_filters(model, "batch_norm", amount=1)
    with pytest.raises(ValueError, match="reach the model's output"):
        prune_filters(model, "dense", amount=1)
    with pytest.raises(ValueError, match="needs an affine BatchNorm right after"):
        prune_filters(model, "conv2d_1", amount=1, criterion="bn_gamma")
    residual = nn.Sequential(nn.Conv2D(4, 3, padding=1), nn.LayerNorm(), nn.Dense(2))
    residual.build((None, 4, 4, 2))
    with pytest.raises(ValueError, match="cannot remove channels through layer 'layer_norm'"):
        prune_filters(residual, "conv2d", amount=1)
    grouped = nn.Sequential(nn.Conv2D(4, 3), nn.Conv2D(4, 1, groups=2), nn.Flatten(), nn.Dense(2))
    grouped.build((None, 4, 4, 2))
    with pytest.raises(ValueError, match="grouped convolution"):
        prune_filters(grouped, "conv2d", amount=1)
    masked = copy.deepcopy(model)
    prune.l1_unstructured(masked["conv2d"], "weight", 0.5)
    with pytest.raises(ValueError, match="prune.remove"):
        prune_filters(masked, "conv2d", amount=1)


# -- functional models with residual blocks ----------------------------------------------------

def _residual_model():
    """stem -> BN -> ReLU -> a;  a -> c1 -> BN -> ReLU -> c2 -> BN -> b;  ReLU(a + b) -> head -> Flatten -> out."""
    inputs = nn.Input((6, 6, 3))
    a = nn.ReLU()(nn.BatchNorm(name="bn0")(nn.Conv2D(4, 3, padding="same", name="stem")(inputs)))
    b = nn.ReLU()(nn.BatchNorm(name="bn1")(nn.Conv2D(5, 3, padding="same", name="c1")(a)))
    b = nn.BatchNorm(name="bn2")(nn.Conv2D(4, 3, padding="same", name="c2")(b))
    s = nn.ReLU()(nn.Add()([a, b]))
    out = nn.Dense(2, name="out")(nn.Flatten()(nn.Conv2D(3, 1, name="head")(s)))
    return _randomize(nn.Model(inputs, out))


def test_channels_joined_by_a_residual_add_are_removed_together():
    model = _residual_model()
    pruned, removed = prune_filters(model, "stem", indices=[1, 2])
    # both sides of the Add lose channels 1 and 2: stem and c2 (with their BNs); c1 and head lose those inputs
    assert pruned.get_layer("stem").filters == pruned.get_layer("c2").filters == 2
    assert pruned.get_layer("bn2").num_features == 2 and pruned.get_layer("c1").weight.shape == (5, 3, 3, 2)
    reference = copy.deepcopy(model)
    for name in ("c1", "head"):
        reference.get_layer(name).weight.data[..., [1, 2]] = 0
    x = _x((2, 6, 6, 3))
    np.testing.assert_allclose(pruned(x).data, reference(x).data, atol=1e-12)
    assert np.abs(pruned(x).data - model(x).data).max() > 1e-3
    # stem 2 (27 + 1), bn0 2*2, c1 5*9*2, c2 2 (45 + 1), bn2 2*2, head 3*2
    assert summary(model).total_params - summary(pruned).total_params == 56 + 4 + 90 + 92 + 4 + 6
    # the group's score adds the L1 norms of both producers
    l1 = sum(np.abs(model.get_layer(n).weight.data).reshape(4, -1).sum(axis=1) for n in ("stem", "c2"))
    _, by_amount = prune_filters(model, "c2", amount=1)
    assert by_amount.tolist() == [int(np.argmin(l1))]


def test_layers_inside_a_residual_block_and_before_flatten_prune_alone():
    model = _residual_model()
    x = _x((2, 6, 6, 3))
    pruned, removed = prune_filters(model, "c1", amount=2, criterion="bn_gamma")
    reference = copy.deepcopy(model)
    reference.get_layer("c2").weight.data[..., removed] = 0
    np.testing.assert_allclose(pruned(x).data, reference(x).data, atol=1e-12)
    assert removed.tolist() == sorted(np.argsort(np.abs(model.get_layer("bn1").weight.data))[:2].tolist())
    pruned, removed = prune_filters(model, "head", amount=1)
    reference = copy.deepcopy(model)
    reference.get_layer("out").weight.data.reshape(6, 6, 3, 2)[:, :, removed] = 0
    np.testing.assert_allclose(pruned(x).data, reference(x).data, atol=1e-12)


def test_residual_groups_that_cannot_shrink_are_refused():
    inputs = nn.Input((5, 5, 3))
    skip = nn.Add()([inputs, nn.Conv2D(3, 3, padding="same", name="conv")(inputs)])
    model = nn.Model(inputs, nn.Dense(2)(nn.GlobalAvgPool2D()(skip)))
    with pytest.raises(ValueError, match="tied to the model's input"):
        prune_filters(model, "conv", amount=1)
    inputs = nn.Input((5, 5, 3))
    a = nn.Conv2D(4, 3, padding="same", name="a")(inputs)
    joined = nn.Concatenate()([a, nn.Conv2D(2, 1)(a)])
    model = nn.Model(inputs, nn.Dense(2)(nn.Flatten()(joined)))
    with pytest.raises(ValueError, match=r"cannot remove channels through layer 'concatenate' \(Concatenate\)"):
        prune_filters(model, "a", amount=1)
    inputs = nn.Input((5, 5, 3))
    shared = nn.Conv2D(3, 1, name="shared")
    model = nn.Model(inputs, shared(shared(nn.Conv2D(3, 3, name="first")(inputs))))
    with pytest.raises(ValueError, match=r"\['shared'\] are called more than once"):
        prune_filters(model, "first", amount=1)
    inputs = nn.Input((5, 5, 3))
    model = nn.Model(inputs, nn.ReLU()(nn.Conv2D(3, 3, name="last")(inputs)))
    with pytest.raises(ValueError, match="reach the model's output"):
        prune_filters(model, "last", amount=1)
