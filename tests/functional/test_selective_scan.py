"""Mamba's selective scan: values and gradients of every input against a PyTorch loop over the
steps (with and without D, z, delta_bias, softplus and an initial state, in one chunk and in
several), float64 finite differences, second derivatives, continuing from the last state."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_double_backward_with_torch, compare_with_torch, positive, randn
from lamina import functional as F

scan_module = importlib.import_module("lamina.functional.selective_scan")   # the function shadows it

N, L, D, S = 2, 6, 3, 4


def torch_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         initial_state=None):
    """The recurrence step by step, batch first: h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t."""
    dt = delta if delta_bias is None else delta + delta_bias
    if delta_softplus:
        dt = torch.nn.functional.softplus(dt)
    h = torch.zeros(u.shape[0], u.shape[2], A.shape[1], dtype=u.dtype) if initial_state is None else initial_state
    ys = []
    for t in range(u.shape[1]):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        ys.append(torch.einsum("nds,ns->nd", h, C[:, t]))
    y = torch.stack(ys, dim=1)
    if D is not None:
        y = y + u * D
    if z is not None:
        y = y * torch.nn.functional.silu(z)
    return y, h


def _inputs(seed: int = 0, steps: int = L):
    return {"u": randn(N, steps, D, seed=seed), "delta": positive(N, steps, D, seed=seed + 1, low=0.05, high=0.8),
            "A": -positive(D, S, seed=seed + 2), "B": randn(N, steps, S, seed=seed + 3),
            "C": randn(N, steps, S, seed=seed + 4), "D": randn(D, seed=seed + 5),
            "z": randn(N, steps, D, seed=seed + 6), "delta_bias": randn(D, seed=seed + 7, scale=0.5),
            "initial_state": randn(N, D, S, seed=seed + 8)}


OPTIONS = {
    "plain": ((), False),
    "D": (("D",), False),
    "z": (("z",), False),
    "bias_softplus": (("delta_bias",), True),
    "softplus": ((), True),
    "everything": (("D", "z", "delta_bias", "initial_state"), True),
}


def _pair(optional: tuple[str, ...], softplus: bool):
    def ours(u, delta, A, B, C, *rest):
        return F.selective_scan(u, delta, A, B, C, **dict(zip(optional, rest)), delta_softplus=softplus)

    def theirs(u, delta, A, B, C, *rest):
        return torch_selective_scan(u, delta, A, B, C, **dict(zip(optional, rest)), delta_softplus=softplus)[0]

    return ours, theirs


@pytest.mark.parametrize("chunk_values", [1 << 18, 2 * N * D * S], ids=["one_chunk", "chunks_of_2"])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_values_and_gradients_equal_a_torch_loop(monkeypatch, name, chunk_values):
    monkeypatch.setattr(scan_module, "CHUNK_VALUES", chunk_values)
    optional, softplus = OPTIONS[name]
    arrays = _inputs()
    ours, theirs = _pair(optional, softplus)
    inputs = [arrays[k] for k in ("u", "delta", "A", "B", "C", *optional)]
    compare_with_torch(ours, theirs, *inputs, dtype=np.float64)
    compare_with_torch(ours, theirs, *inputs, dtype=np.float32, rtol=1e-4)


def test_gradients_by_finite_differences(monkeypatch):
    monkeypatch.setattr(scan_module, "CHUNK_VALUES", 2 * N * D * S)      # the chunk boundaries too
    optional, _ = OPTIONS["everything"]
    arrays = _inputs(1, steps=5)
    ours, _ = _pair(optional, True)
    assert check_gradients(ours, *(arrays[k] for k in ("u", "delta", "A", "B", "C", *optional)))


def test_second_derivatives_equal_torch():
    optional, _ = OPTIONS["everything"]
    arrays = _inputs(2, steps=3)
    ours, theirs = _pair(optional, True)
    compare_double_backward_with_torch(ours, theirs, *(arrays[k] for k in ("u", "delta", "A", "B", "C", *optional)))


def test_the_last_state_continues_the_sequence():
    arrays = {k: lamina.tensor(v) for k, v in _inputs(3).items()}
    rest = {"D": arrays["D"], "delta_bias": arrays["delta_bias"], "delta_softplus": True}
    core = ("u", "delta", "B", "C", "z")
    whole, last = F.selective_scan(*(arrays[k] for k in ("u", "delta", "A", "B", "C")), z=arrays["z"], **rest,
                                   return_last_state=True)
    first = {k: arrays[k][:, :4] for k in core}
    second = {k: arrays[k][:, 4:] for k in core}
    head, middle = F.selective_scan(first["u"], first["delta"], arrays["A"], first["B"], first["C"], z=first["z"],
                                    **rest, return_last_state=True)
    tail, end = F.selective_scan(second["u"], second["delta"], arrays["A"], second["B"], second["C"],
                                 z=second["z"], **rest, initial_state=middle, return_last_state=True)
    np.testing.assert_allclose(np.concatenate([head.numpy(), tail.numpy()], axis=1), whole.numpy(), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(end.numpy(), last.numpy(), rtol=1e-5, atol=1e-6)
    expected = torch_selective_scan(*(torch.tensor(_inputs(3)[k]) for k in ("u", "delta", "A", "B", "C")))[1]
    plain_last = F.selective_scan(*(arrays[k] for k in ("u", "delta", "A", "B", "C")), return_last_state=True)[1]
    np.testing.assert_allclose(plain_last.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_shape_errors_name_the_input():
    arrays = _inputs()
    core = [arrays[k] for k in ("u", "delta", "A", "B", "C")]
    with pytest.raises(lamina.ShapeError, match="selective_scan: B must have shape \\(2, 6, 4\\)"):
        F.selective_scan(*core[:3], arrays["B"][:, :5], core[4])
    with pytest.raises(lamina.ShapeError, match="A must be \\(channels, state\\)"):
        F.selective_scan(core[0], core[1], arrays["A"][:2], core[3], core[4])
    with pytest.raises(lamina.ShapeError, match="initial_state must have shape \\(2, 3, 4\\)"):
        F.selective_scan(*core, initial_state=np.zeros((2, 4, 3)))
