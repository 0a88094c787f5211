"""lamina.fft's transforms against torch.fft (through torch.view_as_real), in float64: values and
gradients for odd and even sizes, cut and zero-extended lengths, every norm and negative dims;
float64 gradient checks, second derivatives and the error messages."""

import numpy as np
import pytest
import torch

import lamina
from helpers import (
    assert_close,
    check_gradients,
    check_second_derivatives,
    compare_double_backward_with_torch,
    compare_with_torch,
    randn,
)
from lamina import fft, nn
from lamina.amp import autocast

NORMS = [None, "backward", "ortho", "forward"]


def _complex_in(fn):
    """A torch function of a complex tensor, applied to its (..., 2) real view."""
    return lambda z: fn(torch.view_as_complex(z))


def _real_out(out):
    """A complex torch result as its (..., 2) real view; a real one as it is."""
    return torch.view_as_real(out.resolve_conj()) if out.is_complex() else out


# -- 1-D: n cuts (3) or zero-extends (8) the odd (5) and even (6) axes ----------------------------

@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("n", [None, 3, 8])
@pytest.mark.parametrize("dim", [-1, 0, -2])
@pytest.mark.parametrize("name", ["fft", "ifft"])
def test_complex_to_complex_1d(name, dim, n, norm):
    ours, theirs = getattr(fft, name), getattr(torch.fft, name)
    compare_with_torch(lambda z: ours(z, n=n, dim=dim, norm=norm),
                       _complex_in(lambda z: _real_out(theirs(z, n=n, dim=dim, norm=norm))),
                       randn(5, 6, 2), dtype=np.float64)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("n", [None, 3, 8])
@pytest.mark.parametrize("dim", [-1, 0])
@pytest.mark.parametrize("name", ["rfft", "ihfft"])
def test_real_to_complex_1d(name, dim, n, norm):
    ours, theirs = getattr(fft, name), getattr(torch.fft, name)
    compare_with_torch(lambda x: ours(x, n=n, dim=dim, norm=norm),
                       lambda x: _real_out(theirs(x, n=n, dim=dim, norm=norm)),
                       randn(5, 6, seed=1), dtype=np.float64)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("n", [None, 3, 4, 9, 12])
@pytest.mark.parametrize("dim", [-1, 0])
@pytest.mark.parametrize("name", ["irfft", "hfft"])
def test_complex_to_real_1d(name, dim, n, norm):
    """Any complex input, Hermitian or not: the imaginary parts that drop out get no gradient."""
    ours, theirs = getattr(fft, name), getattr(torch.fft, name)
    compare_with_torch(lambda z: ours(z, n=n, dim=dim, norm=norm),
                       _complex_in(lambda z: theirs(z, n=n, dim=dim, norm=norm)),
                       randn(5, 4, 2, seed=2), dtype=np.float64)


# -- 2-D and N-D ---------------------------------------------------------------------------------

SHAPES_ND = [  # (s, dim) on a complex (3, 4, 5) tensor
    (None, None), ((4, 7), None), ((2, 3), (0, 2)), (None, (-1, 0)), ((6, -1), (-3, -2)), ((3, 4, 6), None),
]


def _nd_cases(names_nd, names_2d):
    """(name, s, dim): every case for the N-D functions, the two-axis ones for the 2-D functions."""
    cases = [(name, s, dim) for name in names_nd for s, dim in SHAPES_ND]
    two_axes = [(s, dim) for s, dim in SHAPES_ND if len(s or dim or (0, 0, 0)) == 2 and (dim is None or len(dim) == 2)]
    return cases + [(name, s, dim) for name in names_2d for s, dim in two_axes]


def _nd_kwargs(s, dim, norm) -> dict:
    return {"s": s, "norm": norm} if dim is None else {"s": s, "dim": dim, "norm": norm}


@pytest.mark.parametrize("norm", ["backward", "ortho", "forward"])
@pytest.mark.parametrize("name, s, dim", _nd_cases(["fftn", "ifftn"], ["fft2", "ifft2"]))
def test_complex_to_complex_nd(name, s, dim, norm):
    ours, theirs, kwargs = getattr(fft, name), getattr(torch.fft, name), _nd_kwargs(s, dim, norm)
    compare_with_torch(lambda z: ours(z, **kwargs), _complex_in(lambda z: _real_out(theirs(z, **kwargs))),
                       randn(3, 4, 5, 2, seed=3), dtype=np.float64)


