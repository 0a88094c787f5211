"""Modern Hopfield layers: the update against torch (one step is torch's
scaled_dot_product_attention on the same projections; several steps against a torch rewrite),
float64 gradient checks of the function and the layers, one-step retrieval of a stored
pattern from a noisy one at large beta, the energy falling, and errors."""

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, compare_double_backward_with_torch, compare_with_torch, randn
from lamina import nn
from lamina.errors import ShapeError
from lamina.nn.functional_call import functional_call
from lamina.nn.layer import layer_from_config, layer_to_config

B, N, S, D_Y, D_R, HIDDEN = 2, 5, 3, 6, 4, 4
sdpa = torch.nn.functional.scaled_dot_product_attention


def torch_retrieval(state, stored, values, beta, steps):
    for step in range(steps):
        weights = torch.softmax(beta * state @ stored.transpose(-1, -2), dim=-1)
        state = weights @ (values if step == steps - 1 else stored)
    return state


def named_values(layer, seed):
    rng = np.random.default_rng(seed)
    named = list(layer.named_parameters())
    return [k for k, _ in named], [rng.standard_normal(v.shape) * 0.5 for _, v in named]


def torch_dense(params, prefix, x):
    return x @ params[f"{prefix}.weight"] + params[f"{prefix}.bias"]


def test_one_update_is_scaled_dot_product_attention():
    def ours(state, stored, values):
        return nn.hopfield_retrieval(state, stored, values)

    def theirs(state, stored, values):
        return sdpa(state, stored, values)

    arrays = (randn(B, S, D_Y, seed=1), randn(B, N, D_Y, seed=2), randn(B, N, 3, seed=3))
    compare_with_torch(ours, theirs, *arrays, dtype=np.float32)
    compare_with_torch(ours, theirs, *arrays, dtype=np.float64)
    assert check_gradients(ours, *arrays)


@pytest.mark.parametrize("steps", [2, 3])
def test_several_updates_match_torch_and_gradcheck(steps):
    def ours(state, stored, values):
        return nn.hopfield_retrieval(state, stored, values, beta=0.7, update_steps=steps)

    def theirs(state, stored, values):
        return torch_retrieval(state, stored, values, 0.7, steps)

    arrays = (randn(B, S, D_Y, seed=4), randn(B, N, D_Y, seed=5), randn(B, N, 2, seed=6))
    compare_with_torch(ours, theirs, *arrays, dtype=np.float64)
    assert check_gradients(ours, *arrays)


def test_hopfield_layer_is_attention_on_its_projections():
    """Hopfield(stored, state, values), one update, beta = 1/sqrt(hidden): torch's
    scaled_dot_product_attention of the projected patterns, then the output projection."""
    layer = nn.Hopfield(HIDDEN, output_size=3)
    stored, state, values = randn(B, N, D_Y, seed=7), randn(B, S, D_R, seed=8), randn(B, N, 2, seed=9)
    layer(stored, state, values)
    layer.double()
    names, params = named_values(layer, seed=10)

    def ours(stored, state, values, *p):
        return functional_call(layer, dict(zip(names, p)), stored, state, values)

    def theirs(stored, state, values, *p):
        p = dict(zip(names, p))
        retrieved = sdpa(torch_dense(p, "query", state), torch_dense(p, "key", stored), torch_dense(p, "value", values))
        return torch_dense(p, "output", retrieved)

    # the key's bias shifts a query's scores alike for every stored pattern: no gradient
    wants = [True] * 3 + [name != "key.bias" for name in names]
    compare_with_torch(ours, theirs, stored, state, values, *params, dtype=np.float64, grad=wants)
    assert check_gradients(ours, stored, state, values, *params, grad=wants)


def test_hopfield_self_association_with_several_steps_matches_torch():
    layer = nn.Hopfield(HIDDEN, beta=2.0, update_steps=3, use_bias=False)
    x = randn(B, N, D_Y, seed=11)
    layer(x)
    layer.double()
    names, params = named_values(layer, seed=12)

    def ours(x, *p):
        return functional_call(layer, dict(zip(names, p)), x)

    def theirs(x, *p):
        p = dict(zip(names, p))
        return torch_retrieval(x @ p["query.weight"], x @ p["key.weight"], x @ p["value.weight"], 2.0, 3)

    compare_with_torch(ours, theirs, x, *params, dtype=np.float64)
    assert layer(x).shape == (B, N, HIDDEN)


@pytest.mark.parametrize("rank", [2, 3])
def test_hopfield_layer_with_learned_patterns_matches_torch(rank):
    layer = nn.HopfieldLayer(num_patterns=7, hidden_size=HIDDEN, output_size=3, update_steps=2)
    x = randn(B, D_R, seed=13) if rank == 2 else randn(B, S, D_R, seed=13)
    layer(x)
    layer.double()
    names, params = named_values(layer, seed=14)

    def ours(x, *p):
        return functional_call(layer, dict(zip(names, p)), x)

    def theirs(x, *p):
        p = dict(zip(names, p))
        return torch_retrieval(torch_dense(p, "query", x), p["patterns"], p["pattern_values"], HIDDEN ** -0.5, 2)

    compare_with_torch(ours, theirs, x, *params, dtype=np.float64)
    assert check_gradients(ours, x, *params)
    assert layer(x).shape == x.shape[:-1] + (3,)


