"""CRNN, the convolutional recurrent network for text recognition (Shi, Bai and Yao 2015, "An
End-to-End Trainable Neural Network for Image-based Sequence Recognition").

A text line x (N, H, W, C), NHWC, goes through

    features   a VGG-style stack: blocks of 3x3 'same' convolution (+ batch norm) + ReLU, some
               followed by a max pooling; 2x2 poolings halve height and width, 2x1 ones the height
               only, so the width keeps enough columns for the characters (the reference's
               (64, 2x2), (128, 2x2), 256, (256, 2x1), 512, (512, 2x1) gives W / 4 columns);
               then a convolution whose kernel spans the remaining height h_r, (h_r, 1) 'valid',
               which collapses the height to 1;
    sequence   map-to-sequence: column t of the (N, 1, T, F) map is the feature vector of frame t,
               (N, T, F), read by two stacked bidirectional LSTMs;
    classes    a per-frame Dense layer scores the K characters and the CTC blank, (N, T, K + 1).

Training minimises the CTC loss of log_softmax of the scores (:meth:`CRNN.loss`); decoding is CTC's
greedy best path or prefix beam search (:meth:`CRNN.decode`). Lines of different widths are
padded on the right and come with their widths: the columns past a line's width are zeroed
before every convolution and the LSTMs read each line for its own frames, so (in evaluation
mode) a padded line scores as it does alone. In training the batch-norm statistics include the
padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.containers import ModuleList
from lamina.nn.conv import Conv2D
from lamina.nn.dense import Dense
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor
from lamina.nn.normalization import BatchNorm
from lamina.nn.pooling import MaxPool2D
from lamina.nn.recurrent import LSTM, Bidirectional
from lamina.text.ctc_decode import ctc_greedy_decode, ctc_prefix_beam_search
from lamina.vision.charset import CharsetMapper

__all__ = ["CRNN"]

REFERENCE_CHANNELS = (64, 128, 256, 256, 512, 512)
REFERENCE_POOLS = ((2, 2), (2, 2), None, (2, 1), None, (2, 1))


class _ConvBlock(Module):
    """3x3 'same' convolution, optional batch norm, ReLU, optional max pooling."""

    def __init__(self, filters: int, kernel_size=3, padding="same", batch_norm: bool = True, pool=None):
        super().__init__()
        self.conv = Conv2D(filters, kernel_size, padding=padding, use_bias=not batch_norm)
        self.norm = BatchNorm() if batch_norm else None
        self.pool = MaxPool2D(pool) if pool is not None else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        x = F.relu(x)
        return self.pool(x) if self.pool is not None else x


def _pool_pair(pool, who: str):
    if pool is None:
        return None
    pair = (pool, pool) if isinstance(pool, int) else tuple(pool)
    if len(pair) != 2 or any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1 for p in pair):
        raise ValueError(f"{who}: each pool must be None, a positive int or a pair (height, width) of them, "
                         f"got {pool!r}")
    return int(pair[0]), int(pair[1])


@register_with_arguments
class CRNN(Module):
    """The CRNN text recogniser (module docstring).

    ``num_classes``: the output size, the characters plus the blank (K + 1); ``charset``
    (a string or a :class:`lamina.vision.CharsetMapper`, optional) names the characters, so that
    :meth:`decode` returns strings and :meth:`loss` takes them; ``blank``: the blank's index when
    ``charset`` is a string. ``in_channels`` and ``height``: the lines' channels and height (every
    line has this height). ``channels`` and ``pools``: the convolution blocks' filters and their
    poolings (None, an int or (height, width)), the paper's by default; ``collapse_channels``: the
    height-collapsing convolution's filters (the last block's by default); ``hidden``: LSTM units
    per direction; ``batch_norm``: after every convolution."""

    def __init__(self, num_classes: int, in_channels: int = 1, height: int = 32, hidden: int = 256,
                 channels: Sequence[int] = REFERENCE_CHANNELS, pools: Sequence = REFERENCE_POOLS,
                 collapse_channels: int | None = None, batch_norm: bool = True,
                 charset: str | CharsetMapper | None = None, blank: int = 0, name: str | None = None):
        super().__init__(name=name)
        who = "CRNN"
        for what, value in (("num_classes", num_classes), ("in_channels", in_channels), ("height", height),
                            ("hidden", hidden)):
            positive_int(value, f"{who}: {what}")
        channels = [positive_int(c, f"{who}: channels") for c in channels]
        if not channels or len(pools) != len(channels):
            raise ValueError(f"{who}: need at least one block and one pool entry per block, got channels {channels} "
                             f"and pools {list(pools)}")
        pools = [_pool_pair(p, who) for p in pools]
        remaining = height
        for pool in pools:
            remaining = remaining // pool[0] if pool else remaining
        if remaining < 1:
            raise ValueError(f"{who}: the poolings {pools} halve a height of {height} below 1 pixel; use taller "
                             "lines or fewer vertical poolings")
        self.charset = self._charset(charset, blank, num_classes)
        self.blank = self.charset.blank if self.charset is not None else int(blank)
        if not 0 <= self.blank < num_classes:
            raise ValueError(f"{who}: blank must lie in [0, {num_classes}), got {blank!r}")
        self.num_classes, self.in_channels, self.height = num_classes, in_channels, height
        self.pools = pools
        collapse = channels[-1] if collapse_channels is None else positive_int(collapse_channels,
                                                                               f"{who}: collapse_channels")
        self.blocks = ModuleList([_ConvBlock(c, batch_norm=batch_norm, pool=p) for c, p in zip(channels, pools)])
        self.collapse = _ConvBlock(collapse, kernel_size=(remaining, 1), padding="valid", batch_norm=batch_norm)
        self.rnn = ModuleList([Bidirectional(LSTM(hidden, return_sequences=True)) for _ in range(2)])
        self.classifier = Dense(num_classes)
        self._build(in_channels, height, channels, collapse, hidden)

    @staticmethod
    def _charset(charset, blank: int, num_classes: int) -> CharsetMapper | None:
        if charset is None:
            return None
        mapper = charset if isinstance(charset, CharsetMapper) else CharsetMapper(charset, blank)
        if mapper.num_classes != num_classes:
            raise ValueError(f"CRNN: a charset of {len(mapper)} characters needs num_classes = {mapper.num_classes} "
                             f"(the characters and the blank), got {num_classes}")
        return mapper

    def _build(self, in_channels: int, height: int, channels, collapse: int, hidden: int) -> None:
        """Every weight now, so that ``parameters()`` is complete before the first call."""
        shape = (None, height, None, in_channels)
        for block in (*self.blocks, self.collapse):
            block.conv.build(shape)
            block.conv.built, block.conv.build_input_shape = True, shape
            if block.norm is not None:
                block.norm.build(shape[:3] + (block.conv.filters,))
                block.norm.built = True
            if block.pool is not None:
                shape = (None, shape[1] // block.pool.pool_size[0], None, block.conv.filters)
            else:
                shape = (None, shape[1], None, block.conv.filters)
            block.built = True
        features = collapse
        for layer in self.rnn:
            layer.build((None, None, features))
            layer.built = True
            features = 2 * hidden
        self.classifier.build((None, None, features))
        self.classifier.built = True
        self.built = True

    def output_lengths(self, widths) -> np.ndarray:
        """The frames T_n of lines of widths W_n: each pooling floors W / its width factor."""
        frames = np.asarray(widths, dtype=np.int64).copy()
        for pool in self.pools:
            if pool is not None:
                frames //= pool[1]
        return frames

    def _checked(self, images, widths) -> tuple[Tensor, np.ndarray]:
        x = as_tensor(images)
        if x.ndim != 4 or x.shape[1] != self.height or x.shape[3] != self.in_channels:
            raise ShapeError(f"CRNN: expected NHWC lines (batch, height={self.height}, width, "
                             f"channels={self.in_channels}), got shape {tuple(x.shape)}")
        if widths is None:
            widths = np.full(x.shape[0], x.shape[2], dtype=np.int64)
        widths = np.asarray(widths)
        if widths.shape != (x.shape[0],) or widths.dtype.kind not in "iu":
            raise ShapeError(f"CRNN: widths must be integers (batch,) = ({x.shape[0]},), got shape {widths.shape} "
                             f"and dtype {widths.dtype}")
        frames = self.output_lengths(widths)
        if int(widths.max()) > x.shape[2] or int(frames.min()) < 1:
            n = int(np.argmax((widths > x.shape[2]) | (frames < 1)))
            raise ValueError(f"CRNN: line {n} has width {int(widths[n])}, which must be at most the batch's width "
                             f"{x.shape[2]} and give at least one frame (it gives {int(frames[n])})")
        return x, widths.astype(np.int64)

    def forward(self, images, widths=None) -> Tensor:
        """Per-frame class scores (N, T, num_classes) of lines (N, height, W, in_channels),
        ``widths`` (N,) the lines' own widths (default: all W); frame counts by
        :meth:`output_lengths`."""
        x, widths = self._checked(images, widths)
        padded = bool((widths < x.shape[2]).any())
        valid = widths
        for block in self.blocks:
            if padded:
                x = x * (np.arange(x.shape[2])[None, None, :, None] < valid[:, None, None, None]).astype(x.dtype)
            x = block(x)
            if block.pool is not None:
                valid = valid // block.pool.pool_size[1]
        x = self.collapse(x)                                    # (N, 1, T, F)
        x = F.reshape(x, (x.shape[0], x.shape[2], x.shape[3]))  # map-to-sequence: (N, T, F)
        lengths = valid if padded else None
        for layer in self.rnn:
            x = layer(x, lengths=lengths)
        return self.classifier(x)

    def loss(self, images, targets, target_lengths=None, widths=None, reduction: str = "mean") -> Tensor:
        """The CTC loss of the lines against their ``targets``: strings (with a charset), or label
        ids, padded (N, S) with ``target_lengths`` (N,) or concatenated; ``reduction`` as
        :func:`lamina.functional.ctc_loss` ('mean' divides each loss by its target length)."""
        if target_lengths is None:
            if self.charset is None or isinstance(targets, np.ndarray):
                raise ValueError("CRNN.loss: give target_lengths with label ids, or strings with a charset")
            targets, target_lengths = self.charset.encode(targets)
        target_lengths = np.asarray(target_lengths, dtype=np.int64)
        x, widths = self._checked(images, widths)
        scores = self(x, widths)
        frames = self.output_lengths(widths)
        if target_lengths.shape != frames.shape:
            raise ShapeError(f"CRNN.loss: target_lengths must have shape ({frames.shape[0]},), one per line, got "
                             f"{target_lengths.shape}")
        short = target_lengths > frames
        if short.any():
            n = int(np.argmax(short))
            raise ValueError(f"CRNN.loss: line {n} gives {int(frames[n])} frames but its target has "
                             f"{int(target_lengths[n])} labels; CTC needs at least one frame per label (wider lines "
                             "or fewer width poolings)")
        return F.ctc_loss(F.log_softmax(scores, axis=-1), targets, frames, target_lengths, blank=self.blank,
                          reduction=reduction)

    def decode(self, images, widths=None, method: str = "greedy", beam_width: int = 8) -> list:
        """The text of each line: strings with a charset, lists of label ids otherwise, by CTC's
        ``method`` 'greedy' (best path, repeats merged, blanks dropped) or 'beam' (prefix beam
        search of ``beam_width``)."""
        if method not in ("greedy", "beam"):
            raise ValueError(f"CRNN.decode: method must be 'greedy' or 'beam', got {method!r}")
        x, widths = self._checked(images, widths)
        with no_grad():
            scores = F.log_softmax(self(x, widths), axis=-1).numpy()
        frames = self.output_lengths(widths)
        if method == "greedy":
            ids = ctc_greedy_decode(scores, blank=self.blank, lengths=frames)
        else:
            ids = [list(ctc_prefix_beam_search(row[:t], beam_width=beam_width, blank=self.blank)[0].ids)
                   for row, t in zip(scores, frames)]
        return ids if self.charset is None else [self.charset.decode(row) for row in ids]
