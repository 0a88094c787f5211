"""``FractionalMaxPool2D`` and ``FractionalMaxPool3D``: max pooling by a non-integer factor
over pseudo-random windows (Graham, 2014), as ``torch.nn.FractionalMaxPool2d`` / ``3d``, on NHWC
and NDHWC batches (:mod:`lamina.functional.fractional_pool` gives the window sequence)."""

from __future__ import annotations

from lamina.functional.conv3d import triple
from lamina.functional.fractional_pool import fractional_max_pool2d_with_indices, fractional_output_size
from lamina.functional.fractional_pool3d import fractional_max_pool3d_with_indices, fractional_output_size3d
from lamina.functional.im2col import pair
from lamina.nn.layer import check_shape_ndim, input_error, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["FractionalMaxPool2D", "FractionalMaxPool3D"]


class _FractionalMaxPool(Module):
    """What the 2-D and 3-D layers share; a subclass names its spatial ``rank``, the functions
    that read its sizes and pool (``to_tuple``, ``check_sizes``, ``pool``) and its layout."""

    rank: int
    layout: str

    @staticmethod
    def to_tuple(value, what: str, who: str) -> tuple[int, ...]:
        raise NotImplementedError

    @staticmethod
    def check_sizes(shape, output_size, output_ratio, who: str):
        raise NotImplementedError

    @staticmethod
    def pool(x, kernel_size, output_size, output_ratio, random_samples):
        raise NotImplementedError

    def __init__(self, kernel_size, output_size=None, output_ratio=None, return_indices: bool = False,
                 name: str | None = None):
        super().__init__(name=name)
        who = type(self).__name__
        self.kernel_size = self.to_tuple(kernel_size, "kernel_size", who)
        if min(self.kernel_size) < 1:
            raise ValueError(f"{who}: kernel_size must be positive, got {kernel_size!r}")
        self.check_sizes((1,) * self.rank, output_size, output_ratio, who)
        self.output_size = None if output_size is None else self.to_tuple(output_size, "output_size", who)
        ratios = output_ratio if isinstance(output_ratio, (tuple, list)) else (output_ratio,) * self.rank
        self.output_ratio = None if output_ratio is None else tuple(float(r) for r in ratios)
        self.return_indices = bool(return_indices)

    def forward(self, x, _random_samples=None):
        x = as_tensor(x)
        if x.ndim != self.rank + 2:
            raise input_error(self, x, f"a {self.rank + 2}-D {self.layout} batch")
        out, indices = self.pool(x, self.kernel_size, self.output_size, self.output_ratio, _random_samples)
        return (out, indices) if self.return_indices else out

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, self.rank + 2, f"a {self.rank + 2}-D {self.layout} shape")
        if self.output_size is not None:
            return (shape[0], *self.output_size, shape[-1])
        sizes = tuple(None if n is None else int(n * r) for n, r in zip(shape[1:-1], self.output_ratio))
        return (shape[0], *sizes, shape[-1])

    def get_config(self) -> dict:
        return {"kernel_size": list(self.kernel_size),
                "output_size": None if self.output_size is None else list(self.output_size),
                "output_ratio": None if self.output_ratio is None else list(self.output_ratio),
                "return_indices": self.return_indices, "name": self.name}

    def extra_repr(self) -> str:
        target = f"output_size={self.output_size}" if self.output_size else f"output_ratio={self.output_ratio}"
        return f"kernel_size={self.kernel_size}, {target}"


@register_layer
class FractionalMaxPool2D(_FractionalMaxPool):
    """Each output is the maximum of a ``kernel_size`` window; the windows start at a
    pseudo-random increasing sequence that maps H x W onto ``output_size`` (h_out, w_out), or
    onto int(H r_h) x int(W r_w) for ``output_ratio`` (r_h, r_w) in (0, 1). One sample
    u in [0, 1) per (sample, channel) and axis, drawn from ``lamina.backend.rng()`` at each
    call (in training and evaluation alike, as PyTorch), fixes the sequence; ``forward(x,
    _random_samples=u)`` with u of shape (N, C, 2) (PyTorch's layout: [..., 0] the width's,
    [..., 1] the height's) fixes it by hand. With ``return_indices`` the layer returns
    (output, indices), the flat row * W + col positions of the maxima (for MaxUnpool2D)."""

    rank, layout = 2, "NHWC (batch, height, width, channels)"
    to_tuple = staticmethod(pair)
    check_sizes = staticmethod(fractional_output_size)
    pool = staticmethod(fractional_max_pool2d_with_indices)


@register_layer
class FractionalMaxPool3D(_FractionalMaxPool):
    """The 3-D form of :class:`FractionalMaxPool2D` on NDHWC batches: ``kernel_size`` windows
    whose pseudo-random starts map D x H x W onto ``output_size`` (d_out, h_out, w_out), or onto
    int(n r) per axis for ``output_ratio`` (a number or three in (0, 1)). ``forward(x,
    _random_samples=u)`` with u of shape (N, C, 3) (PyTorch's layout: depth, height, width)
    fixes the windows. With ``return_indices`` the layer returns (output, indices), the flat
    (depth * H + row) * W + col positions of the maxima (for MaxUnpool3D)."""

    rank, layout = 3, "NDHWC (batch, depth, height, width, channels)"
    to_tuple = staticmethod(triple)
    check_sizes = staticmethod(fractional_output_size3d)
    pool = staticmethod(fractional_max_pool3d_with_indices)
