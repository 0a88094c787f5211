"""ONNX import of volumes and dilations: 3-D Conv, ConvTranspose and poolings, dilated
poolings and transposed convolutions, and MaxPool's Indices output, against ONNX Runtime;
gradients of the imported 3-D ops against torch; a Conv3d net exported by torch."""

import numpy as np
import pytest
import torch
from test_onnx_import import _against_runtime, _in_float64, _model, _node, _x

from helpers import assert_close, check_gradients, compare_with_torch
from lamina.export import load_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
I64 = onnx.TensorProto.INT64

VOLUME = _x(2, 3, 5, 6, 4, seed=1)
W3 = _x(4, 3, 3, 2, 3, seed=2)
B4 = _x(4, seed=3)
IMAGE = _x(2, 3, 7, 6, seed=4)
SIGNAL = _x(2, 3, 9, seed=5)

CASES = {
    "conv3d_pads_strides": ([_node("Conv", "xwb", strides=[2, 1, 1], pads=[1, 0, 1, 0, 1, 2])],
                            {"x": VOLUME}, {"w": W3, "b": B4}),
    "conv3d_same_strided": ([_node("Conv", "xw", auto_pad="SAME_UPPER", strides=[1, 2, 1])],
                            {"x": VOLUME}, {"w": W3}),
    "conv3d_groups": ([_node("Conv", "xw", group=2)], {"x": _x(1, 4, 4, 4, 4, seed=6)}, {"w": _x(2, 2, 2, 2, 2)}),
    "conv1d": ([_node("Conv", "xwb", strides=[2], pads=[1, 2], dilations=[2])], {"x": SIGNAL},
               {"w": _x(4, 3, 3, seed=7), "b": B4}),
    "conv_transpose3d": ([_node("ConvTranspose", "xwb", strides=[2, 1, 2], pads=[0, 1, 1, 1, 0, 0],
                                output_padding=[1, 0, 0])], {"x": VOLUME}, {"w": _x(3, 2, 2, 3, 2, seed=8),
                                                                           "b": _x(2, seed=9)}),
    "conv_transpose3d_groups_output_shape": (
        [_node("ConvTranspose", "xw", strides=[2, 2, 2], group=3, output_shape=[10, 12, 8], auto_pad="SAME_UPPER")],
        {"x": VOLUME}, {"w": _x(3, 1, 3, 3, 3, seed=10)}),
    "conv_transpose2d_dilated": ([_node("ConvTranspose", "xwb", strides=[2, 1], dilations=[2, 3],
                                        pads=[1, 0, 0, 2])], {"x": IMAGE},
                                 {"w": _x(3, 2, 3, 2, seed=11), "b": _x(2, seed=12)}),
    "conv_transpose1d_dilated_groups": ([_node("ConvTranspose", "xw", strides=[3], dilations=[2], group=3)],
                                        {"x": SIGNAL}, {"w": _x(3, 2, 3, seed=13)}),
    "max_pool3d": ([_node("MaxPool", "x", kernel_shape=[2, 3, 2], strides=[2, 1, 2], pads=[1, 1, 0, 0, 1, 1])],
                   {"x": VOLUME}, {}),
    "max_pool3d_ceil": ([_node("MaxPool", "x", kernel_shape=[2, 2, 3], strides=[2, 2, 2], ceil_mode=1)],
                        {"x": VOLUME}, {}),
    "avg_pool3d": ([_node("AveragePool", "x", kernel_shape=[3, 2, 2], strides=[1, 2, 2], pads=[1, 0, 1, 1, 0, 1])],
                   {"x": VOLUME}, {}),
    "avg_pool3d_include_pad": ([_node("AveragePool", "x", kernel_shape=[2, 3, 3], pads=[1, 1, 1, 1, 1, 1],
                                      count_include_pad=1)], {"x": VOLUME}, {}),
    "max_pool2d_dilated": ([_node("MaxPool", "x", kernel_shape=[2, 3], dilations=[2, 2], pads=[1, 1, 1, 1])],
                           {"x": IMAGE}, {}),
    "avg_pool2d_dilated_ceil": ([_node("AveragePool", "x", kernel_shape=[2, 2], dilations=[2, 1], strides=[2, 2],
                                       ceil_mode=1)], {"x": IMAGE}, {}),
    "max_pool1d_dilated": ([_node("MaxPool", "x", kernel_shape=[3], dilations=[3], strides=[2])], {"x": SIGNAL}, {}),
    "global_average_pool3d": ([_node("GlobalAveragePool", "x")], {"x": VOLUME}, {}),
    "global_max_pool3d": ([_node("GlobalMaxPool", "x")], {"x": VOLUME}, {}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_volume_and_dilated_operators_match_onnx_runtime(name):
    nodes, inputs, weights = CASES[name]
    _against_runtime(_model(nodes, inputs, weights, opset=19), inputs, rtol=1e-4)


INDEX_CASES = {
    "2d": ({"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 0, 0, 1]}, IMAGE),
    "2d_column_major": ({"kernel_shape": [3, 2], "storage_order": 1}, IMAGE),
    "3d_dilated": ({"kernel_shape": [2, 2, 2], "dilations": [1, 2, 1], "strides": [2, 1, 1]}, VOLUME),
    "1d": ({"kernel_shape": [3], "strides": [2], "pads": [1, 1]}, SIGNAL),
}


@pytest.mark.parametrize("name", sorted(INDEX_CASES))
def test_max_pool_indices_match_onnx_runtime(name):
    attrs, x = INDEX_CASES[name]
    model = _model([_node("MaxPool", "x", ("y", "indices"), **attrs)], {"x": x},
                   outputs={"y": onnx.TensorProto.FLOAT, "indices": I64}, opset=12)
    _against_runtime(model, {"x": x})


GRADIENT_CASES = {
    "Conv": (_x(3, 3, 2, 3, 2, seed=21), lambda x, w: torch.nn.functional.conv3d(
        x, w, stride=(1, 2, 1), padding=(1, 0, 1), dilation=(1, 1, 2))),
    "ConvTranspose": (_x(3, 2, 2, 3, 2, seed=21), lambda x, w: torch.nn.functional.conv_transpose3d(
        x, w, stride=(1, 2, 1), padding=(1, 0, 1), dilation=(1, 1, 2))),
    "MaxPool": (None, lambda x: torch.nn.functional.max_pool3d(x, (2, 3, 2), (1, 2, 1), (1, 0, 1), (1, 1, 2))),
    "AveragePool": (None, lambda x: torch.nn.functional.avg_pool3d(x, (2, 3, 2), (1, 2, 1), (1, 0, 1))),
}
GRADIENT_ATTRS = {"strides": [1, 2, 1], "pads": [1, 0, 1, 1, 0, 1]}


def _graph(op: str, weighted: bool):
    attrs = dict(GRADIENT_ATTRS)
    if op in ("Conv", "ConvTranspose", "MaxPool"):
        attrs["dilations"] = [1, 1, 2]
    if op in ("MaxPool", "AveragePool"):
        attrs["kernel_shape"] = [2, 3, 2]
        attrs["count_include_pad"] = 1 if op == "AveragePool" else None
    attrs = {k: v for k, v in attrs.items() if v is not None}
    x = _x(2, 3, 4, 5, 4, seed=20)
    w = GRADIENT_CASES[op][0]
    inputs = {"x": x, "w": w} if weighted else {"x": x}
    return _model([_node(op, list(inputs), **attrs)], inputs), inputs


@pytest.mark.parametrize("op", sorted(GRADIENT_CASES))
def test_gradients_of_imported_3d_operators_equal_torch(op):
    model, inputs = _graph(op, GRADIENT_CASES[op][0] is not None)
    imported = load_onnx(model)
    compare_with_torch(lambda *a: imported(*a), GRADIENT_CASES[op][1], *inputs.values(), rtol=1e-4)


@pytest.mark.parametrize("op", sorted(GRADIENT_CASES))
def test_imported_3d_operators_pass_the_float64_gradient_check(op):
    model, inputs = _graph(op, GRADIENT_CASES[op][0] is not None)
    imported = load_onnx(_in_float64(model))
    small = {k: v[:1, :, :3, :4, :3] if k == "x" else v for k, v in inputs.items()}
    assert check_gradients(lambda *a: imported(*a), *small.values())


class _TorchVolumeNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(2, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm3d(4)
        self.up = torch.nn.ConvTranspose3d(4, 3, 2, stride=2)
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x):
        x = torch.nn.functional.max_pool3d(torch.relu(self.bn(self.conv(x))), 2)
        x = torch.nn.functional.avg_pool3d(torch.tanh(self.up(x)), 2, stride=1)
        return self.fc(torch.nn.functional.adaptive_avg_pool3d(x, 1).flatten(1))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_conv3d_net_exported_by_torch_runs_as_in_torch(tmp_path):
    torch.manual_seed(0)
    net = _TorchVolumeNet().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "volume.onnx"
    torch.onnx.export(net, (torch.randn(1, 2, 4, 6, 4),), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}}, opset_version=17)
    x = np.random.default_rng(0).standard_normal((3, 2, 4, 6, 4)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.tensor(x)).numpy()
    assert_close(load_onnx(path)(x).numpy(), expected, rtol=1e-5)
