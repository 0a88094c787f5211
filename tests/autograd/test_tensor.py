"""The Tensor API: construction, dtypes, value accessors, detach, zero_grad, seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from lamina import backend


def test_tensor_holds_data_and_flags():
    x = lamina.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    assert isinstance(x, lamina.Tensor)
    assert isinstance(x.data, np.ndarray)
    assert x.shape == (2, 3) and x.ndim == 2 and x.size == 6 and len(x) == 2
    assert x.dtype == np.float32
    assert x.requires_grad is True
    assert x.grad is None
    assert x.is_leaf
    np.testing.assert_array_equal(x.numpy(), [[1, 2, 3], [4, 5, 6]])


def test_requires_grad_defaults_to_false():
    x = lamina.tensor([1.0, 2.0])
    assert x.requires_grad is False
    assert lamina.Tensor(np.ones(2)).requires_grad is False


def test_float32_is_the_default_for_floating_data():
    assert lamina.tensor(1.5).dtype == np.float32
    assert lamina.tensor([1.5, 2.5]).dtype == np.float32
    assert lamina.tensor(np.ones(3, dtype=np.float64)).dtype == np.float32
    assert lamina.get_default_dtype() == np.float32


def test_integer_and_bool_data_keep_their_dtype():
    assert lamina.tensor([1, 2, 3]).dtype.kind == "i"
    assert lamina.tensor(np.array([1, 2], dtype=np.uint8)).dtype == np.uint8
    assert lamina.tensor([True, False]).dtype == np.bool_


def test_float64_via_dtype_argument():
    x = lamina.tensor([1.0, 2.0], dtype=np.float64, requires_grad=True)
    assert x.dtype == np.float64
    (x * x).sum().backward()
    assert x.grad.dtype == np.float64
    assert lamina.tensor([1, 2], dtype="float64").dtype == np.float64
    assert lamina.tensor(np.ones(2, np.float64), dtype=np.float32).dtype == np.float32


def test_float64_via_set_default_dtype():
    lamina.set_default_dtype(np.float64)
    assert lamina.get_default_dtype() == np.float64
    x = lamina.tensor([1.0, 2.0], requires_grad=True)
    assert x.dtype == np.float64
    assert (x * 2.0).dtype == np.float64
    assert lamina.tensor([1.0], dtype=np.float32).dtype == np.float32
    lamina.set_default_dtype("float32")
    assert lamina.tensor([1.0]).dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float16, np.int32, "int64", bool])
def test_set_default_dtype_refuses_other_dtypes(dtype):
    with pytest.raises(ValueError, match="float32 or float64"):
        lamina.set_default_dtype(dtype)
    assert lamina.get_default_dtype() == np.float32


def test_requires_grad_needs_a_floating_dtype():
    with pytest.raises(TypeError, match="floating"):
        lamina.tensor([1, 2, 3], requires_grad=True)


def test_numpy_item_and_detach():
    x = lamina.tensor(np.arange(3.0), requires_grad=True)
    assert isinstance(x.numpy(), np.ndarray)
    assert np.shares_memory(x.numpy(), x.data)
    y = (x * 2.0).sum()
    value = y.item()
    assert isinstance(value, float) and value == 6.0
    d = (x * 3.0).detach()
    assert d.requires_grad is False and d._ctx is None and d.is_leaf
    np.testing.assert_array_equal(d.numpy(), [0.0, 3.0, 6.0])
    assert lamina.tensor([[7.5]]).item() == 7.5


def test_detach_cuts_the_graph():
    x = lamina.tensor([1.0, 2.0], requires_grad=True)
    y = x.detach() * x
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 2.0])  # only through the non-detached factor


def test_zero_grad_clears_the_gradient():
    x = lamina.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    assert x.grad is not None
    x.zero_grad()
    assert x.grad is None


def test_tensor_from_tensor_copies_value_not_graph():
    x = lamina.tensor([1.0, 2.0], requires_grad=True)
    y = lamina.tensor(x * 2.0)
    assert y.requires_grad is False and y._ctx is None
    np.testing.assert_array_equal(y.numpy(), [2.0, 4.0])


def test_reduction_results_hold_arrays():
    x = lamina.tensor(np.ones((2, 3)), requires_grad=True)
    for y in (x.sum(), x.mean(), x.max(), x.var(), x[0] @ x[1], x.sum() * 2.0, -x.sum()):
        assert isinstance(y.data, np.ndarray), type(y.data)
        assert y.shape == () and y.ndim == 0
        assert np.shares_memory(y.numpy(), y.data)


def test_repr_shows_values_and_flags():
    text = repr(lamina.tensor([1.0, 2.0], requires_grad=True))
    assert "tensor(" in text and "float32" in text and "requires_grad=True" in text
    assert "requires_grad" not in repr(lamina.tensor([1.0]))


@pytest.mark.parametrize(
    "data",
    [["a", "b"], "text", np.array(["x", "y"]), np.array([1, "x"], dtype=object),
     np.array([1.0, 2.0], dtype=object), [[1, 2], [3]], None, {"a": 1}],
    ids=["str-list", "str", "str-array", "object-array", "object-floats", "ragged", "None", "dict"],
)
def test_non_numeric_data_is_refused(data):
    with pytest.raises(TypeError, match=r"tensor\(\)") as info:
        lamina.tensor(data)
    message = str(info.value)
    assert "number" in message or "numeric" in message


def test_strings_with_a_dtype_are_refused():
    with pytest.raises(TypeError, match=r"tensor\(\): cannot make a numeric array from list"):
        lamina.tensor(["a", "b"], dtype=np.float32)


def test_operations_refuse_strings():
    x = lamina.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError, match=r"tensor\(\)"):
        x + "a"


def test_manual_seed_makes_rng_reproducible():
    lamina.manual_seed(1234)
    first = backend.rng().standard_normal(5)
    first_np = np.random.rand(3)
    lamina.manual_seed(1234)
    second = backend.rng().standard_normal(5)
    second_np = np.random.rand(3)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first_np, second_np)
    lamina.manual_seed(4321)
    assert not np.array_equal(backend.rng().standard_normal(5), first)


def test_rng_state_round_trip():
    lamina.manual_seed(7)
    state = backend.get_rng_state()
    a = backend.rng().random(4)
    backend.set_rng_state(state)
    np.testing.assert_array_equal(backend.rng().random(4), a)


@pytest.mark.parametrize("value", [0.0, 1.5, -2.7, 3.0])
def test_one_element_tensors_convert_to_python_numbers_as_torch(value):
    for shape in ((), (1,), (1, 1)):
        t = lamina.tensor(np.full(shape, value), dtype=np.float64)
        expected = torch.full(shape, value, dtype=torch.float64)
        assert bool(t) is bool(expected)
        assert float(t) == float(expected) and isinstance(float(t), float)
        assert int(t) == int(expected) and isinstance(int(t), int)


def test_an_integer_tensor_of_one_element_is_an_index():
    seq = [10, 11, 12, 13]
    assert seq[lamina.tensor(np.array(2))] == seq[torch.tensor(2)] == 12
    assert list(range(lamina.tensor([3]))) == [0, 1, 2]
    for bad in (lamina.tensor(np.array(2.0)), lamina.tensor([1, 2])):
        with pytest.raises(TypeError, match="only an integer tensor of one element can be an index"):
            seq[bad]


@pytest.mark.parametrize("shape", [(2,), (0,), (2, 3)])
def test_truth_and_numbers_of_several_or_no_elements_are_refused(shape):
    t = lamina.tensor(np.ones(shape))
    with pytest.raises(ValueError, match=rf"bool\(tensor\): .* shape \({shape[0]},"):
        bool(t)
    for convert in (float, int):
        with pytest.raises(ValueError, match=rf"{convert.__name__}\(tensor\): only a tensor of one element"):
            convert(t)


def test_requires_grad_in_place_as_torch():
    x = lamina.tensor([1.0, 2.0])
    assert x.requires_grad_() is x and x.requires_grad
    assert x.requires_grad_(False) is x and not x.requires_grad
    with pytest.raises(TypeError, match="requires_grad_\\(True\\): only a floating tensor can require grad, got int64"):
        lamina.tensor([1, 2]).requires_grad_()
    y = x.requires_grad_() * 2.0
    with pytest.raises(RuntimeError, match="requires_grad_\\(False\\): the tensor was computed by an op"):
        y.requires_grad_(False)
    assert y.requires_grad_() is y                         # already on the graph: nothing to do
    with pytest.raises(RuntimeError):
        torch.tensor([1.0], requires_grad=True).mul(2).requires_grad_(False)


def test_backward_into_the_given_inputs_only():
    grads = []
    for lib in (lamina, torch):
        dtype = torch.float64 if lib is torch else np.float64
        x = lib.tensor([1.0, 2.0], dtype=dtype, requires_grad=True)
        w = lib.tensor([3.0, 4.0], dtype=dtype, requires_grad=True)
        y = x * w
        (y * y).sum().backward(inputs=[x, y], retain_graph=True)
        (y * y).sum().backward(inputs=x)                       # adds up, as a leaf's grad does
        assert w.grad is None
        grads.append([np.asarray(x.grad), np.asarray(y.grad)])
    for ours, theirs in zip(*grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    with pytest.raises(RuntimeError, match="backward: inputs\\[0\\] must be a tensor that requires grad"):
        (lamina.tensor([1.0], requires_grad=True) * 2).sum().backward(inputs=[lamina.tensor([1.0])])
