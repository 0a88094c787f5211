"""Higher-order derivatives: ``grad(..., create_graph=True)``, ``gradgradcheck``, ``hvp``,
``hessian`` and ``jvp``, each core op's differentiable backward checked against PyTorch's
double backward and against centred differences of its gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
from helpers import (
    assert_close,
    check_second_derivatives,
    compare_double_backward_with_torch,
    nonzero,
    positive,
    randn,
)
from lamina import ShapeError
from lamina.autograd import Function, differentiable_ops, grad, hessian, hvp, jvp
from lamina.nn.dense import linear

LABELS = np.array([2, 0, 1])
ONE_HOT = np.eye(4)[[1, 3, 0]]
SOFT = np.array([[0.2, 0.3, 0.4, 0.1], [0.0, 0.5, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25]])
TEACHER = randn(3, 4, seed=7)
BINARY = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
COND = np.array([[True, False, True], [False, False, True]])

# name: (lamina function, torch function, inputs)
CASES = {
    "add_broadcast": (lambda a, b: (a + b) ** 2, lambda a, b: (a + b) ** 2, (randn(2, 3), randn(3, seed=1))),
    "sub_broadcast": (lambda a, b: (a - b) ** 3, lambda a, b: (a - b) ** 3, (randn(2, 3), randn(2, 1, seed=1))),
    "mul_broadcast": (lambda a, b: a * b * a, lambda a, b: a * b * a, (randn(2, 3), randn(1, 3, seed=1))),
    "div": (lambda a, b: a / b, lambda a, b: a / b, (randn(2, 3), nonzero(2, 3, seed=1))),
    "neg": (lambda a: -(a**3), lambda a: -(a**3), (randn(4),)),
    "pow_scalar": (lambda a: a**3 + a**0.5 + a**2, lambda a: a**3 + a**0.5 + a**2, (positive(5),)),
    "pow_tensor": (lambda a, b: a**b, lambda a, b: a**b, (positive(2, 3), randn(2, 3, seed=1))),
    "matmul": (lambda a, b: a @ b, lambda a, b: a @ b, (randn(3, 4), randn(4, 2, seed=1))),
    "matmul_batched": (lambda a, b: a @ b, lambda a, b: a @ b, (randn(2, 3, 4), randn(4, 2, seed=1))),
    "matmul_vectors": (lambda a, b, c: (a @ b) * (b @ c), lambda a, b, c: (a @ b) * (b @ c),
                       (randn(3), randn(3, 3, seed=1), randn(3, seed=2))),
    "exp": (lambda a: a.exp(), torch.exp, (randn(2, 3),)),
    "log": (lambda a: a.log(), torch.log, (positive(2, 3),)),
    "sqrt": (lambda a: a.sqrt(), torch.sqrt, (positive(2, 3),)),
    "abs": (lambda a: a.abs() * a, lambda a: a.abs() * a, (nonzero(2, 3),)),
    "clip": (lambda a: F.clip(a, -0.5, 0.7) * a, lambda a: a.clamp(-0.5, 0.7) * a, (randn(3, 4),)),
    "where": (lambda a, b: F.where(COND, a * a, b * b * b), lambda a, b: torch.where(torch.tensor(COND), a * a, b**3),
              (randn(2, 3), randn(3, seed=1))),
    "maximum": (lambda a, b: F.maximum(a * a, b), lambda a, b: torch.maximum(a * a, b),
                (randn(2, 3), randn(2, 3, seed=3))),
    "minimum": (lambda a, b: F.minimum(a, b * b), lambda a, b: torch.minimum(a, b * b),
                (randn(2, 3), randn(2, 3, seed=3))),
    "sigmoid": (F.sigmoid, torch.sigmoid, (randn(2, 3),)),
    "tanh": (F.tanh, torch.tanh, (randn(2, 3),)),
    "relu": (lambda a, w: F.relu(a @ w) @ w.T, lambda a, w: torch.relu(a @ w) @ w.T,
             (nonzero(2, 3), randn(3, 3, seed=1))),
    "leaky_relu": (lambda a, w: F.leaky_relu(a @ w, 0.1) * w.sum(), lambda a, w: TF.leaky_relu(a @ w, 0.1) * w.sum(),
                   (nonzero(2, 3), randn(3, 3, seed=1))),
    "elu": (F.elu, TF.elu, (nonzero(2, 3),)),
    "selu": (F.selu, TF.selu, (nonzero(2, 3),)),
    "softmax": (lambda a: F.softmax(a, axis=0), lambda a: torch.softmax(a, 0), (randn(3, 4),)),
    "log_softmax": (F.log_softmax, lambda a: torch.log_softmax(a, -1), (randn(3, 4),)),
    "sum_mean": (lambda a: a.sum(axis=1) ** 2 + a.mean(axis=0, keepdims=True).sum() ** 3,
                 lambda a: a.sum(1) ** 2 + a.mean(0, keepdim=True).sum() ** 3, (randn(3, 4),)),
    "max_min": (lambda a: a.max(axis=1) ** 2 + a.min() * a.sum(), lambda a: a.amax(1) ** 2 + a.min() * a.sum(),
                (randn(3, 4),)),
    "reshape_transpose": (lambda a: (a.reshape(4, 3).T * a) ** 2, lambda a: (a.reshape(4, 3).T * a) ** 2,
                          (randn(3, 4),)),
    "getitem": (lambda a: a[1:, ::2] ** 3 + a[[0, 0, 2], 1].sum(), lambda a: a[1:, ::2] ** 3 + a[[0, 0, 2], 1].sum(),
                (randn(3, 4),)),
    "broadcast_to": (lambda a: F.broadcast_to(a, (2, 3)) ** 2, lambda a: a.expand(2, 3) ** 2, (randn(3),)),
    "concat_stack": (lambda a, b: F.stack([F.concat([a, b], axis=1) ** 2, F.concat([b, a], axis=1)], axis=0),
                     lambda a, b: torch.stack([torch.cat([a, b], 1) ** 2, torch.cat([b, a], 1)], 0),
                     (randn(2, 3), randn(2, 3, seed=1))),
    "pad": (lambda a: F.pad(a, ((1, 0), (0, 2))) ** 2, lambda a: TF.pad(a, (0, 2, 1, 0)) ** 2, (randn(2, 3),)),
    "pad_value": (lambda a: F.pad(a, ((1, 0), (0, 2)), value=2.0) ** 3,
                  lambda a: TF.pad(a, (0, 2, 1, 0), value=2.0) ** 3, (randn(2, 3),)),
    "gaussian_kl": (lambda mu, v: F.gaussian_kl(mu, v, reduction="mean"),
                    lambda mu, v: (-0.5 * (1 + v - mu**2 - v.exp())).sum(1).mean(), (randn(3, 2), randn(3, 2, seed=1))),
    "bce_with_logits": (lambda z: F.binary_cross_entropy(z, BINARY, from_logits=True),
                        lambda z: TF.binary_cross_entropy_with_logits(z, torch.tensor(BINARY)),
                        (randn(2, 3),)),
    "cross_entropy_labels": (lambda z: F.categorical_cross_entropy(z, LABELS, from_logits=True),
                             lambda z: TF.cross_entropy(z, torch.tensor(LABELS)), (randn(3, 4),)),
    "cross_entropy_none": (lambda z: F.categorical_cross_entropy(z, LABELS, from_logits=True, reduction="none"),
                           lambda z: TF.cross_entropy(z, torch.tensor(LABELS), reduction="none"), (randn(3, 4),)),
    "cross_entropy_one_hot": (lambda z: F.categorical_cross_entropy(z, ONE_HOT, from_logits=True, reduction="sum"),
                              lambda z: TF.cross_entropy(z, torch.tensor(ONE_HOT), reduction="sum"), (randn(3, 4),)),
    "cross_entropy_soft": (lambda z: F.categorical_cross_entropy(z, SOFT, from_logits=True),
                           lambda z: TF.cross_entropy(z, torch.tensor(SOFT)), (randn(3, 4),)),
    "distillation": (lambda s: F.distillation_loss(s, TEACHER, LABELS, temperature=3.0, alpha=0.7),
                     lambda s: 0.7 * 9.0 * TF.kl_div(torch.log_softmax(s / 3.0, -1), torch.softmax(
                         torch.tensor(TEACHER) / 3.0, -1), reduction="batchmean") + 0.3 * TF.cross_entropy(
                         s, torch.tensor(LABELS)), (randn(3, 4),)),
    "linear": (lambda x, w, b: linear(x, w, b).tanh(), lambda x, w, b: torch.tanh(x @ w + b),
               (randn(3, 4), randn(4, 2, seed=1), randn(2, seed=2))),
    "linear_3d_no_bias": (lambda x, w: linear(x, w).sigmoid(), lambda x, w: torch.sigmoid(x @ w),
                          (randn(2, 3, 4), randn(4, 2, seed=1))),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_double_backward_matches_torch(name):
    ours, theirs, inputs = CASES[name]
    compare_double_backward_with_torch(ours, theirs, *inputs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradgradcheck(name):
    ours, _, inputs = CASES[name]
    assert check_second_derivatives(ours, *inputs)


def test_gradgradcheck_catches_a_wrong_second_derivative():
    class WrongSquare(Function):           # right gradient, wrong derivative of it
        def forward(self, a):
            return a * a

        def backward(self, dy):
            return (dy * 2 * self.inputs[0].data,)

        def backward_graph(self, dy):
            return (dy * 3 * self.inputs[0] - self.inputs[0].data,)

    x = lamina.tensor(randn(3), requires_grad=True, dtype=np.float64)
    assert lamina.gradcheck(WrongSquare.apply, x)
    with pytest.raises(lamina.errors.GradcheckError):
        lamina.autograd.gradgradcheck(WrongSquare.apply, x)


def test_create_graph_gives_the_same_first_derivatives_as_tensors():
    x = lamina.tensor(randn(3, 4), requires_grad=True, dtype=np.float64)
    w = lamina.tensor(randn(4, 3, seed=1), requires_grad=True, dtype=np.float64)
    plain = grad(F.categorical_cross_entropy(linear(x, w).tanh(), LABELS, from_logits=True), [x, w])
    graphed = grad(F.categorical_cross_entropy(linear(x, w).tanh(), LABELS, from_logits=True), [x, w],
                   create_graph=True)
    for p, g in zip(plain, graphed):
        assert isinstance(g, lamina.Tensor) and g.requires_grad
        np.testing.assert_allclose(g.numpy(), p, rtol=1e-13)
    assert x.grad is None and w.grad is None


def test_third_derivative_of_tanh():
    x = lamina.tensor(randn(5), requires_grad=True, dtype=np.float64)
    (d1,) = grad(F.tanh(x).sum(), x, create_graph=True)
    (d2,) = grad(d1.sum(), x, create_graph=True)
    (d3,) = grad(d2.sum(), x)
    t = np.tanh(x.numpy())
    np.testing.assert_allclose(d1.numpy(), 1 - t**2, rtol=1e-12)
    np.testing.assert_allclose(d2.numpy(), -2 * t * (1 - t**2), rtol=1e-12)
    np.testing.assert_allclose(d3, -2 * (1 - t**2) * (1 - 3 * t**2), rtol=1e-10)


def test_inplace_activation_of_a_dense_layer_keeps_second_derivatives_right():
    layer = lamina.nn.Dense(3, activation="tanh")
    x = lamina.tensor(randn(4, 5), requires_grad=True, dtype=np.float64)
    layer.build(x.shape)
    layer.to(np.float64)
    w, b = layer.weight.data.copy(), layer.bias.data.copy()
    xt = torch.tensor(x.numpy(), requires_grad=True)
    wt, bt = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
    (gx,) = grad((layer(x) ** 2).sum(), x, create_graph=True)
    (gxt,) = torch.autograd.grad((torch.tanh(xt @ wt + bt) ** 2).sum(), xt, create_graph=True)
    assert_close(gx.numpy(), gxt.detach().numpy(), 1e-12)
    penalty = (gx**2).sum()
    penalty.backward()
    (gxt**2).sum().backward()
    assert_close(layer.weight.grad, wt.grad.numpy(), 1e-11, "weight gradient of the penalty")
    assert_close(layer.bias.grad, bt.grad.numpy(), 1e-11, "bias gradient of the penalty")
    assert_close(x.grad, xt.grad.numpy(), 1e-11, "input gradient of the penalty")


def test_gradient_penalty_step_matches_torch():
    """A WGAN-GP critic step: mean D(fake) - mean D(real) + 10 (||dD/dx|| - 1)^2 at
    interpolated points, differentiated with respect to the critic's weights."""
    rng = np.random.default_rng(0)
    real, fake, eps = rng.normal(size=(6, 4)), rng.normal(size=(6, 4)), rng.uniform(size=(6, 1))
    weights = [rng.normal(size=(4, 8)) * 0.5, rng.normal(size=8) * 0.1, rng.normal(size=(8, 1)) * 0.5, np.zeros(1)]

    def critic(x, w1, b1, w2, b2, lib):
        h = F.leaky_relu(linear(x, w1, b1), 0.2) if lib == "lamina" else TF.leaky_relu(x @ w1 + b1, 0.2)
        return linear(h, w2, b2) if lib == "lamina" else h @ w2 + b2

    def cost(lib, params):
        make = (lambda a, g=False: lamina.tensor(a, requires_grad=g, dtype=np.float64)) if lib == "lamina" else \
            (lambda a, g=False: torch.tensor(a, requires_grad=g))
        mixed = make(eps * real + (1 - eps) * fake, True)
        d_mixed = critic(mixed, *params, lib)
        autograd = grad if lib == "lamina" else torch.autograd.grad
        (g,) = autograd(d_mixed.sum(), [mixed], create_graph=True)
        norms = (g * g).sum(axis=1).sqrt() if lib == "lamina" else (g * g).sum(1).sqrt()
        gap = critic(make(fake), *params, lib).mean() - critic(make(real), *params, lib).mean()
        return gap + 10 * ((norms - 1) ** 2).mean()

    ours = [lamina.tensor(w, requires_grad=True, dtype=np.float64) for w in weights]
    theirs = [torch.tensor(w, requires_grad=True) for w in weights]
    cost("lamina", ours).backward()
    cost("torch", theirs).backward()
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert_close(a.grad, b.grad.numpy(), 1e-10, f"gradient of parameter {k}")


