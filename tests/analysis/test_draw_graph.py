"""draw_graph, its layered layout, and graph_stats."""

from __future__ import annotations

import os

import numpy as np
import pytest

import lamina
import lamina.functional as F
from helpers import randn
from lamina import models
from lamina.analysis import draw_graph, graph_stats
from lamina.analysis.graph_layout import layered_layout
from lamina.autograd.graph_view import walk_graph

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def mlp_loss():
    params = {"w1": lamina.tensor(randn(4, 5), requires_grad=True),
              "b1": lamina.tensor(randn(5, seed=1), requires_grad=True),
              "w2": lamina.tensor(randn(5, 3, seed=2), requires_grad=True)}
    x = lamina.tensor(randn(6, 4, seed=3))
    h = F.relu(x @ params["w1"] + params["b1"])
    return F.log_softmax(h @ params["w2"]).mean(), params


def drawn_positions(fig) -> list[tuple[float, float]]:
    return [text.get_position() for text in fig.axes[0].texts]


def test_drawing_writes_a_png_with_one_label_per_node_and_edges_pointing_down(tmp_path):
    loss, params = mlp_loss()
    path = tmp_path / "graph.png"
    fig = draw_graph(loss, params, path=path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    view = walk_graph(loss, params)
    texts = fig.axes[0].texts
    assert len(texts) == len(view.nodes) == 10             # 6 ops, 3 leaves, the output
    assert [t.get_text().split("\n")[0] for t in texts] == [n.name or "" for n in view.nodes]
    where = dict(zip((n.key for n in view.nodes), drawn_positions(fig)))
    for source, target in view.edges:
        assert where[source][1] > where[target][1], (source, target)
    assert len({where[k] for k in where}) == len(where)     # no two boxes on one spot
    assert len(fig.axes[0].patches) == len(view.edges)      # one arrow per edge


def test_layers_respect_edges_and_leaves_sit_above_their_first_use():
    loss, params = mlp_loss()
    view = walk_graph(loss, params)
    layout = layered_layout([n.key for n in view.nodes], list(view.edges))
    for source, target in view.edges:
        assert layout.layer[source] < layout.layer[target]
    for leaf in view.of_kind("leaf"):
        first_use = min(layout.layer[t] for s, t in view.edges if s == leaf.key)
        assert layout.layer[leaf.key] == first_use - 1
    ops = {n.key for n in view.of_kind("op")}
    for node in ops | {"output"}:                    # longest path from the leaves (in layer 0 at first)
        op_inputs = [layout.layer[s] for s, t in view.edges if t == node and s in ops]
        assert layout.layer[node] == 1 + max(op_inputs, default=0)


def test_barycentre_sweeps_remove_crossings_and_long_edges_get_waypoints():
    keys = ["a", "b", "c", "d", "e"]
    edges = [("a", "d"), ("b", "c"), ("c", "e"), ("d", "e")]   # listed order crosses a->d and b->c
    layout = layered_layout(keys, edges)
    assert layout.crossings == 0
    assert (layout.x["a"] < layout.x["b"]) == (layout.x["d"] < layout.x["c"])
    long = layered_layout(["s", "m1", "m2", "t"], [("s", "m1"), ("m1", "m2"), ("m2", "t"), ("s", "t")])
    assert [depth for _, depth in long.routes[3]] == [0, 1, 2, 3]
    assert len(long.routes[0]) == 2
    with pytest.raises(ValueError, match="cycle"):
        layered_layout(["a", "b"], [("a", "b"), ("b", "a")])


def test_lenet5_loss_is_drawn_with_parameter_names(tmp_path):
    model = models.lenet5()
    x = lamina.tensor(np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32))
    loss = F.categorical_cross_entropy(model(x), np.array([1, 7]))
    fig = draw_graph(loss, model.named_parameters(), path=tmp_path / "lenet.png", title="LeNet-5")
    labels = [t.get_text().split("\n")[0] for t in fig.axes[0].texts]
    assert set(dict(model.named_parameters())) <= set(labels)
    assert len(labels) == graph_stats(loss).nodes + 1


def test_draws_into_a_given_axes():
    from matplotlib.figure import Figure

    fig = Figure()
    left, right = fig.subplots(1, 2)
    loss, params = mlp_loss()
    assert draw_graph(loss, params, ax=right) is fig
    assert len(right.texts) == 10 and len(left.texts) == 0


def test_graph_stats_counts_nodes_parameters_and_saved_bytes():
    loss, params = mlp_loss()
    stats = graph_stats(loss)
    assert (stats.ops, stats.leaves, stats.nodes) == (6, 3, 9)
    assert stats.per_op == {"MatMul": 2, "Add": 1, "LogSoftmax": 1, "Mean": 1, "ReLU": 1}
    assert list(stats.per_op)[0] == "MatMul"
    assert stats.parameter_elements == sum(p.size for p in params.values())
    saved, node, seen = {}, loss.grad_fn, set()
    stack = [node]
    while stack:
        node = stack.pop()
        if node in seen or node is None or not hasattr(node, "saved_arrays"):
            continue
        seen.add(node)
        saved.update({id(a): a for a in node.saved_arrays().values()})
        stack += [n for n, _ in node.next_functions]
    assert stats.saved_bytes == sum(a.nbytes for a in saved.values()) > 0
    leaf_arrays = {id(p.data) for p in params.values()}
    assert stats.saved_leaf_bytes == sum(a.nbytes for k, a in saved.items() if k in leaf_arrays) > 0
    loss.backward()
    after = graph_stats(loss)
    assert (after.released, after.saved_bytes, after.ops) == (1, 0, 1)
    assert "6 ops" in str(stats) and "bytes kept for backward" in str(stats)


def test_errors_and_atomic_writes(tmp_path, monkeypatch):
    with pytest.raises(TypeError, match="draw_graph: expected the Tensor"):
        draw_graph([1.0, 2.0])
    with pytest.raises(TypeError, match="graph_stats: expected the Tensor"):
        graph_stats(np.zeros(2))
    x = lamina.tensor(randn(3), requires_grad=True)
    y = x
    for _ in range(30):
        y = y.tanh()
    with pytest.raises(ValueError, match="draw_graph: the graph has more than max_nodes=20"):
        draw_graph(y, max_nodes=20)
    (tmp_path / "old.png").write_bytes(b"old")

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="draw_graph: cannot write the PNG.*disk full"):
        draw_graph(x.exp(), path=tmp_path / "old.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.png"]
    assert (tmp_path / "old.png").read_bytes() == b"old"


def test_a_lone_tensor_is_one_node():
    w = lamina.tensor(randn(2), requires_grad=True)
    fig = draw_graph(w, {"w": w})
    assert [t.get_text() for t in fig.axes[0].texts] == ["w\n(2,)"]
