"""Custom functions in PyTorch's form (``CustomFunction``, ctx): the examples of "Extending
torch.autograd" written in both frameworks side by side, with the same values, gradients and
second derivatives; the ctx's options; the errors; and the engine's tools around them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import (
    check_gradients,
    check_second_derivatives,
    compare_double_backward_with_torch,
    compare_with_torch,
    randn,
)
from lamina import ShapeError, nn
from lamina.autograd import CustomFunction, checkpoint, grad, once_differentiable
from lamina.optim import Adam
from lamina.train import Trainer

# -- the examples, in lamina and in torch ----------------------------------------------------

def in_both(body: type) -> tuple[type, type]:
    """``body``'s static methods as a lamina CustomFunction (named as ``body``) and as a
    torch.autograd.Function (``Torch`` + the name): the same code runs in both."""
    methods = {key: value for key, value in vars(body).items() if isinstance(value, staticmethod)}
    return (type(body.__name__, (CustomFunction,), {**methods, "__doc__": body.__doc__}),
            type("Torch" + body.__name__, (torch.autograd.Function,), methods))


class Exp:
    """y = e^x, saving its output: dJ/dx = dJ/dy * y."""

    @staticmethod
    def forward(ctx, x):
        y = x.exp()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return dy * y


class Linear:
    """y = x W^T + b (b optional); each gradient is computed only if needed."""

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        ctx.save_for_backward(x, weight, bias)
        y = x @ weight.T
        return y if bias is None else y + bias

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias = ctx.saved_tensors
        needs = ctx.needs_input_grad
        dx = dy @ weight if needs[0] else None
        dw = dy.T @ x if needs[1] else None
        db = dy.sum(axis=0) if bias is not None and needs[2] else None
        return dx, dw, db


class MulConstant:
    """y = c x for a number c (not a tensor): its gradient is None."""

    @staticmethod
    def forward(ctx, x, constant):
        ctx.constant = constant
        return x * constant

    @staticmethod
    def backward(ctx, dy):
        return dy * ctx.constant, None


class MulConstantSetup:
    """MulConstant in PyTorch 2's form: forward without ctx, then setup_context."""

    @staticmethod
    def forward(x, constant=2.0):
        return x * constant

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.constant = inputs[1]

    @staticmethod
    def backward(ctx, dy):
        return dy * ctx.constant, None


Exp, TorchExp = in_both(Exp)
Linear, TorchLinear = in_both(Linear)
MulConstant, TorchMulConstant = in_both(MulConstant)
MulConstantSetup, TorchMulConstantSetup = in_both(MulConstantSetup)


def _sin_cos(base, name: str, record: list | None = None, materialize: bool = True):
    """(sin x, cos x), two differentiable outputs, saving x; ``record`` collects what
    backward received for each output ("none", "zeros" or "grad")."""

    def forward(ctx, x):
        ctx.set_materialize_grads(materialize)
        ctx.save_for_backward(x)
        return x.sin(), x.cos()

    def backward(ctx, ds, dc):
        (x,) = ctx.saved_tensors
        if record is not None:
            record.append(tuple(_kind(g) for g in (ds, dc)))
        dx = 0
        if ds is not None:
            dx = dx + ds * x.cos()
        if dc is not None:
            dx = dx - dc * x.sin()
        return dx

    return type(name, (base,), {"forward": staticmethod(forward), "backward": staticmethod(backward)})


def _kind(g) -> str:
    if g is None:
        return "none"
    values = g.numpy() if isinstance(g, lamina.Tensor) else g.detach().numpy()
    return "zeros" if not values.any() else "grad"


SinCos = _sin_cos(CustomFunction, "SinCos")
TorchSinCos = _sin_cos(torch.autograd.Function, "TorchSinCos")


class Sort(CustomFunction):
    """Sorted values and the permutation (marked non-differentiable, as torch.sort's indices):
    dJ/dx = dJ/dvalues taken back through the inverse permutation."""

    @staticmethod
    def forward(ctx, x):
        order = np.argsort(x.numpy(), kind="stable")
        indices = lamina.tensor(order)
        ctx.mark_non_differentiable(indices)
        ctx.inverse = np.argsort(order, kind="stable")
        return x[order], indices

    @staticmethod
    def backward(ctx, dvalues, dindices):
        assert not dindices.numpy().any()
        return dvalues[ctx.inverse]


