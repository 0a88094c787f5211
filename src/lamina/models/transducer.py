"""A small RNN-Transducer (Graves 2012) in the shape of torchaudio's ``RNNT``: a Conformer
transcriber, an LSTM prediction network and an additive joiner, trained with
:func:`lamina.functional.rnnt_loss` and read out by greedy decoding.

    transcriber   f = Linear_f(Conformer(Linear_in(x)))        (batch, frames, joiner_dim)
    predictor     g = Linear_g(LSTM(Embed(blank, l_1, ..., l_U)))   (batch, U + 1, joiner_dim)
    joiner        z(t, u) = Linear_out(act(f(t) + g(u)))       (batch, frames, U + 1, symbols)

The predictor reads the labels emitted so far, the blank standing for "none yet", so that its
output u conditions the choice after u labels. ``act`` is ReLU (torchaudio's default) or tanh.

Greedy decoding walks the frames: at frame t it takes the most likely symbol of z(t, u); a
label is emitted (the predictor advances by it, and frame t is read again, at most
``max_symbols_per_frame`` times), the blank moves on to frame t + 1.
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor, graph
from lamina.errors import ShapeError
from lamina.functional.losses_rnnt import rnnt_loss
from lamina.models.conformer import Conformer, lengths_mask
from lamina.models.hf_weights import build_children, main_input_shape
from lamina.nn.dense import Dense
from lamina.nn.embedding import Embedding
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.recurrent import LSTM

__all__ = ["ConformerTransducer"]

_ACTIVATIONS = {"relu": F.relu, "tanh": F.tanh}


@register_layer
class ConformerTransducer(Module):
    """RNN-Transducer over (batch, frames, input_dim) features and label sequences over
    ``num_symbols`` symbols, one of which (``blank``, negative counting from the end; default
    the last) is the blank. See the module docstring for the three parts.

    ``model(features, lengths, targets)`` gives the joiner's logits (batch, frames, U + 1,
    num_symbols) for (batch, U) targets; :meth:`loss` is their RNN-T loss and
    :meth:`greedy_decode` the label sequences of new inputs.
    """

    def __init__(self, input_dim: int, num_symbols: int, encoder_dim: int = 32, num_heads: int = 4,
                 ffn_dim: int = 64, num_layers: int = 2, depthwise_conv_kernel_size: int = 5,
                 prediction_dim: int = 32, joiner_dim: int = 32, dropout: float = 0.0, blank: int = -1,
                 joiner_activation: str = "relu", name: str | None = None):
        super().__init__(name=name)
        symbols = positive_int(num_symbols, "ConformerTransducer: num_symbols")
        if symbols < 2:
            raise ValueError(f"ConformerTransducer: num_symbols must count the blank and at least one label, got "
                             f"{symbols}")
        if not -symbols <= blank < symbols:
            raise ValueError(f"ConformerTransducer: blank must lie in [{-symbols}, {symbols}), got {blank}")
        if joiner_activation not in _ACTIVATIONS:
            raise ValueError(f"ConformerTransducer: joiner_activation must be one of {sorted(_ACTIVATIONS)}, got "
                             f"{joiner_activation!r}")
        self.blank = int(blank) % symbols
        self.config = {"input_dim": positive_int(input_dim, "ConformerTransducer: input_dim"),
                       "num_symbols": symbols, "encoder_dim": encoder_dim, "num_heads": num_heads,
                       "ffn_dim": ffn_dim, "num_layers": num_layers,
                       "depthwise_conv_kernel_size": depthwise_conv_kernel_size, "prediction_dim": prediction_dim,
                       "joiner_dim": joiner_dim, "dropout": dropout, "blank": blank,
                       "joiner_activation": joiner_activation}
        self.input_linear = Dense(encoder_dim, kernel_init="lecun_uniform")
        self.encoder = Conformer(encoder_dim, num_heads, ffn_dim, num_layers, depthwise_conv_kernel_size, dropout)
        self.encoder_output = Dense(joiner_dim, kernel_init="lecun_uniform")
        self.embedding = Embedding(symbols, prediction_dim)
        self.predictor = LSTM(prediction_dim, return_sequences=True, return_state=True)
        self.predictor_output = Dense(joiner_dim, kernel_init="lecun_uniform")
        self.joiner_output = Dense(symbols, kernel_init="lecun_uniform")

    def build(self, input_shape=None) -> None:
        shape = main_input_shape(input_shape)
        batch = shape[0] if shape else None
        c = self.config
        build_children([
            (self.input_linear, (batch, None, c["input_dim"])),
            (self.encoder, (batch, None, c["encoder_dim"])),
            (self.encoder_output, (batch, None, c["encoder_dim"])),
            (self.embedding, (batch, None)),
            (self.predictor, (batch, None, c["prediction_dim"])),
            (self.predictor_output, (batch, None, c["prediction_dim"])),
            (self.joiner_output, (batch, None, None, c["joiner_dim"])),
        ])
        self.built = True

    # -- the three parts ------------------------------------------------------------------

    def encode(self, features, lengths) -> Tensor:
        """The transcriber's f (batch, frames, joiner_dim)."""
        features = as_tensor(features)
        if features.ndim != 3 or features.shape[-1] != self.config["input_dim"]:
            raise ShapeError(f"ConformerTransducer: features must be (batch, frames, {self.config['input_dim']}), "
                             f"got shape {tuple(features.shape)}")
        encoded, _ = self.encoder(self.input_linear(features), lengths)
        return self.encoder_output(encoded)

    def _start(self, n: int):
        """The predictor's input before any label: the blank, (n, 1)."""
        return np.full((n, 1), self.blank, dtype=np.int64)

    def predict(self, targets) -> Tensor:
        """The predictor's g (batch, U + 1, joiner_dim) for (batch, U) targets: g(u) has read
        the first u labels."""
        targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
        if targets.ndim != 2 or targets.dtype.kind not in "iu":
            raise ShapeError(f"ConformerTransducer: targets must be (batch, U) integer labels, got shape "
                             f"{targets.shape} and dtype {targets.dtype}")
        labels = np.clip(targets, 0, self.config["num_symbols"] - 1)     # padding past a length: any label
        inputs = np.concatenate([self._start(len(targets)), labels], axis=1)
        sequence, _, _ = self.predictor(self.embedding(inputs))
        return self.predictor_output(sequence)

    def join(self, encoded, predicted) -> Tensor:
        """z (batch, frames, U + 1, symbols) from f (batch, frames, J) and g (batch, U + 1, J);
        either may also come one step at a time, f (batch, J) with g (batch, J)."""
        act = _ACTIVATIONS[self.config["joiner_activation"]]
        if encoded.ndim == 3:
            encoded, predicted = F.expand_dims(encoded, 2), F.expand_dims(predicted, 1)
        return self.joiner_output(act(F.add(encoded, predicted)))

    def forward(self, features, lengths, targets) -> Tensor:
        return self.join(self.encode(features, lengths), self.predict(targets))

    def loss(self, features, lengths, targets, target_lengths, **options) -> Tensor:
        """:func:`rnnt_loss` of the logits with this model's blank (``options``: its
        ``clamp`` and ``reduction``)."""
        logits = self(features, lengths, targets)
        return rnnt_loss(logits, targets, lengths, target_lengths, blank=self.blank, **options)

    # -- decoding ---------------------------------------------------------------------------

    def greedy_decode(self, features, lengths, max_symbols_per_frame: int = 3) -> list[list[int]]:
        """The label sequence of each input, best symbol first at every step (module docstring),
        the whole batch at once."""
        limit = positive_int(max_symbols_per_frame, "ConformerTransducer.greedy_decode: max_symbols_per_frame")
        with graph.no_grad():
            encoded = self.encode(features, lengths).data
            lengths = lengths_mask(lengths, encoded.shape[1], "ConformerTransducer.greedy_decode").sum(axis=1)
            n = encoded.shape[0]
            output, state = self._predictor_step(self._start(n), None)
            hypotheses: list[list[int]] = [[] for _ in range(n)]
            for t in range(encoded.shape[1]):
                reading = t < lengths
                for _ in range(limit):
                    scores = self.join(Tensor(encoded[:, t]), Tensor(output)).data
                    best = scores.argmax(axis=-1)
                    emits = reading & (best != self.blank)
                    if not emits.any():
                        break
                    for b in np.flatnonzero(emits):
                        hypotheses[b].append(int(best[b]))
                    new_output, new_state = self._predictor_step(best[:, None], state)
                    keep = emits[:, None]
                    output = np.where(keep, new_output, output)
                    state = [np.where(keep, new, old) for new, old in zip(new_state, state)]
                    reading = emits
        return hypotheses

    def _predictor_step(self, symbols, state):
        """g for one more symbol per row, (n, J), and the LSTM's new (h, c) arrays."""
        initial = None if state is None else [Tensor(s) for s in state]
        sequence, h, c = self.predictor(self.embedding(symbols), initial_state=initial)
        return self.predictor_output(sequence).data[:, 0], [h.data, c.data]

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}
