"""The one-step recurrent cells: against PyTorch's cells, against their own layers unrolled,
numerical gradients, errors, configuration, and a loop over an LSTMCell that learns."""

import re

import numpy as np
import pytest
import torch
from recurrent_checks import randomize

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import optim
from lamina.errors import ShapeError
from lamina.nn import Dense, layer_from_config, layer_to_config
from lamina.nn.cells import GRUCell, LSTMCell, SimpleRNNCell
from lamina.nn.recurrent import GRU, LSTM, SimpleRNN

KINDS = ["rnn_tanh", "rnn_relu", "gru", "lstm"]
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}
RTOL = {np.float32: 1e-5, np.float64: 1e-10}
TORCH_NAMES = (("kernel", "weight_ih"), ("recurrent_kernel", "weight_hh"), ("bias", "bias_ih"),
               ("recurrent_bias", "bias_hh"))


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)


def _cells(kind: str, units: int, d: int):
    """(lamina cell, torch cell) for a kind of cell."""
    if kind.startswith("rnn"):
        act = kind[4:]
        return SimpleRNNCell(units, activation=act), torch.nn.RNNCell(d, units, nonlinearity=act)
    if kind == "gru":
        return GRUCell(units), torch.nn.GRUCell(d, units)
    return LSTMCell(units), torch.nn.LSTMCell(d, units)


def _layer(kind: str, units: int, **kwargs):
    if kind.startswith("rnn"):
        return SimpleRNN(units, activation=kind[4:], **kwargs)
    return GRU(units, **kwargs) if kind == "gru" else LSTM(units, **kwargs)


def _cell_class(kind: str):
    return {"gru": GRUCell, "lstm": LSTMCell}.get(kind, SimpleRNNCell)


def _copy_to_torch(cell, module):
    """The cell's weights into the torch cell (transposed); returns the (lamina, torch) pairs."""
    with torch.no_grad():
        for ours, theirs in TORCH_NAMES:
            getattr(module, theirs).copy_(torch.from_numpy(np.ascontiguousarray(getattr(cell, ours).numpy().T)))
    return [(getattr(cell, ours), getattr(module, theirs)) for ours, theirs in TORCH_NAMES]


def _as_list(state):
    return list(state) if isinstance(state, tuple) else [state]


def _weighted_sum(outputs, upstreams, wrap):
    total = None
    for out, up in zip(outputs, upstreams):
        term = (out * wrap(up)).sum()
        total = term if total is None else total + term
    return total


# -- against PyTorch -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("given_state", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_three_steps_match_torch_cells(kind, given_state, dtype):
    """lamina's GRU puts the reset gate where torch.nn.GRUCell does (on a^<t-1> W_hn + b'_n),
    so all four cells are compared with torch's own cells directly."""
    lamina.set_default_dtype(dtype)
    n, d, units, steps = 3, 4, 5, 3
    rng = np.random.default_rng(1)
    cell, module = _cells(kind, units, d)
    cell.build((None, d))
    randomize(cell)
    module.to(TORCH_DTYPE[dtype])
    pairs = _copy_to_torch(cell, module)
    xs = [rng.standard_normal((n, d)).astype(dtype) for _ in range(steps)]
    count = 2 if kind == "lstm" else 1
    states = [rng.standard_normal((n, units)).astype(dtype) for _ in range(count)]

    xl = [lamina.tensor(x, requires_grad=True, dtype=dtype) for x in xs]
    sl = [lamina.tensor(s, requires_grad=True, dtype=dtype) for s in states]
    xt = [torch.tensor(x, requires_grad=True) for x in xs]
    st = [torch.tensor(s, requires_grad=True) for s in states]
    state_l = (tuple(sl) if count == 2 else sl[0]) if given_state else None
    state_t = (tuple(st) if count == 2 else st[0]) if given_state else None
    for x_l, x_t in zip(xl, xt):
        state_l, state_t = cell(x_l, state_l), module(x_t, state_t)
    outs, outs_t = _as_list(state_l), _as_list(state_t)

    rtol = RTOL[dtype]
    assert len(outs) == len(outs_t) == count
    ups = [rng.standard_normal((n, units)).astype(dtype) for _ in range(count)]
    for k, (a, b) in enumerate(zip(outs, outs_t)):
        assert a.dtype == dtype and a.shape == (n, units)
        assert_close(a.numpy(), b.detach().numpy(), rtol, f"state {k}")
    _weighted_sum(outs, ups, lambda u: lamina.tensor(u, dtype=dtype)).backward()
    _weighted_sum(outs_t, ups, torch.from_numpy).backward()
    for t, (a, b) in enumerate(zip(xl, xt)):
        assert_close(a.grad, b.grad.numpy(), rtol, f"gradient of x^<{t + 1}>")
    if given_state:
        for k, (a, b) in enumerate(zip(sl, st)):
            assert_close(a.grad, b.grad.numpy(), rtol, f"gradient of initial state {k}")
    for ours, theirs in pairs:
        assert ours.grad is not None
        assert_close(ours.grad, theirs.grad.numpy().T, rtol, "weight gradient")


