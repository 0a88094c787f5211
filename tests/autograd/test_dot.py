"""to_dot: the DOT source of a graph, parsed back into nodes, edges and labels."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

import lamina
import lamina.functional as F
from helpers import randn
from lamina import nn
from lamina.autograd import to_dot

NODE = re.compile(r'^\s*(\w+) \[label="((?:[^"\\]|\\.)*)", fillcolor=([\w#]+)\];$')
EDGE = re.compile(r"^\s*(\w+) -> (\w+)( \[dir=none, style=dashed\])?;$")


def parse(source: str):
    """(nodes: key -> (label lines, colour), edges: [(from, to)], saved edges: [(op, array node)])."""
    assert source.startswith("digraph") and source.rstrip().endswith("}")
    nodes, edges, saved = {}, [], []
    for line in source.splitlines()[1:-1]:
        if m := NODE.match(line):
            assert m.group(1) not in nodes
            nodes[m.group(1)] = (m.group(2).split("\\n"), m.group(3))
        elif m := EDGE.match(line):
            (saved if m.group(3) else edges).append((m.group(1), m.group(2)))
        else:
            assert re.match(r"^\s*(graph|node) \[.*\];$", line), line
    return nodes, edges, saved


def by_label(nodes) -> dict:
    """First label line -> (key, label lines, colour); labels in these graphs are distinct."""
    found = {}
    for key, (lines, colour) in nodes.items():
        assert lines[0] not in found
        found[lines[0]] = (key, lines, colour)
    return found


def test_known_expression_gives_exactly_its_nodes_edges_and_labels():
    w = lamina.tensor(randn(3, 2), requires_grad=True)
    b = lamina.tensor(randn(2, seed=1), requires_grad=True)
    x = lamina.tensor(randn(4, 3, seed=2))                  # a constant: not drawn
    loss = F.relu(x @ w + b).sum()
    nodes, edges, saved = parse(to_dot(loss, params={"weight": w, "bias": b}))
    labels = by_label(nodes)
    assert set(labels) == {"output", "Sum", "ReLU", "Add", "MatMul", "weight", "bias"}
    expected = {("output", "()", "darkolivegreen1"), ("Sum", "()", "lightgrey"), ("ReLU", "(4, 2)", "lightgrey"),
                ("Add", "(4, 2)", "lightgrey"), ("MatMul", "(4, 2)", "lightgrey"),
                ("weight", "(3, 2)", "lightblue"), ("bias", "(2,)", "lightblue")}
    assert {(lines[0], lines[1], colour) for _, lines, colour in labels.values()} == expected
    key = {name: k for name, (k, _, _) in labels.items()}
    flow = [("weight", "MatMul"), ("MatMul", "Add"), ("bias", "Add"), ("Add", "ReLU"), ("ReLU", "Sum"),
            ("Sum", "output")]
    assert sorted(edges) == sorted((key[a], key[b]) for a, b in flow)
    assert saved == []


def test_names_come_from_named_parameters_and_unnamed_leaves_show_their_shape():
    layer = nn.Dense(3)
    x = lamina.tensor(randn(5, 4), requires_grad=True)
    loss = layer(x).mean()
    nodes, _, _ = parse(to_dot(loss, params=layer.named_parameters()))
    leaves = sorted(lines for lines, colour in nodes.values() if colour == "lightblue")
    names = dict(layer.named_parameters())
    assert len(names) == 2
    assert leaves == sorted([["(5, 4)"]] + [[name, str(tuple(p.shape))] for name, p in names.items()])


def test_a_reused_value_is_one_node_with_an_edge_per_use():
    x = lamina.tensor(randn(3), requires_grad=True)
    h = x.tanh()
    nodes, edges, _ = parse(to_dot(h * h, params={"x": x}))
    key = {lines[0]: k for k, (lines, _) in nodes.items()}
    assert len(nodes) == 4
    assert edges.count((key["Tanh"], key["Mul"])) == 2 and (key["x"], key["Tanh"]) in edges


def test_show_saved_lists_each_kept_array_with_its_size():
    w = lamina.tensor(randn(3, 2), requires_grad=True)
    x = lamina.tensor(randn(4, 3, seed=1), dtype=np.float64)
    product = x @ w
    loss = (product * product).sum()
    nodes, _, saved = parse(to_dot(loss, params={"w": w}, show_saved=True))
    key = {lines[0]: k for k, (lines, colour) in nodes.items() if colour != "orange"}
    arrays = {k: lines for k, (lines, colour) in nodes.items() if colour == "orange"}
    kept = {"MatMul": product.grad_fn.saved_arrays(), "Mul": loss.grad_fn.next_functions[0][0].saved_arrays()}
    distinct = {id(a): a for found in kept.values() for a in found.values()}
    assert len(arrays) == len(distinct) == 3          # x, w, and the product (saved twice by Mul: once)
    for op, found in kept.items():
        linked = [arrays[target] for source, target in saved if source == key[op]]
        assert len(linked) == len(found)
        for array in found.values():
            label = next(lines for lines in linked if lines[1].startswith(str(array.shape)))
            assert label[2] == f"{array.nbytes} bytes"
            assert array.dtype.name in label[1]
            assert label[0] in found
    assert {lines[2] for lines in arrays.values()} == {f"{a.nbytes} bytes" for a in distinct.values()}


def test_show_shapes_off_leaves_the_names():
    w = lamina.tensor(randn(3), requires_grad=True)
    nodes, _, _ = parse(to_dot(w.exp().sum(), params={"w": w}, show_shapes=False))
    assert sorted(lines for lines, _ in nodes.values()) == [["Exp"], ["Sum"], ["output"], ["w"]]


def test_freed_nodes_are_marked():
    w = lamina.tensor(randn(3), requires_grad=True)
    loss = w.exp().sum()
    loss.backward()
    nodes, edges, _ = parse(to_dot(loss))
    assert [lines[-1] for lines, colour in nodes.values() if colour == "lightgrey"] == ["(freed by backward)"]
    assert len(nodes) == 2 and len(edges) == 1           # the freed Sum no longer knows its input


def test_save_dot_writes_atomically(tmp_path, monkeypatch):
    w = lamina.tensor(randn(3), requires_grad=True)
    dot = to_dot((w * w).sum(), params={"w": w})
    path = dot.save_dot(tmp_path / "sub" / "graph.dot")
    assert path.read_text() == dot
    (tmp_path / "keep.dot").write_text("old")

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        dot.save_dot(tmp_path / "keep.dot")
    assert (tmp_path / "keep.dot").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.dot", "sub"]


def test_errors_name_the_function_and_the_problem():
    with pytest.raises(TypeError, match="to_dot: expected the Tensor.*ndarray"):
        to_dot(np.zeros(3))
    x = lamina.tensor(randn(3), requires_grad=True)
    y = x
    for _ in range(20):
        y = y * 1.5
    with pytest.raises(ValueError, match="more than max_nodes=10"):
        to_dot(y, max_nodes=10)
    assert to_dot(y, max_nodes=21).count("lightgrey") == 20
    with pytest.raises(TypeError, match="params must hold"):
        to_dot(y, params=[x])


def test_labels_are_escaped():
    w = lamina.tensor(randn(3), requires_grad=True)
    nodes, _, _ = parse(to_dot(w.sum(), params={'odd "name"\\': w}))
    assert ['odd \\"name\\"\\\\', "(3,)"] in [lines for lines, _ in nodes.values()]
