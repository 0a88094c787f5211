"""grad runs only the part of the graph between the output and the tensors asked about: the
results are bit-identical to running every node (the engine's private switch turned off),
the nodes off every path are neither run, hooked nor freed, and a loop of grad calls on a
growing graph costs each call its own nodes."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

import lamina
from helpers import randn
from lamina import functional as F
from lamina.autograd import CustomFunction, grad, graph


@contextlib.contextmanager
def _pruning(on: bool):
    saved = graph._prune_to_wanted
    graph._prune_to_wanted = on
    try:
        yield
    finally:
        graph._prune_to_wanted = saved


@contextlib.contextmanager
def _counted_vjps():
    """The names of the nodes whose VJP ran, in order."""
    ran: list[str] = []

    def observe(vjp, g):
        ran.append(type(vjp.__self__).__name__)
        return vjp(g)

    saved = graph._node_observer
    graph._node_observer = observe
    try:
        yield ran
    finally:
        graph._node_observer = saved


def _leaf(*shape, seed=0):
    return lamina.tensor(randn(*shape, seed=seed), requires_grad=True, dtype=np.float64)


class SinCos(CustomFunction):
    """(sin x, cos x): a node with two differentiable outputs."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.sin(), x.cos()

    @staticmethod
    def backward(ctx, ds, dc):
        (x,) = ctx.saved_tensors
        return ds * x.cos() - dc * x.sin()


def _branching():
    x, w = _leaf(3, 4), _leaf(4, 2, seed=1)
    h = x @ w
    out = (h.tanh() * h.exp()).sum() + (h * h).mean()
    return out, [w], [x, w]


def _shared_and_nested_wanted():
    x, y = _leaf(5), _leaf(5, seed=1)
    s = x * y
    u = s.tanh() + s * 2.0
    out = (u * s).sum() + (x * 3.0).sum()
    return out, [s, x], [x, y]


def _wanted_near_the_output():
    x, y = _leaf(4), _leaf(4, seed=1)
    side = y
    for _ in range(10):
        side = (side * 0.9).tanh()
    h = (x * 2.0).exp()
    out = (h * side).sum()
    return out, [h, side], [x, y]


def _several_outputs(wanted_outputs: bool = False):
    x, v = _leaf(6), _leaf(6, seed=1)
    s, c = SinCos.apply(x * v)
    out = F.concat([(s * 2.0).reshape(1, 6), (c * v).reshape(1, 6)], axis=0).sum()
    return out, [s, c] if wanted_outputs else [v, s], [x, v]


def _the_outputs_of_a_node_with_several():
    return _several_outputs(wanted_outputs=True)


def _hooked():
    x, y = _leaf(4), _leaf(4, seed=1)
    on_path = x * 2.0
    on_path.register_hook(lambda g: g * 3.0)
    off_path = y.tanh()
    off_path.register_hook(lambda g: None)
    out = (on_path.exp() * off_path).sum()
    return out, [x], [x, y]


def _unused():
    x, y = _leaf(3), _leaf(3, seed=1)
    never = _leaf(3, seed=2)
    dangling = x * 5.0                        # computed from x, but not part of the output
    out = (x * y).sum()
    return out, [x, never, dangling], [x, y]


GRAPHS = [_branching, _shared_and_nested_wanted, _wanted_near_the_output, _several_outputs,
          _the_outputs_of_a_node_with_several, _hooked, _unused]


def _first_order(build):
    out, wanted, _ = build()
    with _counted_vjps() as ran:
        found = grad(out, wanted, allow_unused=True)
    return found, len(ran)


def _second_order(build):
    """grad(create_graph=True), then the gradient of sum ||g||^2 w.r.t. the leaves."""
    out, wanted, leaves = build()
    with _counted_vjps() as ran:
        found = grad(out, wanted, allow_unused=True, create_graph=True)
    recorded = [g for g in found if g is not None and g.requires_grad]   # a hook's replacement is a constant
    second = grad(sum((g * g).sum() for g in recorded), leaves, allow_unused=True) if recorded else []
    return [None if g is None else g.numpy() for g in found] + second, len(ran)


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        (x is None and y is None) or (x is not None and y is not None and x.dtype == y.dtype and np.array_equal(x, y))
        for x, y in zip(a, b))