# -- numerical gradients ---------------------------------------------------------------------------
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_wrt_input_state_and_weights(f64, kind, use_bias):
    rng = np.random.default_rng(4)
    cell = _cell_class(kind)(4, use_bias=use_bias, **({"activation": kind[4:]} if kind.startswith("rnn") else {}))
    cell.build((None, 3))
    randomize(cell, seed=5)
    x, h, c = (lamina.tensor(rng.standard_normal(s), requires_grad=True, dtype=np.float64)
               for s in ((2, 3), (2, 4), (2, 4)))
    params = cell.parameters()
    assert len(params) == (4 if use_bias else 2)
    if kind == "lstm":
        # both outputs at once: h and c side by side
        assert lamina.gradcheck(lambda x_, h_, c_, *_: F.concat(list(cell(x_, (h_, c_))), axis=1), x, h, c, *params)
        assert lamina.gradcheck(lambda x_, *_: F.concat(list(cell(x_)), axis=1), x, *params)
    else:
        assert lamina.gradcheck(lambda x_, h_, *_: cell(x_, h_), x, h, *params)
        assert lamina.gradcheck(lambda x_, *_: cell(x_), x, *params)


# -- one step of the layer ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_unrolled_cell_reproduces_the_layer(f64, kind):
    n, steps, d, units = 2, 5, 3, 4
    rng = np.random.default_rng(6)
    layer = _layer(kind, units, return_sequences=True, return_state=True)
    layer.build((None, steps, d))
    randomize(layer, seed=7)
    cell = _cell_class(kind).from_layer(layer)
    count = 2 if kind == "lstm" else 1
    x = rng.standard_normal((n, steps, d))
    states = [rng.standard_normal((n, units)) for _ in range(count)]

    x_layer = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    s_layer = [lamina.tensor(s, requires_grad=True, dtype=np.float64) for s in states]
    sequence, *finals = layer(x_layer, initial_state=s_layer)
    x_cell = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    s_cell = [lamina.tensor(s, requires_grad=True, dtype=np.float64) for s in states]
    state = tuple(s_cell) if count == 2 else s_cell[0]
    outputs = []
    for t in range(steps):
        state = cell(x_cell[:, t], state)
        outputs.append(_as_list(state)[0])
    unrolled = [F.stack(outputs, axis=1), *_as_list(state)]

    layer_outputs = [sequence, *finals]
    assert len(unrolled) == len(layer_outputs)
    for k, (a, b) in enumerate(zip(unrolled, layer_outputs)):
        assert_close(a.numpy(), b.numpy(), 1e-12, f"output {k}")
    ups = [rng.standard_normal(a.shape) for a in unrolled]
    _weighted_sum(unrolled, ups, lambda u: lamina.tensor(u, dtype=np.float64)).backward()
    _weighted_sum(layer_outputs, ups, lambda u: lamina.tensor(u, dtype=np.float64)).backward()
    assert_close(x_cell.grad, x_layer.grad, 1e-12, "input gradient")
    for k, (a, b) in enumerate(zip(s_cell, s_layer)):
        assert_close(a.grad, b.grad, 1e-12, f"initial state {k} gradient")
    layer_params = dict(layer.named_parameters())
    assert [name for name, _ in cell.named_parameters()] == list(layer_params)
    for name, p in cell.named_parameters():
        assert_close(p.grad, layer_params[name].grad, 1e-12, f"gradient of {name}")


