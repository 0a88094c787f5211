"""The second stage of VQGAN (Esser et al. 2021): an autoregressive transformer over the code
indices of a trained :class:`~lamina.models.VQGAN`.

An image's index map (h, w) is read in raster order as s = (s_1 .. s_{hw}) and modelled as

    p(s) = prod_i p(s_i | s_<i),

a decoder-only transformer (a small :class:`~lamina.models.Llama`) over K + 1 tokens, the
extra token K a start-of-image token s_0 that every sequence begins with. It is trained on
the mean cross-entropy -log p(s_i | s_0 .. s_{i-1}) of the codes of the training images
(:func:`lamina.train.train_vqgan_prior`); sampling draws h w tokens one at a time (optionally
with a temperature and top-k) and the VQGAN decodes them (:meth:`VQGANTransformer.sample_images`).
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.llama import Llama
from lamina.models.vqgan import VQGAN
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, evaluation_mode

__all__ = ["VQGANTransformer"]


@register_with_arguments(modules=("vqgan",))
class VQGANTransformer(Module):
    """A first-stage ``vqgan`` (kept as it is: the prior does not train it) and a Llama prior
    ``transformer`` over its index maps of ``latent_shape`` (h, w): ``hidden_size``,
    ``num_layers``, ``num_heads``, vocabulary num_embeddings + 1 (the last id the start token,
    :attr:`start_id`), h w + 1 positions.

    ``model(indices)`` on index maps (N, h, w) gives the (N, h w, K) scores of each code given
    the ones before it; :meth:`loss` their cross-entropy; :meth:`sample_indices` and
    :meth:`sample_images` draw new ones.
    """

    def __init__(self, vqgan: VQGAN, latent_shape, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                 name: str | None = None):
        super().__init__(name=name)
        if not isinstance(vqgan, VQGAN):
            raise TypeError(f"VQGANTransformer: vqgan must be a VQGAN, got {type(vqgan).__name__}")
        self.vqgan = vqgan
        shape = tuple(int(n) for n in latent_shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"VQGANTransformer: latent_shape must be (h, w), two positive ints; got {latent_shape!r}")
        self.latent_shape = shape
        hidden = positive_int(hidden_size, "VQGANTransformer: hidden_size")
        self.transformer = Llama(vocab_size=vqgan.num_embeddings + 1, hidden_size=hidden, intermediate_size=2 * hidden,
                                 num_hidden_layers=positive_int(num_layers, "VQGANTransformer: num_layers"),
                                 num_attention_heads=positive_int(num_heads, "VQGANTransformer: num_heads"),
                                 max_position_embeddings=self.sequence_length + 1, name="transformer")
        self.transformer.build((None, 1))
        self.built = True

    @property
    def sequence_length(self) -> int:
        """h w: the codes of one image."""
        return self.latent_shape[0] * self.latent_shape[1]

    @property
    def start_id(self) -> int:
        """The start-of-image token: num_embeddings."""
        return self.vqgan.num_embeddings

    def _sequences(self, indices, who: str) -> np.ndarray:
        ids = np.asarray(indices.data if isinstance(indices, Tensor) else indices)
        if ids.shape[1:] != self.latent_shape or ids.dtype.kind not in "iu" or (
                ids.size and (ids.min() < 0 or ids.max() >= self.start_id)):
            raise ShapeError(f"{self._label()}.{who}: expected integer index maps (N, {self.latent_shape[0]}, "
                             f"{self.latent_shape[1]}) in [0, {self.start_id}), got shape {ids.shape}, dtype "
                             f"{ids.dtype}")
        return ids.reshape(len(ids), -1).astype(np.int64)

    def forward(self, indices) -> Tensor:
        """Scores (N, h w, K) of every code given the start token and the codes before it."""
        codes = self._sequences(indices, "forward")
        inputs = np.concatenate([np.full((len(codes), 1), self.start_id), codes[:, :-1]], axis=1)
        return self.transformer(inputs)[:, :, :self.start_id]

    def loss(self, indices) -> Tensor:
        """The mean next-code cross-entropy (nats) of index maps (N, h, w)."""
        return F.cross_entropy(self(indices), self._sequences(indices, "loss"))

    def encode(self, images) -> np.ndarray:
        """The VQGAN's index maps (N, h, w) of ``images``."""
        with no_grad(), evaluation_mode(self.vqgan):
            indices = self.vqgan.encode(images).indices
        return self._sequences(indices, "encode").reshape((-1, *self.latent_shape))

    def sample_indices(self, n: int, temperature: float = 1.0, top_k: int | None = None,
                       seed: int | None = None) -> np.ndarray:
        """``n`` index maps (n, h, w) drawn code by code from the prior."""
        n = positive_int(n, f"{self._label()}.sample_indices: n")
        start = np.full((n, 1), self.start_id, dtype=np.int64)
        bad = [[self.start_id]]                      # the start token is never drawn
        with evaluation_mode(self.transformer):
            ids = self.transformer.generate(start, max_new_tokens=self.sequence_length, do_sample=True,
                                            temperature=temperature, top_k=top_k, bad_words_ids=bad, seed=seed)
        return np.asarray(ids)[:, 1:].reshape((n, *self.latent_shape))

    def sample_images(self, n: int, temperature: float = 1.0, top_k: int | None = None,
                      seed: int | None = None) -> Tensor:
        """``n`` images decoded from index maps drawn by :meth:`sample_indices`."""
        indices = self.sample_indices(n, temperature, top_k, seed)
        with no_grad(), evaluation_mode(self.vqgan):
            return self.vqgan.decode_indices(indices)
