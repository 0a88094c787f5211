"""ONNX export of TimeDistributed: ONNX Runtime gives what lamina gives (evaluation mode,
random weights) to within 1e-5 for two batch sizes and two sequence lengths from one file,
whose batch and time axes are declared free."""

import numpy as np
import pytest
from test_onnx_sequence import _randomize

import lamina
from lamina import nn
from lamina.errors import ShapeError
from lamina.export import export_onnx
from lamina.export.onnx_graph import Graph, Value, convert
from lamina.nn import Conv2D, Dense, Flatten, MaxPool2D, TimeDistributed

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOLERANCE = 1e-5
BUILT_LENGTH, OTHER_LENGTH = 4, 7
BATCH_SIZES = (2, 5)


def _dims(info) -> list:
    return [d.dim_param or d.dim_value for d in info.type.tensor_type.shape.dim]


def _exported_alike(model, step_shape, tmp_path):
    """Build ``model`` on BUILT_LENGTH steps of ``step_shape``, move its weights off their
    initial values, export it and compare ONNX Runtime with lamina for every batch size and
    length; returns the ONNX graph."""
    rng = np.random.default_rng(0)
    with lamina.no_grad():
        model(lamina.tensor(np.zeros((1, BUILT_LENGTH, *step_shape), dtype=np.float32)))
    _randomize(model)
    model.eval()
    path = export_onnx(model, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in BATCH_SIZES:
        for steps in (BUILT_LENGTH, OTHER_LENGTH):
            x = rng.standard_normal((batch, steps, *step_shape)).astype(np.float32)
            with lamina.no_grad():
                expected = model(lamina.tensor(x)).numpy()
            assert np.ptp(expected, axis=0).max() > 1e-3                   # the samples' outputs differ
            (got,) = session.run(None, {"input": x})
            assert got.shape == expected.shape, (batch, steps)
            assert np.abs(got - expected).max() <= TOLERANCE, (batch, steps)
    return onnx.load(str(path)).graph


def test_dense_on_every_step(tmp_path, capfd):
    lamina.manual_seed(0)
    graph = _exported_alike(nn.Sequential(TimeDistributed(Dense(5, activation="tanh"))), (6,), tmp_path)
    assert _dims(graph.input[0]) == ["batch", "time", 6]
    assert _dims(graph.output[0]) == ["batch", "time", 5]
    assert "VerifyOutputSizes" not in capfd.readouterr().err      # the declared output shape held


@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
def test_a_cnn_on_every_frame_then_a_gru(return_sequences, tmp_path):
    """The Flatten inside the wrapper flattens one frame: the time axis stays free."""
    lamina.manual_seed(0)
    model = nn.Sequential(TimeDistributed(Conv2D(4, 3, activation="relu")), TimeDistributed(Flatten()),
                          nn.GRU(6, return_sequences=return_sequences))
    graph = _exported_alike(model, (8, 8, 1), tmp_path)
    assert _dims(graph.input[0]) == ["batch", "time", 8, 8, 1]
    assert _dims(graph.output[0]) == (["batch", "time", 6] if return_sequences else ["batch", 6])
    ops = [node.op_type for node in graph.node]
    assert ops.count("Reshape") == 4 and ops.count("Conv") == 1 and ops.count("GRU") == 1


def test_a_block_on_every_frame_and_an_image_sequence_output(tmp_path, capfd):
    """A wrapped Sequential (convolution in NCHW inside, Dense on its flat output), then a
    wrapped convolution as the last layer: the output is a sequence of (h, w, c) maps."""
    lamina.manual_seed(0)
    frames = TimeDistributed(nn.Sequential(Conv2D(3, 3, stride=2, padding="same", activation="relu"),
                                           MaxPool2D(2), Flatten(), Dense(7)))
    graph = _exported_alike(nn.Sequential(frames), (9, 9, 2), tmp_path)
    assert _dims(graph.output[0]) == ["batch", "time", 7]
    graph = _exported_alike(nn.Sequential(TimeDistributed(Conv2D(4, 3, padding=1))), (6, 6, 2), tmp_path)
    assert _dims(graph.input[0]) == ["batch", "time", 6, 6, 2]
    assert _dims(graph.output[0]) == ["batch", "time", 6, 6, 4]
    assert "VerifyOutputSizes" not in capfd.readouterr().err


def test_a_flatten_outside_the_wrapper_fixes_the_length(tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(TimeDistributed(Dense(3)), Flatten(), Dense(2))
    model(np.zeros((1, BUILT_LENGTH, 5), dtype=np.float32))
    graph = onnx.load(str(export_onnx(model, tmp_path / "model.onnx"))).graph
    assert _dims(graph.input[0]) == ["batch", BUILT_LENGTH, 5]


def test_an_image_layer_before_the_wrapper_keeps_the_height_fixed(tmp_path):
    """The wrapper reads the rows of a feature map: axis 1 is the image's height, not time,
    and the strided 'same' convolution pads for the exported height."""
    lamina.manual_seed(0)
    model = nn.Sequential(Conv2D(3, 3, stride=2, padding="same"), TimeDistributed(Dense(2)))
    model(np.zeros((1, 9, 9, 2), dtype=np.float32))
    model.eval()
    path = export_onnx(model, tmp_path / "model.onnx")
    graph = onnx.load(str(path)).graph
    assert _dims(graph.input[0]) == ["batch", 9, 9, 2] and _dims(graph.output[0]) == ["batch", 5, 5, 2]
    x = np.random.default_rng(1).standard_normal((3, 9, 9, 2)).astype(np.float32)
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    with lamina.no_grad():
        assert np.abs(got - model(lamina.tensor(x)).numpy()).max() <= TOLERANCE


def test_the_converter_names_a_value_without_a_time_axis():
    layer = TimeDistributed(Dense(3), name="frames")
    layer.build((None, 4, 5))
    with pytest.raises(ShapeError, match=r"export_onnx: TimeDistributed 'frames' expects a value \(batch, time, "
                                         r"\.\.\.\) with at least 3 axes, got a value of shape \(1, 5\)"):
        convert(Graph(onnx, np.float32), layer, Value("x", (1, 5)))
