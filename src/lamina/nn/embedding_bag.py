"""Bags of word embeddings reduced to one vector each, as PyTorch's ``nn.EmbeddingBag``:
a bag-of-words text model in one layer, without the (batch, words, A) array that an
:class:`~lamina.nn.Embedding` followed by a sum or a mean would build.

With E the (W, A) table (one row per word, see :mod:`lamina.nn.embedding`) and bag b
holding the words v_1 .. v_n (n_b of them, the padding word left out):

    sum:   y_b = sum_t w_t E[v_t]       (w_t: per-sample weights, 1 when none are given)
    mean:  y_b = (1/n_b) sum_t E[v_t]
    max:   y_ba = max_t E[v_t, a]        (attribute by attribute)

and an empty bag (no word but padding) gives the zero vector. Bags come in two layouts:

* ``ids`` of shape (B, N): B bags of N words each;
* ``ids`` of shape (L,) with ``offsets``: bag b is ids[offsets[b] : offsets[b + 1]], the last
  one running to the end of ids; with ``include_last_offset`` the offsets also hold that end,
  L, as CSR row pointers (B + 1 offsets for B bags). offsets[0] must be 0 and no offset may
  be smaller than the one before (a repeated offset makes an empty bag).
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.autograd.function import LinearMap
from lamina.errors import ShapeError
from lamina.nn import init as initializers
from lamina.nn.embedding import _check_padding, _RowLookup, check_ids, scatter_rows
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["EmbeddingBag", "EmbeddingBagFunction", "embedding_bag"]

MODES = ("sum", "mean", "max")


class EmbeddingBagFunction(Function):
    """The bags' reductions as one node. Inputs: the table E (W, A), then the per-sample
    weights w (the ids' shape) if any. Keywords: ``mode``; ``ids``, the words kept (padding
    left out) in bag order, and ``lengths``, how many of them each bag holds; ``positions``,
    where the kept words sit in the flattened input (None: all of them, in order).

    Forward gathers the rows E[v_t] (times w_t) and reduces each bag's run of rows with
    ``add.reduceat`` or ``maximum.reduceat``. Backward, with dJ/dy_b the bag's upstream row:

        sum, mean:  dJ/dE[v] = sum over the words t = v of c_t dJ/dy_b(t),
                    c_t = w_t (sum) or 1 / n_b(t) (mean), added by :func:`scatter_rows`
        sum:        dJ/dw_t = dJ/dy_b(t) . E[v_t]   (0 for the words left out)
        max:        dJ/dE[v, a] = sum of dJ/dy_ba over the bags b whose max of attribute a
                    is v's (the first such word of the bag on a tie, as PyTorch)
    """

    positions = None

    def forward(self, weight, per_sample_weights=None):
        xp = backend.xp
        ids, lengths = self.ids, self.lengths
        self.weight = weight
        self.filled = lengths > 0
        self.starts = (xp.cumsum(lengths) - lengths)[self.filled]
        rows = weight[ids]
        if per_sample_weights is not None:
            w = per_sample_weights.reshape(-1)
            self.sample_weights = (w if self.positions is None else w[self.positions]).astype(weight.dtype)
            rows *= self.sample_weights[:, None]
        out = xp.zeros((lengths.shape[0], weight.shape[1]), dtype=weight.dtype)
        if ids.shape[0]:
            if self.mode == "max":
                self.maxima = xp.maximum.reduceat(rows, self.starts, axis=0)
                self.rows = rows
                out[self.filled] = self.maxima
            else:
                out[self.filled] = xp.add.reduceat(rows, self.starts, axis=0)
                if self.mode == "mean":
                    out[self.filled] /= lengths[self.filled, None]
        return out

    def backward(self, dy):
        xp = backend.xp
        need_weight = self.needs_grad[0]
        need_sample_weights = len(self.needs_grad) > 1 and self.needs_grad[1]
        lengths = self.lengths[self.filled]
        bag_grads = dy[self.filled]
        dweight = dsample = None
        if self.mode == "max":
            return (self._max_gradient(bag_grads, lengths) if need_weight else None,)
        if self.mode == "mean":
            bag_grads /= lengths[:, None]
        word_grads = xp.repeat(bag_grads, lengths, axis=0)     # row t: dJ/dy of word t's bag
        if need_sample_weights:
            per_word = xp.einsum("ka,ka->k", word_grads, self.weight[self.ids])
            shape = self.inputs[1].shape
            if self.positions is None:
                dsample = per_word.reshape(shape)
            else:
                dsample = xp.zeros(self.inputs[1].size, dtype=dy.dtype)
                dsample[self.positions] = per_word
                dsample = dsample.reshape(shape)
        if need_weight:
            if len(self.needs_grad) > 1:
                word_grads *= self.sample_weights[:, None]
            dweight = scatter_rows(self.ids, word_grads, self.weight.shape[0])
        return (dweight,) if len(self.needs_grad) == 1 else (dweight, dsample)

    def backward_graph(self, dy):
        """The same VJP by tensor ops: each bag's upstream row repeated to its words (a
        gather), scaled by c_t (w_t a tensor), and added into the table rows of the words by
        the adjoint of a row lookup (a linear node); dJ/dw_t = dJ/dy_b(t) . E[v_t] with E[v_t]
        gathered from the table tensor. In max mode the routing to each bag's maximum is a
        constant (piecewise linear in E)."""
        xp = backend.xp
        weight = self.inputs[0]
        num_rows, width = self.weight.shape
        need_weight = self.needs_grad[0]
        need_sample_weights = len(self.needs_grad) > 1 and self.needs_grad[1]
        filled_bags = xp.flatnonzero(self.filled)
        if self.mode == "max":
            if not need_weight:
                return (None,)
            routed = dy[filled_bags].reshape(-1, 1)
            slots = _RowLookup(self._max_slots().reshape(-1), num_rows * width)
            return (LinearMap.apply(routed, op=slots, adjoint=True).reshape(num_rows, width),)
        lengths = self.lengths[self.filled]
        word_grads = dy[xp.repeat(filled_bags, lengths)]        # row t: dJ/dy of word t's bag
        if self.mode == "mean":
            word_grads = word_grads * (1.0 / xp.repeat(lengths, lengths))[:, None]
        dweight = dsample = None
        if need_sample_weights:
            per_word = (word_grads * weight[self.ids]).sum(axis=-1)
            sample_weights = self.inputs[1]
            if self.positions is None:
                dsample = per_word.reshape(sample_weights.shape)
            else:
                spread = _RowLookup(self.positions, sample_weights.size)     # the kept words back in place
                dsample = LinearMap.apply(per_word.reshape(-1, 1), op=spread, adjoint=True)
                dsample = dsample.reshape(sample_weights.shape)
        if need_weight:
            if len(self.needs_grad) > 1:
                sample_weights = self.inputs[1].reshape(-1)
                if self.positions is not None:
                    sample_weights = sample_weights[self.positions]
                word_grads = word_grads * sample_weights.reshape(-1, 1)
            dweight = LinearMap.apply(word_grads, op=_RowLookup(self.ids, num_rows), adjoint=True)
        return (dweight,) if len(self.needs_grad) == 1 else (dweight, dsample)

    def _max_slots(self):
        """(filled bags, A): the flat index word * A + a, in the table, of each filled bag's
        maximum of attribute a (the first such word of the bag on a tie, as backward)."""
        xp = backend.xp
        width = self.weight.shape[1]
        k = self.ids.shape[0]
        if k == 0:
            return xp.zeros((0, width), dtype=xp.int64)
        is_max = self.rows == xp.repeat(self.maxima, self.lengths[self.filled], axis=0)
        first = xp.minimum.reduceat(xp.where(is_max, xp.arange(k)[:, None], k), self.starts, axis=0)
        return self.ids[first] * width + xp.arange(width)

    def _max_gradient(self, bag_grads, lengths):
        """dJ/dE for max bags: each upstream value goes to the word holding its bag's max."""
        xp = backend.xp
        num_rows, width = self.weight.shape
        k = self.ids.shape[0]
        if k == 0:
            return xp.zeros((num_rows, width), dtype=bag_grads.dtype)
        rows = self.rows
        is_max = rows == xp.repeat(self.maxima, lengths, axis=0)
        position = xp.where(is_max, xp.arange(k)[:, None], k)
        first = xp.minimum.reduceat(position, self.starts, axis=0)     # (filled bags, A)
        # (word, attribute) slots of the table, a few per bag: add the repeated ones, then write them
        slots = (self.ids[first] * width + xp.arange(width)).reshape(-1)
        touched, slot_index = xp.unique(slots, return_inverse=True)
        grad = xp.zeros(num_rows * width, dtype=bag_grads.dtype)
        grad[touched] = xp.bincount(slot_index.reshape(-1), weights=bag_grads.reshape(-1))
        return grad.reshape(num_rows, width)


