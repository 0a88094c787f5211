"""Gradient checkpointing: the same values and gradients as without it (and as PyTorch's
torch.utils.checkpoint), with less kept for backward."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

import lamina
from lamina import nn
from lamina.autograd import checkpoint, checkpoint_sequential


def _mlp(seed: int, depth: int = 4, width: int = 16, dropout: float = 0.0):
    lamina.manual_seed(seed)
    layers = []
    for _ in range(depth):
        layers += [nn.Dense(width), nn.Tanh()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Dense(3))
    return nn.Sequential(layers)


def _gradients(model, x, segments: int | None):
    model.zero_grad()
    xt = lamina.tensor(x, requires_grad=True, dtype=x.dtype)
    out = model(xt) if segments is None else checkpoint_sequential(model, segments, xt)
    (out * out).sum().backward()
    return out.numpy(), xt.grad, [p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize("segments", [1, 2, 3, 9])
def test_checkpoint_sequential_gives_the_same_values_and_gradients(segments):
    x = np.random.default_rng(0).standard_normal((6, 5))
    model = _mlp(0)
    model(lamina.tensor(x.astype(np.float32)))               # build
    out, gx, gp = _gradients(model, x.astype(np.float32), None)
    out_c, gx_c, gp_c = _gradients(model, x.astype(np.float32), segments)
    np.testing.assert_array_equal(out_c, out)
    np.testing.assert_allclose(gx_c, gx, rtol=1e-6, atol=1e-7)
    for a, b in zip(gp_c, gp):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_checkpoint_gradcheck_float64_through_a_closure():
    rng = np.random.default_rng(3)
    w = lamina.tensor(rng.standard_normal((4, 4)), requires_grad=True, dtype=np.float64)

    def block(h):
        return ((h @ w).tanh() @ w).sigmoid()

    x = lamina.tensor(rng.standard_normal((3, 4)), requires_grad=True, dtype=np.float64)
    assert lamina.gradcheck(lambda a, b: checkpoint(block, a) * 2.0, x, w)


def test_checkpoint_matches_torch_checkpoint():
    rng = np.random.default_rng(4)
    xa, w1, w2 = rng.standard_normal((5, 6)), rng.standard_normal((6, 7)), rng.standard_normal((7, 2))
    x = lamina.tensor(xa, requires_grad=True, dtype=np.float64)
    a = lamina.tensor(w1, requires_grad=True, dtype=np.float64)
    b = lamina.tensor(w2, requires_grad=True, dtype=np.float64)
    out = checkpoint(lambda h: (h @ a).relu() @ b, x)
    (out ** 3).sum().backward()
    xt, at, bt = (torch.tensor(v, requires_grad=True) for v in (xa, w1, w2))
    out_t = torch.utils.checkpoint.checkpoint(lambda h: torch.relu(h @ at) @ bt, xt, use_reentrant=False)
    (out_t ** 3).sum().backward()
    np.testing.assert_allclose(out.numpy(), out_t.detach().numpy(), rtol=1e-12)
    for ours, theirs in ((x, xt), (a, at), (b, bt)):
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-12)


def test_dropout_draws_the_same_masks_when_run_again():
    x = np.random.default_rng(5).standard_normal((8, 5)).astype(np.float32)
    model = _mlp(1, dropout=0.5)
    model(lamina.tensor(x))                                  # build
    model.train()
    lamina.manual_seed(7)
    out, gx, gp = _gradients(model, x, None)
    lamina.manual_seed(7)
    out_c, gx_c, gp_c = _gradients(model, x, 3)
    np.testing.assert_array_equal(out_c, out)
    np.testing.assert_allclose(gx_c, gx, rtol=1e-6, atol=1e-7)
    for a, b in zip(gp_c, gp):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # and the generator goes on from where the forward pass left it
    lamina.manual_seed(7)
    _gradients(model, x, None)
    plain_next = lamina.backend.rng().random()
    lamina.manual_seed(7)
    _gradients(model, x, 3)
    assert lamina.backend.rng().random() == plain_next


def test_batch_norm_updates_its_running_statistics_once():
    x = np.random.default_rng(6).standard_normal((16, 4, 4, 3)).astype(np.float32)

    def net():
        lamina.manual_seed(2)
        model = nn.Sequential([nn.Conv2D(4, 3, padding="same"), nn.BatchNorm(), nn.ReLU(),
                               nn.Conv2D(4, 3), nn.BatchNorm(), nn.ReLU(), nn.Flatten(), nn.Dense(2)])
        model.build(x.shape)
        return model

    plain, checked = net(), net()
    for model, segments in ((plain, None), (checked, 2)):
        model.train()
        _gradients(model, x, segments)
    for (name, a), (_, b) in zip(plain.named_buffers(), checked.named_buffers()):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, err_msg=name)
    for a, b in zip(plain.parameters(), checked.parameters()):
        np.testing.assert_allclose(b.grad, a.grad, rtol=1e-4, atol=1e-6)


def test_nested_checkpoints():
    rng = np.random.default_rng(8)
    w = lamina.tensor(rng.standard_normal((3, 3)), requires_grad=True, dtype=np.float64)
    x = lamina.tensor(rng.standard_normal((2, 3)), requires_grad=True, dtype=np.float64)

    def inner(h):
        return (h @ w).tanh()

    def outer(h):
        return checkpoint(inner, checkpoint(inner, h)) * 3.0

    assert lamina.gradcheck(lambda a, b: checkpoint(outer, a), x, w)


def test_state_changed_by_the_call_is_refused():
    calls = []
    w = lamina.tensor(np.ones((2, 2)), requires_grad=True)

    def counting(h):
        calls.append(1)
        return h @ w * float(len(calls))

    out = checkpoint(counting, lamina.tensor(np.ones((1, 2))))
    with pytest.raises(RuntimeError, match="checkpoint: running counting again in backward gave a different"):
        out.sum().backward()


def test_outside_a_graph_it_is_the_plain_call_and_bad_input_is_refused():
    model = _mlp(2)
    x = lamina.tensor(np.ones((2, 5), dtype=np.float32))
    with lamina.no_grad():
        out = checkpoint(model, x)
    assert out._ctx is None
    np.testing.assert_array_equal(out.numpy(), model(x).numpy())
    with pytest.raises(TypeError, match="must return a Tensor or a tuple of them, got int"):
        checkpoint(lambda h: 3, lamina.tensor(np.ones(2), requires_grad=True))
    with pytest.raises(TypeError, match="fn must be callable"):
        checkpoint(3, x)
    with pytest.raises(ValueError, match="segments must be an integer in \\[1, 9\\] for 9 layers, got 0"):
        checkpoint_sequential(model, 0, x)


def test_checkpointing_keeps_less_for_backward():
    """The arrays alive between forward and backward: with sqrt(L) segments of a deep chain
    they are a fraction of what the whole graph keeps."""
    x = np.random.default_rng(9).standard_normal((128, 128)).astype(np.float32)
    model = _mlp(3, depth=48, width=128)
    model(lamina.tensor(x))

    def kept(segments):
        xt = lamina.tensor(x)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        out = model(xt) if segments is None else checkpoint_sequential(model, segments, xt)
        held = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        out.sum().backward()
        return held

    plain, checked = kept(None), kept(10)
    assert checked < 0.4 * plain, (checked, plain)


# -- hooks run once, the caller's graph is kept, several outputs --------------------------------
def _f64(values, lib=lamina, requires_grad=False):
    if lib is torch:
        return torch.tensor(values, dtype=torch.float64, requires_grad=requires_grad)
    return lamina.tensor(values, dtype=np.float64, requires_grad=requires_grad)


@pytest.mark.parametrize("use_reentrant", [None, False, True])
def test_a_hook_on_a_leaf_read_inside_runs_once(use_reentrant):
    grads = []
    for lib, run in ((lamina, checkpoint), (torch, torch.utils.checkpoint.checkpoint)):
        w = _f64([0.5, -1.0], lib, requires_grad=True)
        w.register_hook(lambda g: g * 2)
        run(lambda a, w=w: (a * w).sum(), _f64([1.0, 2.0], lib), use_reentrant=False).backward()
        grads.append(np.asarray(w.grad))
    lamina_w = _f64([0.5, -1.0], requires_grad=True)
    lamina_w.register_hook(lambda g: g * 2)
    checkpoint(lambda a: (a * lamina_w).sum(), _f64([1.0, 2.0]), use_reentrant=use_reentrant).backward()
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)                 # [2, 4]
    np.testing.assert_allclose(lamina_w.grad, grads[1], rtol=1e-12)


def test_a_hook_on_an_input_runs_once_under_create_graph():
    results = []
    for lib, run in ((lamina, checkpoint), (torch, torch.utils.checkpoint.checkpoint)):
        x = _f64([1.0, 2.0], lib, requires_grad=True)
        x.register_hook(lambda g: g * 2)
        out = run(lambda a: (a * a).sum(), x, use_reentrant=False)
        (g,) = lib.autograd.grad(out, [x], create_graph=True)
        results.append(g.detach().numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-12)             # [4, 8]


def test_a_non_leaf_read_from_the_closure_keeps_its_node_for_a_second_backward():
    grads = []
    for lib, run in ((lamina, checkpoint), (torch, torch.utils.checkpoint.checkpoint)):
        w = _f64([0.5, -1.0], lib, requires_grad=True)
        w2 = w * 1.5
        loss = run(lambda a, w2=w2: (a * w2).sin(), _f64([1.0, 2.0], lib), use_reentrant=False).sum()
        loss.backward(retain_graph=True)
        loss.backward()
        grads.append(np.asarray(w.grad))
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)


def test_a_function_of_several_outputs_matches_torch():
    results = []
    for lib, run in ((lamina, checkpoint), (torch, torch.utils.checkpoint.checkpoint)):
        x, w = _f64([1.0, 2.0], lib, requires_grad=True), _f64([0.5, -1.0], lib, requires_grad=True)
        a, b, c = run(lambda t, w=w: (t * t, (t.sin() * w).reshape(1, 2), 7), x, use_reentrant=False)
        assert c == 7 and tuple(b.shape) == (1, 2)
        (a.sum() + (b * b).sum()).backward(retain_graph=True)
        (g,) = lib.autograd.grad((a * b).sum(), [x], create_graph=True)
        (h,) = lib.autograd.grad(g.sum(), [x])
        results.append([np.asarray(x.grad), np.asarray(w.grad), g.detach().numpy(), np.asarray(h)])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_use_reentrant_must_be_a_bool():
    with pytest.raises(TypeError, match="use_reentrant must be True, False or None, got 'no'"):
        checkpoint(lambda a: a * 2.0, _f64([1.0], requires_grad=True), use_reentrant="no")
