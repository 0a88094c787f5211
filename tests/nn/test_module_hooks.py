"""Module hooks (forward pre-hooks, forward hooks, full backward hooks) against PyTorch's,
``Module.apply`` and ``capture_activations``."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina import ShapeError, nn
from lamina.nn import module as module_state
from lamina.nn.hooks import capture_activations

RTOL = 1e-5


@pytest.fixture(autouse=True)
def _no_hooks_left_behind():
    yield
    left = list(module_state._CALL_INTERCEPTORS)
    module_state._HOOKED_MODULES.clear()                        # a failed test's hooks do not reach the next test
    module_state._stop_running_hooks()
    assert left == [], "the test left a hook registered (or an interceptor installed)"


def _x(shape=(3, 5), seed=0, requires_grad=True):
    array = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return lamina.tensor(array, requires_grad=requires_grad), torch.tensor(array, requires_grad=requires_grad)


def _torch_linear(dense: nn.Dense) -> torch.nn.Linear:
    """The same affine map in PyTorch (lamina keeps W as (n_in, n_out), torch as (n_out, n_in))."""
    n_in, n_out = dense.weight.shape
    linear = torch.nn.Linear(n_in, n_out)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(dense.weight.numpy().T))
        linear.bias.copy_(torch.tensor(dense.bias.numpy()))
    return linear


def _recorder(store: list, torch_side: bool = False):
    """A backward hook that keeps copies of grad_input and grad_output as NumPy arrays."""
    def as_array(g):
        if g is None:
            return None
        return g.detach().numpy().copy() if torch_side else np.array(g, copy=True)

    def record(module, grad_input, grad_output):
        store.append(([as_array(g) for g in grad_input], [as_array(g) for g in grad_output]))
    return record


def _assert_same_records(ours: list, theirs: list) -> None:
    assert len(ours) == len(theirs) == 1
    for side, (a, b) in zip(("grad_input", "grad_output"), zip(ours[0], theirs[0])):
        assert len(a) == len(b), side
        for k, (ga, gb) in enumerate(zip(a, b)):
            assert (ga is None) == (gb is None), f"{side}[{k}]: lamina {ga is None}, torch {gb is None} for None"
            if ga is not None:
                assert_close(ga, gb, RTOL, f"{side}[{k}]")


# -- forward hooks ------------------------------------------------------------------------------

def test_a_forward_pre_hook_sees_the_inputs_and_may_replace_them():
    layer = nn.Dense(3)
    x, _ = _x(requires_grad=False)
    plain = layer(x).numpy()
    seen = []

    def double(module, inputs):
        seen.append((module, inputs))
        return inputs[0] * 2.0                         # one value: taken as the inputs tuple (value,)

    handle = layer.register_forward_pre_hook(double)
    doubled = layer(x).numpy()
    assert seen[0][0] is layer and isinstance(seen[0][1], tuple) and seen[0][1][0] is x
    np.testing.assert_allclose(doubled - layer.bias.numpy(), 2 * (plain - layer.bias.numpy()), rtol=1e-5, atol=1e-6)
    handle.remove()
    replaced = layer.register_forward_pre_hook(lambda module, inputs: (inputs[0] * 0.0,))  # a tuple as it is
    np.testing.assert_allclose(layer(x).numpy(), np.broadcast_to(layer.bias.numpy(), (3, 3)), atol=1e-7)
    replaced.remove()
    np.testing.assert_array_equal(layer(x).numpy(), plain)


def test_a_forward_hook_sees_the_inputs_and_output_and_may_replace_the_output():
    layer = nn.Dense(3)
    x, _ = _x(requires_grad=False)
    seen = []

    def watch(module, inputs, output):
        seen.append((inputs[0].numpy().copy(), output.numpy().copy()))

    watching = layer.register_forward_hook(watch)
    layer.register_forward_pre_hook(lambda module, inputs: (inputs[0] + 1.0,)).remove()  # removed: not run
    out = layer(x)
    np.testing.assert_array_equal(seen[0][0], x.numpy())
    np.testing.assert_array_equal(seen[0][1], out.numpy())
    negating = layer.register_forward_hook(lambda module, inputs, output: -output)
    np.testing.assert_array_equal(layer(x).numpy(), -out.numpy())
    np.testing.assert_array_equal(seen[1][1], out.numpy())    # registered earlier: ran before the negation
    watching.remove()
    negating.remove()
    negating.remove()                                     # a second remove does nothing


def test_hooks_run_in_registration_order_each_seeing_the_previous_result():
    layer = nn.Identity()
    order = []

    def pre(tag, factor):
        def hook(module, inputs):
            order.append(tag)
            return inputs[0] * factor
        return hook

    def post(tag, offset):
        def hook(module, inputs, output):
            order.append(tag)
            return output + offset
        return hook

    handles = [layer.register_forward_hook(post("post-a", 1.0)), layer.register_forward_pre_hook(pre("pre-a", 2.0)),
               layer.register_forward_hook(post("post-b", 10.0)), layer.register_forward_pre_hook(pre("pre-b", 3.0))]
    out = layer(lamina.tensor(np.array([1.0, -1.0], dtype=np.float32)))
    assert order == ["pre-a", "pre-b", "post-a", "post-b"]
    np.testing.assert_array_equal(out.numpy(), [6.0 + 11.0, -6.0 + 11.0])
    handles[1].remove()
    handles[2].remove()
    order.clear()
    np.testing.assert_array_equal(layer(lamina.tensor(np.array([1.0], dtype=np.float32))).numpy(), [4.0])
    assert order == ["pre-b", "post-a"]
    for handle in handles:
        handle.remove()
    assert module_state._CALL_INTERCEPTORS == []         # no hooks left: calls go straight to forward


def test_a_hook_may_remove_itself_during_the_call():
    model = nn.Sequential(nn.Dense(4), nn.ReLU(), nn.Dense(2))
    x, _ = _x(requires_grad=False)
    calls = []
    handles = {}

    def once(module, inputs, output):
        calls.append(module.name)
        handles[module.name].remove()

    for layer in model:
        handles[layer.name] = layer.register_forward_hook(once)
    first = model(x).numpy()
    second = model(x).numpy()
    assert calls == ["dense", "relu", "dense_1"]
    np.testing.assert_array_equal(first, second)


def test_hooks_fire_on_layers_that_inference_fusion_would_run_inside_another():
    model = nn.Sequential(nn.Dense(4), nn.ReLU(), nn.Dense(3), nn.Tanh())
    x, _ = _x(requires_grad=False)
    model(x)
    model.eval()
    with lamina.no_grad():
        reference = [model[:k](x).numpy() for k in (2, 4)]
    seen = {}
    handles = [model[k].register_forward_hook(lambda m, i, o: seen.__setitem__(m.name, o.numpy().copy()))
               for k in (1, 3)]
    with lamina.no_grad():
        out = model(x).numpy()
    for handle in handles:
        handle.remove()
    np.testing.assert_array_equal(seen["relu"], reference[0])
    np.testing.assert_array_equal(seen["tanh"], reference[1])
    np.testing.assert_array_equal(out, reference[1])


def test_registering_something_not_callable_raises():
    with pytest.raises(TypeError, match=r"Dense.*register_forward_hook: expected a callable, got int"):
        nn.Dense(2).register_forward_hook(3)


# -- backward hooks against PyTorch --------------------------------------------------------------

def test_a_backward_hook_on_a_dense_layer_gets_torchs_gradients():
    layer = nn.Dense(3)
    x, xt = _x()
    layer(x)
    linear = _torch_linear(layer)
    ours, theirs = [], []
    handle = layer.register_full_backward_hook(_recorder(ours))
    linear.register_full_backward_hook(_recorder(theirs, torch_side=True))
    upstream = np.random.default_rng(1).standard_normal((3, 3)).astype(np.float32)
    layer(x).backward(upstream)
    linear(xt).backward(torch.tensor(upstream))
    handle.remove()
    _assert_same_records(ours, theirs)
    assert_close(x.grad, xt.grad.numpy(), RTOL, "dJ/dx")
    assert_close(layer.weight.grad, linear.weight.grad.numpy().T, RTOL, "dJ/dW")


def test_a_backward_hook_on_a_relu_inside_a_sequential_gets_torchs_gradients():
    model = nn.Sequential(nn.Dense(4), nn.ReLU())              # trained: the ReLU would overwrite the Dense output
    x, xt = _x()
    model(x)
    reference = torch.nn.Sequential(_torch_linear(model[0]), torch.nn.ReLU())
    ours, theirs = [], []
    handle = model[1].register_full_backward_hook(_recorder(ours))
    reference[1].register_full_backward_hook(_recorder(theirs, torch_side=True))
    (model(x) ** 2).sum().backward()
    (reference(xt) ** 2).sum().backward()
    handle.remove()
    _assert_same_records(ours, theirs)
    assert_close(x.grad, xt.grad.numpy(), RTOL, "dJ/dx")


def test_a_backward_hook_that_scales_grad_input_scales_every_gradient_below_as_in_torch():
    model = nn.Sequential(nn.Dense(4), nn.ReLU(), nn.Dense(2))
    x, xt = _x()
    model(x)
    reference = torch.nn.Sequential(_torch_linear(model[0]), torch.nn.ReLU(), _torch_linear(model[2]))

    def triple(module, grad_input, grad_output):
        return tuple(None if g is None else 3 * g for g in grad_input)

    handle = model[1].register_full_backward_hook(triple)
    reference[1].register_full_backward_hook(triple)
    (model(x) ** 2).sum().backward()
    (reference(xt) ** 2).sum().backward()
    handle.remove()
    assert_close(model[0].weight.grad, reference[0].weight.grad.numpy().T, RTOL, "dJ/dW below the hook")
    assert_close(model[0].bias.grad, reference[0].bias.grad.numpy(), RTOL, "dJ/db below the hook")
    assert_close(model[2].weight.grad, reference[2].weight.grad.numpy().T, RTOL, "dJ/dW above the hook")
    assert_close(x.grad, xt.grad.numpy(), RTOL, "dJ/dx")
    model.zero_grad()
    (model(x) ** 2).sum().backward()                            # removed: the plain gradients again
    assert_close(3 * model[0].bias.grad, reference[0].bias.grad.numpy(), RTOL, "dJ/db without the hook")


def test_a_backward_hook_fires_once_per_call_with_no_input_requiring_grad_as_in_torch():
    layer = nn.Dense(3)
    x, xt = _x(requires_grad=False)
    layer(x)
    linear = _torch_linear(layer)
    ours, theirs = [], []
    handle = layer.register_full_backward_hook(_recorder(ours))
    linear.register_full_backward_hook(_recorder(theirs, torch_side=True))
    (layer(x) ** 2).sum().backward()
    with pytest.warns(UserWarning, match="no inputs require gradients"):  # torch's note on this case
        (linear(xt) ** 2).sum().backward()
    _assert_same_records(ours, theirs)
    assert ours[0][0] == [None]
    ours.clear()
    (layer(x) + layer(x)).sum().backward()                      # two calls, one sweep: twice
    assert len(ours) == 2
    handle.remove()
    refusing = layer.register_full_backward_hook(lambda m, gi, go: (np.zeros((3, 5), np.float32),))
    with pytest.raises(ValueError, match="no tensor that requires grad.*must return None"):
        layer(x).sum().backward()
    refusing.remove()


class _Product(nn.Module):
    """(a b scale, a + b, the batch size): two tensor inputs, two tensor outputs and a number."""

    def forward(self, a, b, scale=1.0):
        return a * b * scale, a + b, a.shape[0]


class _TorchProduct(torch.nn.Module):
    def forward(self, a, b, scale=1.0):
        return a * b * scale, a + b, a.shape[0]


def test_a_backward_hook_of_a_module_with_several_inputs_and_outputs_matches_torch():
    (a, at), (b, bt) = _x((2, 3), seed=1), _x((2, 3), seed=2)
    ours, theirs = [], []
    module, reference = _Product(), _TorchProduct()
    handle = module.register_full_backward_hook(_recorder(ours))
    reference.register_full_backward_hook(_recorder(theirs, torch_side=True))
    w = np.random.default_rng(3).standard_normal((2, 3)).astype(np.float32)
    product, total, _ = module(a, b, 2.0)
    product_t, total_t, _ = reference(at, bt, 2.0)
    ((product * lamina.tensor(w)).sum() + (total ** 2).sum()).backward()
    ((product_t * torch.tensor(w)).sum() + (total_t ** 2).sum()).backward()
    _assert_same_records(ours, theirs)
    assert_close(a.grad, at.grad.numpy(), RTOL, "dJ/da")
    handle.remove()

    ours.clear()
    c = lamina.tensor(b.numpy())                                # not requiring grad: None in grad_input
    handle = module.register_full_backward_hook(_recorder(ours))
    a.grad = None
    module(a, c)[0].sum().backward()                            # the second output unreached: None
    handle.remove()
    assert ours[0][0][1] is None and ours[0][1][1:] == [None, None]
    np.testing.assert_allclose(ours[0][0][0], c.numpy())
    np.testing.assert_allclose(ours[0][1][0], np.ones((2, 3)))


def test_a_backward_hook_may_replace_one_of_several_input_gradients():
    (a, _), (b, _) = _x((2, 3), seed=1), _x((2, 3), seed=2)
    module = _Product()
    handle = module.register_full_backward_hook(lambda m, gi, go: (None, 10 * gi[1]))
    module(a, b)[0].sum().backward()
    handle.remove()
    assert a.grad is None                                       # cut by the hook
    np.testing.assert_allclose(b.grad, 10 * a.numpy(), rtol=1e-6)


def test_a_backward_hook_returning_the_wrong_gradients_raises():
    layer = nn.Dense(3)
    x, _ = _x()
    layer(x)
    handle = layer.register_full_backward_hook(lambda m, gi, go: (gi[0], gi[0]))
    with pytest.raises(ValueError, match=r"backward hook .*Dense.*expected None or a tuple of 1 gradients"):
        layer(x).sum().backward()
    handle.remove()
    handle = layer.register_full_backward_hook(lambda m, gi, go: (np.zeros((5, 3), np.float32),))
    with pytest.raises(ShapeError, match=r"input 0 has shape \(5, 3\); the input has shape \(3, 5\)"):
        layer(x).sum().backward()
    handle.remove()


def test_a_backward_hook_is_silent_without_a_recorded_graph():
    layer = nn.Dense(2)
    x, _ = _x()
    fired = []
    handle = layer.register_full_backward_hook(lambda m, gi, go: fired.append(1))
    with lamina.no_grad():
        out = layer(x)
    handle.remove()
    assert not out.requires_grad and fired == []


# -- hooks and the rest of the module ----------------------------------------------------------

def test_hooks_survive_mode_changes_and_stay_out_of_the_state_dict_config_and_copies():
    model = nn.Sequential(nn.Dense(4), nn.Dropout(0.5), nn.Dense(2))
    x, _ = _x(requires_grad=False)
    model(x)
    keys, config = list(model.state_dict()), model.get_config()
    calls = []
    handles = [layer.register_forward_hook(lambda m, i, o: calls.append(m.name)) for layer in model]
    handles.append(model[0].register_full_backward_hook(lambda m, gi, go: None))
    model.eval()
    model(x)
    model.train()
    model(x)
    assert calls == ["dense", "dropout", "dense_1"] * 2
    assert list(model.state_dict()) == keys and model.get_config() == config
    twin = copy.deepcopy(model)                                 # a copy starts without hooks
    calls.clear()
    twin(x)
    assert calls == []
    summary = model.summary()                                   # traces a copy: the hooks do not run
    assert calls == [] and summary is not None
    for handle in handles:
        handle.remove()


def test_apply_visits_every_module_children_before_parent_and_returns_self():
    inner = nn.Sequential(nn.Dense(3, name="a"), nn.Dense(3, name="b"), name="inner")
    model = nn.Sequential(inner, nn.Dense(2, name="c"), name="outer")
    visited = []
    assert model.apply(lambda m: visited.append(m.name)) is model
    assert visited == ["a", "b", "inner", "c", "outer"]


# -- capture_activations -----------------------------------------------------------------------

def _cnn():
    lamina.manual_seed(0)
    return nn.Sequential(nn.Conv2D(4, 3, padding="same"), nn.ReLU(), nn.MaxPool2D(2),
                         nn.Conv2D(6, 3), nn.ReLU(), nn.Flatten(), nn.Dense(5))


def test_capture_activations_gives_the_outputs_of_the_prefixes_of_a_cnn():
    model = _cnn()
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32)
    captured = capture_activations(model, x)
    assert list(captured) == [layer.name for layer in model]
    with lamina.no_grad():
        for k, layer in enumerate(model, start=1):
            np.testing.assert_array_equal(captured[layer.name], model[:k](x).numpy(), err_msg=layer.name)
    assert module_state._CALL_INTERCEPTORS == []
    some = capture_activations(model, lamina.tensor(x), layers=["max_pool2d", "dense"])
    assert list(some) == ["max_pool2d", "dense"]
    np.testing.assert_array_equal(some["dense"], captured["dense"])


def test_capture_activations_names_nested_modules_by_dotted_path():
    model = nn.Sequential(nn.Sequential(nn.Dense(4, name="hidden"), nn.ReLU(name="act"), name="body"),
                          nn.Dense(2, name="head"))
    x, _ = _x(requires_grad=False)
    captured = capture_activations(model, x)
    assert list(captured) == ["body", "body.hidden", "body.act", "head"]
    np.testing.assert_array_equal(captured["body"], captured["body.act"])
    np.testing.assert_array_equal(captured["body.act"], np.maximum(captured["body.hidden"], 0))
    with pytest.raises(ValueError, match=r"no sub-module named \['body.dense'\].*'body.hidden'"):
        capture_activations(model, x, layers=["body.dense"])


def test_capture_activations_removes_its_hooks_when_the_forward_raises():
    model = _cnn()
    model(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ShapeError):
        capture_activations(model, np.zeros((1, 8, 8, 5), np.float32))     # 5 channels for a 3-channel conv
    assert module_state._CALL_INTERCEPTORS == []
    assert not any(module.__dict__.get("_module_hooks") for module in model.modules())
