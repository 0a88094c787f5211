"""``Unfold`` and ``Fold`` layers: the sliding windows of an NHWC batch as rows and back
(:mod:`lamina.functional.fold`), PyTorch's ``nn.Unfold``/``nn.Fold`` in channels-last form.

    Unfold(f, d, p, s)        (N, H, W, C) -> (N, L, f_h f_w C)
    Fold((H, W), f, d, p, s)  (N, L, f_h f_w C) -> (N, H, W, C), overlapping windows added
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.functional.fold import WindowGeometry, fold, unfold
from lamina.functional.im2col import pair
from lamina.nn.layer import check_shape_ndim, register_layer
from lamina.nn.module import Module, as_tensor


class _Windows(Module):
    def __init__(self, kernel_size, dilation=1, padding=0, stride=1, name: str | None = None):
        super().__init__(name=name)
        op = type(self).__name__
        self.kernel_size = pair(kernel_size, "kernel_size", op)
        self.dilation = pair(dilation, "dilation", op)
        self.padding = pair(padding, "padding", op)
        self.stride = pair(stride, "stride", op)

    def _geometry(self) -> dict:
        return {"kernel_size": self.kernel_size, "dilation": self.dilation, "padding": self.padding,
                "stride": self.stride}

    def get_config(self) -> dict:
        return {**self._geometry(), "name": self.name}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self._geometry().items())


@register_layer
class Unfold(_Windows):
    """The windows of an NHWC batch as rows: (N, H, W, C) -> (N, L, f_h f_w C)."""

    def forward(self, x) -> Tensor:
        return unfold(as_tensor(x), **self._geometry())

    def compute_output_shape(self, input_shape):
        n, h, w, c = check_shape_ndim(self, input_shape, 4, "a 4-D NHWC shape (batch, height, width, channels)")
        fh, fw = self.kernel_size
        if h is None or w is None:
            return (n, None, None if c is None else fh * fw * c)
        ho, wo = WindowGeometry("Unfold", **self._geometry()).out_hw((h, w), "the input of shape (H, W) =")
        return (n, ho * wo, None if c is None else fh * fw * c)


@register_layer
class Fold(_Windows):
    """Rows of windows added back into an NHWC batch of size ``output_size`` = (H, W)."""

    def __init__(self, output_size, kernel_size, dilation=1, padding=0, stride=1, name: str | None = None):
        super().__init__(kernel_size, dilation, padding, stride, name=name)
        self.output_size = pair(output_size, "output_size", "Fold")

    def forward(self, cols) -> Tensor:
        return fold(as_tensor(cols), self.output_size, **self._geometry())

    def compute_output_shape(self, input_shape):
        n, _, k = check_shape_ndim(self, input_shape, 3, "a 3-D shape (batch, windows, f_h f_w C)")
        fh, fw = self.kernel_size
        return (n, *self.output_size, None if k is None else k // (fh * fw))

    def get_config(self) -> dict:
        return {"output_size": self.output_size, **super().get_config()}

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, {super().extra_repr()}"
