"""ONNX import of control flow: If, Loop and Scan with subgraphs that read outer-scope values,
against ONNX Runtime; gradients through the taken branch and through every iteration; a
model with a data-dependent branch and loop scripted and exported by torch."""

import numpy as np
import pytest
import torch
from test_onnx_import import _against_runtime, _in_float64, _model, _node, _x

import lamina
from helpers import assert_close, check_gradients
from lamina.export import load_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
helper = onnx.helper
F32, I64, BOOL = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.BOOL

X = _x(2, 3, seed=1)
W = _x(3, 3, seed=2, scale=0.5)


def _value(name, kind=F32, shape=None):
    return helper.make_tensor_value_info(name, kind, shape)


def _graph(nodes, inputs, outputs, name="body", initializers=()):
    return helper.make_graph(nodes, name, inputs, outputs, initializer=list(initializers))


def _if_model():
    """y = tanh(x W) if sum(x) > 0 else x * x - x; the branches read x and W from outside."""
    then = _graph([_node("MatMul", "xw", ["t"]), _node("Tanh", ["t"], ["out"])], [], [_value("out")], "then")
    other = _graph([_node("Mul", "xx", ["sq"]), _node("Sub", ["sq", "x"], ["out2"])], [], [_value("out2")], "else")
    nodes = [_node("ReduceSum", ["x"], ["s"], keepdims=0), _node("Greater", ["s", "zero"], ["c"]),
             _node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    return _model(nodes, {"x": X}, {"w": W, "zero": np.array(0.0, np.float32)}, outputs={"y": F32}, opset=17)


def _loop_model(with_condition: bool):
    """h <- tanh(h W) + i for at most M steps (while max(h) < 2 when with_condition), each
    step's h also stacked as a scan output; W is read from outside."""
    body_nodes = [
        _node("MatMul", ["h_in", "w"], ["p"]), _node("Tanh", ["p"], ["t"]),
        _node("Cast", ["i"], ["i_f"], to=F32), _node("Add", ["t", "i_f"], ["h_out"]),
        _node("Identity", ["h_out"], ["h_scan"]),
    ]
    if with_condition:
        body_nodes += [_node("ReduceMax", ["h_out"], ["m"], keepdims=0), _node("Less", ["m", "two"], ["c_out"])]
    else:
        body_nodes += [_node("Identity", ["c_in"], ["c_out"])]
    body = _graph(body_nodes, [_value("i", I64, []), _value("c_in", BOOL, []), _value("h_in")],
                  [_value("c_out", BOOL, []), _value("h_out"), _value("h_scan")])
    loop = _node("Loop", ["trips", "cond", "x"], ["h", "history"], body=body)
    initializers = {"w": W, "trips": np.array(4, np.int64), "cond": np.array(True), "two": np.array(2.0, np.float32)}
    return _model([loop], {"x": X}, initializers, outputs={"h": F32, "history": F32}, opset=17)


def _scan_model(reverse: bool):
    """A running state s <- s * a + x_t over the rows of x (backwards when reverse), with the
    outputs s_t * W stacked along axis 1; W is read from outside."""
    body = _graph([_node("Mul", ["s_in", "a"], ["sa"]), _node("Add", ["sa", "x_t"], ["s_out"]),
                   _node("Mul", ["s_out", "w_row"], ["y_t"])],
                  [_value("s_in", F32, [3]), _value("x_t", F32, [3])],
                  [_value("s_out", F32, [3]), _value("y_t", F32, [3])])
    scan = _node("Scan", ["s0", "x"], ["s", "ys"], body=body, num_scan_inputs=1,
                 scan_input_directions=[int(reverse)], scan_output_axes=[1])
    x = _x(4, 3, seed=3)
    initializers = {"s0": np.zeros(3, np.float32), "a": np.array(0.5, np.float32), "w_row": _x(3, seed=4)}
    return _model([scan], {"x": x}, initializers, outputs={"s": F32, "ys": F32}, opset=17), x


def _nested_model():
    """A Loop whose body holds an If: on even steps h <- h W, on odd ones h <- h - W's column
    sums; both branches read W from the outermost graph and h from the body."""
    even = _graph([_node("MatMul", ["h_in", "w"], ["e"])], [], [_value("e")], "even")
    odd = _graph([_node("ReduceSum", ["w", "zero_axis"], ["col"], keepdims=0), _node("Sub", ["h_in", "col"], ["o"])],
                 [], [_value("o")], "odd")
    body = _graph([_node("Mod", ["i", "two"], ["r"]), _node("Equal", ["r", "zero"], ["is_even"]),
                   _node("If", ["is_even"], ["h_out"], then_branch=even, else_branch=odd),
                   _node("Identity", ["c_in"], ["c_out"])],
                  [_value("i", I64, []), _value("c_in", BOOL, []), _value("h_in")],
                  [_value("c_out", BOOL, []), _value("h_out")])
    loop = _node("Loop", ["trips", "", "x"], ["h"], body=body)
    initializers = {"w": W, "trips": np.array(3, np.int64), "two": np.array(2, np.int64),
                    "zero": np.array(0, np.int64), "zero_axis": np.array([0], np.int64)}
    return _model([loop], {"x": X}, initializers, outputs={"h": F32}, opset=17)


def test_nested_subgraphs_read_every_enclosing_scope():
    _against_runtime(_nested_model(), {"x": X})
    assert check_gradients(lambda a: load_onnx(_in_float64(_nested_model()))(a), X)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_if_takes_the_branch_onnx_runtime_takes(sign):
    _against_runtime(_if_model(), {"x": sign * np.abs(X)})


@pytest.mark.parametrize("with_condition", [False, True])
def test_loop_matches_onnx_runtime(with_condition):
    _against_runtime(_loop_model(with_condition), {"x": X})


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_matches_onnx_runtime(reverse):
    model, x = _scan_model(reverse)
    _against_runtime(model, {"x": x})


def test_a_loop_with_a_condition_stops_early():
    h, history = load_onnx(_loop_model(True))(X)
    assert 1 <= history.shape[0] < 4                # stopped by max(h) >= 2 before the trip count
    assert_close(h.numpy(), history.numpy()[-1], rtol=1e-6)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_gradients_flow_through_the_taken_branch(sign):
    imported = load_onnx(_in_float64(_if_model()))
    x = sign * np.abs(X)
    assert check_gradients(lambda a: imported(a), x)
    y = imported(lamina.tensor(x.astype(np.float64), requires_grad=True))
    y.sum().backward()
    weight = imported.w.grad
    assert (weight is not None and np.abs(np.asarray(weight)).max() > 0) == (sign > 0)


def test_gradients_flow_through_every_iteration():
    imported = load_onnx(_in_float64(_loop_model(False)))
    assert check_gradients(lambda a: sum(o.sum() for o in imported(a)), X)
    xt, wt = torch.tensor(X, dtype=torch.float64, requires_grad=True), torch.tensor(W, dtype=torch.float64,
                                                                                    requires_grad=True)
    h, history = xt, []
    for i in range(4):
        h = torch.tanh(h @ wt) + i
        history.append(h)
    (h.sum() + torch.stack(history).sum()).backward()
    x = lamina.tensor(X.astype(np.float64), requires_grad=True)
    imported = load_onnx(_in_float64(_loop_model(False)))        # no gradients left from the check
    h, stacked = imported(x)
    (h.sum() + stacked.sum()).backward()
    assert_close(np.asarray(x.grad), xt.grad.numpy(), rtol=1e-6)
    assert_close(np.asarray(imported.w.grad), wt.grad.numpy(), rtol=1e-6)


def test_gradients_flow_through_scan():
    model, x = _scan_model(True)
    imported = load_onnx(_in_float64(model))
    assert check_gradients(lambda a: imported(a)[1], x)


class _Scripted(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 3)

    def forward(self, x, steps: int):
        for _ in range(steps):
            x = torch.tanh(self.fc(x))
        if bool(x.sum() > 0):
            x = x * 2.0
        else:
            x = x - 1.0
        return x


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_a_scripted_model_with_a_loop_and_a_branch_exported_by_torch_runs_as_in_torch(tmp_path):
    torch.manual_seed(0)
    net = torch.jit.script(_Scripted().eval())
    path = tmp_path / "scripted.onnx"
    torch.onnx.export(net, (torch.randn(2, 3), torch.tensor(3)), str(path), dynamo=False,
                      input_names=["x", "steps"], output_names=["y"], opset_version=17)
    graph_ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Loop", "If"} <= graph_ops
    imported = load_onnx(path)
    for steps, seed in ((0, 1), (2, 2), (5, 3)):
        x = np.random.default_rng(seed).standard_normal((2, 3)).astype(np.float32)
        with torch.no_grad():
            expected = net(torch.tensor(x), steps).numpy()
        assert_close(imported(x, np.array(steps)).numpy(), expected, rtol=1e-5)
