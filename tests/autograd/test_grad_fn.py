"""Tensor.grad_fn and next_functions: the graph reached from a loss has the shape of
PyTorch's for the same expression (op names differ: lamina names its ops, PyTorch its
backward nodes), and the views only read the graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
import lamina.functional as F
from helpers import randn
from lamina.autograd import AccumulateGrad, GradFn


def structure(root, leaf_name) -> dict:
    """What the graph below the node ``root`` looks like, whatever its op names: the op nodes
    as (height, inputs needing grad) pairs, height being the longest path down to a leaf;
    each leaf's name with the heights of the ops that read it; and the edge count. Works on
    lamina's and PyTorch's nodes alike (both have next_functions; leaves have .variable)."""
    heights: dict = {}

    def height(node) -> int:
        if node not in heights:
            children = [c for c, _ in node.next_functions if c is not None]
            heights[node] = 1 + max(map(height, children)) if children else 0
        return heights[node]

    height(root)
    ops, consumers, edges = [], {}, 0
    for node in heights:
        if hasattr(node, "variable"):
            continue
        children = [c for c, _ in node.next_functions if c is not None]
        edges += len(children)
        ops.append((heights[node], len(children)))
        for child in children:
            if hasattr(child, "variable"):
                consumers.setdefault(leaf_name(child.variable), []).append(heights[node])
    return {"ops": sorted(ops), "leaves": {k: sorted(v) for k, v in consumers.items()}, "edges": edges}


def both(fn, **arrays):
    """``fn`` run on lamina tensors and on torch tensors of the same float64 values, each
    leaf requiring grad; the structures of the two graphs."""
    mine = {k: lamina.tensor(v, requires_grad=True, dtype=np.float64) for k, v in arrays.items()}
    theirs = {k: torch.tensor(v, requires_grad=True) for k, v in arrays.items()}
    names_mine = {id(t): k for k, t in mine.items()}
    names_theirs = {id(t): k for k, t in theirs.items()}
    a = structure(fn(F, mine).grad_fn, lambda t: names_mine[id(t)])
    b = structure(fn(torch, theirs).grad_fn, lambda t: names_theirs[id(t)])
    return a, b


def relu(lib, x):
    return F.relu(x) if lib is F else torch.relu(x)


def log_softmax(lib, x):
    return F.log_softmax(x) if lib is F else torch.log_softmax(x, dim=-1)


def arithmetic(lib, t):
    x, y = t["x"], t["y"]
    return ((x * y + x / y - 3.0 * x) ** 2 - (-y)).sum()


def matmul_relu_sum(lib, t):
    return relu(lib, t["x"] @ t["w"]).sum()


def mlp_loss(lib, t):
    onehot = np.eye(4)[[0, 3, 1]]
    onehot = lamina.tensor(onehot, dtype=np.float64) if lib is F else torch.tensor(onehot)
    h = relu(lib, t["x"] @ t["w1"] + t["b1"])
    logits = h @ t["w2"] + t["b2"]
    return -(log_softmax(lib, logits) * onehot).sum(-1).mean()


def broadcasting(lib, t):
    return ((t["x"] + t["b"]) * t["s"] - t["c"]).mean()


def branch_reused(lib, t):
    h = (t["x"] @ t["w"]).tanh()
    return (h * h + h).sum()


CASES = {
    "arithmetic": (arithmetic, {"x": randn(3, 4), "y": randn(3, 4, seed=1) + 3.0}),
    "matmul_relu_sum": (matmul_relu_sum, {"x": randn(3, 5), "w": randn(5, 2, seed=1)}),
    "mlp_loss": (mlp_loss, {"x": randn(3, 5), "w1": randn(5, 6, seed=1), "b1": randn(6, seed=2),
                            "w2": randn(6, 4, seed=3), "b2": randn(4, seed=4)}),
    "broadcasting": (broadcasting, {"x": randn(3, 4), "b": randn(4, seed=1), "s": randn(1, 4, seed=2),
                                    "c": randn(3, 1, seed=3)}),
    "branch_reused": (branch_reused, {"x": randn(2, 3), "w": randn(3, 3, seed=1)}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_graph_has_the_shape_of_torchs(case):
    fn, arrays = CASES[case]
    mine, theirs = both(fn, **arrays)
    assert len(mine["ops"]) == len(theirs["ops"])
    assert set(mine["leaves"]) == set(theirs["leaves"]) == set(arrays)
    assert mine == theirs


def test_a_reused_value_is_one_node_reached_along_each_branch():
    x = lamina.tensor(randn(2, 3), requires_grad=True)
    h = x.tanh()
    out = h * h + h
    add = out.grad_fn
    mul = add.next_functions[0][0]
    tanh_views = [mul.next_functions[0][0], mul.next_functions[1][0], add.next_functions[1][0]]
    assert all(v == h.grad_fn for v in tanh_views)
    assert len(set(tanh_views)) == 1
    assert tanh_views[0].next_functions == ((AccumulateGrad(x), 0),)


def test_leaves_and_constants():
    w = lamina.tensor(randn(3), requires_grad=True)
    c = lamina.tensor(randn(3))
    y = w * c
    assert w.grad_fn is None and c.grad_fn is None and w.is_leaf and not y.is_leaf
    assert isinstance(y.grad_fn, GradFn) and y.grad_fn.name == "Mul"
    (first, index), (second, _) = y.grad_fn.next_functions
    assert isinstance(first, AccumulateGrad) and first.variable is w and index == 0
    assert first.name == "AccumulateGrad" and first.next_functions == ()
    assert second is None
    with lamina.no_grad():
        assert (w * c).grad_fn is None


def test_saved_arrays_are_what_the_op_keeps_for_backward():
    a = lamina.tensor(randn(2, 3), requires_grad=True)
    b = lamina.tensor(randn(3, 4, seed=1), requires_grad=True)
    saved = (a @ b).grad_fn.saved_arrays()
    assert saved["a"] is a.data and saved["b"] is b.data
    assert "inputs" not in saved and "needs_grad" not in saved


def test_backward_frees_the_node_and_the_view_says_so():
    x = lamina.tensor(randn(3), requires_grad=True)
    y = (x.exp() * 2.0).sum()
    node = y.grad_fn
    assert not node.released and node.next_functions
    y.backward()
    assert node.released and node.next_functions == () and node.saved_arrays() == {}
    z = (x.exp() * 2.0).sum()
    z.backward(retain_graph=True)
    assert not z.grad_fn.released and z.grad_fn.next_functions


def test_views_record_nothing_on_the_graph():
    x = lamina.tensor(randn(3), requires_grad=True)
    y = x.exp()
    before = dict(vars(y._ctx))
    for _ in range(3):
        assert y.grad_fn.next_functions
        y.grad_fn.saved_arrays()
    assert vars(y._ctx).keys() == before.keys()
    assert all(vars(y._ctx)[k] is v for k, v in before.items())
