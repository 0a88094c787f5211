"""A Bayesian 2-D convolution (Bayes by Backprop on NHWC images; see :mod:`lamina.nn.bayesian`).

The posterior is a diagonal Gaussian over the (K, f_h, f_w, c_in) filters and the K biases.
The estimators read as for :class:`lamina.nn.BayesianDense` with the convolution in place of
the product: local reparameterization samples z = conv(x, mu) + b_mu +
sqrt(conv(x^2, sigma^2) + sigma_b^2) * eps per output value, and flipout
z = conv(x, mu) + b + conv(x * s, dW) * r with one sign per sample and channel
(s: (N, 1, 1, c_in), r: (N, 1, 1, K), as TFP's Convolution2DFlipout).
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import conv2d
from lamina.nn.bayesian import BayesianLayer
from lamina.nn.conv import check_nhwc_input, check_window, conv_output_length, nhwc_shape, normalize_padding
from lamina.nn.layer import compact, pair, positive_int, register_layer
from lamina.nn.module import as_tensor

__all__ = ["BayesianConv2D"]


@register_layer
class BayesianConv2D(BayesianLayer):
    """2-D convolution with a Gaussian posterior over its K = ``filters`` filters
    (``weight_mu``, ``weight_rho``: (K, f_h, f_w, c_in)) and biases; the options after
    ``padding`` are those of :class:`lamina.nn.BayesianDense`."""

    def __init__(self, filters: int, kernel_size, stride=1, padding="valid", activation=None,
                 prior_sigma: float = 1.0, posterior_rho_init: float = -5.0, use_bias: bool = True,
                 estimator: str = "reparameterization", sample_in_eval: bool = False, kernel_init="he_uniform",
                 prior_mixture: tuple[float, float, float] | None = None, name: str | None = None):
        super().__init__(name=name)
        self.filters = positive_int(filters, "BayesianConv2D: filters")
        self.kernel_size = pair(kernel_size, "BayesianConv2D kernel_size")
        self.stride = pair(stride, "BayesianConv2D stride")
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"BayesianConv2D: kernel_size and stride must be positive, got {kernel_size!r}, "
                             f"{stride!r}")
        self.dilation = (1, 1)
        self.padding = normalize_padding(padding, "BayesianConv2D")
        self._set_bayesian_options(activation, prior_sigma, prior_mixture, posterior_rho_init, use_bias,
                                   estimator, False, sample_in_eval, kernel_init)

    def build(self, input_shape) -> None:
        shape = nhwc_shape(self, input_shape)
        if shape[-1] is None:
            raise ShapeError(f"{self._label()}: the channel (last) axis of {shape} must be known")
        check_window(self, shape)
        self._add_posterior((self.filters, *self.kernel_size, shape[-1]), self.filters)

    def _apply(self, x: Tensor, weight, bias) -> Tensor:
        return conv2d(x, weight, bias, stride=compact(self.stride), padding=compact(self.padding))

    def _input_sign_shape(self, x: Tensor) -> tuple[int, ...]:
        return (x.shape[0], 1, 1, x.shape[-1])

    def _output_sign_shape(self, z: Tensor) -> tuple[int, ...]:
        return (z.shape[0], 1, 1, z.shape[-1])

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        check_nhwc_input(self, x, self.weight_mu.shape[-1])
        check_window(self, x.shape)
        return self._run(x)

    def compute_output_shape(self, input_shape):
        shape = nhwc_shape(self, input_shape)
        out = [conv_output_length(shape[1 + a], self.kernel_size[a], self.stride[a], self.padding, a) for a in (0, 1)]
        return (shape[0], *out, self.filters)

    def get_config(self) -> dict:
        padding = self.padding if isinstance(self.padding, str) else list(self.padding)
        return {"filters": self.filters, "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": padding, **self._bayesian_config()}

    def extra_repr(self) -> str:
        c_in = self.weight_mu.shape[-1] if self.built else "?"
        return (f"{c_in} -> {self.filters}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding!r}") + self._bayesian_repr()
