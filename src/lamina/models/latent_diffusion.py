"""Latent diffusion (Rombach et al. 2022, the layout of Stable Diffusion): a KL-regularised
autoencoder compresses images to a small latent map, and a diffusion model is trained on the
autoencoder's latents instead of on the pixels.

* :class:`DiagonalGaussian`: the encoder's posterior q(z | x) = N(mu, diag(sigma^2)), with
  log sigma^2 clipped to [-30, 20]; ``sample()`` = mu + sigma eps (reparameterised), ``mode()`` =
  mu, and ``kl()`` = KL(q || N(0, I)) = 1/2 sum(mu^2 + sigma^2 - 1 - log sigma^2) per sample.
* :class:`KLResidualBlock`: out = skip(x) + conv2(silu(norm2(conv1(silu(norm1(x)))))), GroupNorm
  and 3x3 convolutions; skip a 1x1 convolution when the channels change.
* :class:`KLEncoder` / :class:`KLDecoder`: a 3x3 stem, ``num_res_blocks`` residual blocks per
  level of ``channels`` (the decoder one more, in reverse order) with 3x3 stride-2
  convolutions down (nearest 2x upsampling and a 3x3 convolution up) between levels, two
  residual blocks in the middle, and GroupNorm, SiLU and a 3x3 convolution out: to 2 x
  ``latent_channels`` (mu and log sigma^2) for the encoder, to the image channels for the decoder.
  (Stable Diffusion's middle self-attention is left out.)
* :class:`AutoencoderKL`: ``encode(x)`` -> a DiagonalGaussian, ``decode(z)`` -> images, and
  ``loss(x)`` = mean over the batch of [sum |x - x^| (or squared) + kl_weight KL(q || N(0, I))]
  (+ an optional callable's term, e.g. a perceptual or adversarial loss).
* Scaled latents: the diffusion model sees z * ``scaling_factor``, a factor chosen so that they
  have unit variance (:func:`estimate_scaling_factor` gives 1 / std of the latents of some data;
  Stable Diffusion's is 0.18215).
* :class:`LatentDiffusion`: a frozen autoencoder and a :class:`DiffusionModel` over its scaled
  latents; ``loss`` / ``train_step`` train the diffusion model only, ``sample`` draws latents with
  any of the model's samplers or schedulers (classifier-free guidance for a class-conditional
  denoiser) and decodes z / scaling_factor. ``flatten=True`` hands each latent map to the
  diffusion model as one vector (for :class:`DenoisingMLP` on tiny latents); ``encoded=True``
  trains on latents cached from :meth:`LatentDiffusion.encode_latents`.

Example::

    autoencoder = AutoencoderKL(1, latent_channels=2, channels=(16, 32), num_res_blocks=1)
    ...  # train on autoencoder.loss(x)
    autoencoder.scaling_factor = estimate_scaling_factor(autoencoder, x)
    ldm = LatentDiffusion(autoencoder, DiffusionModel(DenoisingUNet(16, (1,)), num_timesteps=100))
    optimizer = Adam(ldm.diffusion, lr=1e-3)
    ...  # ldm.train_step(batch, optimizer) for batches of images
    images = ldm.sample(16, steps=20, scheduler="DDIMScheduler")
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.diffusion import DiffusionModel
from lamina.nn import Conv2D, GroupNorm, ModuleList, Upsample
from lamina.nn.layer import describe, input_error, layer_from_config, layer_to_config, positive_int, register_layer
from lamina.nn.module import Module, as_tensor, evaluation_mode

__all__ = ["AutoencoderKL", "DiagonalGaussian", "KLDecoder", "KLEncoder", "KLResidualBlock", "LatentDiffusion",
           "estimate_scaling_factor"]

LOGVAR_RANGE = (-30.0, 20.0)
RECONSTRUCTIONS = ("l1", "l2")


class DiagonalGaussian:
    """N(mean, diag(exp(logvar))) over latent maps (N, h, w, c); ``parameters`` holds mean and
    log-variance joined along the last axis (2c channels), as the encoder gives them. The
    log-variance is clipped to [-30, 20]."""

    def __init__(self, parameters):
        parameters = as_tensor(parameters)
        if parameters.ndim < 2 or parameters.shape[-1] % 2:
            raise ShapeError(f"DiagonalGaussian: parameters must join mean and log-variance along the last axis "
                             f"(an even number of channels), got {describe(parameters)}")
        half = parameters.shape[-1] // 2
        self.mean = parameters[..., :half]
        self.logvar = F.clip(parameters[..., half:], *LOGVAR_RANGE)
        self.std = F.exp(0.5 * self.logvar)
        self.var = F.exp(self.logvar)

    @property
    def shape(self) -> tuple:
        return tuple(self.mean.shape)

    def sample(self, noise=None) -> Tensor:
        """mean + std * noise, noise ~ N(0, I) from lamina's generator unless given (gradients
        flow to mean and log-variance: the reparameterisation trick)."""
        if noise is None:
            noise = backend.rng().standard_normal(self.shape)
        if not isinstance(noise, Tensor):
            noise = Tensor._wrap(backend.xp.asarray(noise, dtype=self.mean.dtype))
        if tuple(noise.shape) != self.shape:
            raise ShapeError(f"DiagonalGaussian.sample: noise of {describe(noise)} does not match the "
                             f"distribution's shape {self.shape}")
        return self.mean + self.std * noise

    def mode(self) -> Tensor:
        """The most likely value, the mean."""
        return self.mean

    def kl(self) -> Tensor:
        """KL(self || N(0, I)) per sample, (N,): 1/2 sum over the latent values of
        mean^2 + var - 1 - logvar."""
        terms = self.mean * self.mean + self.var - 1.0 - self.logvar
        return 0.5 * F.sum(terms, axis=tuple(range(1, len(self.shape))))


def _groups(groups: int, channels: int) -> int:
    return math.gcd(groups, channels)


@register_layer
class KLResidualBlock(Module):
    """out = skip(x) + conv2(silu(norm2(conv1(silu(norm1(x)))))): two 3x3 convolutions of
    ``filters`` filters, GroupNorm of ``groups`` groups (fewer when the channels do not split so);
    skip is the identity, or a 1x1 convolution when the channels change. NHWC."""

    default_name = "kl_residual_block"

    def __init__(self, filters: int, groups: int = 8, name: str | None = None):
        super().__init__(name=name)
        self.filters = positive_int(filters, "KLResidualBlock: filters")
        self.groups = positive_int(groups, "KLResidualBlock: groups")
        self.conv1 = Conv2D(self.filters, 3, padding="same", name="conv1")
        self.norm2 = GroupNorm(_groups(self.groups, self.filters), name="norm2")
        self.conv2 = Conv2D(self.filters, 3, padding="same", name="conv2")

    def build(self, input_shape) -> None:
        shape = input_shape[0] if isinstance(input_shape, list) else input_shape
        if len(shape) != 4 or shape[-1] is None:
            raise ShapeError(f"{self._label()}: got an input shape {tuple(shape)}; expected (batch, height, "
                             "width, channels) with known channels")
        channels = int(shape[-1])
        self.norm1 = GroupNorm(_groups(self.groups, channels), name="norm1")
        if channels != self.filters:
            self.skip = Conv2D(self.filters, 1, name="skip")
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4:
            raise input_error(self, x, "a 4-D NHWC batch (batch, height, width, channels)")
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.skip(x) if "skip" in self._modules else x) + h

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.filters)

    def get_config(self) -> dict:
        return {"filters": self.filters, "groups": self.groups, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.filters}, groups={self.groups}"


def _channels(channels, who: str) -> tuple[int, ...]:
    widths = (channels,) if isinstance(channels, numbers.Integral) else tuple(channels)
    if not widths:
        raise ValueError(f"{who}: channels must hold at least one level width, got {channels!r}")
    return tuple(positive_int(c, f"{who}: channels") for c in widths)


class _KLCoder(Module):
    """What encoder and decoder share: the level widths, the blocks per level, the groups,
    the output convolution and the check that H and W divide by 2^(levels - 1)."""

    def __init__(self, out_channels: int, channels, num_res_blocks: int, groups: int, name: str | None):
        super().__init__(name=name)
        who = type(self).__name__
        self.out_channels = positive_int(out_channels, f"{who}: out_channels")
        self.channels = _channels(channels, who)
        self.num_res_blocks = positive_int(num_res_blocks, f"{who}: num_res_blocks")
        self.groups = positive_int(groups, f"{who}: groups")

    def _checked(self, x, check_size: bool) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4:
            raise input_error(self, x, "a 4-D NHWC batch (batch, height, width, channels)")
        factor = 2 ** (len(self.channels) - 1)
        if check_size and (x.shape[1] % factor or x.shape[2] % factor):
            raise ShapeError(f"{self._label()}: got an input of shape {tuple(x.shape)}; its height and width must "
                             f"be divisible by 2^(levels - 1) = {factor} ({len(self.channels)} levels)")
        return x

    def get_config(self) -> dict:
        return {"out_channels": self.out_channels, "channels": list(self.channels),
                "num_res_blocks": self.num_res_blocks, "groups": self.groups, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.out_channels}, channels={self.channels}, num_res_blocks={self.num_res_blocks}"


@register_layer
class KLEncoder(_KLCoder):
    """Images (N, H, W, C) -> (N, H / 2^(L-1), W / 2^(L-1), ``out_channels``) (twice the latent
    channels for mean and log-variance): stem, per level ``num_res_blocks`` residual blocks and
    (but at the last level) a 3x3 stride-2 convolution, two middle blocks, GroupNorm, SiLU and a
    3x3 convolution."""

    def __init__(self, out_channels: int, channels=(32, 64), num_res_blocks: int = 1, groups: int = 8,
                 name: str | None = None):
        super().__init__(out_channels, channels, num_res_blocks, groups, name)
        self.conv_in = Conv2D(self.channels[0], 3, padding="same", name="conv_in")
        self.blocks = ModuleList([KLResidualBlock(c, self.groups, name=f"block{level}_{k}")
                                  for level, c in enumerate(self.channels) for k in range(self.num_res_blocks)])
        self.downsamplers = ModuleList([Conv2D(c, 3, stride=2, padding="same", name=f"downsample{level}")
                                        for level, c in enumerate(self.channels[:-1])])
        self.middle = ModuleList([KLResidualBlock(self.channels[-1], self.groups, name=f"middle{k}")
                                  for k in range(2)])
        self.norm_out = GroupNorm(_groups(self.groups, self.channels[-1]), name="norm_out")
        self.conv_out = Conv2D(self.out_channels, 3, padding="same", name="conv_out")

    def forward(self, x) -> Tensor:
        h = self.conv_in(self._checked(x, True))
        for level in range(len(self.channels)):
            for k in range(self.num_res_blocks):
                h = self.blocks[level * self.num_res_blocks + k](h)
            if level < len(self.downsamplers):
                h = self.downsamplers[level](h)
        for block in self.middle:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


@register_layer
class KLDecoder(_KLCoder):
    """Latents (N, h, w, c) -> (N, h 2^(L-1), w 2^(L-1), ``out_channels``): stem to the last
    level's width, two middle blocks, then from the last level to the first ``num_res_blocks``
    + 1 residual blocks and (but at level 0) nearest 2x upsampling and a 3x3 convolution, then
    GroupNorm, SiLU and a 3x3 convolution."""

    def __init__(self, out_channels: int, channels=(32, 64), num_res_blocks: int = 1, groups: int = 8,
                 name: str | None = None):
        super().__init__(out_channels, channels, num_res_blocks, groups, name)
        per_level = self.num_res_blocks + 1
        self.conv_in = Conv2D(self.channels[-1], 3, padding="same", name="conv_in")
        self.middle = ModuleList([KLResidualBlock(self.channels[-1], self.groups, name=f"middle{k}")
                                  for k in range(2)])
        self.blocks = ModuleList([KLResidualBlock(c, self.groups, name=f"block{level}_{k}")
                                  for level, c in enumerate(self.channels) for k in range(per_level)])
        self.upsamplers = ModuleList([Upsample(scale_factor=2, mode="nearest", name=f"upsample{level}")
                                      for level in range(1, len(self.channels))])
        self.up_convs = ModuleList([Conv2D(self.channels[level], 3, padding="same", name=f"upconv{level}")
                                    for level in range(1, len(self.channels))])
        self.norm_out = GroupNorm(_groups(self.groups, self.channels[0]), name="norm_out")
        self.conv_out = Conv2D(self.out_channels, 3, padding="same", name="conv_out")

    def forward(self, z) -> Tensor:
        h = self.conv_in(self._checked(z, False))
        for block in self.middle:
            h = block(h)
        per_level = self.num_res_blocks + 1
        for level in range(len(self.channels) - 1, -1, -1):
            for k in range(per_level):
                h = self.blocks[level * per_level + k](h)
            if level > 0:
                h = self.up_convs[level - 1](self.upsamplers[level - 1](h))
        return self.conv_out(F.silu(self.norm_out(h)))


@register_layer
class AutoencoderKL(Module):
    """A KL-regularised convolutional autoencoder of NHWC images with ``in_channels`` channels
    and latents of ``latent_channels`` channels, 2^(len(channels) - 1) times smaller in height
    and width (see the module notes). Calling it gives the reconstruction decode(mode(encode(x)))
    (``sample_posterior=True``: of a sample). ``scaling_factor``: the factor of the scaled
    latents a :class:`LatentDiffusion` trains on."""

    def __init__(self, in_channels: int, latent_channels: int = 4, channels=(32, 64), num_res_blocks: int = 1,
                 groups: int = 8, scaling_factor: float = 1.0, name: str | None = None):
        super().__init__(name=name)
        self.in_channels = positive_int(in_channels, "AutoencoderKL: in_channels")
        self.latent_channels = positive_int(latent_channels, "AutoencoderKL: latent_channels")
        self.channels = _channels(channels, "AutoencoderKL")
        self.num_res_blocks = positive_int(num_res_blocks, "AutoencoderKL: num_res_blocks")
        self.groups = positive_int(groups, "AutoencoderKL: groups")
        self.scaling_factor = _positive_float(scaling_factor, "AutoencoderKL: scaling_factor")
        self.encoder = KLEncoder(2 * self.latent_channels, self.channels, self.num_res_blocks, self.groups,
                                 name="encoder")
        self.decoder = KLDecoder(self.in_channels, self.channels, self.num_res_blocks, self.groups, name="decoder")

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def _images(self, x, who: str) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ShapeError(f"{self._label()}.{who}: got {describe(x)}; expected NHWC images (batch, height, width, "
                             f"{self.in_channels})")
        return x

    def encode(self, x) -> DiagonalGaussian:
        """The posterior q(z | x) of images ``x`` (N, H, W, in_channels)."""
        return DiagonalGaussian(self.encoder(self._images(x, "encode")))

    def decode(self, z) -> Tensor:
        """Images (N, h f, w f, in_channels) from latents ``z`` (N, h, w, latent_channels), f the
        downsampling factor (unscaled latents: divide scaled ones by ``scaling_factor`` first)."""
        z = as_tensor(z)
        if z.ndim != 4 or z.shape[-1] != self.latent_channels:
            raise ShapeError(f"{self._label()}.decode: got {describe(z)}; expected latents (batch, height, width, "
                             f"{self.latent_channels})")
        return self.decoder(z)

    def forward(self, x, sample_posterior: bool = False) -> Tensor:
        posterior = self.encode(x)
        return self.decode(posterior.sample() if sample_posterior else posterior.mode())

    def loss(self, x, kl_weight: float = 1e-6, reconstruction: str = "l1", extra=None, noise=None,
             return_parts: bool = False):
        """(1/N) sum over the batch of [sum over values of |x - x^| (``reconstruction='l2'``: of
        (x - x^)^2) + ``kl_weight`` KL(q(z | x) || N(0, I))], x^ = decode(z), z a reparameterised
        sample of the posterior (``noise`` given, or drawn). ``extra``: a callable (x, x^) -> a
        scalar Tensor added as it is (a perceptual or adversarial term). ``return_parts``: also a
        dict of the terms' values (floats)."""
        if reconstruction not in RECONSTRUCTIONS:
            raise ValueError(f"{self._label()}.loss: reconstruction must be one of {RECONSTRUCTIONS}, "
                             f"got {reconstruction!r}")
        if isinstance(kl_weight, bool) or not isinstance(kl_weight, numbers.Real) or not kl_weight >= 0:
            raise ValueError(f"{self._label()}.loss: kl_weight must be a number >= 0, got {kl_weight!r}")
        x = self._images(x, "loss")
        posterior = self.encode(x)
        x_hat = self.decode(posterior.sample(noise))
        diff = x - x_hat
        errors = F.abs(diff) if reconstruction == "l1" else diff * diff
        n = x.shape[0]
        rec = F.sum(errors) / n
        kl = F.sum(posterior.kl()) / n
        total = rec + float(kl_weight) * kl
        parts = {"reconstruction": rec.item(), "kl": kl.item()}
        if extra is not None:
            term = extra(x, x_hat)
            total = total + term
            parts["extra"] = term.item()
        return (total, parts) if return_parts else total

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "latent_channels": self.latent_channels,
                "channels": list(self.channels), "num_res_blocks": self.num_res_blocks, "groups": self.groups,
                "scaling_factor": self.scaling_factor, "name": self.name}

    def extra_repr(self) -> str:
        return (f"{self.in_channels} -> {self.latent_channels} latent channels, channels={self.channels}, "
                f"scaling_factor={self.scaling_factor:g}")


