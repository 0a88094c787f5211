"""Matching networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu and Wierstra 2016): few-shot
classification by attention over the support set.

A query x^ is labelled by a weighted vote of the support samples (x_i, y_i), y_i one-hot:

    y^ = sum_i a(x^, x_i) y_i,    a(x^, x_i) = exp(c(f(x^), g(x_i))) / sum_j exp(c(f(x^), g(x_j)))

with c the cosine similarity (times ``scale``; the paper: 1) and f, g embeddings of the query
and of the support samples (:func:`matching_log_probabilities` gives log y^). Without full
context embeddings f = g = f' is the encoder alone. With them (``fce=True``), each side sees
the whole support set S:

* g (:class:`SupportContextLSTM`): a bidirectional LSTM over the support embeddings g'(x_i),
  in the order given, plus a skip connection,

      g(x_i, S) = h->_i + h<-_i + g'(x_i)

* f (:class:`AttentionLSTM`): an LSTM that reads the support set K times (the paper's
  read-attend steps), from h_0 = c_0 = 0:

      r_{k-1} = sum_i softmax_i(h_{k-1}^T g(x_i)) g(x_i)
      h^_k, c_k = LSTM(f'(x^), [h_{k-1}, r_{k-1}], c_{k-1}),    h_k = h^_k + f'(x^)

  and f(x^, S) = h_K. The LSTM's gates read [f'(x^), r_{k-1}] as input and h_{k-1} as state.

The encoder (f' = g', shared) is any module mapping a batch of samples to (batch, D)
vectors; support and query run through it in one call. Trained episode by episode
(:class:`lamina.data.FewShotTasks`) on the cross-entropy of y^ against the query labels
(:meth:`MatchingNetwork.loss`).

Cosines lie in [-1, 1], so at the paper's scale 1 the attention stays close to uniform and
the loss cannot get small; a larger ``scale`` (a temperature of 1/scale, as later metric
learners use) trains much better: on 5-way 5-shot episodes of unseen digits (the tests),
84% with ``scale=10`` against 57% with 1.
"""

from __future__ import annotations

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import input_error, positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["AttentionLSTM", "MatchingNetwork", "SupportContextLSTM", "episode_labels", "episode_sample_inputs",
           "matching_log_probabilities"]

_EXCLUDED = -1e30        # a log-weight that leaves a support sample out of a class's sum


def episode_labels(labels, count: int, who: str) -> np.ndarray:
    """The support labels of an episode as an int64 array (count,) of classes 0 .. n-1, each
    present at least once (the classes :class:`lamina.data.FewShotTasks` gives)."""
    labels = np.asarray(labels.numpy() if isinstance(labels, Tensor) else backend.to_numpy(labels))
    if labels.shape != (count,) or (count and labels.dtype.kind not in "iu"):
        raise ShapeError(f"{who}: the support labels must be one integer class per support sample, shape "
                         f"({count},); got shape {labels.shape} and dtype {labels.dtype}")
    if count == 0:
        raise ValueError(f"{who}: the support set is empty")
    missing = sorted(set(range(int(labels.max()) + 1)) - set(labels.tolist()))
    if int(labels.min()) < 0 or missing:
        raise ValueError(f"{who}: the support labels must cover the classes 0 .. n-1 (each at least once); got "
                         f"{sorted(set(labels.tolist()))}")
    return labels.astype(np.int64)


