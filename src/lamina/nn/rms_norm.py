"""RMSNorm (PyTorch's torch.nn.RMSNorm): each sample scaled by the root mean square of its
values over the trailing axes,

    y = x / sqrt(mean(x^2) + eps) * weight,

with no centring and no bias (:func:`lamina.functional.rms_norm.rms_norm`). Used in place of
LayerNorm by LLaMA-style transformers.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.rms_norm import rms_norm
from lamina.nn.layer import check_shape_ndim, input_error, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["RMSNorm"]


def _shape_tuple(value, what: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    shape = (value,) if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if not shape or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"{what}: expected a positive int or a non-empty tuple of them, got {value!r}")
    return tuple(int(n) for n in shape)


@register_layer
class RMSNorm(Module):
    """y = x / sqrt(mean(x^2) + eps) * weight over the trailing axes.

    Give either ``normalized_shape`` (the sizes of the trailing axes, as PyTorch) or
    ``axes``, the number of trailing axes, their sizes read from the first input (1: the
    features or each NHWC pixel's channels). ``eps=None`` uses the machine epsilon of the
    input's dtype, as PyTorch. ``elementwise_affine`` adds ``weight`` (init 1) of the
    normalised shape.
    """

    default_name = "rms_norm"

    def __init__(self, normalized_shape=None, eps: float | None = None, elementwise_affine: bool = True,
                 axes: int | None = None, name: str | None = None):
        super().__init__(name=name)
        self.normalized_shape = _shape_tuple(normalized_shape, "RMSNorm normalized_shape")
        if axes is not None and (isinstance(axes, bool) or not isinstance(axes, int) or axes < 1):
            raise ValueError(f"RMSNorm: axes (the number of trailing axes) must be a positive int, got {axes!r}")
        if axes is not None and self.normalized_shape is not None and axes != len(self.normalized_shape):
            raise ValueError(f"RMSNorm: axes={axes} disagrees with normalized_shape={self.normalized_shape}")
        self.axes = len(self.normalized_shape) if self.normalized_shape is not None else (axes or 1)
        if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0):
            raise ValueError(f"RMSNorm: eps must be a positive number or None, got {eps!r}")
        self.eps = None if eps is None else float(eps)
        self.elementwise_affine = bool(elementwise_affine)

    def _expected(self) -> str:
        trailing = ", ".join(map(str, self.normalized_shape)) if self.normalized_shape else "..."
        return f"(batch, ..., {trailing}) with the {self.axes} normalised axes last"

    def _trailing_shape(self, shape: tuple) -> tuple:
        if len(shape) <= self.axes:
            raise ShapeError(f"{self._label()}: got an input shape {shape}; expected {self._expected()}")
        trailing = shape[len(shape) - self.axes:]
        if self.normalized_shape is not None and any(
                n is not None and n != m for n, m in zip(trailing, self.normalized_shape)):
            raise ShapeError(f"{self._label()}: the input shape {shape} ends with {trailing}; expected "
                             f"{self.normalized_shape}")
        return trailing

    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, tuple(range(2, 9)), self._expected())
        trailing = self._trailing_shape(shape)
        if any(n is None for n in trailing):
            raise ShapeError(f"{self._label()}: the normalised axes of {shape} must be known")
        self.normalized_shape = tuple(int(n) for n in trailing)
        if self.elementwise_affine:
            dtype = backend.get_default_dtype()
            self.add_parameter("weight", backend.xp.ones(self.normalized_shape, dtype=dtype))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim <= self.axes:
            raise input_error(self, x, self._expected())
        self._trailing_shape(tuple(x.shape))
        weight = self.weight if self.elementwise_affine else None
        return rms_norm(x, self.normalized_shape, weight, self.eps)

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, tuple(range(2, 9)), self._expected())
        self._trailing_shape(shape)
        return shape

    def get_config(self) -> dict:
        shape = None if self.normalized_shape is None else list(self.normalized_shape)
        return {"normalized_shape": shape, "eps": self.eps, "elementwise_affine": self.elementwise_affine,
                "axes": self.axes, "name": self.name}

    def extra_repr(self) -> str:
        shape = self.normalized_shape if self.normalized_shape is not None else "?"
        return f"{shape}, eps={self.eps}" + ("" if self.elementwise_affine else ", elementwise_affine=False")