def _positive_float(value, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{who} must be a finite number > 0, got {value!r}")
    return float(value)


def _latents(autoencoder: AutoencoderKL, x, sample: bool, batch_size: int) -> np.ndarray:
    parts = []
    with no_grad(), evaluation_mode(autoencoder):
        for start in range(0, len(x), batch_size):
            posterior = autoencoder.encode(x[start:start + batch_size])
            z = posterior.sample() if sample else posterior.mode()
            parts.append(np.asarray(backend.to_numpy(z.data)))
    return np.concatenate(parts)


def estimate_scaling_factor(autoencoder: AutoencoderKL, x, sample: bool = True, batch_size: int = 256) -> float:
    """1 / std of the latents of images ``x`` (all values pooled; posterior samples, or the means
    when ``sample`` is False), so that scaling_factor * z has unit variance on that data."""
    if not isinstance(autoencoder, AutoencoderKL):
        raise TypeError(f"estimate_scaling_factor: expected an AutoencoderKL, got {type(autoencoder).__name__}")
    batch_size = positive_int(batch_size, "estimate_scaling_factor: batch_size")
    std = float(_latents(autoencoder, x, sample, batch_size).std())
    if not std > 0:
        raise ValueError(f"estimate_scaling_factor: the latents of the {len(x)} images have std {std}; no factor "
                         "scales them to unit variance")
    return 1.0 / std


@register_layer
class LatentDiffusion(Module):
    """A :class:`DiffusionModel` trained on the scaled latents scaling_factor * z of a frozen
    :class:`AutoencoderKL` (``scaling_factor`` None: the autoencoder's). ``flatten``: the
    diffusion model sees each latent map as one vector (N, h w c), for a vector denoiser such as
    :class:`DenoisingMLP` on tiny latents. ``latent_shape``: the (h, w, c) of one latent map,
    taken from the first images encoded unless given. Calling it runs the diffusion model's net
    on (flattened) scaled latents: ``ldm(z_t, t[, y])``."""

    def __init__(self, autoencoder: AutoencoderKL, diffusion: DiffusionModel, scaling_factor: float | None = None,
                 flatten: bool = False, latent_shape=None, name: str | None = None):
        super().__init__(name=name)
        if not isinstance(autoencoder, AutoencoderKL):
            raise TypeError(f"LatentDiffusion: autoencoder must be an AutoencoderKL, got {type(autoencoder).__name__}")
        if not isinstance(diffusion, DiffusionModel):
            raise TypeError(f"LatentDiffusion: diffusion must be a DiffusionModel, got {type(diffusion).__name__}")
        self.autoencoder, self.diffusion = autoencoder, diffusion
        self.scaling_factor = autoencoder.scaling_factor if scaling_factor is None else _positive_float(
            scaling_factor, "LatentDiffusion: scaling_factor")
        self.flatten = bool(flatten)
        self.latent_shape = None if latent_shape is None else tuple(
            positive_int(n, "LatentDiffusion: latent_shape") for n in latent_shape)

    def build(self, input_shape) -> None:
        """Note the latent shape from the first (scaled latents) input and build the autoencoder
        for the images of those latents (a loaded model is rebuilt so)."""
        shape = tuple(input_shape[0] if isinstance(input_shape, list) else input_shape)
        if not self.flatten:
            self._note_latent_shape(tuple(shape[1:]))
        if self.latent_shape is not None and not self.autoencoder.built:
            h, w, _ = self.latent_shape
            f = self.autoencoder.downsampling_factor
            images = np.zeros((1, h * f, w * f, self.autoencoder.in_channels), dtype=backend.get_default_dtype())
            with no_grad(), evaluation_mode(self.autoencoder):
                self.autoencoder(images)
        self.built = True

    def _built_on(self, latents) -> None:
        if not self.built:
            with no_grad(), evaluation_mode(self):
                self(as_tensor(latents)[:1], np.zeros(1, dtype=np.int64))

    def forward(self, z_t, t, y=None, context=None) -> Tensor:
        return self.diffusion(z_t, t, y) if context is None else self.diffusion(z_t, t, y, context=context)

    def encode_latents(self, x, sample: bool = True) -> Tensor:
        """scaling_factor * z for images ``x``, z a posterior sample (or mean), with no graph
        (flattened to (N, h w c) when ``flatten``)."""
        with no_grad(), evaluation_mode(self.autoencoder):
            posterior = self.autoencoder.encode(x)
            z = posterior.sample() if sample else posterior.mode()
        self._note_latent_shape(tuple(z.shape[1:]))
        latents = Tensor._wrap((z * self.scaling_factor).data)
        return F.reshape(latents, z.shape[0], -1) if self.flatten else latents

    def _note_latent_shape(self, shape: tuple) -> None:
        if self.latent_shape is None:
            self.latent_shape = tuple(int(n) for n in shape)
        elif shape != self.latent_shape:
            raise ShapeError(f"{self._label()}: got latent maps of shape {shape}; the model was made for "
                             f"{self.latent_shape}")

    def _diffusion_shape(self) -> tuple:
        return (math.prod(self.latent_shape),) if self.flatten else self.latent_shape

    def decode_latents(self, latents) -> Tensor:
        """Images from scaled latents (maps, or vectors when ``flatten``): decode(latents /
        scaling_factor), with no graph."""
        latents = as_tensor(latents)
        if self.flatten:
            if self.latent_shape is None or latents.ndim != 2 or latents.shape[1] != math.prod(self.latent_shape):
                raise ShapeError(f"{self._label()}.decode_latents: got {describe(latents)}; expected flattened "
                                 f"latents of the maps {self.latent_shape}")
            latents = F.reshape(latents, latents.shape[0], *self.latent_shape)
        with no_grad(), evaluation_mode(self.autoencoder):
            return self.autoencoder.decode(latents * (1.0 / self.scaling_factor))

    def loss(self, x, labels=None, encoded: bool = False, context=None) -> Tensor:
        """The diffusion loss (:meth:`DiffusionModel.loss`, with ``labels`` or a conditioning
        sequence ``context``) on the scaled latents of images ``x`` (``encoded``: ``x`` holds such
        latents already, e.g. cached from :meth:`encode_latents`)."""
        latents = x if encoded else self.encode_latents(x)
        self._built_on(latents)
        return self.diffusion.loss(latents, labels, context=context)

    def train_step(self, x, optimizer, labels=None, encoded: bool = False, context=None) -> float:
        """One optimizer step on :meth:`loss` of the batch ``x``; its value. ``optimizer`` should
        hold the diffusion model's parameters (``Adam(ldm.diffusion)``); the autoencoder gets no
        gradient."""
        loss = self.loss(x, labels, encoded, context)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    def latent_shape_of(self, image_shape) -> tuple[int, int, int]:
        """The shape (h, w, c) of one latent map of images of ``image_shape`` (H, W[, C])."""
        f = self.autoencoder.downsampling_factor
        height, width = (int(n) for n in tuple(image_shape)[:2])
        if height % f or width % f:
            raise ShapeError(f"{self._label()}.latent_shape: images of {height}x{width} do not divide by the "
                             f"autoencoder's downsampling factor {f}")
        return height // f, width // f, self.autoencoder.latent_channels

    def sample(self, n: int, image_shape=None, steps: int | None = None, labels=None, guidance_scale: float = 1.0,
               scheduler=None, return_latents: bool = False, **options):
        """``n`` decoded images (a NumPy array): latents drawn by :meth:`DiffusionModel.sample`
        (``steps``, ``labels`` and ``guidance_scale``, ``scheduler`` and its ``options``: method,
        eta, clip_x0, start, context) and decoded. ``image_shape`` (H, W) fixes the latent size when the
        diffusion model has not seen latents yet. ``return_latents``: (images, scaled latents)."""
        if image_shape is not None:
            self._note_latent_shape(self.latent_shape_of(image_shape))
        if self.latent_shape is None:
            raise RuntimeError(f"{self._label()}.sample: the latent shape is unknown; give image_shape= or "
                               "latent_shape=, or train the model first")
        shape = self._diffusion_shape()
        if self.diffusion.sample_shape not in (None, shape):
            raise ShapeError(f"{self._label()}.sample: latents {self.latent_shape} need a diffusion model of samples "
                             f"{shape}; it makes {self.diffusion.sample_shape}")
        self.diffusion.sample_shape = shape
        latents = self.diffusion.sample(n, steps=steps, labels=labels, guidance_scale=guidance_scale,
                                        scheduler=scheduler, **options)
        self._built_on(latents)
        images = np.asarray(backend.to_numpy(self.decode_latents(latents).data))
        return (images, latents) if return_latents else images

    def get_config(self) -> dict:
        return {"autoencoder": layer_to_config(self.autoencoder), "diffusion": layer_to_config(self.diffusion),
                "scaling_factor": self.scaling_factor, "flatten": self.flatten,
                "latent_shape": None if self.latent_shape is None else list(self.latent_shape), "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> LatentDiffusion:
        config = dict(config)
        config["autoencoder"] = layer_from_config(config["autoencoder"])
        config["diffusion"] = layer_from_config(config["diffusion"])
        return cls(**config)

    def extra_repr(self) -> str:
        return f"scaling_factor={self.scaling_factor:g}" + (", flatten=True" if self.flatten else "")