class TorchSort(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        values, indices = torch.sort(x, stable=True)
        ctx.mark_non_differentiable(indices)
        ctx.inverse = torch.argsort(indices, stable=True)
        return values, indices

    @staticmethod
    def backward(ctx, dvalues, dindices):
        assert not dindices.any()
        return dvalues[ctx.inverse]


class NumpyExp(Exp):
    """Exp with a backward on NumPy arrays: right once, not differentiable again."""

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return lamina.tensor(dy.numpy() * y.numpy(), dtype=y.dtype)


# -- values, gradients and second derivatives against torch ----------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_matches_torch(dtype):
    compare_with_torch(Exp.apply, TorchExp.apply, randn(3, 4), dtype=dtype)
    check_gradients(Exp.apply, randn(3, 4))
    y = Exp.apply(lamina.tensor(randn(2), requires_grad=True))
    assert y.grad_fn.name == "ExpBackward" and y.grad_fn.next_functions[0][0].name == "AccumulateGrad"


@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_matches_torch_with_and_without_bias(with_bias):
    arrays = [randn(5, 3, seed=1), randn(4, 3, seed=2)] + ([randn(4, seed=3)] if with_bias else [])
    compare_with_torch(Linear.apply, TorchLinear.apply, *arrays)
    check_gradients(Linear.apply, *arrays)
    compare_double_backward_with_torch(lambda *t: Linear.apply(*t).tanh(), lambda *t: TorchLinear.apply(*t).tanh(),
                                       *arrays)


def test_needs_input_grad_is_what_torch_says_and_skipped_gradients_stay_none():
    seen = {"lamina": [], "torch": []}

    def probe(base, linear, key):
        def forward(ctx, x, weight, bias):
            seen[key].append(tuple(ctx.needs_input_grad))
            return linear.forward(ctx, x, weight, bias)

        return type("Probe", (base,), {"forward": staticmethod(forward), "backward": linear.backward})

    ours, theirs = probe(CustomFunction, Linear, "lamina"), probe(torch.autograd.Function, TorchLinear, "torch")
    x, w, b = randn(2, 3, seed=1), randn(4, 3, seed=2), randn(4, seed=3)
    lamina_inputs = [lamina.tensor(x), lamina.tensor(w, requires_grad=True), lamina.tensor(b)]
    ours.apply(*lamina_inputs).sum().backward()
    theirs.apply(torch.tensor(x), torch.tensor(w, requires_grad=True), torch.tensor(b)).sum().backward()
    with lamina.no_grad():
        ours.apply(lamina.tensor(x, requires_grad=True), *lamina_inputs[1:])
    with torch.no_grad():
        theirs.apply(torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True), torch.tensor(b))
    assert seen["lamina"] == seen["torch"] == [(False, True, False), (True, True, False)]
    assert lamina_inputs[0].grad is None and lamina_inputs[2].grad is None
    assert lamina_inputs[1].grad.shape == (4, 3)


@pytest.mark.parametrize("ours, theirs", [(MulConstant, TorchMulConstant), (MulConstantSetup, TorchMulConstantSetup)])
def test_a_number_argument_gets_none_in_both_forms(ours, theirs):
    compare_with_torch(lambda x: ours.apply(x, 3.5), lambda x: theirs.apply(x, 3.5), randn(2, 3))
    check_gradients(lambda x: ours.apply(x, -1.5), randn(2, 3))
    compare_double_backward_with_torch(lambda x: ours.apply(x, 3.5) ** 3, lambda x: theirs.apply(x, 3.5) ** 3,
                                       randn(2, 3))


def test_setup_context_form_binds_defaults_and_keywords_as_torch():
    x = randn(4)
    for constant in ({}, {"constant": 0.5}):
        ours, theirs = lamina.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        (MulConstantSetup.apply(ours, **constant) ** 2).sum().backward()
        (TorchMulConstantSetup.apply(theirs, **constant) ** 2).sum().backward()
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-6)


def test_two_outputs_each_with_its_gradient_as_torch():
    def both(fn):
        def run(x):
            s, c = fn.apply(x)
            return s * c + s, c
        return run

    compare_with_torch(both(SinCos), both(TorchSinCos), randn(3, 2))
    check_gradients(lambda x: (lambda s, c: s * c.exp())(*SinCos.apply(x)), randn(3, 2))
    check_second_derivatives(lambda x: (lambda s, c: s * c.exp())(*SinCos.apply(x)), randn(3, 2))
    compare_double_backward_with_torch(lambda x: (lambda s, c: s * c.exp())(*SinCos.apply(x)),
                                       lambda x: (lambda s, c: s * c.exp())(*TorchSinCos.apply(x)), randn(3, 2))
    s, c = SinCos.apply(lamina.tensor(randn(2), requires_grad=True))
    assert s.grad_fn.name == c.grad_fn.name == "SinCosBackward"