@pytest.mark.parametrize("norm", ["backward", "ortho", "forward"])
@pytest.mark.parametrize("name, s, dim", _nd_cases(["rfftn", "ihfftn"], ["rfft2", "ihfft2"]))
def test_real_to_complex_nd(name, s, dim, norm):
    ours, theirs, kwargs = getattr(fft, name), getattr(torch.fft, name), _nd_kwargs(s, dim, norm)
    compare_with_torch(lambda x: ours(x, **kwargs), lambda x: _real_out(theirs(x, **kwargs)),
                       randn(3, 4, 5, seed=4), dtype=np.float64)


@pytest.mark.parametrize("norm", ["backward", "ortho", "forward"])
@pytest.mark.parametrize("name, s, dim", _nd_cases(["irfftn", "hfftn"], ["irfft2", "hfft2"]))
def test_complex_to_real_nd(name, s, dim, norm):
    ours, theirs, kwargs = getattr(fft, name), getattr(torch.fft, name), _nd_kwargs(s, dim, norm)
    compare_with_torch(lambda z: ours(z, **kwargs), _complex_in(lambda z: theirs(z, **kwargs)),
                       randn(3, 4, 5, 2, seed=5), dtype=np.float64)


@pytest.mark.parametrize("name", ["fft", "ifft", "rfft", "irfft", "hfft", "ihfft", "fft2", "rfft2", "irfft2"])
def test_float32_matches_torch(name):
    real_input = name in ("rfft", "ihfft", "rfft2")
    ours, theirs = getattr(fft, name), getattr(torch.fft, name)
    torch_fn = (lambda x: _real_out(theirs(x))) if real_input else _complex_in(lambda z: _real_out(theirs(z)))
    out = compare_with_torch(ours, torch_fn, randn(4, 6) if real_input else randn(4, 6, 2), dtype=np.float32)
    assert out[0].dtype == np.float32


# -- properties the comparisons do not show --------------------------------------------------------

def test_inverse_pairs_give_the_input_back():
    z, x = randn(3, 6, 2, seed=6), randn(3, 7, seed=7)
    assert np.allclose(fft.ifft(fft.fft(z)).numpy(), z)
    assert np.allclose(fft.ifftn(fft.fftn(z, norm="ortho"), norm="ortho").numpy(), z)
    assert np.allclose(fft.irfft(fft.rfft(x), n=7).numpy(), x)
    assert np.allclose(fft.irfftn(fft.rfftn(x, norm="forward"), s=x.shape, norm="forward").numpy(), x)
    assert np.allclose(fft.hfft(fft.ihfft(x), n=7).numpy(), x)


def test_from_real_then_fft_is_torch_fft_of_the_real_signal():
    x = randn(4, 5, seed=8)
    ours = fft.fft2(fft.from_real(lamina.tensor(x, dtype=np.float64)))
    assert np.allclose(ours.numpy(), torch.view_as_real(torch.fft.fft2(torch.tensor(x))).numpy())


# -- float64 gradient checks --------------------------------------------------------------------

GRADCHECKS = {
    "fft": (lambda z: fft.fft(z, n=4, dim=0, norm="ortho"), (3, 5, 2)),
    "ifft": (lambda z: fft.ifft(z, n=7), (3, 5, 2)),
    "fftn": (lambda z: fft.fftn(z, s=(2, 6), norm="forward"), (3, 5, 2)),
    "rfft": (lambda x: fft.rfft(x, n=6, dim=-2), (5, 3)),
    "rfftn": (lambda x: fft.rfftn(x, s=(4, 5)), (3, 4)),
    "irfft": (lambda z: fft.irfft(z, n=5), (2, 4, 2)),
    "irfft_even": (lambda z: fft.irfft(z, dim=0, norm="ortho"), (4, 2, 2)),
    "irfftn": (lambda z: fft.irfftn(z, s=(4, 6)), (3, 3, 2)),
    "hfft": (lambda z: fft.hfft(z, n=6, norm="forward"), (2, 3, 2)),
    "ihfftn": (lambda x: fft.ihfftn(x, dim=(0, 1)), (3, 4)),
}


@pytest.mark.parametrize("name", list(GRADCHECKS))
def test_gradcheck(name):
    fn, shape = GRADCHECKS[name]
    assert check_gradients(fn, randn(*shape, seed=9))


