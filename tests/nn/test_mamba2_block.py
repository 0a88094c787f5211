"""Mamba-2's block (lamina.nn.Mamba2Block) against a torch rewrite, step-by-step decoding
against the full call, and the Mamba-2 language model learning a copy task."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

import numpy as np
import pytest
import torch
from tests.helpers import check_gradients, randn

import lamina
from lamina import functional as F
from lamina import nn, optim
from lamina.autograd import no_grad
from lamina.errors import ShapeError
from lamina.models import Mamba2LM

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
D_MODEL = 6


def _block(dtype=np.float64, **options) -> nn.Mamba2Block:
    settings = {"d_state": 4, "d_conv": 3, "expand": 2, "headdim": 3, "ngroups": 2, "chunk_size": 3, **options}
    block = nn.Mamba2Block(D_MODEL, **settings)
    block.build((None, None, D_MODEL))
    rng = np.random.default_rng(5)
    for param in block.parameters():        # away from the ones and zeros of the initialisation
        param.data = (param.data + 0.1 * rng.normal(size=param.shape)).astype(dtype)
    return block


def torch_block(block: nn.Mamba2Block, u, weights):
    """The Mamba-2 block written out in torch, the recurrence run step by step."""
    n, t, _ = u.shape
    inner, g, s, h, p, k = block.d_inner, block.ngroups, block.d_state, block.nheads, block.headdim, block.d_conv
    zxbcdt = u @ weights["in_proj.weight"]
    z, xbc, dt = zxbcdt[..., :inner], zxbcdt[..., inner:inner + block.conv_dim], zxbcdt[..., inner + block.conv_dim:]
    conv = torch.nn.functional.conv1d(xbc.transpose(1, 2), weights["conv_weight"][:, None, :],
                                      weights["conv_bias"], padding=k - 1, groups=block.conv_dim)[..., :t]
    xbc = torch.nn.functional.silu(conv.transpose(1, 2))
    x = xbc[..., :inner].reshape(n, t, h, p)
    B = xbc[..., inner:inner + g * s].reshape(n, t, g, s).repeat_interleave(h // g, dim=2)
    C = xbc[..., inner + g * s:].reshape(n, t, g, s).repeat_interleave(h // g, dim=2)
    dt = torch.nn.functional.softplus(dt + weights["dt_bias"])
    A = -torch.exp(weights["A_log"])
    state = torch.zeros(n, h, p, s, dtype=u.dtype)
    ys = []
    for i in range(t):
        state = (torch.exp(dt[:, i] * A)[..., None, None] * state
                 + (dt[:, i, :, None] * x[:, i])[..., None] * B[:, i, :, None, :])
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C[:, i]))
    y = torch.stack(ys, dim=1) + x * weights["D"][:, None]
    y = y.reshape(n, t, inner) * torch.nn.functional.silu(z)
    grouped = y.reshape(n, t, g, inner // g)
    y = (grouped * torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + block.eps)).reshape(n, t, inner)
    return (y * weights["norm_weight"]) @ weights["out_proj.weight"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_block_matches_a_torch_rewrite_in_values_and_gradients(dtype):
    block = _block(dtype)
    u = randn(2, 7, D_MODEL, seed=1).astype(dtype)
    ours = lamina.tensor(u, requires_grad=True, dtype=dtype)
    out = block(ours)
    upstream = randn(2, 7, D_MODEL, seed=2).astype(dtype)
    F.sum(out * upstream).backward()
    weights = {name: torch.tensor(np.asarray(param.data), requires_grad=True)
               for name, param in block.named_parameters()}
    theirs = torch.tensor(u, requires_grad=True)
    expected = torch_block(block, theirs, weights)
    (expected * torch.tensor(upstream)).sum().backward()
    tol = 1e-10 if dtype == np.float64 else 2e-4
    assert out.dtype == dtype
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), atol=tol, rtol=tol)
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), atol=tol, rtol=tol)
    for name, param in block.named_parameters():
        np.testing.assert_allclose(param.grad, weights[name].grad.numpy(), atol=tol, rtol=tol, err_msg=name)


def test_block_gradient_check_float64():
    block = _block(d_conv=2, chunk_size=2)
    assert check_gradients(lambda u: block(u), randn(1, 3, D_MODEL, seed=3))


@pytest.mark.parametrize("d_conv", [1, 3])
def test_step_by_step_decoding_equals_the_full_call(d_conv):
    block = _block(d_conv=d_conv)
    u = lamina.tensor(randn(2, 8, D_MODEL, seed=4), dtype=np.float64)
    with no_grad():
        full, (history, last) = block(u, return_state=True)
        state, steps = None, []
        for t in range(8):
            out, state = block.step(u[:, t], state)
            steps.append(out.numpy())
        first, middle = block(u[:, :5], return_state=True)
        rest = block(u[:, 5:], state=middle)
    np.testing.assert_allclose(np.stack(steps, axis=1), full.numpy(), atol=1e-12)
    np.testing.assert_allclose(state[1].numpy(), last.numpy(), atol=1e-12)
    np.testing.assert_allclose(state[0].numpy(), history.numpy(), atol=0)
    np.testing.assert_allclose(np.concatenate([first.numpy(), rest.numpy()], axis=1), full.numpy(), atol=1e-12)


def test_block_errors_name_the_layer():
    with pytest.raises(ValueError, match="Mamba2Block: headdim"):
        nn.Mamba2Block(6, headdim=5)
    with pytest.raises(ValueError, match="ngroups"):
        nn.Mamba2Block(6, headdim=3, ngroups=3)
    block = _block()
    with pytest.raises(ShapeError, match="state of shapes"):
        block(randn(2, 3, D_MODEL), state=(np.zeros((2, 2, 5)), np.zeros((2, 4, 3, 4))))


def test_language_model_steps_equal_the_full_call():
    model = Mamba2LM(11, 8, n_layer=2, d_state=4, headdim=4, chunk_size=4)
    ids = np.random.default_rng(0).integers(0, 11, (2, 6))
    with no_grad():
        full = model(ids).numpy()
        states, steps = None, []
        for t in range(6):
            scores, states = model.step(ids[:, t], states)
            steps.append(scores.numpy())
    assert full.shape == (2, 6, 11)
    np.testing.assert_allclose(np.stack(steps, axis=1), full, atol=1e-4)


def test_language_model_learns_to_copy_the_token_four_steps_back():
    """A 1-layer Mamba-2 LM predicts x_{t-4} from the prefix (chance: 1/8). Its convolution
    (kernel 4) sees only three steps back: the token must be carried by the SSD state."""
    lag, vocab = 4, 8
    rng = np.random.default_rng(0)
    model = Mamba2LM(vocab, 16, n_layer=1, d_state=8, d_conv=4, headdim=8, chunk_size=8, initializer_range=0.5)
    opt = optim.Adam(model, lr=3e-2)
    for _ in range(300):
        ids = rng.integers(0, vocab, (16, 16))
        logits = model(ids)[:, lag:]
        loss = F.cross_entropy(F.reshape(logits, -1, vocab), ids[:, :-lag].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    ids = np.random.default_rng(1).integers(0, vocab, (32, 16))
    with no_grad():
        predicted = model(ids).numpy()[:, lag:].argmax(-1)
    accuracy = (predicted == ids[:, :-lag]).mean()
    assert accuracy > 0.5, accuracy          # 4x chance; about 0.95 with the suite's seed


def test_readme_mamba2_example_runs():
    section = README.read_text().split("### Mamba-2 (state-space duality)", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    names: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, str(README), "exec"), names)
    assert names["y"].shape == (2, 10, 2, 4) and names["gap"] < 1e-10
    assert names["out"].shape == (2, 10, 16) and names["step_gap"] < 1e-5
