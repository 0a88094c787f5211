"""The recurrent layers on a PackedSequence input against PyTorch's on the same packed batch
and weights (float64): packed output sequences, final states in the original order, and the
gradients of the inputs, initial states and weights; what each return_* option gives, and the
errors."""

import numpy as np
import pytest
import torch
from recurrent_checks import copy_to_torch, randomize
from torch.nn.utils import rnn

import lamina
from helpers import assert_close
from lamina.errors import ShapeError
from lamina.nn.packed_sequence import PackedSequence, pack_padded_sequence, pad_packed_sequence
from lamina.nn.recurrent import GRU, LSTM, Bidirectional, SimpleRNN

RTOL = 1e-10
CELLS = ["rnn_tanh", "rnn_relu", "gru", "lstm"]
# (seed, lengths, enforce_sorted)
BATCHES = [
    (0, [4, 1, 3, 4, 2], False),
    (1, [5, 5, 3, 2, 2, 1], True),
    (2, [2, 3, 1, 3], False),
]


@pytest.fixture(autouse=True)
def _float64(float64):
    """Every comparison here runs in float64."""


def _layer(cell: str, units: int, **kwargs):
    if cell.startswith("rnn"):
        return SimpleRNN(units, activation=cell[4:], **kwargs)
    return GRU(units, **kwargs) if cell == "gru" else LSTM(units, **kwargs)


def _torch_module(cell: str, d: int, units: int, bidirectional: bool):
    if cell.startswith("rnn"):
        module = torch.nn.RNN(d, units, batch_first=True, nonlinearity=cell[4:], bidirectional=bidirectional)
    else:
        cls = torch.nn.GRU if cell == "gru" else torch.nn.LSTM
        module = cls(d, units, batch_first=True, bidirectional=bidirectional)
    return module.double()


def _inputs(seed: int, lengths, d: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((len(lengths), max(lengths), d))
    return rng, x


def _backward_both(ours, theirs, rng) -> None:
    """sum(out * r) over the pairs of outputs, the same random r in lamina and torch, then backward."""
    total, total_t = None, None
    for a, b in zip(ours, theirs):
        up = rng.standard_normal(tuple(b.shape))
        term, term_t = (a * lamina.tensor(up, dtype=np.float64)).sum(), (b * torch.from_numpy(up)).sum()
        total = term if total is None else total + term
        total_t = term_t if total_t is None else total_t + term_t
    total.backward()
    total_t.backward()


def _same_layout(ours: PackedSequence, theirs) -> None:
    np.testing.assert_array_equal(ours.batch_sizes, theirs.batch_sizes.numpy())
    if theirs.sorted_indices is None:
        assert ours.sorted_indices is None and ours.unsorted_indices is None
    else:
        np.testing.assert_array_equal(ours.sorted_indices, theirs.sorted_indices.numpy())
        np.testing.assert_array_equal(ours.unsorted_indices, theirs.unsorted_indices.numpy())


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("cell", CELLS)
def test_layer_on_packed_matches_torch(cell, batch):
    """Packed output, final states (original order) from given initial states, and every
    gradient, through pack_padded_sequence from the padded input."""
    seed, lengths, enforce_sorted = batch
    d, units = 3, 4
    rng, x = _inputs(seed, lengths, d)
    layer = _layer(cell, units, return_sequences=True, return_state=True)
    layer.build((None, None, d))
    randomize(layer, seed)
    module = _torch_module(cell, d, units, bidirectional=False)
    pairs = copy_to_torch(layer, module)
    count = 2 if cell == "lstm" else 1
    states = [rng.standard_normal((len(lengths), units)) for _ in range(count)]

    xl = lamina.tensor(x, requires_grad=True)
    sl = [lamina.tensor(s, requires_grad=True) for s in states]
    packed_l = pack_padded_sequence(xl, lengths, enforce_sorted=enforce_sorted)
    outs = layer(packed_l, initial_state=sl)

    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s, requires_grad=True) for s in states]
    packed_t = rnn.pack_padded_sequence(xt, torch.as_tensor(lengths), batch_first=True,
                                        enforce_sorted=enforce_sorted)
    hx = (st[0][None], st[1][None]) if cell == "lstm" else st[0][None]
    out_t, finals_t = module(packed_t, hx)
    finals_t = [f[0] for f in finals_t] if cell == "lstm" else [finals_t[0]]

    assert isinstance(outs[0], PackedSequence) and len(outs) == 1 + count
    _same_layout(outs[0], out_t)
    ours = [outs[0].data, *outs[1:]]
    theirs = [out_t.data, *finals_t]
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert_close(a.numpy(), b.detach().numpy(), RTOL, f"output {k}")
    _backward_both(ours, theirs, rng)
    assert_close(xl.grad, xt.grad.numpy(), RTOL, "input gradient")
    for k, (s, s_t) in enumerate(zip(sl, st)):
        assert_close(s.grad, s_t.grad.numpy(), RTOL, f"initial state {k} gradient")
    for mine, ref in pairs:
        assert_close(mine.grad, ref.grad.numpy().T, RTOL, "weight gradient")


