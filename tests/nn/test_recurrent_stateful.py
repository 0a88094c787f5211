"""Stateful recurrent layers (each call continues from the last call's final states) and
the ``streamable`` property that says when a model may be fed one step at a time."""

import numpy as np
import pytest
import torch
from recurrent_checks import copy_to_torch, randomize

import lamina
from helpers import assert_close
from lamina import models, nn
from lamina.errors import ShapeError
from lamina.nn import layer_from_config, layer_to_config
from lamina.nn.recurrent import GRU, LSTM, Bidirectional, SimpleRNN

CELLS = {"rnn": (SimpleRNN, torch.nn.RNN), "gru": (GRU, torch.nn.GRU), "lstm": (LSTM, torch.nn.LSTM)}
CHUNKS = (4, 1, 3)                   # a sequence of 8 steps fed in three calls


def _pair(cell, units=5, d=3, **kwargs):
    ours, theirs = CELLS[cell]
    layer = ours(units, return_sequences=True, **kwargs)
    layer.build((None, sum(CHUNKS), d))
    randomize(layer)
    module = theirs(d, units, batch_first=True).double()
    copy_to_torch(layer, module)
    return layer, module


def _chunks(x):
    bounds = np.cumsum((0,) + CHUNKS)
    return [x[:, a:b] for a, b in zip(bounds[:-1], bounds[1:])]


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_a_stateful_layer_fed_in_chunks_gives_the_whole_sequences_outputs_as_torch(cell):
    lamina.set_default_dtype(np.float64)
    layer, module = _pair(cell, stateful=True)
    x = np.random.default_rng(0).standard_normal((2, sum(CHUNKS), 3))
    ours = np.concatenate([layer(lamina.tensor(c)).numpy() for c in _chunks(x)], axis=1)
    plain = type(layer)(5, return_sequences=True)
    plain.build((None, sum(CHUNKS), 3))
    plain.load_state_dict(layer.state_dict())
    assert_close(ours, plain(lamina.tensor(x)).numpy(), rtol=1e-12)
    state, theirs = None, []
    with torch.no_grad():
        for c in _chunks(x):
            out, state = module(torch.from_numpy(np.ascontiguousarray(c)), state)
            theirs.append(out.numpy())
    assert_close(ours, np.concatenate(theirs, axis=1), rtol=1e-10)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_carried_states_are_detached_and_reset_states_starts_again_from_zeros(cell):
    lamina.set_default_dtype(np.float64)
    layer, _ = _pair(cell, stateful=True)
    first, second = _chunks(np.random.default_rng(1).standard_normal((2, sum(CHUNKS), 3)))[:2]
    layer(lamina.tensor(first))
    carried = [s.numpy().copy() for s in layer._carried]
    assert not any(s.requires_grad for s in layer._carried)
    out = layer(lamina.tensor(second))
    out.sum().backward()
    grad = layer.kernel.grad.copy()
    # the same step from the carried values given as constants: the same gradient, so none
    # of it flowed back into the first call's graph
    layer.zero_grad()
    layer.stateful = False
    states = [lamina.tensor(s) for s in carried]
    again = layer(lamina.tensor(second), initial_state=states if cell == "lstm" else states[0])
    again.sum().backward()
    assert_close(out.numpy(), again.numpy(), rtol=1e-12)
    assert_close(grad, layer.kernel.grad, rtol=1e-12)
    layer.stateful = True
    layer.reset_states()
    fresh = layer(lamina.tensor(first)).numpy()
    layer.stateful = False
    np.testing.assert_array_equal(fresh, layer(lamina.tensor(first)).numpy())


def test_a_stateful_layer_refuses_a_new_batch_size_until_reset_and_an_initial_state_overrides():
    layer = GRU(4, stateful=True, name="gru_s")
    rng = np.random.default_rng(2)
    layer(lamina.tensor(rng.standard_normal((3, 2, 5)).astype(np.float32)))
    with pytest.raises(ShapeError, match=r"gru_s.*batch of 3.*\(2, 2, 5\).*reset_states\(\)"):
        layer(lamina.tensor(rng.standard_normal((2, 2, 5)).astype(np.float32)))
    layer.reset_states()
    x = rng.standard_normal((2, 2, 5)).astype(np.float32)
    layer(lamina.tensor(x))
    h0 = rng.standard_normal((2, 4)).astype(np.float32)
    given = layer(lamina.tensor(x), initial_state=lamina.tensor(h0)).numpy()
    plain = GRU(4)
    plain.build((None, 2, 5))
    plain.load_state_dict(layer.state_dict())
    assert_close(given, plain(lamina.tensor(x), initial_state=lamina.tensor(h0)).numpy(), rtol=1e-6)


def test_stateful_survives_the_config_and_shows_in_the_description():
    layer = LSTM(6, stateful=True, return_sequences=True)
    copy = layer_from_config(layer_to_config(layer))
    assert copy.stateful and copy.return_sequences
    assert not layer_from_config(layer_to_config(SimpleRNN(3, activation="relu"))).stateful
    layer.build((None, 4, 2))
    assert "stateful=True" in repr(layer)


def test_streamable_marks_the_models_that_may_be_fed_step_by_step():
    for cell in ("rnn", "gru", "lstm"):
        assert models.rnn_language_model(10, cell=cell, num_layers=2, dropout=0.1).streamable
    assert not models.transformer_language_model(10, d_model=8, num_heads=2, num_layers=1).streamable
    assert not nn.Sequential(nn.Embedding(10, 4), Bidirectional(GRU(3, return_sequences=True))).streamable
    assert not nn.Sequential(nn.Embedding(10, 4), GRU(3, return_sequences=True, go_backwards=True)).streamable
    assert not nn.Sequential(nn.Embedding(10, 4), nn.Conv1D(3, 3), nn.Dense(10)).streamable
    assert nn.Sequential(nn.LayerNorm(), nn.Softmax()).streamable
    assert not nn.LayerNorm(axes=(-2, -1)).streamable
    assert not nn.Softmax(axis=1).streamable
