"""Reversible instance normalisation (Kim et al., 2022, "Reversible Instance Normalization for
Accurate Time-Series Forecasting against Distribution Shift"; RevIN).

Each input window (N, L, C) is normalised by its own mean and standard deviation over time,
per sample and channel, before a forecaster sees it, and the forecast (N, H, C) is mapped back
with the same statistics:

    normalise:    mu = mean_t x,  sigma = sqrt(var_t x + eps)   (population variance)
                  z = gamma (x - mu) / sigma + beta
    denormalise:  y = (z' - beta) / (gamma + eps^2) sigma + mu

gamma and beta (one per channel, init 1 and 0) are learned when ``affine``. mu and sigma are
held constant in the gradient (as the authors' code does), and kept on the layer between the
two calls: call ``layer(x, "norm")`` on the input, then ``layer(y, "denorm")`` on the output.
Unlike :class:`InstanceNorm1D`, the layer keeps its statistics to undo the normalisation.
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn.layer import check_shape_ndim, input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["RevIN"]

MODES = ("norm", "denorm")


@register_layer
class RevIN(Module):
    """Reversible instance normalisation of (batch, steps, ``num_features``) windows; see the
    module docstring. Parameters ``weight`` (gamma) and ``bias`` (beta), (num_features,), when
    ``affine``. ``layer(x, "norm")`` normalises and stores mu and sigma (:attr:`mean`,
    :attr:`stdev`, (N, 1, C)); ``layer(y, "denorm")`` undoes it on any number of steps."""

    default_name = "revin"

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.num_features = positive_int(num_features, "RevIN: num_features")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"RevIN: eps must be a positive number, got {eps!r}")
        self.eps = float(eps)
        self.affine = bool(affine)
        self.mean: Tensor | None = None
        self.stdev: Tensor | None = None
        # the sizes are known here, so the layer is built at once (its calls take a mode too)
        self.build((None, None, self.num_features))

    def _expected(self) -> str:
        return f"(batch, steps, {self.num_features})"

    def build(self, input_shape) -> None:
        check_shape_ndim(self, input_shape, 3, self._expected())
        if self.affine and "weight" not in self._parameters:
            dtype = backend.get_default_dtype()
            self.add_parameter("weight", backend.xp.ones(self.num_features, dtype=dtype))
            self.add_parameter("bias", backend.xp.zeros(self.num_features, dtype=dtype))
        self.built = True

    def forward(self, x, mode: str = "norm") -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.num_features:
            raise input_error(self, x, self._expected())
        if mode == "norm":
            return self.normalize(x)
        if mode == "denorm":
            return self.denormalize(x)
        raise ValueError(f"{self._label()}: mode must be one of {MODES}, got {mode!r}")

    def normalize(self, x) -> Tensor:
        """z = gamma (x - mu) / sigma + beta, with mu and sigma of ``x`` stored for later."""
        x = as_tensor(x)
        self.mean = F.mean(x, axis=1, keepdims=True).detach()
        self.stdev = F.sqrt(F.var(x, axis=1, keepdims=True) + self.eps).detach()
        z = F.div(F.sub(x, self.mean), self.stdev)
        if self.affine:
            z = F.add(F.mul(z, self.weight), self.bias)
        return z

    def denormalize(self, y) -> Tensor:
        """y = (z' - beta) / (gamma + eps^2) sigma + mu with the statistics of the last
        :meth:`normalize`."""
        if self.mean is None:
            raise RuntimeError(f"{self._label()}: denormalize needs the statistics of a normalize call first; call "
                               "layer(x, 'norm') on the input window before layer(y, 'denorm')")
        y = as_tensor(y)
        if y.shape[0] != self.mean.shape[0]:
            raise input_error(self, y, f"a batch of {self.mean.shape[0]} windows, as the last normalised one")
        if self.affine:
            y = F.div(F.sub(y, self.bias), self.weight + self.eps * self.eps)
        return F.add(F.mul(y, self.stdev), self.mean)

    def compute_output_shape(self, input_shape):
        return check_shape_ndim(self, input_shape, 3, self._expected())

    def get_config(self) -> dict:
        return {"num_features": self.num_features, "eps": self.eps, "affine": self.affine, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}" + ("" if self.affine else ", affine=False")
