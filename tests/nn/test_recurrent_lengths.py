"""Variable-length (post-padded) sequences in the recurrent layers: ``layer(x, lengths=...)``
against PyTorch's packed sequences, against each sequence run alone, gradient checks, errors
and a small learning task that needs the lengths."""

import re

import numpy as np
import pytest
import torch
from recurrent_checks import copy_to_torch, randomize
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import optim
from lamina.errors import ShapeError
from lamina.functional.recurrent import lstm, reverse_padded
from lamina.nn import Dense, Embedding
from lamina.nn.recurrent import GRU, LSTM, Bidirectional, SimpleRNN

TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}
RTOL = {np.float32: 1e-5, np.float64: 1e-9}
CELLS = ["rnn_tanh", "rnn_relu", "gru", "lstm"]
LENGTHS = np.array([5, 1, 3, 2, 5, 4])          # T = 5: full, single-step and in-between rows


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)


def _layer(cell: str, units: int, **kwargs):
    if cell.startswith("rnn"):
        return SimpleRNN(units, activation=cell[4:], **kwargs)
    return GRU(units, **kwargs) if cell == "gru" else LSTM(units, **kwargs)


def _torch_module(cell: str, d: int, units: int, bidirectional: bool):
    if cell.startswith("rnn"):
        return torch.nn.RNN(d, units, batch_first=True, nonlinearity=cell[4:], bidirectional=bidirectional)
    cls = torch.nn.GRU if cell == "gru" else torch.nn.LSTM
    return cls(d, units, batch_first=True, bidirectional=bidirectional)


def _reverse_index(lengths, steps):
    """index[i, t] = lengths[i] - 1 - t for t < lengths[i], t otherwise (numpy, for the tests)."""
    t = np.arange(steps)[None, :]
    last = np.asarray(lengths)[:, None] - 1
    return np.where(t <= last, last - t, t)


def _run_torch_packed(module, x, lengths, states, lstm_cell: bool):
    """PyTorch on the packed sequence: (output (N, T, H or 2H) with zeros at padding, h_n, c_n or None)."""
    steps = x.shape[1]
    packed = pack_padded_sequence(x, torch.as_tensor(lengths), batch_first=True, enforce_sorted=False)
    if lstm_cell:
        out, (h_n, c_n) = module(packed, tuple(states) if states else None)
    else:
        out, h_n = module(packed, states[0] if states else None)
        c_n = None
    seq, _ = pad_packed_sequence(out, batch_first=True, total_length=steps)
    return seq, h_n, c_n


def _weighted_sum(outs, outs_t, rng, dtype):
    """sum(out * r) over the outputs, with the same random r in lamina and in torch."""
    total, total_t = None, None
    for a, b in zip(outs, outs_t):
        up = rng.standard_normal(a.shape).astype(dtype)
        term, term_t = (a * lamina.tensor(up, dtype=dtype)).sum(), (b * torch.from_numpy(up)).sum()
        total = term if total is None else total + term
        total_t = term_t if total_t is None else total_t + term_t
    return total, total_t


