"""Causal LinearAttention and PerformerAttention carrying their running sums from call to call:
a sequence fed one step at a time, or in uneven pieces, gives the outputs of one call on the
whole of it; the carried rows follow reorder_states; non-causal layers refuse to carry."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import nn
from lamina.errors import ShapeError
from lamina.functional import linear_attention, orthogonal_random_features, performer_attention


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _layers():
    return [nn.LinearAttention(8, num_heads=2, causal=True, chunk_size=3),
            nn.PerformerAttention(8, num_heads=2, num_features=6, causal=True, chunk_size=3, seed=1)]


@pytest.mark.parametrize("index", [0, 1])
@pytest.mark.parametrize("cuts", [list(range(1, 10)), [2, 3, 7]])
def test_pieces_continue_the_sequence(f64, index, cuts):
    layer = _layers()[index]
    assert layer.streamable
    x = lamina.tensor(randn(3, 10, 8, scale=2.0))          # large enough for the keys' largest logit to grow
    whole = layer(x).numpy()
    layer.stateful = True
    bounds = [0, *cuts, 10]
    pieces = [layer(x[:, start:stop]).numpy() for start, stop in zip(bounds[:-1], bounds[1:])]
    assert_close(np.concatenate(pieces, axis=1), whole, 1e-10, "continued")
    layer.reset_states()
    assert_close(layer(x).numpy(), whole, 1e-10, "after reset_states")


@pytest.mark.parametrize("index", [0, 1])
def test_reorder_states_permutes_the_rows(f64, index):
    layer = _layers()[index]
    x = lamina.tensor(randn(3, 7, 8))
    whole = layer(x).numpy()
    layer.stateful = True
    layer(x[:, :4])
    layer.reorder_states(np.asarray([2, 0, 0]))
    assert_close(layer(x[[2, 0, 0], 4:]).numpy(), whole[[2, 0, 0], 4:], 1e-10, "reordered rows")
    with pytest.raises(ShapeError, match="stateful layer carries states for a batch of 3"):
        layer(x[:2, 4:])


def _causal_attention(kind: str):
    projection = orthogonal_random_features(5, 4, seed=0)
    if kind == "linear":
        return lambda q, k, v, **state: linear_attention(q, k, v, causal=True, chunk_size=2, **state)
    return lambda q, k, v, **state: performer_attention(q, k, v, projection, causal=True, chunk_size=4, **state)


@pytest.mark.parametrize("kind", ["linear", "performer"])
def test_functional_state_continues_and_has_gradients(f64, kind):
    attend = _causal_attention(kind)
    q, k, v = (lamina.tensor(randn(2, 6, 4, seed=s)) for s in range(3))
    whole = attend(q, k, v).numpy()
    first, state = attend(q[:, :2], k[:, :2], v[:, :2], return_state=True)
    second, _ = attend(q[:, 2:], k[:, 2:], v[:, 2:], state=state, return_state=True)
    assert_close(np.concatenate([first.numpy(), second.numpy()], axis=1), whole, 1e-10, "continued")
    carried = tuple(lamina.tensor(s.numpy()) for s in state)
    inputs = (randn(2, 3, 4, seed=s) for s in range(3))
    assert check_gradients(lambda a, b, c: attend(a, b, c, state=carried), *inputs)


def test_non_causal_layers_refuse_to_carry_states():
    with pytest.raises(ValueError, match="LinearAttention: stateful=True needs causal=True"):
        nn.LinearAttention(8, 2, stateful=True)
    layer = nn.PerformerAttention(8, 2, seed=0)
    assert not layer.streamable
    layer.stateful = True
    with pytest.raises(ValueError, match="PerformerAttention: stateful=True needs causal=True"):
        layer(lamina.tensor(randn(1, 3, 8)))
    with pytest.raises(ValueError, match="linear_attention: state and return_state .* need causal=True"):
        linear_attention(randn(1, 3, 4), randn(1, 3, 4), randn(1, 3, 4), return_state=True)
    layer = nn.LinearAttention(8, 2, causal=True, stateful=True)
    assert nn.LinearAttention(**layer.get_config()).stateful
