"""TabNet (Arik & Pfister 2021, "TabNet: Attentive Interpretable Tabular Learning"), in the
layout of the pytorch-tabnet reference.

    x     = BatchNorm(x)                                  (N, D)
    a     = FeatureTransformer_0(x)[:, n_d:]              prior P = 1
    step i = 1 .. n_steps:
      M_i = sparsemax(P * GBN(a W_i))                     the attentive transformer: a mask over features
      P   = P * (gamma - M_i)                             features used already are used less
      h   = FeatureTransformer_i(M_i * x)
      d_i = ReLU(h[:, :n_d]),  a = h[:, n_d:]
    y     = (sum_i d_i) W_out

A feature transformer is GLU layers, GLU(x) = u * sigmoid(v) for (u ; v) = GBN(x W): the
first ``n_shared`` weights are shared by every step, the next ``n_independent`` are the
step's own; from the second layer on, each adds its input and scales by sqrt(0.5). Ghost
batch norm (GBN) normalises each virtual batch of ``virtual_batch_size`` rows with its own
statistics in training (running statistics shared). The sparsity regulariser is the masks'
mean entropy, mean_i mean_n sum_j -M_ij log(M_ij + eps); feature importances are
sum_i M_i * sum_c d_ic, summed over the samples and normalised to sum to one.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.models.tabular_baselines import torch_style_dense
from lamina.nn import ModuleList
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.layer_functions import batch_norm
from lamina.nn.module import Module
from lamina.nn.tabular import check_numbers

__all__ = ["GhostBatchNorm", "TabNet"]

ENTROPY_EPS = 1e-15


@register_layer
class GhostBatchNorm(Module):
    """Batch norm over (N, C) applied to ``ceil(N / virtual_batch_size)`` consecutive chunks of
    about equal size (as ``torch.chunk`` splits), each with its own batch statistics in training;
    the running statistics (PyTorch's ``momentum``: running = (1 - m) running + m batch) are
    updated once per chunk. In evaluation all rows use the running statistics."""

    def __init__(self, num_features: int, virtual_batch_size: int = 128, momentum: float = 0.01,
                 eps: float = 1e-5, name: str | None = None):
        super().__init__(name=name)
        self.num_features = positive_int(num_features, "GhostBatchNorm: num_features")
        self.virtual_batch_size = positive_int(virtual_batch_size, "GhostBatchNorm: virtual_batch_size")
        if not 0 < momentum <= 1:
            raise ValueError(f"GhostBatchNorm: momentum must be in (0, 1], got {momentum!r}")
        self.momentum, self.eps = float(momentum), float(eps)
        xp, dtype = backend.xp, backend.get_default_dtype()
        self.add_parameter("weight", xp.ones((num_features,), dtype=dtype))
        self.add_parameter("bias", xp.zeros((num_features,), dtype=dtype))
        self.register_buffer("running_mean", xp.zeros((num_features,), dtype=dtype))
        self.register_buffer("running_var", xp.ones((num_features,), dtype=dtype))
        self.built = True

    def _normalize(self, x) -> Tensor:
        return batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, training=self.training,
                          momentum=self.momentum, eps=self.eps)

    def forward(self, x) -> Tensor:
        if not self.training:
            return self._normalize(x)
        n = x.shape[0]
        size = math.ceil(n / math.ceil(n / self.virtual_batch_size))
        chunks = [x[start:start + size] for start in range(0, n, size)]
        if len(chunks) == 1:
            return self._normalize(x)
        return F.concat([self._normalize(chunk) for chunk in chunks], axis=0)


class _GLULayer(Module):
    def __init__(self, n_in: int, n_out: int, linear, virtual_batch_size: int, momentum: float):
        super().__init__()
        self.linear = linear if linear is not None else _glu_linear(n_in, n_out)
        self.normalization = GhostBatchNorm(2 * n_out, virtual_batch_size, momentum)
        self.n_out = n_out
        self.built = True

    def forward(self, x) -> Tensor:
        h = self.normalization(self.linear(x))
        return h[:, :self.n_out] * F.sigmoid(h[:, self.n_out:])


def _scaled_xavier(layer, gain: float) -> None:
    n_in, n_out = layer.weight.shape
    std = gain * math.sqrt(2.0 / (n_in + n_out))
    layer.weight.data[...] = backend.rng().standard_normal(layer.weight.shape) * std


def _glu_linear(n_in: int, n_out: int):
    """x W, W (n_in, 2 n_out), no bias, Xavier-normal with the reference's gain."""
    layer = torch_style_dense(n_in, 2 * n_out, use_bias=False)
    _scaled_xavier(layer, math.sqrt((n_in + 2 * n_out) / math.sqrt(n_in)))
    return layer


class _FeatureTransformer(Module):
    def __init__(self, n_in: int, n_out: int, shared: list, n_independent: int, virtual_batch_size: int,
                 momentum: float):
        super().__init__()
        layers, width = [], n_in
        for linear in shared:
            layers.append(_GLULayer(width, n_out, linear, virtual_batch_size, momentum))
            width = n_out
        for _ in range(n_independent):
            layers.append(_GLULayer(width, n_out, None, virtual_batch_size, momentum))
            width = n_out
        self.layers = ModuleList(layers)
        self.built = True

    def forward(self, x) -> Tensor:
        scale = math.sqrt(0.5)
        x = self.layers[0](x)
        for layer in list(self.layers)[1:]:
            x = (x + layer(x)) * scale
        return x


class _AttentiveTransformer(Module):
    def __init__(self, n_a: int, n_features: int, virtual_batch_size: int, momentum: float, mask_type: str):
        super().__init__()
        self.linear = torch_style_dense(n_a, n_features, use_bias=False)
        _scaled_xavier(self.linear, math.sqrt((n_a + n_features) / math.sqrt(4 * n_a)))
        self.normalization = GhostBatchNorm(n_features, virtual_batch_size, momentum)
        self.selector = F.sparsemax if mask_type == "sparsemax" else F.entmax15
        self.built = True

    def forward(self, prior, a) -> Tensor:
        return self.selector(self.normalization(self.linear(a)) * prior)


@register_layer
class TabNet(Module):
    """x (N, input_dim) -> (N, output_dim) (module docstring). :meth:`forward_with_sparsity` gives
    the output and the sparsity regulariser (add ``lambda_sparse`` times it to the loss),
    :meth:`explain` the per-sample importances and the masks, :meth:`feature_importances` the
    importances of a data set. ``momentum`` is PyTorch's (the weight of each new batch in the
    running statistics); ``mask_type="entmax"`` selects with 1.5-entmax instead of sparsemax.
    Categorical features enter as numbers (or one-hot columns): there is no embedding stage."""

    def __init__(self, input_dim: int, output_dim: int, n_d: int = 8, n_a: int = 8, n_steps: int = 3,
                 gamma: float = 1.3, n_independent: int = 2, n_shared: int = 2, virtual_batch_size: int = 128,
                 momentum: float = 0.02, mask_type: str = "sparsemax", name: str | None = None):
        super().__init__(name=name)
        self.input_dim = positive_int(input_dim, "TabNet: input_dim")
        self.output_dim = positive_int(output_dim, "TabNet: output_dim")
        self.n_d, self.n_a = positive_int(n_d, "TabNet: n_d"), positive_int(n_a, "TabNet: n_a")
        self.n_steps = positive_int(n_steps, "TabNet: n_steps")
        if mask_type not in ("sparsemax", "entmax"):
            raise ValueError(f"TabNet: mask_type must be 'sparsemax' or 'entmax', got {mask_type!r}")
        if not gamma >= 1:
            raise ValueError(f"TabNet: gamma (the prior relaxation) must be at least 1, got {gamma!r}")
        for value, what in ((n_independent, "n_independent"), (n_shared, "n_shared")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TabNet: {what} must be a non-negative int, got {value!r}")
        if n_independent + n_shared == 0:
            raise ValueError("TabNet: n_independent + n_shared must be at least 1")
        self.gamma, self.n_independent, self.n_shared = float(gamma), n_independent, n_shared
        self.virtual_batch_size = positive_int(virtual_batch_size, "TabNet: virtual_batch_size")
        self.momentum, self.mask_type = float(momentum), mask_type
        width = n_d + n_a
        # a plain batch norm of the whole batch: one virtual batch as large as any batch
        self.initial_normalization = GhostBatchNorm(input_dim, virtual_batch_size=2**62, momentum=0.01)
        self.shared = ModuleList([_glu_linear(input_dim if i == 0 else width, width) for i in range(n_shared)])
        args = (n_independent, virtual_batch_size, momentum)
        self.initial_splitter = _FeatureTransformer(input_dim, width, list(self.shared), *args)
        self.feature_transformers = ModuleList([_FeatureTransformer(input_dim, width, list(self.shared), *args)
                                                for _ in range(n_steps)])
        self.attentive_transformers = ModuleList([
            _AttentiveTransformer(n_a, input_dim, virtual_batch_size, momentum, mask_type) for _ in range(n_steps)])
        self.final_mapping = torch_style_dense(n_d, output_dim, use_bias=False)
        _scaled_xavier(self.final_mapping, math.sqrt((n_d + output_dim) / math.sqrt(4 * n_d)))
        self.built = True

    def _steps(self, x):
        """Yields (mask, decision output) of every step."""
        x = self.initial_normalization(check_numbers(self._label(), x, self.input_dim))
        prior = Tensor._wrap(backend.xp.ones(x.shape, dtype=x.dtype))
        a = self.initial_splitter(x)[:, self.n_d:]
        for attentive, transformer in zip(self.attentive_transformers, self.feature_transformers):
            mask = attentive(prior, a)
            prior = prior * (self.gamma - mask)
            h = transformer(mask * x)
            a = h[:, self.n_d:]
            yield mask, F.relu(h[:, :self.n_d])

    def forward_with_sparsity(self, x) -> tuple[Tensor, Tensor]:
        """(output (N, output_dim), the masks' mean entropy, a scalar tensor)."""
        total, entropy = None, None
        for mask, decision in self._steps(x):
            total = decision if total is None else total + decision
            step = -(mask * F.log(mask + ENTROPY_EPS)).sum(axis=1).mean()
            entropy = step if entropy is None else entropy + step
        return self.final_mapping(total), entropy / self.n_steps

    def forward(self, x) -> Tensor:
        return self.forward_with_sparsity(x)[0]

    def explain(self, x) -> tuple[numpy.ndarray, list[numpy.ndarray]]:
        """(importances (N, input_dim), the masks of the steps, each (N, input_dim)) of the rows of
        ``x``, computed without recording a graph; importances sum_i M_i * sum_c d_ic per row."""
        with no_grad():
            importances, masks = 0, []
            for mask, decision in self._steps(x):
                m = backend.to_numpy(mask.data)
                masks.append(m)
                importances = importances + m * backend.to_numpy(decision.data).sum(axis=1, keepdims=True)
        return importances, masks

    def feature_importances(self, x) -> numpy.ndarray:
        """The importance of each feature over the rows of ``x``, summing to one (in float64, so that
        the sum is one to rounding whatever the model's dtype)."""
        totals = self.explain(x)[0].sum(axis=0, dtype=numpy.float64)
        return totals / totals.sum()

    def get_config(self) -> dict:
        return {"input_dim": self.input_dim, "output_dim": self.output_dim, "n_d": self.n_d, "n_a": self.n_a,
                "n_steps": self.n_steps, "gamma": self.gamma, "n_independent": self.n_independent,
                "n_shared": self.n_shared, "virtual_batch_size": self.virtual_batch_size,
                "momentum": self.momentum, "mask_type": self.mask_type, "name": self.name}
