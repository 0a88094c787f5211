"""ONNX import: models exported by lamina come back with the same outputs and gradients,
graphs of single operators give what ONNX Runtime gives, imported models fine-tune, and
models exported by PyTorch run as in PyTorch."""

import numpy as np
import pytest
import torch
from test_onnx import LAYERS, _images, _randomize
from test_onnx_sequence import ATTENTION, BUILT_LENGTH, RECURRENT

import lamina
from helpers import assert_close, check_gradients, check_second_derivatives, compare_with_torch
from lamina import models, nn
from lamina.export import OnnxModule, export_onnx, load_onnx, register_onnx_op, supported_onnx_ops

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
helper = onnx.helper


def _exported(model, x, tmp_path):
    """The model's evaluation-mode output on x, and the model exported and imported."""
    model.eval()
    with lamina.no_grad():
        expected = model(lamina.tensor(x, dtype=x.dtype)).numpy()
    path = export_onnx(model, tmp_path / "model.onnx", input_shape=x.shape[1:])
    return expected, load_onnx(path)


def _roundtrip(model, x, tmp_path, rtol=2e-5):
    expected, imported = _exported(model, x, tmp_path)
    assert isinstance(imported, OnnxModule)
    assert_close(imported(x).numpy(), expected, rtol=rtol)
    return imported


# -- round trips of lamina's exports ---------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_each_exported_layer_imports_with_the_same_outputs(name, tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(LAYERS[name]())
    x = _images()
    model.build(x.shape)
    _randomize(model)
    _roundtrip(model, 3 * x, tmp_path)


def _sequences(n, features, length=BUILT_LENGTH):
    return np.random.default_rng(3).standard_normal((n, length, features)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(RECURRENT) + sorted(ATTENTION))
def test_each_exported_sequence_layer_imports_with_the_same_outputs(name, tmp_path):
    lamina.manual_seed(0)
    features = 4 if name in RECURRENT else 8
    model = nn.Sequential((RECURRENT | ATTENTION)[name]())
    model.build((None, BUILT_LENGTH, features))
    _randomize(model)
    _roundtrip(model, _sequences(3, features), tmp_path)


ZOO = {
    "mlp": (lambda: nn.Sequential(nn.Flatten(), nn.Dense(16, activation="relu"), nn.Dense(3)), (6, 5, 2)),
    "lenet5": (lambda: models.lenet5(), (32, 32, 1)),
    "resnet_cifar": (lambda: models.resnet_cifar(8, num_classes=4), (16, 16, 3)),
    "mobilenet": (lambda: models.mobilenet(alpha=0.25, input_shape=(32, 32, 3), num_classes=5,
                                           classifier_activation=None), (32, 32, 3)),
    "mobilenet_v3_small": (lambda: models.mobilenet_v3_small(num_classes=4, input_shape=(32, 32, 3),
                                                             width_mult=0.25), (32, 32, 3)),
    "transformer_encoder": (lambda: nn.Sequential(nn.TransformerEncoderLayer(8, 2, 16, activation="gelu"),
                                                  nn.GlobalAvgPool1D(), nn.Dense(3)), (BUILT_LENGTH, 8)),
    "gru_lstm": (lambda: nn.Sequential(nn.GRU(6, return_sequences=True), nn.LSTM(5), nn.Dense(2)),
                 (BUILT_LENGTH, 4)),
}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_models_import_with_the_same_outputs(name, tmp_path):
    lamina.manual_seed(0)
    build, shape = ZOO[name]
    model = build()
    model.build((None, *shape))
    _randomize(model)
    x = np.random.default_rng(1).standard_normal((2, *shape)).astype(np.float32)
    _roundtrip(model, x, tmp_path, rtol=1e-4)


def test_a_convolutional_stack_runs_without_transposing_its_activations(tmp_path, monkeypatch):
    """lamina's export wraps the stack in NHWC -> NCHW -> NHWC Transposes; imported, the pairs
    cancel: only the weights (4-D, small) are transposed, never an activation."""
    lamina.manual_seed(0)
    model = models.lenet5()
    model.build((None, 32, 32, 1))
    x = _images(2, 32, 32, 1)
    _, imported = _exported(model, x, tmp_path)
    from lamina.functional import shape as shape_ops
    transposed = []
    original = shape_ops.Transpose.forward

    def record(self, a):
        transposed.append(a.shape)
        return original(self, a)
    monkeypatch.setattr(shape_ops.Transpose, "forward", record)
    imported(x)
    weights = {tuple(p.shape) for p in imported.parameters()}
    assert transposed and all(s in weights for s in transposed), transposed


# -- single operators against ONNX Runtime -------------------------------------------------------------
F32, I64, BOOL = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.BOOL


def _model(nodes, inputs: dict, initializers: dict | None = None, outputs=None, opset: int = 17):
    """A graph of ``nodes`` with the given inputs (name -> array); its outputs are the last
    node's (float unless ``outputs`` maps names to element types)."""
    initializers = initializers or {}
    outputs = outputs or {name: F32 for name in nodes[-1].output}
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in inputs.items()],
        [helper.make_tensor_value_info(k, t, None) for k, t in outputs.items()],
        initializer=[onnx.numpy_helper.from_array(v, k) for k, v in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _against_runtime(model, inputs: dict, rtol=2e-5):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, inputs)
    got = load_onnx(model)(*inputs.values())
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.shape == b.shape, (a.shape, b.shape)
        if b.dtype.kind in "biu":
            np.testing.assert_array_equal(a.numpy(), b)
        else:
            assert_close(a.numpy(), b, rtol=rtol)


