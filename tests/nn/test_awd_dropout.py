"""AWD-LSTM's regularisers: LockedDropout's mask shared over time and its expected value,
WeightDrop's one mask per forward pass against a float64 torch LSTM rewrite given the same
dropped weight_hh (outputs, input and raw-weight gradients) and a float64 gradient check of
the raw weight, embedding dropout and AR / TAR by hand, configs and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, randn
from lamina import nn
from lamina.errors import ShapeError
from lamina.nn.dropout import dropout_mask


# -- LockedDropout ---------------------------------------------------------------------------
def test_locked_dropout_shares_one_mask_over_time_and_keeps_the_expected_value():
    lamina.manual_seed(0)
    layer = nn.LockedDropout(0.4)
    x = np.ones((2000, 6, 5), dtype=np.float32)
    y = layer(x).numpy()
    assert np.array_equal(y, np.broadcast_to(y[:, :1], y.shape))        # the same mask at every step
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.6)}
    assert abs(y.mean() - 1.0) < 0.03                                   # E[d] = x (inverted scaling)
    assert abs((y[:, 0] == 0).mean() - 0.4) < 0.03
    assert not np.array_equal(layer(x).numpy(), y)                      # a new mask per call
    layer.eval()
    assert np.array_equal(layer(x).numpy(), x)


def test_locked_dropout_gradient_is_the_mask(float64):
    layer = nn.LockedDropout(0.5)
    x = randn(3, 4, 2, seed=1)

    def fn(t):
        lamina.manual_seed(7)
        return layer(t)

    assert check_gradients(fn, x)
    lamina.manual_seed(7)
    mask = dropout_mask((3, 1, 2), 0.5, np.float64)
    np.testing.assert_allclose(fn(lamina.tensor(x)).numpy(), x * mask)


# -- WeightDrop ------------------------------------------------------------------------------
def torch_lstm(x, w_ih, w_hh, b_ih, b_hh):
    """PyTorch's LSTM equations step by step, weights (4H, D) / (4H, H), gates i, f, g, o."""
    n, steps, _ = x.shape
    hidden = w_hh.shape[1]
    h = x.new_zeros(n, hidden)
    c = x.new_zeros(n, hidden)
    outputs = []
    for t in range(steps):
        i, f, g, o = (x[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs, dim=1)


def _weight_drop(rate=0.5, units=3, features=2):
    layer = nn.WeightDrop(nn.LSTM(units, return_sequences=True), rate)
    layer(np.zeros((1, 2, features)))
    rng = np.random.default_rng(4)
    for p in layer.parameters():
        p.data = 0.5 * rng.standard_normal(p.shape)
    return layer


def test_weight_drop_matches_a_torch_lstm_given_the_same_dropped_weight_hh(float64):
    layer = _weight_drop()
    inner = layer.layer
    x = randn(2, 5, 2, seed=2)
    lamina.manual_seed(11)
    mask = dropout_mask(inner.recurrent_kernel.shape, 0.5, np.float64)   # the mask the next forward draws
    lamina.manual_seed(11)
    xl = lamina.tensor(x, requires_grad=True)
    yl = layer(xl)
    up = randn(*yl.shape, seed=3)
    (yl * lamina.tensor(up)).sum().backward()

    raw = torch.tensor(inner.recurrent_kernel.numpy().T.copy(), requires_grad=True)    # weight_hh (4H, H)
    w_ih = torch.tensor(inner.kernel.numpy().T.copy(), requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_lstm(xt, w_ih, raw * torch.tensor(mask.T), torch.tensor(inner.bias.numpy()),
                    torch.tensor(inner.recurrent_bias.numpy()))
    (yt * torch.tensor(up)).sum().backward()
    np.testing.assert_allclose(yl.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xl.grad, xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(inner.recurrent_kernel.grad, raw.grad.numpy().T, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(inner.kernel.grad, w_ih.grad.numpy().T, rtol=1e-9, atol=1e-11)
    assert np.all(inner.recurrent_kernel.grad[mask == 0] == 0)          # dropped connections learn nothing
    assert (mask == 0).any()


def test_weight_drop_gradient_reaches_the_raw_weight(float64):
    layer = _weight_drop(rate=0.3)
    x = lamina.tensor(randn(2, 4, 2, seed=5), requires_grad=True)

    def fn(xt, raw):             # ``raw`` is the layer's own parameter, perturbed in place by gradcheck
        lamina.manual_seed(3)    # the same mask at every evaluation
        return layer(xt)

    assert lamina.gradcheck(fn, x, layer.layer.recurrent_kernel)


def test_weight_drop_draws_a_new_mask_per_forward_and_is_the_plain_layer_in_evaluation():
    layer = _weight_drop()
    x = randn(2, 5, 2, seed=6).astype(np.float32)
    first, second = layer(x).numpy(), layer(x).numpy()
    assert not np.allclose(first, second)
    layer.eval()
    np.testing.assert_array_equal(layer(x).numpy(), layer.layer(x).numpy())
    assert "_weights" not in layer.layer.__dict__                       # the raw weight is back in place


def test_weight_drop_passes_states_through():
    layer = nn.WeightDrop(nn.LSTM(3, return_sequences=True, return_state=True), 0.2)
    x = randn(2, 4, 2, seed=7).astype(np.float32)
    out, h, c = layer(x)
    assert out.shape == (2, 4, 3) and h.shape == (2, 3) and c.shape == (2, 3)
    layer.eval()
    again = layer(x[:, 2:], initial_state=layer(x[:, :2])[1:])[0]
    np.testing.assert_allclose(again.numpy(), layer(x)[0].numpy()[:, 2:], rtol=1e-5, atol=1e-6)


# -- embedding dropout, AR, TAR ---------------------------------------------------------------
def test_embedding_dropout_drops_whole_words_by_hand(float64):
    table = nn.Embedding(6, 3)
    ids = np.array([[0, 1, 2, 1], [3, 1, 5, 0]])
    table(ids)
    lamina.manual_seed(2)
    keep = dropout_mask((6, 1), 0.5, np.float64)
    lamina.manual_seed(2)
    out = nn.embedding_dropout(table, ids, 0.5)
    expected = (table.weight.numpy() * keep)[ids]
    np.testing.assert_allclose(out.numpy(), expected)
    assert {0.0, 2.0} == set(np.unique(keep))
    out.sum().backward()
    counts = np.bincount(ids.ravel(), minlength=6)[:, None]
    np.testing.assert_allclose(table.weight.grad, counts * keep * np.ones((1, 3)))
    np.testing.assert_array_equal(nn.embedding_dropout(table, ids, 0.5, training=False).numpy(),
                                  table(ids).numpy())


def test_activation_regularizers_by_hand():
    h = randn(2, 4, 3, seed=8)
    ar = nn.activation_regularization(h, 2.0).numpy()
    tar = nn.temporal_activation_regularization(h, 0.5).numpy()
    assert np.isclose(ar, 2.0 * np.sum(h ** 2) / h.size)
    steps = h[:, 1:] - h[:, :-1]
    assert np.isclose(tar, 0.5 * np.sum(steps ** 2) / steps.size)


def test_activation_regularizers_gradients(float64):
    h = randn(2, 4, 3, seed=9)
    assert check_gradients(lambda t: nn.activation_regularization(t, 2.0), h)
    assert check_gradients(lambda t: nn.temporal_activation_regularization(t, 1.0), h)


# -- configs and errors -------------------------------------------------------------------------
def test_configs_round_trip():
    layer = nn.WeightDrop(nn.LSTM(3, return_sequences=True), 0.25)
    twin = nn.layer_from_config(nn.layer_to_config(layer))
    assert isinstance(twin, nn.WeightDrop) and twin.rate == 0.25 and isinstance(twin.layer, nn.LSTM)
    assert nn.layer_from_config(nn.layer_to_config(nn.LockedDropout(0.3))).rate == 0.3


def test_bad_inputs_are_refused():
    with pytest.raises(ShapeError, match=r"(?s)LockedDropout.*\(batch, time, features\)"):
        nn.LockedDropout(0.5)(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="WeightDrop: expected a recurrent layer"):
        nn.WeightDrop(nn.Dense(3))
    with pytest.raises(ValueError, match="LockedDropout: rate"):
        nn.LockedDropout(1.01)
    with pytest.raises(ValueError, match="temporal_activation_regularization.*shape \\(2, 1, 3\\)"):
        nn.temporal_activation_regularization(np.ones((2, 1, 3)), 1.0)
    with pytest.raises(TypeError, match="embedding_dropout: expected an Embedding"):
        nn.embedding_dropout(nn.Dense(3), np.zeros((1, 2), dtype=int), 0.1)
