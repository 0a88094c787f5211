"""Glow (Kingma and Dhariwal 2018): a multi-scale normalizing flow for NHWC images.

Each of ``levels`` levels squeezes the image (h, w, c) -> (h/2, w/2, 4c), applies ``depth``
steps of flow, each ActNorm -> invertible 1x1 convolution -> affine coupling, and (but the
last) splits off half the channels, which are scored by a Gaussian whose mean and log-scale
a zero-initialised convolution computes from the kept half. The density is

    log p(x) = sum_levels log N(z_split; mu(z_kept), sigma(z_kept)) + log N(z_top; 0, I)
               + sum_steps log|det J_step|.

Every image layer follows the vector flows' protocol (:mod:`lamina.models.flows`):
``forward(x)`` -> (y, log|det dy/dx|) and ``inverse(y)`` -> (x, log|det dx/dy|), one value per
image. Images come in after :func:`dequantize` (values in [-1/2, 1/2)), so that
:meth:`Glow.bits_per_dim` is the discrete data's code length.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg

from lamina import backend, linalg
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.flows import _CheckedFlowLayer
from lamina.nn import Conv2D, ModuleList, Sequential
from lamina.nn.layer import describe, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["ActNorm2D", "AffineCoupling2D", "Glow", "GlowStep", "InvertibleConv1x1", "SplitPrior", "Squeeze2D",
           "dequantize", "gaussian_log_prob"]

LOG_2PI = math.log(2.0 * math.pi)


def _per_image(x: Tensor, value) -> Tensor:
    """``value`` (a scalar tensor or number) repeated once per image of ``x``."""
    return value + Tensor._wrap(backend.xp.zeros(x.shape[0], dtype=x.dtype))


def gaussian_log_prob(z, mean=None, log_scale=None) -> Tensor:
    """sum over every axis but the first of log N(z; mean, e^log_scale) (standard normal by default)."""
    z = as_tensor(z)
    centred = z if mean is None else z - mean
    if log_scale is None:
        terms = -0.5 * (LOG_2PI + centred * centred)
    else:
        terms = -0.5 * (LOG_2PI + centred * centred * F.exp(-2.0 * log_scale)) - log_scale
    return terms.reshape(z.shape[0], -1).sum(axis=1)


def dequantize(images, n_bits: int = 8, input_bits: int = 8, rng=None) -> np.ndarray:
    """Integer images (values in [0, 2^input_bits)) as continuous values in [-1/2, 1/2):
    reduced to ``n_bits`` (k -> floor(k / 2^(input_bits - n_bits))), then
    x = (k + u) / 2^n_bits - 1/2 with u ~ U[0, 1) (uniform dequantization), as float64."""
    n_bits = positive_int(n_bits, "dequantize: n_bits")
    input_bits = positive_int(input_bits, "dequantize: input_bits")
    if n_bits > input_bits:
        raise ValueError(f"dequantize: n_bits ({n_bits}) cannot exceed input_bits ({input_bits})")
    k = np.asarray(images)
    if k.size and (k.min() < 0 or k.max() >= 2 ** input_bits or np.any(k != np.floor(k))):
        raise ValueError(f"dequantize: images must hold integers in [0, {2 ** input_bits}), got values in "
                         f"[{k.min()}, {k.max()}]")
    k = np.floor(k / 2 ** (input_bits - n_bits))
    rng = backend.rng() if rng is None else rng
    return (k + rng.random(k.shape)) / 2 ** n_bits - 0.5


class ImageFlowLayer(_CheckedFlowLayer):
    """The base of the image flow layers: NHWC inputs, ``forward``/``inverse`` returning the
    output and the log-determinant per image. Subclasses implement ``_forward``/``_inverse``."""

    def build(self, input_shape) -> None:
        self.image_shape = self._image_shape(input_shape)
        self.built = True

    def _image_shape(self, input_shape) -> tuple[int, int, int]:
        shape = tuple(input_shape) if input_shape is not None else ()
        if len(shape) != 4 or any(n is None for n in shape[1:]):
            raise ShapeError(f"{self._label()}: got an input shape {shape}; expected (batch, height, width, channels)")
        return tuple(int(n) for n in shape[1:])

    def _checked(self, x, method: str) -> Tensor:
        x = as_tensor(x)
        if not self.built:
            self.build(tuple(x.shape))
            self.build_input_shape = (None,) + tuple(x.shape[1:])
        if x.ndim != 4 or x.shape[-1] != self.image_shape[-1]:
            raise ShapeError(f"{self._label()}.{method}: got an input of {describe(x)}; expected (batch, height, "
                             f"width, {self.image_shape[-1]})")
        return x


@register_layer
class ActNorm2D(ImageFlowLayer):
    """ActNorm on images: y = x e^a + b per channel, log|det J| = h w sum_c a_c. a and b are set
    by the first forward pass in training mode so that its batch has zero mean and unit
    variance per channel (over batch, height and width)."""

    def __init__(self, eps: float = 1e-6, name: str | None = None):
        super().__init__(name=name)
        self.eps = float(eps)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        c, dtype = self.image_shape[-1], backend.get_default_dtype()
        self.add_parameter("log_scale", np.zeros(c, dtype=dtype))
        self.add_parameter("bias", np.zeros(c, dtype=dtype))
        self.register_buffer("initialized", np.zeros((), dtype=dtype))

    def get_config(self) -> dict:
        return {"eps": self.eps, "name": self.name}

    def _initialize(self, x: Tensor) -> None:
        data = backend.to_numpy(x.data).reshape(-1, x.shape[-1])
        log_scale = -np.log(data.std(axis=0) + self.eps)
        self.log_scale.data = backend.xp.asarray(log_scale.astype(self.log_scale.dtype))
        self.bias.data = backend.xp.asarray((-data.mean(axis=0) * np.exp(log_scale)).astype(self.bias.dtype))
        self.register_buffer("initialized", np.ones((), dtype=self.initialized.dtype))

    def _log_det(self, x: Tensor) -> Tensor:
        return _per_image(x, self.log_scale.sum() * (x.shape[1] * x.shape[2]))

    def _forward(self, x):
        if self.training and not bool(self.initialized):
            self._initialize(x)
        return x * F.exp(self.log_scale) + self.bias, self._log_det(x)

    def _inverse(self, y):
        return (y - self.bias) * F.exp(-self.log_scale), -self._log_det(y)


@register_layer
class InvertibleConv1x1(ImageFlowLayer):
    """An invertible 1x1 convolution: y_ij = W x_ij at every pixel, log|det J| = h w log|det W|.

    W starts as a random rotation. With ``lu=True`` it is kept as W = P L (U + diag(sign(s) e^log|s|))
    with P a fixed permutation, L unit lower triangular and U strictly upper triangular, so
    that log|det W| = sum log|s| costs O(c) and the inverse needs triangular solves only."""

    def __init__(self, lu: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.lu = bool(lu)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        c, dtype = self.image_shape[-1], backend.get_default_dtype()
        rotation = np.linalg.qr(backend.rng().standard_normal((c, c)))[0]
        if not self.lu:
            self.add_parameter("kernel", rotation.astype(dtype))
            return
        permutation, lower, upper = scipy.linalg.lu(rotation)
        diagonal = np.diag(upper)
        self.register_buffer("permutation", permutation.astype(dtype))
        self.register_buffer("sign_s", np.sign(diagonal).astype(dtype))
        self.register_buffer("lower_mask", np.tril(np.ones((c, c)), -1).astype(dtype))
        self.add_parameter("lower", np.tril(lower, -1).astype(dtype))
        self.add_parameter("upper", np.triu(upper, 1).astype(dtype))
        self.add_parameter("log_s", np.log(np.abs(diagonal)).astype(dtype))

    def weight(self) -> Tensor:
        """W, (c_out, c_in)."""
        if not self.lu:
            return self.kernel
        eye = np.eye(self.image_shape[-1], dtype=self.log_s.dtype)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + F.exp(self.log_s) * self.sign_s * eye
        return F.matmul(F.matmul(self.permutation, lower), upper)

    def log_abs_det_weight(self) -> Tensor:
        """log|det W|."""
        return self.log_s.sum() if self.lu else linalg.slogdet(self.kernel)[1]

    def _forward(self, x):
        y = F.matmul(x, self.weight().T)
        return y, _per_image(x, self.log_abs_det_weight() * (x.shape[1] * x.shape[2]))

    def _inverse(self, y):
        x = F.matmul(y, linalg.inv(self.weight()).T)
        return x, _per_image(y, -self.log_abs_det_weight() * (y.shape[1] * y.shape[2]))

    def get_config(self) -> dict:
        return {"lu": self.lu, "name": self.name}

    def extra_repr(self) -> str:
        return f"lu={self.lu}"


def _zero_conv(channels: int, kernel: int = 3) -> Conv2D:
    return Conv2D(channels, kernel, padding="same", kernel_init="zeros")


@register_layer
class AffineCoupling2D(ImageFlowLayer):
    """Glow's affine coupling over channels: x = (x_a, x_b) (first c // 2 channels, the rest),
    (t, u) = NN(x_a) (interleaved channels of a 3x3 -> 1x1 -> zero-initialised 3x3 conv net),
    y_b = (x_b + t) sigmoid(u + 2), y_a = x_a; log|det J| = sum log sigmoid(u + 2). The layer
    starts close to the identity (scale sigmoid(2) ~ 0.88, shift 0)."""

    def __init__(self, hidden: int = 64, name: str | None = None):
        super().__init__(name=name)
        self.hidden = positive_int(hidden, "AffineCoupling2D: hidden")

    def build(self, input_shape) -> None:
        super().build(input_shape)
        c = self.image_shape[-1]
        if c < 2:
            raise ShapeError(f"{self._label()}: a coupling needs at least 2 channels to split, got input shape "
                             f"{tuple(input_shape)}")
        self.kept = c // 2
        self.net = Sequential(Conv2D(self.hidden, 3, padding="same", activation="relu"),
                              Conv2D(self.hidden, 1, activation="relu"), _zero_conv(2 * (c - self.kept)))
        self.net.build((None,) + self.image_shape[:2] + (self.kept,))

    def _shift_and_log_scale(self, kept: Tensor) -> tuple[Tensor, Tensor]:
        h = self.net(kept)
        return h[..., 0::2], F.log_sigmoid(h[..., 1::2] + 2.0)

    def _forward(self, x):
        kept, moved = x[..., :self.kept], x[..., self.kept:]
        shift, log_scale = self._shift_and_log_scale(kept)
        y = F.concat([kept, (moved + shift) * F.exp(log_scale)], axis=-1)
        return y, log_scale.reshape(x.shape[0], -1).sum(axis=1)

    def _inverse(self, y):
        kept, moved = y[..., :self.kept], y[..., self.kept:]
        shift, log_scale = self._shift_and_log_scale(kept)
        x = F.concat([kept, moved * F.exp(-log_scale) - shift], axis=-1)
        return x, -log_scale.reshape(y.shape[0], -1).sum(axis=1)

    def get_config(self) -> dict:
        return {"hidden": self.hidden, "name": self.name}

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}"


@register_layer
class Squeeze2D(ImageFlowLayer):
    """(h, w, c) -> (h/2, w/2, 4c): each 2x2 block of pixels becomes one pixel's channels
    (channel-major: channel c, then the block's row, then its column); log|det J| = 0."""

    def _checked(self, x, method: str) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4:
            raise ShapeError(f"{self._label()}.{method}: got an input of {describe(x)}; expected (batch, height, "
                             "width, channels)")
        if method == "forward" and (x.shape[1] % 2 or x.shape[2] % 2):
            raise ShapeError(f"{self._label()}: height and width must be divisible by 2 to squeeze, got an image "
                             f"of {x.shape[1]}x{x.shape[2]} (input {describe(x)})")
        if method == "inverse" and x.shape[3] % 4:
            raise ShapeError(f"{self._label()}.inverse: the channel count must be divisible by 4, got {describe(x)}")
        self.built = True
        return x

    def get_config(self) -> dict:
        return {"name": self.name}

    def _forward(self, x):
        n, h, w, c = x.shape
        y = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4).reshape(n, h // 2, w // 2, 4 * c)
        return y, _per_image(x, 0.0)

    def _inverse(self, y):
        n, h, w, c4 = y.shape
        c = c4 // 4
        x = y.reshape(n, h, w, c, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(n, 2 * h, 2 * w, c)
        return x, _per_image(y, 0.0)


@register_layer
class GlowStep(ImageFlowLayer):
    """One step of flow: ActNorm2D -> InvertibleConv1x1 -> AffineCoupling2D."""

    def __init__(self, hidden: int = 64, lu: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.hidden, self.lu = hidden, bool(lu)
        self.layers = ModuleList([ActNorm2D(), InvertibleConv1x1(lu=lu), AffineCoupling2D(hidden)])

    def build(self, input_shape) -> None:
        super().build(input_shape)
        for layer in self.layers:
            layer.build((None,) + self.image_shape)
            layer.build_input_shape = (None,) + self.image_shape

    def get_config(self) -> dict:
        return {"hidden": self.hidden, "lu": self.lu, "name": self.name}

    def _forward(self, x):
        total = _per_image(x, 0.0)
        for layer in self.layers:
            x, step = layer(x)
            total = total + step
        return x, total

    def _inverse(self, y):
        total = _per_image(y, 0.0)
        for layer in reversed(list(self.layers)):
            y, step = layer.inverse(y)
            total = total + step
        return y, total


@register_layer
class SplitPrior(Module):
    """Splits off the last half of the channels, z = (z_kept, z_out), and scores z_out under
    N(mu, e^log_sigma) with (mu, log_sigma) the interleaved channels of a zero-initialised 3x3
    convolution of z_kept (a learned conditional prior; the standard normal at first)."""

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def build(self, input_shape) -> None:
        c = int(input_shape[-1])
        if c < 2:
            raise ShapeError(f"{self._label()}: needs at least 2 channels to split, got input shape "
                             f"{tuple(input_shape)}")
        self.kept = c - c // 2
        self.conv = _zero_conv(2 * (c // 2))
        self.conv.build(tuple(input_shape[:-1]) + (self.kept,))
        self.built = True

    def get_config(self) -> dict:
        return {"name": self.name}

    def prior(self, kept: Tensor) -> tuple[Tensor, Tensor]:
        h = self.conv(kept)
        return h[..., 0::2], h[..., 1::2]

    def forward(self, z) -> tuple[Tensor, Tensor, Tensor]:
        """(z_kept, z_out, log p(z_out | z_kept))."""
        z = as_tensor(z)
        if not self.built:
            self.build(tuple(z.shape))
        kept, out = z[..., :self.kept], z[..., self.kept:]
        mean, log_scale = self.prior(kept)
        return kept, out, gaussian_log_prob(out, mean, log_scale)

    def inverse(self, kept, out=None, temperature: float = 1.0) -> Tensor:
        """z from z_kept and z_out (drawn from the prior, its scale times ``temperature``, when None)."""
        kept = as_tensor(kept)
        if out is None:
            mean, log_scale = self.prior(kept)
            noise = backend.rng().standard_normal(mean.shape).astype(mean.dtype)
            out = mean + F.exp(log_scale) * (temperature * noise)
        return F.concat([kept, as_tensor(out)], axis=-1)


@register_layer
class Glow(Module):
    """Glow with ``levels`` scales of ``depth`` steps (coupling nets of ``hidden`` channels).

    ``forward(x)`` -> (latents, log_det): the split-off latents of each level and the top one
    last, and the steps' summed log-determinant; ``inverse(latents)`` -> x; ``log_prob(x)``;
    ``bits_per_dim(x, n_bits)``; ``sample(n, temperature)``. Inputs (batch, h, w, c) need h and
    w divisible by 2^levels."""

    def __init__(self, levels: int = 3, depth: int = 4, hidden: int = 64, lu: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.levels = positive_int(levels, "Glow: levels")
        self.depth = positive_int(depth, "Glow: depth")
        self.hidden = positive_int(hidden, "Glow: hidden")
        self.lu = bool(lu)
        self.squeeze = Squeeze2D()
        self.steps = ModuleList([ModuleList([GlowStep(hidden, lu=lu) for _ in range(self.depth)])
                                 for _ in range(self.levels)])
        self.splits = ModuleList([SplitPrior() for _ in range(self.levels - 1)])
        self.image_shape: tuple[int, int, int] | None = None

    def build(self, input_shape) -> None:
        shape = tuple(input_shape) if input_shape is not None else ()
        if len(shape) != 4 or any(n is None for n in shape[1:]):
            raise ShapeError(f"{self._label()}: got an input shape {shape}; expected (batch, height, width, channels)")
        h, w, c = (int(n) for n in shape[1:])
        factor = 2 ** self.levels
        if h % factor or w % factor:
            raise ShapeError(f"{self._label()}: height and width must be divisible by 2^levels = {factor} "
                             f"({self.levels} squeezes), got an image of {h}x{w}")
        self.image_shape = (h, w, c)
        with no_grad():
            zero = Tensor._wrap(np.zeros((2, h, w, c), dtype=backend.get_default_dtype()))
            was_training = self.training
            self.eval()
            self._encode(zero)
            self.train(was_training)
        self.built = True
        self.build_input_shape = (None, h, w, c)

    def _input(self, x) -> Tensor:
        x = as_tensor(x)
        if not self.built:
            self.build(tuple(x.shape))
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ShapeError(f"{self._label()}: got an input of {describe(x)}; expected (batch, "
                             f"{', '.join(map(str, self.image_shape))})")
        return x

    def _encode(self, x: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """(latents, log_det of the steps, sum of the split priors' log-densities)."""
        latents, log_det, prior = [], _per_image(x, 0.0), _per_image(x, 0.0)
        for level, steps in enumerate(self.steps):
            x, _ = self.squeeze(x)
            for step in steps:
                x, step_log_det = step(x)
                log_det = log_det + step_log_det
            if level < self.levels - 1:
                x, out, log_p = self.splits[level](x)
                latents.append(out)
                prior = prior + log_p
        latents.append(x)
        return latents, log_det, prior

    def forward(self, x) -> tuple[list[Tensor], Tensor]:
        latents, log_det, _ = self._encode(self._input(x))
        return latents, log_det

    def log_prob(self, x) -> Tensor:
        """log p(x) = split priors' log-densities + log N(z_top; 0, I) + the steps' log|det J|, per image."""
        latents, log_det, prior = self._encode(self._input(x))
        return prior + gaussian_log_prob(latents[-1]) + log_det

    def bits_per_dim(self, x, n_bits: int = 8) -> Tensor:
        """The discrete images' code length in bits per dimension, per image:
        (-log p(x) + D log 2^n_bits) / (D log 2), x dequantized with ``n_bits``."""
        x = self._input(x)
        dims = int(np.prod(x.shape[1:]))
        return (-self.log_prob(x) + dims * n_bits * math.log(2.0)) / (dims * math.log(2.0))

    def _decode(self, top: Tensor, latents: list[Tensor] | None, temperature: float) -> Tensor:
        x = top
        for level in reversed(range(self.levels)):
            if level < self.levels - 1:
                x = self.splits[level].inverse(x, None if latents is None else latents[level], temperature)
            for step in reversed(list(self.steps[level])):
                x, _ = step.inverse(x)
            x, _ = self.squeeze.inverse(x)
        return x

    def inverse(self, latents) -> Tensor:
        """The image whose :meth:`forward` latents are ``latents``."""
        if not self.built:
            raise RuntimeError(f"{self._label()}.inverse: build the model (or call it) first")
        if len(latents) != self.levels:
            raise ValueError(f"{self._label()}.inverse: expected {self.levels} latents (one per level), "
                             f"got {len(latents)}")
        latents = [as_tensor(z) for z in latents]
        return self._decode(latents[-1], latents[:-1], 1.0)

    def latent_shape(self) -> tuple[int, int, int]:
        """The top latent's (h, w, c)."""
        h, w, c = self.image_shape
        for level in range(self.levels):
            h, w, c = h // 2, w // 2, 4 * c
            if level < self.levels - 1:
                c = c - c // 2
        return h, w, c

    def sample(self, num_samples: int, temperature: float = 1.0, dtype=None) -> Tensor:
        """``num_samples`` images: every latent drawn from its prior with the scale times
        ``temperature`` (below 1: smoother, more typical images), off the graph."""
        positive_int(num_samples, f"{self._label()}.sample: num_samples")
        if not self.built:
            raise RuntimeError(f"{self._label()}.sample: build the model (or call it) first")
        if dtype is None:
            dtype = self.parameters()[0].dtype
        with no_grad():
            shape = (num_samples,) + self.latent_shape()
            top = Tensor._wrap((temperature * backend.rng().standard_normal(shape)).astype(dtype))
            return self._decode(top, None, float(temperature))

    def get_config(self) -> dict:
        return {"levels": self.levels, "depth": self.depth, "hidden": self.hidden, "lu": self.lu, "name": self.name}

    def extra_repr(self) -> str:
        return f"levels={self.levels}, depth={self.depth}, hidden={self.hidden}"