def _bag_bounds(offsets, num_ids: int, include_last_offset: bool, who: str):
    """The B + 1 bounds of the bags from ``offsets``, checked (PyTorch's format)."""
    xp = backend.xp
    data = xp.asarray(offsets.data if isinstance(offsets, Tensor) else offsets)
    if data.ndim != 1 or data.dtype.kind not in "iu":
        raise ShapeError(f"{who}: offsets must be a 1-D array of integers, got {data.dtype} of shape "
                         f"{tuple(data.shape)}")
    if data.shape[0] == 0:
        raise ValueError(f"{who}: offsets is empty; expected the start of each bag, beginning with 0")
    if int(data[0]) != 0:
        raise ValueError(f"{who}: offsets[0] is {int(data[0])}; the first bag must start at position 0")
    if data.shape[0] > 1 and bool((data[1:] < data[:-1]).any()):
        i = int(xp.flatnonzero(data[1:] < data[:-1])[0])
        raise ValueError(f"{who}: offsets must not decrease, but offsets[{i}] = {int(data[i])} > "
                         f"offsets[{i + 1}] = {int(data[i + 1])}")
    if int(data[-1]) > num_ids:
        raise ValueError(f"{who}: the last offset {int(data[-1])} is past the end of the {num_ids} ids")
    if include_last_offset and int(data[-1]) != num_ids:
        raise ValueError(f"{who}: with include_last_offset the last offset closes the last bag and must be the "
                         f"number of ids, {num_ids}; got {int(data[-1])}")
    data = data.astype(xp.int64, copy=False)
    return data if include_last_offset else xp.concatenate([data, xp.asarray([num_ids], dtype=xp.int64)])


