"""einsum: values and gradients against torch.einsum, gradient checks, and bad subscripts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, op_table_tests, randn
from lamina.functional.einsum import einsum


def case(subscripts, *shapes):
    """(lamina function, torch function, inputs) for ``subscripts`` on random operands of ``shapes``."""
    inputs = [randn(*shape, seed=k) for k, shape in enumerate(shapes)]
    return (lambda *xs: einsum(subscripts, *xs), lambda *xs: torch.einsum(subscripts, *xs), inputs)


CASES = {
    "matmul": case("ij,jk->ik", (2, 3), (3, 4)),
    "matmul_implicit": case("ij,jk", (2, 3), (3, 4)),
    "batched_matmul": case("bij,bjk->bik", (2, 3, 4), (2, 4, 5)),
    "outer": case("i,j->ij", (3,), (4,)),
    "dot": case("i,i->", (5,), (5,)),
    "transpose": case("ij->ji", (3, 4)),
    "transpose_implicit": case("ba", (3, 4)),
    "trace": case("ii->", (4, 4)),
    "trace_implicit": case("ii", (4, 4)),
    "diagonal": case("ii->i", (4, 4)),
    "batched_diagonal": case("bii->bi", (2, 3, 3)),
    "diagonal_of_three_axes": case("iii->i", (3, 3, 3)),
    "repeated_with_another_operand": case("iij,jk->ik", (3, 3, 4), (4, 2)),
    "sum_over_an_axis": case("ij->i", (3, 4)),
    "sum_of_everything": case("ijk->", (2, 3, 4)),
    "summed_inside_one_operand": case("ij,k->ik", (2, 3), (4,)),
    "bilinear": case("bi,ij,bj->b", (5, 3), (3, 4), (5, 4)),
    "four_operands": case("ab,bc,cd,d->a", (2, 3), (3, 4), (4, 2), (2,)),
    "capitals": case("Ab,bC->AC", (2, 3), (3, 4)),
    "capitals_implicit": case("Zx,xa", (2, 3), (3, 4)),
    "ellipsis_batched_matmul": case("...ij,...jk->...ik", (2, 3, 4), (4, 5)),
    "ellipsis_broadcast": case("...ij,...jk->...ik", (2, 1, 3, 4), (5, 4, 2)),
    "ellipsis_implicit": case("...ij,...jk", (2, 3, 4), (2, 4, 5)),
    "ellipsis_in_the_middle": case("i...j,j->i...", (2, 3, 4, 5), (5,)),
    "ellipsis_summed_when_left_out": case("...ij->ij", (5, 2, 3)),
    "ellipsis_of_no_axes": case("...ij->...ji", (2, 3)),
    "size_one_broadcast": case("ij,jk->ik", (2, 1), (3, 4)),
    "spaces": case("ij, jk -> ik", (2, 3), (3, 4)),
    "attention_scores": case("bhqd,bhkd->bhqk", (2, 3, 4, 5), (2, 3, 6, 5)),
    "batch_letters_permuted": case("hbqd,bhkd->kqbh", (3, 2, 4, 5), (2, 3, 6, 5)),
    "private_letters_on_both_sides": case("aij,jkb->ik", (2, 3, 4), (4, 5, 3)),
    "batch_only_in_output": case("bi,bj->bij", (3, 4), (3, 5)),
    "scalar_times_scalar": case(",->", (), ()),
    "scalar_times_matrix": case(",ij->ji", (), (2, 3)),
}


@pytest.mark.parametrize("seed", range(12))
def test_random_two_operand_contractions_match_numpy(seed):
    """Random letter layouts (shared, summed, kept, private; permuted output) against np.einsum."""
    rng = np.random.default_rng(seed)
    letters = "abcdef"
    sizes = {c: int(rng.integers(1, 4)) for c in letters}
    term_a = "".join(rng.permutation(list(letters))[: rng.integers(0, 5)])
    term_b = "".join(rng.permutation(list(letters))[: rng.integers(0, 5)])
    present = sorted(set(term_a + term_b))
    output = "".join(c for c in rng.permutation(present) if rng.random() < 0.5)
    a = rng.standard_normal([sizes[c] for c in term_a])
    b = rng.standard_normal([sizes[c] for c in term_b])
    spec = f"{term_a},{term_b}->{output}"
    ta = lamina.tensor(a, dtype="float64", requires_grad=True)
    tb = lamina.tensor(b, dtype="float64", requires_grad=True)
    y = einsum(spec, ta, tb)
    np.testing.assert_allclose(y.numpy(), np.einsum(spec, a, b), rtol=1e-10, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    y.backward(dy)
    xa, xb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    torch.einsum(spec, xa, xb).backward(torch.tensor(dy))
    np.testing.assert_allclose(ta.grad, xa.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tb.grad, xb.grad.numpy(), rtol=1e-10, atol=1e-12)

test_matches_torch, test_gradcheck = op_table_tests(CASES)


def test_implicit_output_keeps_the_letters_seen_once_in_alphabetical_order():
    a, b = randn(2, 3), randn(3, 4, seed=1)
    out = einsum("ij,jk", lamina.tensor(a, dtype=np.float64), lamina.tensor(b, dtype=np.float64))
    np.testing.assert_allclose(out.numpy(), a @ b, rtol=1e-12)
    out = einsum("kj,ji", lamina.tensor(a, dtype=np.float64), lamina.tensor(b, dtype=np.float64))
    np.testing.assert_allclose(out.numpy(), (a @ b).T, rtol=1e-12)


def test_the_same_tensor_twice_gets_both_gradients():
    x = randn(4)
    compare_with_torch(lambda t: einsum("i,i->", t, t), lambda t: torch.einsum("i,i->", t, t), x, dtype=np.float64)
    t = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    einsum("i,i->", t, t).backward()
    np.testing.assert_allclose(t.grad, 2 * x, rtol=1e-12)


def test_trace_gradient_is_the_identity():
    t = lamina.tensor(randn(3, 3), requires_grad=True, dtype=np.float64)
    einsum("ii->", t).backward()
    np.testing.assert_array_equal(t.grad, np.eye(3))


def test_only_operands_that_need_it_get_a_gradient():
    a = lamina.tensor(randn(2, 3), requires_grad=True)
    b = lamina.tensor(randn(3, 4, seed=1))
    einsum("ij,jk->ik", a, b).sum().backward()
    assert b.grad is None
    np.testing.assert_allclose(a.grad, np.broadcast_to(b.numpy().sum(axis=1), (2, 3)), rtol=1e-6)


def test_plain_arrays_are_constants():
    a = lamina.tensor(randn(2, 3), requires_grad=True, dtype=np.float64)
    b = randn(3, 4, seed=1)
    out = einsum("ij,jk->ik", a, b)
    np.testing.assert_allclose(out.numpy(), a.numpy() @ b, rtol=1e-12)
    assert check_gradients(lambda t: einsum("ij,jk->ik", t, b), a.numpy())


def test_float32_stays_float32():
    a = lamina.tensor(randn(2, 3), requires_grad=True)
    out = einsum("ij,ij->i", a, a)
    out.sum().backward()
    assert out.dtype == np.float32 and a.grad.dtype == np.float32


# -- bad input ---------------------------------------------------------------------------

BAD = {
    "too_few_operands": ("ij,jk->ik", [(2, 3)], ValueError, r"name 2 operand\(s\) but 1 were given"),
    "too_many_operands": ("ij->ij", [(2, 3), (2, 3)], ValueError, r"name 1 operand\(s\) but 2 were given"),
    "term_too_short": ("ij,jk->ik", [(2, 3, 1), (3, 4)], lamina.ShapeError,
                       r"operand 0 of shape \(2, 3, 1\) has 3 axes but its term 'ij'.*names 2"),
    "term_too_long": ("ijk->i", [(2, 3)], lamina.ShapeError, r"operand 0 of shape \(2, 3\) has 2 axes.*names 3"),
    "ellipsis_too_long": ("...ijk->i", [(2, 3)], lamina.ShapeError, r"has 2 axes but its term '...ijk'"),
    "sizes_differ": ("ij,jk->ik", [(2, 3), (4, 5)], lamina.ShapeError,
                     r"letter 'j'.*length 3 in one operand and 4 in operand 1.*\(2, 3\), \(4, 5\)"),
    "ellipsis_sizes_differ": ("...i,...i->...", [(2, 3), (4, 3)], lamina.ShapeError,
                              r"an axis under '...'.*length 2 in one operand and 4"),
    "diagonal_not_square": ("ii->i", [(2, 3)], lamina.ShapeError,
                            r"operand 0 of shape \(2, 3\) repeats letter 'i'.*lengths 2 and 3"),
    "output_letter_unknown": ("ij->k", [(2, 3)], ValueError, r"output letter 'k' of 'ij->k' is in no operand"),
    "output_letter_repeated": ("ij->ii", [(2, 3)], ValueError, r"output of 'ij->ii' repeats the letter 'i'"),
    "digit": ("i1->i", [(2, 3)], ValueError, r"may hold only the letters"),
    "two_ellipses": ("...i...->i", [(2, 3)], ValueError, r"may hold only the letters"),
    "two_arrows": ("i->i->i", [(2,)], ValueError, r"more than one '->'"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_subscripts_raise_clear_errors(name):
    subscripts, shapes, error, message = BAD[name]
    operands = [lamina.tensor(np.ones(shape)) for shape in shapes]
    with pytest.raises(error, match="einsum: .*" + message):
        einsum(subscripts, *operands)


def test_subscripts_must_be_a_string_and_operands_given():
    with pytest.raises(ValueError, match="einsum: subscripts must be a string"):
        einsum(["ij"], lamina.tensor(np.ones((2, 2))))
    with pytest.raises(ValueError, match="einsum: no operands"):
        einsum("ij->ji")


@pytest.mark.parametrize("create_graph", [False, True])
@pytest.mark.parametrize("subscripts, shapes", [("ij,jk->ik", [(2, 0), (0, 3)]), ("ij->j", [(0, 3)]),
                                                ("ij,jk->ik", [(0, 2), (2, 3)]), ("ij,j->i", [(2, 0), (1,)]),
                                                ("ii->i", [(0, 0)])], ids=str)
def test_axes_of_length_zero_match_torch(subscripts, shapes, create_graph):
    arrays = [np.ones(s) for s in shapes]
    operands = [lamina.tensor(a, dtype=np.float64, requires_grad=True) for a in arrays]
    y = einsum(subscripts, *operands)
    expected = torch.einsum(subscripts, *(torch.tensor(a) for a in arrays))
    assert y.shape == tuple(expected.shape)
    np.testing.assert_array_equal(y.numpy(), expected.numpy())
    grads = lamina.autograd.grad(y.sum(), operands, create_graph=create_graph)
    assert [g.shape for g in grads] == shapes
