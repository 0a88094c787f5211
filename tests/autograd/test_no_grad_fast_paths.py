"""Without a graph to record (``no_grad``, or no input requiring grad) an op's output is a
constant and its node, with the arrays its forward saved, is dropped; the paths that then
compute on the arrays (rotary positions, RMSNorm, layer norm's row means) give exactly the
values of the recorded ops."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import models
from lamina.autograd import Function, Tensor
from lamina.nn.sample_norm import _row_means


class _Saving(Function):
    """y = 2 x, keeping x (as a backward would) and a weak reference to each node made."""

    nodes: list = []

    def forward(self, x):
        self.x = x
        _Saving.nodes.append(weakref.ref(self))
        return 2 * x

    def backward(self, dy):
        return (2 * dy,)


def _node_of_one_call(x) -> tuple[Tensor, weakref.ref]:
    _Saving.nodes.clear()
    y = _Saving.apply(x)
    gc.collect()
    return y, _Saving.nodes[0]


def test_under_no_grad_an_output_has_no_node_and_the_saved_arrays_are_dropped():
    x = lamina.tensor(np.ones(3), requires_grad=True)
    with lamina.no_grad():
        y, node = _node_of_one_call(x)
    assert y._ctx is None and y.grad_fn is None and not y.requires_grad
    assert node() is None                                  # nothing holds the node nor its saved x
    np.testing.assert_array_equal(y.numpy(), 2 * x.numpy())
    y, node = _node_of_one_call(x)                         # recorded: the node lives on the output
    assert y.requires_grad and y._ctx is node() and node().x is x.data and y.grad_fn is not None


def test_an_op_on_constants_records_nothing_with_the_graph_on():
    y, node = _node_of_one_call(lamina.tensor(np.ones(3)))
    assert y._ctx is None and y.grad_fn is None and node() is None


def test_array_inputs_and_zero_d_results_become_tensors():
    with lamina.no_grad():
        y = F.add(lamina.tensor(np.float32(1.5)), 2)
        total = F.sum(lamina.tensor(np.arange(4.0)))
    assert isinstance(y, Tensor) and isinstance(y.data, np.ndarray) and y.dtype == np.float32 and y.item() == 3.5
    assert isinstance(total.data, np.ndarray) and total.data.shape == () and total.item() == 6.0


def test_a_language_model_under_no_grad_returns_a_constant():
    lamina.manual_seed(0)
    model = models.llama("tiny")
    model.build((None, 1))
    ids = lamina.tensor(np.array([[1, 2, 3]]))
    with lamina.no_grad():
        scores = model(ids)
    assert scores._ctx is None and scores.grad_fn is None and not scores.requires_grad
    assert model(ids).grad_fn is not None                  # with the graph on, the same call records


def _recorded_and_not(fn, *arrays):
    """fn on tensors requiring grad (recorded ops) and under no_grad (the array path)."""
    recorded = fn(*(lamina.tensor(a, requires_grad=True, dtype=a.dtype) for a in arrays))
    assert recorded.grad_fn is not None
    with lamina.no_grad():
        plain = fn(*(lamina.tensor(a, dtype=a.dtype) for a in arrays))
    assert plain.grad_fn is None
    return recorded.numpy(), plain.numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", [{"offset": 5}, {"positions": np.array([[3, 4, 7], [0, 1, 2]])},
                                     {"frequencies": np.linspace(0.5, 0.01, 4), "attention_factor": 1.25}],
                         ids=["offset", "positions per row", "frequencies"])
def test_rotary_embedding_without_a_graph_equals_the_recorded_ops(dtype, options):
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 8)).astype(dtype)
    recorded, plain = _recorded_and_not(lambda t: F.rotary_embedding(t, **options), x)
    assert plain.dtype == dtype
    np.testing.assert_array_equal(plain, recorded)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, eps", [((6,), None), ((3, 6), 1e-5)])
def test_rms_norm_without_a_graph_equals_the_recorded_ops(dtype, shape, eps):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 6)).astype(dtype)
    weight = rng.normal(size=shape).astype(dtype)
    recorded, plain = _recorded_and_not(lambda t, w: F.rms_norm(t, shape, w, eps), x, weight)
    assert plain.dtype == dtype
    np.testing.assert_array_equal(plain, recorded)
    recorded, plain = _recorded_and_not(lambda t: F.rms_norm(t, shape, None, eps), x)
    np.testing.assert_array_equal(plain, recorded)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_layer_norm_row_means_round_as_numpy_mean(dtype):
    rng = np.random.default_rng(2)
    for d in (1, 3, 7, 64, 100, 768, 1000):
        a = (rng.normal(size=(16, d)) * rng.uniform(0.01, 100)).astype(dtype)
        expected = a.mean(axis=1, keepdims=True)
        got = _row_means(a)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