# -- against PyTorch's packed sequences -------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backwards", [False, True], ids=["forward", "go_backwards"])
@pytest.mark.parametrize("cell", CELLS)
def test_matches_torch_packed(cell, backwards, dtype):
    """Outputs (zeros at padding), final states and every gradient. The go_backwards layer is
    compared with the reverse direction of a bidirectional torch module."""
    lamina.set_default_dtype(dtype)
    n, steps, d, units = len(LENGTHS), 5, 3, 4
    rng = np.random.default_rng(1)
    layer = _layer(cell, units, return_sequences=True, return_state=True, go_backwards=backwards)
    layer.build((None, steps, d))
    randomize(layer)
    module = _torch_module(cell, d, units, bidirectional=backwards).to(TORCH_DTYPE[dtype])
    pairs = copy_to_torch(layer, module, "_reverse" if backwards else "")
    x = rng.standard_normal((n, steps, d)).astype(dtype)          # the padding holds values too
    is_lstm = cell == "lstm"
    states = [rng.standard_normal((n, units)).astype(dtype) for _ in range(2 if is_lstm else 1)]

    xl = lamina.tensor(x, requires_grad=True, dtype=dtype)
    sl = [lamina.tensor(s, requires_grad=True, dtype=dtype) for s in states]
    outs = layer(xl, initial_state=sl, lengths=LENGTHS)

    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s, requires_grad=True) for s in states]
    if backwards:       # the forward direction starts from zeros; only the reverse one is compared
        given = [torch.stack([torch.zeros_like(s), s]) for s in st]
    else:
        given = [s[None] for s in st]
    seq_t, h_n, c_n = _run_torch_packed(module, xt, LENGTHS, given, is_lstm)
    k = 1 if backwards else 0
    if backwards:       # torch gives time order; the layer gives its reading order
        index = torch.as_tensor(_reverse_index(LENGTHS, steps))
        seq_t = torch.gather(seq_t[..., units:], 1, index[..., None].expand(-1, -1, units))
    outs_t = [seq_t, h_n[k]] + ([c_n[k]] if is_lstm else [])

    rtol = RTOL[dtype]
    assert len(outs) == len(outs_t)
    seq = outs[0].numpy()
    padded = np.arange(steps)[None, :] >= LENGTHS[:, None]
    assert np.all(seq[padded] == 0), "outputs at padded steps are zeros"
    for j, (a, b) in enumerate(zip(outs, outs_t)):
        assert a.dtype == dtype
        assert_close(a.numpy(), b.detach().numpy(), rtol, f"output {j}")
    total, total_t = _weighted_sum(outs, outs_t, rng, dtype)
    total.backward()
    total_t.backward()
    assert_close(xl.grad, xt.grad.numpy(), rtol, "input gradient")
    assert np.all(xl.grad[padded] == 0), "padded inputs get no gradient"
    for j, (s, s_t) in enumerate(zip(sl, st)):
        assert_close(s.grad, s_t.grad.numpy(), rtol, f"initial state {j} gradient")
    for ours, theirs in pairs:
        assert_close(ours.grad, theirs.grad.numpy().T, rtol, "weight gradient")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_bidirectional_matches_torch_packed(cell, dtype):
    lamina.set_default_dtype(dtype)
    n, steps, d, units = len(LENGTHS), 5, 3, 4
    rng = np.random.default_rng(2)
    layer = Bidirectional(_layer(cell, units, return_sequences=True, return_state=True))
    layer.build((None, steps, d))
    randomize(layer)
    module = _torch_module(cell, d, units, bidirectional=True).to(TORCH_DTYPE[dtype])
    pairs = copy_to_torch(layer.forward_layer, module) + copy_to_torch(layer.backward_layer, module, "_reverse")
    x = rng.standard_normal((n, steps, d)).astype(dtype)
    xl = lamina.tensor(x, requires_grad=True, dtype=dtype)
    xt = torch.tensor(x, requires_grad=True)
    outs = layer(xl, lengths=LENGTHS)
    is_lstm = cell == "lstm"
    seq_t, h_n, c_n = _run_torch_packed(module, xt, LENGTHS, [], is_lstm)
    finals_t = [h_n[0], c_n[0], h_n[1], c_n[1]] if is_lstm else [h_n[0], h_n[1]]
    outs_t = [seq_t, *finals_t]
    assert outs[0].shape == (n, steps, 2 * units)
    rtol = RTOL[dtype]
    for j, (a, b) in enumerate(zip(outs, outs_t)):
        assert_close(a.numpy(), b.detach().numpy(), rtol, f"output {j}")
    total, total_t = _weighted_sum(outs, outs_t, rng, dtype)
    total.backward()
    total_t.backward()
    assert_close(xl.grad, xt.grad.numpy(), rtol, "input gradient")
    for ours, theirs in pairs:
        assert_close(ours.grad, theirs.grad.numpy().T, rtol, "weight gradient")


