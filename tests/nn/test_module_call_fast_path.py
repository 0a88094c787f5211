"""The plain call path (a built module, no hooks or interceptors) against the general one:
the same outputs and gradients with and without hooks, hooks added after the first call
are honoured and their removal restores the plain path; Dense's direct forward against its
apply_weights and against torch; the attribute lookup of registered members."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, compare_with_torch, randn
from lamina import ShapeError, nn
from lamina.nn import module as module_state
from lamina.nn.dense import LinearFunction


@pytest.fixture(autouse=True)
def _no_hooks_left_behind():
    yield
    left = list(module_state._CALL_INTERCEPTORS)
    module_state._HOOKED_MODULES.clear()
    module_state._stop_running_hooks()
    assert left == [], "the test left a hook registered (or an interceptor installed)"


def _model():
    lamina.manual_seed(3)
    return nn.Sequential(nn.Dense(6, activation="tanh"), nn.Dense(4), nn.Dense(2, activation="relu", use_bias=False))


def _values_and_gradients(model, x_array):
    x = lamina.tensor(x_array, requires_grad=True)
    y = model(x)
    (y * lamina.tensor(randn(*y.shape, seed=9))).sum().backward()
    grads = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    return y.numpy().copy(), x.grad.copy(), grads


def _assert_same(a, b):
    (ya, xa, ga), (yb, xb, gb) = a, b
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(xa, xb)
    for p, q in zip(ga, gb):
        np.testing.assert_array_equal(p, q)


def test_hooks_that_change_nothing_leave_values_and_gradients_bit_identical():
    model, x = _model(), randn(3, 5, seed=1)
    plain = _values_and_gradients(model, x)
    seen = []
    handles = [layer.register_forward_pre_hook(lambda m, inputs: seen.append("pre")) for layer in model]
    handles += [layer.register_forward_hook(lambda m, inputs, out: seen.append("post")) for layer in model]
    handles.append(model[1].register_full_backward_hook(lambda m, gin, gout: seen.append("back")))
    assert module_state._CALL_INTERCEPTORS
    hooked = _values_and_gradients(model, x)
    assert seen.count("pre") == 3 and seen.count("post") == 3 and seen.count("back") == 1
    for handle in handles:
        handle.remove()
    assert not module_state._CALL_INTERCEPTORS                  # back on the plain path
    _assert_same(plain, hooked)
    _assert_same(plain, _values_and_gradients(model, x))


def test_a_hook_added_after_the_first_call_is_honoured_and_its_removal_restores_the_output():
    dense = nn.Dense(3)
    x = lamina.tensor(randn(2, 4, seed=2))
    before = dense(x).numpy().copy()
    handle = dense.register_forward_hook(lambda m, inputs, out: out * 2.0)
    assert_close(dense(x).numpy(), 2.0 * before, 1e-7)
    pre = dense.register_forward_pre_hook(lambda m, inputs: (inputs[0] * 0.0,))
    assert_close(dense(x).numpy(), 2.0 * dense.bias.numpy()[None, :].repeat(2, axis=0), 1e-7)
    pre.remove()
    handle.remove()
    assert not module_state._CALL_INTERCEPTORS
    np.testing.assert_array_equal(dense(x).numpy(), before)


def test_keyword_arguments_reach_forward_on_both_paths():
    class Scale(nn.Module):
        def forward(self, x, factor=1.0, *, shift=0.0):
            return x * factor + shift

    layer, x = Scale(), lamina.tensor(np.ones((2, 2), np.float32))
    assert np.all(layer(x, 3.0, shift=1.0).numpy() == 4.0)
    with module_state.intercept_calls(lambda m, inputs, kwargs, forward: forward()):
        assert np.all(layer(x, factor=2.0).numpy() == 2.0)


@pytest.mark.parametrize("activation, use_bias, shape", [
    (None, True, (4, 5)), ("relu", True, (2, 3, 5)), ("tanh", False, (5,)), ("softmax", True, (1, 2, 2, 5))])
def test_dense_forward_equals_apply_weights(activation, use_bias, shape):
    lamina.manual_seed(4)
    dense = nn.Dense(3, activation=activation, use_bias=use_bias)
    dense.build((None, 5))
    x = randn(*shape, seed=5)
    direct = _values_and_gradients(dense, x)
    dense.forward = lambda x: dense.apply_weights(x, dense.weight)      # the general path
    _assert_same(direct, _values_and_gradients(dense, x))


def test_dense_without_activation_records_one_node_on_its_inputs():
    dense = nn.Dense(3)
    x = lamina.tensor(randn(2, 4, seed=6), requires_grad=True)
    y = dense(x)
    assert isinstance(y._ctx, LinearFunction)
    assert [t is u for t, u in zip(y._ctx.inputs, (x, dense.weight, dense.bias))] == [True] * 3
    assert dense(randn(2, 4, seed=6)).shape == (2, 3)               # arrays are accepted too


def test_dense_refuses_a_wrong_feature_count_after_the_build():
    dense = nn.Dense(3)
    dense(randn(2, 4))
    for bad in (randn(2, 5), np.float32(1.0)):
        with pytest.raises(ShapeError, match="Dense"):
            dense(bad)


def test_dense_matches_torch_linear_with_relu():
    lamina.manual_seed(7)
    dense = nn.Dense(3, activation="relu")
    dense.build((None, 4))
    w, b = dense.weight.numpy(), dense.bias.numpy()

    def ours(x):
        return dense(x)

    def theirs(x):
        return torch.relu(x @ torch.tensor(w) + torch.tensor(b))

    compare_with_torch(ours, theirs, randn(2, 5, 4, seed=8))


def test_registered_members_are_found_and_missing_ones_raise():
    dense = nn.Dense(2)
    dense.build((None, 3))
    dense.register_buffer("counts", np.zeros(2))
    dense.inner = nn.Dense(1)
    assert dense.weight is dense._parameters["weight"]
    assert dense.counts is dense._buffers["counts"]
    assert dense.inner is dense._modules["inner"]
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        _ = dense.missing
    assert not hasattr(nn.Module.__new__(nn.Module), "weight")     # before __init__ ran


def test_dense_and_layer_norm_read_a_parametrized_weight():
    from lamina.nn.parametrize import register_parametrization

    class Doubled(nn.Module):
        def forward(self, w):
            return w * 2.0

    x = randn(2, 3, 4, seed=10)
    dense, norm = nn.Dense(3), nn.LayerNorm()
    dense.build((None, 4))
    norm.build((None, 3, 4))
    plain_dense, plain_norm = dense(x).numpy(), norm(x).numpy()
    register_parametrization(dense, "weight", Doubled())
    register_parametrization(norm, "bias", Doubled())
    norm.bias = np.full(4, 0.25, np.float32)            # stored as original = 0.25, read as 0.5
    assert_close(dense(x).numpy(), 2.0 * (plain_dense - dense.bias.numpy()) + dense.bias.numpy(), 1e-6)
    assert_close(norm(x).numpy(), plain_norm + 0.5, 1e-6)


def test_layer_norm_checks_the_normalised_shape_on_every_path():
    norm, norm2 = nn.LayerNorm(), nn.LayerNorm(axes=(-2, -1))
    norm(randn(2, 3, 4))
    norm2(randn(2, 3, 4))
    for layer, bad in ((norm, randn(2, 3, 5)), (norm, randn(4)), (norm2, randn(2, 4, 4))):
        with pytest.raises(ShapeError, match="LayerNorm|layer_norm"):
            layer(bad)
