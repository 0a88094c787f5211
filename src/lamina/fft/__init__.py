"""``lamina.fft``: discrete Fourier transforms with gradients, after ``torch.fft``.

lamina has no complex dtype. A complex tensor of shape (...) is a real tensor of shape
(..., 2) holding the real and the imaginary part (``torch.view_as_real``'s layout), and the
``dim`` / ``s`` arguments count its complex axes only (never the trailing pair). The rule for
inputs follows the kind of each transform in torch:

- complex -> complex (``fft``, ``ifft``, ``fft2``, ``ifft2``, ``fftn``, ``ifftn``) and complex -> real
  (``irfft*``, ``hfft*``) take a complex (..., 2) tensor;
- real -> complex (``rfft*``, ``ihfft*``) take a real tensor.

A real signal goes to the complex transforms through :func:`from_real` (x + 0i) or
:func:`complex` (two real tensors). Every transform takes ``norm`` = "backward" (default),
"ortho" or "forward", as torch; gradients and second derivatives are exact::

    import lamina
    from lamina import fft

    x = lamina.tensor([[1.0, 2.0, 0.0, -1.0]], requires_grad=True)
    spectrum = fft.rfft(x)                        # (1, 3, 2): real and imaginary parts
    power = (fft.abs(spectrum) ** 2).sum()
    power.backward()                              # x.grad
    y = fft.irfft(spectrum, n=4)                  # x again
"""

from lamina.fft.frequencies import fftfreq, fftshift, ifftshift, rfftfreq
from lamina.fft.pairs import (
    abs,  # noqa: A004 - torch.abs's name
    angle,
    check_complex,
    complex,  # noqa: A004 - torch.complex's name
    conj,
    from_real,
    imag,
    mul,
    polar,
    real,
    view_as_complex,
    view_as_real,
)
from lamina.fft.transforms import (
    fft,
    fft2,
    fftn,
    hfft,
    hfft2,
    hfftn,
    ifft,
    ifft2,
    ifftn,
    ihfft,
    ihfft2,
    ihfftn,
    irfft,
    irfft2,
    irfftn,
    rfft,
    rfft2,
    rfftn,
)

__all__ = [
    "abs", "angle", "check_complex", "complex", "conj", "fft", "fft2", "fftfreq", "fftn", "fftshift", "from_real",
    "hfft", "hfft2", "hfftn", "ifft", "ifft2", "ifftn", "ifftshift", "ihfft", "ihfft2", "ihfftn", "imag", "irfft",
    "irfft2", "irfftn", "mul", "polar", "real", "rfft", "rfft2", "rfftfreq", "rfftn", "view_as_complex",
    "view_as_real",
]