@pytest.mark.parametrize("kind", KINDS)
def test_from_layer_copies_options_and_weights(kind):
    d, units = 3, 4
    lamina.set_default_dtype(np.float64)
    layer = _layer(kind, units, use_bias=kind != "rnn_tanh", go_backwards=True)
    layer.build((None, 5, d))
    layer.kernel.freeze()
    lamina.set_default_dtype(np.float32)
    cell = _cell_class(kind).from_layer(layer, name="step")
    assert cell.name == "step" and cell.built and cell.units == units
    assert cell.use_bias == layer.use_bias
    assert getattr(cell, "activation", None) == getattr(layer, "activation", None)
    assert not cell.kernel.trainable and cell.recurrent_kernel.trainable
    for name, value in layer.state_dict().items():
        ours = cell.state_dict()[name]
        assert ours.dtype == np.float64, "the layer's dtype is kept"
        assert np.array_equal(ours, value) and not np.shares_memory(ours, value), name
    # the layer's state dict also loads straight into a cell built for the same features
    lamina.set_default_dtype(np.float64)
    other = _cell_class(kind)(units, use_bias=layer.use_bias, **({"activation": kind[4:]}
                                                                 if kind.startswith("rnn") else {}))
    other.build((None, d))
    other.load_state_dict(layer.state_dict())
    x = np.random.default_rng(8).standard_normal((2, d))
    for a, b in zip(_as_list(cell(x)), _as_list(other(x))):
        assert_close(a.numpy(), b.numpy(), 0, "output after load_state_dict")


def test_from_layer_refuses_other_layers():
    built = GRU(3)
    built.build((None, 2, 2))
    with pytest.raises(TypeError, match="LSTMCell.from_layer: expected a LSTM layer, got GRU"):
        LSTMCell.from_layer(built)
    with pytest.raises(TypeError, match="SimpleRNNCell.from_layer: expected a SimpleRNN layer, got Dense"):
        SimpleRNNCell.from_layer(Dense(3))
    with pytest.raises(ValueError, match=r"GRUCell.from_layer: the GRU 'enc' layer has no weights yet"):
        GRUCell.from_layer(GRU(3, name="enc"))


# -- behaviour ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_missing_state_means_zeros(f64, kind):
    cell = _cell_class(kind)(4)
    x = np.random.default_rng(9).standard_normal((2, 3))
    zeros = np.zeros((2, 4))
    explicit = cell(x, (zeros, zeros) if kind == "lstm" else zeros)
    for a, b in zip(_as_list(cell(x)), _as_list(explicit)):
        assert_close(a.numpy(), b.numpy(), 0, "zero state")
    if kind == "lstm":   # each half of the pair may be None too
        for a, b in zip(cell(x, (None, zeros)), explicit):
            assert_close(a.numpy(), b.numpy(), 0, "zero h")


def test_defaults_and_initialisation():
    cell = LSTMCell(6)
    cell.build((None, 3))
    assert cell.kernel.shape == (3, 24) and cell.recurrent_kernel.shape == (6, 24)
    assert cell.bias.shape == cell.recurrent_bias.shape == (24,)
    bias = cell.bias.numpy()
    assert np.all(bias[6:12] == 1) and np.all(bias[:6] == 0) and np.all(bias[12:] == 0)
    w = cell.recurrent_kernel.numpy().astype(np.float64)
    assert_close(w @ w.T, np.eye(6), 1e-5, "orthogonal rows")
    assert np.all(LSTMCell(6, unit_forget_bias=False)(np.zeros((1, 3), np.float32))[1].numpy() == 0)
    assert GRUCell(5)(np.zeros((2, 3), np.float32)).shape == (2, 5)
    assert SimpleRNNCell(2, use_bias=False)(np.zeros((1, 3), np.float32)).shape == (1, 2)
    assert repr(cell) == "LSTMCell(3 -> 6)"
    assert cell.compute_output_shape((None, 3)) == [(None, 6), (None, 6)]
    assert GRUCell(5).compute_output_shape((7, 3)) == (7, 5)
    assert cell.macs([(3,), (6,), (6,)], [(6,), (6,)]) == 4 * 6 * (3 + 6)


