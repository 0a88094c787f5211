"""DARTS's candidate operations, MixedOp and the search cell against a PyTorch
re-implementation (float64, NHWC <-> NCHW at the boundary): outputs, input and weight
gradients."""

import numpy as np
import pytest
import torch
from nas_torch_mirror import TorchMirror, from_nchw, to_nchw

import lamina
from helpers import check_gradients, randn
from lamina.nn.nas import (
    PRIMITIVES,
    FactorizedReduce,
    MixedOp,
    NASConv,
    SearchCell,
    make_operation,
)


def _compare(module, x, *extra_lamina, extra_torch=(), rtol=1e-9):
    """Output, dJ/dx and dJ/dw of ``module`` on NHWC ``x`` equal the torch mirror's."""
    mirror = TorchMirror(module)
    xs = x if isinstance(x, tuple) else (x,)
    ours_in = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in xs]
    theirs_in = [to_nchw(a) for a in xs]
    out = module(*ours_in, *extra_lamina)
    expected = mirror(module, *theirs_in, *extra_torch)
    np.testing.assert_allclose(out.numpy(), from_nchw(expected), rtol=rtol, atol=1e-10)
    up = randn(*out.shape, seed=7)
    (out * lamina.tensor(up, dtype=np.float64)).sum().backward()
    (expected * to_nchw(up).detach()).sum().backward()
    for a, b in zip(ours_in, theirs_in):
        np.testing.assert_allclose(a.grad, from_nchw(b.grad), rtol=1e-7, atol=1e-9)
    for p in mirror.params:
        t = mirror.tensors[id(p)]
        if t.grad is None:
            assert p.grad is None or not np.any(p.grad)
        else:
            np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-7, atol=1e-9)
    return out


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", PRIMITIVES)
def test_each_operation_matches_torch(name, stride):
    lamina.set_default_dtype(np.float64)
    op = make_operation(name, 4, stride, affine=True)
    out = _compare(op, randn(2, 8, 8, 4, seed=1))
    assert out.shape == ((2, 8, 8, 4) if stride == 1 else (2, 4, 4, 4))


@pytest.mark.parametrize("name", ["max_pool_3x3", "avg_pool_3x3", "dil_conv_5x5", "skip_connect", "none"])
def test_reducing_operations_on_odd_sizes_match_torch(name):
    lamina.set_default_dtype(np.float64)
    out = _compare(make_operation(name, 4, 2, search=True), randn(2, 7, 5, 4, seed=2))
    assert out.shape == (2, 4, 3, 4)


def test_factorized_reduce_shapes():
    lamina.set_default_dtype(np.float64)
    for h, w in [(8, 8), (7, 7), (5, 8), (1, 3)]:
        layer = FactorizedReduce(3, 6)
        out = _compare(layer, randn(2, h, w, 3, seed=h))
        assert out.shape == (2, -(-h // 2), -(-w // 2), 6)
    with pytest.raises(ValueError, match="c_out must be even"):
        FactorizedReduce(3, 5)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", PRIMITIVES[1:])
def test_operation_gradients_float64(name, stride):
    lamina.set_default_dtype(np.float64)
    op = make_operation(name, 2, stride, search=True)
    assert check_gradients(op, randn(2, 5, 5, 2, seed=8))


def test_dilated_strided_convolution_gradients():
    lamina.set_default_dtype(np.float64)
    conv = NASConv(2, 2, 3, stride=2, padding=2, dilation=2, groups=2)
    assert check_gradients(lambda x, w: lamina.functional.conv2d(x, w, None, padding=2, groups=2, dilation=2)
                           [:, ::2, ::2, :], randn(1, 5, 5, 2), np.asarray(conv.weight.data))


def test_mixed_op_matches_torch_with_alpha_gradient():
    lamina.set_default_dtype(np.float64)
    op = MixedOp(4, 2)
    alpha = randn(len(PRIMITIVES), seed=3)
    a_ours = lamina.tensor(alpha, requires_grad=True, dtype=np.float64)
    a_theirs = torch.tensor(alpha, requires_grad=True)
    _compare(op, randn(2, 8, 8, 4, seed=4), lamina.functional.softmax(a_ours),
             extra_torch=(torch.softmax(a_theirs, 0),))
    np.testing.assert_allclose(a_ours.grad, a_theirs.grad.numpy(), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("reduction,reduction_prev", [(False, True), (True, False)])
def test_search_cell_matches_torch(reduction, reduction_prev):
    lamina.set_default_dtype(np.float64)
    cell = SearchCell(2, 2, 6, 8, 4, reduction, reduction_prev)
    alpha = randn(5, len(PRIMITIVES), seed=5)
    size0 = 8 if reduction_prev else 4
    s0, s1 = randn(2, size0, size0, 6, seed=6), randn(2, 4, 4, 8, seed=7)
    out = _compare(cell, (s0, s1), lamina.functional.softmax(lamina.tensor(alpha, dtype=np.float64), axis=-1),
                   extra_torch=(torch.softmax(torch.tensor(alpha), 1),))
    assert out.shape == (2, 2 if reduction else 4, 2 if reduction else 4, 8)


def test_operation_errors_name_the_choices():
    with pytest.raises(ValueError, match="unknown operation 'conv_7x7'.*sep_conv_3x3"):
        make_operation("conv_7x7", 4, 1)
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        make_operation("sep_conv_3x3", 4, 3)
    with pytest.raises(ValueError, match="MixedOp: unknown operation"):
        MixedOp(4, 1, primitives=["none", "conv_9x9"])
    with pytest.raises(ValueError, match="multiplier must be in 1..steps=2"):
        SearchCell(2, 3, 4, 4, 4, False, False)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        SearchCell(0, 1, 4, 4, 4, False, False)
    with pytest.raises(lamina.errors.ShapeError, match="expected 8 weights"):
        MixedOp(4, 1)(randn(1, 4, 4, 4), lamina.tensor(np.ones(3)))