def _bag_layout(ids, offsets, padding_idx: int | None, include_last_offset: bool, who: str):
    """(words, lengths, positions) for :class:`EmbeddingBagFunction`: the ids kept (padding
    dropped) in bag order, the number kept in each bag, and their indices in the flattened
    ``ids`` (None when all are kept)."""
    xp = backend.xp
    if ids.ndim == 2:
        if offsets is not None:
            raise ValueError(f"{who}: ids of shape {tuple(ids.shape)} are already bags of equal size; offsets "
                             "are for 1-D ids only")
        words = ids.reshape(-1)
        lengths = xp.full(ids.shape[0], ids.shape[1], dtype=xp.int64)
    elif ids.ndim == 1:
        if offsets is None:
            raise ValueError(f"{who}: 1-D ids of shape {tuple(ids.shape)} need offsets, the start of each bag")
        bounds = _bag_bounds(offsets, ids.shape[0], include_last_offset, who)
        words = ids
        lengths = xp.diff(bounds)
    else:
        raise ShapeError(f"{who}: got ids of shape {tuple(ids.shape)}; expected (bags, words) or 1-D ids "
                         "with offsets")
    positions = None
    if padding_idx is not None:
        kept = words != padding_idx
        if not bool(kept.all()):
            bag = xp.repeat(xp.arange(lengths.shape[0]), lengths)
            lengths = xp.bincount(bag[kept], minlength=lengths.shape[0])
            positions = xp.flatnonzero(kept)
            words = words[kept]
    return words, lengths, positions


def _embedding_bag(ids, weight, offsets, mode: str, per_sample_weights, padding_idx, include_last_offset: bool,
                   who: str) -> Tensor:
    if mode not in MODES:
        raise ValueError(f"{who}: mode must be one of {MODES}, got {mode!r}")
    data = check_ids(ids, weight.shape[0], who)
    inputs = [weight]
    if per_sample_weights is not None:
        if mode != "sum":
            raise ValueError(f"{who}: per_sample_weights are only supported with mode='sum' (as PyTorch), "
                             f"got mode={mode!r}")
        per_sample_weights = as_tensor(per_sample_weights)
        if tuple(per_sample_weights.shape) != tuple(data.shape):
            raise ShapeError(f"{who}: per_sample_weights of shape {tuple(per_sample_weights.shape)} do not match "
                             f"the ids of shape {tuple(data.shape)}; expected one weight per id")
        inputs.append(per_sample_weights)
    words, lengths, positions = _bag_layout(data, offsets, padding_idx, include_last_offset, who)
    return EmbeddingBagFunction.apply(*inputs, mode=mode, ids=words, lengths=lengths, positions=positions)


