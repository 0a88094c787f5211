"""The chunked SSD scan of Mamba-2 (lamina.functional.ssd) against the plain recurrence and a
torch rewrite of the chunked algorithm of Dao and Gu (2024)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.helpers import check_gradients, check_second_derivatives, compare_with_torch, positive, randn

import lamina
from lamina import functional as F
from lamina.errors import ShapeError

N, T, H, P, G, S = 2, 7, 4, 3, 2, 5


def _inputs(t: int = T, seed: int = 0):
    """x, dt, A (negative), B, C, h0 for H heads in G groups."""
    return (randn(N, t, H, P, seed=seed), positive(N, t, H, seed=seed + 1, low=0.1, high=1.0),
            -positive(H, seed=seed + 2, low=0.3, high=1.5), randn(N, t, G, S, seed=seed + 3),
            randn(N, t, G, S, seed=seed + 4), randn(N, H, P, S, seed=seed + 5))


def _segsum(x):
    """Segment sums: out[..., i, j] = x[j+1] + ... + x[i] for i >= j, -inf above the diagonal."""
    q = x.shape[-1]
    cums = torch.cumsum(x, dim=-1)
    out = cums[..., :, None] - cums[..., None, :]
    return out.masked_fill(~torch.tril(torch.ones(q, q, dtype=torch.bool)), -torch.inf)


def torch_ssd_chunked(x, dt, A, B, C, chunk_size, initial_state=None):
    """The minimal chunked SSD of the paper (heads expanded from groups) in torch; returns (y, final state)."""
    n, t, h, p = x.shape
    g = B.shape[2]
    B, C = B.repeat_interleave(h // g, dim=2), C.repeat_interleave(h // g, dim=2)
    pad = -t % chunk_size
    if pad:
        x, dt = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad)), torch.nn.functional.pad(dt, (0, 0, 0, pad))
        B, C = torch.nn.functional.pad(B, (0, 0, 0, 0, 0, pad)), torch.nn.functional.pad(C, (0, 0, 0, 0, 0, pad))
    c = x.shape[1] // chunk_size

    def chunked(a):
        return a.reshape(n, c, chunk_size, *a.shape[2:])

    X, Bc, Cc = chunked(x * dt[..., None]), chunked(B), chunked(C)
    Ad = chunked(dt * A).permute(0, 3, 1, 2)                                  # (b, h, c, l)
    A_cumsum = torch.cumsum(Ad, dim=-1)
    L = torch.exp(_segsum(Ad))
    Y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", Cc, Bc, L, X)
    decay_states = torch.exp(A_cumsum[..., -1:] - A_cumsum)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bc, decay_states, X)
    if initial_state is None:
        initial_state = torch.zeros_like(states[:, :1])
    else:
        initial_state = initial_state[:, None]
    states = torch.cat([initial_state, states], dim=1)
    decay_chunk = torch.exp(_segsum(torch.nn.functional.pad(A_cumsum[..., -1], (1, 0))))
    new_states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
    states, final = new_states[:, :-1], new_states[:, -1]
    Y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", Cc, states, torch.exp(A_cumsum))
    return (Y_diag + Y_off).reshape(n, c * chunk_size, h, p)[:, :t], final


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 16])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_ssd_equals_the_sequential_recurrence(chunk_size, with_state):
    x, dt, A, B, C, h0 = _inputs()
    h0 = h0 if with_state else None
    y, last = F.ssd(x, dt, A, B, C, chunk_size, initial_state=h0, return_final_state=True)
    y_ref, last_ref = F.ssd_reference(x, dt, A, B, C, initial_state=h0, return_final_state=True)
    assert y.shape == (N, T, H, P) and last.shape == (N, H, P, S) and y.dtype == np.float64
    np.testing.assert_allclose(y.numpy(), y_ref.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(last.numpy(), last_ref.numpy(), rtol=0, atol=1e-10)
    assert np.abs(y_ref.numpy()).max() > 0.1


def test_reference_is_the_recurrence_written_out():
    """ssd_reference against NumPy's loop of h_t = exp(dt A) h + dt x B^T, y_t = h_t C_t."""
    x, dt, A, B, C, h0 = _inputs(t=4)
    state = h0.copy()
    ys = []
    for t in range(4):
        heads_b, heads_c = np.repeat(B[:, t], H // G, axis=1), np.repeat(C[:, t], H // G, axis=1)
        state = (np.exp(dt[:, t] * A)[..., None, None] * state
                 + dt[:, t, :, None, None] * x[:, t, :, :, None] * heads_b[:, :, None, :])
        ys.append(np.einsum("bhpn,bhn->bhp", state, heads_c))
    y, last = F.ssd_reference(x, dt, A, B, C, initial_state=h0, return_final_state=True)
    np.testing.assert_allclose(y.numpy(), np.stack(ys, axis=1), atol=1e-12)
    np.testing.assert_allclose(last.numpy(), state, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [3, 4])
def test_values_and_gradients_match_a_torch_rewrite_of_the_chunked_algorithm(chunk_size):
    x, dt, A, B, C, h0 = _inputs(seed=3)
    for dtype in (np.float64, np.float32):
        compare_with_torch(lambda *a: F.ssd(*a, chunk_size),
                           lambda *a: torch_ssd_chunked(*a, chunk_size)[0], x, dt, A, B, C, dtype=dtype)
    compare_with_torch(lambda *a: F.ssd(*a[:5], chunk_size, initial_state=a[5], return_final_state=True)[1],
                       lambda *a: torch_ssd_chunked(*a[:5], chunk_size, initial_state=a[5])[1],
                       x, dt, A, B, C, h0, dtype=np.float64)


def test_gradient_check_float64():
    x, dt, A, B, C, h0 = _inputs(t=5, seed=7)
    small = (x[:1, :, :2], dt[:1, :, :2], A[:2], B[:1, :, :1, :3], C[:1, :, :1, :3], h0[:1, :2, :, :3])
    assert check_gradients(lambda *a: F.ssd(*a[:5], 2, initial_state=a[5]), *small)
    assert check_gradients(lambda *a: F.ssd(*a[:5], 2, initial_state=a[5], return_final_state=True)[1], *small)
    assert check_second_derivatives(lambda *a: F.ssd(*a, 2), *small[:5])


def test_float32_stays_float32_and_long_decays_stay_finite():
    x, dt, A, B, C, _ = _inputs(t=40)
    y = F.ssd(x.astype(np.float32), (dt * 50).astype(np.float32), A.astype(np.float32), B.astype(np.float32),
              C.astype(np.float32), 8)
    assert y.dtype == np.float32 and np.isfinite(y.numpy()).all()


def test_shape_errors_name_the_function():
    x, dt, A, B, C, _ = _inputs()
    with pytest.raises(ShapeError, match="ssd: dt"):
        F.ssd(x, dt[:, :, :2], A, B, C, 4)
    with pytest.raises(ShapeError, match="groups"):
        F.ssd(x, dt, A, B[:, :, :1].repeat(3, axis=2), C[:, :, :1].repeat(3, axis=2), 4)
    with pytest.raises(ShapeError, match="initial_state"):
        F.ssd(x, dt, A, B, C, 4, initial_state=np.zeros((N, H, P, S + 1)))
    with pytest.raises(ValueError, match="chunk_size"):
        F.ssd(x, dt, A, B, C, 0)
    assert isinstance(F.ssd(lamina.tensor(x), dt, A, B, C, 4), lamina.Tensor)
