"""Sparse autoencoders for dictionary learning on a model's activations (Bricken et al., 2023,
"Towards monosemanticity"; Gao et al., 2024, "Scaling and evaluating sparse autoencoders"):

    f     = sigma((x - b_dec) W_enc + b_enc)         features (n, d_sae)
    x_hat = f W_dec + b_dec                          reconstruction (n, d_in)

sigma is ReLU; top-k (Gao et al.): ReLU of the k largest pre-activations of each row, the
others set to 0; or JumpReLU (Rajamanoharan et al., 2024): z H(z - theta_i), a learned threshold
theta_i = exp(log_threshold_i) per feature. The decoder bias is also subtracted before the encoder (the "pre-encoder
bias", turned off with ``subtract_decoder_bias=False``). Each row W_dec[i] (d_in,) is feature
i's direction in activation space, kept at unit norm (:meth:`SparseAutoencoder.normalize_decoder`
after each optimiser step, :meth:`~SparseAutoencoder.remove_parallel_gradient` before it). The cost is

    L = mean_n ||x - x_hat||^2 + l1_coefficient * mean_n sum_i |f_i| ||W_dec[i]||

(the norm factor keeps the penalty honest if the rows drift off unit norm); JumpReLU's penalty is
L0 instead, mean_n sum_i H(z_i - theta_i). H has no useful derivative, so JumpReLU trains theta
with the paper's straight-through pseudo-derivatives, with a rectangle kernel of width
``bandwidth`` e: d f_i / d theta_i = -(theta_i / e) 1[|z_i - theta_i| < e / 2] and
d H(z_i - theta_i) / d theta_i = -(1 / e) 1[|z_i - theta_i| < e / 2] (z gets H(z - theta) only).
The encoder starts
as the decoder's transpose (Gao et al.). :class:`FeatureActivity` counts how long each feature
has not fired, to find dead ones; :mod:`lamina.train.sparse_autoencoder` trains and resamples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["ACTIVATIONS", "FeatureActivity", "SAEOutput", "SparseAutoencoder"]

ACTIVATIONS = ("relu", "topk", "jumprelu")


@dataclass
class SAEOutput:
    """One pass: ``loss`` = ``mse`` + l1_coefficient * ``sparsity`` (scalar tensors), the
    ``features`` f and the ``reconstruction`` x_hat (tensors on the graph)."""

    loss: Tensor
    mse: Tensor
    sparsity: Tensor
    features: Tensor
    reconstruction: Tensor


@register_layer
class SparseAutoencoder(Module):
    """A sparse autoencoder over activations of width ``d_in`` with ``d_sae`` features (see the
    module docstring). ``activation``: 'relu', 'topk' (then ``k``, 1 <= k <= d_sae, features
    fire per row) or 'jumprelu' (thresholds starting at ``threshold``, pseudo-derivatives of
    kernel width ``bandwidth``); ``l1_coefficient``: the weight of the sparsity penalty (L1, or
    L0 for JumpReLU; top-k models usually train with 0). Parameters: ``W_enc`` (d_in, d_sae),
    ``b_enc`` (d_sae,), ``W_dec`` (d_sae, d_in), ``b_dec`` (d_in,), and ``log_threshold``
    (d_sae,) for JumpReLU. Calling the model returns the reconstruction."""

    def __init__(self, d_in: int, d_sae: int, activation: str = "relu", k: int | None = None,
                 l1_coefficient: float = 1e-3, subtract_decoder_bias: bool = True, threshold: float = 1e-3,
                 bandwidth: float = 1e-3, name: str | None = None):
        super().__init__(name=name)
        self.d_in = positive_int(d_in, "SparseAutoencoder: d_in")
        self.d_sae = positive_int(d_sae, "SparseAutoencoder: d_sae")
        if activation not in ACTIVATIONS:
            raise ValueError(f"SparseAutoencoder: activation must be one of {ACTIVATIONS}, got {activation!r}")
        if activation == "topk":
            if k is None:
                raise ValueError("SparseAutoencoder: activation='topk' needs k, the number of features kept per row")
            k = positive_int(k, "SparseAutoencoder: k")
            if k > self.d_sae:
                raise ValueError(f"SparseAutoencoder: top-k with k={k} is larger than d_sae={self.d_sae}")
        self.activation, self.k = activation, k
        if l1_coefficient < 0:
            raise ValueError(f"SparseAutoencoder: l1_coefficient must be >= 0, got {l1_coefficient}")
        self.l1_coefficient = float(l1_coefficient)
        self.subtract_decoder_bias = bool(subtract_decoder_bias)
        if threshold <= 0 or bandwidth <= 0:
            raise ValueError(f"SparseAutoencoder: threshold and bandwidth must be > 0, got {threshold} and {bandwidth}")
        self.threshold, self.bandwidth = float(threshold), float(bandwidth)
        dtype = backend.get_default_dtype()
        directions = backend.xp.asarray(backend.rng().standard_normal((self.d_sae, self.d_in)), dtype=dtype)
        directions = directions / backend.xp.linalg.norm(directions, axis=1, keepdims=True)
        self.add_parameter("W_enc", backend.xp.ascontiguousarray(directions.T))
        self.add_parameter("b_enc", backend.xp.zeros(self.d_sae, dtype=dtype))
        self.add_parameter("W_dec", directions)
        self.add_parameter("b_dec", backend.xp.zeros(self.d_in, dtype=dtype))
        if activation == "jumprelu":
            self.add_parameter("log_threshold", backend.xp.full(self.d_sae, np.log(self.threshold), dtype=dtype))
        self.built = True

    def _check(self, x: Tensor, width: int, what: str) -> None:
        if x.ndim < 1 or x.shape[-1] != width:
            raise ShapeError(f"{self._label()}: expected {what} of width {width} on the last axis, got shape {x.shape}")

    def pre_activations(self, x) -> Tensor:
        """(x - b_dec) W_enc + b_enc."""
        x = as_tensor(x)
        self._check(x, self.d_in, "activations")
        centred = F.sub(x, self.b_dec) if self.subtract_decoder_bias else x
        return F.add(F.matmul(centred, self.W_enc), self.b_enc)

    def encode(self, x) -> Tensor:
        """The features f (..., d_sae)."""
        return self._features(self.pre_activations(x))

    def _features(self, pre: Tensor) -> Tensor:
        if self.activation == "relu":
            return F.relu(pre)
        if self.activation == "jumprelu":
            theta = F.exp(self.log_threshold)
            gap = self._gap(pre, theta)
            ramp = self._ramp(gap)
            kept = Tensor._wrap((gap.data > 0).astype(pre.dtype))
            # value pre * H(gap); the zero-valued second term carries -theta / e K(gap / e) to theta
            return F.add(F.mul(pre, kept), F.mul(theta, F.sub(ramp, Tensor._wrap(ramp.data))))
        values = backend.xp.asarray(pre.data)
        kept = backend.xp.argpartition(-values, self.k - 1, axis=-1)[..., :self.k]
        mask = backend.xp.zeros(values.shape, dtype=values.dtype)
        backend.xp.put_along_axis(mask, kept, 1, axis=-1)
        return F.relu(F.mul(pre, Tensor._wrap(mask)))

    @staticmethod
    def _gap(pre: Tensor, theta: Tensor) -> Tensor:
        """z - theta with z held constant: JumpReLU's pre-activations get no pseudo-derivative."""
        return F.sub(Tensor._wrap(pre.data), theta)

    def _ramp(self, gap: Tensor) -> Tensor:
        """clip(gap / e + 1/2, 0, 1): its slope is the rectangle kernel K(gap / e) / e."""
        return F.clip(F.add(F.mul(gap, 1.0 / self.bandwidth), 0.5), 0.0, 1.0)

    def _step(self, gap: Tensor) -> Tensor:
        """H(gap) in value, with the ramp's derivative."""
        ramp = self._ramp(gap)
        return F.add(ramp, Tensor._wrap((gap.data > 0).astype(ramp.dtype) - ramp.data))

    def decode(self, features) -> Tensor:
        """f W_dec + b_dec."""
        features = as_tensor(features)
        self._check(features, self.d_sae, "features")
        return F.add(F.matmul(features, self.W_dec), self.b_dec)

    def forward(self, x) -> Tensor:
        return self.decode(self.encode(x))

    def decoder_norms(self) -> Tensor:
        """||W_dec[i]|| for each feature (d_sae,)."""
        return F.sqrt(F.sum(F.square(self.W_dec), axis=1))

    def loss(self, x) -> SAEOutput:
        """The cost of the module docstring on activations ``x`` (n, d_in), with its parts."""
        x = as_tensor(x)
        pre = self.pre_activations(x)
        features = self._features(pre)
        reconstruction = self.decode(features)
        mse = F.mean(F.sum(F.square(F.sub(reconstruction, x)), axis=-1))
        if self.activation == "jumprelu":
            per_feature = self._step(self._gap(pre, F.exp(self.log_threshold)))
        else:
            per_feature = F.mul(F.abs(features), self.decoder_norms())
        sparsity = F.mean(F.sum(per_feature, axis=-1))
        total = F.add(mse, F.mul(sparsity, self.l1_coefficient)) if self.l1_coefficient else mse
        return SAEOutput(total, mse, sparsity, features, reconstruction)

    def normalize_decoder(self) -> None:
        """Scale each row W_dec[i] to unit norm (in place, outside the graph)."""
        with no_grad():
            w = self.W_dec.data
            norms = backend.xp.linalg.norm(w, axis=1, keepdims=True)
            self.W_dec.data = w / backend.xp.maximum(norms, backend.xp.finfo(w.dtype).tiny)

    def remove_parallel_gradient(self) -> None:
        """g_i <- g_i - (g_i . w_i) w_i for each decoder row: the part of W_dec's gradient that would
        only change the rows' norms (which :meth:`normalize_decoder` undoes). Rows taken as unit norm."""
        if self.W_dec.grad is None:
            return
        g = self.W_dec.grad.data if isinstance(self.W_dec.grad, Tensor) else self.W_dec.grad
        w = self.W_dec.data
        self.W_dec.grad = g - (g * w).sum(axis=1, keepdims=True) * w

    def initialize_decoder_bias(self, activations) -> None:
        """Set b_dec to the mean of ``activations`` (n, d_in), the centre the encoder subtracts."""
        data = backend.xp.asarray(activations.data if isinstance(activations, Tensor) else activations)
        self._check(Tensor._wrap(data), self.d_in, "activations")
        self.b_dec.data = data.reshape(-1, self.d_in).mean(axis=0).astype(self.b_dec.dtype)

    def get_config(self) -> dict:
        return {"d_in": self.d_in, "d_sae": self.d_sae, "activation": self.activation, "k": self.k,
                "l1_coefficient": self.l1_coefficient, "subtract_decoder_bias": self.subtract_decoder_bias,
                "threshold": self.threshold, "bandwidth": self.bandwidth, "name": self.name}

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def extra_repr(self) -> str:
        k = f", k={self.k}" if self.activation == "topk" else ""
        return f"d_in={self.d_in}, d_sae={self.d_sae}, activation={self.activation!r}{k}"


