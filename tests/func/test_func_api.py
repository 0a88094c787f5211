"""lamina.func against torch.func: grad, grad_and_value, vjp, jvp, jacrev, jacfwd, hessian,
vmap (with per-sample gradients of a small MLP), functional_call and stack_module_state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.func as tf

import lamina
import lamina.functional as F
from helpers import assert_close, randn
from lamina import func, nn
from lamina.errors import ShapeError

RTOL = 1e-9


@pytest.fixture(autouse=True)
def _float64():
    """Arrays passed whole (not differentiated) become float64 tensors, as torch's do here."""
    lamina.set_default_dtype(np.float64)


def _np(t) -> np.ndarray:
    return t.detach().numpy() if torch.is_tensor(t) else np.asarray(t.numpy() if hasattr(t, "numpy") else t)


def close(ours, theirs, rtol=RTOL):
    """Compare nested results (tensors, tuples, dicts) of lamina and torch."""
    if isinstance(theirs, dict):
        assert set(ours) == set(theirs)
        for k in theirs:
            close(ours[k], theirs[k], rtol)
    elif isinstance(theirs, (tuple, list)):
        assert isinstance(ours, (tuple, list)) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            close(a, b, rtol)
    else:
        assert tuple(ours.shape) == tuple(theirs.shape)
        assert_close(_np(ours), _np(theirs), rtol)


# f(x, y) = sum(sin(x) * y^2) + sum(x)^2 / 2, and a vector function g(x) = tanh(W x) * x
def f_l(x, y):
    return (F.sin(x) * y * y).sum() + x.sum() * x.sum() * 0.5


def f_t(x, y):
    return (torch.sin(x) * y * y).sum() + x.sum() * x.sum() * 0.5


W = randn(3, 3, seed=5)


def g_l(x):
    return F.tanh(F.matmul(lamina.tensor(W, dtype=np.float64), x)) * x


def g_t(x):
    return torch.tanh(torch.tensor(W) @ x) * x


X, Y, V = randn(3), randn(3, seed=1), randn(3, seed=2)


def T(a):
    return torch.tensor(a)


# -- grad ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argnums", [0, 1, (0, 1), (1, 0), -1])
def test_grad_argnums(argnums):
    close(func.grad(f_l, argnums=argnums)(X, Y), tf.grad(f_t, argnums=argnums)(T(X), T(Y)))


def test_grad_of_an_unused_argument_is_zero():
    close(func.grad(lambda x, y: (x * x).sum(), argnums=(0, 1))(X, Y),
          tf.grad(lambda x, y: (x * x).sum(), argnums=(0, 1))(T(X), T(Y)))


def test_grad_has_aux_and_grad_and_value():
    def fl(x):
        return (x * x).sum(), {"double": x * 2}

    def ft(x):
        return (x * x).sum(), {"double": x * 2}

    g, aux = func.grad(fl, has_aux=True)(X)
    g_t, aux_t = tf.grad(ft, has_aux=True)(T(X))
    close(g, g_t)
    close(aux, aux_t)
    (g, (value, aux)) = func.grad_and_value(fl, has_aux=True)(X)
    (g_t, (value_t, aux_t)) = tf.grad_and_value(ft, has_aux=True)(T(X))
    close((g, value, aux), (g_t, value_t, aux_t))
    g, value = func.grad_and_value(f_l, argnums=(0, 1))(X, Y)
    close((g, value), tf.grad_and_value(f_t, argnums=(0, 1))(T(X), T(Y)))


def test_grad_of_dict_arguments():
    params = {"a": randn(2, 3), "b": randn(3, seed=1)}

    def fl(p, x):
        return (F.tanh(F.matmul(x, p["a"]) + p["b"]) ** 2).sum()

    def ft(p, x):
        return (torch.tanh(x @ p["a"] + p["b"]) ** 2).sum()

    x = randn(4, 2, seed=3)
    close(func.grad(fl)(params, x), tf.grad(ft)({k: T(v) for k, v in params.items()}, T(x)))


