"""Sequential recommenders: predict a user's next item from the items read so far.

All three read left-padded rows of item ids (item i written as i + 1, 0 = padding; see
:mod:`lamina.data.sequences_rec`) and score the n_items items (columns in the original
0-based ids):

* :class:`GRU4Rec` (Hidasi et al. 2016): item embedding, a GRU over the sequence, a Dense
  output over the items; trained with the softmax cross-entropy of the next item at every
  position (padded steps are skipped by the GRU and carry no loss).
* :class:`SASRec` (Kang & McAuley 2018): e_t = E[s_t] sqrt(d) + P[t], then pre-norm
  self-attention blocks in which position t attends to the items at positions <= t only
  (causal; padding is never attended to), a final LayerNorm giving h_t, and the score of item
  i at t is r_(t,i) = h_t . E[i], E the item table shared with the input. Loss: the paper's
  binary cross-entropy with one negative n_t per position,
  -log sigma(r_(t, s_(t+1))) - log(1 - sigma(r_(t, n_t))), averaged over the positions with a
  target, or the full softmax cross-entropy (``loss='ce'``).
* :class:`BERT4Rec` (Sun et al. 2019): bidirectional self-attention over item and position
  embeddings (BERT's post-norm layers, GELU); trained by the cloze task, a fraction
  ``mask_prob`` of the items replaced by the [MASK] id n_items + 1 (:func:`cloze_mask`) and
  predicted by softmax over the items through a GELU projection, a LayerNorm and the shared
  item table (plus a bias); only masked positions carry loss. At inference the history is
  followed by [MASK] and the last position's scores rank the next item.

``model.score_next(histories)`` gives the (N, n_items) NumPy scores of the next item after
each history (a list of 0-based item arrays, the latest ``max_len`` items read);
:func:`fit_sequential` trains any of them with Adam.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.data.sequences_rec import next_item_examples, pad_sequences
from lamina.errors import ShapeError
from lamina.nn import GRU, Dense, Dropout, Embedding, LayerNorm, ModuleList, PositionEmbedding, TransformerEncoderLayer
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, evaluation_mode

__all__ = ["BERT4Rec", "GRU4Rec", "SASRec", "cloze_mask", "fit_sequential", "sequence_attention_mask"]

SASREC_LOSSES = ("bce", "ce")


def sequence_attention_mask(rows: np.ndarray, causal: bool) -> np.ndarray:
    """(N, T, T) boolean, True = attend: query t reads the real (non-zero) keys, only those at
    positions <= t when ``causal``; a padded query reads itself, so no row is empty."""
    rows = np.asarray(rows)
    steps = rows.shape[1]
    allowed = np.broadcast_to((rows != 0)[:, None, :], (rows.shape[0], steps, steps)) | np.eye(steps, dtype=bool)
    return allowed & np.tril(np.ones((steps, steps), dtype=bool)) if causal else allowed


def _negatives_outside_rows(rows: np.ndarray, shape: tuple, n_items: int, rng: np.random.Generator) -> np.ndarray:
    """Padded ids in [1, n_items] of ``shape`` (N, ...), none of them among the ids of the same
    row of ``rows`` (N, L), drawn uniformly (redrawn until they miss)."""
    seen = np.zeros((rows.shape[0], n_items + 1), dtype=bool)
    seen[np.arange(rows.shape[0])[:, None], rows] = True
    if not (~seen[:, 1:]).any(axis=1).all():
        raise ValueError(f"negative sampling: a row already holds all {n_items} items")
    drawn = rng.integers(1, n_items + 1, size=shape)
    row_of = np.arange(shape[0]).reshape((-1,) + (1,) * (len(shape) - 1))
    clash = seen[row_of, drawn]
    while clash.any():
        drawn[clash] = rng.integers(1, n_items + 1, size=int(clash.sum()))
        clash = seen[row_of, drawn]
    return drawn


def _check_rows(model, rows, width: int | None = None) -> np.ndarray:
    rows = np.asarray(backend.to_numpy(getattr(rows, "data", rows)))
    if rows.ndim != 2 or rows.dtype.kind not in "iu" or rows.shape[1] > model.max_len:
        raise ShapeError(f"{model._label()}: expected integer rows (batch, T <= max_len={model.max_len}) of padded "
                         f"item ids, got {rows.dtype} {rows.shape}")
    top = model.n_items if width is None else width
    if rows.size and (rows.min() < 0 or rows.max() > top):
        raise ValueError(f"{model._label()}: padded item ids must lie in [0, {top}], got "
                         f"[{int(rows.min())}, {int(rows.max())}]")
    return rows.astype(np.int64)


def _item_logits(hidden, table: Tensor, n_items: int) -> Tensor:
    """h . E[i] for the items i = 1 .. n_items of the padded table: (..., n_items)."""
    return F.matmul(hidden, F.transpose(F.getitem(table, slice(1, n_items + 1))))


def _softmax_loss(logits: Tensor, targets: np.ndarray) -> Tensor:
    """Mean cross-entropy of the padded ``targets`` (0 = none) under (..., n_items) logits."""
    flat = F.reshape(logits, (-1, logits.shape[-1]))
    return F.categorical_cross_entropy(flat, targets.reshape(-1) - 1, from_logits=True, ignore_index=-1)


class _SequentialRecommender(Module):
    """What the three models share: sizes, the padded item table, scoring of next items."""

    extra_ids = 1          # rows of the item table besides the items: padding (and [MASK])

    def __init__(self, n_items: int, max_len: int, dim: int, dropout: float, name: str | None):
        super().__init__(name=name)
        who = type(self).__name__
        self.n_items = positive_int(n_items, f"{who}: n_items")
        self.max_len = positive_int(max_len, f"{who}: max_len")
        self.dim = positive_int(dim, f"{who}: dim")
        if not 0 <= dropout < 1:
            raise ValueError(f"{who}: dropout must be in [0, 1), got {dropout!r}")
        self.dropout_rate = float(dropout)
        self.item_embedding = Embedding(n_items + self.extra_ids, dim, padding_idx=0,
                                        embeddings_init={"name": "normal", "std": dim ** -0.5})
        self.item_embedding.build(None)
        self.item_embedding.built = True

    def _build(self, *layers_and_shapes) -> None:
        for layer, shape in layers_and_shapes:
            layer.build(shape)
            layer.built = True
        self.built = True

    def inference_rows(self, histories) -> np.ndarray:
        return pad_sequences(histories, self.max_len)

    def score_next(self, histories) -> np.ndarray:
        """(len(histories), n_items) scores of the item following each history (0-based ids;
        the latest ``max_len`` items are read), in evaluation mode without the graph."""
        rows = self.inference_rows(histories)
        with evaluation_mode(self), no_grad():
            logits = self(rows)
        return np.asarray(backend.to_numpy(logits.data))[:, -1, :].astype(np.float64)

    def get_config(self) -> dict:
        return {"n_items": self.n_items, "max_len": self.max_len, "dim": self.dim, "dropout": self.dropout_rate,
                "name": self.name}


@register_layer
class GRU4Rec(_SequentialRecommender):
    """rows (N, T) -> logits (N, T, n_items) of the next item at each position: item embedding,
    dropout, a GRU of ``hidden`` units (padded steps skipped), dropout, Dense to the items."""

    def __init__(self, n_items: int, max_len: int = 50, dim: int = 64, hidden: int | None = None,
                 dropout: float = 0.1, name: str | None = None):
        super().__init__(n_items, max_len, dim, dropout, name)
        self.hidden = dim if hidden is None else positive_int(hidden, "GRU4Rec: hidden")
        self.input_dropout = Dropout(self.dropout_rate)
        self.gru = GRU(self.hidden, return_sequences=True)
        self.output_dropout = Dropout(self.dropout_rate)
        self.output_layer = Dense(n_items, kernel_init="xavier_uniform")
        self._build((self.gru, (None, max_len, dim)), (self.output_layer, (None, max_len, self.hidden)))

    def forward(self, rows) -> Tensor:
        rows = _check_rows(self, rows)
        states = self.gru(self.input_dropout(self.item_embedding(rows)), mask=rows != 0)
        return self.output_layer(self.output_dropout(states))

    def training_rows(self, sequences) -> tuple[np.ndarray, ...]:
        return next_item_examples(sequences, self.max_len)

    def batch_loss(self, inputs, targets, rng=None) -> Tensor:
        """Softmax cross-entropy of the next item over every position with a target."""
        return _softmax_loss(self(inputs), np.asarray(targets))

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden": self.hidden}


@register_layer
class SASRec(_SequentialRecommender):
    """rows (N, T) -> logits (N, T, n_items): causal self-attention over item and learned
    position embeddings, scored against the shared item table (module docstring)."""

    def __init__(self, n_items: int, max_len: int = 50, dim: int = 64, num_blocks: int = 2, num_heads: int = 1,
                 dropout: float = 0.2, loss: str = "bce", name: str | None = None):
        super().__init__(n_items, max_len, dim, dropout, name)
        if loss not in SASREC_LOSSES:
            raise ValueError(f"SASRec: loss must be one of {SASREC_LOSSES}, got {loss!r}")
        self.num_blocks = positive_int(num_blocks, "SASRec: num_blocks")
        self.num_heads = positive_int(num_heads, "SASRec: num_heads")
        self.loss = loss
        self.positions = PositionEmbedding(max_len, embeddings_init={"name": "normal", "std": dim ** -0.5})
        self.embedding_dropout = Dropout(self.dropout_rate)
        self.blocks = ModuleList(TransformerEncoderLayer(dim, num_heads, dim_feedforward=dim, dropout=self.dropout_rate,
                                                         norm_first=True) for _ in range(num_blocks))
        self.final_norm = LayerNorm(-1, eps=1e-8)
        shape = (None, max_len, dim)
        self._build((self.positions, shape), *((block, shape) for block in self.blocks), (self.final_norm, shape))

    def hidden_states(self, rows) -> Tensor:
        """h (N, T, dim): what each position knows of the items up to it."""
        rows = _check_rows(self, rows)
        x = self.positions(self.item_embedding(rows) * (self.dim ** 0.5))
        x = self.embedding_dropout(x)
        mask = sequence_attention_mask(rows, causal=True)
        for block in self.blocks:
            x = block(x, mask=mask)
        return self.final_norm(x)

    def forward(self, rows) -> Tensor:
        return _item_logits(self.hidden_states(rows), self.item_embedding.weight, self.n_items)

    def training_rows(self, sequences) -> tuple[np.ndarray, ...]:
        return next_item_examples(sequences, self.max_len)

    def bce_loss(self, inputs, targets, negatives) -> Tensor:
        """The paper's loss: -log sigma(h_t . E[target]) - log sigma(-h_t . E[negative]),
        averaged over the positions whose target is not 0 (padded ids throughout)."""
        targets, negatives = np.asarray(targets), np.asarray(negatives)
        hidden = self.hidden_states(inputs)
        table = self.item_embedding.weight
        positive = F.sum(hidden * F.getitem(table, targets), axis=-1)
        negative = F.sum(hidden * F.getitem(table, negatives), axis=-1)
        present = (targets != 0).astype(backend.get_default_dtype())
        terms = (F.log_sigmoid(positive) + F.log_sigmoid(-negative)) * present
        return -F.sum(terms) * (1.0 / max(float(present.sum()), 1.0))

    def batch_loss(self, inputs, targets, rng=None) -> Tensor:
        """The configured loss; for 'bce' one negative per position, drawn uniformly outside the
        row's items."""
        inputs, targets = np.asarray(inputs), np.asarray(targets)
        if self.loss == "ce":
            return _softmax_loss(self(inputs), targets)
        rng = np.random.default_rng(rng)
        negatives = _negatives_outside_rows(np.concatenate([inputs, targets], axis=1), targets.shape,
                                            self.n_items, rng)
        return self.bce_loss(inputs, targets, np.where(targets != 0, negatives, 0))

    def get_config(self) -> dict:
        return {**super().get_config(), "num_blocks": self.num_blocks, "num_heads": self.num_heads, "loss": self.loss}


