import re

import numpy as np
import pytest
import torch
from nn_checks import gradcheck_layer
from recurrent_checks import copy_to_torch, randomize

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import optim
from lamina.errors import ShapeError
from lamina.nn import Dense, layer_from_config, layer_to_config
from lamina.nn.recurrent import GRU, LSTM, Bidirectional, SimpleRNN

TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}
RTOL = {np.float32: 1e-5, np.float64: 1e-9}
CELLS = ["rnn_tanh", "rnn_relu", "gru", "lstm"]


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)


def _layers(cell: str, units: int, d: int, **kwargs):
    """(lamina layer, torch module) for a cell name."""
    if cell.startswith("rnn"):
        act = cell[4:]
        return SimpleRNN(units, activation=act, **kwargs), torch.nn.RNN(d, units, batch_first=True, nonlinearity=act)
    if cell == "gru":
        return GRU(units, **kwargs), torch.nn.GRU(d, units, batch_first=True)
    return LSTM(units, **kwargs), torch.nn.LSTM(d, units, batch_first=True)


# -- against PyTorch -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, steps, sequences, init", [(3, 4, True, True), (1, 1, False, True), (2, 3, False, False),
                                                       (1, 5, True, False)])
@pytest.mark.parametrize("cell", CELLS)
def test_matches_torch(cell, dtype, n, steps, sequences, init):
    lamina.set_default_dtype(dtype)
    d, units = 3, 5
    rng = np.random.default_rng(1)
    layer, module = _layers(cell, units, d, return_sequences=sequences, return_state=True)
    layer.build((None, steps, d))
    randomize(layer)
    module.to(TORCH_DTYPE[dtype])
    pairs = copy_to_torch(layer, module)
    x = rng.standard_normal((n, steps, d)).astype(dtype)
    count = 2 if cell == "lstm" else 1
    states = [rng.standard_normal((n, units)).astype(dtype) for _ in range(count)] if init else []

    xl = lamina.tensor(x, requires_grad=True, dtype=dtype)
    sl = [lamina.tensor(s, requires_grad=True, dtype=dtype) for s in states]
    outs = layer(xl, initial_state=sl if init else None)
    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s[None], requires_grad=True) for s in states]
    if cell == "lstm":
        seq_t, (h_t, c_t) = module(xt, tuple(st) if init else None)
        finals_t = [h_t[0], c_t[0]]
    else:
        seq_t, h_t = module(xt, st[0] if init else None)
        finals_t = [h_t[0]]
    outs_t = [seq_t if sequences else seq_t[:, -1], *finals_t]

    rtol = RTOL[dtype]
    assert len(outs) == len(outs_t) == 1 + count
    total, total_t = None, None
    for k, (a, b) in enumerate(zip(outs, outs_t)):
        assert a.dtype == dtype
        assert_close(a.numpy(), b.detach().numpy(), rtol, f"output {k}")
        up = rng.standard_normal(a.shape).astype(dtype)
        term, term_t = (a * lamina.tensor(up, dtype=dtype)).sum(), (b * torch.from_numpy(up)).sum()
        total = term if total is None else total + term
        total_t = term_t if total_t is None else total_t + term_t
    total.backward()
    total_t.backward()
    assert_close(xl.grad, xt.grad.numpy(), rtol, "input gradient")
    for k, (s, s_t) in enumerate(zip(sl, st)):
        assert_close(s.grad, s_t.grad.numpy()[0], rtol, f"initial state {k} gradient")
    for ours, theirs in pairs:
        assert ours.grad is not None
        assert_close(ours.grad, theirs.grad.numpy().T, rtol, "weight gradient")


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_bidirectional_matches_torch(f64, cell):
    n, steps, d, units = 2, 4, 3, 4
    rng = np.random.default_rng(2)
    layer = Bidirectional(GRU(units, return_sequences=True) if cell == "gru"
                          else LSTM(units, return_sequences=True))
    module = (torch.nn.GRU if cell == "gru" else torch.nn.LSTM)(d, units, batch_first=True, bidirectional=True)
    module.double()
    layer.build((None, steps, d))
    randomize(layer)
    pairs = copy_to_torch(layer.forward_layer, module) + copy_to_torch(layer.backward_layer, module, "_reverse")
    x = rng.standard_normal((n, steps, d))
    xl = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    xt = torch.tensor(x, requires_grad=True)
    out = layer(xl)
    out_t = module(xt)[0]
    assert out.shape == (n, steps, 2 * units)
    assert_close(out.numpy(), out_t.detach().numpy(), 1e-9, "output")
    up = rng.standard_normal(out.shape)
    out.backward(up)
    (out_t * torch.from_numpy(up)).sum().backward()
    assert_close(xl.grad, xt.grad.numpy(), 1e-9, "input gradient")
    for ours, theirs in pairs:
        assert_close(ours.grad, theirs.grad.numpy().T, 1e-9, "weight gradient")


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_an_empty_batch_gives_empty_and_zero_gradients_as_torch(f64, cell, bidirectional):
    steps, d, units = 4, 2, 3
    layer, module = _layers(cell, units, d, return_sequences=True)
    if bidirectional:
        layer = Bidirectional(layer)
        module = type(module)(d, units, batch_first=True, bidirectional=True, **(
            {"nonlinearity": cell[4:]} if cell.startswith("rnn") else {}))
    module.double()
    layer.build((None, steps, d))
    pairs = (copy_to_torch(layer.forward_layer, module) + copy_to_torch(layer.backward_layer, module, "_reverse")
             if bidirectional else copy_to_torch(layer, module))
    xl = lamina.tensor(np.zeros((0, steps, d)), requires_grad=True, dtype=np.float64)
    xt = torch.zeros((0, steps, d), dtype=torch.float64, requires_grad=True)
    out, out_t = layer(xl), module(xt)[0]
    assert out.shape == tuple(out_t.shape)
    out.backward(np.ones(out.shape))
    out_t.sum().backward()
    assert xl.grad.shape == tuple(xt.grad.shape)
    for ours, theirs in pairs:
        np.testing.assert_array_equal(ours.grad, theirs.grad.numpy().T)


