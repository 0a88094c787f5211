"""Multi-token prediction: a language model trained to guess several tokens ahead at once, whose
extra guesses then serve as drafts for its own decoding
(:func:`lamina.models.self_speculative_generate`).

Parallel heads (Gloeckle et al., "Better & faster large language models via multi-token
prediction", 2024, :class:`MultiTokenHeads`): a shared trunk z_t = f_s(x_{<=t}) and n heads,
head i scoring token t + i:

    P_i(x_{t+i} | x_{<=t}) = softmax(U f_i(z_t)),   i = 1 .. n
    L_n = sum_{i=1}^{n} mean_t CE(U f_i(z_t), x_{t+i})          (a sum over the heads, as the paper)

with U the model's own (shared) unembedding. Here the trunk and head 1 are the wrapped language
model itself (its last block and final norm playing f_1), z_t its final hidden states, and head
i >= 2 is one more pre-norm causal Transformer layer and a LayerNorm, f_i(z) =
norm_i(layer_i(z)), read by the model's head. Every part is trained jointly from scratch; the
paper's memory-saving order of the heads' backward passes is left out (autograd keeps all n
heads' graphs at once).

Sequential modules (DeepSeek-AI, "DeepSeek-V3 technical report", 2024, section 2.2,
:class:`MTPModules`): D modules after the main model, module k combining the previous depth's
state h^{k-1}_i (h^0 the main model's final hidden states) with the embedding of token i + k:

    h'^k_i = M_k [RMSNorm(h^{k-1}_i); RMSNorm(Emb(x_{i+k}))]      (M_k: (2H, H), no bias)
    h^k_{1:T-k} = TRM_k(h'^k_{1:T-k}),   P^k_i = OutHead(RMSNorm(h^k_i)) scores x_{i+k+1}
    L = L_main + lambda / D sum_{k=1}^{D} mean_i CE(P^k_i, x_{i+k+1})

Emb and OutHead are the main model's (shared), TRM_k one pre-norm causal Transformer layer. The
prediction at position i of depth k reads the tokens up to i + k only.
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor, tensor
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.module import Module
from lamina.nn.rms_norm import RMSNorm
from lamina.nn.sample_norm import LayerNorm
from lamina.nn.transformer import TransformerEncoderLayer

__all__ = ["MTPModules", "MultiTokenHeads", "mtp_loss", "multi_token_loss"]


def _language_model(model, who: str) -> tuple[int, int]:
    """(hidden size, vocabulary) of a model offering hidden_states() and logits() (GPT2, Llama...)."""
    for method in ("hidden_states", "logits"):
        if not callable(getattr(model, method, None)):
            raise TypeError(f"{who}: the model must offer {method}() (as GPT2 and Llama do), "
                            f"{type(model).__name__} does not")
    hidden = getattr(model, "hidden_size", None) or getattr(model, "n_embd", None)
    vocab = getattr(model, "vocab_size", None)
    if not hidden or not vocab:
        raise TypeError(f"{who}: the model must tell its hidden_size (or n_embd) and vocab_size, "
                        f"{type(model).__name__} does not")
    return int(hidden), int(vocab)


def _future_count(value, who: str, what: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{who}: {what} must be an int >= {low}, got {value!r}")
    return int(value)


def _attention_heads(model, num_heads: int | None) -> int:
    if num_heads is not None:
        return _future_count(num_heads, "multi-token heads", "num_heads", 1)
    return int(getattr(model, "n_head", None) or getattr(model, "num_attention_heads", None) or 1)


def _block(hidden: int, num_heads: int, dim_feedforward: int | None, activation) -> TransformerEncoderLayer:
    return TransformerEncoderLayer(hidden, num_heads, 4 * hidden if dim_feedforward is None else dim_feedforward,
                                   dropout=0.0, activation=activation, norm_first=True, causal=True)


def _build_all(layers, shape) -> None:
    for layer in layers:
        if not layer.built:
            layer.build(shape)
            layer.built = True


def _ids_array(ids, vocab: int, who: str) -> np.ndarray:
    targets = np.asarray(ids.numpy() if isinstance(ids, Tensor) else ids)
    if targets.ndim != 2 or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"{who}: expected integer token ids (N, T), got {targets.dtype} of shape {targets.shape}")
    if targets.size and not (0 <= targets.min() and targets.max() < vocab):
        raise ValueError(f"{who}: token ids must lie in [0, {vocab}) (the model's vocabulary), "
                         f"got [{targets.min()}, {targets.max()}]")
    return targets


def _cross_entropy(scores, targets: np.ndarray) -> Tensor:
    """mean CE of scores (N, S, V) against targets (N, S)."""
    n, s, v = scores.shape
    return F.cross_entropy(F.reshape(scores, (n * s, v)), targets.reshape(-1))


@register_with_arguments(modules=("model",))
class MultiTokenHeads(Module):
    """Gloeckle et al.'s n-token model around a language ``model`` (its trunk and head 1): token
    ids (N, T) -> scores (N, T, ``n_future``, V), [:, t, i - 1] scoring token t + i (see the
    module docstring). Heads 2 .. n: ``heads`` (pre-norm causal
    :class:`~lamina.nn.TransformerEncoderLayer`, ``num_heads`` attention heads (the model's by
    default), ``dim_feedforward`` (4 H by default), ``activation``) and ``norms`` (LayerNorm).
    ``n_future`` = 1 is the plain model. :meth:`loss` gives :func:`multi_token_loss`."""

    def __init__(self, model: Module, n_future: int = 4, num_heads: int | None = None,
                 dim_feedforward: int | None = None, activation="gelu", name: str | None = None):
        super().__init__(name=name)
        self.n_future = _future_count(n_future, "MultiTokenHeads", "n_future", 1)
        self.hidden, self.vocab_size = _language_model(model, "MultiTokenHeads")
        self.model = model
        width = _attention_heads(model, num_heads)
        self.heads = ModuleList([_block(self.hidden, width, dim_feedforward, activation)
                                 for _ in range(self.n_future - 1)])
        self.norms = ModuleList([LayerNorm(-1) for _ in range(self.n_future - 1)])

    def build(self, input_shape) -> None:
        ids = tuple(input_shape)
        if len(ids) != 2:
            raise ValueError(f"{self._label()}: expected token ids of shape (batch, time), got input shape {ids}")
        _build_all((self.model,), ids)
        _build_all((*self.heads, *self.norms), ids + (self.hidden,))
        self.built, self.build_input_shape = True, ids

    def head_scores(self, hidden) -> Tensor:
        """The n heads' scores (N, T, n, V) of the trunk's final hidden states (N, T, H)."""
        scores = [self.model.logits(hidden)]
        scores += [self.model.logits(norm(block(hidden))) for block, norm in zip(self.heads, self.norms)]
        return F.stack(scores, axis=-2)

    def forward(self, ids, key_mask=None) -> Tensor:
        return self.head_scores(self.model.hidden_states(ids, key_mask=key_mask))

    def loss(self, ids, reduction: str = "sum") -> Tensor:
        """:func:`multi_token_loss` of ``ids`` (N, T) read by the model."""
        return multi_token_loss(self(ids), ids, reduction)

    def draft(self, hidden, ids) -> np.ndarray:
        """Heads 2 .. n's greedy guesses (n - 1,) after the last of ``ids`` (1, q + 2): the
        argmax of each at the last of the trunk's states ``hidden`` (1, q + 1, H)."""
        if self.n_future == 1:
            return np.zeros(0, dtype=np.int64)
        scores = [self.model.logits(norm(block(hidden))[:, -1:]) for block, norm in zip(self.heads, self.norms)]
        return np.array([int(np.argmax(s.numpy()[0, -1])) for s in scores], dtype=np.int64)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.n_future, self.vocab_size)

    def extra_repr(self) -> str:
        return f"n_future={self.n_future}, hidden={self.hidden}, vocab_size={self.vocab_size}"


