"""lamina.special against torch.special: values in float64 and float32, gradients where torch has
them (float64 gradient checks and second derivatives where only lamina has them), the aliases,
and the arguments refused."""

import numpy as np
import pytest
import scipy.special
import torch

import lamina
from helpers import check_gradients, check_second_derivatives, compare_with_torch
from lamina import special

F64 = {"dtype": np.float64, "rtol": 1e-10}
REALS = np.array([-3.0, -0.7, 0.0, 0.4, 1.5, 6.0])
POSITIVES = np.array([0.05, 0.4, 1.0, 2.5, 7.0, 30.0])


@pytest.mark.parametrize("name, x", [("erfcx", REALS), ("entr", np.array([0.05, 0.3, 1.0, 2.5]))])
def test_unary_with_torch_gradients(name, x):
    compare_with_torch(getattr(special, name), getattr(torch.special, name), x, **F64)
    compare_with_torch(getattr(special, name), getattr(torch.special, name), x, dtype=np.float32, rtol=2e-6)
    assert check_second_derivatives(getattr(special, name), x)


def test_entr_at_zero_and_below():
    x = np.array([-1.0, 0.0, 2.0])
    ours = special.entr(lamina.tensor(x, dtype=np.float64)).numpy()
    np.testing.assert_array_equal(ours, torch.special.entr(torch.tensor(x)).numpy())


@pytest.mark.parametrize("name, x", [
    ("bessel_j0", REALS), ("bessel_j1", REALS), ("bessel_y0", POSITIVES), ("bessel_y1", POSITIVES),
    ("modified_bessel_k0", POSITIVES), ("modified_bessel_k1", POSITIVES),
    ("scaled_modified_bessel_k0", POSITIVES), ("scaled_modified_bessel_k1", POSITIVES),
    ("spherical_bessel_j0", REALS), ("airy_ai", REALS),
    ("modified_bessel_i0", REALS), ("modified_bessel_i1", REALS),
])
def test_bessel_and_airy_values_against_torch_and_gradients_checked(name, x):
    for dtype, rtol in ((np.float64, 1e-6), (np.float32, 2e-5)):   # torch's J, Y are good to about 1e-7
        ours = getattr(special, name)(lamina.tensor(x, dtype=dtype))
        theirs = getattr(torch.special, name)(torch.tensor(x.astype(dtype)))
        assert ours.dtype == dtype
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=rtol, atol=rtol * 1e-3, err_msg=name)
    assert check_gradients(getattr(special, name), x)          # torch has none for these: finite differences
    assert check_second_derivatives(getattr(special, name), x)


def test_bessel_j1_slope_at_zero_is_one_half():
    x = lamina.tensor(np.array([0.0]), requires_grad=True, dtype=np.float64)
    special.bessel_j1(x).sum().backward()
    np.testing.assert_allclose(x.grad, [0.5])
    x = lamina.tensor(np.array([0.0]), requires_grad=True, dtype=np.float64)
    special.spherical_bessel_j0(x).sum().backward()
    np.testing.assert_allclose(x.grad, [0.0])


def test_xlog1py_against_torch_with_zeros_and_broadcasting():
    x = np.array([[0.0, 1.5, -2.0]])
    y = np.array([[0.3], [-0.5], [4.0]])
    compare_with_torch(special.xlog1py, torch.special.xlog1py, x, y, **F64)
    zero = special.xlog1py(lamina.tensor(np.array([0.0])), lamina.tensor(np.array([-1.0])))
    np.testing.assert_array_equal(zero.numpy(), torch.special.xlog1py(torch.tensor([0.0]), torch.tensor([-1.0])))


def test_gammaincc_gradient_in_x_and_refusal_in_a():
    a, x = np.array([0.5, 2.0, 5.0]), np.array([0.3, 2.5, 40.0])
    compare_with_torch(special.gammaincc, torch.special.gammaincc, a, x, grad=[False, True], **F64)
    tiny = special.gammaincc(lamina.tensor(np.array([2.0]), dtype=np.float64),
                             lamina.tensor(np.array([60.0]), dtype=np.float64))
    np.testing.assert_allclose(tiny.numpy(), scipy.special.gammaincc(2.0, 60.0), rtol=1e-12)   # no 1 - P cancellation
    a_t = lamina.tensor(a, requires_grad=True, dtype=np.float64)
    with pytest.raises(NotImplementedError, match="gammaincc.*with respect to a"):
        special.gammaincc(a_t, lamina.tensor(x, dtype=np.float64)).sum().backward()


@pytest.mark.parametrize("p", [1, 2, 4])
def test_multigammaln(p):
    a = np.array([2.0, 3.7, 10.0])
    compare_with_torch(lambda t: special.multigammaln(t, p), lambda t: torch.special.multigammaln(t, p), a, **F64)


