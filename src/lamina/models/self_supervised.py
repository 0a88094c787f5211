"""Parts of momentum-encoder and clustering self-supervised methods: MoCo's queue of
negative keys (He et al. 2020) and SwAV's prototypes (Caron et al. 2020). The losses are in
:mod:`lamina.functional.losses_siamese`, the training loops in :mod:`lamina.train.siamese`.
"""

from __future__ import annotations

import numpy as np

from lamina import backend, nn
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module

__all__ = ["MoCoQueue", "SwAVPrototypes"]


class MoCoQueue(Module):
    """A first-in first-out store of the last ``size`` keys of dimension ``dim``, MoCo's
    dictionary of negatives. It starts as random unit vectors (as the reference); each
    :meth:`enqueue` writes a batch of keys over the oldest ones. It is a ring buffer (buffer
    ``queue``, (size, dim), and ``pointer``, the next row to write), so ``size`` must be a
    multiple of the batch size, as the reference requires; :meth:`keys` gives the rows in
    order, oldest first. Keys are stored as given (MoCo enqueues unit vectors)."""

    def __init__(self, dim: int, size: int = 65536, name: str | None = None):
        super().__init__(name=name)
        self.dim, self.size = positive_int(dim, "MoCoQueue: dim"), positive_int(size, "MoCoQueue: size")
        start = backend.rng().standard_normal((self.size, self.dim)).astype(backend.get_default_dtype())
        self.register_buffer("queue", start / np.linalg.norm(start, axis=1, keepdims=True))
        self.register_buffer("pointer", np.zeros((), dtype=np.int64))
        self.built = True

    def enqueue(self, keys) -> None:
        """Replace the oldest len(keys) rows with ``keys`` (N, dim), N dividing ``size``."""
        values = keys.data if isinstance(keys, Tensor) else np.asarray(keys)
        if values.ndim != 2 or values.shape[1] != self.dim:
            raise ShapeError(f"MoCoQueue.enqueue: keys must have shape (N, {self.dim}), got shape {values.shape}")
        n = values.shape[0]
        if self.size % n:
            raise ValueError(f"MoCoQueue.enqueue: the queue size {self.size} is not a multiple of the batch of {n} "
                             "keys; choose a size divisible by the batch size (the last batch of an epoch too)")
        start = int(self._buffers["pointer"])
        self._buffers["queue"][start:start + n] = values
        self._buffers["pointer"] = np.asarray((start + n) % self.size, dtype=np.int64)

    def keys(self) -> np.ndarray:
        """The stored keys, oldest first: (size, dim)."""
        return np.roll(self._buffers["queue"], -int(self._buffers["pointer"]), axis=0)

    def forward(self) -> Tensor:
        """The ring buffer as a constant tensor (the order does not matter to the loss)."""
        return Tensor(self._buffers["queue"])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, size={self.size}"


@register_with_arguments
class SwAVPrototypes(nn.Dense):
    """K prototype vectors c_k in the embedding space, as a Dense layer without bias whose
    kernel's columns are the prototypes: scores = z C, (N, D) -> (N, K). SwAV keeps each c_k
    of unit length: :meth:`normalize_` rescales them and is called before every step."""

    def __init__(self, n_prototypes: int = 3000, name: str | None = "prototypes"):
        super().__init__(positive_int(n_prototypes, "SwAVPrototypes: n_prototypes"), use_bias=False, name=name)

    def normalize_(self) -> None:
        """c_k <- c_k / ||c_k|| for every prototype, in place (no graph)."""
        if self.built:
            w = self.weight.data
            w[...] = w / np.maximum(np.linalg.norm(w, axis=0, keepdims=True), 1e-12)
