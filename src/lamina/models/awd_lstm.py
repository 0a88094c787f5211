"""AWD-LSTM (Merity, Keskar and Socher, "Regularizing and Optimizing LSTM Language Models",
2018) and the ULMFiT classifier built on it (Howard and Ruder, "Universal Language Model
Fine-tuning for Text Classification", 2018).

The language model, for word ids x (N, T)::

    e = E'[x]                         E' = embedding dropout of the table E (W, A)
    h_0 = LockedDropout_i(e)
    h_l = LSTM_l(h_{l-1})             weight-dropped W_aa; LockedDropout_h between layers
    scores = LockedDropout_o(h_L) E^T + b     (tied weights: the last LSTM has A units)

with the paper's sizes A = 400, H = 1150, three layers and dropouts (e, i, h, o, W_aa) =
(0.1, 0.65, 0.3, 0.4, 0.5) as defaults. The regularisers are in :mod:`lamina.nn.awd_dropout`,
the training pieces (variable-length BPTT, NT-ASGD, ULMFiT's schedules) in
:mod:`lamina.train.ulmfit`.

The classifier reads the same encoder and pools the last layer's outputs H (N, T, A) by
concat pooling, [h_T, max_t H, mean_t H] (N, 3A), into a head Dense -> ReLU -> Dropout ->
Dense. :meth:`AWDLSTM.layer_groups` and :meth:`ULMFiTClassifier.layer_groups` give the
groups, bottom first, that discriminative learning rates and gradual unfreezing work on.
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.awd_dropout import LockedDropout, WeightDrop, embedding_dropout
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.embedding import Embedding
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor
from lamina.nn.recurrent import LSTM

__all__ = ["AWDLSTM", "ULMFiTClassifier", "awd_lstm_ptb", "awd_lstm_tiny", "awd_lstm_wt2", "concat_pool"]


def concat_pool(h) -> Tensor:
    """ULMFiT's concat pooling of outputs H (N, T, D): [h_T, max_t H, mean_t H], (N, 3 D)."""
    h = as_tensor(h)
    if h.ndim != 3:
        raise ShapeError(f"concat_pool: expected outputs (batch, time, features), got shape {tuple(h.shape)}")
    return F.concat([h[:, -1], F.max(h, axis=1), F.mean(h, axis=1)], axis=-1)


def _check_ids(who: str, ids) -> None:
    if len(getattr(ids, "shape", ())) != 2:
        raise ShapeError(f"{who}: expected word ids of shape (batch, time), got shape "
                         f"{tuple(getattr(ids, 'shape', ()))}")


@register_with_arguments
class AWDLSTM(Module):
    """The AWD-LSTM language model (module docstring): ids (N, T) -> next-word scores
    (N, T, ``vocab_size``). ``tie_weights`` shares the embedding table with the output layer
    (then the last LSTM has ``embedding_size`` units). Calls take ``states``, the (h, c) pair
    of every layer from a previous call (zeros when None), to carry the memory across the
    windows of backpropagation through time; :meth:`run` also returns the new states and the
    last layer's outputs before and after dropout (for AR and TAR)."""

    reads_ids = True

    def __init__(self, vocab_size: int, embedding_size: int = 400, hidden_size: int = 1150, num_layers: int = 3,
                 dropout_embedding: float = 0.1, dropout_input: float = 0.65, dropout_hidden: float = 0.3,
                 dropout_output: float = 0.4, weight_drop: float = 0.5, tie_weights: bool = True,
                 init_range: float = 0.1, name: str | None = None):
        super().__init__(name=name)
        self.vocab_size = positive_int(vocab_size, "AWDLSTM: vocab_size")
        self.embedding_size = positive_int(embedding_size, "AWDLSTM: embedding_size")
        self.hidden_size = positive_int(hidden_size, "AWDLSTM: hidden_size")
        self.num_layers = positive_int(num_layers, "AWDLSTM: num_layers")
        self.dropout_embedding = float(dropout_embedding)
        self.tie_weights = bool(tie_weights)
        self.embedding = Embedding(vocab_size, embedding_size, embeddings_init={"name": "uniform",
                                                                                "limit": float(init_range)})
        last = embedding_size if self.tie_weights else hidden_size
        self.rnns = ModuleList([
            WeightDrop(LSTM(hidden_size if i < num_layers - 1 else last, return_sequences=True, return_state=True),
                       weight_drop)
            for i in range(num_layers)])
        self.input_dropout = LockedDropout(dropout_input)
        self.hidden_dropout = LockedDropout(dropout_hidden)
        self.output_dropout = LockedDropout(dropout_output)
        if not self.tie_weights:
            self.decoder = Dense(vocab_size)

    @property
    def output_size(self) -> int:
        """The units of the last LSTM (what the decoder and a classifier head read)."""
        return self.embedding_size if self.tie_weights else self.hidden_size

    def build(self, input_shape) -> None:
        ids = tuple(input_shape)
        if len(ids) != 2:
            raise ShapeError(f"{self._label()}: expected word ids of shape (batch, time), got input shape {ids}")
        if not self.embedding.built:
            self.embedding.build(ids)
            self.embedding.built = True
        features = self.embedding_size
        for rnn in self.rnns:
            if not rnn.built:
                rnn.build(ids + (features,))
                rnn.built = True
            features = rnn.layer.units
        if self.tie_weights:
            dtype = backend.get_default_dtype()
            self.add_parameter("decoder_bias", backend.xp.zeros((self.vocab_size,), dtype=dtype))
        elif not self.decoder.built:
            self.decoder.build(ids + (features,))
            self.decoder.built = True
        self.built = True

    def encode(self, ids, states=None) -> tuple[Tensor, Tensor, list]:
        """The last layer's outputs before and after its dropout (N, T, ``output_size``) and the
        new states [(h, c) per layer]."""
        _check_ids(self._label(), ids)
        if not self.built:
            self.build(tuple(ids.shape))
        if states is not None and len(states) != self.num_layers:
            raise ValueError(f"{self._label()}: states must hold one (h, c) pair per layer ({self.num_layers}), "
                             f"got {len(states)}")
        x = embedding_dropout(self.embedding, ids, self.dropout_embedding, training=self.training)
        x = self.input_dropout(x)
        new_states = []
        for i, rnn in enumerate(self.rnns):
            out, h, c = rnn(x, initial_state=None if states is None else states[i])
            new_states.append((h, c))
            raw = out
            x = self.hidden_dropout(out) if i < self.num_layers - 1 else self.output_dropout(out)
        return raw, x, new_states

    def decode(self, h) -> Tensor:
        """Scores of outputs h (N, T, ``output_size``): h E^T + b when tied, else the Dense."""
        if self.tie_weights:
            return F.add(F.matmul(h, F.transpose(self.embedding.weight)), self.decoder_bias)
        return self.decoder(h)

    def run(self, ids, states=None) -> tuple[Tensor, Tensor, Tensor, list]:
        """(scores, last layer's raw outputs, its dropped outputs, new states)."""
        raw, dropped, new_states = self.encode(ids, states)
        return self.decode(dropped), raw, dropped, new_states

    def forward(self, ids, states=None) -> Tensor:
        return self.run(ids, states)[0]

    def layer_groups(self) -> list[list[Module]]:
        """Bottom first: [embedding (and the decoder), LSTM 1, ..., LSTM L]."""
        first = [self.embedding] if self.tie_weights else [self.embedding, self.decoder]
        return [first] + [[rnn] for rnn in self.rnns]

    def group_parameters(self) -> list[list]:
        """The parameters of each of :meth:`layer_groups` (the tied bias with the embedding)."""
        groups = [[p for m in group for p in m.parameters()] for group in self.layer_groups()]
        if self.tie_weights:
            groups[0].append(self.decoder_bias)
        return groups

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.vocab_size,)