def test_jacobian_and_hessian_of_dict_arguments():
    params = {"a": randn(2, 2), "b": randn(2, seed=1)}

    def fl(p):
        return (F.tanh(F.matmul(p["a"], p["b"])) * p["b"]).sum()

    def ft(p):
        return (torch.tanh(p["a"] @ p["b"]) * p["b"]).sum()

    params_t = {k: T(v) for k, v in params.items()}
    close(func.hessian(fl)(params), tf.hessian(ft)(params_t))
    close(func.jacrev(lambda p: p["a"] * p["b"])(params), tf.jacrev(lambda p: p["a"] * p["b"])(params_t))


def test_grad_of_grad_and_hessians():
    def hl(x):
        return (F.sin(x) * x * x).sum()

    def ht(x):
        return (torch.sin(x) * x * x).sum()

    close(func.grad(lambda x: func.grad(hl)(x).sum())(X), tf.grad(lambda x: tf.grad(ht)(x).sum())(T(X)))
    close(func.hessian(hl)(X), tf.hessian(ht)(T(X)))
    close(func.jacrev(func.grad(hl))(X), tf.hessian(ht)(T(X)))
    close(func.hessian(f_l, argnums=(0, 1))(X, Y), tf.hessian(f_t, argnums=(0, 1))(T(X), T(Y)))


def test_grad_result_is_differentiable_with_respect_to_outer_tensors():
    w = lamina.tensor(randn(3, seed=4), requires_grad=True, dtype=np.float64)
    w_t = T(randn(3, seed=4)).requires_grad_()
    g = func.grad(lambda x: (F.sin(x * w)).sum())(X)
    g_t = tf.grad(lambda x: (torch.sin(x * w_t)).sum())(T(X))
    close(g, g_t)
    (g * g).sum().backward()
    (g_t * g_t).sum().backward()
    assert_close(w.grad, w_t.grad.numpy(), RTOL)


# -- vjp, jvp, Jacobians ------------------------------------------------------------------------------
def test_vjp_single_and_tuple_outputs():
    out, vjp_fn = func.vjp(g_l, X)
    out_t, vjp_t = tf.vjp(g_t, T(X))
    close(out, out_t)
    close(vjp_fn(V), vjp_t(T(V)))
    close(vjp_fn(Y), vjp_t(T(Y)))                         # may be called again

    def two_l(x, y):
        return x * y, F.exp(x).sum()

    def two_t(x, y):
        return x * y, torch.exp(x).sum()

    out, vjp_fn, aux = func.vjp(lambda x, y: (two_l(x, y), x.sum()), X, Y, has_aux=True)
    out_t, vjp_t, aux_t = tf.vjp(lambda x, y: (two_t(x, y), x.sum()), T(X), T(Y), has_aux=True)
    ct = (V, np.float64(0.7))
    close(vjp_fn(ct), vjp_t((T(V), torch.tensor(0.7, dtype=torch.float64))))
    close(aux, aux_t)


def test_jvp():
    out, tangent = func.jvp(g_l, (X,), (V,))
    out_t, tangent_t = tf.jvp(g_t, (T(X),), (T(V),))
    close((out, tangent), (out_t, tangent_t))
    close(func.jvp(f_l, (X, Y), (V, X))[1], tf.jvp(f_t, (T(X), T(Y)), (T(V), T(X)))[1])


@pytest.mark.parametrize("transform", ["jacrev", "jacfwd"])
def test_jacobians(transform):
    ours, theirs = getattr(func, transform), getattr(tf, transform)
    close(ours(g_l)(X), theirs(g_t)(T(X)))
    close(ours(lambda x, y: x * y * y, argnums=(0, 1))(X, Y),
          theirs(lambda x, y: x * y * y, argnums=(0, 1))(T(X), T(Y)))
    close(ours(lambda x: (x * 2, x.sum()))(X), theirs(lambda x: (x * 2, x.sum()))(T(X)))
    m = randn(2, 3, seed=7)
    close(ours(lambda a: F.sin(a) * a)(m), theirs(lambda a: torch.sin(a) * a)(T(m)))


