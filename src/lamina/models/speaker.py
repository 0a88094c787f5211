"""Speaker embeddings from acoustic features: the x-vector network and its pooling layers.

Inputs are feature sequences in lamina's 1-D layout, (batch, frames, features) (NWC): an
MFCC or log-mel spectrogram (batch, n_mfcc, frames) from :mod:`lamina.nn.audio` becomes one
with ``.transpose(0, 2, 1)``. ``lengths`` (batch,) give the valid frames of padded batches;
the poolings leave the padded frames out.

* :class:`StatisticsPooling`: the mean and standard deviation of every channel over the
  valid frames, concatenated: (B, T, C) -> (B, 2C).
* :class:`AttentiveStatisticsPooling` (Okabe, Koshinaka and Shinoda 2018, in the channel- and
  context-dependent form of ECAPA-TDNN): frame weights alpha_tc = softmax_t(v_c^T
  tanh(W [h_t; mu; sigma] + b) + k_c), one attention per channel, then the weighted mean
  mu~_c = sum_t alpha_tc h_tc and std sigma~_c = sqrt(sum_t alpha_tc h_tc^2 - mu~_c^2).
* :class:`XVector` (Snyder, Garcia-Romero, Sell, Povey and Khudanpur 2018): five TDNN layers,
  dilated 1-D convolutions over frame contexts [t-2, t+2], {t-2, t, t+2}, {t-3, t, t+3}, {t},
  {t} (kernel 5 / 3 / 3 / 1 / 1, dilation 1 / 2 / 3 / 1 / 1, no padding: the output has 14
  frames fewer than the input), each convolution -> ReLU -> batch norm; statistics pooling;
  two embedding layers (segment6, segment7). The x-vector is segment6's affine output.
"""

from __future__ import annotations

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["AttentiveStatisticsPooling", "StatisticsPooling", "TDNNBlock", "XVector", "frame_mask",
           "masked_statistics"]

_NWC = "(batch, frames, channels)"


def _sequence(x, who: str) -> Tensor:
    x = as_tensor(x)
    if x.ndim != 3:
        raise ShapeError(f"{who}: expected features {_NWC}, got shape {tuple(x.shape)}")
    return x


def frame_mask(lengths, batch: int, frames: int, who: str = "frame_mask") -> np.ndarray:
    """A (batch, frames) bool mask, True on the first ``lengths[b]`` frames of each row;
    all True when ``lengths`` is None."""
    if lengths is None:
        return np.ones((batch, frames), dtype=bool)
    lengths = np.asarray(backend.to_numpy(lengths.data if isinstance(lengths, Tensor) else lengths))
    if lengths.shape != (batch,) or lengths.dtype.kind not in "iu":
        raise ShapeError(f"{who}: lengths must be {batch} integer frame counts, one per sequence, got shape "
                         f"{lengths.shape} and dtype {lengths.dtype}")
    if lengths.size and (lengths.min() < 1 or lengths.max() > frames):
        raise ValueError(f"{who}: lengths must lie in [1, {frames}] (the {frames} frames of the input), got "
                         f"lengths in [{int(lengths.min())}, {int(lengths.max())}]")
    return np.arange(frames)[None, :] < lengths[:, None]


def _mask(x: Tensor, lengths, mask, who: str) -> np.ndarray:
    """The (B, T) frame mask from ``lengths`` or ``mask`` (at most one of them)."""
    batch, frames = x.shape[0], x.shape[1]
    if mask is None:
        return frame_mask(lengths, batch, frames, who)
    if lengths is not None:
        raise ValueError(f"{who}: give lengths or mask, not both")
    mask = np.asarray(backend.to_numpy(mask.data if isinstance(mask, Tensor) else mask))
    if mask.shape != (batch, frames):
        raise ShapeError(f"{who}: mask must have shape ({batch}, {frames}) (batch, frames) for features of shape "
                         f"{tuple(x.shape)}, got shape {mask.shape}")
    mask = mask.astype(bool)
    if not mask.any(axis=1).all():
        raise ValueError(f"{who}: every sequence needs at least one valid frame in mask")
    return mask