def embedding_bag(ids, weight, offsets=None, mode: str = "mean", per_sample_weights=None,
                  padding_idx: int | None = None, include_last_offset: bool = False) -> Tensor:
    """The bags of ``ids`` reduced over the rows of ``weight`` (W, A): shape (B, A), as
    ``torch.nn.functional.embedding_bag``. ``ids`` (B, N), or 1-D with ``offsets`` (see the
    module docstring); ``mode`` 'sum', 'mean' or 'max'; ``per_sample_weights`` (the ids'
    shape, 'sum' only) scale each word's row; ``padding_idx``: that word is left out of its
    bag (not counted by the mean) and its row gets no gradient."""
    weight = as_tensor(weight)
    if weight.ndim != 2:
        raise ShapeError(f"embedding_bag: the table must be 2-D (words, attributes), got shape {weight.shape}")
    if padding_idx is not None:
        padding_idx = _check_padding(padding_idx, weight.shape[0], "embedding_bag")
    return _embedding_bag(ids, weight, offsets, mode, per_sample_weights, padding_idx, include_last_offset,
                          "embedding_bag")


@register_layer
class EmbeddingBag(Module):
    """A learned table of ``num_embeddings`` word vectors of ``embedding_dim`` attributes,
    read a bag of words at a time: ``layer(ids)`` for (B, N) ids, ``layer(ids, offsets)``
    for 1-D ids, ``per_sample_weights=`` in 'sum' mode; output (B, embedding_dim). The
    reductions and layouts are those of the module docstring.

    ``mode``: 'sum', 'mean' (default) or 'max'. ``padding_idx``: that word is left out of
    every bag; its row starts at zero and never learns. ``include_last_offset``: offsets
    hold B + 1 bounds. ``embeddings_init`` (an initializer spec) defaults to N(0, 1), as
    PyTorch. Parameter: ``weight`` (num_embeddings, embedding_dim).
    """

    reads_ids = True           # its input is integer ids (lamina.analysis traces it with those)

    def __init__(self, num_embeddings: int, embedding_dim: int, mode: str = "mean", padding_idx: int | None = None,
                 include_last_offset: bool = False, embeddings_init=None, name: str | None = None):
        super().__init__(name=name)
        self.num_embeddings = positive_int(num_embeddings, "EmbeddingBag: num_embeddings")
        self.embedding_dim = positive_int(embedding_dim, "EmbeddingBag: embedding_dim")
        if mode not in MODES:
            raise ValueError(f"EmbeddingBag: mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.padding_idx = None if padding_idx is None else _check_padding(padding_idx, num_embeddings,
                                                                             "EmbeddingBag")
        self.include_last_offset = bool(include_last_offset)
        self.embeddings_init = embeddings_init
        self._initializer()

    def _initializer(self):
        if self.embeddings_init is None:
            return initializers.normal(std=1.0)
        return initializers.get(self.embeddings_init)

    def build(self, input_shape) -> None:
        shape = (self.num_embeddings, self.embedding_dim)
        table = self._initializer()(shape, *shape, backend.get_default_dtype())
        if self.padding_idx is not None and not initializers.is_meta_array(table):
            table[self.padding_idx] = 0
        self.add_parameter("weight", table)
        self.built = True

    def forward(self, ids, offsets=None, per_sample_weights=None) -> Tensor:
        return _embedding_bag(ids, self.weight, offsets, self.mode, per_sample_weights, self.padding_idx,
                              self.include_last_offset, self._label())

    def macs(self, input_shapes, output_shapes) -> int:
        """A lookup and additions: no multiply-accumulates."""
        return 0

    def compute_output_shape(self, input_shape):
        """(B, embedding_dim) from the shape of (B, N) ids, or from those of 1-D ids and offsets."""
        shapes = input_shape if input_shape and isinstance(input_shape[0], (list, tuple)) else [input_shape]
        ids_shape = None if shapes[0] is None else tuple(shapes[0])
        if ids_shape is not None and len(ids_shape) == 2:
            return (ids_shape[0], self.embedding_dim)
        if ids_shape is not None and len(ids_shape) == 1 and len(shapes) > 1 and len(shapes[1]) == 1:
            bounds = shapes[1][0]
            return (None if bounds is None else bounds - self.include_last_offset, self.embedding_dim)
        raise ShapeError(f"{self._label()}: got input shapes {input_shape!r}; expected the shape of (bags, words) "
                         "ids, or those of 1-D ids and 1-D offsets")

    def get_config(self) -> dict:
        init = self.embeddings_init
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "mode": self.mode,
            "padding_idx": self.padding_idx,
            "include_last_offset": self.include_last_offset,
            "embeddings_init": None if init is None else initializers.serialize(init),
            "name": self.name,
        }

    def extra_repr(self) -> str:
        text = f"{self.num_embeddings}, {self.embedding_dim}, mode={self.mode!r}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        return text + (", include_last_offset=True" if self.include_last_offset else "")
