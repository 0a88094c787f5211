"""lamina.save / lamina.load of an imported ONNX model: the graph (subgraphs included) is
stored with the weights (fine-tuned ones included) and the loaded module computes what the
saved one did."""

import numpy as np
import pytest
from test_onnx_import import _model, _node, _x
from test_onnx_import_control import X, _loop_model

import lamina
from helpers import assert_close
from lamina import models, optim
from lamina.export import OnnxModule, export_onnx, load_onnx

onnx = pytest.importorskip("onnx")


def test_a_fine_tuned_imported_model_saves_and_loads(tmp_path):
    lamina.manual_seed(0)
    model = models.lenet5(num_classes=3)
    model.build((None, 32, 32, 1))
    imported = load_onnx(export_onnx(model, tmp_path / "lenet.onnx", input_shape=(32, 32, 1)))
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 1)).astype(np.float32)
    optimizer = optim.SGD(imported.parameters(), lr=0.1)
    imported(x).sum().backward()
    optimizer.step()                                  # weights no longer those of the ONNX file
    path = tmp_path / "imported.lamina"
    lamina.save(imported, path)
    loaded = lamina.load(path)
    assert isinstance(loaded, OnnxModule)
    assert sorted(loaded.state_dict()) == sorted(imported.state_dict())
    assert_close(loaded(x).numpy(), imported(x).numpy(), rtol=1e-6)
    assert [p.shape for p in loaded.parameters()] == [p.shape for p in imported.parameters()]


def test_buffers_and_float64_weights_survive_saving(tmp_path):
    """An inference-only import (every initializer a buffer) converted to float64."""
    x = _x(2, 3, 5, 5)
    graph = _model([_node("Conv", "xwb", pads=[1, 1, 1, 1]), _node("Relu", ["y"], ["z"])], {"x": x},
                   {"w": _x(4, 3, 3, 3, seed=2), "b": _x(4, seed=3)})
    imported = load_onnx(graph, trainable=False).double()
    assert not list(imported.parameters())
    path = tmp_path / "buffers.lamina"
    lamina.save(imported, path)
    loaded = lamina.load(path)
    assert not list(loaded.parameters())
    assert loaded.w.dtype == np.float64
    assert_close(loaded(x.astype(np.float64)).numpy(), imported(x.astype(np.float64)).numpy(), rtol=1e-12)


def test_a_graph_with_control_flow_saves_and_loads(tmp_path):
    imported = load_onnx(_loop_model(True))
    path = tmp_path / "loop.lamina"
    lamina.save(imported, path)
    loaded = lamina.load(path)
    for got, expected in zip(loaded(X), imported(X)):
        assert_close(got.numpy(), expected.numpy(), rtol=1e-6)
