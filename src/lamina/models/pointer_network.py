"""Pointer networks (Vinyals, Fortunato and Jaitly 2015): an encoder-decoder whose outputs are
positions of its input, for problems whose answer is a selection or an ordering of the
input (sorting, convex hulls, tours), where the size of the "output vocabulary" grows
with the input.

An LSTM encoder reads the inputs x_1..x_n into states e_1..e_n. An LSTM decoder, started
from the encoder's final state, reads at step i the input it pointed at before (a learned
start vector at the first step) and gives d_i. Its attention logits over the input
positions are the output distribution itself:

    u^i_j = v^T tanh(W1 e_j + W2 d_i),    p(C_i = j | C_1..C_{i-1}, x) = softmax_j(u^i_j)

With ``mask_chosen=True`` (the default, for permutations) a position already pointed at
gets a logit of -1e9, so each is chosen once. For outputs of varying length (a convex
hull) ``end_token=True`` adds a position n past the inputs, a learned encoder state
e_end, whose choice ends the output. Training uses teacher forcing:
``model(x, targets)`` returns the logits (N, T_out, n) of every target step; decoding is
greedy or by beam search (:meth:`PointerNetwork.decode`).
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad, tensor
from lamina.errors import ShapeError
from lamina.nn import init as initializers
from lamina.nn.cells import LSTMCell
from lamina.nn.dense import linear
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.recurrent import LSTM
from lamina.text.beam import beam_search

__all__ = ["PointerNetwork", "pointer_logits"]

MASKED = -1e9


def pointer_logits(encoded_keys: Tensor, decoder_state: Tensor, w2: Tensor, v: Tensor,
                   chosen: np.ndarray | None = None) -> Tensor:
    """u_j = v^T tanh(W1 e_j + W2 d) for every position j: ``encoded_keys`` (N, n, units)
    holds W1 e_j (computed once per input), ``decoder_state`` d (N, H), ``w2`` (H, units),
    ``v`` (units,). ``chosen`` (N, n) boolean: positions whose logit becomes -1e9."""
    n, steps, units = encoded_keys.shape
    query = F.reshape(linear(decoder_state, w2), (n, 1, units))
    scores = F.reshape(linear(F.tanh(F.add(encoded_keys, query)), F.reshape(v, (units, 1))), (n, steps))
    if chosen is not None:
        scores = F.where(~chosen, scores, backend.xp.asarray(MASKED, dtype=scores.dtype))
    return scores


@register_layer
class PointerNetwork(Module):
    """Inputs (N, n, ``input_dim``) -> logits over the n input positions (n + 1 with
    ``end_token``, the last one "end") for each output step; see the module notes.
    ``hidden``: the LSTM state size H; ``attention_units``: the size of W1 e_j + W2 d_i
    (default H). Parameters of the pointer: ``w1`` (H, units), ``w2`` (H, units), ``v``
    (units,), the decoder's first input ``start`` (input_dim,) (also its input after "end"),
    and with ``end_token`` the end position's encoder state ``end_state`` (H,)."""

    def __init__(self, input_dim: int, hidden: int = 64, attention_units: int | None = None,
                 mask_chosen: bool = True, end_token: bool = False, name: str | None = None):
        super().__init__(name=name)
        self.input_dim = positive_int(input_dim, "PointerNetwork: input_dim")
        self.hidden = positive_int(hidden, "PointerNetwork: hidden")
        self.attention_units = positive_int(attention_units or hidden, "PointerNetwork: attention_units")
        self.mask_chosen = bool(mask_chosen)
        self.end_token = bool(end_token)
        self.encoder = LSTM(hidden, return_sequences=True, return_state=True)
        self.decoder = LSTMCell(hidden)
        for layer, shape in ((self.encoder, (None, None, self.input_dim)), (self.decoder, (None, self.input_dim))):
            layer.build(shape)
            layer.built = True
        dtype, h, u = backend.get_default_dtype(), self.hidden, self.attention_units
        glorot = initializers.get("xavier_uniform")
        self.add_parameter("w1", glorot((h, u), h, u, dtype))
        self.add_parameter("w2", glorot((h, u), h, u, dtype))
        self.add_parameter("v", glorot((u, 1), u, 1, dtype).reshape(u))
        self.add_parameter("start", initializers.uniform(1.0)((self.input_dim,), 1, 1, dtype))
        if self.end_token:
            self.add_parameter("end_state", initializers.uniform(1.0)((h,), 1, 1, dtype))
        self.built = True

    # -- pieces ------------------------------------------------------------------------------
    def _check_inputs(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.input_dim or x.shape[1] < 1:
            raise ShapeError(f"{self._label()}: expected inputs of shape (batch, n, {self.input_dim}) with n >= 1, "
                             f"got {tuple(x.shape)}")
        return x

    def encode(self, x) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """(the encoder states e (N, P, H), W1 e (N, P, units), the decoder's first state
        (h, c)); P = n, or n + 1 with the end position's state last."""
        encoded, h, c = self.encoder(x)
        if self.end_token:
            end = F.broadcast_to(F.reshape(self.end_state, (1, 1, self.hidden)), (x.shape[0], 1, self.hidden))
            encoded = F.concat([encoded, end], axis=1)
        return encoded, linear(encoded, self.w1), (h, c)

    def step(self, decoder_input: Tensor, state, keys: Tensor, chosen: np.ndarray | None = None):
        """One decoder step: (logits (N, P), the new state (h, c))."""
        h, c = self.decoder(decoder_input, state)
        return pointer_logits(keys, h, self.w2, self.v, chosen), (h, c)

    def _start_inputs(self, n: int, count: int = 1) -> Tensor:
        return F.broadcast_to(F.reshape(self.start, (1, count, self.input_dim)), (n, count, self.input_dim))

    def _choices(self, x: Tensor) -> Tensor:
        """What the decoder reads after pointing at each position: x, then ``start`` for "end"."""
        return F.concat([x, self._start_inputs(x.shape[0])], axis=1) if self.end_token else x

    def _mark(self, chosen: np.ndarray | None, pointed: np.ndarray) -> np.ndarray | None:
        """The chosen positions after ``pointed`` (a new array; "end" stays open)."""
        if chosen is None:
            return None
        chosen = chosen.copy()
        chosen[np.arange(len(pointed)), pointed] = True
        if self.end_token:
            chosen[:, -1] = False
        return chosen

    # -- training ------------------------------------------------------------------------------
    def forward(self, x, targets) -> Tensor:
        """Teacher forcing: the logits (N, T_out, P) for the target positions ``targets``
        (N, T_out) integers in [0, P) (P = n, or n + 1 with ``end_token``: n is "end", and
        the rows are padded with n after it); step i reads x at targets[:, i - 1]."""
        x = self._check_inputs(x)
        targets = np.asarray(targets.numpy() if isinstance(targets, Tensor) else targets)
        n, steps = x.shape[0], x.shape[1]
        positions = steps + self.end_token
        if targets.ndim != 2 or targets.shape[0] != n or targets.dtype.kind not in "iu":
            raise ShapeError(f"{self._label()}: targets must be integer positions of shape (batch={n}, steps), "
                             f"got {targets.dtype} {targets.shape}")
        if targets.size and (targets.min() < 0 or targets.max() >= positions):
            raise ValueError(f"{self._label()}: target positions must lie in [0, {positions}) for inputs of {steps} "
                             f"steps, got values in [{targets.min()}, {targets.max()}]")
        if self.mask_chosen and not self.end_token and targets.shape[1] > steps:
            raise ValueError(f"{self._label()}: with mask_chosen each of the {steps} positions is pointed at once; "
                             f"got {targets.shape[1]} target steps")
        _, keys, state = self.encode(x)
        choices = self._choices(x)
        decoder_input = F.reshape(self._start_inputs(n), (n, self.input_dim))
        chosen = np.zeros((n, positions), dtype=bool) if self.mask_chosen else None
        rows = np.arange(n)
        logits = []
        for i in range(targets.shape[1]):
            scores, state = self.step(decoder_input, state, keys, chosen)
            logits.append(scores)
            chosen = self._mark(chosen, targets[:, i])
            decoder_input = F.getitem(choices, (rows, targets[:, i]))
        return F.stack(logits, axis=1)

    def loss(self, x, targets) -> Tensor:
        """The mean cross-entropy of the target positions under teacher forcing."""
        return F.categorical_cross_entropy(self(x, targets), np.asarray(targets), from_logits=True)

    # -- decoding -----------------------------------------------------------------------------
    def decode(self, x, steps: int | None = None, beam_width: int = 1) -> np.ndarray:
        """The pointed positions (N, steps): greedy, or, with ``beam_width`` > 1, the
        likeliest sequence found by beam search (:func:`lamina.text.beam_search`) for each
        input. ``steps`` defaults to n (a permutation with ``mask_chosen``), n + 1 with
        ``end_token``; then decoding stops once every row has pointed at "end" (n), and the
        rows are padded with n after it."""
        x = self._check_inputs(x)
        n_inputs = x.shape[1]
        most = n_inputs + self.end_token
        steps = most if steps is None else positive_int(steps, f"{self._label()}.decode: steps")
        if self.mask_chosen and not self.end_token and steps > n_inputs:
            raise ValueError(f"{self._label()}.decode: with mask_chosen at most {n_inputs} steps (the number of "
                             f"inputs) can be decoded, got steps={steps}")
        beam_width = positive_int(beam_width, f"{self._label()}.decode: beam_width")
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                if beam_width == 1:
                    return self._greedy(x, steps)
                rows = [self._beam(x[i:i + 1], steps, beam_width) for i in range(x.shape[0])]
        finally:
            self.train(was_training)
        width = max(len(ids) for ids in rows)
        return np.asarray([list(ids) + [n_inputs] * (width - len(ids)) for ids in rows], dtype=np.int64)

    def _greedy(self, x: Tensor, steps: int) -> np.ndarray:
        n, n_inputs = x.shape[0], x.shape[1]
        _, keys, state = self.encode(x)
        choices = self._choices(x)
        decoder_input = F.reshape(self._start_inputs(n), (n, self.input_dim))
        chosen = np.zeros((n, n_inputs + self.end_token), dtype=bool) if self.mask_chosen else None
        ended = np.zeros(n, dtype=bool)
        rows, out = np.arange(n), []
        for _ in range(steps):
            scores, state = self.step(decoder_input, state, keys, chosen)
            pointed = np.where(ended, n_inputs, scores.numpy().argmax(axis=-1))
            out.append(pointed)
            if self.end_token:
                ended |= pointed == n_inputs
                if ended.all():
                    break
            chosen = self._mark(chosen, pointed)
            decoder_input = F.getitem(choices, (rows, pointed))
        return np.stack(out, axis=1).astype(np.int64)

    def _beam(self, x: Tensor, steps: int, beam_width: int) -> np.ndarray:
        """Beam search over one input (1, n, D); the state of a hypothesis is its (h, c) and
        its chosen positions, and its last id the position pointed at (-1: none yet)."""
        n_inputs = x.shape[1]
        _, keys, (h, c) = self.encode(x)
        choices = self._choices(x).numpy()[0]
        start = self.start.numpy()

        def step(last: np.ndarray, state):
            h_rows, c_rows, chosen = state
            pointed = last >= 0
            if self.mask_chosen and pointed.any():       # mark the pointers just made
                chosen = chosen.copy()
                chosen[np.nonzero(pointed)[0], last[pointed]] = True
                if self.end_token:
                    chosen[:, -1] = False
            inputs = np.where(pointed[:, None], choices[np.maximum(last, 0)], start[None])
            keys_rows = F.broadcast_to(keys, (len(last), *keys.shape[1:]))
            scores, (h_new, c_new) = self.step(tensor(inputs), (tensor(h_rows), tensor(c_rows)), keys_rows,
                                               chosen if self.mask_chosen else None)
            log_probs = F.log_softmax(scores, axis=-1).numpy().astype(np.float64)
            if self.mask_chosen:
                log_probs[chosen] = -np.inf
            return log_probs, (h_new.numpy(), c_new.numpy(), chosen)

        def select(state, rows):
            return tuple(part[rows] for part in state)

        first = (h.numpy(), c.numpy(), np.zeros((1, n_inputs + self.end_token), dtype=bool))
        end = n_inputs if self.end_token else None
        best = beam_search(step, first, -1, end, beam_width, steps, select=select)[0]
        return np.asarray(best.ids, dtype=np.int64)

    def get_config(self) -> dict:
        return {"input_dim": self.input_dim, "hidden": self.hidden, "attention_units": self.attention_units,
                "mask_chosen": self.mask_chosen, "end_token": self.end_token, "name": self.name}