def test_one_inner_step_of_maml_matches_torch():
    """Meta-learning: the loss after one SGD step w' = w - lr dL/dw, differentiated with
    respect to the starting w through the step (second derivatives of L)."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 1))
    w0 = rng.normal(size=(3, 1))

    w = lamina.tensor(w0, requires_grad=True, dtype=np.float64)
    (g,) = grad(((F.tanh(x @ w) - y) ** 2).mean(), w, create_graph=True)
    adapted = w - 0.5 * g
    ((F.tanh(x @ adapted) - y) ** 2).mean().backward()

    wt = torch.tensor(w0, requires_grad=True)
    xt, yt = torch.tensor(x), torch.tensor(y)
    (gt,) = torch.autograd.grad(((torch.tanh(xt @ wt) - yt) ** 2).mean(), wt, create_graph=True)
    ((torch.tanh(xt @ (wt - 0.5 * gt)) - yt) ** 2).mean().backward()
    assert_close(w.grad, wt.grad.numpy(), 1e-12)


def _torch_inputs(arrays):
    return tuple(torch.tensor(a) for a in arrays)


def test_hvp_hessian_and_jvp_match_torch_functional():
    x, w = randn(2, 3), randn(3, 2, seed=1)
    vx, vw = randn(2, 3, seed=2), randn(3, 2, seed=3)

    def scalar(lib):
        tanh = F.tanh if lib == "lamina" else torch.tanh
        return lambda a, b: (tanh(a @ b) ** 2).sum() + (a * a).sum() * b.sum()

    value, products = hvp(scalar("lamina"), (x, w), (vx, vw))
    value_t, products_t = torch.autograd.functional.hvp(scalar("torch"), _torch_inputs((x, w)), _torch_inputs((vx, vw)))
    assert_close(value, value_t.numpy(), 1e-12)
    for a, b in zip(products, products_t):
        assert_close(a, b.numpy(), 1e-11, "Hessian-vector product")

    blocks = hessian(scalar("lamina"), (x, w))
    blocks_t = torch.autograd.functional.hessian(scalar("torch"), _torch_inputs((x, w)))
    for i in range(2):
        for j in range(2):
            assert blocks[i][j].shape == tuple(blocks_t[i][j].shape)
            assert_close(blocks[i][j], blocks_t[i][j].numpy(), 1e-11, f"Hessian block {i}{j}")

    single = hessian(lambda a: (F.sigmoid(a) * a).sum(), x)
    single_t = torch.autograd.functional.hessian(lambda a: (torch.sigmoid(a) * a).sum(), torch.tensor(x))
    assert_close(single, single_t.numpy(), 1e-12, "Hessian")

    value, product = jvp(lambda a, b: F.softmax(a @ b), (x, w), (vx, vw))
    _, product_t = torch.autograd.functional.jvp(lambda a, b: torch.softmax(a @ b, -1), _torch_inputs((x, w)),
                                                 _torch_inputs((vx, vw)))
    assert_close(product, product_t.numpy(), 1e-12, "Jacobian-vector product")
    assert value.shape == (2, 2)


def test_hessian_of_a_quadratic_is_its_matrix():
    a = randn(4, 4)
    sym = a + a.T
    h = hessian(lambda x: 0.5 * (x @ lamina.tensor(sym, dtype=np.float64) @ x), randn(4, seed=1))
    np.testing.assert_allclose(h, sym, rtol=1e-12)
    # a linear function: its gradient is a constant, every second derivative 0
    assert not np.any(hessian(lambda x: (x * 3.0).sum(), randn(3)))
    assert not np.any(hvp(lambda x: (x * 3.0).sum(), randn(3), randn(3, seed=1))[1])


def test_helper_errors_name_the_function_and_shapes():
    with pytest.raises(ValueError, match=r"hvp: fn must return a scalar.*\(2, 3\)"):
        hvp(lambda a: a * 2, randn(2, 3), randn(2, 3))
    with pytest.raises(ShapeError, match=r"hvp: v\[0\] has shape \(3,\), input 0 has shape \(2, 3\)"):
        hvp(lambda a: a.sum(), randn(2, 3), randn(3))
    with pytest.raises(ValueError, match="jvp: 2 inputs but 1 vectors"):
        jvp(lambda a, b: a * b, (randn(2), randn(2)), (randn(2),))
    with pytest.raises(TypeError, match="hessian: fn must return a Tensor"):
        hessian(lambda a: 1.0, randn(2))


def test_an_op_without_a_differentiable_backward_is_named():
    class Cube(Function):
        def forward(self, a):
            self.a = a
            return a**3

        def backward(self, dy):
            return (3 * dy * self.a**2,)

    x = lamina.tensor(randn(3), requires_grad=True)
    out = Cube.apply(x).sum()
    with pytest.raises(RuntimeError, match="create_graph=True.*Cube has no differentiable backward"):
        grad(out, x, create_graph=True)
    # the ordinary gradient still works on the same graph
    np.testing.assert_allclose(grad(out, x)[0], 3 * x.numpy() ** 2, rtol=1e-6)
    names = differentiable_ops()
    assert {"MatMul", "Tanh", "SoftmaxCrossEntropy", "LinearFunction", "LinearMap"} <= set(names)
    assert "Cube" not in names


def test_create_graph_after_the_graph_was_freed_says_so():
    x = lamina.tensor(randn(3), requires_grad=True)
    y = (x * x).sum()
    grad(y, x)                                  # frees the saved arrays
    with pytest.raises(RuntimeError, match="create_graph=True.*freed.*retain_graph=True"):
        grad(y, x, create_graph=True)


def test_a_graph_made_with_create_graph_survives_a_later_backward():
    x = lamina.tensor(randn(3), requires_grad=True, dtype=np.float64)
    y = F.tanh(x).sum()
    (g,) = grad(y, x, create_graph=True)
    y.backward()                                 # frees the forward graph's saved arrays
    (second,) = grad(g.sum(), x)                 # the gradient's own graph holds what it needs
    t = np.tanh(x.numpy())
    np.testing.assert_allclose(second, -2 * t * (1 - t**2), rtol=1e-12)


def test_grad_output_on_the_graph_is_differentiated_too():
    x = lamina.tensor(randn(3), requires_grad=True, dtype=np.float64)
    u = lamina.tensor(randn(3, seed=1), requires_grad=True, dtype=np.float64)
    (g,) = grad(F.sigmoid(x), x, grad_output=u, create_graph=True)     # g = u * s (1 - s)
    (du,) = grad(g.sum(), u)
    s = 1 / (1 + np.exp(-x.numpy()))
    np.testing.assert_allclose(du, s * (1 - s), rtol=1e-12)


def test_a_tensor_hook_sees_the_gradient_under_create_graph():
    x = lamina.tensor(randn(3), requires_grad=True, dtype=np.float64)
    h = x * x
    seen = []
    h.register_hook(lambda g: seen.append(g))              # a tensor under create_graph, as torch's
    (g,) = grad((h * 3.0).sum(), x, create_graph=True)
    assert isinstance(seen[0], lamina.Tensor)
    np.testing.assert_allclose(seen[0].numpy(), np.full(3, 3.0))
    np.testing.assert_allclose(g.numpy(), 6 * x.numpy())


# -- ops linear in their input: the VJP recorded as the adjoint map ---------------------------
IMAGES = randn(2, 4, 5, 2)
LINEAR_IMAGE_OPS = {
    "flip": lambda x: lamina.functional.image.flip(x, flip_w=[True, False], flip_h=[True, True]),
    "crop": lambda x: lamina.functional.image.crop(x, [[0, 1], [2, 0]], (3, 4), padding=1),
    "rotate": lambda x: lamina.functional.image.rotate(x, [30.0, -75.0]),
}


@pytest.mark.parametrize("name", sorted(LINEAR_IMAGE_OPS))
def test_linear_image_ops_have_second_derivatives(name):
    op = LINEAR_IMAGE_OPS[name]
    assert check_second_derivatives(lambda x: op(x) ** 3, IMAGES)


def test_affine_grid_second_derivatives_match_torch():
    theta = randn(2, 2, 3, seed=4)
    compare_double_backward_with_torch(
        lambda t: F.affine_grid(t, (2, 3, 4, 1), align_corners=False) ** 3,
        lambda t: TF.affine_grid(t, [2, 1, 3, 4], align_corners=False) ** 3, theta)


def test_checkpointed_block_has_the_same_second_derivatives():
    block = lamina.nn.Sequential(lamina.nn.Dense(5, activation="tanh"), lamina.nn.Dense(3, activation="tanh"))
    x = lamina.tensor(randn(4, 3), requires_grad=True, dtype=np.float64)
    block.build(x.shape)
    block.to(np.float64)
    first = block.parameters()[0]
    results = []
    for run in (lambda t: lamina.autograd.checkpoint(block, t), block):
        (g,) = grad((run(x) ** 2).sum(), x, create_graph=True)
        results.append((g.numpy(), grad((g * g).sum(), first)[0]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-13)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12)


def test_backward_with_create_graph_points_to_grad():
    x = lamina.tensor(randn(3), requires_grad=True)
    with pytest.raises(TypeError, match=r"create_graph=True.*autograd.grad\(output, inputs, create_graph=True\)"):
        (x * x).sum().backward(create_graph=True)
    assert x.grad is None


@pytest.mark.parametrize("mode, padding_mode, align_corners", [
    ("bilinear", "zeros", False), ("bilinear", "border", True), ("bilinear", "reflection", False),
    ("bilinear", "reflection", True), ("nearest", "zeros", False)])
def test_grid_sample_second_derivatives_match_torch(mode, padding_mode, align_corners):
    x = randn(2, 4, 5, 2)
    grid = np.random.default_rng(3).uniform(-1.3, 1.3, (2, 3, 4, 2))      # some points outside

    def ours(x, g):
        return F.grid_sample(x, g, mode=mode, padding_mode=padding_mode, align_corners=align_corners) ** 2

    def theirs(x, g):
        out = TF.grid_sample(x.permute(0, 3, 1, 2), g, mode=mode, padding_mode=padding_mode,
                             align_corners=align_corners)
        return out.permute(0, 2, 3, 1) ** 2

    compare_double_backward_with_torch(ours, theirs, x, grid)
    assert check_second_derivatives(ours, x, grid)
