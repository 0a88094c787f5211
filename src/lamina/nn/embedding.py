"""Word embeddings (course notes, Embedding matrix).

The notes keep an embedding matrix E of shape (A, W), A attributes (the embedding size) and
W words, one column per word, and read the vector of word v as a product with its one-hot
vector o_v:

    e_v = E o_v

lamina stores the transpose, a (W, A) matrix with one *row* per word (as PyTorch's
``nn.Embedding`` and Keras's ``Embedding`` do), and never forms o_v: the product with a
one-hot vector only selects a row, so the forward pass gathers rows

    e_v = E[v],   ids of any shape (...) -> embeddings (..., A)

and the backward pass adds each upstream row into the row of its word,
dJ/dE[v] = sum over the positions p with ids[p] = v of dJ/de_p (a word seen twice in a
batch gets both contributions; a word not seen gets zero).
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.autograd.function import LinearMap
from lamina.errors import ShapeError
from lamina.nn import init as initializers
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module

__all__ = ["Embedding", "EmbeddingFunction", "embedding", "scatter_rows"]


def scatter_rows(ids, rows, num_rows: int):
    """A (num_rows, A) array G with G[v] = sum of rows[p] over the p with ids[p] = v.

    ``ids``: a 1-D integer array; ``rows``: (len(ids), A). G = O^T rows with O the (p, v)
    one-hot matrix of the ids: on NumPy arrays, SciPy multiplies by O^T held as a sparse
    matrix of one entry per column (compressed columns: column p holds a 1 in row ids[p]),
    which adds each row into its word's row in one compiled pass, about 8x faster than
    ``np.add.at``. Other arrays take :func:`_scatter_rows_sorted`.
    """
    if type(rows) is numpy.ndarray and rows.dtype.kind == "f":
        from scipy import sparse

        n = ids.shape[0]
        one_hot_t = sparse.csc_matrix((numpy.ones(n, dtype=rows.dtype), ids, numpy.arange(n + 1)),
                                      shape=(num_rows, n))
        return numpy.ascontiguousarray(one_hot_t @ rows)
    return _scatter_rows_sorted(ids, rows, num_rows)


def _scatter_rows_sorted(ids, rows, num_rows: int):
    """:func:`scatter_rows` with array operations alone. Sorting the ids puts the copies
    of each word next to each other; the first copy of every word is written directly (most
    words appear once in a batch), and only the further copies are summed, in float64 by
    one ``bincount`` over (group, column) pairs (about 3x faster than ``np.add.at``), and
    exact for words seen once.
    """
    xp = backend.xp
    width = rows.shape[1]
    out = xp.zeros((num_rows, width), dtype=rows.dtype)
    n = ids.shape[0]
    if n == 0:
        return out
    order = xp.argsort(ids)
    s = ids[order]
    g = rows[order]
    first = xp.empty(n, dtype=bool)
    first[0] = True
    xp.not_equal(s[1:], s[:-1], out=first[1:])
    out[s[first]] = g[first]
    if bool(first.all()):
        return out
    rest = ~first
    s_rest, g_rest = s[rest], g[rest]
    starts = xp.empty(s_rest.shape[0], dtype=bool)
    starts[0] = True
    xp.not_equal(s_rest[1:], s_rest[:-1], out=starts[1:])
    group = xp.cumsum(starts) - 1
    words = s_rest[starts]
    slots = (group[:, None] * width + xp.arange(width)).reshape(-1)
    sums = xp.bincount(slots, weights=g_rest.reshape(-1), minlength=words.shape[0] * width)
    out[words] += sums.reshape(words.shape[0], width).astype(rows.dtype, copy=False)
    return out


class EmbeddingFunction(Function):
    """Row lookup e = E[ids] (inputs: the integer ids, a constant, and E of shape (W, A)).

    dJ/dE = the upstream rows added into the rows of their ids (:func:`scatter_rows`);
    the row ``padding_idx`` (if set) gets a zero gradient.
    """

    padding_idx = None

    def forward(self, ids, weight):
        self.ids, self.num_rows = ids, weight.shape[0]
        return weight[ids]

    def backward(self, dy):
        if not self.needs_grad[1]:
            return None, None
        width = dy.shape[-1]
        dw = scatter_rows(self.ids.reshape(-1), dy.reshape(-1, width), self.num_rows)
        if self.padding_idx is not None:
            dw[self.padding_idx] = 0
        return None, dw

    def backward_graph(self, dy):
        """dJ/dE is linear in dJ/de (the ids are constants): the adjoint of the lookup, as a
        linear node, so that it differentiates to the lookup itself."""
        if not self.needs_grad[1]:
            return None, None
        lookup = _RowLookup(self.ids.reshape(-1), self.num_rows, self.padding_idx)
        dw = LinearMap.apply(dy.reshape(-1, dy.shape[-1]), op=lookup, adjoint=True)
        return None, dw


class _RowLookup(Function):
    """E -> E[ids] for fixed 1-D ``ids`` as a linear op of the table alone, its adjoint
    :func:`scatter_rows`; the positions that read the row ``padding_idx`` (if any) give 0,
    so that the adjoint leaves that row's gradient at 0. Used through
    :class:`lamina.autograd.function.LinearMap` for differentiable backwards that scatter rows."""

    def __init__(self, ids, num_rows: int, padding_idx: int | None = None):
        self.ids, self.num_rows, self.padding_idx = ids, num_rows, padding_idx

    def forward(self, weight):
        rows = weight[self.ids]
        if self.padding_idx is not None:
            rows[self.ids == self.padding_idx] = 0
        return rows

    def backward(self, dy):
        grad = scatter_rows(self.ids, dy, self.num_rows)
        if self.padding_idx is not None:
            grad[self.padding_idx] = 0
        return (grad,)


def check_ids(ids, num_rows: int, who: str):
    """The ids as an integer array; a TypeError or ValueError naming ``who`` otherwise."""
    xp = backend.xp
    data = ids.data if isinstance(ids, Tensor) else ids
    data = xp.asarray(data)
    if data.dtype.kind not in "iu":
        raise TypeError(f"{who}: expected integer word ids, got an array of dtype {data.dtype} "
                        f"and shape {tuple(data.shape)}; cast the ids with .astype(int)")
    if data.size:
        low, high = int(data.min()), int(data.max())
        if low < 0 or high >= num_rows:
            bad = low if low < 0 else high
            raise ValueError(f"{who}: word id {bad} is out of range; ids must be in [0, {num_rows}) "
                             f"(the vocabulary size is {num_rows})")
    return data


def embedding(ids, weight, padding_idx: int | None = None) -> Tensor:
    """The rows of ``weight`` (W, A) for integer ``ids`` of any shape: shape ids.shape + (A,).

    ``padding_idx``: that row receives no gradient (its value is whatever the table holds).
    """
    if not isinstance(weight, Tensor):
        weight = Tensor(weight)
    if weight.ndim != 2:
        raise ShapeError(f"embedding: the table must be 2-D (words, attributes), got shape {weight.shape}")
    data = check_ids(ids, weight.shape[0], "embedding")
    params = {} if padding_idx is None else {"padding_idx": _check_padding(padding_idx, weight.shape[0], "embedding")}
    return EmbeddingFunction.apply(Tensor._wrap(data), weight, **params)


def _check_padding(padding_idx, num_rows: int, who: str) -> int:
    if isinstance(padding_idx, bool) or not isinstance(padding_idx, int):
        raise TypeError(f"{who}: padding_idx must be an int or None, got {padding_idx!r}")
    if not -num_rows <= padding_idx < num_rows:
        raise ValueError(f"{who}: padding_idx {padding_idx} is out of range for {num_rows} words")
    return padding_idx % num_rows


@register_layer
class Embedding(Module):
    """A learned lookup table: integer word ids (...) -> vectors (..., output_dim).

    ``input_dim``: the vocabulary size W; ``output_dim``: the number of attributes A. The
    table ``weight`` has shape (W, A), one row per word (the transpose of the notes' E).

    ``embeddings_init`` (any initializer spec) defaults, when None, to N(0, 1), as PyTorch's
    ``nn.Embedding`` (Keras draws from U(-0.05, 0.05): pass ``'uniform'`` for that).
    Unit-scale vectors suit a table feeding attention or a normalisation layer; give a
    smaller scale, e.g. ``{'name': 'normal', 'std': 0.01}``, when the vectors feed a network
    that expects small inputs.

    ``padding_idx``: that word's row starts at zero and never receives a gradient (as in
    PyTorch), so padded positions stay zero vectors.

    This layer carries no mask (``lamina.keras.layers.Embedding(mask_zero=True)`` does, as
    Keras): a recurrent layer reading post-padded sequences takes the number of real steps of
    each as ``lengths`` (or any (batch, time) step ``mask``), computed from the ids themselves,
    e.g. with padding id ``pad_id``::

        lengths = (ids != pad_id).sum(axis=1)
        states = GRU(64)(Embedding(vocab, 32, padding_idx=pad_id)(ids), lengths=lengths)

    (see :mod:`lamina.nn.recurrent`).
    """

    streamable = True

    reads_ids = True           # its input is integer ids (lamina.analysis traces it with those)

    def __init__(self, input_dim: int, output_dim: int, embeddings_init=None, padding_idx: int | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        positive_int(input_dim, "Embedding: input_dim")
        positive_int(output_dim, "Embedding: output_dim")
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.padding_idx = None if padding_idx is None else _check_padding(padding_idx, input_dim, self._label())
        self.embeddings_init = embeddings_init
        self._initializer()

    def _initializer(self):
        if self.embeddings_init is None:
            return initializers.normal(std=1.0)
        return initializers.get(self.embeddings_init)

    def build(self, input_shape) -> None:
        dtype = backend.get_default_dtype()
        shape = (self.input_dim, self.output_dim)
        table = self._initializer()(shape, self.input_dim, self.output_dim, dtype)
        if self.padding_idx is not None and not initializers.is_meta_array(table):
            table[self.padding_idx] = 0
        self.add_parameter("weight", table)
        self.built = True

    def forward(self, ids) -> Tensor:
        data = check_ids(ids, self.input_dim, self._label())
        params = {} if self.padding_idx is None else {"padding_idx": self.padding_idx}
        return EmbeddingFunction.apply(Tensor._wrap(data), self.weight, **params)

    def macs(self, input_shapes, output_shapes) -> int:
        """A lookup: no multiply-accumulates."""
        return 0

    def compute_output_shape(self, input_shape):
        if input_shape is None:
            raise ShapeError(f"{self._label()}: no input shape given; expected the shape of the word ids")
        return tuple(input_shape) + (self.output_dim,)

    def get_config(self) -> dict:
        init = self.embeddings_init
        return {
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "embeddings_init": None if init is None else initializers.serialize(init),
            "padding_idx": self.padding_idx,
            "name": self.name,
        }

    def extra_repr(self) -> str:
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.input_dim}, {self.output_dim}{pad}"
