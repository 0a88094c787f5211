"""Second derivatives through the fused recurrent layers (their backward recorded from the
step-by-step composite): against PyTorch's double backward through nn.RNN, nn.GRU and
nn.LSTM, with and without lengths, and against centred differences of the gradient."""

import numpy as np
import pytest
import torch
from recurrent_checks import copy_to_torch, randomize
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lamina
from helpers import assert_close, check_second_derivatives, randn
from lamina import functional as F
from lamina.autograd import grad
from lamina.functional.recurrent import gru, lstm, reverse_padded, simple_rnn
from lamina.nn.recurrent import GRU, LSTM, SimpleRNN

CELLS = ["rnn_tanh", "rnn_relu", "gru", "lstm"]
LENGTHS = np.array([4, 1, 3])


@pytest.fixture(autouse=True)
def f64():
    lamina.set_default_dtype(np.float64)


def _pair(cell: str, d: int, units: int):
    if cell.startswith("rnn"):
        layer = SimpleRNN(units, activation=cell[4:], return_sequences=True, return_state=True)
        module = torch.nn.RNN(d, units, batch_first=True, nonlinearity=cell[4:])
    elif cell == "gru":
        layer, module = GRU(units, return_sequences=True, return_state=True), torch.nn.GRU(d, units, batch_first=True)
    else:
        layer = LSTM(units, return_sequences=True, return_state=True)
        module = torch.nn.LSTM(d, units, batch_first=True)
    layer.build((None, 4, d))
    randomize(layer)
    module = module.double()
    return layer, module, copy_to_torch(layer, module)


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("cell", CELLS)
def test_penalty_on_the_input_gradient_matches_torch(cell, with_lengths):
    """J = sum(out * r); the penalty ||dJ/dx||^2 + ||dJ/dh0||^2 differentiated with respect to
    every weight, the input and the initial state."""
    n, steps, d, units = 3, 4, 2, 3
    layer, module, pairs = _pair(cell, d, units)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, steps, d))
    h0 = rng.standard_normal((n, units))
    lengths = LENGTHS if with_lengths else None

    xl, hl = lamina.tensor(x, requires_grad=True), lamina.tensor(h0, requires_grad=True)
    states = [hl, lamina.tensor(np.zeros((n, units)))] if cell == "lstm" else [hl]
    outs = layer(xl, initial_state=states, lengths=lengths)
    xt, ht = torch.tensor(x, requires_grad=True), torch.tensor(h0, requires_grad=True)
    given = (ht[None], torch.zeros(1, n, units, dtype=torch.float64)) if cell == "lstm" else ht[None]
    if with_lengths:
        packed = pack_padded_sequence(xt, torch.as_tensor(lengths), batch_first=True, enforce_sorted=False)
        seq, last = module(packed, given)
        seq, _ = pad_packed_sequence(seq, batch_first=True, total_length=steps)
    else:
        seq, last = module(xt, given)
    final = last[0][0] if cell == "lstm" else last[0]
    r_seq, r_final = rng.standard_normal((n, steps, units)), rng.standard_normal((n, units))
    cost = (outs[0] * r_seq).sum() + (outs[1] * r_final).sum()
    cost_t = (seq * torch.tensor(r_seq)).sum() + (final * torch.tensor(r_final)).sum()

    gx, gh = grad(cost, [xl, hl], create_graph=True)
    gxt, ght = torch.autograd.grad(cost_t, [xt, ht], create_graph=True)
    assert_close(gx.numpy(), gxt.detach().numpy(), 1e-10, "input gradient")
    penalty = (gx * gx).sum() + (gh * gh).sum()
    penalty_t = (gxt * gxt).sum() + (ght * ght).sum()
    wanted = [xl, hl] + [ours for ours, _ in pairs]
    wanted_t = [xt, ht] + [theirs for _, theirs in pairs]
    found = grad(penalty, wanted, allow_unused=True)
    found_t = torch.autograd.grad(penalty_t, wanted_t, allow_unused=True)
    for k, (a, b) in enumerate(zip(found, found_t)):
        expected = np.zeros(wanted_t[k].shape) if b is None else b.numpy()
        if k >= 2:                          # torch keeps the weights transposed
            expected = expected.T
        actual = np.zeros(expected.shape) if a is None else a
        assert_close(actual, expected, 1e-9, f"penalty gradient {k}")


