"""The neural Turing machine: each addressing step and the memory read and write equal torch
rewrites of the paper's formulas (float64, values and gradients), the circular shift moves
weight exactly, one cell step passes a gradient check, what is written can be read back,
it learns the copy task, and the copy-task generator is right."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import compare_with_torch
from lamina import functional as F
from lamina import optim
from lamina.data import copy_task
from lamina.errors import ShapeError
from lamina.models import (
    NTM,
    NTMCell,
    circular_shift,
    content_addressing,
    erase_and_add,
    interpolate,
    memory_read,
    sharpen,
)

B, N, M = 2, 5, 3


def _rng():
    return np.random.default_rng(0)


def _distribution(rng, *shape):
    e = np.exp(rng.standard_normal(shape))
    return e / e.sum(-1, keepdims=True)


def test_content_addressing_matches_torch():
    rng = _rng()

    def reference(memory, key, beta):
        cos = (memory * key[:, None]).sum(-1) / (memory.norm(dim=-1).clamp_min(1e-8) * key.norm(dim=-1)[:, None]
                                                 .clamp_min(1e-8))
        return torch.softmax(beta * cos, -1)

    compare_with_torch(content_addressing, reference, rng.standard_normal((B, N, M)), rng.standard_normal((B, M)),
                       np.abs(rng.standard_normal((B, 1))) * 3, dtype=np.float64)


def test_interpolation_and_sharpening_match_torch():
    rng = _rng()
    compare_with_torch(interpolate, lambda wc, wp, g: g * wc + (1 - g) * wp, _distribution(rng, B, N),
                       _distribution(rng, B, N), rng.random((B, 1)), dtype=np.float64)
    compare_with_torch(sharpen, lambda w, gamma: w ** gamma / (w ** gamma).sum(-1, keepdim=True),
                       _distribution(rng, B, N), 1 + 2 * rng.random((B, 1)), dtype=np.float64)


@pytest.mark.parametrize("width", [1, 3, 5])
def test_circular_shift_matches_the_convolution_sum(width):
    rng = _rng()

    def rolled_sum(w, s):                                       # torch.roll(w, k)[i] = w[i - k]
        r = s.shape[-1] // 2
        out = torch.zeros_like(w)
        for offset in range(-r, r + 1):
            out = out + torch.roll(w, offset, -1) * s[:, offset + r:offset + r + 1]
        return out

    w, s = _distribution(rng, B, N), _distribution(rng, B, width)
    compare_with_torch(circular_shift, rolled_sum, w, s, dtype=np.float64)
    # the sum written out index by index, independently of any roll convention
    expected = np.zeros((B, N))
    r = width // 2
    for i in range(N):
        for j in range(N):
            offset = (i - j) % N
            offset = offset - N if offset > r else offset
            if -r <= offset <= r:
                expected[:, i] += w[:, j] * s[:, offset + r]
    assert np.allclose(circular_shift(lamina.tensor(w), lamina.tensor(s)).numpy(), expected, atol=1e-14)


def test_circular_shift_moves_weight_exactly():
    w = np.eye(N)[[0, N - 1]]                                     # slot 0, and the last slot
    forward = np.array([[0.0, 0.0, 1.0]] * 2)                    # all on offset +1
    backward = np.array([[1.0, 0.0, 0.0]] * 2)                   # all on offset -1
    moved = circular_shift(lamina.tensor(w), lamina.tensor(forward)).numpy()
    assert (moved == np.eye(N)[[1, 0]]).all()                    # the last slot wraps round to slot 0
    moved = circular_shift(lamina.tensor(w), lamina.tensor(backward)).numpy()
    assert (moved == np.eye(N)[[N - 1, N - 2]]).all()
    with pytest.raises(ShapeError, match="odd count"):
        circular_shift(lamina.tensor(w), lamina.tensor(np.ones((2, 2))))
    with pytest.raises(ShapeError, match="odd count"):
        circular_shift(lamina.tensor(w), lamina.tensor(np.ones((2, 7))))


def test_read_and_write_match_torch():
    rng = _rng()
    compare_with_torch(memory_read, lambda mem, w: torch.einsum("bn,bnm->bm", w, mem), rng.standard_normal((B, N, M)),
                       _distribution(rng, B, N), dtype=np.float64)

    def ours(mem, w1, w2, e1, e2, a1, a2):
        return erase_and_add(mem, [w1, w2], [e1, e2], [a1, a2])

    def reference(mem, w1, w2, e1, e2, a1, a2):
        kept = mem * (1 - w1[:, :, None] * e1[:, None]) * (1 - w2[:, :, None] * e2[:, None])
        return kept + w1[:, :, None] * a1[:, None] + w2[:, :, None] * a2[:, None]

    compare_with_torch(ours, reference, rng.standard_normal((B, N, M)), _distribution(rng, B, N),
                       _distribution(rng, B, N), rng.random((B, M)), rng.random((B, M)), rng.standard_normal((B, M)),
                       rng.standard_normal((B, M)), dtype=np.float64)


@pytest.mark.parametrize("controller", ["lstm", "dense"])
def test_gradcheck_of_one_step(f64, controller):
    rng = _rng()
    cell = NTMCell(3, 2, controller=controller, controller_units=3, memory=(4, 2), read_heads=2, write_heads=1)
    x = lamina.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    state = cell.initial_state(2)
    _, state = cell(rng.standard_normal((2, 3)), state)         # a state away from the initial one, detached

    def detached(part):
        if part is None:
            return None
        return [detached(p) for p in part] if isinstance(part, (list, tuple)) else lamina.tensor(part.numpy())

    state = type(state)(*(detached(part) for part in state))
    state = state._replace(memory=lamina.tensor(state.memory.numpy() + rng.standard_normal((2, 4, 2)),
                                                requires_grad=True))

    def step(x, memory, *params):
        y, new = cell(x, state._replace(memory=memory))
        return F.add(F.sum(F.square(y)), F.sum(F.mul(new.memory, new.memory)))

    assert lamina.gradcheck(step, x, state.memory, *cell.parameters())


def test_written_vector_reads_back():
    """One write head with its weighting on slot 2, erase everything, add a: a read head whose
    key is a finds slot 2 and returns a."""
    memory = lamina.tensor(np.random.default_rng(1).standard_normal((1, N, M)))
    a = np.array([[0.3, -0.9, 0.5]])
    written = erase_and_add(memory, [lamina.tensor(np.eye(N)[[2]])], [lamina.tensor(np.ones((1, M)))],
                            [lamina.tensor(a)])
    w = content_addressing(written, lamina.tensor(a), lamina.tensor([[50.0]]))
    assert w.numpy().argmax() == 2 and w.numpy()[0, 2] > 0.99
    assert np.allclose(memory_read(written, w).numpy(), a, atol=0.05)


def test_learns_to_copy():
    model = NTM(5, 4, controller="dense", controller_units=32, memory=(8, 8))
    opt = optim.Adam(model, lr=0.01)
    for step in range(100):
        x, target = copy_task(32, bits=4, min_length=3, max_length=5, seed=step)
        length = target.shape[1]
        logits = F.getitem(model(x), (slice(None), slice(length + 1, None)))
        cost = F.binary_cross_entropy_with_logits(logits, target)
        opt.zero_grad()
        cost.backward()
        opt.step()
    errors = []
    for seed in range(3):
        x, target = copy_task(100, bits=4, min_length=3, max_length=5, seed=10_000 + seed)
        length = target.shape[1]
        errors.append(((model(x).numpy()[:, length + 1:] > 0) != (target > 0.5)).mean())
    assert np.mean(errors) < 0.1                                  # measured 0.0


def test_copy_task_generator():
    x, target = copy_task(6, bits=4, min_length=3, max_length=3, seed=0)
    assert x.shape == (6, 7, 5) and target.shape == (6, 3, 4)
    assert (x[:, :3, :4] == target).all() and (x[:, :3, 4] == 0).all()
    assert (x[:, 3] == [0, 0, 0, 0, 1]).all() and (x[:, 4:] == 0).all()
    lengths = {copy_task(1, min_length=3, max_length=5, seed=s)[1].shape[1] for s in range(40)}
    assert lengths == {3, 4, 5}
    with pytest.raises(ValueError, match="max_length"):
        copy_task(2, min_length=4, max_length=3)


def test_errors():
    with pytest.raises(ValueError, match="shift_range=2 gives 5 offsets"):
        NTMCell(2, 2, memory=(4, 3), shift_range=2)
    with pytest.raises(ValueError, match="controller"):
        NTMCell(2, 2, controller="gru")
    with pytest.raises(ValueError, match="memory must be"):
        NTMCell(2, 2, memory=8)
    cell = NTMCell(2, 2, controller_units=4, memory=(6, 3))
    with pytest.raises(ShapeError, match=r"\(batch, 2\)"):
        cell(np.zeros((1, 3), dtype=np.float32))
    state = cell.initial_state(1)
    with pytest.raises(ShapeError, match=r"memory has shape \(1, 5, 3\)"):
        cell(np.zeros((1, 2), dtype=np.float32), state._replace(memory=lamina.tensor(np.zeros((1, 5, 3)))))
    with pytest.raises(ShapeError, match="time"):
        NTM(2, 2, controller_units=4, memory=(6, 3))(np.zeros((1, 2), dtype=np.float32))


def test_saves_and_loads(tmp_path):
    x, _ = copy_task(2, seed=0)
    model = NTM(5, 4, controller="lstm", controller_units=6, memory=(6, 4), read_heads=2, name="copier")
    before = model(x).numpy()
    lamina.save(model, tmp_path / "ntm.safetensors")
    again = lamina.load(tmp_path / "ntm.safetensors")
    np.testing.assert_array_equal(again(x).numpy(), before)
    assert again.get_config() == model.get_config()
