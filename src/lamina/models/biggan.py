"""A small class-conditional BigGAN (Brock et al. 2019), built on SAGAN (Zhang et al. 2019).

Generator G(z, y), for images of R x R pixels (R = 4 * 2^B, B residual up blocks):

    e = shared(y)                      one class embedding, shared by every block
    z = [z_0, z_1, .., z_B]            equal chunks ("skip-z": each block sees its own chunk)
    h = linear(z_0) as (4, 4, widths[0])
    block b: c = [e, z_b];  h = conv(relu(CBN(conv(up(relu(CBN(h, c)))), c))) + conv1x1(up(h))
    image = tanh(conv(relu(BN(h))))

where CBN(h, c) = (1 + c W_g + b_g) * BN(h) + c W_b + b_b, BN without an affine of its own
(:class:`~lamina.nn.FiLM` after a :class:`~lamina.nn.BatchNorm`; FiLM's gain starts at 1), and
up is a 2x nearest-neighbour upsampling. A :class:`~lamina.nn.SelfAttention2D` follows the
block whose output has ``attention_resolution`` pixels a side.

Discriminator D(x, y): residual down blocks (the first without the leading ReLU, the last
without pooling, so the features end at 4 x 4), each
``h -> avgpool(conv(relu(conv(relu(h))))) + avgpool(conv1x1(h))``; then
f = sum over positions of relu(h), and the projection head

    D(x, y) = psi(f) + <embed(y), f>                (Miyato & Koyama 2018)

Every convolution and linear map is spectrally normalised (:class:`~lamina.nn.SpectralNorm`).
The networks train with the hinge costs (:func:`lamina.functional.hinge_d_loss`,
:func:`~lamina.functional.hinge_g_loss`) and optionally BigGAN's orthogonal regularisation

    R_beta(W) = beta * ||W^T W (.) (1 - I)||_F^2        (W's columns its filters)

Samples drawn with the truncation trick (:func:`truncated_normal`: every |z_i| above a
threshold drawn again) trade variety for fidelity.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import BatchNorm, Conv2D, Dense, Embedding, FiLM, SelfAttention2D, SpectralNorm
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import input_error, positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["BIGGAN_PRESETS", "BigGANDiscriminator", "BigGANGenerator", "ProjectionHead", "biggan_small",
           "orthogonal_regularization", "truncated_normal"]

# resolution -> (generator widths, discriminator widths)
BIGGAN_PRESETS = {
    8: ((32, 16), (16, 32)),
    16: ((32, 32, 16), (16, 32, 32)),
    32: ((64, 32, 32, 16), (16, 32, 32, 64)),
}


def _sn(layer: Module, spectral_norm: bool) -> Module:
    return SpectralNorm(layer) if spectral_norm else layer


def _conv(filters: int, size: int, spectral_norm: bool) -> Module:
    return _sn(Conv2D(filters, size, padding="same", kernel_init="orthogonal"), spectral_norm)


def _class_ids(class_ids, batch: int, num_classes: int, who: str):
    ids = backend.xp.asarray(class_ids.data if isinstance(class_ids, Tensor) else class_ids)
    if ids.shape != (batch,) or ids.dtype.kind not in "iu":
        raise ShapeError(f"{who}: class_ids must be integers of shape ({batch},), got {ids.dtype} {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
        raise ValueError(f"{who}: class ids must lie in [0, {num_classes}), got values from {ids.min()} "
                         f"to {ids.max()}")
    return ids


def _widths(values, count: int, what: str) -> tuple[int, ...]:
    widths = tuple(values)
    if len(widths) != count:
        raise ValueError(f"{what} must have {count} entries for this resolution, got {values!r}")
    for width in widths:
        positive_int(width, what)
    return widths


def _blocks_for(resolution: int, who: str) -> int:
    positive_int(resolution, f"{who}: resolution")
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"{who}: resolution must be a power of two >= 8, got {resolution}")
    return int(math.log2(resolution)) - 2


def _attention_resolution(value, resolutions, who: str):
    if value is not None and value not in resolutions:
        raise ValueError(f"{who}: attention_resolution must be None or one of {sorted(set(resolutions))}, "
                         f"got {value!r}")
    return value


class _ConditionalBN(Module):
    """(1 + c W_g + b_g) * BN(h) + c W_b + b_b: a BatchNorm without affine, then FiLM."""

    def __init__(self, channels: int, name: str | None = None):
        super().__init__(name=name)
        self.norm = BatchNorm(affine=False)
        self.film = FiLM(channels)

    def forward(self, h, condition) -> Tensor:
        return self.film(self.norm(h), condition)


class _UpBlock(Module):
    def __init__(self, in_channels: int, out_channels: int, spectral_norm: bool, name: str | None = None):
        super().__init__(name=name)
        self.bn1, self.bn2 = _ConditionalBN(in_channels), _ConditionalBN(out_channels)
        self.conv1, self.conv2 = _conv(out_channels, 3, spectral_norm), _conv(out_channels, 3, spectral_norm)
        self.shortcut = _conv(out_channels, 1, spectral_norm)

    def forward(self, h, condition) -> Tensor:
        up = F.interpolate(F.relu(self.bn1(h, condition)), scale_factor=2, mode="nearest")
        out = self.conv2(F.relu(self.bn2(self.conv1(up), condition)))
        return out + self.shortcut(F.interpolate(h, scale_factor=2, mode="nearest"))


class _DownBlock(Module):
    def __init__(self, out_channels: int, preactivation: bool, downsample: bool, spectral_norm: bool,
                 name: str | None = None):
        super().__init__(name=name)
        self.preactivation, self.downsample = preactivation, downsample
        self.conv1, self.conv2 = _conv(out_channels, 3, spectral_norm), _conv(out_channels, 3, spectral_norm)
        self.shortcut = _conv(out_channels, 1, spectral_norm)

    def forward(self, x) -> Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self.conv2(F.relu(self.conv1(h)))
        # the first block pools before its shortcut convolution, the others after it (as BigGAN)
        skip = self.shortcut(x) if self.preactivation or not self.downsample else self.shortcut(F.avg_pool2d(x, 2))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
            if self.preactivation:
                skip = F.avg_pool2d(skip, 2)
        return h + skip


@register_with_arguments
class ProjectionHead(Module):
    """The projection discriminator's output for features f (N, C) and class ids y (N,):
    psi(f) + <embed(y), f>, shape (N, 1); ``psi`` a :class:`~lamina.nn.Dense` of one unit,
    ``embed`` an :class:`~lamina.nn.Embedding` (num_classes, C), both spectrally normalised
    when ``spectral_norm``."""

    def __init__(self, num_classes: int, features: int, spectral_norm: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.num_classes = positive_int(num_classes, "ProjectionHead: num_classes")
        self.features = positive_int(features, "ProjectionHead: features")
        self.psi = _sn(Dense(1, kernel_init="orthogonal"), spectral_norm)
        embed = Embedding(num_classes, features, embeddings_init="orthogonal")
        embed.build((None,))
        self.embed = SpectralNorm(embed, axis=0) if spectral_norm else embed

    def forward(self, features, class_ids) -> Tensor:
        f = as_tensor(features)
        if f.ndim != 2 or f.shape[1] != self.features:
            raise input_error(self, f, f"features of shape (batch, {self.features})")
        ids = _class_ids(class_ids, f.shape[0], self.num_classes, self._label())
        return self.psi(f) + F.sum(self.embed(ids) * f, axis=1, keepdims=True)


@register_with_arguments
class BigGANGenerator(Module):
    """``G(z, class_ids)``: codes z (N, ``z_dim``) and integer class ids (N,) -> images
    (N, R, R, ``channels``) in [-1, 1] (module docstring). ``widths`` gives the features at 4 x 4
    and after each up block (one more entry than up blocks); ``z_dim`` must split into
    len(widths) equal chunks."""

    default_name = "biggan_generator"

    def __init__(self, num_classes: int, resolution: int = 8, channels: int = 1, z_dim: int = 16,
                 shared_dim: int = 8, widths=(32, 16), attention_resolution: int | None = 8,
                 spectral_norm: bool = True, name: str | None = None):
        super().__init__(name=name)
        who = "BigGANGenerator"
        blocks = _blocks_for(resolution, who)
        self.num_classes = positive_int(num_classes, f"{who}: num_classes")
        self.resolution, self.channels = resolution, positive_int(channels, f"{who}: channels")
        self.z_dim = positive_int(z_dim, f"{who}: z_dim")
        self.shared_dim = positive_int(shared_dim, f"{who}: shared_dim")
        self.widths = _widths(widths, blocks + 1, f"{who}: widths")
        if z_dim % (blocks + 1):
            raise ValueError(f"{who}: z_dim ({z_dim}) must split into {blocks + 1} equal chunks")
        self.chunk = z_dim // (blocks + 1)
        resolutions = [8 * 2 ** b for b in range(blocks)]
        self.attention_resolution = _attention_resolution(attention_resolution, resolutions, who)
        self.shared = Embedding(num_classes, shared_dim)
        self.linear = _sn(Dense(16 * self.widths[0], kernel_init="orthogonal"), spectral_norm)
        for b in range(blocks):
            setattr(self, f"block{b}", _UpBlock(self.widths[b], self.widths[b + 1], spectral_norm, name=f"block{b}"))
        if self.attention_resolution is not None:
            self.attention = SelfAttention2D(self.widths[resolutions.index(self.attention_resolution) + 1],
                                             spectral_norm=spectral_norm)
        self.output_norm = BatchNorm()
        self.output_conv = _conv(channels, 3, spectral_norm)

    def forward(self, z, class_ids) -> Tensor:
        z = as_tensor(z)
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise input_error(self, z, f"codes of shape (batch, {self.z_dim})")
        n = z.shape[0]
        shared = self.shared(_class_ids(class_ids, n, self.num_classes, self._label()))
        h = self.linear(z[:, :self.chunk]).reshape(n, 4, 4, self.widths[0])
        for b in range(len(self.widths) - 1):
            block = self._modules[f"block{b}"]
            z_b = z[:, (b + 1) * self.chunk:(b + 2) * self.chunk]
            h = block(h, F.concat([shared, z_b], axis=1))
            if h.shape[1] == self.attention_resolution:
                h = self.attention(h)
        return F.tanh(self.output_conv(F.relu(self.output_norm(h))))


@register_with_arguments
class BigGANDiscriminator(Module):
    """``D(images, class_ids)``: images (N, R, R, ``channels``) and integer class ids (N,) -> one
    logit per image (N, 1) (module docstring). ``widths`` gives each down block's features (one
    more entry than halvings: the last block keeps 4 x 4)."""

    default_name = "biggan_discriminator"

    def __init__(self, num_classes: int, resolution: int = 8, channels: int = 1, widths=(16, 32),
                 attention_resolution: int | None = 4, spectral_norm: bool = True, name: str | None = None):
        super().__init__(name=name)
        who = "BigGANDiscriminator"
        blocks = _blocks_for(resolution, who)
        self.num_classes = positive_int(num_classes, f"{who}: num_classes")
        self.resolution, self.channels = resolution, positive_int(channels, f"{who}: channels")
        self.widths = _widths(widths, blocks + 1, f"{who}: widths")
        outputs = [resolution // 2 ** min(b + 1, blocks) for b in range(blocks + 1)]
        self.attention_resolution = _attention_resolution(attention_resolution, outputs, who)
        for b, width in enumerate(self.widths):
            setattr(self, f"block{b}", _DownBlock(width, b > 0, b < blocks, spectral_norm, name=f"block{b}"))
        self.attention_after = None if attention_resolution is None else outputs.index(attention_resolution)
        if self.attention_after is not None:
            self.attention = SelfAttention2D(self.widths[self.attention_after], spectral_norm=spectral_norm)
        self.head = ProjectionHead(num_classes, self.widths[-1], spectral_norm=spectral_norm)

    def forward(self, images, class_ids) -> Tensor:
        x = as_tensor(images)
        expected = (self.resolution, self.resolution, self.channels)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise input_error(self, x, f"images of shape (batch, {', '.join(map(str, expected))})")
        h = x
        for b in range(len(self.widths)):
            h = self._modules[f"block{b}"](h)
            if b == self.attention_after:
                h = self.attention(h)
        features = F.sum(F.relu(h), axis=(1, 2))
        return self.head(features, class_ids)


def biggan_small(num_classes: int, resolution: int = 8, channels: int = 1, z_dim: int | None = None,
                 attention: bool = True, spectral_norm: bool = True) -> tuple[BigGANGenerator, BigGANDiscriminator]:
    """A small (generator, discriminator) pair of the widths in ``BIGGAN_PRESETS`` for 8 x 8,
    16 x 16 or 32 x 32 images; z_dim defaults to 8 values per chunk. With ``attention`` the
    generator attends after its last up block and the discriminator after its first."""
    if resolution not in BIGGAN_PRESETS:
        raise ValueError(f"biggan_small: resolution must be one of {sorted(BIGGAN_PRESETS)}, got {resolution!r}")
    g_widths, d_widths = BIGGAN_PRESETS[resolution]
    generator = BigGANGenerator(num_classes, resolution, channels, z_dim or 8 * len(g_widths), widths=g_widths,
                                attention_resolution=resolution if attention else None,
                                spectral_norm=spectral_norm)
    discriminator = BigGANDiscriminator(num_classes, resolution, channels, d_widths,
                                        attention_resolution=resolution // 2 if attention else None,
                                        spectral_norm=spectral_norm)
    return generator, discriminator


def _filter_matrix(weight: Tensor, unit_axis: int | None) -> Tensor:
    """The weight as (fan_in, units): Dense weights (n_in, units) as they are; others with the
    unit axis (default the first, as convolutions (K, f_h, f_w, c_in)) moved last."""
    if weight.ndim == 2 and unit_axis is None:
        return weight
    axis = 0 if unit_axis is None else unit_axis % weight.ndim
    order = [i for i in range(weight.ndim) if i != axis] + [axis]
    moved = F.transpose(weight, *order)
    return moved.reshape(-1, weight.shape[axis])


def orthogonal_regularization(weights, beta: float = 1e-4, unit_axis: int | None = None) -> Tensor:
    """BigGAN's orthogonal regularisation, summed over ``weights`` (one tensor or several):
    beta * ||W^T W (.) (1 - I)||_F^2 with W = the weight as (fan_in, units): a 2-D weight as it
    is (Dense's (n_in, units)), a larger one with ``unit_axis`` (default the first, as in
    convolutions (K, f_h, f_w, c_in)) moved last. It pushes the filters towards orthogonality
    without constraining their norms. Tensors with fewer than two axes (biases, gains) are skipped."""
    items = [weights] if isinstance(weights, Tensor) else list(weights)
    total = None
    for weight in items:
        weight = as_tensor(weight)
        if weight.ndim < 2:
            continue
        w = _filter_matrix(weight, unit_axis)
        gram = F.matmul(F.transpose(w, 1, 0), w)
        off_diagonal = 1.0 - backend.xp.eye(gram.shape[0], dtype=gram.dtype)
        term = F.sum((gram * Tensor._wrap(off_diagonal)) ** 2)
        total = term if total is None else total + term
    if total is None:
        raise ValueError("orthogonal_regularization: no weight with at least two axes was given")
    return beta * total


def truncated_normal(shape, threshold: float = 0.5, rng: numpy.random.Generator | int | None = None,
                     dtype=None) -> numpy.ndarray:
    """Standard normal values of ``shape`` with every value whose magnitude exceeds
    ``threshold`` drawn again until none does: the truncation trick's codes."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0:
        raise ValueError(f"truncated_normal: threshold must be a positive number, got {threshold!r}")
    generator = rng if isinstance(rng, numpy.random.Generator) else numpy.random.default_rng(rng)
    values = generator.standard_normal(shape)
    outside = numpy.abs(values) > threshold
    while outside.any():
        values[outside] = generator.standard_normal(int(outside.sum()))
        outside = numpy.abs(values) > threshold
    return values.astype(dtype or backend.get_default_dtype())
