"""Show, Attend and Tell (Xu et al. 2015): image captioning with soft attention.

A CNN turns an image (N, H, W, C), NHWC, into a grid of h x w feature vectors of D values,
read as L = h w annotation vectors a_1 .. a_L (N, L, D). An LSTM writes the caption one word
at a time. With h_{t-1} its previous state and E y_{t-1} the previous word's embedding:

    e_ti = w^T tanh(W_a a_i + W_h h_{t-1} + b)         (the attention network f_att)
    alpha_t = softmax over i of e_ti,                    z_t = beta_t sum_i alpha_ti a_i
    beta_t = sigmoid(w_beta^T h_{t-1} + b_beta)          (the gating scalar, Section 4.2.1)
    h_t, c_t = LSTM([E y_{t-1}, z_t], (h_{t-1}, c_{t-1}))   (PyTorch's LSTMCell, gates i, f, g, o)
    scores_t = L_o(E y_{t-1} + L_h h_t + L_z z_t)         (the deep output layer, eq. 7)

The first state comes from the mean annotation vector: h_0 = tanh(W_init_h mean_i a_i + b),
c_0 = tanh(W_init_c mean_i a_i + b'). Training minimises the words' cross-entropy plus the
doubly stochastic attention regularization lambda sum_i (1 - sum_t alpha_ti)^2 (each region
attended to about once over the caption), averaged over the images (:meth:`ShowAttendTell.loss`).

:meth:`ShowAttendTell.caption` decodes greedily, or by beam search
(:func:`lamina.text.beam_search`), and can return the attention maps alpha (N, T, h, w).
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor, no_grad, tensor
from lamina.errors import ShapeError
from lamina.nn.cells import LSTMCell
from lamina.nn.conv import Conv2D
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.embedding import Embedding
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.pooling import MaxPool2D
from lamina.nn.sequential import Sequential
from lamina.text.beam import beam_search

__all__ = ["ShowAttendTell"]


def small_encoder(channels: tuple[int, ...] = (16, 32)) -> Sequential:
    """3x3 'same' convolution + ReLU + 2x2 max pooling per entry of ``channels``: a feature
    grid of 1/2^k the image's height and width."""
    layers: list[Module] = []
    for filters in channels:
        layers += [Conv2D(filters, 3, padding="same", activation="relu"), MaxPool2D(2)]
    return Sequential(layers)