def masked_statistics(x: Tensor, weights, eps: float = 1e-12) -> tuple[Tensor, Tensor]:
    """The weighted mean mu = sum_t w_t x_t and standard deviation sqrt(max(sum_t w_t (x_t - mu)^2,
    eps)) over the frames of x (B, T, C), for weights (B, T, 1) or (B, T, C) that sum to 1 over
    T: (B, C) each."""
    mean = (x * weights).sum(axis=1)
    centred = x - mean.expand_dims(1)
    variance = (centred * centred * weights).sum(axis=1)
    return mean, F.sqrt(F.clip(variance, eps, None))


def _uniform_weights(mask: np.ndarray, dtype) -> Tensor:
    weights = mask / mask.sum(axis=1, keepdims=True)
    return Tensor._wrap(backend.xp.asarray(weights[:, :, None], dtype=dtype))


@register_with_arguments
class StatisticsPooling(Module):
    """[mean; std] over the valid frames of every channel: (B, T, C) -> (B, 2C), the mean
    first. std = sqrt(max(var, eps)) with the biased variance (divided by the valid frames)."""

    def __init__(self, eps: float = 1e-12, name: str | None = None):
        super().__init__(name=name)
        self.eps = float(eps)

    def forward(self, x, lengths=None, mask=None) -> Tensor:
        x = _sequence(x, self._label())
        weights = _uniform_weights(_mask(x, lengths, mask, self._label()), x.dtype)
        mean, std = masked_statistics(x, weights, self.eps)
        return F.concat([mean, std], axis=-1)


@register_with_arguments
class TDNNBlock(Module):
    """Conv1D (``kernel_size`` taps, ``dilation``) -> ReLU -> BatchNorm, sub-layers ``conv`` and
    ``bn`` (SpeechBrain's TDNNBlock; Kaldi's TDNN layer). ``padding``: 'same' (zeros; frames kept)
    or 'valid' (dilation (kernel_size - 1) frames fewer)."""

    def __init__(self, filters: int, kernel_size: int = 1, dilation: int = 1, padding: str = "same",
                 name: str | None = None):
        super().__init__(name=name)
        self.filters = positive_int(filters, "TDNNBlock: filters")
        self.conv = nn.Conv1D(self.filters, kernel_size, dilation=dilation, padding=padding, name="conv")
        self.bn = nn.BatchNorm(name="bn")

    def forward(self, x) -> Tensor:
        return self.bn(F.relu(self.conv(x)))


@register_with_arguments
class AttentiveStatisticsPooling(Module):
    """Channel- and context-dependent attentive statistics pooling (ECAPA-TDNN's ASP),
    (B, T, C) -> (B, 2C) as [mu~; sigma~].

    With ``global_context`` the attention sees each frame beside the mean and std of the whole
    utterance, [h_t; mu; sigma] (3C features); a :class:`TDNNBlock` to ``attention_channels``
    (Conv1D 1 tap -> ReLU -> BatchNorm), tanh, a Conv1D (1 tap) back to C channels give the
    scores, softmax over the valid frames gives alpha_tc (see the module docstring).
    Sub-layers ``tdnn`` and ``conv`` (SpeechBrain's names)."""

    def __init__(self, channels: int, attention_channels: int = 128, global_context: bool = True,
                 eps: float = 1e-12, name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "AttentiveStatisticsPooling: channels")
        self.attention_channels = positive_int(attention_channels, "AttentiveStatisticsPooling: attention_channels")
        self.global_context = bool(global_context)
        self.eps = float(eps)
        self.tdnn = TDNNBlock(self.attention_channels, 1, name="tdnn")
        self.conv = nn.Conv1D(self.channels, 1, name="conv")

    def forward(self, x, lengths=None, mask=None) -> Tensor:
        x = _sequence(x, self._label())
        if x.shape[2] != self.channels:
            raise ShapeError(f"{self._label()}: expected {self.channels} channels (channels={self.channels}), got "
                             f"features of shape {tuple(x.shape)}")
        valid = _mask(x, lengths, mask, self._label())
        context = x
        if self.global_context:
            mean, std = masked_statistics(x, _uniform_weights(valid, x.dtype), self.eps)
            steps = (x.shape[0], x.shape[1], self.channels)
            context = F.concat([x, mean.expand_dims(1).broadcast_to(steps), std.expand_dims(1).broadcast_to(steps)],
                               axis=-1)
        scores = self.conv(F.tanh(self.tdnn(context)))
        scores = F.where(backend.xp.asarray(valid[:, :, None]), scores, float("-inf"))
        alpha = F.softmax(scores, axis=1)
        mean, std = masked_statistics(x, alpha, self.eps)
        return F.concat([mean, std], axis=-1)


