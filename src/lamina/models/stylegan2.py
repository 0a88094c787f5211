"""StyleGAN2's building blocks (Karras et al. 2020, "Analyzing and Improving the Image Quality
of StyleGAN") and a small generator made of them, for 8x8 to 32x32 images.

Equalized learning rate. A weight is stored as w ~ N(0, 1) / lr_mul and used as
w lr_mul / sqrt(fan_in) at every call (fan_in = the inputs one output sees: n_in for a dense
layer, f_h f_w c_in for a convolution); a bias b is used as b lr_mul. Every weight then
moves at the same speed under Adam whatever its layer's size, and lr_mul < 1 slows a whole
layer down (0.01 in the mapping network).

Mapping network: z -> z / sqrt(mean(z^2) + 1e-8) (pixel norm), then 8 equalized dense layers
with lr_mul 0.01, each followed by a leaky ReLU (slope 0.2) times sqrt(2) (which keeps the
activations' second moment).

Modulated convolution, for a style s = A(w) per sample (A an equalized dense layer of bias 1):

    w'_nkijc = w_kijc s_nc / sqrt(f^2 c_in)           (modulation)
    w''_nkijc = w'_nkijc / sqrt(sum_ijc w'_nkijc^2 + 1e-8)   (demodulation)

then each sample is convolved with its own weights w''_n: one grouped convolution with N
groups over the batch laid along the channels (``fused=True``), or, equivalently,
conv(x s_n, w / sqrt(f^2 c_in)) scaled by the demodulation factors per output channel
(``fused=False``).

A synthesis layer is a modulated 3x3 convolution, then noise n ~ N(0, 1) (one value per
pixel, shared by the channels) times a learned strength (0 at first), a bias, and the leaky
ReLU times sqrt(2). ToRGB is a modulated 1x1 convolution without demodulation, plus a bias.
The generator (skip architecture): a learned 4x4 constant, at 4x4 one synthesis layer and a
ToRGB; at each larger resolution the features are upsampled x2, pass two synthesis layers and
a ToRGB, and the image is the upsampled image so far plus that ToRGB's output. Here the x2
upsampling (features and images) is bilinear; the reference code fuses it into a transposed
convolution followed by a [1, 3, 3, 1] blur, equal to it away from the borders.

Training: :func:`lamina.functional.logistic_d_loss` / :func:`~lamina.functional.logistic_g_loss`
(the non-saturating logistic costs), :func:`lamina.functional.r1_penalty` on real images, and
the path-length regulariser of the generator (:class:`PathLengthPenalty`): for images
x = g(w) of H x W pixels and y ~ N(0, I) / sqrt(H W),

    a_n = sqrt(mean over the layers' ws of ||d(sum x y) / dw||^2),   a <- a + 0.01 (mean_n a_n - a),
    penalty = mean_n (a_n - a)^2

which pulls every Jacobian J_w towards one common scale (times pl_weight = 2 in the paper).
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, enable_grad, grad
from lamina.errors import ShapeError
from lamina.nn import Module
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import as_tensor

__all__ = [
    "EqualizedConv2D", "EqualizedDense", "MappingNetwork", "ModulatedConv2D", "NoiseInjection", "PathLengthPenalty",
    "StyleGAN2Generator", "SynthesisLayer", "ToRGB", "modulated_conv2d", "pixel_norm",
]

SLOPE = 0.2
GAIN = math.sqrt(2.0)
ACTIVATIONS = (None, "lrelu")


def _randn(shape) -> object:
    return backend.xp.asarray(backend.rng().standard_normal(shape), dtype=backend.get_default_dtype())


def _check_lr_multiplier(value, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{who}: lr_multiplier must be a positive number, got {value!r}")
    return float(value)


def _check_activation(value, who: str) -> str | None:
    if value not in ACTIVATIONS:
        raise ValueError(f"{who}: activation must be one of {ACTIVATIONS}, got {value!r}")
    return value


def _activate(z: Tensor, activation: str | None) -> Tensor:
    return F.leaky_relu(z, SLOPE) * GAIN if activation == "lrelu" else z


def pixel_norm(z, eps: float = 1e-8) -> Tensor:
    """z / sqrt(mean(z^2 over the last axis) + eps): every code scaled to a unit second moment."""
    z = as_tensor(z)
    return z * ((z * z).mean(axis=-1, keepdims=True) + eps).rsqrt()


@register_layer
class EqualizedDense(Module):
    """y = x (W lr_mul / sqrt(n_in)) + b lr_mul, then (``activation='lrelu'``) the leaky ReLU
    times sqrt(2). ``weight`` (n_in, units) starts N(0, 1) / lr_mul, ``bias`` (units,) at
    ``bias_init`` / lr_mul (so the bias used starts at ``bias_init``)."""

    default_name = "equalized_dense"
    streamable = True

    def __init__(self, units: int, lr_multiplier: float = 1.0, bias_init: float = 0.0, use_bias: bool = True,
                 activation: str | None = None, name: str | None = None):
        super().__init__(name=name)
        self.units = positive_int(units, "EqualizedDense: units")
        self.lr_multiplier = _check_lr_multiplier(lr_multiplier, "EqualizedDense")
        self.bias_init, self.use_bias = float(bias_init), bool(use_bias)
        self.activation = _check_activation(activation, "EqualizedDense")

    def build(self, input_shape) -> None:
        n_in = tuple(input_shape)[-1]
        if n_in is None:
            raise ShapeError(f"{self._label()}: the feature (last) axis of {tuple(input_shape)} must be known")
        self.add_parameter("weight", _randn((n_in, self.units)) / self.lr_multiplier)
        if self.use_bias:
            dtype = backend.get_default_dtype()
            self.add_parameter("bias", backend.xp.full((self.units,), self.bias_init / self.lr_multiplier,
                                                       dtype=dtype))
        self.built = True

    @property
    def weight_gain(self) -> float:
        return self.lr_multiplier / math.sqrt(self.weight.shape[0])

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim < 1 or x.shape[-1] != self.weight.shape[0]:
            raise input_error(self, x, f"(..., {self.weight.shape[0]}) features on the last axis")
        z = x @ (self.weight * self.weight_gain)
        if self.use_bias:
            z = z + self.bias * self.lr_multiplier
        return _activate(z, self.activation)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.units)

    def get_config(self) -> dict:
        return {"units": self.units, "lr_multiplier": self.lr_multiplier, "bias_init": self.bias_init,
                "use_bias": self.use_bias, "activation": self.activation, "name": self.name}


@register_layer
class EqualizedConv2D(Module):
    """A 'same' convolution (zero padding f // 2, odd ``kernel_size`` f) with the weight used
    as W lr_mul / sqrt(f^2 c_in) and the bias as b lr_mul, then (``activation='lrelu'``) the
    leaky ReLU times sqrt(2). ``weight`` (K, f, f, c_in) starts N(0, 1) / lr_mul."""

    default_name = "equalized_conv2d"

    def __init__(self, filters: int, kernel_size: int = 3, lr_multiplier: float = 1.0, bias_init: float = 0.0,
                 use_bias: bool = True, activation: str | None = None, name: str | None = None):
        super().__init__(name=name)
        self.filters = positive_int(filters, "EqualizedConv2D: filters")
        self.kernel_size = positive_int(kernel_size, "EqualizedConv2D: kernel_size")
        if kernel_size % 2 == 0:
            raise ValueError(f"EqualizedConv2D: kernel_size must be odd (a centred 'same' window), got {kernel_size}")
        self.lr_multiplier = _check_lr_multiplier(lr_multiplier, "EqualizedConv2D")
        self.bias_init, self.use_bias = float(bias_init), bool(use_bias)
        self.activation = _check_activation(activation, "EqualizedConv2D")

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        if len(shape) != 4 or shape[-1] is None:
            raise ShapeError(f"{self._label()}: expected an NHWC input shape with known channels, got {shape}")
        f = self.kernel_size
        self.add_parameter("weight", _randn((self.filters, f, f, shape[-1])) / self.lr_multiplier)
        if self.use_bias:
            dtype = backend.get_default_dtype()
            self.add_parameter("bias", backend.xp.full((self.filters,), self.bias_init / self.lr_multiplier,
                                                       dtype=dtype))
        self.built = True

    @property
    def weight_gain(self) -> float:
        _, f, _, c_in = self.weight.shape
        return self.lr_multiplier / math.sqrt(f * f * c_in)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        c_in = self.weight.shape[-1]
        if x.ndim != 4 or x.shape[-1] != c_in:
            raise input_error(self, x, f"a 4-D NHWC batch with {c_in} channels")
        bias = self.bias * self.lr_multiplier if self.use_bias else None
        z = F.conv2d(x, self.weight * self.weight_gain, bias, padding=self.kernel_size // 2)
        return _activate(z, self.activation)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:3], self.filters)

    def get_config(self) -> dict:
        return {"filters": self.filters, "kernel_size": self.kernel_size, "lr_multiplier": self.lr_multiplier,
                "bias_init": self.bias_init, "use_bias": self.use_bias, "activation": self.activation,
                "name": self.name}


@register_layer
class MappingNetwork(Module):
    """z (N, z_dim) -> w (N, ``w_dim``): pixel norm, then ``num_layers`` equalized dense layers
    of ``w_dim`` units with leaky ReLU (times sqrt(2)) and ``lr_multiplier`` (0.01).

    In training it follows the mean w in the buffer ``w_avg`` (w_avg <- beta w_avg + (1 - beta)
    batch mean, beta = ``w_avg_beta``); ``truncation_psi`` < 1 pulls w towards it:
    w_avg + psi (w - w_avg) (the truncation trick)."""

    default_name = "mapping_network"

    def __init__(self, w_dim: int = 512, num_layers: int = 8, lr_multiplier: float = 0.01,
                 w_avg_beta: float = 0.995, name: str | None = None):
        super().__init__(name=name)
        self.w_dim = positive_int(w_dim, "MappingNetwork: w_dim")
        self.num_layers = positive_int(num_layers, "MappingNetwork: num_layers")
        self.lr_multiplier = _check_lr_multiplier(lr_multiplier, "MappingNetwork")
        if not 0 <= w_avg_beta < 1:
            raise ValueError(f"MappingNetwork: w_avg_beta must be in [0, 1), got {w_avg_beta!r}")
        self.w_avg_beta = float(w_avg_beta)
        for k in range(num_layers):
            setattr(self, f"fc{k}", EqualizedDense(w_dim, lr_multiplier=lr_multiplier, activation="lrelu",
                                                   name=f"fc{k}"))

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        if len(shape) != 2 or shape[1] is None:
            raise ShapeError(f"{self._label()}: expected codes of shape (batch, z_dim), got {shape}")
        self.register_buffer("w_avg", backend.xp.zeros((self.w_dim,), dtype=backend.get_default_dtype()))
        self.built = True

    def forward(self, z, truncation_psi: float = 1.0) -> Tensor:
        z = as_tensor(z)
        if z.ndim != 2:
            raise input_error(self, z, "codes of shape (batch, z_dim)")
        w = pixel_norm(z)
        for k in range(self.num_layers):
            w = self._modules[f"fc{k}"](w)
        if self.training:
            mean = w.data.mean(axis=0).astype(self.w_avg.dtype)
            self.w_avg = self.w_avg * self.w_avg_beta + mean * (1 - self.w_avg_beta)
        if truncation_psi != 1:
            avg = Tensor(self.w_avg.astype(w.dtype, copy=False))
            w = avg + (w - avg) * truncation_psi
        return w

    def compute_output_shape(self, input_shape):
        return (tuple(input_shape)[0], self.w_dim)

    def get_config(self) -> dict:
        return {"w_dim": self.w_dim, "num_layers": self.num_layers, "lr_multiplier": self.lr_multiplier,
                "w_avg_beta": self.w_avg_beta, "name": self.name}


def modulated_conv2d(x, weight, styles, demodulate: bool = True, fused: bool = True, eps: float = 1e-8) -> Tensor:
    """The modulated convolution of the module docstring, 'same' zero padding: x (N, H, W, C),
    weight (K, f, f, C) (the stored N(0, 1) weight; the 1 / sqrt(f^2 C) gain is applied here),
    styles (N, C) -> (N, H, W, K). ``fused``: one grouped convolution over the whole batch
    (N groups), else a shared convolution of the modulated input."""
    x, weight, styles = as_tensor(x), as_tensor(weight), as_tensor(styles)
    if x.ndim != 4 or weight.ndim != 4 or styles.ndim != 2:
        raise ShapeError(f"modulated_conv2d: expected x (N, H, W, C), weight (K, f, f, C) and styles (N, C), got "
                         f"shapes {tuple(x.shape)}, {tuple(weight.shape)} and {tuple(styles.shape)}")
    n, h, w_, c = x.shape
    k, f, _, c_w = weight.shape
    if c_w != c or tuple(styles.shape) != (n, c):
        raise ShapeError(f"modulated_conv2d: x {tuple(x.shape)} has {c} channels and {n} samples; weight "
                         f"{tuple(weight.shape)} and styles {tuple(styles.shape)} must match them (styles (N, C))")
    gain = 1.0 / math.sqrt(f * f * c)
    if fused:
        per_sample = weight.reshape(1, k, f, f, c) * (styles * gain).reshape(n, 1, 1, 1, c)   # (N, K, f, f, C)
        if demodulate:
            scale = ((per_sample * per_sample).sum(axis=(2, 3, 4), keepdims=True) + eps).rsqrt()
            per_sample = per_sample * scale
        grouped = x.transpose(1, 2, 0, 3).reshape(1, h, w_, n * c)
        y = F.conv2d(grouped, per_sample.reshape(n * k, f, f, c), padding=f // 2, groups=n)
        return y.reshape(h, w_, n, k).transpose(2, 0, 1, 3)
    y = F.conv2d(x * styles.reshape(n, 1, 1, c), weight * gain, padding=f // 2)
    if demodulate:
        # sum_ijc (w_kijc s_nc gain)^2 = sum_c s_nc^2 (gain^2 sum_ij w_kijc^2)
        energy = (weight * weight).sum(axis=(1, 2)) * (gain * gain)               # (K, C)
        scale = ((styles * styles) @ energy.transpose(1, 0) + eps).rsqrt()          # (N, K)
        y = y * scale.reshape(n, 1, 1, k)
    return y


def _check_style_call(layer: Module, x: Tensor, w: Tensor) -> None:
    if x.ndim != 4:
        raise input_error(layer, x, "a 4-D NHWC batch (batch, height, width, channels)")
    if w.ndim != 2 or w.shape[0] != x.shape[0]:
        raise ShapeError(f"{layer._label()}: the latent w must be (batch, w_dim) with the batch of x "
                         f"{tuple(x.shape)}; got shape {tuple(w.shape)}")


@register_layer
class ModulatedConv2D(Module):
    """``layer(x, w)``: the modulated convolution (module docstring) of x (N, H, W, C) with
    ``filters`` filters of ``kernel_size`` (odd), styled by w (N, w_dim) through the
    sub-layer ``affine`` (an :class:`EqualizedDense` of C units, bias 1). ``weight``
    (K, f, f, C) ~ N(0, 1); no bias (the layers using it add one)."""

    default_name = "modulated_conv2d"

    def __init__(self, filters: int, kernel_size: int = 3, demodulate: bool = True, fused: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        self.filters = positive_int(filters, "ModulatedConv2D: filters")
        self.kernel_size = positive_int(kernel_size, "ModulatedConv2D: kernel_size")
        if kernel_size % 2 == 0:
            raise ValueError(f"ModulatedConv2D: kernel_size must be odd (a centred 'same' window), got {kernel_size}")
        self.demodulate, self.fused = bool(demodulate), bool(fused)
        self.affine: EqualizedDense | None = None

    def build(self, input_shape) -> None:
        shapes = list(input_shape) if isinstance(input_shape, list) else [input_shape]
        if len(shapes) != 2 or len(shapes[0]) != 4 or shapes[0][-1] is None:
            raise ShapeError(f"{self._label()}: called as layer(x, w) with x NHWC (known channels) and w (batch, "
                             f"w_dim); got input shapes {input_shape}")
        c_in, f = shapes[0][-1], self.kernel_size
        self.affine = EqualizedDense(c_in, bias_init=1.0, name="affine")
        self.add_parameter("weight", _randn((self.filters, f, f, c_in)))
        self.built = True

    def forward(self, x, w) -> Tensor:
        x, w = as_tensor(x), as_tensor(w)
        _check_style_call(self, x, w)
        c_in = self.weight.shape[-1]
        if x.shape[-1] != c_in:
            raise input_error(self, x, f"a 4-D NHWC batch with {c_in} channels (the layer was built for them)")
        return modulated_conv2d(x, self.weight, self.affine(w), demodulate=self.demodulate, fused=self.fused)

    def get_config(self) -> dict:
        return {"filters": self.filters, "kernel_size": self.kernel_size, "demodulate": self.demodulate,
                "fused": self.fused, "name": self.name}


NOISE_MODES = ("random", "const", "none")


@register_layer
class NoiseInjection(Module):
    """x + strength n: n (N, H, W, 1) per-pixel noise shared by the channels, ``strength`` a
    learned scalar (0 at first). ``layer(x, noise=None, noise_mode='random')``: ``noise``
    given is used as is; else 'random' draws N(0, 1) from lamina's generator, 'const' uses
    the buffer ``noise_const`` (1, H, W, 1) drawn at build, 'none' adds nothing."""

    default_name = "noise_injection"

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        if len(shape) != 4 or None in shape[1:3]:
            raise ShapeError(f"{self._label()}: expected an NHWC input shape with known height and width, got {shape}")
        self.add_parameter("strength", backend.xp.zeros((), dtype=backend.get_default_dtype()))
        self.register_buffer("noise_const", _randn((1, shape[1], shape[2], 1)))
        self.built = True

    def forward(self, x, noise=None, noise_mode: str = "random") -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4:
            raise input_error(self, x, "a 4-D NHWC batch (batch, height, width, channels)")
        if noise is None:
            if noise_mode not in NOISE_MODES:
                raise ValueError(f"{self._label()}: noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
            if noise_mode == "none":
                return x
            if noise_mode == "const":
                if tuple(self.noise_const.shape[1:3]) != tuple(x.shape[1:3]):
                    raise input_error(self, x, f"the height and width {tuple(self.noise_const.shape[1:3])} of its "
                                               "constant noise")
                noise = self.noise_const
            else:
                noise = _randn((x.shape[0], x.shape[1], x.shape[2], 1))
        noise = as_tensor(noise)
        if noise.ndim != 4 or noise.shape[-1] != 1 or tuple(noise.shape[1:3]) != tuple(x.shape[1:3]):
            raise ShapeError(f"{self._label()}: noise must be (N or 1, H, W, 1) for x {tuple(x.shape)}, got shape "
                             f"{tuple(noise.shape)}")
        return x + noise.astype(x.dtype) * self.strength

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"name": self.name}


@register_layer
class SynthesisLayer(Module):
    """``layer(x, w, noise=None, noise_mode='random')``: [bilinear x2 upsampling (``up``)] -
    modulated convolution (``conv``) - noise (``noise``) - bias - leaky ReLU times sqrt(2)."""

    default_name = "synthesis_layer"

    def __init__(self, filters: int, kernel_size: int = 3, up: bool = False, fused: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        self.filters = positive_int(filters, "SynthesisLayer: filters")
        self.kernel_size, self.up, self.fused = kernel_size, bool(up), bool(fused)
        self.conv = ModulatedConv2D(filters, kernel_size, fused=fused, name="conv")
        self.noise = NoiseInjection(name="noise")

    def build(self, input_shape) -> None:
        self.add_parameter("bias", backend.xp.zeros((self.filters,), dtype=backend.get_default_dtype()))
        self.built = True

    def forward(self, x, w, noise=None, noise_mode: str = "random") -> Tensor:
        x = as_tensor(x)
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.noise(self.conv(x, w), noise=noise, noise_mode=noise_mode)
        return _activate(x + self.bias, "lrelu")

    def get_config(self) -> dict:
        return {"filters": self.filters, "kernel_size": self.kernel_size, "up": self.up, "fused": self.fused,
                "name": self.name}


@register_layer
class ToRGB(Module):
    """``layer(x, w)``: a modulated 1x1 convolution to ``channels`` without demodulation
    (``conv``), plus a bias; linear."""

    default_name = "to_rgb"

    def __init__(self, channels: int = 3, fused: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "ToRGB: channels")
        self.fused = bool(fused)
        self.conv = ModulatedConv2D(channels, 1, demodulate=False, fused=fused, name="conv")

    def build(self, input_shape) -> None:
        self.add_parameter("bias", backend.xp.zeros((self.channels,), dtype=backend.get_default_dtype()))
        self.built = True

    def forward(self, x, w) -> Tensor:
        return self.conv(x, w) + self.bias

    def get_config(self) -> dict:
        return {"channels": self.channels, "fused": self.fused, "name": self.name}


@register_layer
class StyleGAN2Generator(Module):
    """z (N, ``z_dim``) -> images (N, R, R, ``channels``), R = ``resolution`` (8, 16 or 32 here;
    any power of two from 4). Sub-layers ``mapping`` (:class:`MappingNetwork`), per resolution
    r = 4, 8, ..: ``b{r}_conv0`` (r > 4, upsampling), ``b{r}_conv1``, ``b{r}_torgb``; the
    parameter ``const`` (4, 4, C_4). C_r = min(``channel_base`` // r, ``channel_max``) features.

    ``generator(z, truncation_psi=1.0, noise_mode='random')``; :meth:`synthesize` takes
    w (N, w_dim) (one w for every layer) or (N, num_ws, w_dim) (one per modulated layer, in
    order: style mixing). The images are linear (no tanh), as in the reference.
    """

    default_name = "stylegan2_generator"

    def __init__(self, resolution: int = 16, channels: int = 3, z_dim: int = 64, w_dim: int = 64,
                 mapping_layers: int = 8, channel_base: int = 1024, channel_max: int = 64, fused: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        self.resolution = positive_int(resolution, "StyleGAN2Generator: resolution")
        if resolution < 4 or resolution & (resolution - 1):
            raise ValueError(f"StyleGAN2Generator: resolution must be a power of two >= 4, got {resolution}")
        self.channels = positive_int(channels, "StyleGAN2Generator: channels")
        self.z_dim = positive_int(z_dim, "StyleGAN2Generator: z_dim")
        self.w_dim = positive_int(w_dim, "StyleGAN2Generator: w_dim")
        self.channel_base = positive_int(channel_base, "StyleGAN2Generator: channel_base")
        self.channel_max = positive_int(channel_max, "StyleGAN2Generator: channel_max")
        self.mapping_layers, self.fused = mapping_layers, bool(fused)
        self.mapping = MappingNetwork(w_dim, mapping_layers, name="mapping")
        self.resolutions = [2 ** k for k in range(2, int(math.log2(resolution)) + 1)]
        for r in self.resolutions:
            if r > 4:
                setattr(self, f"b{r}_conv0", SynthesisLayer(self.features(r), up=True, fused=fused, name="conv0"))
            setattr(self, f"b{r}_conv1", SynthesisLayer(self.features(r), fused=fused, name="conv1"))
            setattr(self, f"b{r}_torgb", ToRGB(channels, fused=fused, name="torgb"))

    def features(self, r: int) -> int:
        return max(1, min(self.channel_base // r, self.channel_max))

    @property
    def num_ws(self) -> int:
        """The number of modulated layers, each taking one w."""
        return 3 * len(self.resolutions) - 1

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        if len(shape) != 2 or shape[1] != self.z_dim:
            raise ShapeError(f"{self._label()}: expected codes of shape (batch, {self.z_dim}), got {shape}")
        self.add_parameter("const", _randn((4, 4, self.features(4))))
        self.built = True

    def forward(self, z, truncation_psi: float = 1.0, noise_mode: str = "random") -> Tensor:
        z = as_tensor(z)
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise input_error(self, z, f"codes of shape (batch, {self.z_dim})")
        return self.synthesize(self.mapping(z, truncation_psi=truncation_psi), noise_mode=noise_mode)

    def synthesize(self, w, noise_mode: str = "random") -> Tensor:
        """Images from w (N, w_dim) or (N, num_ws, w_dim) (see the class docstring)."""
        w = as_tensor(w)
        if w.ndim == 2 and w.shape[1] == self.w_dim:
            ws = [w] * self.num_ws
        elif w.ndim == 3 and tuple(w.shape[1:]) == (self.num_ws, self.w_dim):
            ws = [w[:, i] for i in range(self.num_ws)]
        else:
            raise input_error(self, w, f"w of shape (batch, {self.w_dim}) or (batch, {self.num_ws}, {self.w_dim})")
        if not self.built:
            self.build((w.shape[0], self.z_dim))
        n = w.shape[0]
        x = self.const.reshape(1, *self.const.shape) + Tensor(backend.xp.zeros((n, 1, 1, 1), dtype=w.dtype))
        image, used = None, iter(ws)
        for r in self.resolutions:
            if r > 4:
                x = self._modules[f"b{r}_conv0"](x, next(used), noise_mode=noise_mode)
            x = self._modules[f"b{r}_conv1"](x, next(used), noise_mode=noise_mode)
            rgb = self._modules[f"b{r}_torgb"](x, next(used))
            image = rgb if image is None else F.interpolate(image, scale_factor=2, mode="bilinear",
                                                            align_corners=False) + rgb
        return image

    def compute_output_shape(self, input_shape):
        return (tuple(input_shape)[0], self.resolution, self.resolution, self.channels)

    def get_config(self) -> dict:
        return {"resolution": self.resolution, "channels": self.channels, "z_dim": self.z_dim, "w_dim": self.w_dim,
                "mapping_layers": self.mapping_layers, "channel_base": self.channel_base,
                "channel_max": self.channel_max, "fused": self.fused, "name": self.name}


class PathLengthPenalty:
    """StyleGAN2's path-length regulariser (module docstring): ``penalty(generator, w)`` with w
    (N, w_dim) (one w for every layer) or (N, num_ws, w_dim) returns the scalar penalty on the
    graph of the generator's weights (and of w), and moves the running mean path length
    :attr:`mean` (0 at first) by ``decay`` towards the batch's mean. ``seed`` fixes the
    noise y (else lamina's generator draws it)."""

    def __init__(self, decay: float = 0.01, seed: int | None = None):
        if not 0 < decay <= 1:
            raise ValueError(f"PathLengthPenalty: decay must be in (0, 1], got {decay!r}")
        self.decay = float(decay)
        self.mean = 0.0
        self._rng = None if seed is None else np.random.default_rng(seed)

    def __call__(self, generator: StyleGAN2Generator, w, noise_mode: str = "const") -> Tensor:
        w = as_tensor(w)
        if w.ndim == 2:
            w = F.stack([w] * generator.num_ws, axis=1)
        with enable_grad():
            if not w.requires_grad:
                w = Tensor(w.data, requires_grad=True, dtype=w.dtype)
            images = generator.synthesize(w, noise_mode=noise_mode)
            n, h, w_px = images.shape[:3]
            source = self._rng if self._rng is not None else backend.rng()
            y = backend.xp.asarray(source.standard_normal(images.shape) / math.sqrt(h * w_px), dtype=images.dtype)
            (slopes,) = grad((images * Tensor(y)).sum(), w, create_graph=True)
            lengths = (slopes * slopes).sum(axis=2).mean(axis=1).sqrt()
        self.mean = self.mean + self.decay * (float(lengths.data.mean()) - self.mean)
        return ((lengths - self.mean) ** 2).mean()