# -- against each sequence run alone ------------------------------------------------------------
@pytest.mark.parametrize("backwards", [False, True], ids=["forward", "go_backwards"])
@pytest.mark.parametrize("cell", CELLS)
def test_same_as_each_sequence_alone(f64, cell, backwards):
    """Sample i with lengths[i] = L gives what its first L steps give alone: the outputs (then
    zeros), the final states and the input gradient (independent of PyTorch)."""
    n, steps, d, units = len(LENGTHS), 5, 3, 4
    rng = np.random.default_rng(3)
    layer = _layer(cell, units, return_sequences=True, return_state=True, go_backwards=backwards)
    layer.build((None, steps, d))
    randomize(layer, seed=4)
    x = rng.standard_normal((n, steps, d))
    h0 = rng.standard_normal((n, units))
    count = 2 if cell == "lstm" else 1
    xl = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    outs = layer(xl, initial_state=[h0] * count, lengths=LENGTHS)
    up = rng.standard_normal(outs[0].shape)
    total = (outs[0] * lamina.tensor(up)).sum()
    for final in outs[1:]:
        total = total + final.sum()
    total.backward()
    for i, length in enumerate(LENGTHS):
        xi = lamina.tensor(x[i:i + 1, :length], requires_grad=True, dtype=np.float64)
        alone = layer(xi, initial_state=[h0[i:i + 1]] * count)
        assert_close(outs[0].numpy()[i, :length], alone[0].numpy()[0], 1e-12, f"outputs of sample {i}")
        assert np.all(outs[0].numpy()[i, length:] == 0)
        for j in range(1, 1 + count):
            assert_close(outs[j].numpy()[i], alone[j].numpy()[0], 1e-12, f"final state {j} of sample {i}")
        total_i = (alone[0] * lamina.tensor(up[i:i + 1, :length])).sum()
        for final in alone[1:]:
            total_i = total_i + final.sum()
        total_i.backward()
        assert_close(xl.grad[i, :length], xi.grad[0], 1e-12, f"input gradient of sample {i}")


def test_full_lengths_and_none_agree(f64):
    x = np.random.default_rng(5).standard_normal((3, 4, 2))
    layer = LSTM(3, return_sequences=True, return_state=True)
    layer.build(x.shape)
    randomize(layer, seed=6)
    for a, b in zip(layer(x), layer(x, lengths=np.full(3, 4))):
        assert_close(b.numpy(), a.numpy(), 0, "all lengths T")


def test_reverse_padded_is_its_own_inverse(f64):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((len(LENGTHS), 5, 2))
    xl = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    y = reverse_padded(xl, LENGTHS)
    expected = np.take_along_axis(x, _reverse_index(LENGTHS, 5)[..., None], axis=1)
    assert_close(y.numpy(), expected, 0, "reversed")
    assert_close(reverse_padded(y, LENGTHS).numpy(), x, 0, "twice")
    assert lamina.gradcheck(lambda a: reverse_padded(a, LENGTHS), xl)


# -- gradient checks ----------------------------------------------------------------------------------
def _flat_outputs(outs):
    """One tensor holding every output of a layer (gradcheck takes one)."""
    outs = outs if isinstance(outs, list) else [outs]
    return F.concat([o.reshape(o.shape[0], -1) for o in outs], axis=1)


@pytest.mark.parametrize("layer", [SimpleRNN(3, return_sequences=True, return_state=True),
                                   SimpleRNN(3, activation="relu", go_backwards=True, return_sequences=True),
                                   GRU(3, return_sequences=True, return_state=True),
                                   GRU(3, go_backwards=True, return_sequences=True, return_state=True),
                                   LSTM(3, return_sequences=True, return_state=True),
                                   LSTM(3, go_backwards=True, return_state=True, use_bias=False),
                                   Bidirectional(LSTM(2, return_sequences=True, return_state=True)),
                                   Bidirectional(GRU(2, return_sequences=True), merge_mode="sum")], ids=str)
