"""The delta rule (DeltaNet, alpha = 1; gated, alpha in (0, 1)) and gated linear attention:
the recurrent forms against PyTorch loops over the papers' formulas (outputs, last states,
gradients of every input), chunkwise == recurrent for several chunk sizes and lengths that are
not multiples of them (1e-10 in float64, 1e-5 in float32, values, states and gradients),
continuing from a returned state, causality, finite differences, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina import functional as F
from lamina.errors import ShapeError
from torch_delta_rule import delta_rule_loop, gla_loop

N, H, T, DK, DV = 2, 3, 11, 4, 5


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _arrays(kind: str, steps: int = T, seed: int = 0) -> list[np.ndarray]:
    """q, k, v and the gates of ``kind`` ('delta', 'gated' or 'gla'), then a state (N, H, d_k, d_v)."""
    rng = np.random.default_rng(seed)
    q, v = rng.normal(size=(N, H, steps, DK)), rng.normal(size=(N, H, steps, DV))
    k = rng.normal(size=(N, H, steps, DK))
    state = 0.5 * rng.normal(size=(N, H, DK, DV))
    if kind == "gla":
        return [q, k, v, -rng.uniform(0.05, 1.0, size=(N, H, steps, DK)), state]
    gates = [1 / (1 + np.exp(-rng.normal(size=(N, H, steps))))]
    if kind == "gated":
        gates.append(-rng.uniform(0.05, 1.0, size=(N, H, steps)))
    return [q, _unit(k), v, *gates, state]


def _ours(kind: str, form: str, chunk_size: int = 4, scale: float = 0.7):
    """fn(*arrays) -> (outputs, last state) of the lamina op."""
    def run(*args):
        *inputs, state = args
        if kind == "gla":
            if form == "recurrent":
                return F.gated_linear_attention_recurrent(*inputs, scale=scale, state=state, return_state=True)
            return F.gated_linear_attention_chunkwise(*inputs, chunk_size=chunk_size, scale=scale, state=state,
                                                      return_state=True)
        q, k, v, beta, *gate = inputs
        log_alpha = gate[0] if gate else None
        if form == "recurrent":
            return F.delta_rule_recurrent(q, k, v, beta, log_alpha, scale, state, return_state=True)
        return F.delta_rule_chunkwise(q, k, v, beta, log_alpha, chunk_size, scale, state, return_state=True)
    return run


def _torch(kind: str, scale: float = 0.7):
    def run(*args):
        *inputs, state = args
        if kind == "gla":
            q, k, v, log_alpha = inputs
            out, last = gla_loop(q, k, v, log_alpha, scale, state.transpose(-1, -2))
        else:
            q, k, v, beta, *gate = inputs
            out, last = delta_rule_loop(q, k, v, beta, gate[0] if gate else None, scale, state.transpose(-1, -2))
        return out, last.transpose(-1, -2)
    return run


KINDS = ["delta", "gated", "gla"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("form", ["recurrent", "chunkwise"])
def test_matches_the_torch_loop_over_the_steps(kind, form):
    compare_with_torch(_ours(kind, form), _torch(kind), *_arrays(kind), dtype=np.float64)


def test_float32_matches_the_torch_loop():
    compare_with_torch(_ours("gated", "chunkwise"), _torch("gated"), *_arrays("gated"), dtype=np.float32, rtol=1e-5)


def _run(kind: str, form: str, arrays, chunk_size: int, dtype=np.float64):
    tensors = [lamina.tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
    out, last = _ours(kind, form, chunk_size)(*tensors)
    total = (out * lamina.tensor(randn(*out.shape, seed=5), dtype=dtype)).sum()
    (total + (last * lamina.tensor(randn(*last.shape, seed=6), dtype=dtype)).sum()).backward()
    return out.numpy(), last.numpy(), [t.grad for t in tensors]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chunk_size", [1, 3, 4, 11, 16])
def test_chunkwise_equals_recurrent_to_1e10(kind, chunk_size):
    arrays = _arrays(kind)
    out, last, grads = _run(kind, "recurrent", arrays, chunk_size)
    got, got_last, got_grads = _run(kind, "chunkwise", arrays, chunk_size)
    assert_close(got, out, 1e-10, "outputs")
    assert_close(got_last, last, 1e-10, "last state")
    for i, (a, b) in enumerate(zip(got_grads, grads)):
        assert_close(a, b, 1e-10, f"gradient of input {i}")


@pytest.mark.parametrize("kind", KINDS)
def test_chunkwise_equals_recurrent_in_float32(kind):
    arrays = _arrays(kind, steps=13, seed=2)
    out, last, grads = _run(kind, "recurrent", arrays, 5, np.float32)
    got, got_last, got_grads = _run(kind, "chunkwise", arrays, 5, np.float32)
    assert got.dtype == np.float32
    assert_close(got, out, 1e-5, "outputs")
    assert_close(got_last, last, 1e-5, "last state")
    for i, (a, b) in enumerate(zip(got_grads, grads)):
        assert_close(a, b, 1e-5, f"gradient of input {i}")


@pytest.mark.parametrize("kind", KINDS)
def test_continuing_from_the_returned_state_gives_the_whole_sequence(kind):
    *inputs, state = (lamina.tensor(a, dtype=np.float64) for a in _arrays(kind))
    whole, whole_last = _ours(kind, "chunkwise", 4)(*inputs, state)
    pieces, carried = [], state
    for part in (slice(0, 5), slice(5, 6), slice(6, T)):
        out, carried = _ours(kind, "chunkwise", 3)(*(x[:, :, part] for x in inputs), carried)
        pieces.append(out.numpy())
    assert_close(np.concatenate(pieces, axis=2), whole.numpy(), 1e-12, "pieces")
    assert_close(carried.numpy(), whole_last.numpy(), 1e-12, "state")
    stepped = [_ours(kind, "recurrent")(*(x[:, :, t:t + 1] for x in inputs), state) for t in range(2)]
    assert_close(stepped[0][0].numpy(), whole.numpy()[:, :, :1], 1e-12, "one step")


@pytest.mark.parametrize("kind", KINDS)
def test_causal_a_later_step_changes_no_earlier_output(kind):
    arrays = _arrays(kind)
    changed = [a.copy() for a in arrays]
    for a in changed[:-1]:
        a[:, :, 7:] += 1.0
    before = _ours(kind, "chunkwise", 3)(*(lamina.tensor(a) for a in arrays))[0].numpy()
    after = _ours(kind, "chunkwise", 3)(*(lamina.tensor(a) for a in changed))[0].numpy()
    assert_close(after[:, :, :7], before[:, :, :7], 1e-6, "earlier outputs")
    assert np.abs(after[:, :, 7:] - before[:, :, 7:]).min() > 0


def test_delta_rule_writes_the_value_exactly_with_beta_one():
    """With beta = 1 and a unit key the memory reads back the latest value written under it."""
    k = _unit(randn(1, 1, 3, 4))
    k[0, 0, 2] = k[0, 0, 0]
    v, q = randn(1, 1, 3, 2, seed=1), np.zeros((1, 1, 3, 4))
    _, memory = F.delta_rule_chunkwise(q, k, v, np.ones((1, 1, 3)), chunk_size=2, return_state=True)
    read = k[0, 0, 0] @ memory.numpy()[0, 0]
    np.testing.assert_allclose(read, v[0, 0, 2], atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(kind):
    arrays = _arrays(kind, steps=5, seed=3)
    run = _ours(kind, "chunkwise", 2)

    def outputs_and_state(*inputs):
        out, last = run(*inputs)
        return F.concat([F.reshape(out, (-1,)), F.reshape(last, (-1,))], axis=0)

    assert check_gradients(outputs_and_state, *arrays)


def test_second_derivatives_of_the_chunkwise_gated_rule():
    arrays = [a[:1, :1] for a in _arrays("gated", steps=4, seed=4)]
    assert check_second_derivatives(lambda *a: _ours("gated", "chunkwise", 3)(*a)[0], *arrays)


def test_errors_name_the_op_and_the_shapes():
    q, k, v, beta, state = _arrays("delta")
    with pytest.raises(ShapeError, match=r"delta_rule_chunkwise: state of shape \(2, 3, 5, 4\); expected "
                                         r"\(N, H, d_k, d_v\) = \(2, 3, 4, 5\)"):
        F.delta_rule_chunkwise(q, k, v, beta, state=np.swapaxes(state, -1, -2))
    with pytest.raises(ShapeError, match=r"delta_rule_recurrent: beta of shape \(2, 3, 10\); expected"):
        F.delta_rule_recurrent(q, k, v, beta[..., :10])
    with pytest.raises(ShapeError, match="delta_rule_chunkwise: expected q and k"):
        F.delta_rule_chunkwise(q, k[..., :3], v, beta)
    with pytest.raises(ValueError, match="delta_rule_chunkwise: chunk_size must be a positive int, got 0"):
        F.delta_rule_chunkwise(q, k, v, beta, chunk_size=0)
    with pytest.raises(ShapeError, match=r"gated_linear_attention_chunkwise: log_alpha of shape \(2, 3, 11\); "
                                         r"expected \(N, H, T, d_k\)"):
        F.gated_linear_attention_chunkwise(q, k, v, beta)


def test_torch_reference_agrees_with_the_papers_matrix_form():
    """A check of the reference itself: one step from S = 0 gives beta v k^T."""
    k = torch.tensor([[[[0.6, 0.8]]]], dtype=torch.float64)
    v = torch.tensor([[[[2.0, -1.0, 3.0]]]], dtype=torch.float64)
    _, s = delta_rule_loop(k, k, v, torch.full((1, 1, 1), 0.5, dtype=torch.float64))
    np.testing.assert_allclose(s[0, 0].numpy(), 0.5 * np.outer([2.0, -1.0, 3.0], [0.6, 0.8]))


def test_the_gated_rule_with_alpha_one_is_deltanet_and_gla_with_alpha_one_is_linear_attention():
    q, k, v, beta, state = _arrays("delta")
    zero = np.zeros(beta.shape)
    assert_close(F.delta_rule_chunkwise(q, k, v, beta, zero, chunk_size=4).numpy(),
                 F.delta_rule_chunkwise(q, k, v, beta, chunk_size=4).numpy(), 1e-12, "alpha = 1")
    summed = np.tril(np.ones((T, T))) @ np.einsum("nhtk,nhtv->nhtkv", k, v).reshape(N, H, T, -1)
    expected = np.einsum("nhtk,nhtkv->nhtv", q, summed.reshape(N, H, T, DK, DV))
    got = F.gated_linear_attention_chunkwise(q, k, v, np.zeros(q.shape), chunk_size=4)
    assert_close(got.numpy(), expected, 1e-5, "running sums")                     # float32 by default