@pytest.mark.parametrize("build", GRAPHS, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("order", [_first_order, _second_order], ids=["first", "create_graph"])
def test_results_are_bit_identical_to_running_every_node(build, order):
    pruned, pruned_count = order(build)
    with _pruning(False):
        full, full_count = order(build)
    assert _same(pruned, full)
    assert any(g is not None for g in pruned)
    assert pruned_count <= full_count


@pytest.mark.parametrize("build", [_wanted_near_the_output, _the_outputs_of_a_node_with_several, _hooked],
                         ids=lambda f: f.__name__.strip("_"))
def test_nodes_off_every_path_are_skipped(build):
    _, pruned_count = _first_order(build)
    with _pruning(False):
        _, full_count = _first_order(build)
    assert pruned_count < full_count


def _chain(x, length: int):
    for _ in range(length):
        x = x * 1.001
    return x


def test_a_gradient_near_the_output_runs_only_the_nodes_after_it():
    x = _leaf(3)
    near = _chain(x, 100)
    out = (near.tanh() * 2.0).sum()
    with _counted_vjps() as ran:
        (g,) = grad(out, near, retain_graph=True)
    assert ran == ["Sum", "Mul", "Tanh"]
    # the walk itself stops at near's depth: it lists out, the two nodes after near, and near
    assert len(graph.topological_order(out, graph.depth_floor([near]))) == 4
    np.testing.assert_array_equal(g, 2.0 * (1.0 - np.tanh(near.numpy()) ** 2))
    with _pruning(False), _counted_vjps() as ran:
        (unpruned,) = grad(out, near, retain_graph=True)
    assert len(ran) == 103
    np.testing.assert_array_equal(g, unpruned)


def test_a_wanted_leaf_skips_the_vjps_of_a_long_branch_it_does_not_feed():
    x, y = _leaf(3), _leaf(3, seed=1)
    out = (x * _chain(y, 100)).sum()
    with _counted_vjps() as ran:
        (g,) = grad(out, x)
    assert ran == ["Sum", "Mul"]
    np.testing.assert_array_equal(g, _chain(y, 100).numpy())


def _growing_loop(steps: int):
    """z <- z - 0.1 dE/dz with E(z) = sum tanh(z W)^2, each gradient recorded on the graph; the
    VJPs each step's grad runs, and the leaves' gradients of the final sum."""
    w, z0 = _leaf(3, 3, seed=1), _leaf(2, 3, seed=2)
    z, per_step = z0, []
    for _ in range(steps):
        energy = ((z @ w).tanh() ** 2).sum()
        with _counted_vjps() as ran:
            (g,) = grad(energy, z, create_graph=True)
        per_step.append(len(ran))
        z = z - 0.1 * g
    z.sum().backward()
    return per_step, z.numpy(), w.grad, z0.grad


def test_grad_in_a_loop_over_a_growing_graph_runs_a_fixed_number_of_vjps_per_step():
    steps = 12
    per_step, z, w_grad, z0_grad = _growing_loop(steps)
    assert per_step == [per_step[0]] * steps and sum(per_step) == steps * per_step[0]
    with _pruning(False):
        full_per_step, full_z, full_w_grad, full_z0_grad = _growing_loop(steps)
    assert all(later > earlier for earlier, later in zip(full_per_step, full_per_step[1:]))  # quadratic in total
    assert sum(full_per_step) > 4 * sum(per_step)
    for a, b in [(z, full_z), (w_grad, full_w_grad), (z0_grad, full_z0_grad)]:
        np.testing.assert_array_equal(a, b)


def test_only_the_nodes_that_ran_are_freed():
    """As in PyTorch, grad without retain_graph frees what it ran through; the part it skipped
    keeps its saved arrays, so a later backward through it works, and one through the part
    that ran says why it cannot."""
    x = _leaf(4)
    a = (x * 2.0).tanh()
    b = a.exp()
    out = (b * 3.0).sum()
    (g,) = grad(out, b)
    np.testing.assert_array_equal(g, np.full(4, 3.0))
    assert out.grad_fn.released and not b.grad_fn.released and not a.grad_fn.released
    b.sum().backward()
    expected = np.exp(np.tanh(2.0 * x.numpy())) * (1.0 - np.tanh(2.0 * x.numpy()) ** 2) * 2.0
    np.testing.assert_allclose(x.grad, expected, rtol=1e-12)
    with pytest.raises(RuntimeError, match="a second time.*retain_graph=True"):
        grad(out, x)


def test_a_freed_node_still_raises_when_grad_reaches_it():
    x = _leaf(3)
    y = (x * x).sum()
    grad(y, x)
    with pytest.raises(RuntimeError, match="a second time"):
        grad(y * 2.0, x)
    with pytest.raises(RuntimeError, match="create_graph=True.*freed"):
        grad(y * 2.0, x, create_graph=True)


@pytest.mark.parametrize("create_graph", [False, True])
def test_hooks_fire_on_the_path_only_as_in_torch(create_graph):
    def run(lib, leaf):
        fired = []
        x, y = leaf(randn(4)), leaf(randn(4, seed=1))
        below = x * 2.0                                  # between x and the wanted tensor
        below.register_hook(lambda g: fired.append("below"))
        wanted = below.exp() if lib is lamina else torch.exp(below)
        wanted.register_hook(lambda g: fired.append("wanted"))
        side = y * 3.0                                   # a branch the gradient does not need
        side.register_hook(lambda g: fired.append("side"))
        after = wanted * side
        after.register_hook(lambda g: fired.append("after"))
        (found,) = lib.autograd.grad(after.sum(), wanted, create_graph=create_graph)
        return sorted(fired), found

    ours, found = run(lamina, lambda a: lamina.tensor(a, requires_grad=True, dtype=np.float64))
    theirs, expected = run(torch, lambda a: torch.tensor(a, requires_grad=True))
    assert ours == theirs == ["after", "wanted"]
    np.testing.assert_allclose(getattr(found, "data", found), expected.detach().numpy(), rtol=1e-12)


def test_backward_still_reaches_every_leaf():
    x, y = _leaf(3), _leaf(3, seed=1)
    with _counted_vjps() as ran:
        ((x * y).tanh().sum() + (y * 2.0).sum()).backward()
    assert len(ran) == 6
    t = np.tanh(x.numpy() * y.numpy())
    np.testing.assert_allclose(x.grad, (1 - t**2) * y.numpy(), rtol=1e-12)
    np.testing.assert_allclose(y.grad, (1 - t**2) * x.numpy() + 2.0, rtol=1e-12)


# -- a node freed by an earlier backward raises only when the sweep must go through it ---------
def _freed_square(lib):
    """x leaf and y = x * x, whose node one backward has freed."""
    x = lib.tensor([1.0, 2.0], dtype=torch.float64 if lib is torch else np.float64, requires_grad=True)
    y = x * x
    y.sum().backward()
    return x, y


def test_a_graph_built_on_a_freed_node_reaches_the_tensors_above_it():
    grads = []
    for lib in (lamina, torch):
        _, y = _freed_square(lib)
        z = y * 3.0
        (found,) = lib.autograd.grad((z * z).sum(), [z])
        grads.append(getattr(found, "data", found))
    np.testing.assert_allclose(grads[0], grads[1].numpy(), rtol=1e-12)      # [6, 24]


def test_a_freed_node_that_is_wanted_or_off_the_path_is_not_run():
    for lib in (lamina, torch):
        x, y = _freed_square(lib)
        (at_y,) = lib.autograd.grad((y * 3.0).sum(), [y])
        w = lib.tensor([3.0, 4.0], dtype=x.dtype, requires_grad=True)
        (at_w,) = lib.autograd.grad((y * w).sum(), [w])
        np.testing.assert_allclose(np.asarray(getattr(at_y, "data", at_y)), [3.0, 3.0])
        np.testing.assert_allclose(np.asarray(getattr(at_w, "data", at_w)), [1.0, 4.0])


def test_a_freed_node_with_a_wanted_tensor_below_still_raises():
    x, y = _freed_square(lamina)
    w = lamina.tensor([3.0, 4.0], dtype=np.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="a second time"):
        grad((y * w).sum(), [w, x])
    h = x.exp()                                                     # x below two freed nodes
    u = h * h
    u.sum().backward()
    with pytest.raises(RuntimeError, match="a second time"):
        grad((u * w).sum(), [x])


def test_a_node_built_on_a_freed_one_keeps_a_finite_depth():
    _, y = _freed_square(lamina)
    z = y * 3.0
    assert y._ctx.graph_depth == 1 and z._ctx.graph_depth == 2


def test_a_wanted_tensor_of_unknown_depth_is_still_found():
    x = _leaf(2)
    y = x * 2.0
    del y._ctx.graph_depth                                          # a node recorded without the number
    z = y * 3.0
    assert z._ctx.graph_depth == float("inf")
    (found,) = grad((z * z).sum(), [z])
    np.testing.assert_allclose(found, 2 * z.numpy(), rtol=1e-12)


def test_a_sweep_from_several_outputs_adds_their_vjps_as_torch():
    x = _leaf(3)
    a = x * x
    b = a.sin()
    found = graph.gradients([a, b, a], [np.ones(3), np.full(3, 2.0), np.ones(3)], [x], retain_graph=True)
    (on_graph,) = graph.graph_gradients([b, a], [lamina.tensor(np.full(3, 2.0), dtype=np.float64),
                                                 lamina.tensor(np.full(3, 2.0), dtype=np.float64)], [x])
    xt = torch.tensor(x.numpy(), requires_grad=True)
    at = xt * xt
    (expected,) = torch.autograd.grad([at, at.sin()], [xt], [torch.full((3,), 2.0, dtype=torch.float64)] * 2)
    np.testing.assert_allclose(found[0], expected.numpy(), rtol=1e-12)
    np.testing.assert_allclose(on_graph.numpy(), expected.numpy(), rtol=1e-12)