class FeatureActivity:
    """How many samples each of ``d_sae`` features has gone without firing (f_i > 0), and how often it fired."""

    def __init__(self, d_sae: int):
        self.samples_since_fired = np.zeros(d_sae, dtype=np.int64)
        self.fired = np.zeros(d_sae, dtype=np.int64)
        self.samples = 0

    def update(self, features) -> None:
        """Count one batch of features (n, d_sae)."""
        f = backend.to_numpy(features.data if isinstance(features, Tensor) else features)
        f = f.reshape(-1, f.shape[-1])
        active = f > 0
        fired = active.any(axis=0)
        self.fired += active.sum(axis=0)
        self.samples += f.shape[0]
        self.samples_since_fired += f.shape[0]
        if fired.any():
            last = f.shape[0] - 1 - np.argmax(active[::-1], axis=0)     # each feature's last row that fired
            self.samples_since_fired[fired] = (f.shape[0] - 1 - last)[fired]

    def dead(self, after: int) -> np.ndarray:
        """A mask of the features silent for the last ``after`` samples or more."""
        return self.samples_since_fired >= after

    def frequency(self) -> np.ndarray:
        """The fraction of samples on which each feature fired."""
        return self.fired / max(self.samples, 1)

    def reset(self, features: np.ndarray) -> None:
        """Start counting again for ``features`` (a mask or indices), e.g. after resampling them."""
        self.samples_since_fired[features] = 0