@register_with_arguments
class XVector(Module):
    """The x-vector network (see the module docstring): features (B, T, F) with T >= 15 ->
    embeddings (B, ``embedding_dim``).

    ``tdnn_channels`` (512) for the first four frame layers, ``stats_channels`` (1500) for the
    fifth; sub-layers ``frame1`` .. ``frame5`` (:class:`TDNNBlock`), ``pooling``, ``segment6``,
    ``bn6``, ``segment7``. ``forward(x, lengths)`` returns segment6's affine output (the
    paper's x-vector, "embedding a"); ``layer='b'`` goes on through ReLU -> BatchNorm ->
    segment7 (embedding b). The layers are built on the first call: call the model once
    before handing ``parameters()`` to an optimizer."""

    CONTEXTS = ((5, 1), (3, 2), (3, 3), (1, 1), (1, 1))    # (kernel, dilation) per frame layer
    FRAMES_LOST = sum(d * (k - 1) for k, d in CONTEXTS)     # 14

    def __init__(self, tdnn_channels: int = 512, stats_channels: int = 1500, embedding_dim: int = 512,
                 name: str | None = None):
        super().__init__(name=name)
        self.tdnn_channels = positive_int(tdnn_channels, "XVector: tdnn_channels")
        self.stats_channels = positive_int(stats_channels, "XVector: stats_channels")
        self.embedding_dim = positive_int(embedding_dim, "XVector: embedding_dim")
        widths = (self.tdnn_channels,) * 4 + (self.stats_channels,)
        for i, ((kernel, dilation), width) in enumerate(zip(self.CONTEXTS, widths), start=1):
            setattr(self, f"frame{i}", TDNNBlock(width, kernel, dilation, padding="valid", name=f"frame{i}"))
        self.pooling = StatisticsPooling(name="pooling")
        self.segment6 = nn.Dense(self.embedding_dim, name="segment6")
        self.bn6 = nn.BatchNorm(name="bn6")
        self.segment7 = nn.Dense(self.embedding_dim, name="segment7")

    def frame_features(self, x) -> Tensor:
        """The fifth frame layer's output (B, T - 14, stats_channels)."""
        x = _sequence(x, self._label())
        if x.shape[1] <= self.FRAMES_LOST:
            raise ShapeError(f"{self._label()}: needs more than {self.FRAMES_LOST} frames (the TDNN layers' "
                             f"context), got features of shape {tuple(x.shape)}")
        for i in range(1, 6):
            x = getattr(self, f"frame{i}")(x)
        return x

    def forward(self, x, lengths=None, layer: str = "a") -> Tensor:
        if layer not in ("a", "b"):
            raise ValueError(f"{self._label()}: layer must be 'a' (segment6) or 'b' (segment7), got {layer!r}")
        x = _sequence(x, self._label())
        if lengths is not None:
            valid = frame_mask(lengths, x.shape[0], x.shape[1], self._label())
            if valid.sum(axis=1).min() <= self.FRAMES_LOST:
                raise ValueError(f"{self._label()}: every length must exceed {self.FRAMES_LOST} frames, got "
                                 f"lengths {np.asarray(lengths).tolist()}")
            lengths = valid.sum(axis=1) - self.FRAMES_LOST
        embedding = self.segment6(self.pooling(self.frame_features(x), lengths=lengths))
        if layer == "a":
            return embedding
        return self.segment7(self.bn6(F.relu(embedding)))