# -- a small MLP ---------------------------------------------------------------------------------------
def _mlp():
    model = nn.Sequential(nn.Dense(4), nn.Tanh(), nn.Dense(2))
    model.build((None, 3))
    params = {k: p.detach() for k, p in model.named_parameters()}
    names = list(params)

    def torch_mlp(p, x):
        h = torch.tanh(x @ p[names[0]] + p[names[1]])
        return h @ p[names[2]] + p[names[3]]

    return model, params, torch_mlp


def test_per_sample_gradients_of_an_mlp():
    model, params, torch_mlp = _mlp()
    x, y = randn(5, 3, seed=1), randn(5, 2, seed=2)
    params = {k: lamina.tensor(v.numpy().astype(np.float64), dtype=np.float64) for k, v in params.items()}

    def loss_l(p, xi, yi):
        out = func.functional_call(model, p, (F.reshape(xi, (1, 3)),))
        return ((out - F.reshape(yi, (1, 2))) ** 2).sum()

    def loss_t(p, xi, yi):
        return ((torch_mlp(p, xi[None]) - yi[None]) ** 2).sum()

    ours = func.vmap(func.grad(loss_l), in_dims=(None, 0, 0))(params, x, y)
    theirs = tf.vmap(tf.grad(loss_t), in_dims=(None, 0, 0))({k: T(v.numpy()) for k, v in params.items()}, T(x), T(y))
    close(ours, theirs)
    # and lamina's own per-sample gradients (outer products from one batched pass)
    for name, p in model.named_parameters():
        p.data = params[name].data.copy()
    own = nn.per_sample_gradients(model, lambda out, target: ((out - lamina.tensor(target)) ** 2).sum(), x, y)
    for name in params:
        assert_close(ours[name].numpy(), own[name], 1e-7)


def test_jacobian_and_hessian_of_an_mlp_with_respect_to_its_input():
    model, params, torch_mlp = _mlp()
    p64 = {k: v.numpy().astype(np.float64) for k, v in params.items()}
    x = randn(3, seed=3)

    def net_l(xi):
        return F.reshape(func.functional_call(model, {k: lamina.tensor(v, dtype=np.float64) for k, v in p64.items()},
                                              (F.reshape(xi, (1, 3)),)), (2,))

    def net_t(xi):
        return torch_mlp({k: T(v) for k, v in p64.items()}, xi[None])[0]

    close(func.jacrev(net_l)(x), tf.jacrev(net_t)(T(x)))
    close(func.hessian(lambda xi: net_l(xi).sum())(x), tf.hessian(lambda xi: net_t(xi).sum())(T(x)))


# -- vmap -----------------------------------------------------------------------------------------------
def test_vmap_axes_and_nesting():
    a, b = randn(4, 3), randn(3, 4, seed=1)
    close(func.vmap(g_l)(a), tf.vmap(g_t)(T(a)))
    close(func.vmap(lambda x, y: x * y, in_dims=(0, 1))(a, b), tf.vmap(lambda x, y: x * y, in_dims=(0, 1))(T(a), T(b)))
    close(func.vmap(lambda x, y: x * y, in_dims=(0, None), out_dims=1)(a, b[:, 0]),
          tf.vmap(lambda x, y: x * y, in_dims=(0, None), out_dims=1)(T(a), T(b[:, 0])))
    outer_l = func.vmap(func.vmap(lambda x, y: x * y, in_dims=(None, 0)), in_dims=(0, None))
    outer_t = tf.vmap(tf.vmap(lambda x, y: x * y, in_dims=(None, 0)), in_dims=(0, None))
    close(outer_l(a[:, 0], a[0]), outer_t(T(a[:, 0]), T(a[0])))
    close(func.vmap(lambda x: (x.sum(), x * 2))(a), tf.vmap(lambda x: (x.sum(), x * 2))(T(a)))
    close(func.vmap(lambda x: (x.sum(), x * 2), out_dims=(0, 1))(a),
          tf.vmap(lambda x: (x.sum(), x * 2), out_dims=(0, 1))(T(a)))
    p = {"w": randn(4, 3, seed=2), "b": randn(3, seed=3)}
    close(func.vmap(lambda q: q["w"] * q["b"], in_dims=({"w": 0, "b": None},))(p),
          tf.vmap(lambda q: q["w"] * q["b"], in_dims=({"w": 0, "b": None},))({k: T(v) for k, v in p.items()}))


