"""lamina.func against torch.func at the edges: vmap's out_dims (None, a 1-tuple, out of
range), a mapped axis of length 0, outputs that are not tensors, its argument checks, and
namedtuples as containers of tensors in vmap, grad, jvp and jacrev."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
import torch
import torch.func as tf

import lamina
from helpers import assert_close, randn
from lamina import func
from lamina.errors import ShapeError

Pair = namedtuple("Pair", ["a", "b"])


pytestmark = pytest.mark.usefixtures("float64")


def _t(a: np.ndarray):
    return lamina.tensor(a, dtype=np.float64)


# -- vmap's out_dims --------------------------------------------------------------------------------
def test_an_output_that_differs_between_samples_cannot_have_out_dims_none():
    x = randn(3, 2)
    with pytest.raises(ValueError, match="can not return a BatchedTensor when out_dim is None"):
        tf.vmap(lambda a: (a * 2, a.sum()), out_dims=(0, None))(torch.tensor(x))
    with pytest.raises(ValueError, match="vmap: output 1 has out_dims None but differs between samples"):
        func.vmap(lambda a: (a * 2, a.sum()), out_dims=(0, None))(_t(x))


def test_out_dims_none_returns_an_output_common_to_the_samples():
    x, w = randn(3, 2), randn(5, seed=1)
    ours = func.vmap(lambda a, b: (a * 2, b, lamina.tensor(np.ones(4)), None), in_dims=(0, None),
                     out_dims=(0, None, None, None))(_t(x), _t(w))
    theirs = tf.vmap(lambda a, b: (a * 2, b, torch.ones(4, dtype=torch.float64), None), in_dims=(0, None),
                     out_dims=(0, None, None, None))(torch.tensor(x), torch.tensor(w))
    for k in range(3):
        assert_close(ours[k].numpy(), theirs[k].numpy(), 1e-12, f"output {k}")
    assert ours[3] is None and theirs[3] is None


def test_a_one_tuple_of_out_dims_for_one_output():
    x = randn(3, 2)
    for dims in ((1,), 1):
        ours = func.vmap(lambda a: a * 2, out_dims=dims)(_t(x))
        theirs = tf.vmap(lambda a: a * 2, out_dims=dims)(torch.tensor(x))
        assert_close(ours.numpy(), theirs.numpy(), 1e-12, f"out_dims={dims}")
    with pytest.raises(ValueError, match="out_dims"):
        func.vmap(lambda a: (a, a * 2), out_dims=(0,))(_t(x))


@pytest.mark.parametrize("dims", [-2, 1])
def test_out_dims_at_either_end(dims):
    x = randn(3, 2)
    ours = func.vmap(lambda a: a * 2, out_dims=dims)(_t(x))
    assert_close(ours.numpy(), tf.vmap(lambda a: a * 2, out_dims=dims)(torch.tensor(x)).numpy(), 1e-12, "output")


@pytest.mark.parametrize("dims", [2, -3])
def test_out_dims_out_of_range_is_an_error_of_vmap(dims):
    with pytest.raises(IndexError, match="Dimension out of range"):
        tf.vmap(lambda a: a * 2, out_dims=dims)(torch.ones(3, 2))
    with pytest.raises(ShapeError, match=rf"vmap: out_dims {dims} of output 0 is out of range for an output of 1 "
                                         r"dimensions per sample \(expected -2 to 1\)"):
        func.vmap(lambda a: a * 2, out_dims=dims)(_t(randn(3, 2)))


# -- a mapped axis of length 0 ----------------------------------------------------------------------
def test_a_mapped_axis_of_length_zero_gives_empty_outputs():
    def pair_t(a):
        return a * 2, a.sum(), torch.ones(4, dtype=torch.float64)

    def pair_l(a):
        return a * 2, a.sum(), lamina.tensor(np.ones(4))

    ours = func.vmap(pair_l, out_dims=(0, 0, None))(_t(np.ones((0, 2))))
    theirs = tf.vmap(pair_t, out_dims=(0, 0, None))(torch.ones(0, 2, dtype=torch.float64))
    assert [tuple(o.shape) for o in ours] == [tuple(t.shape) for t in theirs] == [(0, 2), (0,), (4,)]
    assert_close(ours[2].numpy(), theirs[2].numpy(), 1e-12, "unmapped output")
    ours = func.vmap(lambda a: a.sum(0, keepdims=True)[None], out_dims=2)(_t(np.ones((0, 2, 3))))
    theirs = tf.vmap(lambda a: a.sum(0, keepdim=True)[None], out_dims=2)(torch.ones(0, 2, 3))
    assert tuple(ours.shape) == tuple(theirs.shape) == (1, 1, 0, 3)


# -- what vmap refuses ------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [None, 1.5, 3])
def test_outputs_that_are_not_tensors_are_refused(value):
    with pytest.raises(ValueError, match="must only return Tensors"):
        tf.vmap(lambda a: value)(torch.ones(3, 2))
    with pytest.raises(ValueError, match=f"vmap: the function must return only tensors where out_dims is not None; "
                                         f"output 1 is a {type(value).__name__}"):
        func.vmap(lambda a: (a, value))(_t(randn(3, 2)))


def test_bad_randomness_and_chunk_size_are_refused():
    with pytest.raises(RuntimeError, match="Only allowed values for randomness"):
        tf.vmap(lambda a: a, randomness="bogus")
    with pytest.raises(ValueError, match="vmap: randomness must be one of 'error', 'different', 'same', got 'bogus'"):
        func.vmap(lambda a: a, randomness="bogus")
    for size in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=rf"vmap: chunk_size must be None or a positive int, got {size!r}"):
            func.vmap(lambda a: a, chunk_size=size)
    assert func.vmap(lambda a: a * 2, randomness="same", chunk_size=2)(_t(np.ones((3, 2)))).shape == (3, 2)


@pytest.mark.parametrize("value", [None, 2.0])
def test_only_tensors_can_be_mapped(value):
    with pytest.raises(ValueError, match="We cannot vmap over non-Tensor arguments"):
        tf.vmap(lambda a, s: a)(torch.ones(3, 2), value)
    with pytest.raises(ValueError, match=f"vmap: in_dims 0 for a {type(value).__name__} in argument 1: only tensors "
                                         "and arrays can be mapped"):
        func.vmap(lambda a, s: a)(_t(np.ones((3, 2))), value)
    assert func.vmap(lambda a, s: a, in_dims=(0, None))(_t(np.ones((3, 2))), value).shape == (3, 2)


# -- namedtuples --------------------------------------------------------------------------------------
def test_vmap_maps_over_and_returns_namedtuples():
    m = randn(2, 3)
    ours = func.vmap(lambda a: Pair(a * 2, a.sum()))(_t(m))
    theirs = tf.vmap(lambda a: Pair(a * 2, a.sum()))(torch.tensor(m))
    assert type(ours) is Pair
    assert_close(ours.a.numpy(), theirs.a.numpy(), 1e-12, "field a")
    assert_close(ours.b.numpy(), theirs.b.numpy(), 1e-12, "field b")
    ours = func.vmap(lambda p: p.a * p.b, in_dims=(Pair(0, None),))(Pair(_t(m), _t(m[0])))
    theirs = tf.vmap(lambda p: p.a * p.b, in_dims=(Pair(0, None),))(Pair(torch.tensor(m), torch.tensor(m[0])))
    assert_close(ours.numpy(), theirs.numpy(), 1e-12, "namedtuple argument")


def test_grad_jvp_and_jacrev_of_namedtuples():
    u, v = randn(3), randn(3, seed=1)

    def loss_l(p):
        return (p.a * p.b.sin()).sum()

    def loss_t(p):
        return (p.a * p.b.sin()).sum()

    ours = func.grad(loss_l)(Pair(_t(u), _t(v)))
    theirs = tf.grad(loss_t)(Pair(torch.tensor(u), torch.tensor(v)))
    assert type(ours) is Pair
    for field in Pair._fields:
        assert_close(getattr(ours, field).numpy(), getattr(theirs, field).numpy(), 1e-12, f"grad {field}")

    out, tangent = func.jvp(lambda p: Pair(p.a * p.b, p.a.sum()), (Pair(_t(u), _t(v)),), (Pair(_t(v), _t(u)),))
    out_t, tangent_t = tf.jvp(lambda p: Pair(p.a * p.b, p.a.sum()), (Pair(torch.tensor(u), torch.tensor(v)),),
                              (Pair(torch.tensor(v), torch.tensor(u)),))
    assert type(out) is Pair and type(tangent) is Pair
    for field in Pair._fields:
        assert_close(getattr(tangent, field).numpy(), getattr(tangent_t, field).numpy(), 1e-12, f"jvp {field}")

    ours = func.jacrev(lambda x: Pair(x * 2, x.sum()))(_t(u))
    theirs = tf.jacrev(lambda x: Pair(x * 2, x.sum()))(torch.tensor(u))
    assert type(ours) is Pair
    for field in Pair._fields:
        assert_close(getattr(ours, field).numpy(), getattr(theirs, field).numpy(), 1e-12, f"jacrev {field}")
