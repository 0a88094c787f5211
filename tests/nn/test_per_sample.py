"""Per-sample gradients against torch.func (vmap of grad over the samples), in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import grad, vmap

import lamina
from helpers import assert_close, randn
from lamina import functional as F
from lamina import nn
from lamina.nn import PerSampleGradients, per_sample_gradients

TF = torch.nn.functional


@pytest.fixture(autouse=True)
def f64():
    lamina.set_default_dtype(np.float64)


def _cross_entropy(reduction="sum"):
    return lambda out, y: F.categorical_cross_entropy(out, y, from_logits=True, reduction=reduction)


def _torch_per_sample(torch_forward, model, x, y):
    """torch.func's per-sample gradients of cross-entropy, parameters in lamina's layout."""
    params = {name: torch.tensor(p.data) for name, p in model.named_parameters()}

    def sample_loss(params, xi, yi):
        return TF.cross_entropy(torch_forward(params, xi[None]), yi[None])

    xs = torch.tensor(x) if x.dtype.kind == "f" else torch.tensor(x, dtype=torch.long)
    found = vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, xs, torch.tensor(y))
    return {name: g.numpy() for name, g in found.items()}


def _check_against_torch(model, torch_forward, x, y):
    ours = per_sample_gradients(model, _cross_entropy(), x, y)
    theirs = _torch_per_sample(torch_forward, model, x, y)
    assert sorted(ours) == sorted(theirs)
    for name in theirs:
        assert ours[name].shape == (len(x),) + model.get_submodule(name.rsplit(".", 1)[0])._parameters[
            name.rsplit(".", 1)[1]].shape
        assert_close(ours[name], theirs[name], 1e-10, what=name)
    return ours


def _mlp():
    model = nn.Sequential(nn.Dense(6, activation="tanh"), nn.Dense(5, activation="relu"), nn.Dense(3))
    model.build((None, 4))
    return model


def _torch_mlp(p, x):
    a = torch.tanh(x @ p["dense.weight"] + p["dense.bias"])
    a = torch.relu(a @ p["dense_1.weight"] + p["dense_1.bias"])
    return a @ p["dense_2.weight"] + p["dense_2.bias"]


def test_mlp_matches_torch_func():
    x, y = randn(7, 4), np.arange(7) % 3
    _check_against_torch(_mlp(), _torch_mlp, x, y)


def _nchw_conv(x, w, b, stride, padding, groups=1, dilation=1):
    out = TF.conv2d(x.permute(0, 3, 1, 2), w.permute(0, 3, 1, 2), b, stride=stride, padding=padding,
                    groups=groups, dilation=dilation)
    return out.permute(0, 2, 3, 1)


def test_cnn_with_stride_padding_groups_and_dilation_matches_torch_func():
    model = nn.Sequential(nn.Conv2D(4, 3, stride=2, padding=1, activation="relu"),
                          nn.Conv2D(4, 3, padding=2, dilation=2, groups=2),
                          nn.DepthwiseConv2D(2, depth_multiplier=2, padding="valid"),
                          nn.Flatten(), nn.Dense(3))
    model.build((None, 7, 7, 2))

    def forward(p, x):
        a = torch.relu(_nchw_conv(x, p["conv2d.weight"], p["conv2d.bias"], 2, 1))
        a = _nchw_conv(a, p["conv2d_1.weight"], p["conv2d_1.bias"], 1, 2, groups=2, dilation=2)
        a = _nchw_conv(a, p["depthwise_conv2d.weight"], p["depthwise_conv2d.bias"], 1, 0, groups=4)
        return a.reshape(a.shape[0], -1) @ p["dense.weight"] + p["dense.bias"]

    x, y = randn(5, 7, 7, 2), np.array([0, 2, 1, 1, 0])
    _check_against_torch(model, forward, x, y)


def test_same_padding_with_an_even_kernel_pads_bottom_right_as_the_layer_does():
    model = nn.Sequential(nn.Conv2D(3, 2, padding="same"), nn.Flatten(), nn.Dense(2))
    model.build((None, 5, 5, 1))

    def forward(p, x):
        padded = TF.pad(x, (0, 0, 0, 1, 0, 1))                 # NHWC: (c), (w: 0 left, 1 right), (h)
        a = _nchw_conv(padded, p["conv2d.weight"], p["conv2d.bias"], 1, 0)
        return a.reshape(a.shape[0], -1) @ p["dense.weight"] + p["dense.bias"]

    _check_against_torch(model, forward, randn(4, 5, 5, 1), np.array([0, 1, 1, 0]))


def test_embedding_and_dense_over_time_match_torch_func():
    model = nn.Sequential(nn.Embedding(6, 3), nn.Dense(4, activation="tanh"), nn.Flatten(), nn.Dense(2))
    model.build((None, 5))

    def forward(p, ids):
        a = torch.tanh(p["embedding.weight"][ids] @ p["dense.weight"] + p["dense.bias"])
        return a.reshape(a.shape[0], -1) @ p["dense_1.weight"] + p["dense_1.bias"]

    ids = np.array([[0, 1, 2, 2, 5], [3, 3, 3, 1, 0], [5, 4, 0, 0, 0]])
    ours = _check_against_torch(model, forward, ids, np.array([1, 0, 1]))
    assert not ours["embedding.weight"][0, 3].any()                       # words the sample does not use


def test_layer_norm_and_group_norm_match_torch_func():
    model = nn.Sequential(nn.Conv2D(4, 3, padding=1), nn.GroupNorm(2), nn.Flatten(), nn.LayerNorm(),
                          nn.Dense(3))
    model.build((None, 4, 4, 2))
    for p in model.parameters():                                          # away from the initial 1 and 0
        p.data += randn(*p.shape, seed=p.size, scale=0.3)

    def forward(p, x):
        a = _nchw_conv(x, p["conv2d.weight"], p["conv2d.bias"], 1, 1)
        a = TF.group_norm(a.permute(0, 3, 1, 2), 2, p["group_norm.weight"], p["group_norm.bias"], eps=1e-5)
        a = a.permute(0, 2, 3, 1).reshape(a.shape[0], -1)
        a = TF.layer_norm(a, a.shape[-1:], p["layer_norm.weight"], p["layer_norm.bias"], eps=1e-5)
        return a @ p["dense.weight"] + p["dense.bias"]

    _check_against_torch(model, forward, randn(4, 4, 4, 2), np.array([2, 0, 1, 2]))


def test_a_recurrent_layer_goes_through_the_per_sample_fallback():
    model = nn.Sequential(nn.SimpleRNN(4), nn.Dense(2))
    model.build((None, 3, 2))

    def forward(p, x):
        h = torch.zeros(x.shape[0], 4, dtype=x.dtype)
        for t in range(x.shape[1]):
            h = torch.tanh(x[:, t] @ p["simple_rnn.kernel"] + p["simple_rnn.bias"]
                           + h @ p["simple_rnn.recurrent_kernel"] + p["simple_rnn.recurrent_bias"])
        return h @ p["dense.weight"] + p["dense.bias"]

    _check_against_torch(model, forward, randn(5, 3, 2), np.array([0, 1, 1, 0, 1]))


class ScaledDense(nn.Dense):
    """A Dense subclass: no rule of its own, so it takes the fallback."""

    def forward(self, x):
        return super().forward(x) * 2.0


def test_fallback_agrees_with_the_dense_rule_on_a_layer_that_has_none():
    model = nn.Sequential(ScaledDense(3, activation="tanh"), nn.Dense(2))
    model.build((None, 4))

    def forward(p, x):
        a = torch.tanh(x @ p["scaled_dense.weight"] + p["scaled_dense.bias"]) * 2.0
        return a @ p["dense.weight"] + p["dense.bias"]

    _check_against_torch(model, forward, randn(6, 4), np.array([0, 1, 0, 1, 1, 0]))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_per_sample_gradients_add_up_to_the_batch_gradient(reduction):
    model = nn.Sequential(nn.Conv2D(3, 2), nn.Flatten(), nn.LayerNorm(), nn.Dense(4, activation="relu"),
                          nn.Dense(2))
    x, y = randn(6, 4, 4, 1), np.array([0, 1, 1, 0, 1, 0])
    model(x)
    loss_fn = _cross_entropy(reduction)
    per_sample = per_sample_gradients(model, loss_fn, x, y, reduction=reduction)
    loss_fn(model(x), y).backward()
    combine = np.sum if reduction == "sum" else np.mean
    for name, p in model.named_parameters():
        assert_close(combine(per_sample[name], axis=0), p.grad, 1e-10, what=name)


def test_tracker_context_leaves_grad_untouched_by_rules_and_adds_repeated_calls():
    shared = nn.Dense(3)
    x, y = randn(4, 3), np.array([0, 1, 2, 0])
    shared(x)

    def forward(p, xs):
        a = torch.tanh(xs @ p["weight"] + p["bias"])
        return a @ p["weight"] + p["bias"]

    with PerSampleGradients(shared) as tracker:
        out = shared(nn.Tanh()(shared(x)))                                 # one layer called twice
        F.categorical_cross_entropy(out, y, from_logits=True, reduction="sum").backward()
    theirs = _torch_per_sample(forward, shared, x, y)
    for name, g in tracker.gradients().items():
        assert_close(g, theirs[name], 1e-10, what=name)
    with lamina.no_grad():                                                 # detached: nothing is traced
        shared(x)
    assert tracker.grad_sample(shared.weight).shape == (4, 3, 3)


def test_batch_norm_is_refused_with_a_clear_error():
    model = nn.Sequential(nn.Dense(3), nn.BatchNorm(), nn.Dense(2))
    model.build((None, 4))
    with pytest.raises(ValueError, match=r"batch_norm.*GroupNorm or LayerNorm"):
        per_sample_gradients(model, _cross_entropy(), randn(5, 4), np.array([0, 1, 0, 1, 1]))


def test_unknown_reduction_is_refused():
    with pytest.raises(ValueError, match="loss_reduction must be one of"):
        PerSampleGradients(_mlp(), loss_reduction="none")