def multi_token_loss(scores, ids, reduction: str = "sum") -> Tensor:
    """Gloeckle et al.'s L_n = sum_i mean_t CE(scores[:, t, i - 1], ids[:, t + i]) over the
    positions t < T - i that have a target; ``scores`` (N, T, n, V) from
    :class:`MultiTokenHeads`, ``ids`` (N, T). ``reduction``: 'sum' over the heads (the
    paper's) or 'mean' (the sum / n)."""
    scores = scores if isinstance(scores, Tensor) else tensor(np.asarray(scores))
    if scores.ndim != 4:
        raise ValueError(f"multi_token_loss: expected scores (N, T, n, V), got {tuple(scores.shape)}")
    n, t, heads, v = scores.shape
    targets = _ids_array(ids, v, "multi_token_loss")
    if targets.shape != (n, t):
        raise ValueError(f"multi_token_loss: ids {targets.shape} do not match scores {tuple(scores.shape)} "
                         f"(expected ids ({n}, {t}))")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"multi_token_loss: reduction must be 'sum' or 'mean', got {reduction!r}")
    terms = [_cross_entropy(scores[:, :t - i, i - 1], targets[:, i:]) for i in range(1, heads + 1) if t > i]
    if not terms:
        raise ValueError(f"multi_token_loss: a sequence of {t} tokens gives no head a target (needs T >= 2)")
    total = terms[0]
    for term in terms[1:]:
        total = F.add(total, term)
    return F.mul(total, 1.0 / heads) if reduction == "mean" else total


