"""SigLIP's sigmoid loss over several ranks without gathering the batch (Zhai et al. 2023, sec. 3.3).

Rank r holds n_r image embeddings x and their n_r text embeddings y; the global batch has
N = sum_r n_r pairs. Each rank first scores its images against its own texts (the positives on
the diagonal and the local negatives), then the text chunks move one step round the ring
(rank r sends the chunk it holds to r + 1 and receives one from r - 1) and the rank scores its
images against the received chunk, all negatives; after R - 1 steps every image has met every
text. Only one chunk of texts is in memory at a time, and no collective over the batch is run:

    L_r = -sum_{i in r} sum_j log sigmoid(z_ij (exp(t') x_i . y_j + b)),   L = (sum_r L_r) / N

The ring step is a differentiable op whose backward sends the chunk's gradient back the
other way, so every rank's texts collect the gradients of all the ranks' terms that used
them; t' and b enter through :func:`~lamina.distributed.copy_to_parallel_region` (their
gradients summed over the ranks) and the L_r through
:func:`~lamina.distributed.reduce_from_parallel_region`, so the returned L, its gradients
with respect to this rank's embeddings, t' and b are those of the single-process loss on the
concatenated batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lamina import functional as F
from lamina.autograd import Function, Tensor
from lamina.distributed.collectives import all_reduce, recv_array, send
from lamina.distributed.group import resolve_group
from lamina.distributed.tensor_parallel import copy_to_parallel_region, reduce_from_parallel_region
from lamina.errors import ShapeError
from lamina.functional.losses_siglip import SIGLIP_BIAS_INIT, SIGLIP_LOG_TEMPERATURE_INIT
from lamina.nn.module import as_tensor

__all__ = ["ring_shift", "siglip_loss_ring"]

_RING_TAG = 36


def _shifted(array: np.ndarray, shift: int, group: Any) -> np.ndarray:
    """Send ``array`` to rank + shift and return what rank - shift sent (ranks of ``group``,
    mod its size). Even ranks send first and odd ranks receive first, so that no two
    neighbours both wait in a send."""
    size, rank = group.world_size, group.rank
    ranks = group.ranks if hasattr(group, "ranks") else list(range(size))
    to, source = ranks[(rank + shift) % size], ranks[(rank - shift) % size]
    payload = np.ascontiguousarray(array)
    if rank % 2 == 0:
        send(payload, to, group=group, tag=_RING_TAG)
        return recv_array(source, _RING_TAG, group=group)
    received = recv_array(source, _RING_TAG, group=group)
    send(payload, to, group=group, tag=_RING_TAG)
    return received


class RingShift(Function):
    """y = the x of rank r - shift; dJ/dx = the dJ/dy of rank r + shift (the step run backwards)."""

    group = None
    shift = 1

    def forward(self, x):
        return _shifted(x, self.shift, self.group)

    def backward(self, dy):
        return (_shifted(dy, -self.shift, self.group),)

    def backward_graph(self, dy: Tensor) -> tuple:
        return (RingShift.apply(dy, group=self.group, shift=-self.shift),)


def ring_shift(x: Any, shift: int = 1, group: Any = None) -> Tensor:
    """The ``x`` of rank (r - shift) mod R, received while this rank's ``x`` goes to rank
    (r + shift) mod R (ranks of ``group``); differentiable, its backward the opposite shift.
    Every rank must call it, in the same order; the ranks' shapes may differ."""
    return RingShift.apply(as_tensor(x), group=resolve_group(group, "ring_shift"), shift=int(shift))


def _scalar(value, dtype) -> Tensor:
    return value if isinstance(value, Tensor) else Tensor(value, dtype=dtype)


def _check(x: Tensor, y: Tensor, who: str) -> None:
    if x.ndim != 2 or x.shape != y.shape:
        raise ShapeError(f"{who}: image_emb and text_emb must be matching pairs of one shape (n, D), got "
                         f"{x.shape} and {y.shape}")


def siglip_loss_ring(image_emb, text_emb, t_prime=SIGLIP_LOG_TEMPERATURE_INIT, b=SIGLIP_BIAS_INIT,
                     normalize: bool = True, group: Any = None) -> Tensor:
    """SigLIP's loss of the batch spread over the ranks (see the module docstring), computed
    chunk by chunk with the text embeddings passed round a ring by send / recv. Every rank
    calls it with its own ``image_emb`` and ``text_emb`` (n_r, D) (n_r may differ between
    ranks, D may not) and the same ``t_prime`` and ``b``; each gets the global loss, equal to
    :func:`lamina.functional.siglip_loss` of the concatenated batch, and backward gives each
    rank the global loss's gradients with respect to its embeddings and to t' and b.

    With :class:`DistributedDataParallel` around the towers, note that it averages the
    parameter gradients over the ranks: the towers then follow L / R."""
    who = "siglip_loss_ring"
    group = resolve_group(group, who)
    x, y = as_tensor(image_emb), as_tensor(text_emb)
    _check(x, y, who)
    counts = np.array([x.shape[0], x.shape[1]], dtype=np.int64)
    sizes = np.zeros(2 * group.world_size, dtype=np.int64)
    sizes[2 * group.rank:2 * group.rank + 2] = counts
    all_reduce(sizes, group=group)
    widths = set(sizes[1::2].tolist())
    if len(widths) != 1:
        raise ShapeError(f"{who}: the ranks' embeddings differ in size D: {sizes[1::2].tolist()} (rank order)")
    total = int(sizes[0::2].sum())
    if total == 0:
        raise ShapeError(f"{who}: the ranks hold no pairs at all")
    if normalize:
        x, y = F.normalize(x, axis=-1), F.normalize(y, axis=-1)
    t_prime = copy_to_parallel_region(_scalar(t_prime, x.dtype), group=group)
    b = copy_to_parallel_region(_scalar(b, x.dtype), group=group)
    local = F.siglip_block_loss(x, y, t_prime, b, positives_on_diagonal=True)
    chunk = y
    for _ in range(group.world_size - 1):
        chunk = ring_shift(chunk, 1, group)
        local = F.add(local, F.siglip_block_loss(x, chunk, t_prime, b, positives_on_diagonal=False))
    return reduce_from_parallel_region(F.mul(local, 1.0 / total), group=group)
