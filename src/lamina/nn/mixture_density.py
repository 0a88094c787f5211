"""The output head of a mixture density network (Bishop, 1994; :mod:`lamina.functional.losses_mdn`).

One dense layer maps the features h (N, F) to K (1 + 2 D) numbers, split into

    pi_logits (N, K),   mu (N, K, D),   sigma = softplus(s) or exp(s) (N, K, D) > 0,

the mixing logits, the means and the standard deviations of K diagonal Gaussians over a
D-dimensional target, ready for :func:`lamina.functional.mdn_loss`.
"""

from __future__ import annotations

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import init as initializers
from lamina.nn.dense import linear
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["MixtureDensityHead"]

SIGMA_ACTIVATIONS = ("softplus", "exp")


@register_layer
class MixtureDensityHead(Module):
    """(N, F) features -> (pi_logits, mu, sigma) of ``num_components`` Gaussians over an
    ``out_dim``-dimensional target (module notes). ``sigma_activation``: ``'softplus'`` or
    ``'exp'`` (Bishop's); ``min_sigma`` is added to sigma to keep the likelihood bounded."""

    use_bias = True                                        # read by add_weight_and_bias
    bias_init = "zeros"

    def __init__(self, num_components: int, out_dim: int = 1, sigma_activation: str = "softplus",
                 min_sigma: float = 1e-4, kernel_init="xavier_uniform", name: str | None = None):
        super().__init__(name=name)
        self.num_components = positive_int(num_components, "MixtureDensityHead: num_components")
        self.out_dim = positive_int(out_dim, "MixtureDensityHead: out_dim")
        if sigma_activation not in SIGMA_ACTIVATIONS:
            raise ValueError(f"MixtureDensityHead: sigma_activation must be one of {SIGMA_ACTIVATIONS}, "
                             f"got {sigma_activation!r}")
        self.sigma_activation = sigma_activation
        if isinstance(min_sigma, bool) or not isinstance(min_sigma, (int, float)) or not min_sigma >= 0:
            raise ValueError(f"MixtureDensityHead: min_sigma must be a number >= 0, got {min_sigma!r}")
        self.min_sigma = float(min_sigma)
        self.kernel_init = kernel_init
        initializers.get(kernel_init)

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        if len(shape) != 2 or shape[-1] is None:
            raise ShapeError(f"{self._label()}: expected an input shape (batch, features) with known features, "
                             f"got {shape}")
        initializers.add_weight_and_bias(self, (shape[-1], self.num_components * (1 + 2 * self.out_dim)),
                                         self.num_components * (1 + 2 * self.out_dim))

    def forward(self, x) -> tuple[Tensor, Tensor, Tensor]:
        x = as_tensor(x)
        n_in = self.weight.shape[0]
        if x.ndim != 2 or x.shape[-1] != n_in:
            raise input_error(self, x, f"(batch, {n_in}) features")
        k, d = self.num_components, self.out_dim
        out = linear(x, self.weight, self.bias)
        n = x.shape[0]
        pi_logits = out[:, :k]
        mu = out[:, k:k + k * d].reshape((n, k, d))
        raw = out[:, k + k * d:].reshape((n, k, d))
        sigma = F.softplus(raw) if self.sigma_activation == "softplus" else F.exp(raw)
        return pi_logits, mu, sigma + self.min_sigma if self.min_sigma else sigma

    def compute_output_shape(self, input_shape):
        n = tuple(input_shape)[0]
        k, d = self.num_components, self.out_dim
        return (n, k), (n, k, d), (n, k, d)

    def get_config(self) -> dict:
        return {"num_components": self.num_components, "out_dim": self.out_dim,
                "sigma_activation": self.sigma_activation, "min_sigma": self.min_sigma,
                "kernel_init": initializers.serialize(self.kernel_init), "name": self.name}

    def extra_repr(self) -> str:
        return f"num_components={self.num_components}, out_dim={self.out_dim}, sigma={self.sigma_activation}"