def _weights(d, units, gates, seed):
    return (randn(d, gates * units, seed=seed, scale=0.6), randn(units, gates * units, seed=seed + 1, scale=0.6),
            randn(gates * units, seed=seed + 2, scale=0.3), randn(gates * units, seed=seed + 3, scale=0.3))


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
def test_gradgradcheck_of_the_three_ops(with_lengths):
    lengths = np.array([3, 1]) if with_lengths else None
    x, h0 = randn(2, 3, 2), randn(2, 2, seed=5)
    assert check_second_derivatives(lambda x, h, *w: simple_rnn(x, h, *w, lengths=lengths)[0], x, h0,
                                    *_weights(2, 2, 1, 10))
    assert check_second_derivatives(lambda x, h, *w: gru(x, h, *w, lengths=lengths)[1], x, h0, *_weights(2, 2, 3, 20))
    assert check_second_derivatives(lambda x, h, c, *w: lstm(x, h, c, *w, lengths=lengths)[2], x, h0,
                                    randn(2, 2, seed=6), *_weights(2, 2, 4, 30))


def test_reverse_padded_is_recorded_as_its_own_adjoint():
    x = lamina.tensor(randn(3, 4, 2), requires_grad=True)
    (g,) = grad((reverse_padded(x, LENGTHS) ** 3).sum(), x, create_graph=True)
    np.testing.assert_allclose(g.numpy(), 3 * x.numpy() ** 2, rtol=1e-12)
    (h,) = grad(g.sum(), x)
    np.testing.assert_allclose(h, 6 * x.numpy(), rtol=1e-12)


@pytest.mark.parametrize("options", [dict(), dict(go_backwards=True, activation="relu",
                                                   recurrent_activation="hard_sigmoid", stride=2)],
                         ids=["same", "backwards_relu_hard_sigmoid_stride2"])
def test_conv_lstm_penalty_matches_the_torch_reference(options):
    """The penalty ||dJ/dx||^2 through a ConvLSTM, differentiated with respect to the input,
    the states and every weight, against the step-by-step torch reference of the layer's
    tests (Keras-layout kernels) and torch's double backward."""
    from test_conv_lstm import torch_conv_lstm

    rng = np.random.default_rng(2)
    k, shape = 2, (2, 3, 5, 5, 2)
    side = -(-5 // options.get("stride", 1))
    arrays = [rng.standard_normal(shape), rng.standard_normal((4 * k, 3, 3, 2)) * 0.5,
              rng.standard_normal((4 * k, 3, 3, k)) * 0.5, rng.standard_normal(4 * k) * 0.3,
              rng.standard_normal((2, side, side, k)), rng.standard_normal((2, side, side, k))]
    ours = [lamina.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    seq, _, memory = F.conv_lstm(*ours[:4], h0=ours[4], c0=ours[5], padding="same", **options)
    seq_t, _, memory_t = torch_conv_lstm(theirs[0], theirs[1].permute(1, 2, 3, 0), theirs[2].permute(1, 2, 3, 0),
                                         theirs[3], theirs[4], theirs[5], padding="same", **options)
    r, r_c = rng.standard_normal(seq_t.shape), rng.standard_normal(memory_t.shape)
    cost = (seq * r).sum() + (memory * r_c).sum()
    cost_t = (seq_t * torch.tensor(r)).sum() + (memory_t * torch.tensor(r_c)).sum()
    (gx,) = grad(cost, ours[0], create_graph=True)
    (gxt,) = torch.autograd.grad(cost_t, theirs[0], create_graph=True)
    assert_close(gx.numpy(), gxt.detach().numpy(), 1e-10, "input gradient")
    found = grad((gx * gx).sum(), ours, allow_unused=True)
    found_t = torch.autograd.grad((gxt * gxt).sum(), theirs, allow_unused=True)
    for k, (a, b) in enumerate(zip(found, found_t)):
        expected = np.zeros(arrays[k].shape) if b is None else b.numpy()
        assert_close(np.zeros(expected.shape) if a is None else a, expected, 1e-9, f"penalty gradient {k}")