def test_bidirectional_merge_modes_and_states(f64):
    x = np.random.default_rng(3).standard_normal((2, 3, 2))
    concat = Bidirectional(GRU(3, return_sequences=True))
    halves = concat(x).numpy()
    fwd, bwd = halves[..., :3], halves[..., 3:]
    for mode, expected in (("sum", fwd + bwd), ("ave", (fwd + bwd) / 2), ("mul", fwd * bwd)):
        other = Bidirectional(GRU(3, return_sequences=True), merge_mode=mode)
        other.build(x.shape)
        other.load_state_dict(concat.state_dict())
        assert_close(other(x).numpy(), expected, 1e-12, mode)
        assert other.compute_output_shape((None, 3, 2)) == (None, 3, 3)
    split = Bidirectional(GRU(3, return_sequences=True), merge_mode=None)
    split.build(x.shape)
    split.load_state_dict(concat.state_dict())
    a, b = split(x)
    assert_close(a.numpy(), fwd, 1e-12, "forward half")
    assert_close(b.numpy(), bwd, 1e-12, "backward half")
    with_states = Bidirectional(LSTM(3, return_state=True))
    out, h_f, c_f, h_b, c_b = with_states(x)
    assert out.shape == (2, 6) and h_f.shape == c_b.shape == (2, 3)
    assert_close(out.numpy(), np.concatenate([h_f.numpy(), h_b.numpy()], axis=1), 1e-12, "last states")
    assert with_states.compute_output_shape((None, 3, 2)) == [(None, 6)] + [(None, 3)] * 4