def test_gradients_flow_through_vmap():
    a = randn(4, 3)
    x = lamina.tensor(a, requires_grad=True, dtype=np.float64)
    x_t = T(a).requires_grad_()
    (func.vmap(g_l)(x) ** 2).sum().backward()
    (tf.vmap(g_t)(x_t) ** 2).sum().backward()
    assert_close(x.grad, x_t.grad.numpy(), RTOL)


# -- modules ---------------------------------------------------------------------------------------------
def test_functional_call_and_stack_module_state_ensemble():
    models = [nn.Sequential(nn.Dense(3), nn.ReLU(), nn.Dense(2)) for _ in range(3)]
    for m in models:
        m.build((None, 4))
    params, buffers = func.stack_module_state(models)
    assert all(p.requires_grad and p.shape[0] == 3 for p in params.values())
    x = lamina.tensor(randn(5, 4).astype(np.float32))

    def run(p, b, xi):
        return func.functional_call(models[0], (p, b), (xi,))

    out = func.vmap(run, in_dims=(0, 0, None))(params, buffers, x)
    expected = np.stack([m(x).numpy() for m in models])
    assert_close(out.numpy(), expected, 1e-5)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in params.values())
    names = [n for n, _ in models[0].named_parameters()]
    with pytest.raises(KeyError, match="strict=True"):
        func.functional_call(models[0], {names[0]: params[names[0]].data[0]}, x, strict=True)
    with pytest.raises(ValueError, match="more than one dict"):
        func.functional_call(models[0], ({names[0]: params[names[0]].data[0]},) * 2, x)
    with pytest.raises(ShapeError, match="stack_module_state: model 1"):
        other = nn.Sequential(nn.Dense(3), nn.ReLU(), nn.Dense(5))
        other.build((None, 4))
        func.stack_module_state([models[0], other])


# -- errors ------------------------------------------------------------------------------------------------
def test_errors():
    with pytest.raises(ShapeError, match=r"grad: the function must return one floating value.*shape \(3,\)"):
        func.grad(g_l)(X)
    with pytest.raises(ValueError, match=r"argnums 2 out of range for a call with 2"):
        func.grad(f_l, argnums=2)(X, Y)
    with pytest.raises(TypeError, match=r"argnums must be an int or a non-empty tuple"):
        func.grad(f_l, argnums=[0])(X, Y)
    with pytest.raises(TypeError, match=r"has_aux=True.*pair"):
        func.grad(lambda x: x.sum(), has_aux=True)(X)
    with pytest.raises(TypeError, match=r"argument 1 has dtype int64; a derivative needs floating point"):
        func.grad(lambda x, n: (x * n).sum(), argnums=1)(X, np.arange(3))
    with pytest.raises(ShapeError, match=r"vmap: the mapped axes have different lengths \[3, 4\]"):
        func.vmap(lambda x, y: x * y)(randn(4, 2), randn(3, 2))
    with pytest.raises(ValueError, match=r"in_dims \(0,\) has 1 entries for 2 arguments"):
        func.vmap(lambda x, y: x, in_dims=(0,))(randn(4, 2), randn(4, 2))
    with pytest.raises(ValueError, match=r"no argument is mapped"):
        func.vmap(lambda x: x, in_dims=None)(randn(4))
    with pytest.raises(ShapeError, match=r"jvp: tangent 0 has shape \(2,\)"):
        func.jvp(g_l, (X,), (randn(2),))
    with pytest.raises(ValueError, match=r"jvp: 1 primals but 2 tangents"):
        func.jvp(g_l, (X,), (V, V))