@register_with_arguments(modules=("model",))
class MTPModules(Module):
    """DeepSeek-V3's ``depth`` sequential multi-token prediction modules after a language
    ``model`` (see the module docstring): token ids (N, T) -> a tuple of the main scores
    (N, T, V) and depth k's (N, T - k, V), [:, i] scoring token i + k + 1. Per module:
    ``hidden_norms``, ``embedding_norms``, ``output_norms`` (RMSNorm, ``rms_norm_eps``),
    ``projections`` (Dense (2H -> H), no bias) and ``blocks`` (pre-norm causal
    :class:`~lamina.nn.TransformerEncoderLayer`, ``num_heads``, ``dim_feedforward``,
    ``activation``); the token table and the output head are the model's. ``loss_weight`` is
    lambda of :meth:`loss` (:func:`mtp_loss`)."""

    def __init__(self, model: Module, depth: int = 1, loss_weight: float = 0.3, num_heads: int | None = None,
                 dim_feedforward: int | None = None, activation="gelu", rms_norm_eps: float = 1e-6,
                 name: str | None = None):
        super().__init__(name=name)
        self.depth = _future_count(depth, "MTPModules", "depth", 1)
        self.n_future = self.depth + 1
        self.hidden, self.vocab_size = _language_model(model, "MTPModules")
        if not (callable(getattr(model, "token_embedding", None)) or isinstance(getattr(model, "wte", None), Module)):
            raise TypeError(f"MTPModules: the model must offer its token table (token_embedding() or wte), "
                            f"{type(model).__name__} does not")
        self.loss_weight = float(loss_weight)
        self.model = model
        width = _attention_heads(model, num_heads)
        h, eps = self.hidden, float(rms_norm_eps)
        self.hidden_norms = ModuleList([RMSNorm(h, eps=eps) for _ in range(self.depth)])
        self.embedding_norms = ModuleList([RMSNorm(h, eps=eps) for _ in range(self.depth)])
        self.projections = ModuleList([Dense(h, use_bias=False) for _ in range(self.depth)])
        self.blocks = ModuleList([_block(h, width, dim_feedforward, activation) for _ in range(self.depth)])
        self.output_norms = ModuleList([RMSNorm(h, eps=eps) for _ in range(self.depth)])

    def token_table(self) -> Module:
        """The main model's token embedding, shared by every depth."""
        table = getattr(self.model, "token_embedding", None)
        return table() if callable(table) else self.model.wte

    def build(self, input_shape) -> None:
        ids = tuple(input_shape)
        if len(ids) != 2:
            raise ValueError(f"{self._label()}: expected token ids of shape (batch, time), got input shape {ids}")
        _build_all((self.model,), ids)
        hidden = ids + (self.hidden,)
        _build_all((*self.hidden_norms, *self.embedding_norms, *self.blocks, *self.output_norms), hidden)
        _build_all(self.projections, ids + (2 * self.hidden,))
        self.built, self.build_input_shape = True, ids

    def step(self, k: int, previous, embedded) -> tuple[Tensor, Tensor]:
        """Depth k (1 .. D): h^k = TRM_k(M_k [RMSNorm(h^{k-1}); RMSNorm(embedded)]) and its
        scores OutHead(RMSNorm(h^k)); ``previous`` and ``embedded`` (N, L, H)."""
        i = k - 1
        joined = F.concat([self.hidden_norms[i](previous), self.embedding_norms[i](embedded)], axis=-1)
        state = self.blocks[i](self.projections[i](joined))
        return state, self.model.logits(self.output_norms[i](state))

    def forward(self, ids, key_mask=None) -> tuple[Tensor, ...]:
        if key_mask is not None:
            raise NotImplementedError(f"{self._label()}: padded batches (key_mask) are not supported")
        hidden = self.model.hidden_states(ids)
        outputs = [self.model.logits(hidden)]
        embedded = self.token_table()(ids)
        t = hidden.shape[1]
        state = hidden
        for k in range(1, min(self.depth, t - 1) + 1):
            state, scores = self.step(k, state[:, :t - k], embedded[:, k:])
            outputs.append(scores)
        return tuple(outputs)

    def loss(self, ids) -> Tensor:
        """:func:`mtp_loss` of ``ids`` (N, T) read by the model, with lambda = ``loss_weight``."""
        return mtp_loss(self(ids), ids, self.loss_weight)

    def draft(self, hidden, ids) -> np.ndarray:
        """The D depths' greedy guesses (D,) after the last of ``ids`` (1, q + 2), depth k
        reading the guess of depth k - 1; ``hidden`` (1, q + 1, H) the main model's states."""
        tokens = np.asarray(ids, dtype=np.int64).reshape(1, -1)
        length = hidden.shape[1]
        state, guesses = hidden, []
        for k in range(1, self.depth + 1):
            state, scores = self.step(k, state, self.token_table()(tensor(tokens[:, k:k + length])))
            guesses.append(int(np.argmax(scores.numpy()[0, -1])))
            tokens = np.concatenate([tokens, [[guesses[-1]]]], axis=1)
        return np.array(guesses, dtype=np.int64)

    def compute_output_shape(self, input_shape):
        n, t = tuple(input_shape)
        return tuple((n, None if t is None else t - k, self.vocab_size) for k in range(self.depth + 1))

    def extra_repr(self) -> str:
        return f"depth={self.depth}, hidden={self.hidden}, vocab_size={self.vocab_size}"


