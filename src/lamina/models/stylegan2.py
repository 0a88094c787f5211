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

The equalized layers and the mapping network are in :mod:`lamina.models.stylegan2_equalized`,
the synthesis layers in :mod:`lamina.models.stylegan2_synthesis`; this module re-exports them.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, enable_grad, grad
from lamina.errors import ShapeError
from lamina.models.stylegan2_equalized import (  # noqa: F401  (moved there, importable from here too)
    ACTIVATIONS,
    GAIN,
    SLOPE,
    EqualizedConv2D,
    EqualizedDense,
    MappingNetwork,
    _activate,
    _check_activation,
    _check_lr_multiplier,
    _randn,
    pixel_norm,
)
from lamina.models.stylegan2_synthesis import (  # noqa: F401  (moved there, importable from here too)
    NOISE_MODES,
    ModulatedConv2D,
    NoiseInjection,
    SynthesisLayer,
    ToRGB,
    _check_style_call,
    modulated_conv2d,
)
from lamina.nn import Module
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import as_tensor

__all__ = [
    "EqualizedConv2D", "EqualizedDense", "MappingNetwork", "ModulatedConv2D", "NoiseInjection", "PathLengthPenalty",
    "StyleGAN2Generator", "SynthesisLayer", "ToRGB", "modulated_conv2d", "pixel_norm",
]


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
