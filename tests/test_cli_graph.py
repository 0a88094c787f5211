"""``lamina graph``: one training step's loss graph of a model, drawn (and as DOT source)."""

import pytest

from lamina.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_graph_draws_lenet5_and_writes_dot(tmp_path, capsys):
    png, dot = tmp_path / "out" / "graph.png", tmp_path / "graph.dot"
    assert main(["graph", "--model", "lenet5", "--out", str(png), "--dot", str(dot)]) == 0
    out = capsys.readouterr().out
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    source = dot.read_text()
    assert source.startswith("digraph") and '"conv2d.weight\\n(6, 5, 5, 1)"' in source
    assert "SparseSoftmaxCrossEntropy" in source      # the softmax is fused into the cost, as in training
    assert "10 leaves requiring grad (61,706 numbers)" in out and "bytes kept for backward" in out


def test_graph_refuses_a_graph_beyond_max_nodes(tmp_path):
    with pytest.raises(SystemExit, match="lamina graph: .*more than max_nodes=5"):
        main(["graph", "--model", "mlp", "--out", str(tmp_path / "g.png"), "--max-nodes", "5"])
    assert not (tmp_path / "g.png").exists()
