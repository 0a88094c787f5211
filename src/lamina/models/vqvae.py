"""VQ-VAE (van den Oord et al. 2017): an autoencoder with a discrete latent grid.

The encoder maps an image (N, H, W, C) to a grid of vectors z_e (N, H / 2^d, W / 2^d, D)
(d stride-2 convolutions, then a residual stack); each vector is replaced by its nearest
code of a learned codebook of K codes (:class:`lamina.nn.VectorQuantizer`, or
:class:`lamina.nn.VectorQuantizerEMA` with ``ema=True``), and the decoder (a residual stack
and d stride-2 transposed convolutions) maps the codes back. Trained on

    L = ||x - x_hat||^2 + ||sg(z_e) - e||^2 + beta ||z_e - sg(e)||^2

with the reconstruction gradient copied straight through the quantiser to the encoder.

An image is then a map of code indices; a prior over those maps, e.g. a
:class:`lamina.models.GatedPixelCNN` with ``levels = K`` trained on the encoded training
set, gives new images: sample an index map, decode it (:meth:`VQVAE.sample`).

The paper's residual block: x + conv1x1(relu(conv3x3(relu(x)))), a ReLU after the stack.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.functional.vector_quantize import VQResult
from lamina.nn import Conv2D, Conv2DTranspose, ModuleList, VectorQuantizer, VectorQuantizerEMA
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor, evaluation_mode

__all__ = ["VQVAE", "VQVAEOutput"]


class VQVAEOutput(NamedTuple):
    """A VQ-VAE's forward pass: the reconstruction, the quantiser's loss, the perplexity of
    the codes used and the index map (N, h, w)."""

    reconstruction: Tensor
    vq_loss: Tensor
    perplexity: float
    indices: np.ndarray


class ResidualStack(Module):
    """``num_layers`` blocks x + conv1x1(relu(conv3x3(relu(x)))) then a ReLU."""

    def __init__(self, hidden: int, residual_hidden: int, num_layers: int, name: str | None = None):
        super().__init__(name=name)
        self.blocks = ModuleList([ModuleList([Conv2D(residual_hidden, 3, padding=1, activation="relu"),
                                              Conv2D(hidden, 1)]) for _ in range(num_layers)])

    def forward(self, x) -> Tensor:
        for spatial, project in self.blocks:
            x = x + project(spatial(x.relu()))
        return x.relu()


class _VQAutoencoder(Module):
    """What VQVAE and VQGAN share: the codebook's size and the checks of images (N, H, W, C),
    codes (N, h, w, D) and index maps (N, h, w); subclasses set ``channels`` and
    ``quantizer`` and define :meth:`latent_shape`."""

    @property
    def num_embeddings(self) -> int:
        return self.quantizer.num_embeddings

    @property
    def embedding_dim(self) -> int:
        return self.quantizer.dim

    def _checked_images(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4 or x.shape[-1] != self.channels:
            raise ShapeError(f"{self._label()}: got images of shape {tuple(x.shape)}; expected NHWC "
                             f"(N, H, W, {self.channels})")
        self.latent_shape(x.shape[1:3])
        return x

    def _checked_codes(self, quantized) -> Tensor:
        quantized = as_tensor(quantized)
        if quantized.ndim != 4 or quantized.shape[-1] != self.embedding_dim:
            raise ShapeError(f"{self._label()}.decode: got codes of shape {tuple(quantized.shape)}; expected "
                             f"(N, h, w, {self.embedding_dim})")
        return quantized

    def _checked_index_maps(self, indices) -> np.ndarray:
        indices = np.asarray(indices.data if isinstance(indices, Tensor) else indices)
        if indices.ndim != 3:
            raise ShapeError(f"{self._label()}.decode_indices: got indices of shape {indices.shape}; expected "
                             "index maps (N, h, w)")
        return indices


@register_layer
class VQVAE(_VQAutoencoder):
    """The VQ-VAE of the paper for NHWC images of ``channels`` channels whose height and
    width are multiples of 2^``downsamples``: ``hidden`` features (half of them before the
    last downsampling), residual stacks of ``num_residual_layers`` blocks of
    ``residual_hidden``, a codebook of ``num_embeddings`` codes of ``embedding_dim``. Its
    weights are made at once."""

    def __init__(self, channels: int = 1, num_embeddings: int = 64, embedding_dim: int = 16, hidden: int = 32,
                 residual_hidden: int = 16, num_residual_layers: int = 2, downsamples: int = 2,
                 commitment_cost: float = 0.25, ema: bool = False, decay: float = 0.99, name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "VQVAE: channels")
        self.hidden = positive_int(hidden, "VQVAE: hidden")
        self.residual_hidden = positive_int(residual_hidden, "VQVAE: residual_hidden")
        self.num_residual_layers = int(num_residual_layers)
        self.downsamples = positive_int(downsamples, "VQVAE: downsamples")
        self.ema, self.decay = bool(ema), float(decay)
        widths = [max(1, hidden // 2)] * (self.downsamples - 1) + [hidden]
        self.down = ModuleList([Conv2D(n, 4, stride=2, padding=1, activation="relu") for n in widths])
        self.encoder_conv = Conv2D(hidden, 3, padding=1)
        self.encoder_stack = ResidualStack(hidden, residual_hidden, self.num_residual_layers)
        self.pre_quantize = Conv2D(embedding_dim, 1)
        self.quantizer = (VectorQuantizerEMA(num_embeddings, embedding_dim, commitment_cost, decay=decay) if self.ema
                          else VectorQuantizer(num_embeddings, embedding_dim, commitment_cost))
        self.decoder_conv = Conv2D(hidden, 3, padding=1)
        self.decoder_stack = ResidualStack(hidden, residual_hidden, self.num_residual_layers)
        out_widths = widths[::-1][1:] + [self.channels]
        self.up = ModuleList([Conv2DTranspose(n, 4, stride=2, padding=1, activation="relu" if k < len(out_widths) - 1
                                              else None) for k, n in enumerate(out_widths)])
        side = 2 ** self.downsamples
        with no_grad(), evaluation_mode(self):               # every layer's weights now, for optimizers
            self.forward(np.zeros((1, side, side, self.channels), dtype=backend.get_default_dtype()))
        self.built = True

    def latent_shape(self, image_shape) -> tuple[int, int]:
        """The (h, w) of the index map of an image of (H, W[, C])."""
        factor = 2 ** self.downsamples
        height, width = int(image_shape[0]), int(image_shape[1])
        if height % factor or width % factor:
            raise ShapeError(f"{self._label()}: images of {height}x{width} pixels; expected a height and width that "
                             f"are multiples of 2^downsamples = {factor}")
        return height // factor, width // factor

    def encode(self, x) -> VQResult:
        """Images (N, H, W, C) -> the quantiser's output on the latent grid: quantized
        (N, h, w, D), loss, perplexity, indices (N, h, w)."""
        x = self._checked_images(x)
        for layer in self.down:
            x = layer(x)
        z = self.pre_quantize(self.encoder_stack(self.encoder_conv(x)))
        return self.quantizer(z)

    def decode(self, quantized) -> Tensor:
        """Codes (N, h, w, D) -> images (N, h 2^d, w 2^d, C)."""
        x = self.decoder_stack(self.decoder_conv(self._checked_codes(quantized)))
        for layer in self.up:
            x = layer(x)
        return x

    def decode_indices(self, indices) -> Tensor:
        """Index maps (N, h, w) of ints in [0, num_embeddings) -> images."""
        return self.decode(self.quantizer.lookup(self._checked_index_maps(indices)))

    def forward(self, x) -> VQVAEOutput:
        out = self.encode(x)
        return VQVAEOutput(self.decode(out.quantized), out.loss, out.perplexity, out.indices)

    def loss(self, x) -> tuple[Tensor, VQVAEOutput]:
        """The training loss mse(x, x_hat) + the quantiser's loss, and the forward pass."""
        x = as_tensor(x)
        out = self.forward(x)
        return F.mean_squared_error(out.reconstruction, x) + out.vq_loss, out

    def sample(self, prior: Module, latent_shape, num_samples: int, labels=None, temperature: float = 1.0,
               seed: int | None = None) -> Tensor:
        """``num_samples`` images decoded from index maps of ``latent_shape`` (h, w) drawn
        from ``prior`` (a PixelCNN over ``num_embeddings`` levels)."""
        if getattr(prior, "levels", None) != self.num_embeddings:
            raise ValueError(f"{self._label()}.sample: the prior must model {self.num_embeddings} levels (the "
                             f"codebook size), got {getattr(prior, 'levels', None)}")
        h, w = (int(n) for n in latent_shape)
        indices = prior.sample((num_samples, h, w), labels=labels, temperature=temperature, seed=seed)
        with no_grad(), evaluation_mode(self):
            return self.decode_indices(indices)

    def get_config(self) -> dict:
        return {"channels": self.channels, "num_embeddings": self.num_embeddings,
                "embedding_dim": self.embedding_dim, "hidden": self.hidden, "residual_hidden": self.residual_hidden,
                "num_residual_layers": self.num_residual_layers, "downsamples": self.downsamples,
                "commitment_cost": self.quantizer.commitment_cost, "ema": self.ema, "decay": self.decay,
                "name": self.name}
