"""Output heads of evidential networks (:mod:`lamina.functional.evidential`).

:class:`DirichletHead` maps features (N, F) through one dense layer to evidence e >= 0 and
returns the Dirichlet parameters alpha = e + 1 (N, K) (Sensoy et al., 2018).
:class:`NormalInverseGammaHead` maps them to the four (N, D) parameters of a
Normal-Inverse-Gamma distribution (Amini et al., 2020):

    gamma = z_1,   nu = softplus(z_2),   alpha = softplus(z_3) + 1,   beta = softplus(z_4).
"""

from __future__ import annotations

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import init as initializers
from lamina.nn.dense import linear
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["DirichletHead", "NormalInverseGammaHead"]

EVIDENCE_FUNCTIONS = ("softplus", "relu", "exp")
_EXP_LIMIT = 10.0                                          # exp evidence is taken of logits clipped to +-10


class _DenseHead(Module):
    use_bias = True                                        # read by add_weight_and_bias
    bias_init = "zeros"
    outputs_per_unit = 1

    def _build_dense(self, input_shape, units: int) -> None:
        shape = tuple(input_shape)
        if len(shape) != 2 or shape[-1] is None:
            raise ShapeError(f"{self._label()}: expected an input shape (batch, features) with known features, "
                             f"got {shape}")
        initializers.add_weight_and_bias(self, (shape[-1], units), units)

    def _dense(self, x) -> Tensor:
        x = as_tensor(x)
        n_in = self.weight.shape[0]
        if x.ndim != 2 or x.shape[-1] != n_in:
            raise input_error(self, x, f"(batch, {n_in}) features")
        return linear(x, self.weight, self.bias)


@register_layer
class DirichletHead(_DenseHead):
    """(N, F) features -> Dirichlet parameters alpha = evidence + 1, (N, ``num_classes``).
    ``evidence``: ``'softplus'``, ``'relu'`` or ``'exp'`` (of the logits clipped to [-10, 10])."""

    def __init__(self, num_classes: int, evidence: str = "softplus", kernel_init="xavier_uniform",
                 name: str | None = None):
        super().__init__(name=name)
        self.num_classes = positive_int(num_classes, "DirichletHead: num_classes")
        if evidence not in EVIDENCE_FUNCTIONS:
            raise ValueError(f"DirichletHead: evidence must be one of {EVIDENCE_FUNCTIONS}, got {evidence!r}")
        self.evidence = evidence
        self.kernel_init = kernel_init
        initializers.get(kernel_init)

    def build(self, input_shape) -> None:
        self._build_dense(input_shape, self.num_classes)

    def forward(self, x) -> Tensor:
        logits = self._dense(x)
        if self.evidence == "softplus":
            evidence = F.softplus(logits)
        elif self.evidence == "relu":
            evidence = F.relu(logits)
        else:
            evidence = F.exp(F.clip(logits, -_EXP_LIMIT, _EXP_LIMIT))
        return evidence + 1.0

    def compute_output_shape(self, input_shape):
        return (tuple(input_shape)[0], self.num_classes)

    def get_config(self) -> dict:
        return {"num_classes": self.num_classes, "evidence": self.evidence,
                "kernel_init": initializers.serialize(self.kernel_init), "name": self.name}

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, evidence={self.evidence}"


@register_layer
class NormalInverseGammaHead(_DenseHead):
    """(N, F) features -> (gamma, nu, alpha, beta), each (N, ``out_dim``), with nu, beta > 0 and
    alpha > 1 (module notes), ready for :func:`lamina.functional.evidential_regression_loss`."""

    def __init__(self, out_dim: int = 1, kernel_init="xavier_uniform", name: str | None = None):
        super().__init__(name=name)
        self.out_dim = positive_int(out_dim, "NormalInverseGammaHead: out_dim")
        self.kernel_init = kernel_init
        initializers.get(kernel_init)

    def build(self, input_shape) -> None:
        self._build_dense(input_shape, 4 * self.out_dim)

    def forward(self, x) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        out = self._dense(x)
        d = self.out_dim
        gamma = out[:, :d]
        nu = F.softplus(out[:, d:2 * d])
        alpha = F.softplus(out[:, 2 * d:3 * d]) + 1.0
        beta = F.softplus(out[:, 3 * d:])
        return gamma, nu, alpha, beta

    def compute_output_shape(self, input_shape):
        shape = (tuple(input_shape)[0], self.out_dim)
        return shape, shape, shape, shape

    def get_config(self) -> dict:
        return {"out_dim": self.out_dim, "kernel_init": initializers.serialize(self.kernel_init),
                "name": self.name}

    def extra_repr(self) -> str:
        return f"out_dim={self.out_dim}"
