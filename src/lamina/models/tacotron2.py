"""Tacotron 2 (Shen et al., "Natural TTS Synthesis by Conditioning WaveNet on Mel Spectrogram
Predictions", 2018): an autoregressive acoustic model turning character ids into mel frames.

Sequences are channels-last: encoder outputs (batch, tokens, encoder_dim), mels (batch, frames,
n_mels). With token mask m (True on real tokens, ``text_ids != padding_idx``, padding at the end):

    x = Embedding(text_ids)
    x = [Conv1D(k=5, 'same') -> BatchNorm -> ReLU -> Dropout] x 3       padded tokens kept at 0
    h = BiLSTM(x)                                                       encoder outputs h_j

The decoder runs one step per ``frames_per_step`` (r) frames. Step i reads the last frame of
the previous step (a frame of zeros at i = 0):

    p_i = PreNet(y_{i-1})                 2 x [Dense -> ReLU -> Dropout], dropout on at inference too
    s_i = LSTM_1([p_i, c_{i-1}], s_{i-1})                               the attention LSTM
    alpha_i, c_i = LocationSensitiveAttention(s_i, h, sum_{k<i} alpha_k)
    d_i = LSTM_2([s_i, c_i], d_{i-1})                                   the decoder LSTM
    frames_i = Dense([d_i, c_i]) (r frames),   stop_i = Dense([d_i, c_i]) (r logits)

and ``mel_postnet = mel + PostNet(mel)`` (5 convolutions with batch norm, tanh, dropout;
:class:`lamina.models.PostNet`). The two LSTMs are the paper's decoder stack of two layers, with
the attention read between them as in NVIDIA's reference implementation.

Training is teacher-forced: ``model(text_ids, mels)`` feeds the target frames and returns 'mel',
'mel_postnet', 'stop_logits' (batch, frames) and 'alignments' (batch, steps, tokens);
:func:`tacotron2_loss` gives MSE(mel) + MSE(mel_postnet) over real frames + BCE(stop).
:meth:`Tacotron2.generate` feeds back its own frames until the stop probability passes a
threshold. The pre-net's dropout masks can be given (``prenet_masks``) to make a run repeatable.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad, tensor
from lamina.errors import ShapeError
from lamina.models.fastspeech2 import PostNet
from lamina.nn.cells import LSTMCell
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.containers import ModuleList
from lamina.nn.conv1d import Conv1D
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout, dropout_mask
from lamina.nn.embedding import Embedding
from lamina.nn.layer import dropout_rate as checked_rate
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor
from lamina.nn.normalization import BatchNorm
from lamina.nn.recurrent import LSTM, Bidirectional

__all__ = ["LocationSensitiveAttention", "Tacotron2", "tacotron2_loss"]

_MASKED_ENERGY = -1e9


def _raw(x) -> np.ndarray:
    return backend.to_numpy(x.data) if isinstance(x, Tensor) else np.asarray(x)


def _masked(x: Tensor, mask) -> Tensor:
    """x (batch, steps, ...) with the steps where ``mask`` (batch, steps) is False set to 0."""
    if mask is None:
        return x
    keep = backend.xp.asarray(np.asarray(mask).reshape(mask.shape + (1,) * (x.ndim - 2)), dtype=x.dtype)
    return F.mul(x, keep)


@register_with_arguments
class LocationSensitiveAttention(Module):
    """Additive attention that also sees where it attended before (Chorowski et al. 2015, as
    used by Tacotron 2). For the query s_i (batch, query_dim), the memory h (batch, steps,
    memory_dim) and the cumulative weights of the earlier steps a (batch, steps):

        f_i = F * a                            Conv1D(location_filters, location_kernel, 'same')
        e_ij = w^T tanh(W s_i + V h_j + U f_ij + b)
        alpha_i = softmax over j of e_ij, over the steps where ``mask`` (batch, steps) is True
        c_i = sum_j alpha_ij h_j

    ``attention(query, memory, cumulative_weights, mask=None, processed_memory=None)`` returns
    (c_i (batch, memory_dim), alpha_i (batch, steps)). V h + b does not change from step to
    step: :meth:`process_memory` computes it once for a decoder loop to pass along."""

    def __init__(self, attention_dim: int = 128, location_filters: int = 32, location_kernel: int = 31,
                 name: str | None = None):
        super().__init__(name=name)
        self.attention_dim = positive_int(attention_dim, "LocationSensitiveAttention: attention_dim")
        positive_int(location_filters, "LocationSensitiveAttention: location_filters")
        location_kernel = positive_int(location_kernel, "LocationSensitiveAttention: location_kernel")
        if location_kernel % 2 == 0:
            raise ValueError(f"LocationSensitiveAttention: location_kernel must be odd for 'same' padding, "
                             f"got {location_kernel}")
        self.query_layer = Dense(attention_dim, use_bias=False, kernel_init="xavier_uniform")
        self.memory_layer = Dense(attention_dim, kernel_init="xavier_uniform")
        self.location_conv = Conv1D(location_filters, location_kernel, padding=(location_kernel - 1) // 2,
                                    use_bias=False, kernel_init="xavier_uniform")
        self.location_layer = Dense(attention_dim, use_bias=False, kernel_init="xavier_uniform")
        self.energy_layer = Dense(1, use_bias=False, kernel_init="xavier_uniform")

    def build(self, input_shape) -> None:
        self.built = True                    # the sub-layers build on their first call

    def process_memory(self, memory) -> Tensor:
        """V h_j + b for every step: (batch, steps, attention_dim)."""
        return self.memory_layer(as_tensor(memory))

    def forward(self, query, memory, cumulative_weights, mask=None, processed_memory=None):
        query, memory, cumulative = as_tensor(query), as_tensor(memory), as_tensor(cumulative_weights)
        n, steps = memory.shape[0], memory.shape[1]
        if query.ndim != 2 or query.shape[0] != n or tuple(cumulative.shape) != (n, steps):
            raise ShapeError(f"{self._label()}: expected query (batch, query_dim), memory (batch, steps, memory_dim) "
                             f"and cumulative_weights (batch, steps); got {tuple(query.shape)}, "
                             f"{tuple(memory.shape)} and {tuple(cumulative.shape)}")
        if processed_memory is None:
            processed_memory = self.process_memory(memory)
        location = self.location_layer(self.location_conv(F.reshape(cumulative, (n, steps, 1))))
        hidden = F.tanh(F.add(F.add(processed_memory, F.expand_dims(self.query_layer(query), 1)), location))
        energies = F.reshape(self.energy_layer(hidden), (n, steps))
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (n, steps):
                raise ShapeError(f"{self._label()}: mask must be (batch, steps) = {(n, steps)}, got {mask.shape}")
            energies = F.masked_fill(energies, backend.xp.asarray(~mask), _MASKED_ENERGY)
        weights = F.softmax(energies, axis=-1)
        context = F.reshape(F.matmul(F.expand_dims(weights, 1), memory), (n, memory.shape[2]))
        return context, weights


@register_with_arguments
class Tacotron2(Module):
    """Tacotron 2 (module docstring). ``model(text_ids, mels, prenet_masks=None)`` with integer
    ``text_ids`` (batch, tokens), ``padding_idx`` marking the padding at the end of a row, and
    target ``mels`` (batch, frames, n_mels), frames a multiple of ``frames_per_step``, returns
    the teacher-forced dict 'mel', 'mel_postnet' (batch, frames, n_mels), 'stop_logits'
    (batch, frames) and 'alignments' (batch, frames / frames_per_step, tokens). With
    ``mel_lengths`` (batch,), the post-net reads the first mel_lengths[i] frames of row i alone
    (its input and output are 0 after them), so padding changes no real frame.

    ``prenet_masks``: None (fresh dropout masks from :func:`lamina.backend.rng`), or the two
    pre-net dropout masks, each (batch, steps, prenet_units), 0 where dropped and 1 / (1 -
    rate) where kept (:meth:`prenet_masks` draws a pair)."""

    def __init__(self, vocab_size: int, n_mels: int = 80, embed_dim: int = 512, encoder_kernel_size: int = 5,
                 encoder_convs: int = 3, prenet_units: int = 256, prenet_dropout: float = 0.5,
                 attention_rnn_units: int = 1024, decoder_units: int = 1024, attention_dim: int = 128,
                 location_filters: int = 32, location_kernel: int = 31, frames_per_step: int = 1,
                 postnet_channels: int = 512, postnet_kernel_size: int = 5, postnet_layers: int = 5,
                 dropout: float = 0.5, padding_idx: int = 0, name: str | None = None):
        super().__init__(name=name)
        positive_int(vocab_size, "Tacotron2: vocab_size")
        self.n_mels = positive_int(n_mels, "Tacotron2: n_mels")
        embed_dim = positive_int(embed_dim, "Tacotron2: embed_dim")
        if embed_dim % 2:
            raise ValueError(f"Tacotron2: embed_dim must be even (the BiLSTM gives embed_dim / 2 per direction), "
                             f"got {embed_dim}")
        encoder_kernel_size = positive_int(encoder_kernel_size, "Tacotron2: encoder_kernel_size")
        if encoder_kernel_size % 2 == 0:
            raise ValueError(f"Tacotron2: encoder_kernel_size must be odd, got {encoder_kernel_size}")
        if not 0 <= padding_idx < vocab_size:
            raise ValueError(f"Tacotron2: padding_idx must lie in [0, {vocab_size}), got {padding_idx}")
        self.padding_idx = int(padding_idx)
        self.prenet_units = positive_int(prenet_units, "Tacotron2: prenet_units")
        self.prenet_dropout = checked_rate(prenet_dropout, "Tacotron2: prenet_dropout")
        self.attention_rnn_units = positive_int(attention_rnn_units, "Tacotron2: attention_rnn_units")
        self.decoder_units = positive_int(decoder_units, "Tacotron2: decoder_units")
        self.frames_per_step = positive_int(frames_per_step, "Tacotron2: frames_per_step")
        self.embedding = Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.encoder_convs = ModuleList([Conv1D(embed_dim, encoder_kernel_size, padding=(encoder_kernel_size - 1) // 2,
                                                kernel_init="xavier_uniform")
                                         for _ in range(positive_int(encoder_convs, "Tacotron2: encoder_convs"))])
        self.encoder_norms = ModuleList([BatchNorm() for _ in range(encoder_convs)])
        self.encoder_dropout = Dropout(dropout)
        self.encoder_lstm = Bidirectional(LSTM(embed_dim // 2, return_sequences=True))
        self.prenet = ModuleList([Dense(prenet_units, activation="relu", use_bias=False,
                                        kernel_init="xavier_uniform") for _ in range(2)])
        self.attention_rnn = LSTMCell(attention_rnn_units)
        self.attention = LocationSensitiveAttention(attention_dim, location_filters, location_kernel)
        self.decoder_rnn = LSTMCell(decoder_units)
        self.frame_projection = Dense(n_mels * frames_per_step, kernel_init="xavier_uniform")
        self.stop_projection = Dense(frames_per_step, kernel_init="xavier_uniform")
        self.postnet = PostNet(n_mels, postnet_channels, postnet_kernel_size, postnet_layers, dropout)

    def build(self, input_shape) -> None:
        self.built = True                    # the sub-layers build on their first call

    # -- encoder ---------------------------------------------------------------------------
    def _text(self, text_ids) -> tuple[np.ndarray, np.ndarray]:
        text_ids = _raw(text_ids)
        if text_ids.ndim != 2 or text_ids.dtype.kind not in "iu":
            raise ShapeError(f"Tacotron2: text_ids must be a (batch, tokens) integer array, got shape "
                             f"{text_ids.shape} and dtype {text_ids.dtype}")
        mask = text_ids != self.padding_idx
        lengths = mask.sum(axis=1)
        if (lengths == 0).any() or not (mask == (np.arange(mask.shape[1]) < lengths[:, None])).all():
            raise ValueError(f"Tacotron2: every row of text_ids needs at least one token, with the padding "
                             f"(id {self.padding_idx}) only at its end; got lengths {lengths.tolist()}")
        return text_ids, mask

    def encode(self, text_ids) -> tuple[Tensor, np.ndarray]:
        """(the encoder outputs h (batch, tokens, embed_dim), the token mask (batch, tokens))."""
        text_ids, mask = self._text(text_ids)
        x = _masked(self.embedding(text_ids), mask)
        for conv, norm in zip(self.encoder_convs, self.encoder_norms):
            x = _masked(self.encoder_dropout(F.relu(norm(conv(x)))), mask)
        return self.encoder_lstm(x, lengths=mask.sum(axis=1)), mask

    # -- decoder ---------------------------------------------------------------------------
    def prenet_masks(self, batch: int, steps: int, dtype=None) -> tuple:
        """A fresh pair of pre-net dropout masks (batch, steps, prenet_units) (None when the
        rate is 0), drawn from :func:`lamina.backend.rng`."""
        if self.prenet_dropout == 0:
            return None, None
        dtype = backend.get_default_dtype() if dtype is None else dtype
        shape = (batch, steps, self.prenet_units)
        return dropout_mask(shape, self.prenet_dropout, dtype), dropout_mask(shape, self.prenet_dropout, dtype)

    def initial_state(self, memory: Tensor, mask) -> dict:
        """The decoder's state before its first step: zero LSTM states, context, attention."""
        n, steps, width = memory.shape
        zeros = backend.xp.zeros
        return {"attention_h": None, "attention_c": None, "decoder_h": None, "decoder_c": None,
                "context": tensor(zeros((n, width), dtype=memory.dtype)),
                "cumulative": tensor(zeros((n, steps), dtype=memory.dtype)),
                "memory": memory, "mask": mask, "processed_memory": self.attention.process_memory(memory)}

    def decode_step(self, frame, state: dict, masks=(None, None)) -> tuple[Tensor, Tensor, Tensor, dict]:
        """One decoder step from the previous frame (batch, n_mels) and ``state`` (from
        :meth:`initial_state` or the previous step); ``masks``: this step's two pre-net dropout
        masks (batch, prenet_units), or None each for none. Returns (frames (batch, r, n_mels),
        stop logits (batch, r), attention weights (batch, tokens), the new state)."""
        x = as_tensor(frame)
        for layer, keep in zip(self.prenet, masks):
            x = layer(x)
            if keep is not None:
                x = F.mul(x, keep)
        n = x.shape[0]
        attention_state = None if state["attention_h"] is None else (state["attention_h"], state["attention_c"])
        attention_h, attention_c = self.attention_rnn(F.concat([x, state["context"]], axis=-1), attention_state)
        context, weights = self.attention(attention_h, state["memory"], state["cumulative"], mask=state["mask"],
                                          processed_memory=state["processed_memory"])
        decoder_state = None if state["decoder_h"] is None else (state["decoder_h"], state["decoder_c"])
        decoder_h, decoder_c = self.decoder_rnn(F.concat([attention_h, context], axis=-1), decoder_state)
        features = F.concat([decoder_h, context], axis=-1)
        frames = F.reshape(self.frame_projection(features), (n, self.frames_per_step, self.n_mels))
        stop = self.stop_projection(features)
        new_state = {**state, "attention_h": attention_h, "attention_c": attention_c, "decoder_h": decoder_h,
                     "decoder_c": decoder_c, "context": context, "cumulative": F.add(state["cumulative"], weights)}
        return frames, stop, weights, new_state

    def forward(self, text_ids, mels, prenet_masks=None, mel_lengths=None) -> dict:
        memory, mask = self.encode(text_ids)
        mels = as_tensor(mels)
        n, frames, r = memory.shape[0], mels.shape[1], self.frames_per_step
        if mels.ndim != 3 or mels.shape[0] != n or mels.shape[2] != self.n_mels or frames % r:
            raise ShapeError(f"Tacotron2: mels must be (batch, frames, n_mels) = ({n}, frames, {self.n_mels}) with "
                             f"frames a multiple of frames_per_step={r}, got {tuple(mels.shape)}")
        steps = frames // r
        if prenet_masks is None:
            prenet_masks = self.prenet_masks(n, steps, dtype=memory.dtype)
        state = self.initial_state(memory, mask)
        previous = tensor(backend.xp.zeros((n, self.n_mels), dtype=memory.dtype))
        outputs, stops, alignments = [], [], []
        for i in range(steps):
            masks = tuple(None if m is None else _raw(m)[:, i] for m in prenet_masks)
            step_frames, stop, weights, state = self.decode_step(previous, state, masks)
            outputs.append(step_frames)
            stops.append(stop)
            alignments.append(weights)
            previous = F.getitem(mels, (slice(None), (i + 1) * r - 1))
        mel = F.reshape(F.stack(outputs, axis=1), (n, frames, self.n_mels))
        frame_mask = None if mel_lengths is None else np.arange(frames)[None, :] < np.asarray(mel_lengths)[:, None]
        return {"mel": mel, "mel_postnet": self.postnet(mel, frame_mask),
                "stop_logits": F.reshape(F.stack(stops, axis=1), (n, frames)),
                "alignments": F.stack(alignments, axis=1)}

    def generate(self, text_ids, max_steps: int = 1000, stop_threshold: float = 0.5) -> dict:
        """Autoregressive synthesis without the graph, in evaluation mode (the pre-net's dropout
        stays on): each row runs until sigmoid(stop logit) of one of its frames passes
        ``stop_threshold`` (that frame is its last) or for ``max_steps`` decoder steps. Returns
        'mel_postnet' and 'mel' (batch, frames, n_mels) numpy arrays, 0 after each row's end,
        'lengths' (batch,) and 'alignments' (batch, steps, tokens)."""
        max_steps = positive_int(max_steps, "Tacotron2.generate: max_steps")
        if not 0 < stop_threshold < 1:
            raise ValueError(f"Tacotron2.generate: stop_threshold must lie in (0, 1), got {stop_threshold}")
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                return self._generate(text_ids, max_steps, stop_threshold)
        finally:
            self.train(was_training)

    def _generate(self, text_ids, max_steps: int, stop_threshold: float) -> dict:
        memory, mask = self.encode(text_ids)
        n, r = memory.shape[0], self.frames_per_step
        state = self.initial_state(memory, mask)
        previous = tensor(backend.xp.zeros((n, self.n_mels), dtype=memory.dtype))
        lengths = np.full(n, max_steps * r)
        done = np.zeros(n, dtype=bool)
        outputs, alignments = [], []
        for i in range(max_steps):
            masks = tuple(None if m is None else m[:, 0] for m in self.prenet_masks(n, 1, dtype=memory.dtype))
            step_frames, stop, weights, state = self.decode_step(previous, state, masks)
            outputs.append(step_frames.numpy())
            alignments.append(weights.numpy())
            stopping = 1.0 / (1.0 + np.exp(-stop.numpy().astype(np.float64))) > stop_threshold
            ends = ~done & stopping.any(axis=1)
            lengths[ends] = i * r + stopping[ends].argmax(axis=1) + 1
            done |= ends
            if done.all():
                break
            previous = F.getitem(step_frames, (slice(None), r - 1))
        frames = len(outputs) * r
        valid = np.arange(frames)[None, :] < lengths[:, None]
        mel = np.concatenate(outputs, axis=1) * valid[..., None]
        with no_grad():
            mel_postnet = self.postnet(tensor(backend.xp.asarray(mel)), valid).numpy() * valid[..., None]
        return {"mel": mel, "mel_postnet": mel_postnet, "lengths": lengths, "alignments": np.stack(alignments, 1)}