@register_with_arguments
class ULMFiTClassifier(Module):
    """The ULMFiT classifier: an :class:`AWDLSTM` encoder (its language model's weights load
    into ``encoder``), concat pooling of its last layer's outputs, and the head
    Dense(``head_hidden``) -> ReLU -> Dropout(``head_dropout``) -> Dense(``num_classes``).
    ids (N, T) -> class scores (N, ``num_classes``)."""

    reads_ids = True

    def __init__(self, vocab_size: int, num_classes: int, embedding_size: int = 400, hidden_size: int = 1150,
                 num_layers: int = 3, dropout_embedding: float = 0.1, dropout_input: float = 0.6,
                 dropout_hidden: float = 0.2, dropout_output: float = 0.4, weight_drop: float = 0.5,
                 head_hidden: int = 50, head_dropout: float = 0.1, name: str | None = None):
        super().__init__(name=name)
        self.num_classes = positive_int(num_classes, "ULMFiTClassifier: num_classes")
        self.encoder = AWDLSTM(vocab_size, embedding_size, hidden_size, num_layers, dropout_embedding,
                               dropout_input, dropout_hidden, dropout_output, weight_drop, tie_weights=True)
        self.head_hidden = Dense(positive_int(head_hidden, "ULMFiTClassifier: head_hidden"), activation="relu")
        self.head_dropout = Dropout(head_dropout)
        self.head_output = Dense(num_classes)

    def build(self, input_shape) -> None:
        ids = tuple(input_shape)
        self.encoder.build(ids)
        self.encoder.built = True
        pooled = (ids[0], 3 * self.encoder.output_size)
        for layer, shape in ((self.head_hidden, pooled), (self.head_output, (ids[0], self.head_hidden.units))):
            if not layer.built:
                layer.build(shape)
                layer.built = True
        self.built = True

    def forward(self, ids) -> Tensor:
        _, dropped, _ = self.encoder.encode(ids)
        return self.head_output(self.head_dropout(self.head_hidden(concat_pool(dropped))))

    def layer_groups(self) -> list[list[Module]]:
        """Bottom first: the encoder's groups, then the head."""
        return self.encoder.layer_groups() + [[self.head_hidden, self.head_output]]

    def group_parameters(self) -> list[list]:
        return self.encoder.group_parameters() + [self.head_hidden.parameters() + self.head_output.parameters()]

    def compute_output_shape(self, input_shape):
        return (tuple(input_shape)[0], self.num_classes)


def awd_lstm_ptb(vocab_size: int = 10000, **kwargs) -> AWDLSTM:
    """The paper's Penn Treebank model: A = 400, H = 1150, 3 layers, tied (24M parameters)."""
    return AWDLSTM(vocab_size, 400, 1150, 3, **kwargs)


def awd_lstm_wt2(vocab_size: int = 33278, **kwargs) -> AWDLSTM:
    """The paper's WikiText-2 model: the PTB sizes on WT2's 33,278 words (33M parameters)."""
    return AWDLSTM(vocab_size, 400, 1150, 3, **kwargs)


def awd_lstm_tiny(vocab_size: int, **kwargs) -> AWDLSTM:
    """A small AWD-LSTM for tests and characters: A = 16, H = 64, 2 layers, lighter dropouts."""
    options = {"dropout_embedding": 0.02, "dropout_input": 0.1, "dropout_hidden": 0.1, "dropout_output": 0.1,
               "weight_drop": 0.1, **kwargs}
    return AWDLSTM(vocab_size, 16, 64, 2, **options)