def test_gradcheck_with_lengths(f64, layer):
    rng = np.random.default_rng(8)
    lengths = np.array([3, 1, 2])
    x = lamina.tensor(rng.standard_normal((3, 3, 2)), requires_grad=True, dtype=np.float64)
    layer.build((3, 3, 2))
    randomize(layer, seed=9)
    sub = [layer.forward_layer, layer.backward_layer] if isinstance(layer, Bidirectional) else [layer]
    count = len(sub[0].state_names) * len(sub)
    states = [lamina.tensor(rng.standard_normal((3, sub[0].units)), requires_grad=True, dtype=np.float64)
              for _ in range(count)]
    params = layer.parameters()
    assert lamina.gradcheck(lambda x_, *s: _flat_outputs(layer(x_, initial_state=list(s[:count]), lengths=lengths)),
                            x, *states, *params)


# -- errors ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [SimpleRNN, GRU, LSTM])
def test_bad_lengths_raise_clear_errors(cls):
    layer = cls(4, name="rec")
    x = np.zeros((2, 5, 3), np.float32)
    layer.build(x.shape)
    label = f"{cls.__name__} 'rec'"
    with pytest.raises(ShapeError, match=rf"{label}: lengths must have shape \(N,\) = \(2,\).*x of shape "
                                         rf"\(2, 5, 3\), got shape \(3,\)"):
        layer(x, lengths=np.array([1, 2, 3]))
    with pytest.raises(ShapeError, match=r"got shape \(2, 1\)"):
        layer(x, lengths=np.array([[1], [2]]))
    with pytest.raises(TypeError, match=rf"{label}: lengths must be integers.*dtype float64 and shape \(2,\)"):
        layer(x, lengths=np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=re.escape(f"{label}: lengths must lie in [1, T] = [1, 5] for x of shape "
                                                   "(2, 5, 3), got lengths[1] = 0")):
        layer(x, lengths=[3, 0])
    with pytest.raises(ValueError, match=re.escape("got lengths[0] = 6")):
        layer(x, lengths=[6, 2])
    with pytest.raises(ValueError, match=r"Bidirectional.*got lengths\[1\] = 9"):
        Bidirectional(cls(2))(x, lengths=[1, 9])
    w_x, w_h = np.zeros((3, 8), np.float32), np.zeros((2, 8), np.float32)
    with pytest.raises(ValueError, match=r"^lstm: lengths must lie in \[1, T\]"):
        lstm(x, w_x=w_x, w_h=w_h, lengths=[0, 1])


# -- learning -------------------------------------------------------------------------------------------
def test_classifier_learns_the_last_real_token():
    """Is the last real token of a post-padded sequence of 2 to 20 word ids token 1? With the
    lengths the final state sits right after that token; without them up to 18 padding steps
    (id 0) follow it, and the same training stays near the 75 % of always answering no."""
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)

    def batch(count):
        lengths = rng.integers(2, 21, size=count)
        ids = rng.integers(1, 5, size=(count, 20))
        ids[np.arange(20)[None, :] >= lengths[:, None]] = 0
        return ids, (ids[np.arange(count), lengths - 1] == 1).astype(np.float32)[:, None]

    ids, y = batch(512)
    embed, recurrent, head = Embedding(5, 8, padding_idx=0), GRU(8), Dense(1)
    head(recurrent(embed(ids[:2])))
    opt = optim.Adam(embed.parameters() + recurrent.parameters() + head.parameters(), lr=0.03)

    def predict(ids_):
        return head(recurrent(embed(ids_), lengths=(ids_ != 0).sum(axis=1)))

    for _ in range(2):
        for start in range(0, 512, 64):
            cost = F.binary_cross_entropy(predict(ids[start:start + 64]), y[start:start + 64], from_logits=True)
            opt.zero_grad()
            cost.backward()
            opt.step()
    test_ids, test_y = batch(256)
    with lamina.no_grad():
        predicted = predict(test_ids).numpy()[:, 0] > 0
    accuracy = float((predicted == (test_y[:, 0] > 0.5)).mean())
    assert accuracy > 0.97, f"accuracy {accuracy:.3f}"