# -- gradient checks -----------------------------------------------------------------------------
@pytest.mark.parametrize("layer", [SimpleRNN(4, return_sequences=True), SimpleRNN(4, activation="relu"),
                                   GRU(4, return_sequences=True), LSTM(4, return_sequences=True),
                                   LSTM(4, use_bias=False, go_backwards=True)], ids=str)
def test_gradcheck(f64, layer):
    x = np.random.default_rng(4).standard_normal((2, 3, 3))
    layer.build(x.shape)
    randomize(layer, seed=5)
    assert gradcheck_layer(layer, x)


def test_gradcheck_lstm_cell_state_and_initial_states(f64):
    rng = np.random.default_rng(6)
    layer = LSTM(4, return_state=True)
    layer.build((2, 3, 3))
    randomize(layer, seed=7)
    x, h0, c0 = (lamina.tensor(rng.standard_normal(s), requires_grad=True, dtype=np.float64)
                 for s in ((2, 3, 3), (2, 4), (2, 4)))
    params = layer.parameters()
    assert lamina.gradcheck(lambda x_, h_, c_, *_: layer(x_, initial_state=(h_, c_))[2], x, h0, c0, *params)
    gru = GRU(4, return_state=True)
    gru.build((2, 3, 3))
    randomize(gru, seed=8)
    assert lamina.gradcheck(lambda x_, h_, *_: gru(x_, initial_state=h_)[1], x, h0, *gru.parameters())


# -- behaviour ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [SimpleRNN, GRU, LSTM])
def test_go_backwards_reads_the_reversed_sequence(f64, cls):
    x = np.random.default_rng(9).standard_normal((2, 5, 3))
    forwards = cls(4, return_sequences=True)
    backwards = cls(4, return_sequences=True, go_backwards=True)
    forwards.build(x.shape)
    backwards.build(x.shape)
    backwards.load_state_dict(forwards.state_dict())
    assert_close(backwards(x).numpy(), forwards(x[:, ::-1].copy()).numpy(), 1e-12, "outputs")


def test_lstm_learns_to_compare_first_and_last_step():
    """Whether the first and the last value of a sequence of 8 signs agree: the first must be
    carried through the six distractors in the middle."""
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.choice([-1.0, 1.0], size=(512, 8, 1)).astype(np.float32)
    y = (x[:, 0, 0] == x[:, -1, 0]).astype(np.float32)[:, None]
    recurrent, head = LSTM(12), Dense(1)
    head(recurrent(x[:2]))
    opt = optim.Adam(recurrent.parameters() + head.parameters(), lr=0.02)
    for _ in range(10):
        for start in range(0, 512, 64):
            cost = F.binary_cross_entropy(head(recurrent(x[start:start + 64])), y[start:start + 64],
                                          from_logits=True)
            opt.zero_grad()
            cost.backward()
            opt.step()
    test = rng.choice([-1.0, 1.0], size=(256, 8, 1)).astype(np.float32)
    target = test[:, 0, 0] == test[:, -1, 0]
    with lamina.no_grad():
        predicted = head(recurrent(test)).numpy()[:, 0] > 0
    accuracy = float((predicted == target).mean())
    assert accuracy > 0.95, f"accuracy {accuracy:.3f}"


def test_defaults_and_initialisation():
    layer = LSTM(6)
    layer.build((None, 4, 3))
    assert layer.kernel.shape == (3, 24) and layer.recurrent_kernel.shape == (6, 24)
    assert layer.bias.shape == layer.recurrent_bias.shape == (24,)
    bias = layer.bias.numpy()
    assert np.all(bias[6:12] == 1) and np.all(bias[:6] == 0) and np.all(bias[12:] == 0)
    w = layer.recurrent_kernel.numpy().astype(np.float64)
    assert_close(w @ w.T, np.eye(6), 1e-5, "orthogonal rows")
    assert LSTM(6, unit_forget_bias=False)(np.zeros((1, 2, 3), np.float32)).shape == (1, 6)
    assert SimpleRNN(2, use_bias=False)(np.zeros((1, 2, 3), np.float32)).shape == (1, 2)
    assert "3 -> 6" in repr(layer)
    with pytest.raises(ValueError, match="activation"):
        SimpleRNN(3, activation="sigmoid")
    with pytest.raises(ValueError, match="units"):
        GRU(0)


