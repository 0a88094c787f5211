"""jacobian, hessian, vjp, jvp, hvp and vhp against torch.autograd.functional with torch's
arguments: one input or a tuple, one output or a tuple, create_graph (results differentiated
again), strict, vectorize and the strategies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.autograd.functional as TF

import lamina
from helpers import randn
from lamina.autograd.derivatives import hessian, hvp, jacobian, jvp, vhp, vjp

pytestmark = pytest.mark.usefixtures("float64")


X, Y = randn(3), randn(2, 3, seed=1)
VX, VY = randn(3, seed=2), randn(2, 3, seed=3)


def T(a):
    return torch.tensor(a)


def same(ours, theirs, what: str):
    """Equal values in the same structure: tuples (of tuples) of arrays or tensors."""
    if isinstance(theirs, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(theirs), f"{what}: {type(ours).__name__} for a tuple"
        for a, b in zip(ours, theirs):
            same(a, b, what)
        return
    assert not isinstance(ours, tuple), f"{what}: a tuple for a single tensor"
    mine = ours.numpy() if isinstance(ours, lamina.Tensor) else np.asarray(ours)
    np.testing.assert_allclose(mine, theirs.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=what)


def two_outputs(a, b):
    return a * b.tanh(), (a * a).sum()


def scalar_of_two(a, b):
    return (a * b.exp()).sum()


def scalar(a):
    return (a.sin() * a).sum()


def test_jacobian_structures_for_one_or_several_inputs_and_outputs():
    same(jacobian(two_outputs, (X, Y)), TF.jacobian(two_outputs, (T(X), T(Y))), "tuple in, tuple out")
    same(jacobian(lambda a: (a * 2, a.sum()), X), TF.jacobian(lambda a: (a * 2, a.sum()), T(X)), "one in, tuple out")
    same(jacobian(lambda a, b: a * b, (X, X)), TF.jacobian(lambda a, b: a * b, (T(X), T(X))), "tuple in, one out")
    same(jacobian(lambda a: a.sin(), X, vectorize=True, strategy="forward-mode"),
         TF.jacobian(lambda a: a.sin(), T(X), vectorize=True, strategy="forward-mode"), "vectorize")
    same(hessian(scalar_of_two, (X, Y), vectorize=True), TF.hessian(scalar_of_two, (T(X), T(Y)), vectorize=True),
         "hessian blocks")
    with pytest.raises(ValueError, match="jacobian: strategy must be 'reverse-mode' or 'forward-mode', got 'sideways'"):
        jacobian(scalar, X, strategy="sideways")


def test_vjp_and_jvp_of_tuple_outputs():
    ct = (VY, np.array(1.5))
    same(vjp(two_outputs, (X, Y), ct), TF.vjp(two_outputs, (T(X), T(Y)), tuple(T(c) for c in ct)), "vjp")
    same(jvp(two_outputs, (X, Y), (VX, VY)), TF.jvp(two_outputs, (T(X), T(Y)), (T(VX), T(VY))), "jvp")
    same(vjp(scalar, X), TF.vjp(scalar, T(X)), "vjp of a scalar, v omitted")
    same(jvp(lambda a: a * a, np.array([2.0])), TF.jvp(lambda a: a * a, torch.tensor([2.0], dtype=torch.float64)),
         "jvp of one value, v omitted")
    with pytest.raises(RuntimeError, match="jvp: v can only be omitted when the input is one tensor of one value"):
        jvp(lambda a: a * a, X)


@pytest.mark.parametrize("name", ["vhp", "hvp"])
def test_vhp_and_hvp(name):
    ours, theirs = {"vhp": vhp, "hvp": hvp}[name], getattr(TF, name)
    same(ours(scalar, X, VX), theirs(scalar, T(X), T(VX)), f"{name} of one input")
    same(ours(scalar_of_two, (X, Y), (VX, VY)), theirs(scalar_of_two, (T(X), T(Y)), (T(VX), T(VY))),
         f"{name} of two inputs")


@pytest.mark.parametrize("name", ["jacobian", "hessian", "vjp", "jvp", "hvp", "vhp"])
def test_create_graph_results_are_differentiable_with_respect_to_the_inputs(name):
    def through(derivative, tensor_of):
        v = tensor_of(VX)
        calls = {"jacobian": lambda a: derivative(lambda t: t.sin() * t, a, create_graph=True),
                 "hessian": lambda a: derivative(lambda t: (t.sin() * t).sum(), a, create_graph=True),
                 "vjp": lambda a: derivative(lambda t: t.sin() * t, a, v, create_graph=True)[1],
                 "jvp": lambda a: derivative(lambda t: t.sin() * t, a, v, create_graph=True)[1],
                 "hvp": lambda a: derivative(lambda t: (t.sin() * t).sum(), a, v, create_graph=True)[1],
                 "vhp": lambda a: derivative(lambda t: (t.sin() * t).sum(), a, v, create_graph=True)[1]}
        return calls[name]

    a = lamina.tensor(X, requires_grad=True)
    ours = through(globals()[name], lamina.tensor)(a)
    (ours * ours).sum().backward()
    b = T(X).requires_grad_()
    theirs = through(getattr(TF, name), T)(b)
    (theirs * theirs).sum().backward()
    same(ours, theirs, f"{name} value")
    same(a.grad, b.grad, f"gradient of {name}")


@pytest.mark.parametrize("name, call, message", [
    ("vjp", lambda f: f(lambda a, b: a * 2, (X, X), X, strict=True), "the output is independent of input 1"),
    ("jacobian", lambda f: f(lambda a, b: a * 2, (X, X), strict=True), "output 0 is independent of input 1"),
    ("jvp", lambda f: f(lambda a, b: a * 2, (X, X), (VX, VX), strict=True), "the output is independent of input 1"),
    ("hessian", lambda f: f(lambda a: a.sum(), X, strict=True),
     "the gradient with respect to input 0 is independent of the inputs"),
    ("hvp", lambda f: f(lambda a: a.sum(), X, VX, strict=True),
     "the gradient with respect to input 0 is independent of the inputs"),
    ("jacobian", lambda f: f(lambda a: a.detach() * 1.0, X, strict=True),
     "output 0 of fn does not depend on the inputs"),
])
def test_strict_raises_where_torch_does(name, call, message):
    with pytest.raises(RuntimeError, match="not allowed in strict mode|must be computed in a differentiable"):
        call(lambda fn, inputs, *rest, **options: getattr(TF, name)(
            fn, tuple(T(i) for i in inputs) if isinstance(inputs, tuple) else T(inputs),
            *[tuple(T(r) for r in v) if isinstance(v, tuple) else T(v) for v in rest], **options))
    with pytest.raises(RuntimeError, match=rf"{name}\(strict=True\): {message}"):
        call(globals()[name])
    assert not jacobian(lambda a, b: a * 2, (X, X))[1].any()      # not strict: zeros


def test_the_graph_is_recorded_under_no_grad():
    with lamina.no_grad():
        ours = jacobian(lambda a: a.sin(), X)
    np.testing.assert_allclose(ours, np.diag(np.cos(X)), rtol=1e-12)


def test_grad_of_several_outputs_adds_their_vjps_as_torch():
    a = np.array([0.5, -1.0, 2.0])
    x = lamina.tensor(a, dtype=np.float64, requires_grad=True)
    xt = torch.tensor(a, requires_grad=True)
    seeds = [np.array([1.0, 2.0, 3.0]), None]
    ours = lamina.autograd.grad([x * x, (x * 3).sum()], [x], grad_outputs=[seeds[0], None])[0]
    theirs = torch.autograd.grad([xt * xt, (xt * 3).sum()], [xt], grad_outputs=[torch.tensor(seeds[0]), None])[0]
    np.testing.assert_allclose(ours, theirs.numpy())
    (second,) = lamina.autograd.grad([(x ** 3).sum(), (x * x).sum()], [x], create_graph=True)
    (second_t,) = torch.autograd.grad([(xt ** 3).sum(), (xt * xt).sum()], [xt], create_graph=True)
    np.testing.assert_allclose(lamina.autograd.grad(second.sum(), [x])[0],
                               torch.autograd.grad(second_t.sum(), [xt])[0].numpy())


def test_materialize_grads_gives_zeros_for_unused_inputs_as_torch():
    x = lamina.tensor(np.ones(2), dtype=np.float64, requires_grad=True)
    unused = lamina.tensor(np.ones((2, 3)), dtype=np.float64, requires_grad=True)
    xt, unused_t = torch.ones(2, dtype=torch.float64, requires_grad=True), torch.ones(2, 3, requires_grad=True)
    ours = lamina.autograd.grad((x * 2).sum(), [x, unused], materialize_grads=True)
    theirs = torch.autograd.grad((xt * 2).sum(), [xt, unused_t], materialize_grads=True)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b.detach().numpy())
    with pytest.raises(RuntimeError, match=r"does not depend on inputs\[1\]"):
        lamina.autograd.grad((x * 2).sum(), [x, unused])


def test_grad_outputs_and_grad_output_are_one_argument():
    x = lamina.tensor(np.ones(2), dtype=np.float64, requires_grad=True)
    with pytest.raises(TypeError, match="both grad_output and grad_outputs"):
        lamina.autograd.grad(x * 2, [x], np.ones(2), grad_outputs=np.ones(2))
    with pytest.raises(ValueError, match="with 2 outputs, grad_output must be a sequence of 2"):
        lamina.autograd.grad([x * 2, x * 3], [x], grad_outputs=[np.ones(2)])