def cloze_mask(rows, mask_id: int, mask_prob: float, rng=None, last_prob: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(masked rows, labels): each real (non-zero) item of ``rows`` replaced by ``mask_id``
    with probability ``mask_prob``, at least one per non-empty row; a row drawn with
    probability ``last_prob`` instead has its last item alone masked (the paper's extra
    samples that match the inference task). Labels hold the original id at the masked
    positions and 0 elsewhere."""
    if not 0 < mask_prob <= 1:
        raise ValueError(f"cloze_mask: mask_prob must be in (0, 1], got {mask_prob!r}")
    if not 0 <= last_prob <= 1:
        raise ValueError(f"cloze_mask: last_prob must be in [0, 1], got {last_prob!r}")
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 2:
        raise ShapeError(f"cloze_mask: rows must be (batch, T), got shape {rows.shape}")
    rng = np.random.default_rng(rng)
    real = rows != 0
    chosen = real & (rng.random(rows.shape) < mask_prob)
    last_only = rng.random(rows.shape[0]) < last_prob
    chosen[last_only] = False
    chosen[last_only, -1] = real[last_only, -1]
    empty = real.any(axis=1) & ~chosen.any(axis=1)
    if empty.any():                      # mask one real item, drawn uniformly, where none was
        keys = np.where(real[empty], rng.random((int(empty.sum()), rows.shape[1])), -1.0)
        chosen[np.flatnonzero(empty), np.argmax(keys, axis=1)] = True
    return np.where(chosen, mask_id, rows), np.where(chosen, rows, 0)


@register_layer
class BERT4Rec(_SequentialRecommender):
    """rows (N, T) -> logits (N, T, n_items): bidirectional self-attention over item and
    position embeddings; id n_items + 1 is [MASK] (module docstring)."""

    extra_ids = 2

    def __init__(self, n_items: int, max_len: int = 50, dim: int = 64, num_blocks: int = 2, num_heads: int = 2,
                 dropout: float = 0.1, mask_prob: float = 0.2, last_prob: float = 0.1, name: str | None = None):
        super().__init__(n_items, max_len, dim, dropout, name)
        if not 0 < mask_prob <= 1 or not 0 <= last_prob <= 1:
            raise ValueError(f"BERT4Rec: mask_prob must be in (0, 1] and last_prob in [0, 1], got "
                             f"mask_prob={mask_prob!r}, last_prob={last_prob!r}")
        self.mask_id = n_items + 1
        self.mask_prob, self.last_prob = float(mask_prob), float(last_prob)
        self.num_blocks = positive_int(num_blocks, "BERT4Rec: num_blocks")
        self.num_heads = positive_int(num_heads, "BERT4Rec: num_heads")
        self.positions = PositionEmbedding(max_len, embeddings_init={"name": "normal", "std": dim ** -0.5})
        self.embedding_norm = LayerNorm(-1, eps=1e-12)
        self.embedding_dropout = Dropout(self.dropout_rate)
        self.blocks = ModuleList(TransformerEncoderLayer(dim, num_heads, dim_feedforward=4 * dim,
                                                         dropout=self.dropout_rate, activation="gelu")
                                 for _ in range(num_blocks))
        self.transform = Dense(dim, activation="gelu", kernel_init="xavier_uniform")
        self.transform_norm = LayerNorm(-1, eps=1e-12)
        shape = (None, max_len, dim)
        self._build((self.positions, shape), (self.embedding_norm, shape), *((block, shape) for block in self.blocks),
                    (self.transform, shape), (self.transform_norm, shape))
        self.add_parameter("output_bias", np.zeros(n_items, dtype=backend.get_default_dtype()))

    def forward(self, rows) -> Tensor:
        rows = _check_rows(self, rows, width=self.mask_id)
        x = self.embedding_dropout(self.embedding_norm(self.positions(self.item_embedding(rows))))
        mask = sequence_attention_mask(rows, causal=False)
        for block in self.blocks:
            x = block(x, mask=mask)
        hidden = self.transform_norm(self.transform(x))
        return _item_logits(hidden, self.item_embedding.weight, self.n_items) + self.output_bias

    def inference_rows(self, histories) -> np.ndarray:
        """The latest max_len - 1 items of each history, then [MASK]."""
        rows = pad_sequences(histories, self.max_len - 1) if self.max_len > 1 else np.zeros((len(histories), 0),
                                                                                              np.int64)
        return np.concatenate([rows, np.full((len(rows), 1), self.mask_id)], axis=1)

    def training_rows(self, sequences) -> tuple[np.ndarray, ...]:
        return (pad_sequences([s for s in sequences if len(s) >= 1], self.max_len),)

    def batch_loss(self, rows, rng=None) -> Tensor:
        """Cloze: mask a ``mask_prob`` fraction of the items (the last item alone in a ``last_prob``
        fraction of the rows), softmax cross-entropy on the masked positions alone."""
        masked, labels = cloze_mask(rows, self.mask_id, self.mask_prob, rng, self.last_prob)
        return _softmax_loss(self(masked), labels)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_blocks": self.num_blocks, "num_heads": self.num_heads,
                "mask_prob": self.mask_prob, "last_prob": self.last_prob}


def fit_sequential(model: _SequentialRecommender, sequences, epochs: int = 10, batch_size: int = 64,
                   lr: float = 1e-3, seed=None) -> list[float]:
    """Train a :class:`GRU4Rec`, :class:`SASRec` or :class:`BERT4Rec` on the training
    ``sequences`` (one 0-based item array per user) with Adam for ``epochs`` shuffled passes;
    returns the mean batch loss of each epoch. Shuffling, negatives and masks come from one
    Generator seeded by ``seed``."""
    from lamina import optim

    epochs, batch_size = positive_int(epochs, "fit_sequential: epochs"), positive_int(batch_size, "fit_sequential: "
                                                                                                  "batch_size")
    rows = model.training_rows(sequences)
    if len(rows[0]) == 0:
        raise ValueError(f"fit_sequential: no training row; the {len(sequences)} sequences are too short")
    rng = np.random.default_rng(seed)
    optimizer = optim.Adam(model.parameters(), lr=lr)
    model.train()
    history = []
    for _ in range(epochs):
        order = rng.permutation(len(rows[0]))
        losses = []
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            loss = model.batch_loss(*(part[batch] for part in rows), rng=rng)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.item()))
        history.append(float(np.mean(losses)))
    return history