def _x(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _i(values):
    return np.array(values, dtype=np.int64)


def _node(op, inputs, outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), **attrs)


IMAGE = _x(2, 3, 7, 6, seed=1)
W = _x(4, 3, 3, 3, seed=2)
B = _x(4, seed=3)
CASES = {
    "conv_pads_strides": ([_node("Conv", "xwb", strides=[2, 1], pads=[1, 0, 2, 1])], {}),
    "conv_same_upper_stride2": ([_node("Conv", "xwb", auto_pad="SAME_UPPER", strides=[2, 2])], {}),
    "conv_same_lower": ([_node("Conv", "xw", auto_pad="SAME_LOWER", kernel_shape=[3, 3])], {}),
    "conv_valid_no_bias": ([_node("Conv", "xw", auto_pad="VALID")], {}),
    "conv_dilated_strided": ([_node("Conv", "xwb", dilations=[2, 1], strides=[2, 2], pads=[2, 1, 2, 1])], {}),
    "conv_grouped": ([_node("Conv", "xv", group=3, pads=[1, 1, 1, 1])], {"v": _x(6, 1, 3, 2, seed=4)}),
    "conv_1d": ([_node("Reshape", ["x", "s"], ["r"]), _node("Conv", ["r", "k"], strides=[2], pads=[1, 2])],
                {"s": _i([2, 3, 42]), "k": _x(5, 3, 4, seed=5)}),
    "conv_transpose": ([_node("ConvTranspose", "xtb", strides=[2, 2], pads=[1, 0, 0, 1], output_padding=[1, 0])],
                       {"t": _x(3, 2, 3, 2, seed=6), "b": _x(2, seed=7)}),
    "conv_transpose_grouped": ([_node("ConvTranspose", "xt", strides=[1, 2], group=3)], {"t": _x(3, 2, 2, 2)}),
    "conv_transpose_output_shape": ([_node("ConvTranspose", "xt", strides=[2, 2], output_shape=[15, 12])],
                                    {"t": _x(3, 2, 3, 3, seed=6)}),
    "conv_transpose_same_upper": ([_node("ConvTranspose", "xt", strides=[2, 2], auto_pad="SAME_UPPER")],
                                  {"t": _x(3, 2, 4, 4, seed=6)}),
    "max_pool_pads_ceil": ([_node("MaxPool", "x", kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1],
                                  ceil_mode=1)], {}),
    "max_pool_same_upper": ([_node("MaxPool", "x", kernel_shape=[2, 3], strides=[2, 2], auto_pad="SAME_UPPER")], {}),
    "avg_pool_exclude_pad": ([_node("AveragePool", "x", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
                             {}),
    "avg_pool_include_pad_ceil": ([_node("AveragePool", "x", kernel_shape=[3, 2], strides=[2, 2], pads=[1, 1, 0, 0],
                                         count_include_pad=1, ceil_mode=1)], {}),
    "avg_pool_ceil": ([_node("AveragePool", "x", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)], {}),
    "concat_mixed_layouts": ([_node("Conv", "xw", ["c"], pads=[1, 1, 1, 1]), _node("Concat", "xc", axis=1)], {}),
    "global_pools": ([_node("GlobalAveragePool", "x", ["a"]), _node("GlobalMaxPool", "x", ["m"]),
                      _node("Sub", "am")], {}),
    "batch_norm": ([_node("BatchNormalization", "xsbmv", epsilon=1e-3)],
                   {"s": _x(3, seed=8), "b": _x(3, seed=9), "m": _x(3, seed=10), "v": _x(3, seed=11) ** 2 + 0.5}),
    "instance_norm": ([_node("InstanceNormalization", "xsb", epsilon=1e-4)], {"s": _x(3, seed=8), "b": _x(3)}),
    "layer_norm_axis": ([_node("LayerNormalization", "xsb", axis=-2)], {"s": _x(7, 6, seed=8), "b": _x(6)}),
    "layer_norm_outputs": ([_node("LayerNormalization", "xs", ["y", "mu", "r"])], {"s": _x(6)}),
    "resize_nearest_asymmetric_floor": ([_node("Resize", ["x", "", "c"], mode="nearest", nearest_mode="floor",
                                               coordinate_transformation_mode="asymmetric")],
                                        {"c": np.array([1, 1, 2, 1.5], np.float32)}),
    "resize_nearest_default_sizes": ([_node("Resize", ["x", "", "", "z"])], {"z": _i([2, 3, 5, 9])}),
    "resize_linear_half_pixel": ([_node("Resize", ["x", "", "c"], mode="linear")],
                                 {"c": np.array([1, 1, 2, 0.5], np.float32)}),
    "resize_linear_align_corners": ([_node("Resize", ["x", "", "", "z"], mode="linear",
                                           coordinate_transformation_mode="align_corners")], {"z": _i([2, 3, 10, 4])}),
    "resize_linear_pytorch_half_pixel": ([_node("Resize", ["x", "", "", "z"], mode="linear",
                                                coordinate_transformation_mode="pytorch_half_pixel")],
                                         {"z": _i([2, 3, 1, 11])}),
    "resize_opset10_nearest": ([_node("Resize", "xc")], {"c": np.array([1, 1, 2, 0.5], np.float32)}, 10),
    "upsample_opset9_linear": ([_node("Upsample", "xc", mode="linear")], {"c": np.array([1, 1, 2, 1.5], np.float32)},
                               9),
    "resize_cubic": ([_node("Resize", ["x", "", "c"], mode="cubic")], {"c": np.array([1, 1, 1.5, 2], np.float32)}),
    "resize_cubic_exclude_outside": ([_node("Resize", ["x", "", "c"], mode="cubic", exclude_outside=1,
                                            cubic_coeff_a=-0.5)], {"c": np.array([1, 1, 2, 2], np.float32)}),
    "pad_constant": ([_node("Pad", "xpc")], {"p": _i([0, 1, 2, 0, 0, 0, 1, 3]), "c": np.array(1.5, np.float32)}),
    "pad_reflect_crop": ([_node("Pad", "xp", mode="reflect")], {"p": _i([0, 0, 2, -1, 0, 0, -2, 3])}),
    "pad_edge_axes": ([_node("Pad", ["x", "p", "", "a"], mode="edge")], {"p": _i([1, 2, 0, 3]), "a": _i([2, 3])}, 18),
    "conv_then_pad_and_slice": ([_node("Conv", "xw", ["c"]), _node("Pad", "cp", ["d"], mode="reflect"),
                                 _node("Slice", "dgea", ["s"]), _node("Pad", "sq", ["t"]), _node("Relu", "t")],
                                {"p": _i([0, 0, 1, 2, 0, 1, 0, -1]), "g": _i([1, 0]), "e": _i([100, 5]),
                                 "a": _i([1, 3]), "q": _i([0, 2, 0, 0, 0, 0, 1, 1])}),
    "lrn": ([_node("LRN", "x", size=3, alpha=0.1, beta=0.6, bias=1.5)], {}),
    "space_to_depth": ([_node("Slice", "xqea", ["s"]), _node("SpaceToDepth", "s", ["d"], blocksize=2),
                        _node("DepthToSpace", "d", ["t"], mode="CRD", blocksize=2), _node("Sub", "st", ["z"]),
                        _node("Flatten", "d", ["f"]), _node("Flatten", "z", ["g"]), _node("Concat", "fg", axis=1)],
                       {"q": _i([0, 0]), "e": _i([6, 6]), "a": _i([2, 3])}),
    "depth_to_space_modes": ([_node("Concat", "xxxx", ["c"], axis=1), _node("DepthToSpace", "c", ["d"], blocksize=2),
                              _node("DepthToSpace", "c", ["e"], blocksize=2, mode="CRD"), _node("Sub", "de")], {}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_image_operators_match_onnx_runtime(name):
    nodes, initializers, *opset = CASES[name]
    initializers = dict(initializers)
    if any("w" in n.input for n in nodes):
        initializers["w"] = W
    if any(n.op_type == "Conv" and "b" in n.input for n in nodes) and "b" not in initializers:
        initializers["b"] = B
    outputs = {o: F32 for o in nodes[-1].output}
    _against_runtime(_model(nodes, {"x": IMAGE}, initializers, outputs, *opset), {"x": IMAGE})


V = _x(2, 3, 4, seed=12)
ELEMENTWISE = {
    **{op: ([_node(op, "x")], {}) for op in ["Relu", "Sigmoid", "Tanh", "Neg", "Abs", "Exp", "Erf", "Softsign",
                                             "Softplus", "Identity"]},
    "Mish": ([_node("Mish", "x")], {}, 18),
    "Sqrt_Log_Reciprocal": ([_node("Abs", "x", ["a"]), _node("Sqrt", "a", ["s"]), _node("Log", "a", ["l"]),
                             _node("Reciprocal", "a", ["r"]), _node("Sum", "slr")], {}),
    "LeakyRelu": ([_node("LeakyRelu", "x", alpha=0.3)], {}),
    "Elu_Selu_Celu": ([_node("Elu", "x", ["a"], alpha=0.5), _node("Selu", "a", ["b"]),
                       _node("Celu", "b", alpha=0.7)], {}),
    "Gelu_tanh": ([_node("Gelu", "x", approximate="tanh")], {}, 20),
    "Gelu": ([_node("Gelu", "x")], {}, 20),
    "HardSigmoid": ([_node("HardSigmoid", "x", alpha=0.3, beta=0.4)], {}),
    "HardSwish": ([_node("HardSwish", "x")], {}),
    "Clip_inputs": ([_node("Clip", "xlh")], {"l": np.array(-0.5, np.float32), "h": np.array(0.7, np.float32)}),
    "Clip_max_only": ([_node("Clip", ["x", "", "h"])], {"h": np.array(0.2, np.float32)}),
    "Shrink_Thresholded": ([_node("Shrink", "x", ["s"], lambd=0.4, bias=0.1),
                            _node("ThresholdedRelu", "s", alpha=0.2)], {}),
    "PRelu": ([_node("PRelu", "xs")], {"s": _x(3, 1, seed=13)}),
    "MaxPool_1d": ([_node("MaxPool", "x", kernel_shape=[2], pads=[1, 0], strides=[2], ceil_mode=1)], {}),
    "AveragePool_1d": ([_node("AveragePool", "x", kernel_shape=[3], pads=[1, 1], count_include_pad=1)], {}),
    "AveragePool_1d_same": ([_node("AveragePool", "x", kernel_shape=[3], strides=[2], auto_pad="SAME_LOWER")], {}),
    "Conv_1d_dilated": ([_node("Conv", "xk", pads=[2, 1], dilations=[2])], {"k": _x(2, 3, 2)}),
    "trigonometry": ([_node("Tanh", "x", ["t"]), _node("Tan", "t", ["a"]), _node("Asin", "t", ["b"]),
                      _node("Acos", "t", ["c"]), _node("Atan", "x", ["d"]), _node("Sinh", "t", ["e"]),
                      _node("Cosh", "t", ["f"]), _node("Asinh", "x", ["g"]), _node("Atanh", "t", ["h"]),
                      _node("Cosh", "x", ["k"]), _node("Acosh", "k", ["l"]), _node("Mean", "abcdefghl")], {}),
    "GatherElements": ([_node("GatherElements", "xi", axis=2)], {"i": _i(np.arange(24).reshape(2, 3, 4) % 3 - 1)}),
    "ScatterElements_add": ([_node("ScatterElements", "xiu", axis=1, reduction="add")],
                            {"i": _i([[[0, 2, 2, 1]], [[1, 1, 0, 0]]]), "u": _x(2, 1, 4, seed=30)}),
    "ScatterElements": ([_node("ScatterElements", "xiu", axis=2)], {"i": _i([[[3, 0]]] * 2), "u": _x(2, 1, 2)}),
    "NonZero_OneHot_IsNaN": ([_node("Relu", "x", ["r"]), _node("NonZero", "r", ["n"]),
                              _node("Cast", "n", ["c"], to=F32), _node("OneHot", "idv", ["o"], axis=1),
                              _node("IsNaN", "x", ["z"]), _node("Cast", "z", ["f"], to=F32),
                              _node("ReduceSum", "f", ["a"], keepdims=0), _node("ReduceSum", "c", ["b"], keepdims=0),
                              _node("ReduceSum", "o", ["e"], keepdims=0), _node("Sum", "abe")],
                             {"i": _i([[1, -1], [0, 3]]), "d": _i([4]), "v": np.array([-1.0, 2.0], np.float32)}),
    "Softmax_axis": ([_node("Softmax", "x", axis=1)], {}),
    "Softmax_opset11_flattens": ([_node("Softmax", "x", axis=1)], {}, 11),
    "LogSoftmax_opset11_default_axis": ([_node("LogSoftmax", "x")], {}, 11),
    "rounding": ([_node("Mul", "xk", ["m"]), _node("Floor", "m", ["a"]), _node("Ceil", "m", ["b"]),
                  _node("Round", "m", ["c"]), _node("Sign", "x", ["d"]), _node("Sum", "abcd")],
                 {"k": np.array(2.5, np.float32)}),
    "CumSum_reverse_exclusive": ([_node("CumSum", "xa", reverse=1, exclusive=1)], {"a": np.array(1, np.int64)}),
    "CumSum": ([_node("CumSum", "xa")], {"a": np.array(-1, np.int64)}),
    "Trilu_lower": ([_node("Trilu", "xk", upper=0)], {"k": np.array(1, np.int64)}),
    "Trilu_upper": ([_node("Trilu", "x")], {}),
    "Mod_fmod": ([_node("Mod", "xc", fmod=1)], {"c": np.array([0.7, -0.3, 1.1, 2.0], np.float32)}),
    "TopK_smallest": ([_node("TopK", "xk", ["y", "i"], axis=1, largest=0)], {"k": _i([2])}),
    "TopK": ([_node("TopK", "xk", ["y", "i"])], {"k": _i([3])}),
    "ArgMax_ArgMin": ([_node("ArgMax", "x", ["a"], axis=2), _node("ArgMin", "x", ["b"], axis=1, keepdims=0,
                                                                    select_last_index=1)], {}),
    "GroupNormalization_per_group": ([_node("Concat", "xm", ["c"], axis=1),
                                      _node("GroupNormalization", "csb", num_groups=3, epsilon=1e-3)],
                                     {"m": _x(2, 3, 4, seed=7), "s": _x(3, seed=8), "b": _x(3, seed=9)}, 18),
    "GroupNormalization_per_channel": ([_node("Concat", "xm", ["c"], axis=1),
                                        _node("GroupNormalization", "csb", num_groups=2)],
                                       {"m": _x(2, 3, 4, seed=7), "s": _x(6, seed=8), "b": _x(6, seed=9)}, 21),
    "LogSoftmax": ([_node("LogSoftmax", "x")], {}),
    "binary_broadcast": ([_node("Add", "xc", ["a"]), _node("Mul", "ac", ["m"]), _node("Div", "mc", ["d"]),
                          _node("Sub", "dx", ["s"]), _node("Pow", "sk")],
                         {"c": _x(3, 1, seed=14) ** 2 + 1, "k": np.array([2.0], np.float32)}),
    "Pow_tensor": ([_node("Abs", "x", ["a"]), _node("Pow", "ac")], {"c": _x(4, seed=14)}),
    "Max_Min": ([_node("Max", "xc", ["a"]), _node("Min", "axc")], {"c": _x(4, seed=15)}),
    "MatMul_batched": ([_node("MatMul", "xm")], {"m": _x(4, 5)}),
    "Gemm_transposed": ([_node("Reshape", "xs", ["r"]), _node("Gemm", "rbc", transA=1, transB=1, alpha=0.5,
                                                             beta=2.0)],
                        {"s": _i([4, 6]), "b": _x(3, 4), "c": _x(3)}),
    "Gemm": ([_node("Reshape", "xs", ["r"]), _node("Gemm", "rbc")], {"s": _i([6, 4]), "b": _x(4, 3), "c": _x(1, 3)}),
    "Einsum": ([_node("Einsum", "xm", equation="bij,kj->bki")], {"m": _x(5, 4)}),
    "reductions_attr": ([_node("ReduceMean", "x", ["a"], axes=[1], keepdims=0), _node("ReduceMax", "x", ["b"],
                                                                                      axes=[1, 2], keepdims=0),
                         _node("Unsqueeze", "bu", ["c"]), _node("Add", "ac")], {"u": _i([1])}),
    "reduce_sum_input_axes": ([_node("ReduceSum", "xa")], {"a": _i([-1])}),
    "reduce_sum_all": ([_node("ReduceSum", "x", keepdims=0)], {}),
    "reduce_mean_noop": ([_node("ReduceMean", "x", noop_with_empty_axes=1)], {}, 18),
    "reduce_max_input_axes": ([_node("ReduceMax", "xa", keepdims=0)], {"a": _i([0, 2])}, 18),
    "Flatten_Transpose": ([_node("Transpose", "x", ["t"], perm=[2, 0, 1]), _node("Flatten", "t", axis=2)], {}),
    "Reshape_zero_minus_one": ([_node("Reshape", "xs")], {"s": _i([0, -1, 2])}),
    "Squeeze_Unsqueeze": ([_node("Unsqueeze", "xa", ["u"]), _node("Squeeze", "ub")], {"a": _i([0, 3]), "b": _i([0])}),
    "Concat_Split": ([_node("Concat", "xx", ["c"], axis=-1), _node("Split", ["c", "s"], ["p", "q"], axis=2),
                      _node("Mul", "pq")], {"s": _i([4, 4])}),
    "Split_equal": ([_node("Split", "x", ["p", "q"], axis=2), _node("Sub", "pq")], {}),
    "Slice_steps": ([_node("Slice", "xsean")], {"s": _i([3, -1]), "e": _i([-100, 0]), "a": _i([2, 1]),
                                                "n": _i([-2, -1])}),
    "Gather_matrix_indices": ([_node("Gather", "xi", axis=2)], {"i": _i([[0, -1], [2, 2]])}),
    "Gather_scalar": ([_node("Gather", "xi", axis=1)], {"i": np.array(-2, np.int64)}),
    "Expand_Tile": ([_node("Expand", "cs", ["e"]), _node("Tile", "er", ["t"]), _node("Add", "xt")],
                    {"c": _x(3, 1, seed=16), "s": _i([2, 1, 2]), "r": _i([1, 1, 2])}),
    "Where_Equal": ([_node("Abs", "x", ["a"]), _node("Greater", "at", ["g"]), _node("Where", "gxc")],
                    {"t": np.array(0.5, np.float32), "c": _x(4, seed=17)}),
    "Cast_to_double": ([_node("Cast", "x", to=onnx.TensorProto.DOUBLE)], {}),
    "Dropout": ([_node("Dropout", "x")], {}),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_shape_and_indexing_operators_match_onnx_runtime(name):
    nodes, initializers, *opset = ELEMENTWISE[name]
    types = {"Cast_to_double": {"y": onnx.TensorProto.DOUBLE}, "TopK": {"i": I64}, "TopK_smallest": {"i": I64},
             "ArgMax_ArgMin": {"a": I64, "b": I64}}.get(name, {})
    outputs = {o: types.get(o, F32) for o in nodes[-1].output}
    if name == "ArgMax_ArgMin":
        outputs = {"a": I64, "b": I64}
    _against_runtime(_model(nodes, {"x": V}, initializers, outputs, *opset), {"x": V})


def _in_float64(model):
    """The same graph computing in float64: float initializers, inputs, outputs and casts."""
    double = onnx.TensorProto.DOUBLE
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for tensor in model.graph.initializer:
        if tensor.data_type == F32:
            tensor.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(tensor).astype(np.float64),
                                                         tensor.name))
    for value in list(model.graph.input) + list(model.graph.output):
        if value.type.tensor_type.elem_type == F32:
            value.type.tensor_type.elem_type = double
    for node in model.graph.node:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == F32:
                attribute.i = double
    return model


_NOT_DIFFERENTIABLE = {"NonZero_OneHot_IsNaN", "ArgMax_ArgMin", "rounding", "Cast_to_double"}


@pytest.mark.parametrize("name", sorted(set(CASES) | set(ELEMENTWISE) - _NOT_DIFFERENTIABLE))
def test_each_operator_graph_passes_the_float64_gradient_check(name):
    """dJ/dx of every graph above by centred differences (the weights' gradients are checked
    against the original models and PyTorch below)."""
    nodes, initializers, *opset = CASES.get(name) or ELEMENTWISE[name]
    x = IMAGE if name in CASES else V
    initializers = dict(initializers)
    if name in CASES:
        initializers.setdefault("w", W)
        initializers.setdefault("b", B)
        initializers = {k: v for k, v in initializers.items() if any(k in n.input for n in nodes)}
    outputs = {o: F32 for o in nodes[-1].output}
    imported = load_onnx(_in_float64(_model(nodes, {"x": x}, initializers, outputs, *opset)))

    def first(x):
        out = imported(x)
        return next(o for o in (out if isinstance(out, tuple) else (out,)) if o.dtype.kind == "f")
    assert check_gradients(first, x)


def test_a_shape_computing_subgraph_runs_on_integers():
    """x.view(x.shape[0], -1) as PyTorch writes it: Shape -> Gather -> Unsqueeze -> Concat ->
    Reshape, with Cast, Range, ConstantOfShape, Equal and integer arithmetic on the way."""
    nodes = [_node("Shape", "x", ["s"]), _node("Gather", "sz", ["n"], axis=0), _node("Unsqueeze", ["n", "z0"], ["u"]),
             _node("Constant", [], ["m"], value=onnx.numpy_helper.from_array(_i([-1]))),
             _node("Concat", "um", ["t"], axis=0), _node("Reshape", "xt", ["r"]),
             _node("Shape", "r", ["rs"], start=1), _node("Mul", ["rs", "two"], ["rs2"]),
             _node("Div", ["rs2", "two"], ["rs1"]), _node("Cast", ["rs1"], ["f"], to=F32),
             _node("Range", ["zero", "n", "one"], ["k"]), _node("ConstantOfShape", ["rs1"], ["ones"],
                                                                value=helper.make_tensor("v", F32, [1], [1.0])),
             _node("Equal", ["k", "zero"], ["first"]), _node("Cast", ["first"], ["firstf"], to=F32),
             _node("Unsqueeze", ["firstf", "z1"], ["col"]), _node("Mul", ["r", "ones"], ["ro"]),
             _node("Add", ["ro", "col"], ["y1"]), _node("Mul", ["y1", "f"], ["y"])]
    inits = {"z": np.array(0, np.int64), "z0": _i([0]), "z1": _i([1]), "two": _i([2]), "zero": np.array(0, np.int64),
             "one": np.array(1, np.int64)}
    model = _model(nodes, {"x": V}, inits)
    _against_runtime(model, {"x": V})


@pytest.mark.parametrize("op, direction, extra", [
    ("LSTM", "forward", {}), ("LSTM", "bidirectional", {}), ("GRU", "reverse", {}),
    ("GRU", "bidirectional", {"linear_before_reset": 1}), ("RNN", "forward", {}),
    ("LSTM", "bidirectional", {"lengths": [5, 3]}), ("GRU", "reverse", {"lengths": [2, 4]}),
    ("RNN", "forward", {"lengths": [1, 5], "activations": ["Relu"]}),
])
def test_recurrent_operators_match_onnx_runtime(op, direction, extra):
    extra = dict(extra)
    lengths = extra.pop("lengths", None)
    gates, hidden, d = {"LSTM": 4, "GRU": 3, "RNN": 1}[op], 3, 2 if direction == "bidirectional" else 1
    x = _x(5, 2, 4, seed=20)
    layout = extra.get("layout", 0)
    if layout:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    inits = {"w": _x(d, gates * hidden, 4, seed=21), "r": _x(d, gates * hidden, hidden, seed=22),
             "b": _x(d, 2 * gates * hidden, seed=23),
             "h": _x(*((2, d, hidden) if layout else (d, 2, hidden)), seed=24)}
    outs = ["y", "yh", "yc"] if op == "LSTM" else ["y", "yh"]
    if lengths is not None:
        inits["n"] = np.array(lengths, np.int32)
    node = _node(op, ["x", "w", "r", "b", "" if lengths is None else "n", "h"], outs, hidden_size=hidden,
                 direction=direction, **extra)
    _against_runtime(_model([node], {"x": x}, inits, {o: F32 for o in outs}), {"x": x}, rtol=1e-5)


def test_the_batch_first_layout_of_a_recurrent_operator_transposes_its_values():
    inits = {"w": _x(1, 12, 4, seed=21), "r": _x(1, 12, 3, seed=22)}
    x = _x(5, 2, 4, seed=20)
    outs = {"y": F32, "yh": F32, "yc": F32}
    time_major = load_onnx(_model([_node("LSTM", "xwr", list(outs), hidden_size=3)], {"x": x}, inits, outs))
    batch_major = load_onnx(_model([_node("LSTM", "xwr", list(outs), hidden_size=3, layout=1)],
                                   {"x": x.transpose(1, 0, 2)}, inits, outs))
    for a, b, perm in zip(time_major(x), batch_major(x.transpose(1, 0, 2)), [(2, 0, 1, 3), (1, 0, 2), (1, 0, 2)]):
        assert_close(b.numpy(), a.numpy().transpose(perm), rtol=1e-6)


# -- gradients -------------------------------------------------------------------------------------------
def _match(imported, model):
    """Pairs (imported parameter, lamina parameter, permutation from lamina's to ONNX's
    layout) found by their values: the exporter keeps Dense weights and transposes
    convolution kernels (K, f, f, C) to (K, C, f, f)."""
    pairs = []
    for q in imported.parameters():
        for p in model.parameters():
            for perm in [tuple(range(p.ndim)), (0, 3, 1, 2)] if p.ndim == 4 else [tuple(range(p.ndim))]:
                if p.shape != () and p.numpy().transpose(perm).shape == q.shape and np.array_equal(
                        p.numpy().transpose(perm), q.numpy()):
                    pairs.append((q, p, perm))
    return pairs


@pytest.mark.parametrize("name", ["mlp", "lenet5", "resnet_cifar", "transformer_encoder", "gru_lstm"])
def test_gradients_of_an_imported_model_equal_the_original_models(name, tmp_path):
    """dJ/dx always; dJ/dw for every weight where the exporter writes it as it is or as a
    transposed kernel (the recurrent layers' gates are reordered: their x gradient covers them)."""
    lamina.manual_seed(0)
    build, shape = ZOO[name]
    model = build()
    model.build((None, *shape))
    _randomize(model)
    x = np.random.default_rng(1).standard_normal((2, *shape)).astype(np.float32)
    _, imported = _exported(model, x, tmp_path)
    up = np.random.default_rng(2).standard_normal(model(lamina.tensor(x)).shape).astype(np.float32)
    xs = [lamina.tensor(x, requires_grad=True) for _ in range(2)]
    for net, xt in zip((model, imported), xs):
        net.zero_grad()
        (net(xt) * lamina.tensor(up)).sum().backward()
    assert_close(xs[1].grad, xs[0].grad, rtol=1e-4, what="input gradient")
    pairs = _match(imported, model)
    if name in ("mlp", "lenet5", "resnet_cifar"):
        assert len(pairs) == len(imported.parameters()) == len(model.parameters(trainable_only=True))
    for q, p, perm in pairs:
        assert_close(q.grad, p.grad.transpose(perm), rtol=1e-4, what=f"gradient of {q.shape}")


def _conv_graph(dtype=np.float32):
    """y = avg_pool(tanh(batch_norm(conv(x, w) + b))) (stride 1, padding not counted) then
    Gemm; the input and the weights are graph inputs."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes = [_node("Conv", "xwb", ["c"], pads=[1, 1, 0, 1], strides=[1, 2]),
             _node("BatchNormalization", ["c", "s", "t", "m", "v"], ["n"]), _node("Tanh", "n", ["r"]),
             _node("AveragePool", "r", ["p"], kernel_shape=[2, 2], pads=[1, 1, 0, 0]),
             _node("Flatten", "p", ["f"]), _node("Gemm", ["f", "g"], ["y"], transB=1)]
    rng = np.random.default_rng(5)
    inits = {"s": rng.uniform(0.5, 1.5, 4), "t": rng.standard_normal(4), "m": rng.standard_normal(4),
             "v": rng.uniform(0.5, 1.5, 4)}
    inits = {k: v.astype(dtype) for k, v in inits.items()}
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(k, elem, None) for k in "xwbg"],
                              [helper.make_tensor_value_info("y", elem, None)],
                              initializer=[onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), inits


def test_gradients_of_an_imported_graph_match_torch():
    model, inits = _conv_graph()
    imported = load_onnx(model)
    t = {k: torch.tensor(v) for k, v in inits.items()}

    def torch_fn(x, w, b, g):
        c = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 0)), w, b, stride=(1, 2))
        n = torch.nn.functional.batch_norm(c, t["m"], t["v"], t["s"], t["t"], eps=1e-5)
        p = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(torch.tanh(n), (1, 0, 1, 0)), 2, stride=1)
        counts = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(torch.ones_like(n), (1, 0, 1, 0)), 2,
                                                stride=1)
        return (p / counts).flatten(1) @ g.T

    compare_with_torch(imported, torch_fn, _x(2, 3, 6, 5), _x(4, 3, 3, 2), _x(4), _x(5, 4 * 5 * 3), rtol=1e-4)


def test_an_imported_graph_has_second_derivatives():
    nodes = [_node("MatMul", "xw", ["h"]), _node("Tanh", "h", ["t"]), _node("Gemm", "tvb", ["g"], transB=1),
             _node("Softmax", "g")]
    arrays = {"x": _x(3, 4), "w": _x(4, 5, seed=1), "v": _x(2, 5, seed=2), "b": _x(2, seed=3)}
    double = onnx.TensorProto.DOUBLE
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(k, double, None) for k in arrays],
                              [helper.make_tensor_value_info("y", double, None)])
    imported = load_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert check_second_derivatives(imported, *arrays.values())


def test_casts_between_float_types_pass_gradients_through():
    c = _x(4, seed=3).astype(np.float64)
    nodes = [_node("Cast", "x", ["d"], to=onnx.TensorProto.DOUBLE), _node("Mul", "dc", ["m"]),
             _node("Cast", "m", to=F32)]
    imported = load_onnx(_model(nodes, {"x": V}, {"c": c}))
    compare_with_torch(imported, lambda x: (x.double() * torch.tensor(c)).float(), V)
    x = lamina.tensor(V, requires_grad=True, dtype=np.float64)       # a float64 input to a float32 graph
    imported(x).sum().backward()
    assert x.grad.dtype == np.float64
    assert_close(x.grad, np.broadcast_to(c.astype(np.float32), V.shape), rtol=1e-6)


def test_a_float64_imported_graph_passes_the_gradient_check():
    model, _ = _conv_graph(np.float64)
    imported = load_onnx(model)
    assert all(p.dtype == np.float64 for p in imported.parameters())
    arrays = (_x(1, 3, 5, 4), _x(4, 3, 3, 2), _x(4), _x(2, 4 * 4 * 3))
    assert check_gradients(imported, *arrays)
    loss = imported(*[lamina.tensor(a, dtype=np.float64) for a in arrays]).sum()
    loss.backward()
    assert imported.s.grad is not None and imported.s.grad.dtype == np.float64      # BN scale learns
    assert "m" not in dict(imported.named_parameters())                               # running stats: buffers


def test_an_imported_model_fine_tunes_and_exports_its_new_weights(tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Conv2D(4, 3, padding="same", activation="relu"), nn.MaxPool2D(2), nn.Flatten(),
                          nn.Dense(3))
    model.build((None, 6, 6, 2))
    x = np.random.default_rng(0).standard_normal((16, 6, 6, 2)).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, 3, 16)
    _, imported = _exported(model, x, tmp_path)
    optimizer = lamina.optim.Adam(imported.parameters(), lr=0.01)
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        loss = lamina.functional.cross_entropy(imported(x), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    path = tmp_path / "tuned.onnx"
    imported.to_onnx(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert_close(session.run(None, {"input": x})[0], imported(x).numpy(), rtol=1e-5)
    doubled = load_onnx(path).double()
    assert doubled(x).dtype == np.float64
    assert_close(doubled(x).numpy(), imported(x).numpy(), rtol=1e-5)
    frozen = load_onnx(path, trainable=False)
    assert frozen.parameters() == [] and sorted(frozen.state_dict()) == sorted(imported.state_dict())
    assert_close(frozen(x).numpy(), imported(x).numpy(), rtol=0)


def test_initializers_become_named_parameters_and_buffers():
    inits = {"conv.weight": W, "1.bias": B, "shape": _i([2, -1]), "forward": np.float32([2.0])}
    nodes = [_node("Conv", ["x", "conv.weight", "1.bias"], ["c"]), _node("Reshape", ["c", "shape"], ["r"]),
             _node("Mul", ["r", "forward"])]
    module = load_onnx(_model(nodes, {"x": IMAGE}, inits))
    params = dict(module.named_parameters())
    assert sorted(params) == ["conv_weight", "forward_2", "w_1_bias"]
    assert all(p.trainable for p in params.values())
    assert dict(module.named_buffers())["shape"].dtype == np.int64
    assert module.onnx_names == {"conv_weight": "conv.weight", "w_1_bias": "1.bias", "shape": "shape",
                                 "forward_2": "forward"}
    assert sorted(module.state_dict()) == ["conv_weight", "forward_2", "shape", "w_1_bias"]
    exported = module.to_onnx()
    assert [t.name for t in exported.graph.initializer] == list(inits)


# -- models exported by PyTorch ---------------------------------------------------------------------------
class _TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(6)
        self.conv2 = torch.nn.Conv2d(6, 6, 3, stride=2, groups=3)
        self.fc = torch.nn.Linear(6 * 3 * 3, 4)

    def forward(self, x):
        x = torch.nn.functional.relu(self.bn(self.conv(x)))
        x = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = torch.nn.functional.avg_pool2d(torch.sigmoid(self.conv2(x)), 2, ceil_mode=True)
        x = torch.nn.functional.adaptive_avg_pool2d(x, 3) + x.mean(dim=(2, 3), keepdim=True)
        return torch.softmax(self.fc(x.view(x.size(0), -1)), dim=1)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("opset", [11, 17])
def test_a_cnn_exported_by_torch_runs_as_in_torch(opset, tmp_path):
    torch.manual_seed(0)
    net = _TorchNet().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 6, 6)
    path = tmp_path / "torch.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}}, opset_version=opset)
    imported = load_onnx(path)
    y = np.random.default_rng(0).standard_normal((3, 3, 6, 6)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.tensor(y)).numpy()
    assert_close(imported(y).numpy(), expected, rtol=1e-5)


class _TorchSequenceNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(20, 16)
        self.encoder = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True, activation="gelu")
        self.lstm = torch.nn.LSTM(16, 8, batch_first=True, bidirectional=True)
        self.gru = torch.nn.GRU(16, 8, num_layers=2)
        self.head = torch.nn.Linear(16 + 8, 3)

    def forward(self, ids):
        x = self.encoder(self.embed(ids))
        y, _ = self.lstm(x)
        g, _ = self.gru(x.transpose(0, 1))
        return self.head(torch.cat([y[:, -1], g[-1]], dim=-1))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Converting a tensor", "ignore:Exporting a model")
def test_a_sequence_model_exported_by_torch_runs_as_in_torch(tmp_path):
    """Embedding (Gather), a Transformer encoder layer (shape subgraphs, MatMul, Softmax,
    LayerNormalization, Erf), a bidirectional LSTM and a two-layer GRU. PyTorch's exporter
    fixes the sequence length in the attention's Reshapes: the ids keep the exported shape."""
    torch.manual_seed(0)
    net = _TorchSequenceNet().eval()
    path = tmp_path / "torch_sequence.onnx"
    torch.onnx.export(net, (torch.randint(0, 20, (2, 7)),), str(path), dynamo=False, input_names=["ids"],
                      output_names=["y"])
    ids = np.random.default_rng(0).integers(0, 20, (2, 7))
    with torch.no_grad():
        expected = net(torch.tensor(ids)).numpy()
    assert_close(load_onnx(path)(ids).numpy(), expected, rtol=1e-5)


# -- errors ----------------------------------------------------------------------------------------------
def test_an_unsupported_operator_is_named_with_the_supported_set():
    model = _model([_node("Hardmax", "x", name="pick")], {"x": V})
    pattern = r"'Hardmax' \(node 'pick'\) is not supported; supported: Abs, .*Conv, .*; add one with register_onnx_op"
    with pytest.raises(NotImplementedError, match=pattern):
        load_onnx(model)


def test_a_registered_operator_runs(monkeypatch):
    from lamina.export import onnx_import_values

    monkeypatch.setattr(onnx_import_values, "_HANDLERS", dict(onnx_import_values._HANDLERS))
    register_onnx_op("Hardmax", lambda node, x: lamina.functional.mul(x, 2.0))
    assert "Hardmax" in supported_onnx_ops()
    model = _model([_node("Hardmax", "x")], {"x": V})
    assert_close(load_onnx(model)(V).numpy(), 2 * V, rtol=0)


def test_other_errors_are_clear(monkeypatch):
    model = _model([_node("Relu", "x")], {"x": V})
    with pytest.raises(TypeError, match="takes 1 inputs \\(x\\), got 2"):
        load_onnx(model)(V, V)
    with pytest.raises(TypeError, match="expected a path or an onnx.ModelProto"):
        load_onnx(42)
    with pytest.raises(NotImplementedError, match="antialias"):
        load_onnx(_model([_node("Resize", ["x", "", "s"], antialias=1)], {"x": V},
                         {"s": np.array([1, 1, 2], np.float32)}, opset=18))(V)
    with pytest.raises(NotImplementedError, match="'com.microsoft.Gelu'"):
        load_onnx(_model([_node("Gelu", "x", domain="com.microsoft")], {"x": V}))
    with pytest.raises(lamina.errors.ShapeError, match=r"Reshape node 'fold': cannot reshape a value of shape "
                                                       r"\(2, 3, 4\) to \[5, -1\]"):
        load_onnx(_model([_node("Reshape", "xs", name="fold")], {"x": V}, {"s": _i([5, -1])}))(V)
    with pytest.raises(ValueError, match="no node makes the values \\['ghost'\\]"):
        load_onnx(_model([_node("Add", ["x", "ghost"])], {"x": V}))
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'lamina\[onnx\]'"):
        load_onnx(model)