@pytest.mark.parametrize("name", ["fft", "rfftn", "irfft", "hfft"])
def test_second_derivatives_of_a_square(name):
    """The transforms are linear; their square makes the second derivatives go through the adjoint maps."""
    fn, shape = GRADCHECKS[name]
    assert check_second_derivatives(lambda a: fn(a) * fn(a), randn(*shape, seed=10))


def test_double_backward_of_a_circular_self_convolution_matches_torch():
    compare_double_backward_with_torch(
        lambda x: fft.irfft(fft.mul(fft.rfft(x), fft.rfft(x)), n=7),
        lambda x: torch.fft.irfft(torch.fft.rfft(x) ** 2, n=7), randn(3, 7, seed=11))
    compare_double_backward_with_torch(
        lambda z: fft.abs(fft.fft2(z)) ** 3,
        _complex_in(lambda z: torch.fft.fft2(z).abs() ** 3), randn(3, 4, 2, seed=12))


# -- errors ---------------------------------------------------------------------------------------

def test_complex_functions_ask_for_the_pair_axis():
    with pytest.raises(lamina.ShapeError, match=r"ifft2: .*\(\.\.\., 2\).*shape \(4, 3\)"):
        fft.ifft2(randn(4, 3))
    with pytest.raises(lamina.ShapeError, match=r"irfft: .*shape \(2,\)"):
        fft.irfft(randn(2))


def test_bad_norm_n_and_dim_are_named():
    z = lamina.tensor(randn(4, 3, 2))
    with pytest.raises(ValueError, match=r"fft: norm must be one of .* got 'unitary' \(input shape \(4, 3, 2\)\)"):
        fft.fft(z, norm="unitary")
    with pytest.raises(ValueError, match=r"ihfft: norm must be one of .* got 'Ortho' \(input shape \(4, 3\)\)"):
        fft.ihfft(randn(4, 3), norm="Ortho")
    with pytest.raises(ValueError, match=r"rfft: sizes must be ints >= 1.*s=\(0,\).*shape \(4, 3\)"):
        fft.rfft(randn(4, 3), n=0)
    with pytest.raises(ValueError, match=r"irfft: the default output size .* 0 .*\(4, 1\); give n"):
        fft.irfft(randn(4, 1, 2))
    with pytest.raises(lamina.ShapeError, match=r"fftn: dim \(0, 2\) is out of range .*shape \(4, 3\)"):
        fft.fftn(z, dim=(0, 2))
    with pytest.raises(ValueError, match=r"fft2: s=\(3,\) must give one size per transformed axis"):
        fft.fft2(z, s=(3,))
    with pytest.raises(ValueError, match=r"rfftn: dim \(1, -1\) names an axis twice"):
        fft.rfftn(randn(4, 3), dim=(1, -1))


# -- float16 inputs, empty axes, int sizes, no axes ----------------------------------------------

@pytest.mark.parametrize("name", ["rfft", "ihfft", "rfft2", "rfftn"])
def test_float16_real_input_runs_in_float32_as_torch_cpu_autocast(name):
    x = randn(4, 6).astype(np.float16)
    ours = lamina.tensor(x, dtype=np.float16, requires_grad=True)
    with autocast():
        got = getattr(fft, name)(ours)
    with torch.autocast("cpu", dtype=torch.float16):
        expected = _real_out(getattr(torch.fft, name)(torch.tensor(x)))
    assert got.dtype == np.float32 and expected.dtype == torch.float32
    assert_close(got.numpy(), expected.numpy(), 1e-6)
    # outside autocast too; the gradient is that of the float32 transform, cast back to float16
    assert_close(getattr(fft, name)(ours).numpy(), expected.numpy(), 1e-6)
    up = randn(*got.shape, seed=1).astype(np.float32)
    (got * lamina.tensor(up)).sum().backward()
    reference = torch.tensor(x.astype(np.float32), requires_grad=True)
    (_real_out(getattr(torch.fft, name)(reference)) * torch.tensor(up)).sum().backward()
    assert ours.grad.dtype == np.float16
    assert_close(ours.grad, reference.grad.numpy().astype(np.float16), 2e-3)


@pytest.mark.parametrize("name", ["fft", "ifft", "irfft", "hfft", "fft2", "ifftn", "irfftn", "hfft2"])
def test_float16_complex_input_is_transformed_in_float32(name):
    z = randn(4, 6, 2, seed=2).astype(np.float16)
    got = getattr(fft, name)(lamina.tensor(z, dtype=np.float16))
    expected = _complex_in(lambda c: _real_out(getattr(torch.fft, name)(c)))(torch.tensor(z.astype(np.float32)))
    assert got.dtype == np.float32
    assert_close(got.numpy(), expected.numpy(), 1e-6)