@pytest.mark.parametrize("batch", BATCHES[::2])
@pytest.mark.parametrize("cell", CELLS)
def test_bidirectional_on_packed_matches_torch(cell, batch):
    """merge_mode='concat' is torch's bidirectional output; the finals are [forward ...,
    backward ...] where torch stacks them as h_n[0], h_n[1]."""
    seed, lengths, enforce_sorted = batch
    d, units = 3, 2
    rng, x = _inputs(seed, lengths, d)
    layer = Bidirectional(_layer(cell, units, return_sequences=True, return_state=True))
    layer.build((None, None, d))
    randomize(layer, seed)
    module = _torch_module(cell, d, units, bidirectional=True)
    pairs = copy_to_torch(layer.forward_layer, module) + copy_to_torch(layer.backward_layer, module, "_reverse")

    xl = lamina.tensor(x, requires_grad=True)
    outs = layer(pack_padded_sequence(xl, lengths, enforce_sorted=enforce_sorted))
    xt = torch.tensor(x, requires_grad=True)
    out_t, finals_t = module(rnn.pack_padded_sequence(xt, torch.as_tensor(lengths), batch_first=True,
                                                      enforce_sorted=enforce_sorted))
    if cell == "lstm":
        h_n, c_n = finals_t
        finals_t = [h_n[0], c_n[0], h_n[1], c_n[1]]
    else:
        finals_t = [finals_t[0], finals_t[1]]

    _same_layout(outs[0], out_t)
    ours, theirs = [outs[0].data, *outs[1:]], [out_t.data, *finals_t]
    assert len(ours) == len(theirs)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert_close(a.numpy(), b.detach().numpy(), RTOL, f"output {k}")
    _backward_both(ours, theirs, rng)
    assert_close(xl.grad, xt.grad.numpy(), RTOL, "input gradient")
    for mine, ref in pairs:
        assert_close(mine.grad, ref.grad.numpy().T, RTOL, "weight gradient")


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_go_backwards_packs_the_reading_order(cell):
    """go_backwards on a packed input: each packed sequence holds the outputs from its last
    step down, i.e. the reverse direction of torch's bidirectional module read backwards."""
    lengths = [2, 4, 1, 3]
    d, units = 3, 2
    rng, x = _inputs(5, lengths, d)
    layer = _layer(cell, units, return_sequences=True, go_backwards=True)
    layer.build((None, None, d))
    randomize(layer, 5)
    module = _torch_module(cell, d, units, bidirectional=True)
    copy_to_torch(layer, module, "_reverse")
    packed = layer(pack_padded_sequence(lamina.tensor(x), lengths, enforce_sorted=False))
    out_t, _ = module(rnn.pack_padded_sequence(torch.tensor(x), torch.as_tensor(lengths), batch_first=True,
                                               enforce_sorted=False))
    ours, got_lengths = pad_packed_sequence(packed)
    theirs, _ = rnn.pad_packed_sequence(out_t, batch_first=True)
    np.testing.assert_array_equal(got_lengths, lengths)
    for i, n in enumerate(lengths):
        assert_close(ours.numpy()[i, :n], theirs.detach().numpy()[i, :n, units:][::-1], RTOL, f"sequence {i}")


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("return_state", [False, True])
def test_outputs_follow_the_return_options(return_sequences, return_state):
    """Only output sequences are packed; every result equals the padded run with lengths."""
    lengths = np.array([3, 1, 4])
    d, units = 2, 3
    _, x = _inputs(6, lengths, d)
    layer = LSTM(units, return_sequences=return_sequences, return_state=return_state)
    layer.build((None, None, d))
    packed = pack_padded_sequence(lamina.tensor(x), lengths, enforce_sorted=False)
    got = layer(packed)
    expected = layer(lamina.tensor(x), lengths=lengths)
    got_list = got if return_state else [got]
    expected_list = expected if return_state else [expected]
    assert len(got_list) == len(expected_list) == (3 if return_state else 1)
    first = got_list[0]
    assert isinstance(first, PackedSequence) == return_sequences
    if return_sequences:
        padded, _ = pad_packed_sequence(first)
        np.testing.assert_array_equal(padded.numpy(), expected_list[0].numpy())
        np.testing.assert_array_equal(first.sorted_indices, packed.sorted_indices)
    else:
        np.testing.assert_array_equal(first.numpy(), expected_list[0].numpy())
    for a, b in zip(got_list[1:], expected_list[1:]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("return_state", [False, True])
def test_bidirectional_merge_none_packs_both_directions(return_state):
    lengths = np.array([2, 3, 1])
    layer = Bidirectional(GRU(2, return_sequences=True, return_state=return_state), merge_mode=None)
    _, x = _inputs(7, lengths, 3)
    outs = layer(pack_padded_sequence(lamina.tensor(x), lengths, enforce_sorted=False))
    expected = layer(lamina.tensor(x), lengths=lengths)
    assert len(outs) == len(expected) == (4 if return_state else 2)
    for k, (a, b) in enumerate(zip(outs, expected)):
        if k < 2:
            assert isinstance(a, PackedSequence)
            np.testing.assert_array_equal(pad_packed_sequence(a)[0].numpy(), b.numpy())
        else:
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_first_call_on_packed_builds_the_layer():
    lengths = [3, 2]
    _, x = _inputs(8, lengths, 5)
    packed = pack_padded_sequence(lamina.tensor(x), lengths)
    for layer in (GRU(4, return_sequences=True), Bidirectional(SimpleRNN(4, return_sequences=True))):
        out = layer(packed)
        assert layer.built and layer.build_input_shape == (2, 3, 5)
        assert out.data.shape[0] == 5 and out.data.shape[1] in (4, 8)


def test_packed_input_errors():
    lengths = [3, 2]
    _, x = _inputs(9, lengths, 2)
    packed = pack_padded_sequence(lamina.tensor(x), lengths)
    layer = GRU(3, name="gru_p")
    with pytest.raises(ValueError, match=r"gru_p.*PackedSequence input carries its own lengths"):
        layer(packed, lengths=np.array(lengths))
    with pytest.raises(ValueError, match=r"PackedSequence input carries its own lengths"):
        Bidirectional(GRU(3))(packed, mask=np.ones((2, 3), bool))
    deep = PackedSequence(lamina.tensor(np.zeros((5, 2, 2))), packed.batch_sizes)
    with pytest.raises(ShapeError, match=r"must hold \(sum of lengths, features\) data, got data of shape \(5, 2, 2\)"):
        layer(deep)
    with pytest.raises(ShapeError, match=r"\(batch, time, 2\)"):
        layer(pack_padded_sequence(lamina.tensor(np.zeros((2, 3, 4))), lengths))


@pytest.mark.parametrize("make", [lambda: GRU(2, name="g"), lambda: Bidirectional(LSTM(2), name="g")])
def test_packed_data_of_the_wrong_rank_is_refused_before_the_first_build(make):
    packed = pack_padded_sequence(lamina.tensor(np.zeros((3, 4, 2, 2), np.float32)), [4, 2, 1])    # data (7, 2, 2)
    layer = make()
    with pytest.raises(ShapeError, match=r"'g': a packed input must hold \(sum of lengths, features\) data, got data "
                                         r"of shape \(7, 2, 2\)"):
        layer(packed)
    assert not layer.built
