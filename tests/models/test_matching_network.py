"""Matching networks: the cosine attention kernel and the full context embeddings (the
bidirectional support LSTM and the read-attend steps) against float64 torch rewrites of the
paper's equations, gradient checks, permutation of the support set, errors, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import nn
from lamina.errors import ShapeError
from lamina.models import AttentionLSTM, MatchingNetwork, SupportContextLSTM, matching_log_probabilities
from lamina.nn import functional_call

LABELS = np.array([2, 0, 1, 1, 0, 2, 2])
D = 4


def _torch_log_probabilities(query, support, labels, scale=1.0):
    cosines = torch.nn.functional.normalize(query, dim=-1) @ torch.nn.functional.normalize(support, dim=-1).T
    attention = torch.softmax(scale * cosines, dim=-1)
    one_hot = torch.nn.functional.one_hot(torch.as_tensor(labels), int(labels.max()) + 1).to(attention.dtype)
    return torch.log(attention @ one_hot)                       # y^ = sum_i a(x^, x_i) y_i


def _torch_lstm_step(x, h, c, kernel, recurrent_kernel, bias, recurrent_bias):
    gates = x @ kernel + h @ recurrent_kernel + bias + recurrent_bias
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _torch_read_attend(query, support, steps, *weights):
    h, c = torch.zeros_like(query), torch.zeros_like(query)
    for _ in range(steps):
        read = torch.softmax(h @ support.T, dim=-1) @ support                       # r_{k-1}
        h_hat, c = _torch_lstm_step(torch.cat([query, read], dim=-1), h, c, *weights)
        h = h_hat + query
    return h


def _torch_support_context(support, forward_weights, backward_weights):
    zeros = torch.zeros(1, support.shape[1], dtype=support.dtype)
    outputs = {}
    for direction, weights, order in (("f", forward_weights, range(len(support))),
                                      ("b", backward_weights, reversed(range(len(support))))):
        h, c = zeros, zeros
        for i in order:
            h, c = _torch_lstm_step(support[i:i + 1], h, c, *weights)
            outputs[direction, i] = h[0]
    return support + torch.stack([outputs["f", i] + outputs["b", i] for i in range(len(support))])


_CELL = ("kernel", "recurrent_kernel", "bias", "recurrent_bias")


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_attention_kernel_matches_torch(scale):
    compare_with_torch(lambda q, s: matching_log_probabilities(q, s, LABELS, scale),
                       lambda q, s: _torch_log_probabilities(q, s, LABELS, scale),
                       randn(5, D), randn(7, D, seed=1), dtype=np.float64, rtol=1e-10)
    assert check_gradients(lambda q, s: matching_log_probabilities(q, s, LABELS, scale), randn(5, D),
                           randn(7, D, seed=1))


def _weights(layer, prefix):
    return [layer.state_dict()[f"{prefix}.{name}"].astype(np.float64) for name in _CELL]


def test_read_attend_steps_match_torch_with_parameter_gradients():
    layer = AttentionLSTM(processing_steps=3)
    layer(randn(5, D), randn(7, D))
    names = [f"cell.{n}" for n in _CELL]

    def ours(q, s, *weights):
        return functional_call(layer, dict(zip(names, weights)), q, s)

    compare_with_torch(ours, lambda q, s, *w: _torch_read_attend(q, s, 3, *w), randn(5, D), randn(7, D, seed=1),
                       *_weights(layer, "cell"), dtype=np.float64, rtol=1e-10)
    assert check_gradients(ours, randn(3, D), randn(4, D, seed=1), *_weights(layer, "cell"))


def test_bidirectional_support_context_matches_torch_with_parameter_gradients():
    layer = SupportContextLSTM()
    layer(randn(6, D))
    names = [f"lstm.{side}_layer.{n}" for side in ("forward", "backward") for n in _CELL]

    def ours(s, *weights):
        return functional_call(layer, dict(zip(names, weights)), s)

    weights = _weights(layer, "lstm.forward_layer") + _weights(layer, "lstm.backward_layer")
    compare_with_torch(ours, lambda s, *w: _torch_support_context(s, w[:4], w[4:]), randn(6, D), *weights,
                       dtype=np.float64, rtol=1e-10)
    assert check_gradients(ours, randn(4, D), *weights)


def _episode(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((10, 6)).astype(np.float32), np.repeat(np.arange(5), 2),
            rng.standard_normal((7, 6)).astype(np.float32), np.arange(7) % 5)


def _model(fce):
    lamina.manual_seed(0)
    return MatchingNetwork(nn.Sequential(nn.Dense(8, activation="tanh"), nn.Dense(D)), fce=fce, processing_steps=2)


def test_shapes_probabilities_and_loss():
    xs, ys, xq, yq = _episode()
    model = _model(True)
    log_probs = model(xs, ys, xq)
    assert log_probs.shape == (7, 5)
    np.testing.assert_allclose(np.exp(log_probs.numpy()).sum(axis=1), 1.0, rtol=1e-5)
    expected = -log_probs.numpy()[np.arange(7), yq].mean()
    np.testing.assert_allclose(model.loss(xs, ys, xq, yq).item(), expected, rtol=1e-6)
    _, attention = model.query_context(*reversed(model.embed(xs, xq)), return_attention=True)
    assert attention.shape == (2, 7, 10)
    np.testing.assert_allclose(attention.numpy()[0], 0.1, rtol=1e-6)       # h_0 = 0: a uniform first read


def test_permuting_the_support_set():
    xs, ys, xq, _ = _episode()
    order = np.random.default_rng(1).permutation(10)
    model = _model(False)                       # without FCE: the same sums in another order
    np.testing.assert_allclose(model(xs[order], ys[order], xq).numpy(), model(xs, ys, xq).numpy(), rtol=1e-5,
                               atol=1e-6)
    model = _model(True)                        # the read-attend steps do not see the order either
    support, query = model.embed(xs, xq)
    f = model.query_context(query, support).numpy()
    np.testing.assert_allclose(model.query_context(query, support[order]).numpy(), f, rtol=1e-5, atol=1e-6)
    # the bidirectional LSTM does: g(x_i, S) depends on where x_i stands
    g = model.support_context(model.encoder(xs)).numpy()
    assert not np.allclose(model.support_context(model.encoder(xs[order])).numpy(), g[order], atol=1e-4)


def test_errors_are_clear():
    xs, ys, xq, yq = _episode()
    model = _model(True)
    with pytest.raises(ShapeError, match=r"support labels must be one integer class per support sample, shape "
                                         r"\(10,\); got shape \(9,\)"):
        model(xs, ys[:9], xq)
    with pytest.raises(ValueError, match=r"must cover the classes 0 \.\. n-1 .* got \[0, 1, 3, 4\]"):
        model(xs, np.repeat([0, 1, 3, 4, 4], 2), xq)
    with pytest.raises(ValueError, match=r"MatchingNetwork.loss: query labels must be in 0 \.\. 4"):
        model.loss(xs, ys, xq, yq + 1)
    with pytest.raises(ShapeError, match=r"support samples \(10, 6\) and query samples \(7, 5\)"):
        model(xs, ys, xq[:, :5])
    with pytest.raises(ShapeError, match=r"query embeddings have 3 features but the support ones 4"):
        matching_log_probabilities(randn(2, 3), randn(4, 4), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="AttentionLSTM: processing_steps must be"):
        AttentionLSTM(0)


@pytest.mark.parametrize("fce", [True, False])
def test_save_and_load(tmp_path, fce):
    """lamina.save / lamina.load: the copy is built on a one-sample episode of the saved shapes
    (integer labels), then gives the same log-probabilities on the same episode."""
    xs, ys, xq, _ = _episode()
    model = _model(fce)
    model.eval()
    expected = model(xs, ys, xq).numpy()
    lamina.save(model, tmp_path / "matching.safetensors")
    twin = lamina.load(tmp_path / "matching.safetensors")
    assert type(twin) is MatchingNetwork and twin.fce is fce and twin.processing_steps == 2
    assert sorted(twin.state_dict()) == sorted(model.state_dict())
    np.testing.assert_array_equal(twin(xs, ys, xq).numpy(), expected)
    with pytest.raises(ShapeError, match=r"MatchingNetwork: expected the saved shapes of \(support x"):
        model.build_sample_inputs([[None, 6], [None]])