def test_hopfield_pooling_matches_torch():
    layer = nn.HopfieldPooling(HIDDEN, num_queries=2, output_size=3)
    x = randn(B, N, D_Y, seed=15)
    layer(x)
    layer.double()
    names, params = named_values(layer, seed=16)

    def ours(x, *p):
        return functional_call(layer, dict(zip(names, p)), x)

    def theirs(x, *p):
        p = dict(zip(names, p))
        pooled = sdpa(p["queries"].expand(B, -1, -1), torch_dense(p, "key", x), torch_dense(p, "value", x))
        return torch_dense(p, "output", pooled).reshape(B, -1)

    wants = [True] + [name != "key.bias" for name in names]
    compare_with_torch(ours, theirs, x, *params, dtype=np.float64, grad=wants)
    assert check_gradients(ours, x, *params, grad=wants)
    assert layer(x).shape == (B, 6) == layer.compute_output_shape((B, N, D_Y))


def test_one_step_retrieves_a_stored_pattern_at_large_beta():
    """Binary patterns (d = 64), a third of the entries of one zeroed and a few flipped: one
    update with beta = 2 lands on it; with a small beta the state is a mixture of patterns."""
    rng = np.random.default_rng(17)
    stored = rng.choice([-1.0, 1.0], (20, 64))
    noisy = stored[[3, 11]].copy()
    noisy[:, :20] = 0
    noisy[:, 20:24] *= -1
    retrieved = nn.hopfield_retrieval(lamina.tensor(noisy, dtype=np.float64),
                                      lamina.tensor(stored, dtype=np.float64), beta=2.0).numpy()
    assert_close(retrieved, stored[[3, 11]], 1e-9)
    mixed = nn.hopfield_retrieval(lamina.tensor(noisy, dtype=np.float64),
                                  lamina.tensor(stored, dtype=np.float64), beta=0.01).numpy()
    assert np.abs(mixed - stored[[3, 11]]).max() > 0.5


def test_update_lowers_the_energy():
    """E(xi) = -1/beta log sum_i exp(beta y_i . xi) + xi . xi / 2 falls at each update (concave-
    convex procedure, Ramsauer et al. theorem 1)."""
    rng = np.random.default_rng(18)
    stored, state = rng.standard_normal((10, 8)), rng.standard_normal((4, 8))
    beta = 0.5

    def energy(xi):
        scores = beta * xi @ stored.T
        top = scores.max(axis=1, keepdims=True)
        return -(top[:, 0] + np.log(np.exp(scores - top).sum(axis=1))) / beta + 0.5 * (xi ** 2).sum(axis=1)

    energies = [energy(state)]
    for _ in range(4):
        state = nn.hopfield_retrieval(lamina.tensor(state, dtype=np.float64), lamina.tensor(stored, dtype=np.float64),
                                      beta=beta).numpy()
        energies.append(energy(state))
    assert (np.diff(np.stack(energies), axis=0) <= 1e-12).all()


def test_learns_a_set_classification():
    """HopfieldPooling + Dense learns whether a set holds a marker vector."""
    rng = np.random.default_rng(19)
    x = rng.standard_normal((64, 6, 4)).astype(np.float32)
    y = rng.integers(0, 2, 64)
    x[y == 1, 0] = np.array([3.0, 3.0, -3.0, 3.0])
    model = nn.Sequential(nn.HopfieldPooling(8, beta=1.0), nn.Dense(2))
    model(x)
    optimizer = lamina.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        loss = lamina.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    accuracy = (model(x).numpy().argmax(axis=1) == y).mean()
    assert accuracy > 0.95, accuracy


def test_errors():
    with pytest.raises(ValueError, match="beta must be a positive number"):
        nn.Hopfield(4, beta=0.0)
    with pytest.raises(ValueError, match="update_steps must be a positive int"):
        nn.HopfieldLayer(3, 4, 2, update_steps=0)
    with pytest.raises(ShapeError, match="same d"):
        nn.hopfield_retrieval(randn(2, 3), randn(4, 5))
    with pytest.raises(ShapeError, match="one row per stored pattern"):
        nn.hopfield_retrieval(randn(2, 3), randn(4, 3), randn(5, 3))
    layer = nn.Hopfield(4)
    with pytest.raises(ShapeError, match="Hopfield"):
        layer(randn(2, 5))
    with pytest.raises(ShapeError, match="share the batch"):
        layer(randn(2, 5, 3), randn(3, 4, 3))
    with pytest.raises(ShapeError, match="HopfieldLayer"):
        nn.HopfieldLayer(3, 4, 2)(randn(5))


def test_config_round_trip():
    for layer in (nn.Hopfield(4, output_size=3, beta=0.5, update_steps=2), nn.HopfieldLayer(5, 4, 3),
                  nn.HopfieldPooling(4, num_queries=2, use_bias=False)):
        rebuilt = layer_from_config(layer_to_config(layer))
        assert type(rebuilt) is type(layer) and rebuilt.get_config() == layer.get_config()


def test_second_derivatives_of_the_update():
    def ours(state, stored, values):
        return nn.hopfield_retrieval(state, stored, values, beta=0.8, update_steps=2)

    def theirs(state, stored, values):
        return torch_retrieval(state, stored, values, 0.8, 2)

    arrays = (randn(B, S, D_Y, seed=20), randn(B, N, D_Y, seed=21), randn(B, N, 2, seed=22))
    compare_double_backward_with_torch(ours, theirs, *arrays)
