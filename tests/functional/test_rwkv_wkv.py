"""RWKV-4's WKV: both forms against PyTorch's sums straight from the definition (values and
gradients), parallel == recurrent (outputs, states, gradients), continuing from a state in
either form, the max trick's stability on large keys, finite differences, errors."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import assert_close, check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina import functional as F
from lamina.errors import ShapeError
from torch_linear_sequence import wkv_by_definition

N, T, C = 2, 7, 5


def _arrays(seed: int = 0, steps: int = T):
    return [randn(C, seed=seed), randn(C, seed=seed + 1), randn(N, steps, C, seed=seed + 2),
            randn(N, steps, C, seed=seed + 3)]


@pytest.mark.parametrize("form", ["parallel", "recurrent"])
def test_matches_the_definition_in_torch(form):
    wkv = F.rwkv_wkv_parallel if form == "parallel" else F.rwkv_wkv_recurrent
    compare_with_torch(lambda *a: wkv(*a)[0], wkv_by_definition, *_arrays(), dtype=np.float64)
    compare_with_torch(lambda *a: wkv(*a)[0], wkv_by_definition, *_arrays(), dtype=np.float32, rtol=1e-5)


def test_parallel_and_recurrent_agree_in_values_states_and_gradients():
    results = []
    for wkv in (F.rwkv_wkv_parallel, F.rwkv_wkv_recurrent):
        inputs = [lamina.tensor(a, dtype=np.float64, requires_grad=True) for a in _arrays()]
        out, state = wkv(*inputs)
        (out * lamina.tensor(randn(N, T, C, seed=9))).sum().backward()
        results.append((out.numpy(), [s.numpy() for s in state], [t.grad for t in inputs]))
    (a, sa, ga), (b, sb, gb) = results
    assert_close(b, a, 1e-12, "wkv")
    for x, y, what in [*zip(sa, sb, "abp"), *zip(ga, gb, ["time_decay", "time_first", "k", "v"])]:
        assert_close(y, x, 1e-11, what)


@pytest.mark.parametrize("second", ["parallel", "recurrent"])
def test_a_state_continues_the_sequence(second):
    td, tf, k, v = (lamina.tensor(a, dtype=np.float64) for a in _arrays())
    whole = F.rwkv_wkv_recurrent(td, tf, k, v)[0].numpy()
    first, state = F.rwkv_wkv_parallel(td, tf, k[:, :3], v[:, :3])
    wkv = F.rwkv_wkv_parallel if second == "parallel" else F.rwkv_wkv_recurrent
    rest, _ = wkv(td, tf, k[:, 3:], v[:, 3:], state)
    assert_close(np.concatenate([first.numpy(), rest.numpy()], axis=1), whole, 1e-12, "continued")


def test_large_keys_stay_finite_and_exact():
    td, tf, k, v = _arrays()
    k = k * 300.0                       # e^k overflows float64 without the max trick
    args = [lamina.tensor(a, dtype=np.float64) for a in (td, tf, k, v)]
    parallel, recurrent = F.rwkv_wkv_parallel(*args)[0].numpy(), F.rwkv_wkv_recurrent(*args)[0].numpy()
    assert np.isfinite(parallel).all()
    assert_close(recurrent, parallel, 1e-12, "large keys")
    assert (parallel >= v.min() - 1e-12).all() and (parallel <= v.max() + 1e-12).all()   # weighted means


def test_gradcheck_and_second_derivatives():
    arrays = _arrays(steps=4)
    assert check_gradients(lambda *a: F.rwkv_wkv_parallel(*a)[0], *arrays)
    assert check_gradients(lambda *a: F.rwkv_wkv_recurrent(*a)[0], *arrays)
    state = [randn(N, C, seed=20), np.abs(randn(N, C, seed=21)) + 0.5, randn(N, C, seed=22)]
    assert check_gradients(lambda td, tf, k, v, a, b, p: F.rwkv_wkv_parallel(td, tf, k, v, (a, b, p))[0],
                           *arrays, *state)
    assert check_second_derivatives(lambda *a: F.rwkv_wkv_parallel(*a)[0], *arrays)


def test_errors_name_the_function_and_shapes():
    td, tf, k, v = (lamina.tensor(a, dtype=np.float64) for a in _arrays())
    with pytest.raises(ShapeError, match=r"rwkv_wkv_parallel: expected k and v of one shape .*\(2, 7, 4\)"):
        F.rwkv_wkv_parallel(td, tf, k, v[..., :4])
    with pytest.raises(ShapeError, match=r"rwkv_wkv_recurrent: time_decay and time_first must be \(5,\)"):
        F.rwkv_wkv_recurrent(td[:3], tf, k, v)
    with pytest.raises(ShapeError, match="rwkv_wkv_parallel: state must be"):
        F.rwkv_wkv_parallel(td, tf, k, v, (np.zeros((2, 5)), np.ones((2, 5))))