# -- errors, configuration, state ---------------------------------------------------------------------
@pytest.mark.parametrize("cls", [SimpleRNN, GRU, LSTM])
def test_bad_inputs_raise_clear_errors(cls):
    layer = cls(4, name="rec")
    layer.build((None, 5, 3))
    for bad in (np.zeros((2, 3), np.float32), np.zeros((2, 5, 3, 1), np.float32)):
        shape = re.escape(str(bad.shape))
        with pytest.raises(ShapeError, match=rf"{cls.__name__} 'rec'.*shape {shape} \(float32\).*\(batch, time, 3\)"):
            layer(bad)
    with pytest.raises(ShapeError, match=r"shape \(2, 5, 7\) \(float32\).*the 3 features"):
        layer(np.zeros((2, 5, 7), np.float32))
    x = np.zeros((2, 5, 3), np.float32)
    bad_state = np.zeros((3, 4), np.float32)
    states = [bad_state, np.zeros((2, 4), np.float32)] if cls is LSTM else bad_state
    with pytest.raises(ShapeError, match=r"initial state h0 has shape \(3, 4\) \(float32\); expected \(batch, units\) "
                                         r"= \(2, 4\) for an input of shape \(2, 5, 3\)"):
        layer(x, initial_state=states)
    with pytest.raises(ValueError, match="initial_state must hold"):
        layer(x, initial_state=[np.zeros((2, 4))] * 3)
    with pytest.raises(ShapeError, match="has 7 features; the layer was built for 3"):
        layer.compute_output_shape((None, 5, 7))
    with pytest.raises(ShapeError, match=r"got an input shape \(None, 3\)"):
        cls(4).compute_output_shape((None, 3))


@pytest.mark.parametrize("layer", [SimpleRNN(3, activation="relu", return_sequences=True, go_backwards=True),
                                   GRU(3, return_state=True, kernel_init="he_normal", use_bias=False),
                                   LSTM(3, unit_forget_bias=False, bias_init=0.1, recurrent_init="xavier_normal"),
                                   Bidirectional(LSTM(3, return_sequences=True), merge_mode="sum")], ids=str)
def test_config_round_trip_and_state_dict(f64, layer):
    x = np.random.default_rng(10).standard_normal((2, 4, 2))
    before = layer(x)
    config = layer_to_config(layer)
    clone = layer_from_config(config)
    assert layer_to_config(clone) == config
    assert clone.compute_output_shape((None, 4, 2)) == layer.compute_output_shape((None, 4, 2))
    clone.build((None, 4, 2))
    clone.load_state_dict(layer.state_dict())
    after = clone(x)
    for a, b in zip(before if isinstance(before, list) else [before], after if isinstance(after, list) else [after]):
        assert_close(b.numpy(), a.numpy(), 0, "output after load_state_dict")


@pytest.mark.parametrize("cls", [SimpleRNN, GRU, LSTM])
def test_backward_twice_with_retained_graph(f64, cls):
    """Backward keeps the saved forward values intact (a second pass gives the same gradients)."""
    layer = cls(3, return_sequences=True)
    x = lamina.tensor(np.random.default_rng(11).standard_normal((2, 4, 2)), requires_grad=True, dtype=np.float64)
    out = layer(x)
    up = np.random.default_rng(12).standard_normal(out.shape)
    out.backward(up, retain_graph=True)
    first = [x.grad.copy()] + [p.grad.copy() for p in layer.parameters()]
    out.backward(up)
    second = [x.grad] + [p.grad for p in layer.parameters()]
    for a, b in zip(first, second):
        assert_close(b, 2 * a, 1e-12, "accumulated gradient")