def mtp_loss(outputs, ids, loss_weight: float = 0.3) -> Tensor:
    """DeepSeek-V3's L_main + lambda / D sum_k L_MTP^k: ``outputs`` the main scores (N, T, V)
    and depth k's (N, T - k, V) (:class:`MTPModules`), ``ids`` (N, T); each term the mean
    cross-entropy over the positions that have a target (L_main: x_{t+1}; depth k: x_{i+k+1})."""
    outputs = list(outputs)
    if not outputs or any(getattr(s, "ndim", 0) != 3 for s in outputs):
        raise ValueError(f"mtp_loss: expected the main scores (N, T, V) and each depth's (N, T - k, V), got "
                         f"{[tuple(getattr(s, 'shape', ())) for s in outputs]}")
    n, t, v = outputs[0].shape
    targets = _ids_array(ids, v, "mtp_loss")
    if targets.shape != (n, t):
        raise ValueError(f"mtp_loss: ids {targets.shape} do not match the main scores {tuple(outputs[0].shape)}")
    if t < 2:
        raise ValueError(f"mtp_loss: a sequence of {t} tokens has no next token (needs T >= 2)")
    total = _cross_entropy(outputs[0][:, :t - 1], targets[:, 1:])
    depths = [(k, s) for k, s in enumerate(outputs[1:], start=1) if t - k - 1 > 0]
    for k, scores in enumerate(outputs[1:], start=1):
        if tuple(scores.shape) != (n, t - k, v):
            raise ValueError(f"mtp_loss: depth {k}'s scores should be {(n, t - k, v)}, got {tuple(scores.shape)}")
    for k, scores in depths:
        term = _cross_entropy(scores[:, :t - k - 1], targets[:, k + 1:])
        total = F.add(total, F.mul(term, loss_weight / len(outputs[1:])))
    return total
