"""Retention's three forms: the parallel form against PyTorch's (Q K^T * D) V (values and
gradients), parallel == recurrent == chunkwise to 1e-10 for every chunk size (outputs, last
states, gradients), continuing from a state, finite differences, second derivatives, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina import functional as F
from lamina.errors import ShapeError

GAMMA = [0.9, 0.5, 0.99]


def _arrays(steps: int = 9, seed: int = 0):
    return randn(2, 3, steps, 4, seed=seed), randn(2, 3, steps, 4, seed=seed + 1), randn(2, 3, steps, 5, seed=seed + 2)


def _tensors(*arrays):
    return [lamina.tensor(a, dtype=np.float64, requires_grad=True) for a in arrays]


def torch_retention(q, k, v, gamma):
    steps = q.shape[2]
    n, m = torch.arange(steps)[:, None], torch.arange(steps)[None, :]
    gamma = torch.tensor(gamma, dtype=q.dtype)[:, None, None]
    decay = torch.where(n >= m, gamma ** (n - m).clamp(min=0), torch.zeros((), dtype=q.dtype))
    return (q @ k.transpose(-1, -2) * decay) @ v


def test_parallel_form_matches_torch():
    compare_with_torch(lambda q, k, v: F.retention_parallel(q, k, v, GAMMA),
                       lambda q, k, v: torch_retention(q, k, v, GAMMA), *_arrays(), dtype=np.float64)
    compare_with_torch(lambda q, k, v: F.retention_parallel(q, k, v, GAMMA),
                       lambda q, k, v: torch_retention(q, k, v, GAMMA), *_arrays(), dtype=np.float32, rtol=1e-5)


def _run(form: str, arrays, chunk_size: int = 4):
    q, k, v = _tensors(*arrays)
    if form == "parallel":
        out, state = F.retention_parallel(q, k, v, GAMMA), None
    elif form == "recurrent":
        out, state = F.retention_recurrent(q, k, v, GAMMA)
    else:
        out, state = F.retention_chunkwise(q, k, v, GAMMA, chunk_size=chunk_size)
    (out * lamina.tensor(randn(*out.shape, seed=5))).sum().backward()
    return out.numpy(), None if state is None else state.numpy(), [t.grad for t in (q, k, v)]


@pytest.mark.parametrize("chunk_size", [1, 2, 4, 9, 20])
def test_parallel_recurrent_and_chunkwise_agree_to_1e10(chunk_size):
    arrays = _arrays()
    parallel, _, parallel_grads = _run("parallel", arrays)
    recurrent, recurrent_state, recurrent_grads = _run("recurrent", arrays)
    chunked, chunked_state, chunked_grads = _run("chunkwise", arrays, chunk_size)
    assert_close(recurrent, parallel, 1e-10, "recurrent vs parallel")
    assert_close(chunked, parallel, 1e-10, "chunkwise vs parallel")
    assert_close(chunked_state, recurrent_state, 1e-10, "last state")
    for a, b, c in zip(parallel_grads, recurrent_grads, chunked_grads):
        assert_close(b, a, 1e-10, "recurrent gradient")
        assert_close(c, a, 1e-10, "chunkwise gradient")


def test_last_state_is_the_sum_of_decayed_outer_products_and_continues_the_sequence():
    q, k, v = (lamina.tensor(a, dtype=np.float64) for a in _arrays())
    _, state = F.retention_recurrent(q, k, v, GAMMA)
    decay = np.asarray(GAMMA)[None, :, None] ** np.arange(8, -1, -1)[None, None, :]        # gamma^(T-1-m)
    expected = np.einsum("nhm,nhmk,nhmv->nhkv", np.broadcast_to(decay, (2, 3, 9)), k.numpy(), v.numpy())
    assert_close(state.numpy(), expected, 1e-12, "state")
    whole = F.retention_parallel(q, k, v, GAMMA).numpy()
    first, carried = F.retention_chunkwise(q[:, :, :5], k[:, :, :5], v[:, :, :5], GAMMA, chunk_size=2)
    rest, _ = F.retention_chunkwise(q[:, :, 5:], k[:, :, 5:], v[:, :, 5:], GAMMA, chunk_size=3, state=carried)
    step, _ = F.retention_recurrent(q[:, :, 5:], k[:, :, 5:], v[:, :, 5:], GAMMA, state=carried)
    assert_close(np.concatenate([first.numpy(), rest.numpy()], axis=2), whole, 1e-12, "chunkwise continued")
    assert_close(step.numpy(), whole[:, :, 5:], 1e-12, "recurrent continued")


def test_gradcheck_and_second_derivatives_of_every_form():
    arrays = [a * 0.5 for a in _arrays(steps=4)]
    assert check_gradients(lambda q, k, v: F.retention_parallel(q, k, v, GAMMA), *arrays)
    assert check_gradients(lambda q, k, v: F.retention_recurrent(q, k, v, GAMMA)[0], *arrays)
    assert check_gradients(lambda q, k, v, s: F.retention_chunkwise(q, k, v, GAMMA, 3, s)[0], *arrays,
                           randn(2, 3, 4, 5, seed=9))
    assert check_second_derivatives(lambda q, k, v: F.retention_chunkwise(q, k, v, GAMMA, 2)[0], *arrays)


def test_errors_name_the_function_and_shapes():
    q, k, v = (lamina.tensor(a, dtype=np.float64) for a in _arrays())
    with pytest.raises(ShapeError, match=r"retention_parallel: .*\(2, 3, 9, 3\)"):
        F.retention_parallel(q, k[..., :3], v, GAMMA)
    with pytest.raises(ValueError, match=r"retention_recurrent: gamma must hold one decay in \(0, 1\] per head \(3\)"):
        F.retention_recurrent(q, k, v, [0.9, 0.5])
    with pytest.raises(ValueError, match="retention_parallel: gamma"):
        F.retention_parallel(q, k, v, [0.9, 1.5, 0.2])
    with pytest.raises(ShapeError, match=r"retention_chunkwise: state of shape \(2, 3, 4, 4\)"):
        F.retention_chunkwise(q, k, v, GAMMA, state=np.zeros((2, 3, 4, 4)))
    with pytest.raises(ValueError, match="retention_chunkwise: chunk_size"):
        F.retention_chunkwise(q, k, v, GAMMA, chunk_size=0)
