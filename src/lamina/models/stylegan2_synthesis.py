"""StyleGAN2's synthesis layers (Karras et al. 2020): the modulated (and demodulated)
convolution, as a function (:func:`modulated_conv2d`) and a layer (:class:`ModulatedConv2D`),
the per-pixel noise (:class:`NoiseInjection`), the synthesis layer (:class:`SynthesisLayer`)
and :class:`ToRGB`. The formulas are in :mod:`lamina.models.stylegan2`.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.stylegan2_equalized import EqualizedDense, _activate, _randn
from lamina.nn import Module
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import as_tensor

__all__ = ["ModulatedConv2D", "NoiseInjection", "SynthesisLayer", "ToRGB", "modulated_conv2d"]

def modulated_conv2d(x, weight, styles, demodulate: bool = True, fused: bool = True, eps: float = 1e-8) -> Tensor:
    """The modulated convolution of :mod:`lamina.models.stylegan2`, 'same' zero padding: x (N, H, W, C),
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
    """``layer(x, w)``: the modulated convolution (:mod:`lamina.models.stylegan2`) of x (N, H, W, C) with
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