@register_layer
class ShowAttendTell(Module):
    """Images (N, H, W, C) and shifted caption ids (N, T) -> next-word scores (N, T,
    ``vocab_size``) and attention weights (N, T, L); see the module notes.

    ``encoder``: any module mapping images to an NHWC feature grid (N, h, w, D), e.g. a
    pretrained CNN cut before its pooling; default :func:`small_encoder` of
    ``encoder_channels``. ``embed_dim`` is the size m of word embeddings and of the deep
    output layer, ``hidden`` the LSTM's n, ``attention_units`` the attention network's hidden
    size; ``dropout`` applies before L_o; ``attention_lambda`` weighs the regularization."""

    def __init__(self, vocab_size: int, embed_dim: int = 32, hidden: int = 64, attention_units: int = 32,
                 encoder: Module | None = None, encoder_channels: tuple[int, ...] = (16, 32), dropout: float = 0.0,
                 attention_lambda: float = 1.0, name: str | None = None):
        super().__init__(name=name)
        for what, value in (("vocab_size", vocab_size), ("embed_dim", embed_dim), ("hidden", hidden),
                            ("attention_units", attention_units)):
            positive_int(value, f"ShowAttendTell: {what}")
        if not 0.0 <= dropout < 1.0 or attention_lambda < 0:
            raise ValueError(f"ShowAttendTell: need 0 <= dropout < 1 and attention_lambda >= 0, got "
                             f"dropout={dropout!r}, attention_lambda={attention_lambda!r}")
        self.vocab_size, self.embed_dim, self.hidden = vocab_size, embed_dim, hidden
        self.attention_units, self.attention_lambda = attention_units, float(attention_lambda)
        self.encoder_channels, self.dropout_rate = tuple(encoder_channels), float(dropout)
        self.encoder = encoder if encoder is not None else small_encoder(self.encoder_channels)
        self.init_h = Dense(hidden, activation="tanh", kernel_init="xavier_uniform")
        self.init_c = Dense(hidden, activation="tanh", kernel_init="xavier_uniform")
        self.attend_features = Dense(attention_units, use_bias=False, kernel_init="xavier_uniform")   # W_a
        self.attend_state = Dense(attention_units, kernel_init="xavier_uniform")                     # W_h, b
        self.attention_score = Dense(1, use_bias=False, kernel_init="xavier_uniform")                # w
        self.gate = Dense(1, activation="sigmoid", kernel_init="xavier_uniform")                     # beta
        self.embedding = Embedding(vocab_size, embed_dim)
        self.cell = LSTMCell(hidden)
        self.state_to_output = Dense(embed_dim, kernel_init="xavier_uniform")                      # L_h
        self.context_to_output = Dense(embed_dim, use_bias=False, kernel_init="xavier_uniform")    # L_z
        self.output = Dense(vocab_size, kernel_init="xavier_uniform")                              # L_o
        self.dropout = Dropout(dropout) if dropout else None
        self.grid_shape: tuple[int, int] | None = None

    def build(self, input_shape) -> None:
        self.built = True                    # the sub-layers build on their first call

    # -- the pieces ------------------------------------------------------------------------
    def encode(self, images) -> Tensor:
        """The annotation vectors (N, L, D) of the encoder's feature grid (N, h, w, D)."""
        images = as_tensor(images)
        if images.ndim != 4:
            raise ShapeError(f"ShowAttendTell: images must be NHWC (batch, height, width, channels), got shape "
                             f"{tuple(images.shape)}")
        grid = self.encoder(images)
        if grid.ndim != 4:
            raise ShapeError(f"ShowAttendTell: the encoder must return an NHWC feature grid (N, h, w, D), got "
                             f"shape {tuple(grid.shape)}")
        n, h, w, d = grid.shape
        self.grid_shape = (h, w)
        return F.reshape(grid, (n, h * w, d))

    def initial_state(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(h_0, c_0) from the mean annotation vector."""
        mean = F.mean(features, axis=1)
        return self.init_h(mean), self.init_c(mean)

    def attend(self, features: Tensor, projected: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """(z_t (N, D), alpha_t (N, L)) for the previous state h (N, n); ``projected`` is
        W_a a_i (N, L, units), computed once per image."""
        n, length = features.shape[0], features.shape[1]
        hidden = F.tanh(F.add(projected, F.reshape(self.attend_state(h), (n, 1, self.attention_units))))
        alpha = F.softmax(F.reshape(self.attention_score(hidden), (n, length)), axis=-1)
        context = F.reshape(F.matmul(F.reshape(alpha, (n, 1, length)), features), (n, features.shape[2]))
        return self.gate(h) * context, alpha

    def step(self, ids, state: tuple[Tensor, Tensor], features: Tensor, projected: Tensor):
        """One word: (scores (N, V), the new (h, c), alpha (N, L)) after the words ``ids`` (N,)."""
        embedded = self.embedding(as_tensor(ids))
        z, alpha = self.attend(features, projected, state[0])
        h, c = self.cell(F.concat([embedded, z], axis=-1), state)
        out = embedded + self.state_to_output(h) + self.context_to_output(z)
        if self.dropout is not None:
            out = self.dropout(out)
        return self.output(out), (h, c), alpha

    # -- training ----------------------------------------------------------------------------
    def forward(self, images, captions_in) -> tuple[Tensor, Tensor]:
        """Teacher forcing: (scores (N, T, V), alpha (N, T, L)) for ``captions_in``, the caption
        ids shifted right behind the bos id."""
        ids = np.asarray(captions_in.numpy() if isinstance(captions_in, Tensor) else captions_in)
        if ids.ndim != 2:
            raise ShapeError(f"ShowAttendTell: captions_in must be ids (batch, time), got shape {ids.shape}")
        features = self.encode(images)
        if ids.shape[0] != features.shape[0]:
            raise ShapeError(f"ShowAttendTell: {features.shape[0]} images but {ids.shape[0]} captions")
        projected = self.attend_features(features)
        state = self.initial_state(features)
        scores, alphas = [], []
        for t in range(ids.shape[1]):
            step_scores, state, alpha = self.step(ids[:, t], state, features, projected)
            scores.append(step_scores)
            alphas.append(alpha)
        return F.stack(scores, axis=1), F.stack(alphas, axis=1)

    def loss(self, images, captions_in, captions_out, pad_id: int | None = None) -> Tensor:
        """Mean cross-entropy of the words ``captions_out`` (ids ``pad_id`` left out) plus
        lambda * mean over images of sum_i (1 - sum_t alpha_ti)^2, the sum over t running over
        the words that are not padding."""
        scores, alphas = self(images, captions_in)
        targets = np.asarray(captions_out.numpy() if isinstance(captions_out, Tensor) else captions_out)
        if targets.shape != tuple(scores.shape[:2]):
            raise ShapeError(f"ShowAttendTell.loss: captions_out has shape {targets.shape}; expected "
                             f"{tuple(scores.shape[:2])}, the shape of captions_in")
        ignore = -100 if pad_id is None else pad_id
        words = F.cross_entropy(scores, tensor(targets.astype(np.int64)), ignore_index=ignore)
        if not self.attention_lambda:
            return words
        keep = (targets != ignore).astype(alphas.numpy().dtype)[:, :, None]
        attended = F.sum(alphas * tensor(keep), axis=1)                        # (N, L)
        spread = F.mean(F.sum(F.square(1.0 - attended), axis=1))
        return words + self.attention_lambda * spread

    # -- decoding ----------------------------------------------------------------------------
    def caption(self, images, bos_id: int, eos_id: int, max_length: int = 20, beam_width: int = 1,
                length_penalty: float = 0.0, return_attention: bool = False):
        """Caption ids (N, T_out) of each image, ``eos_id`` kept and repeated after the end;
        greedy (``beam_width=1``) or beam search ranking finished captions by
        log P / length^``length_penalty``. With ``return_attention`` also the attention maps
        (N, T_out, h, w) of the decoded words (for a beam, those of the best caption)."""
        positive_int(max_length, "ShowAttendTell.caption: max_length")
        positive_int(beam_width, "ShowAttendTell.caption: beam_width")
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                if beam_width == 1:
                    ids, alphas = self._greedy(images, bos_id, eos_id, max_length)
                else:
                    ids = self._beam(images, bos_id, eos_id, max_length, beam_width, length_penalty)
                    alphas = None
                    if return_attention:
                        shifted = np.concatenate([np.full((len(ids), 1), bos_id), ids[:, :-1]], axis=1)
                        alphas = self.forward(images, shifted)[1].numpy()
        finally:
            self.train(was_training)
        if not return_attention:
            return ids
        h, w = self.grid_shape
        return ids, alphas.reshape(alphas.shape[0], alphas.shape[1], h, w)

    def _greedy(self, images, bos_id: int, eos_id: int, max_length: int):
        features = self.encode(images)
        projected = self.attend_features(features)
        state = self.initial_state(features)
        n = features.shape[0]
        token = np.full(n, bos_id, dtype=np.int64)
        done = np.zeros(n, dtype=bool)
        ids, alphas = [], []
        for _ in range(max_length):
            scores, state, alpha = self.step(token, state, features, projected)
            token = np.where(done, eos_id, scores.numpy().argmax(axis=-1))
            ids.append(token)
            alphas.append(alpha.numpy())
            done |= token == eos_id
            if done.all():
                break
        return np.stack(ids, axis=1), np.stack(alphas, axis=1)

    def _beam(self, images, bos_id: int, eos_id: int, max_length: int, beam_width: int,
              length_penalty: float) -> np.ndarray:
        features = self.encode(images).numpy()
        rows = []
        for i in range(features.shape[0]):
            one = tensor(features[i:i + 1])
            projected = self.attend_features(one).numpy()
            h, c = (s.numpy() for s in self.initial_state(one))

            def step(last, state, one=one, projected=projected):
                beams = len(last)
                feats = tensor(np.repeat(one.numpy(), beams, axis=0))
                proj = tensor(np.repeat(projected, beams, axis=0))
                scores, (h, c), _ = self.step(last, (tensor(state[0]), tensor(state[1])), feats, proj)
                z = scores.numpy().astype(np.float64)
                z -= z.max(axis=-1, keepdims=True)
                return z - np.log(np.exp(z).sum(axis=-1, keepdims=True)), (h.numpy(), c.numpy())

            def select(state, keep):
                return state[0][keep], state[1][keep]

            best = beam_search(step, (h, c), bos_id, eos_id, beam_width, max_length, length_penalty,
                               select=select)[0]
            rows.append(best.ids)
        width = max(len(ids) for ids in rows)
        return np.asarray([ids + [eos_id] * (width - len(ids)) for ids in rows], dtype=np.int64)

    def get_config(self) -> dict:
        """The constructor's arguments; a custom ``encoder`` is not among them (pass it again)."""
        return {"vocab_size": self.vocab_size, "embed_dim": self.embed_dim, "hidden": self.hidden,
                "attention_units": self.attention_units, "encoder_channels": self.encoder_channels,
                "dropout": self.dropout_rate, "attention_lambda": self.attention_lambda, "name": self.name}