@pytest.mark.parametrize("materialize", [True, False])
def test_an_unused_output_gets_zeros_or_none_as_torch(materialize):
    ours, theirs = [], []
    x = randn(3)
    lamina_fn = _sin_cos(CustomFunction, "SinCosProbe", ours, materialize)
    torch_fn = _sin_cos(torch.autograd.Function, "TorchSinCosProbe", theirs, materialize)
    for pick in (0, 1):
        xl, xt = lamina.tensor(x, requires_grad=True, dtype=np.float64), torch.tensor(x, requires_grad=True)
        lamina_fn.apply(xl)[pick].sum().backward()
        torch_fn.apply(xt)[pick].sum().backward()
        np.testing.assert_allclose(xl.grad, xt.grad.numpy(), rtol=1e-12)
    assert ours == theirs
    assert ours[0] == ("grad", "zeros" if materialize else "none")


def test_sort_indices_are_not_differentiable_as_torch():
    x = randn(6, seed=4)
    values, indices = compare_with_torch(Sort.apply, TorchSort.apply, x)
    np.testing.assert_array_equal(indices.numpy(), np.argsort(x))
    assert not indices.requires_grad and indices.grad_fn is None
    assert values.grad_fn.name == "SortBackward"
    check_gradients(lambda t: Sort.apply(t)[0] ** 2, x)
    compare_double_backward_with_torch(lambda t: Sort.apply(t)[0] ** 3, lambda t: TorchSort.apply(t)[0] ** 3, x)


def test_a_gradient_of_a_broadcast_shape_is_summed_back_and_cast_as_torch():
    def make(base, ones):
        def forward(ctx, x):
            return x * 2

        def backward(ctx, dy):       # as if x had been broadcast to (2, 3, 4), and in another dtype
            return ones((2, 3, 4)) * 2

        return type("Spread", (base,), {"forward": staticmethod(forward), "backward": staticmethod(backward)})

    ours = make(CustomFunction, lambda shape: lamina.tensor(np.ones(shape), dtype=np.float64))
    theirs = make(torch.autograd.Function, lambda shape: torch.ones(shape, dtype=torch.float64))
    compare_with_torch(lambda x: ours.apply(x).sum(), lambda x: theirs.apply(x).sum(), randn(1, 4))
    x = lamina.tensor(randn(1, 4), requires_grad=True)
    (g,) = grad(ours.apply(x).sum(), x)
    assert g.dtype == np.float32 and g.shape == (1, 4)


def test_a_saved_tensor_returned_as_a_gradient_is_not_aliased_by_grad():
    class Dot(CustomFunction):
        """y = <x, w>, for dJ/dy = 1 only (backward hands back w itself)."""

        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(w)
            return (x * w).sum()

        @staticmethod
        def backward(ctx, dy):
            return ctx.saved_tensors[0], None

    x, w = lamina.tensor(randn(3), requires_grad=True), lamina.tensor(randn(3, seed=1))
    Dot.apply(x, w).backward()
    x.grad *= 0                               # as an optimizer may do
    np.testing.assert_array_equal(w.numpy(), randn(3, seed=1).astype(np.float32))


# -- once_differentiable, errors --------------------------------------------------------------

def test_once_differentiable_gives_first_derivatives_and_refuses_second():
    compare_with_torch(NumpyExp.apply, TorchExp.apply, randn(3), dtype=np.float64)
    x = lamina.tensor(randn(3), requires_grad=True, dtype=np.float64)
    (g,) = grad((NumpyExp.apply(x) ** 2).sum(), x, create_graph=True)
    np.testing.assert_allclose(g.numpy(), 2 * np.exp(2 * x.numpy()), rtol=1e-12)
    with pytest.raises(RuntimeError, match="NumpyExp.backward is marked @once_differentiable"):
        grad(g.sum(), x)
    (h,) = grad((Exp.apply(x) ** 2).sum(), x, create_graph=True)      # the same without the decorator
    np.testing.assert_allclose(grad(h.sum(), x)[0], 4 * np.exp(2 * x.numpy()), rtol=1e-12)


def _returning(*grads):
    class Bad(CustomFunction):
        @staticmethod
        def forward(ctx, x, k):
            return x * k

        @staticmethod
        def backward(ctx, dy):
            return grads

    return Bad