# -- errors, configuration ------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [SimpleRNNCell, GRUCell, LSTMCell])
def test_bad_inputs_raise_clear_errors(cls):
    label = f"{cls.__name__} 'dec'"
    with pytest.raises(ShapeError, match=rf"{label}: got an input shape \(2, 5, 3\); expected \(batch, features\)"):
        cls(4, name="dec")(np.zeros((2, 5, 3), np.float32))
    cell = cls(4, name="dec")
    cell.build((None, 3))
    for bad in (np.zeros((2, 5, 3), np.float32), np.zeros((3,), np.float32)):
        shape = re.escape(str(bad.shape))
        with pytest.raises(ShapeError, match=rf"{label}: got an input of shape {shape} \(float32\); expected "
                                             r"\(batch, 3\): one time step"):
            cell(bad)
    with pytest.raises(ShapeError, match=rf"{label}: .*shape \(2, 7\) \(float32\).*the 3 features the cell"):
        cell(np.zeros((2, 7), np.float32))
    x = np.zeros((2, 3), np.float32)
    good, bad = np.zeros((2, 4), np.float32), np.zeros((3, 4), np.float32)
    bad_states = [(bad, good), (good, bad)] if cls is LSTMCell else [bad]
    for state, name in zip(bad_states, "hc"):
        with pytest.raises(ShapeError, match=rf"{label}: the state {name} has shape \(3, 4\) \(float32\); expected "
                                             r"\(batch, units\) = \(2, 4\) for an input of shape \(2, 3\)"):
            cell(x, state)
    wrong_count = good if cls is LSTMCell else (good, good)
    form = r"\(h, c\)" if cls is LSTMCell else r"\(h\)"
    with pytest.raises(ValueError, match=rf"{label}: the state must be {form}.*got {1 if cls is LSTMCell else 2}"):
        cell(x, wrong_count)
    with pytest.raises(ShapeError, match=r"has 7 features; the cell was built for 3"):
        cell.compute_output_shape((None, 7))
    with pytest.raises(ValueError, match=rf"{cls.__name__}: units must be a positive int, got 0"):
        cls(0)


def test_bad_activation():
    with pytest.raises(ValueError, match=r"SimpleRNNCell: activation must be one of \('tanh', 'relu'\), got 'sigmoid'"):
        SimpleRNNCell(3, activation="sigmoid")


@pytest.mark.parametrize("cell", [SimpleRNNCell(3, activation="relu", kernel_init="he_normal", name="s"),
                                  GRUCell(3, use_bias=False),
                                  LSTMCell(3, unit_forget_bias=False, bias_init=0.1, recurrent_init="xavier_normal")],
                         ids=str)
def test_config_round_trip_and_state_dict(f64, cell):
    rng = np.random.default_rng(11)
    x, h = rng.standard_normal((2, 2)), rng.standard_normal((2, 3))
    state = (h, h) if isinstance(cell, LSTMCell) else h
    before = _as_list(cell(x, state))
    config = layer_to_config(cell)
    clone = layer_from_config(config)
    assert type(clone) is type(cell) and layer_to_config(clone) == config
    assert clone.compute_output_shape((None, 2)) == cell.compute_output_shape((None, 2))
    clone.build((None, 2))
    clone.load_state_dict(cell.state_dict())
    for a, b in zip(before, _as_list(clone(x, state))):
        assert_close(b.numpy(), a.numpy(), 0, "output after load_state_dict")


# -- learning -----------------------------------------------------------------------------------
def test_lstm_cell_loop_learns_to_remember_the_first_value():
    """A Python loop over an LSTMCell reads 6 values in [-1, 1] and must output the first one,
    carried through the five that follow."""
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    steps = 6
    x = rng.uniform(-1, 1, size=(512, steps, 1)).astype(np.float32)
    cell, head = LSTMCell(12), Dense(1)

    def predict(batch):
        state = None
        for t in range(steps):
            state = cell(batch[:, t], state)
        return head(state[0])

    predict(x[:2])
    opt = optim.Adam(cell.parameters() + head.parameters(), lr=0.01)
    for _ in range(15):
        for start in range(0, 512, 32):
            cost = F.mean_squared_error(predict(x[start:start + 32]), x[start:start + 32, 0])
            opt.zero_grad()
            cost.backward()
            opt.step()
    test = rng.uniform(-1, 1, size=(256, steps, 1)).astype(np.float32)
    with lamina.no_grad():
        error = float(np.mean((predict(test).numpy() - test[:, 0]) ** 2))
    baseline = float(np.var(test[:, 0, 0]))      # always answering the mean
    assert error < 0.05 * baseline, f"mean squared error {error:.4f} vs baseline {baseline:.4f}"