def test_spectrum_of_a_dense_layer_output_inside_autocast():
    layer = nn.Dense(8)
    with autocast():
        h = layer(lamina.tensor(randn(4, 8).astype(np.float32)))
        power = fft.abs(fft.rfft(h)) ** 2
    assert h.dtype == np.float16 and power.dtype == np.float32
    power.sum().backward()
    assert layer.weight.grad.dtype == np.float32 and np.isfinite(layer.weight.grad).all()


def test_an_empty_axis_is_named_with_its_transform():
    cases = [(lambda: fft.fft(randn(3, 0, 2)), r"fft: axis 1 of the input of shape \(3, 0\) has no points"),
             (lambda: fft.fft2(randn(0, 4, 2)), r"fft2: axis 0 of the input of shape \(0, 4\) has no points"),
             (lambda: fft.rfft(randn(3, 0)), r"rfft: axis 1 of the input of shape \(3, 0\) has no points"),
             (lambda: fft.irfft2(randn(0, 3, 2)), r"irfft2: axis 0 of the input of shape \(0, 3\) has no points"),
             (lambda: fft.ihfftn(randn(2, 0, 3), dim=(0, 1)), r"ihfftn: axis 1 of .* \(2, 0, 3\) has no points")]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    # n zero-extends the empty axis, as torch does
    compare_with_torch(lambda z: fft.fft(z, n=4, dim=1),
                       lambda z: _real_out(torch.fft.fft(torch.complex(z[..., 0], z[..., 1]), n=4, dim=1)),
                       randn(3, 0, 2), dtype=np.float64)
    compare_with_torch(lambda x: fft.rfft(x, n=5), lambda x: _real_out(torch.fft.rfft(x, n=5)), randn(3, 0),
                       dtype=np.float64)


@pytest.mark.parametrize("name, s, dim", [("fftn", 5, 1), ("ifftn", 3, 0), ("fftn", 5, None), ("fft2", 5, -1),
                                          ("irfftn", 6, 1), ("hfftn", 4, None)])
def test_an_int_s_and_dim_as_torch(name, s, dim):
    ours, theirs = getattr(fft, name), getattr(torch.fft, name)
    compare_with_torch(lambda z: ours(z, s=s, dim=dim), _complex_in(lambda z: _real_out(theirs(z, s=s, dim=dim))),
                       randn(3, 4, 2, seed=3), dtype=np.float64)


@pytest.mark.parametrize("name, s, dim", [("rfftn", 5, 0), ("ihfftn", 3, None), ("rfft2", 6, 0)])
def test_an_int_s_and_dim_of_real_transforms_as_torch(name, s, dim):
    ours, theirs = getattr(fft, name), getattr(torch.fft, name)
    compare_with_torch(lambda x: ours(x, s=s, dim=dim), lambda x: _real_out(theirs(x, s=s, dim=dim)),
                       randn(3, 4, seed=4), dtype=np.float64)


@pytest.mark.parametrize("name", ["fftn", "ifftn", "fft2", "ifft2"])
def test_no_axes_leave_a_complex_tensor_as_torch(name):
    ours, theirs = getattr(fft, name), getattr(torch.fft, name)
    compare_with_torch(lambda z: ours(z, dim=()), _complex_in(lambda z: _real_out(theirs(z, dim=()))),
                       randn(3, 4, 2, seed=5), dtype=np.float64)
    z = lamina.tensor(randn(3, 4, 2))
    assert np.array_equal(ours(z, s=(), dim=()).numpy(), z.numpy())
    with pytest.raises(ValueError, match=f"{name}: norm must be one of"):
        ours(z, dim=(), norm="unitary")


def test_real_transforms_still_need_an_axis_and_a_bad_s_is_named():
    with pytest.raises(ValueError, match=r"rfftn: expected at least one axis to transform, got dim \(\)"):
        fft.rfftn(randn(3, 4), dim=())
    with pytest.raises(ValueError, match=r"irfftn: expected at least one axis"):
        fft.irfftn(randn(3, 4, 2), dim=())
    with pytest.raises(TypeError, match=r"fftn: s must be an int or a sequence of ints, got 5.0"):
        fft.fftn(randn(3, 4, 2), s=5.0)
    with pytest.raises(TypeError, match=r"rfft: expected a float16, float32 or float64 tensor, got dtype int64"):
        fft.rfft(np.arange(4))