def test_a_wrong_number_shape_or_place_of_gradients_is_a_clear_error():
    x = lamina.tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"Bad.backward returned 1 gradients for the 2 arguments of forward"):
        _returning(np.ones((2, 3))).apply(x, 2.0).sum().backward()
    with pytest.raises(RuntimeError, match=r"returned 3 gradients for the 2 arguments"):
        _returning(np.ones((2, 3)), None, np.ones(1)).apply(x, 2.0).sum().backward()
    with pytest.raises(TypeError, match=r"gradient at index 1, but argument 1 of forward is not a tensor"):
        _returning(np.ones((2, 3)), np.ones(1)).apply(x, 2.0).sum().backward()
    with pytest.raises(ShapeError, match=r"Bad.backward returned a gradient of shape \(3,\) at index 0, for argument "
                                         r"0 of forward, a tensor of shape \(2, 3\)"):
        _returning(np.ones(3), None).apply(x, 2.0).sum().backward()
    _returning(np.ones((2, 3)), None, None).apply(x, 2.0).sum().backward()      # extra Nones pass, as in torch
    np.testing.assert_array_equal(x.grad, np.ones((2, 3)))


def test_misuse_is_refused():
    class Inplace(CustomFunction):
        @staticmethod
        def forward(ctx, x):
            ctx.mark_dirty(x)
            return x

    with pytest.raises(NotImplementedError, match="Inplace: mark_dirty is not supported"):
        Inplace.apply(lamina.tensor([1.0], requires_grad=True))
    with pytest.raises(TypeError, match="Exp is not instantiated"):
        Exp()
    with pytest.raises(TypeError, match="save_for_backward takes tensors"):
        _sin_cos(CustomFunction, "Saver").forward(lamina.autograd.FunctionCtx("Saver", (True,)), 3.0)


def test_a_second_backward_through_freed_saved_tensors_raises():
    x = lamina.tensor(randn(3), requires_grad=True)
    y = Exp.apply(x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * np.exp(x.numpy()), rtol=1e-6)
    with pytest.raises(RuntimeError, match="a second time"):
        y.backward()


# -- the engine around it --------------------------------------------------------------------

def test_no_grad_and_constant_inputs_record_nothing():
    x = lamina.tensor(randn(3), requires_grad=True)
    with lamina.no_grad():
        y = Exp.apply(x)
    assert not y.requires_grad and y.grad_fn is None
    y = Exp.apply(lamina.tensor(randn(3)))
    assert not y.requires_grad and y.grad_fn is None
    np.testing.assert_allclose(y.numpy(), np.exp(randn(3)), rtol=1e-6)


def test_hooks_on_inputs_and_outputs_run_as_in_torch():
    x = randn(4)
    xl, xt = lamina.tensor(x, requires_grad=True, dtype=np.float64), torch.tensor(x, requires_grad=True)
    yl, yt = Exp.apply(xl), TorchExp.apply(xt)
    yl.register_hook(lambda g: g * 3)
    yt.register_hook(lambda g: g * 3)
    seen = []
    xl.register_hook(lambda g: seen.append(g.copy()))
    (yl * yl).sum().backward()
    (yt * yt).sum().backward()
    np.testing.assert_allclose(xl.grad, xt.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(seen[0], xt.grad.numpy(), rtol=1e-12)


def test_under_checkpoint_the_gradients_are_the_same():
    x, w, b = randn(4, 3, seed=1), randn(5, 3, seed=2), randn(5, seed=3)

    def block(x, w, b):
        return Exp.apply(Linear.apply(x, w, b).tanh())

    results = []
    for wrap in (False, True):
        tensors = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in (x, w, b)]
        out = checkpoint(block, *tensors) if wrap else block(*tensors)
        (out * out).sum().backward()
        results.append([t.grad for t in tensors])
    for plain, checkpointed in zip(*results):
        np.testing.assert_allclose(checkpointed, plain, rtol=1e-12)


class _CustomDense(nn.Module):
    """A dense layer computed by the Linear custom function."""

    def __init__(self, features_in: int, features_out: int):
        super().__init__()
        rng = np.random.default_rng(0)
        self.weight = nn.Parameter(rng.standard_normal((features_out, features_in)) / np.sqrt(features_in))
        self.bias = nn.Parameter(np.zeros(features_out))

    def forward(self, x):
        return Linear.apply(x, self.weight, self.bias)


def test_a_model_using_a_custom_function_trains():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = (x @ rng.standard_normal((4, 2))).astype(np.float32)
    model = nn.Sequential(_CustomDense(4, 8), nn.Tanh(), _CustomDense(8, 2))
    trainer = Trainer(model, "mse", Adam(model, lr=0.02), metrics=(), verbose=0)
    history = trainer.fit((x, y), epochs=8, batch_size=16, seed=0)
    assert history["loss"][-1] < 0.3 * history["loss"][0]
