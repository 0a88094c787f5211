"""FastSpeech 2 (Ren et al., "FastSpeech 2: Fast and High-Quality End-to-End Text to Speech",
2021): a non-autoregressive acoustic model turning token ids into mel frames.

Sequences are channels-last: hidden states (batch, tokens, hidden), mels (batch, frames, n_mels).
With token mask m (True on real tokens, ``tokens != padding_idx``):

    h = Encoder(Embedding(tokens) + PE)                      N FFT blocks over the tokens
    log d^ = DurationPredictor(h)                            predicts log(d + 1) per token
    H = LengthRegulator(h, d)                                token i repeated d_i times
    p^ = PitchPredictor(H);   H = H + PitchEmbedding(bucket(p))
    e^ = EnergyPredictor(H);  H = H + EnergyEmbedding(bucket(e))
    mel = Linear(Decoder(H + PE))                            N FFT blocks over the frames
    mel_post = mel + PostNet(mel)                            (optional)

d, p and e are the ground-truth durations, frame-level pitch and energy in training and the
predicted ones at inference (d = round((exp(log d^) - 1) * duration_control), at least 0 and at
least one frame per utterance). ``bucket`` puts a value into one of ``n_bins`` bins with
``n_bins - 1`` evenly spaced boundaries over ``pitch_range`` (``energy_range``).

FFT block (post-norm, as the paper): y = LN(x + Dropout(MHSA(x))); z = LN(y + Dropout(
Conv_k2(ReLU(Conv_k1(y))))). Variance predictor: [Conv_k -> ReLU -> LN -> Dropout] x 2 ->
Linear(1). Every block zeroes the padded positions of its input and output, and attention
hides them as keys, so the valid outputs of a padded batch equal those of each item alone.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn.containers import ModuleList
from lamina.nn.conv1d import Conv1D
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.embedding import Embedding
from lamina.nn.layer import dropout_rate as checked_rate
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.nn.normalization import BatchNorm
from lamina.nn.sample_norm import LayerNorm
from lamina.nn.transformer import sinusoidal_encoding

__all__ = [
    "FFTBlock", "FastSpeech2", "LengthRegulator", "PostNet", "VarianceAdaptor", "VariancePredictor",
    "fastspeech2_loss", "frame_energy",
]


def _raw(x) -> np.ndarray:
    return backend.to_numpy(x.data) if isinstance(x, Tensor) else np.asarray(x)


def _odd_kernel(kernel_size: int, who: str) -> int:
    kernel_size = positive_int(kernel_size, f"{who}: kernel_size")
    if kernel_size % 2 == 0:
        raise ValueError(f"{who}: kernel sizes must be odd for 'same' padding, got {kernel_size}")
    return kernel_size


def _masked(x: Tensor, mask) -> Tensor:
    """x (batch, steps, ...) with the steps where ``mask`` (batch, steps) is False set to 0."""
    if mask is None:
        return x
    keep = backend.xp.asarray(np.asarray(mask).reshape(mask.shape + (1,) * (x.ndim - 2)), dtype=x.dtype)
    return F.mul(x, keep)


def _same_conv(filters: int, kernel_size: int) -> Conv1D:
    return Conv1D(filters, kernel_size, padding=(kernel_size - 1) // 2, kernel_init="lecun_uniform")


@register_layer
class FFTBlock(Module):
    """One feed-forward Transformer block (module docstring): ``block(x, mask)`` with x
    (batch, steps, hidden) and ``mask`` (batch, steps), True on real steps, or None."""

    def __init__(self, hidden: int, num_heads: int, filter_size: int, kernel_sizes=(9, 1), dropout: float = 0.1,
                 name: str | None = None):
        super().__init__(name=name)
        hidden = positive_int(hidden, "FFTBlock: hidden")
        heads = positive_int(num_heads, "FFTBlock: num_heads")
        if hidden % heads:
            raise ValueError(f"FFTBlock: num_heads={heads} must divide hidden={hidden}")
        k1, k2 = (_odd_kernel(k, "FFTBlock") for k in kernel_sizes)
        self.config = {"hidden": hidden, "num_heads": heads,
                       "filter_size": positive_int(filter_size, "FFTBlock: filter_size"), "kernel_sizes": [k1, k2],
                       "dropout": checked_rate(dropout, "FFTBlock")}
        self.attention = MultiHeadAttention(hidden, heads, dropout=dropout)
        self.attention_dropout = Dropout(dropout)
        self.attention_norm = LayerNorm(-1)
        self.conv1 = _same_conv(filter_size, k1)
        self.conv2 = _same_conv(hidden, k2)
        self.conv_dropout = Dropout(dropout)
        self.conv_norm = LayerNorm(-1)

    def forward(self, x, mask=None) -> Tensor:
        x = _masked(as_tensor(x), mask)
        keys = None
        if mask is not None:              # an all-padding row attends to all its (zero) steps, not to none
            mask = np.asarray(mask, dtype=bool)
            keys = mask | ~mask.any(axis=1, keepdims=True)
        y = self.attention_norm(F.add(x, self.attention_dropout(self.attention(x, key_mask=keys))))
        y = _masked(y, mask)
        z = self.conv2(F.relu(self.conv1(y)))
        return _masked(self.conv_norm(F.add(y, self.conv_dropout(z))), mask)

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}


@register_layer
class VariancePredictor(Module):
    """[Conv1D(k, 'same') -> ReLU -> LN -> Dropout] x 2 -> Linear(1): one scalar per step,
    (batch, steps, hidden) -> (batch, steps), 0 where ``mask`` (batch, steps) is False."""

    def __init__(self, filter_size: int, kernel_size: int = 3, dropout: float = 0.5, name: str | None = None):
        super().__init__(name=name)
        kernel_size = _odd_kernel(kernel_size, "VariancePredictor")
        self.config = {"filter_size": positive_int(filter_size, "VariancePredictor: filter_size"),
                       "kernel_size": kernel_size, "dropout": checked_rate(dropout, "VariancePredictor")}
        self.conv1, self.norm1 = _same_conv(filter_size, kernel_size), LayerNorm(-1)
        self.conv2, self.norm2 = _same_conv(filter_size, kernel_size), LayerNorm(-1)
        self.dropout = Dropout(dropout)
        self.linear = Dense(1, kernel_init="lecun_uniform")

    def forward(self, x, mask=None) -> Tensor:
        x = _masked(as_tensor(x), mask)
        x = _masked(self.dropout(self.norm1(F.relu(self.conv1(x)))), mask)
        x = self.dropout(self.norm2(F.relu(self.conv2(x))))
        return _masked(F.squeeze(self.linear(x), -1), mask)

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}


def check_durations(durations, tokens: int, who: str) -> np.ndarray:
    """``durations`` as a (batch, tokens) array of non-negative integers."""
    durations = _raw(durations)
    if durations.ndim != 2 or durations.shape[1] != tokens:
        raise ShapeError(f"{who}: durations must have shape (batch, {tokens}), got {durations.shape}")
    if durations.size and (np.any(durations < 0) or np.any(durations != np.round(durations))):
        raise ValueError(f"{who}: durations must be non-negative integers, got min {durations.min()}")
    return durations.astype(np.int64)


@register_layer
class LengthRegulator(Module):
    """Token states repeated by their durations: ``regulator(x, durations, max_frames=None)``
    with x (batch, tokens, hidden) and integer ``durations`` (batch, tokens) returns (y,
    frame_lengths), y (batch, frames, hidden) with frames = ``max_frames`` or the largest
    sum of durations; frame t of item b is x[b, i] for the token i whose span holds t, and 0
    past ``frame_lengths[b]`` = sum_i durations[b, i]. A gather: the gradient of x[b, i] is
    the sum of the gradients of its frames."""

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def forward(self, x, durations, max_frames: int | None = None) -> tuple[Tensor, np.ndarray]:
        x = as_tensor(x)
        if x.ndim != 3:
            raise ShapeError(f"LengthRegulator: x must be (batch, tokens, hidden), got shape {x.shape}")
        durations = check_durations(durations, x.shape[1], "LengthRegulator")
        lengths = durations.sum(axis=1)
        frames = int(lengths.max(initial=0)) if max_frames is None else int(max_frames)
        if lengths.max(initial=0) > frames:
            raise ValueError(f"LengthRegulator: max_frames={frames} is shorter than the longest expansion "
                             f"{int(lengths.max())}")
        index = np.zeros((x.shape[0], frames), dtype=np.int64)
        for b, row in enumerate(durations):
            index[b, :lengths[b]] = np.repeat(np.arange(x.shape[1]), row)
        index = np.broadcast_to(index[:, :, None], (x.shape[0], frames, x.shape[2]))
        mask = np.arange(frames)[None, :] < lengths[:, None]
        return _masked(F.gather(x, 1, backend.xp.asarray(index)), mask), lengths

    def get_config(self) -> dict:
        return {"name": self.name}


def _bucketize(values, boundaries: np.ndarray) -> np.ndarray:
    return np.searchsorted(boundaries, _raw(values), side="left")


@register_layer
class VarianceAdaptor(Module):
    """Duration, pitch and energy predictors and the length regulator (module docstring).

    ``adaptor(x, token_mask, durations=None, pitch=None, energy=None, duration_control=1.0,
    pitch_control=1.0, energy_control=1.0, max_frames=None)`` returns a dict: 'hidden'
    (batch, frames, hidden), 'log_duration' (batch, tokens), 'pitch' and 'energy' (batch,
    frames, the predictions), 'durations' (the ones used), 'frame_lengths', 'frame_mask'.
    Targets given are used (teacher forcing); missing ones are predicted, the predicted
    pitch and energy scaled by their controls. The bucket embeddings take no gradient
    through the values bucketed."""

    def __init__(self, hidden: int, filter_size: int = 256, kernel_size: int = 3, dropout: float = 0.5,
                 n_bins: int = 256, pitch_range=(-3.0, 3.0), energy_range=(-3.0, 3.0), name: str | None = None):
        super().__init__(name=name)
        hidden = positive_int(hidden, "VarianceAdaptor: hidden")
        n_bins = positive_int(n_bins, "VarianceAdaptor: n_bins")
        ranges = [tuple(float(v) for v in r) for r in (pitch_range, energy_range)]
        if any(len(r) != 2 or not r[0] < r[1] for r in ranges):
            raise ValueError(f"VarianceAdaptor: pitch_range and energy_range must be (low, high) with low < high, "
                             f"got {pitch_range} and {energy_range}")
        self.config = {"hidden": hidden, "filter_size": filter_size, "kernel_size": kernel_size,
                       "dropout": dropout, "n_bins": n_bins, "pitch_range": list(ranges[0]),
                       "energy_range": list(ranges[1])}
        self.duration_predictor = VariancePredictor(filter_size, kernel_size, dropout)
        self.pitch_predictor = VariancePredictor(filter_size, kernel_size, dropout)
        self.energy_predictor = VariancePredictor(filter_size, kernel_size, dropout)
        self.length_regulator = LengthRegulator()
        self.pitch_embedding = Embedding(n_bins, hidden)
        self.energy_embedding = Embedding(n_bins, hidden)
        self.pitch_boundaries = np.linspace(*ranges[0], n_bins - 1)
        self.energy_boundaries = np.linspace(*ranges[1], n_bins - 1)

    def predicted_durations(self, log_duration: Tensor, token_mask, duration_control: float = 1.0) -> np.ndarray:
        """round((exp(log d^) - 1) * duration_control), at least 0, 0 on padded tokens, and at
        least one frame per utterance (given to its first token)."""
        durations = np.round((np.exp(_raw(log_duration).astype(np.float64)) - 1.0) * float(duration_control))
        durations = np.where(np.asarray(token_mask), np.maximum(durations, 0), 0).astype(np.int64)
        durations[durations.sum(axis=1) == 0, 0] = 1
        return durations

    def forward(self, x, token_mask, durations=None, pitch=None, energy=None, duration_control: float = 1.0,
                pitch_control: float = 1.0, energy_control: float = 1.0, max_frames: int | None = None) -> dict:
        x = as_tensor(x)
        token_mask = np.asarray(token_mask, dtype=bool)
        log_duration = self.duration_predictor(x, token_mask)
        if durations is None:
            durations = self.predicted_durations(log_duration, token_mask, duration_control)
        hidden, lengths = self.length_regulator(x, durations, max_frames)
        frame_mask = np.arange(hidden.shape[1])[None, :] < lengths[:, None]
        outputs = {"log_duration": log_duration, "durations": check_durations(durations, x.shape[1], "VarianceAdaptor"),
                   "frame_lengths": lengths, "frame_mask": frame_mask}
        for kind, target, control in (("pitch", pitch, pitch_control), ("energy", energy, energy_control)):
            prediction = getattr(self, f"{kind}_predictor")(hidden, frame_mask)
            values = _raw(prediction) * control if target is None else _raw(target)
            if values.shape != frame_mask.shape:
                raise ShapeError(f"VarianceAdaptor: {kind} must have shape {frame_mask.shape} (batch, frames), "
                                 f"got {values.shape}")
            bins = _bucketize(values, getattr(self, f"{kind}_boundaries"))
            hidden = F.add(hidden, _masked(getattr(self, f"{kind}_embedding")(bins), frame_mask))
            outputs[kind] = prediction
        outputs["hidden"] = hidden
        return outputs

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}


@register_layer
class PostNet(Module):
    """Tacotron 2's residual post-net: ``layers`` 'same' 1-D convolutions with batch norm,
    tanh after all but the last, dropout after each; returns mel + that stack(mel), 0 on
    frames where ``mask`` is False."""

    def __init__(self, n_mels: int, channels: int = 512, kernel_size: int = 5, layers: int = 5,
                 dropout: float = 0.5, name: str | None = None):
        super().__init__(name=name)
        n_mels = positive_int(n_mels, "PostNet: n_mels")
        kernel_size = _odd_kernel(kernel_size, "PostNet")
        layers = positive_int(layers, "PostNet: layers")
        if layers < 2:
            raise ValueError(f"PostNet: layers must be at least 2, got {layers}")
        self.config = {"n_mels": n_mels, "channels": positive_int(channels, "PostNet: channels"),
                       "kernel_size": kernel_size, "layers": layers, "dropout": checked_rate(dropout, "PostNet")}
        widths = [channels] * (layers - 1) + [n_mels]
        self.convs = ModuleList([_same_conv(width, kernel_size) for width in widths])
        self.norms = ModuleList([BatchNorm() for _ in widths])
        self.dropout = Dropout(dropout)

    def forward(self, mel, mask=None) -> Tensor:
        mel = _masked(as_tensor(mel), mask)
        x = mel
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = norm(conv(x))
            x = self.dropout(F.tanh(x) if i < len(self.convs) - 1 else x)
            x = _masked(x, mask)
        return F.add(mel, x)

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}


@register_layer
class FastSpeech2(Module):
    """FastSpeech 2 (module docstring).

    ``model(tokens, durations=None, pitch=None, energy=None, duration_control=1.0,
    max_frames=None)`` with integer ``tokens`` (batch, tokens), ``padding_idx`` marking the
    padding, returns a dict: 'mel' (batch, frames, n_mels), 'mel_postnet' (the same tensor
    without a post-net), 'log_duration' (batch, tokens), 'pitch' and 'energy' (batch, frames),
    'durations', 'frame_lengths', 'token_mask', 'frame_mask'. Give ground-truth durations,
    pitch and energy to train; :meth:`synthesize` predicts them (an utterance of padding alone
    then gets one frame).
    """

    def __init__(self, vocab_size: int, n_mels: int = 80, hidden: int = 256, num_heads: int = 2,
                 encoder_layers: int = 4, decoder_layers: int = 4, filter_size: int = 1024, kernel_sizes=(9, 1),
                 dropout: float = 0.2, predictor_filter_size: int = 256, predictor_kernel_size: int = 3,
                 predictor_dropout: float = 0.5, n_bins: int = 256, pitch_range=(-3.0, 3.0),
                 energy_range=(-3.0, 3.0), postnet_layers: int = 0, postnet_channels: int = 512,
                 postnet_kernel_size: int = 5, padding_idx: int = 0, name: str | None = None):
        super().__init__(name=name)
        self.config = {
            "vocab_size": positive_int(vocab_size, "FastSpeech2: vocab_size"),
            "n_mels": positive_int(n_mels, "FastSpeech2: n_mels"),
            "hidden": positive_int(hidden, "FastSpeech2: hidden"),
            "num_heads": num_heads, "encoder_layers": positive_int(encoder_layers, "FastSpeech2: encoder_layers"),
            "decoder_layers": positive_int(decoder_layers, "FastSpeech2: decoder_layers"), "filter_size": filter_size,
            "kernel_sizes": list(kernel_sizes), "dropout": dropout, "predictor_filter_size": predictor_filter_size,
            "predictor_kernel_size": predictor_kernel_size, "predictor_dropout": predictor_dropout, "n_bins": n_bins,
            "pitch_range": list(pitch_range), "energy_range": list(energy_range), "postnet_layers": int(postnet_layers),
            "postnet_channels": postnet_channels, "postnet_kernel_size": postnet_kernel_size,
            "padding_idx": int(padding_idx)}
        if not 0 <= padding_idx < vocab_size:
            raise ValueError(f"FastSpeech2: padding_idx must lie in [0, {vocab_size}), got {padding_idx}")
        self.embedding = Embedding(vocab_size, hidden, padding_idx=padding_idx)
        self.encoder = ModuleList([FFTBlock(hidden, num_heads, filter_size, kernel_sizes, dropout)
                                   for _ in range(encoder_layers)])
        self.variance_adaptor = VarianceAdaptor(hidden, predictor_filter_size, predictor_kernel_size,
                                                predictor_dropout, n_bins, pitch_range, energy_range)
        self.decoder = ModuleList([FFTBlock(hidden, num_heads, filter_size, kernel_sizes, dropout)
                                   for _ in range(decoder_layers)])
        self.mel_linear = Dense(n_mels, kernel_init="lecun_uniform")
        self.postnet = (PostNet(n_mels, postnet_channels, postnet_kernel_size, postnet_layers, dropout)
                        if postnet_layers else None)

    def _with_positions(self, x: Tensor) -> Tensor:
        table = sinusoidal_encoding(x.shape[1], x.shape[2], dtype=x.dtype)
        return F.add(x, table[None])

    def forward(self, tokens, durations=None, pitch=None, energy=None, duration_control: float = 1.0,
                max_frames: int | None = None) -> dict:
        tokens = _raw(tokens)
        if tokens.ndim != 2 or tokens.dtype.kind not in "iu":
            raise ShapeError(f"FastSpeech2: tokens must be a (batch, tokens) integer array, got shape {tokens.shape} "
                             f"and dtype {tokens.dtype}")
        token_mask = tokens != self.config["padding_idx"]
        x = _masked(self._with_positions(self.embedding(tokens)), token_mask)
        for block in self.encoder:
            x = block(x, token_mask)
        adapted = self.variance_adaptor(x, token_mask, durations, pitch, energy, duration_control,
                                        max_frames=max_frames)
        frame_mask = adapted["frame_mask"]
        y = _masked(self._with_positions(adapted.pop("hidden")), frame_mask)
        for block in self.decoder:
            y = block(y, frame_mask)
        mel = _masked(self.mel_linear(y), frame_mask)
        mel_postnet = mel if self.postnet is None else self.postnet(mel, frame_mask)
        return {"mel": mel, "mel_postnet": mel_postnet, "token_mask": token_mask, **adapted}

    def synthesize(self, tokens, speed: float = 1.0) -> tuple[Tensor, np.ndarray]:
        """(mel, frame_lengths) from the tokens alone, in evaluation mode and without the
        graph: durations predicted and divided by ``speed`` (2.0 speaks twice as fast)."""
        if not speed > 0:
            raise ValueError(f"FastSpeech2.synthesize: speed must be positive, got {speed}")
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                out = self(tokens, duration_control=1.0 / speed)
        finally:
            self.train(was_training)
        return out["mel_postnet"], out["frame_lengths"]

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}


def _masked_mean(values: Tensor, mask) -> Tensor:
    mask = np.asarray(mask)
    count = max(int(mask.sum()) * int(np.prod(values.shape[mask.ndim:], dtype=np.int64)), 1)
    return F.div(F.sum(_masked(values, mask)), float(count))


def fastspeech2_loss(output: dict, mel, durations, pitch, energy) -> dict:
    """FastSpeech 2's training losses from a teacher-forced ``output`` of :class:`FastSpeech2`:
    'mel' = mean |mel^ - mel| over real frames (plus the same for the post-net output when
    there is one, as 'postnet'), 'duration' = mean (log d^ - log(d + 1))^2 over real tokens,
    'pitch' and 'energy' = mean squared errors over real frames; 'loss' is their sum."""
    mel_out = output["mel"]
    if tuple(_raw(mel).shape) != tuple(mel_out.shape):
        raise ShapeError(f"fastspeech2_loss: mel target of shape {_raw(mel).shape} must match the output "
                         f"{mel_out.shape}; pass max_frames=mel.shape[1] to the model")
    frame_mask, token_mask = output["frame_mask"], output["token_mask"]
    target = backend.xp.asarray(_raw(mel), dtype=mel_out.dtype)
    losses = {"mel": _masked_mean(F.abs(F.sub(mel_out, target)), frame_mask)}
    if output["mel_postnet"] is not mel_out:
        losses["postnet"] = _masked_mean(F.abs(F.sub(output["mel_postnet"], target)), frame_mask)
    log_d = np.log(_raw(durations).astype(np.float64) + 1.0)
    for key, value, mask in (("duration", log_d, token_mask), ("pitch", _raw(pitch), frame_mask),
                             ("energy", _raw(energy), frame_mask)):
        prediction = output["log_duration" if key == "duration" else key]
        diff = F.sub(prediction, backend.xp.asarray(value, dtype=prediction.dtype))
        losses[key] = _masked_mean(F.mul(diff, diff), mask)
    total = losses["mel"]
    for key in losses:
        if key != "mel":
            total = F.add(total, losses[key])
    return {"loss": total, **losses}


def frame_energy(wave, n_fft: int = 1024, hop_length: int = 256) -> np.ndarray:
    """Frame-level energy targets: the L2 norm over frequencies of each frame's STFT
    magnitude (Hann window, centred frames with reflection padding), (batch, samples) ->
    (batch, 1 + samples // hop_length)."""
    wave = _raw(wave).astype(np.float64)
    if wave.ndim != 2 or wave.shape[1] <= n_fft // 2:
        raise ShapeError(f"frame_energy: wave must be (batch, samples) with more than n_fft / 2 = {n_fft // 2} "
                         f"samples, got shape {wave.shape}")
    padded = np.pad(wave, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    frames = 1 + wave.shape[1] // hop_length
    starts = np.arange(frames) * hop_length
    windows = padded[:, starts[:, None] + np.arange(n_fft)] * np.hanning(n_fft + 1)[:-1]
    return np.sqrt((np.abs(np.fft.rfft(windows, axis=-1)) ** 2).sum(axis=-1))
