"""Global Response Normalization (Woo et al. 2023, "ConvNeXt V2: Co-designing and Scaling
ConvNets with Masked Autoencoders"), on an NHWC map X of C channels:

    G_c = ||X_{:, :, c}||_2                  (the L2 norm over the spatial positions)
    N_c = G_c / (mean_c' G_c' + eps)          (each channel's share of the mean response)
    y   = gamma * (X * N) + beta + X

``gamma`` and ``beta`` (one value per channel) start at zero, so the layer starts as the
identity. Channels whose response is above the mean are amplified: it counters the
feature collapse of masked-autoencoder pretraining.
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.layer import check_shape_ndim, input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["GlobalResponseNorm", "global_response_norm"]


def global_response_norm(x, gamma, beta, eps: float = 1e-6) -> Tensor:
    """gamma * (x * N) + beta + x on an NHWC ``x`` with N_c = G_c / (mean_c G_c + eps), G_c the
    L2 norm of channel c over the height and width axes; ``gamma`` and ``beta`` (C,)."""
    x = as_tensor(x)
    response = F.sqrt(F.sum(x * x, axis=(1, 2), keepdims=True))
    normalized = response / (F.mean(response, axis=-1, keepdims=True) + eps)
    return gamma * (x * normalized) + beta + x


@register_layer
class GlobalResponseNorm(Module):
    """Global response normalization of NHWC inputs (batch, h, w, ``channels``), see the module
    docstring. Parameters ``gamma`` and ``beta`` (channels,), both initialised to zero."""

    default_name = "global_response_norm"

    def __init__(self, channels: int, eps: float = 1e-6, name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "GlobalResponseNorm: channels")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"GlobalResponseNorm: eps must be a positive number, got {eps!r}")
        self.eps = float(eps)

    def _expected(self) -> str:
        return f"(batch, h, w, {self.channels})"

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, (4,), self._expected())
        if shape[-1] not in (None, self.channels):
            raise ShapeError(f"{self._label()}: got an input shape {shape}; expected {self._expected()}")
        return shape

    def build(self, input_shape) -> None:
        self.compute_output_shape(input_shape)
        xp, dtype = backend.xp, backend.get_default_dtype()
        self.add_parameter("gamma", xp.zeros((self.channels,), dtype=dtype))
        self.add_parameter("beta", xp.zeros((self.channels,), dtype=dtype))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4 or x.shape[-1] != self.channels:
            raise input_error(self, x, self._expected())
        return global_response_norm(x, self.gamma, self.beta, self.eps)

    def get_config(self) -> dict:
        return {"channels": self.channels, "eps": self.eps, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.channels}, eps={self.eps:g}"