def episode_sample_inputs(shapes: list, who: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-sample episode of zeros for the saved input shapes [support x, support y, query x]:
    a support sample of class 0 (integer labels, which zeros of the default dtype are not) and a
    query sample. What :func:`lamina.load` builds an episode learner on."""
    if len(shapes) != 3 or any(s is None or len(s) < 1 for s in shapes):
        raise ShapeError(f"{who}: expected the saved shapes of (support x, support y, query x), got {shapes}")
    dtype = backend.get_default_dtype()
    support, _, query = (np.zeros((1, *[1 if n is None else int(n) for n in s[1:]]), dtype=dtype) for s in shapes)
    return support, np.zeros(1, dtype=np.int64), query


def _rows(x, name: str, who: str) -> Tensor:
    x = as_tensor(x)
    if x.ndim != 2:
        raise ShapeError(f"{who}: {name} must be embeddings of shape (N, D), got shape {x.shape}")
    return x


def matching_log_probabilities(query, support, support_labels, scale: float = 1.0) -> Tensor:
    """log y^ (Q, n): log of sum_i a(q, s_i) y_i for query embeddings (Q, D) against support
    embeddings (S, D) labelled 0 .. n-1, a the softmax over i of scale * cos(q, s_i).

    Computed as log y^_k = logsumexp_{i: y_i = k} log a(q, s_i), so no probability is rounded
    to 0 before its log is taken."""
    who = "matching_log_probabilities"
    query, support = _rows(query, "query", who), _rows(support, "support", who)
    if query.shape[1] != support.shape[1]:
        raise ShapeError(f"{who}: query embeddings have {query.shape[1]} features but the support ones "
                         f"{support.shape[1]}; expected the same")
    labels = episode_labels(support_labels, support.shape[0], who)
    similarity = F.normalize(query) @ F.normalize(support).T                 # (Q, S) cosines
    log_attention = F.log_softmax(similarity * float(scale), axis=-1)
    n = int(labels.max()) + 1
    members = labels[None, :] == np.arange(n)[:, None]                        # (n, S)
    mask = backend.xp.asarray(np.where(members, 0.0, _EXCLUDED), dtype=log_attention.dtype)
    return F.logsumexp(log_attention.expand_dims(1) + mask, axis=-1)


@register_with_arguments
class SupportContextLSTM(Module):
    """g(x_i, S) = h->_i + h<-_i + g'(x_i): the support embeddings (S, D), read as one sequence
    by a bidirectional LSTM of D units (``lstm``, an :class:`~lamina.nn.Bidirectional`
    summing the two directions), plus the embeddings themselves. Output (S, D)."""

    default_name = "support_context_lstm"

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def build(self, input_shape) -> None:
        if input_shape is None or len(input_shape) != 2 or input_shape[-1] is None:
            raise ShapeError(f"{self._label()}: expected support embeddings (S, D) with D known, got shape "
                             f"{input_shape}")
        self.lstm = nn.Bidirectional(nn.LSTM(int(input_shape[-1]), return_sequences=True), merge_mode="sum")
        self.built = True

    def forward(self, support) -> Tensor:
        support = as_tensor(support)
        d = self.lstm.forward_layer.units
        if support.ndim != 2 or support.shape[1] != d:
            raise input_error(self, support, f"support embeddings (S, {d})")
        return support + self.lstm(support.expand_dims(0))[0]


@register_with_arguments
class AttentionLSTM(Module):
    """f(x^, S) = h_K: ``processing_steps`` K read-attend steps of an LSTM of D units over the
    context-embedded support set (module notes). ``forward(query (Q, D), support (S, D))``
    gives (Q, D); ``return_attention=True`` also the read weights of every step (K, Q, S)."""

    default_name = "attention_lstm"

    def __init__(self, processing_steps: int = 5, name: str | None = None):
        super().__init__(name=name)
        self.processing_steps = positive_int(processing_steps, "AttentionLSTM: processing_steps")

    def build(self, input_shape) -> None:
        shapes = input_shape if isinstance(input_shape, list) else [input_shape]
        d = shapes[0][-1] if shapes and shapes[0] is not None and len(shapes[0]) == 2 else None
        if d is None:
            raise ShapeError(f"{self._label()}: expected query embeddings (Q, D) with D known, got shape(s) "
                             f"{input_shape}")
        self.cell = nn.LSTMCell(int(d))
        self.cell.build((None, 2 * int(d)))
        self.cell.built = True
        self.built = True

    def forward(self, query, support, return_attention: bool = False):
        query, support = as_tensor(query), as_tensor(support)
        d = self.cell.units
        if query.ndim != 2 or query.shape[1] != d:
            raise input_error(self, query, f"query embeddings (Q, {d})")
        if support.ndim != 2 or support.shape[1] != d:
            raise ShapeError(f"{self._label()}: the support embeddings have shape {support.shape}; expected "
                             f"(S, {d}) like the queries {query.shape}")
        h = Tensor._wrap(backend.xp.zeros(query.shape, dtype=query.dtype))
        c, weights = None, []
        for _ in range(self.processing_steps):
            attention = F.softmax(h @ support.T, axis=-1)                     # (Q, S)
            read = attention @ support                                        # r_{k-1}
            h_hat, c = self.cell(F.concat([query, read], axis=-1), (h, c))
            h = h_hat + query
            weights.append(attention)
        return (h, F.stack(weights)) if return_attention else h

    def extra_repr(self) -> str:
        return f"processing_steps={self.processing_steps}"


@register_with_arguments(modules=("encoder",))
class MatchingNetwork(Module):
    """Matching network over ``encoder`` (module notes): ``model(support_x, support_y,
    query_x)`` gives the log-probabilities log y^ (Q, n) of the query samples over the
    episode's n classes (the support labels 0 .. n-1). ``fce``: full context embeddings
    (``support_context`` g and ``query_context`` f, ``processing_steps`` K); ``scale``
    multiplies the cosines before the softmax (1 in the paper)."""

    default_name = "matching_network"

    def __init__(self, encoder, fce: bool = True, processing_steps: int = 5, scale: float = 1.0,
                 name: str | None = None):
        super().__init__(name=name)
        if not isinstance(encoder, Module):
            raise TypeError(f"MatchingNetwork: encoder must be a Module, got {type(encoder).__name__}")
        self.encoder = encoder
        self.fce = bool(fce)
        self.scale = float(scale)
        if not self.scale > 0:
            raise ValueError(f"MatchingNetwork: scale must be positive, got {scale!r}")
        self.processing_steps = positive_int(processing_steps, "MatchingNetwork: processing_steps")
        if self.fce:
            self.support_context = SupportContextLSTM()
            self.query_context = AttentionLSTM(self.processing_steps)

    def embed(self, support_x, query_x) -> tuple[Tensor, Tensor]:
        """(g(S), f(Q)): the support and query embeddings the attention compares."""
        support_x, query_x = as_tensor(support_x), as_tensor(query_x)
        if support_x.shape[1:] != query_x.shape[1:]:
            raise ShapeError(f"{self._label()}: support samples {support_x.shape} and query samples "
                             f"{query_x.shape} must have the same shape after the batch axis")
        count = support_x.shape[0]
        features = self.encoder(F.concat([support_x, query_x], axis=0))
        if features.ndim != 2:
            raise ShapeError(f"{self._label()}: the encoder must give (batch, D) vectors, got shape {features.shape}")
        support, query = features[:count], features[count:]
        if self.fce:
            support = self.support_context(support)
            query = self.query_context(query, support)
        return support, query

    def build_sample_inputs(self, shapes: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A one-sample episode of the saved shapes (:func:`episode_sample_inputs`)."""
        return episode_sample_inputs(shapes, self._label())

    def forward(self, support_x, support_y, query_x) -> Tensor:
        episode_labels(support_y, as_tensor(support_x).shape[0], self._label())
        support, query = self.embed(support_x, query_x)
        return matching_log_probabilities(query, support, support_y, self.scale)

    def loss(self, support_x, support_y, query_x, query_y, reduction: str = "mean") -> Tensor:
        """-log y^_{y} of the query samples: the cross-entropy of the episode's predictions."""
        log_probs = self(support_x, support_y, query_x)
        query_y = np.asarray(backend.to_numpy(query_y.data if isinstance(query_y, Tensor) else query_y))
        if query_y.shape != (log_probs.shape[0],) or query_y.dtype.kind not in "iu":
            raise ShapeError(f"{self._label()}.loss: query labels must be one integer class per query sample, "
                             f"shape ({log_probs.shape[0]},); got shape {query_y.shape} and dtype {query_y.dtype}")
        if query_y.size and (query_y.min() < 0 or query_y.max() >= log_probs.shape[1]):
            raise ValueError(f"{self._label()}.loss: query labels must be in 0 .. {log_probs.shape[1] - 1} (the "
                             f"support set's classes); got {sorted(set(query_y.tolist()))}")
        return F.nll_loss(log_probs, query_y.astype(np.int64), reduction=reduction)

    def extra_repr(self) -> str:
        options = f"fce={self.fce}" + (f", processing_steps={self.processing_steps}" if self.fce else "")
        return options + ("" if self.scale == 1.0 else f", scale={self.scale}")