def test_multigammaln_refuses_a_below_its_domain():
    with pytest.raises(ValueError, match=r"multigammaln: every a must exceed \(p - 1\) / 2 = 1.5 for p = 4"):
        special.multigammaln(lamina.tensor(np.array([1.2])), 4)
    with pytest.raises(ValueError, match="multigammaln: p must be an integer >= 1, got 0"):
        special.multigammaln(lamina.tensor(np.array([1.2])), 0)


def test_zeta_gradient_in_q():
    x, q = np.array([2.0, 3.5, 1.5]), np.array([1.0, 0.5, 4.0])
    compare_with_torch(special.zeta, torch.special.zeta, x, q, grad=[False, True], **F64)
    with pytest.raises(NotImplementedError, match="zeta.*with respect to x"):
        special.zeta(lamina.tensor(x, requires_grad=True, dtype=np.float64), lamina.tensor(q)).sum().backward()


def test_aliases_and_reductions_under_torch_names():
    x = np.array([[0.5, 2.0, 3.0], [1.5, 0.2, 4.0]])
    for ours, theirs in ((special.psi, torch.special.psi), (special.gammaln, torch.special.gammaln),
                         (special.expit, torch.special.expit), (special.ndtr, torch.special.ndtr),
                         (special.log_ndtr, torch.special.log_ndtr), (special.sinc, torch.special.sinc),
                         (special.exp2, torch.special.exp2), (special.expm1, torch.special.expm1)):
        compare_with_torch(ours, theirs, x, **F64)
    compare_with_torch(lambda t: special.softmax(t, 1), lambda t: torch.special.softmax(t, 1), x, **F64)
    compare_with_torch(lambda t: special.log_softmax(t, 0), lambda t: torch.special.log_softmax(t, 0), x, **F64)
    compare_with_torch(lambda t: special.logsumexp(t, 1, keepdim=True),
                       lambda t: torch.special.logsumexp(t, 1, keepdim=True), x, **F64)


POLYNOMIALS = ["chebyshev_polynomial_t", "chebyshev_polynomial_u", "chebyshev_polynomial_v", "chebyshev_polynomial_w",
               "hermite_polynomial_h", "hermite_polynomial_he", "laguerre_polynomial_l", "legendre_polynomial_p",
               "shifted_chebyshev_polynomial_t", "shifted_chebyshev_polynomial_u", "shifted_chebyshev_polynomial_v",
               "shifted_chebyshev_polynomial_w"]


@pytest.mark.parametrize("name", POLYNOMIALS)
def test_orthogonal_polynomials_against_torch(name):
    x = np.array([0.3, -0.5, 2.0, 1.0, -1.0, 0.0, 0.9])
    for n in (0, 1, 3, -1, 2.5, 12, np.arange(7)):
        ours = getattr(special, name)(lamina.tensor(x, dtype=np.float64), n).numpy()
        theirs = getattr(torch.special, name)(torch.tensor(x), torch.tensor(n) if isinstance(n, np.ndarray) else n)
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-10, err_msg=f"{name} n={n}")
    assert check_gradients(lambda t: getattr(special, name)(t, np.array([0, 1, 2, 5, 3, 4, 6])), x)


def test_a_polynomial_refuses_non_numeric_degrees():
    with pytest.raises(ValueError, match="legendre_polynomial_p: n must hold finite numbers"):
        special.legendre_polynomial_p(lamina.tensor(np.zeros(2)), np.array([1.0, np.nan]))


def test_every_torch_special_name_is_offered():
    theirs = {n for n in dir(torch.special) if not n.startswith("_") and callable(getattr(torch.special, n))
              and n not in ("Tensor", "common_args", "multi_dim_common")}
    assert sorted(theirs - set(special.__all__)) == []


def test_far_arguments_as_torch():
    x = np.array([1e8, -1e8, 1e7 + 1.0, -2e7])        # SciPy's Airy functions give NaN out here
    ours = special.airy_ai(lamina.tensor(x, dtype=np.float64)).numpy()
    np.testing.assert_allclose(ours, torch.special.airy_ai(torch.tensor(x)).numpy(), rtol=1e-4, atol=1e-12)
    inside, outside = np.array([-0.999e6, -0.5e6]), np.array([-1.001e6, -2e6])   # SciPy's, the asymptotic form
    for points in (inside, outside):
        np.testing.assert_allclose(special.airy_ai(lamina.tensor(points, dtype=np.float64)).numpy(),
                                   torch.special.airy_ai(torch.tensor(points)).numpy(), rtol=1e-5)
    np.testing.assert_array_equal(special.spherical_bessel_j0(lamina.tensor(np.array([np.inf, -np.inf]))).numpy(),
                                  [0.0, 0.0])


def test_polynomials_of_integers_are_float32_and_degree_zero_stays_on_the_graph():
    assert special.chebyshev_polynomial_t(lamina.tensor(np.array([1, 2])), 3).dtype == np.float32
    x = lamina.tensor(np.array([0.5, 2.0]), requires_grad=True)
    special.hermite_polynomial_h(x, 0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0])