def tacotron2_loss(output: dict, mels, mel_lengths=None) -> dict:
    """Tacotron 2's training loss from a teacher-forced ``output`` of :class:`Tacotron2`:
    'mel' and 'postnet' = mean squared errors of 'mel' and 'mel_postnet' over the real frames
    (the first ``mel_lengths[i]`` of row i; all frames when None), 'stop' = mean binary cross
    entropy of the stop logits against 1 from each row's last real frame on (padding included)
    and 0 before it; 'loss' is their sum."""
    mel_out = output["mel"]
    target = _raw(mels)
    n, frames = mel_out.shape[0], mel_out.shape[1]
    if target.shape != tuple(mel_out.shape):
        raise ShapeError(f"tacotron2_loss: mels of shape {target.shape} must match the output {tuple(mel_out.shape)}")
    lengths = np.full(n, frames) if mel_lengths is None else np.asarray(mel_lengths)
    if lengths.shape != (n,) or (lengths < 1).any() or (lengths > frames).any():
        raise ValueError(f"tacotron2_loss: mel_lengths must be (batch,) = ({n},) values in [1, {frames}], "
                         f"got {lengths.tolist()}")
    frame_index = np.arange(frames)[None, :]
    valid = frame_index < lengths[:, None]
    target = backend.xp.asarray(target, dtype=mel_out.dtype)
    count = float(valid.sum() * mel_out.shape[2])
    losses = {}
    for key, prediction in (("mel", mel_out), ("postnet", output["mel_postnet"])):
        diff = _masked(F.sub(prediction, target), valid)
        losses[key] = F.div(F.sum(F.mul(diff, diff)), count)
    stop_target = backend.xp.asarray(frame_index >= lengths[:, None] - 1, dtype=mel_out.dtype)
    losses["stop"] = F.binary_cross_entropy_with_logits(output["stop_logits"], stop_target)
    return {"loss": F.add(F.add(losses["mel"], losses["postnet"]), losses["stop"]), **losses}
