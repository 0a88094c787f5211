"""SlowFast networks (Feichtenhofer et al. 2019, "SlowFast Networks for Video Recognition") on
NTHWC clips (batch, frames, height, width, channels).

Two ResNet pathways read the same clip at two frame rates:

* slow: every alpha-th frame (T / alpha frames), full width C (64 in the stem of the R50);
* fast: all T frames, beta C channels (beta = 1 / ``beta_inv``, 1/8 in the paper), so it is
  light (about 20% of the computation) but sees fast motion.

Neither pathway strides in time. The slow pathway has no temporal convolution before res4
(1x1x1 first convolutions in res2-3, 3x1x1 in res4-5; a 1x7x7 stem), the fast one has them
throughout (a 5x7x7 stem, 3x1x1 first convolutions in res2-5). After the stem and after res2,
res3 and res4 a lateral connection (:class:`SlowFastLateral`) carries the fast features to
the slow pathway: a 5x1x1 convolution with temporal stride alpha to 2 beta C channels, BN,
ReLU, then concatenation on the channel axis,

    x_slow <- [x_slow, ReLU(BN(conv_{5x1x1, stride alpha}(x_fast)))]

Each pathway ends in global average pooling; the pooled features, concatenated, go through
dropout and a Dense classifier (``head``).

The stages are bottlenecks (:class:`SlowFastBottleneck`: t x 1 x 1, 1 x 3 x 3 with the spatial
stride, 1 x 1 x 1 to 4x the inner width, BN after each, a projection shortcut where the shape
changes). :func:`slowfast_r50` is the SlowFast 4x16 R50 (res2-5 of 3, 4, 6, 3 blocks, alpha 8,
beta 1/8, 32-frame clips of 224x224): 34,480,216 parameters with 400 (Kinetics) classes, the
34.5M MMAction2 lists for its 4x16 R50; with ``fusion_kernel=7``, as PySlowFast's 8x8 R50,
34,566,488 (their 34.6M). :func:`pack_pathways` cuts a clip into the two pathways' inputs.
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import check_shape_ndim, input_error, positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["SLOW_TEMPORAL_KERNELS", "FAST_TEMPORAL_KERNELS", "SlowFast", "SlowFastBottleneck", "SlowFastLateral",
           "pack_pathways", "slowfast_r50", "slowfast_tiny"]

NTHWC = "a 5-D NTHWC clip shape (batch, frames, height, width, channels)"
# temporal kernel of the first convolution of each bottleneck in res2..res5 (PySlowFast's basis)
SLOW_TEMPORAL_KERNELS = (1, 1, 3, 3)
FAST_TEMPORAL_KERNELS = (3, 3, 3, 3)


def pack_pathways(video, alpha: int) -> list:
    """[slow, fast] inputs from clips (N, T, H, W, C): the fast pathway takes every frame, the
    slow one every ``alpha``-th (frames 0, alpha, 2 alpha, ...; T / alpha of them), the frames
    the lateral connections' stride-alpha convolutions are centred on. Arrays stay arrays,
    tensors tensors."""
    alpha = positive_int(alpha, "pack_pathways: alpha")
    shape = tuple(video.shape)
    if len(shape) != 5 or shape[1] % alpha:
        raise ShapeError(f"pack_pathways: got clips of shape {shape}; expected (batch, frames, height, width, "
                         f"channels) with frames a multiple of alpha={alpha}")
    if isinstance(video, Tensor):
        return [F.getitem(video, (slice(None), slice(None, None, alpha))), video]
    return [video[:, ::alpha], video]


def _conv_bn(filters: int, kernel, stride, padding, name: str) -> nn.Sequential:
    """conv (no bias) - BN, named '0' and '1'."""
    return nn.Sequential(nn.Conv3D(filters, kernel, stride=stride, padding=padding, use_bias=False, name="0"),
                         nn.BatchNorm(name="1"), name=name)


def _clip_shape(layer: Module, shape, channels: int | None = None) -> tuple:
    shape = check_shape_ndim(layer, shape, 5, NTHWC)
    if channels is not None and shape[4] is not None and shape[4] != channels:
        raise ShapeError(f"{layer._label()}: got an input of shape {tuple(shape)}; expected {channels} channels")
    return tuple(shape)


@register_with_arguments
class SlowFastBottleneck(Block):
    """A 3-D bottleneck of SlowFast's ResNet pathways:

        out = ReLU(c(ReLU(b(ReLU(a(x))))) + shortcut(x))
        a: t x 1 x 1 conv to ``inner`` channels, b: 1 x 3 x 3 conv with stride (1, s, s),
        c: 1 x 1 x 1 conv to ``filters`` channels, each followed by BN

    (t = ``temporal_kernel``, zero-padded to keep the frames); the shortcut is x, or a 1x1x1
    convolution with stride (1, s, s) + BN when the shape changes. Sub-layers ``a``, ``b``,
    ``c``, ``shortcut`` (each '0' conv, '1' BN)."""

    default_name = "slowfast_bottleneck"

    def __init__(self, in_channels: int, inner: int, filters: int, temporal_kernel: int = 1, stride: int = 1,
                 name: str | None = None):
        super().__init__(name=name)
        fn = "SlowFastBottleneck"
        self.in_channels = positive_int(in_channels, f"{fn}: in_channels")
        self.inner, self.filters = positive_int(inner, f"{fn}: inner"), positive_int(filters, f"{fn}: filters")
        self.temporal_kernel = positive_int(temporal_kernel, f"{fn}: temporal_kernel")
        self.stride = positive_int(stride, f"{fn}: stride")
        if self.temporal_kernel % 2 == 0:
            raise ValueError(f"{fn}: temporal_kernel must be odd (it keeps the frames), got {temporal_kernel}")
        t, s = self.temporal_kernel, self.stride
        self.a = _conv_bn(self.inner, (t, 1, 1), 1, (t // 2, 0, 0), "a")
        self.b = _conv_bn(self.inner, (1, 3, 3), (1, s, s), (0, 1, 1), "b")
        self.c = _conv_bn(self.filters, 1, 1, 0, "c")
        self.has_shortcut = self.stride != 1 or self.in_channels != self.filters
        if self.has_shortcut:
            self.shortcut = _conv_bn(self.filters, 1, (1, s, s), 0, "shortcut")

    def trace(self, shape, step):
        shape = _clip_shape(self, shape, self.in_channels)
        out = step(self.c, step(self.b, step(self.a, shape)))
        if self.has_shortcut:
            step(self.shortcut, shape)
        return out

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 5 or x.shape[-1] != self.in_channels:
            raise input_error(self, x, f"NTHWC clips with {self.in_channels} channels")
        out = self.c(F.relu(self.b(F.relu(self.a(x)))))
        return F.relu(F.add(out, self.shortcut(x) if self.has_shortcut else x))


@register_with_arguments
class SlowFastLateral(Block):
    """The fast -> slow lateral connection: ``fuse`` ('0' a ``kernel`` x 1 x 1 convolution, no
    bias, stride (``alpha``, 1, 1), padding kernel // 2 in time, to ``ratio`` x the fast
    channels; '1' BN; '2' ReLU) maps the fast features (N, T, H, W, C_f) onto the slow
    pathway's T / alpha frames, and the result is concatenated after the slow features:

        (slow, fast) -> ([slow, ReLU(BN(conv(fast)))], fast)

    Called as ``lateral(slow, fast)``; returns the pair."""

    default_name = "lateral"

    def __init__(self, fast_channels: int, alpha: int = 8, kernel: int = 5, ratio: int = 2,
                 name: str | None = None):
        super().__init__(name=name)
        fn = "SlowFastLateral"
        self.fast_channels = positive_int(fast_channels, f"{fn}: fast_channels")
        self.alpha, self.kernel = positive_int(alpha, f"{fn}: alpha"), positive_int(kernel, f"{fn}: kernel")
        self.ratio = positive_int(ratio, f"{fn}: ratio")
        self.fuse = nn.Sequential(
            nn.Conv3D(self.ratio * self.fast_channels, (self.kernel, 1, 1), stride=(self.alpha, 1, 1),
                      padding=(self.kernel // 2, 0, 0), use_bias=False, name="0"),
            nn.BatchNorm(name="1"), nn.ReLU(name="2"), name="fuse")

    def _shapes(self, shapes) -> tuple[tuple, tuple]:
        if not (isinstance(shapes, (list, tuple)) and len(shapes) == 2 and isinstance(shapes[0], (list, tuple))):
            raise ShapeError(f"{self._label()}: expected two inputs (slow, fast), got the shape(s) {shapes!r}")
        slow, fast = _clip_shape(self, shapes[0]), _clip_shape(self, shapes[1], self.fast_channels)
        fused = self.fuse.compute_output_shape(fast) if self.fuse.built else None
        frames = None if fast[1] is None else (fast[1] + 2 * (self.kernel // 2) - self.kernel) // self.alpha + 1
        if fused is None:
            fused = (fast[0], frames, *fast[2:4], self.ratio * self.fast_channels)
        if any(a is not None and b is not None and a != b for a, b in zip(slow[1:4], fused[1:4])):
            raise ShapeError(f"{self._label()}: the slow input {slow} and the fast input {fast} do not line up: the "
                             f"fast features map to {fused[1:4]} (frames, height, width) with alpha={self.alpha}; "
                             f"expected the slow pathway to have those")
        return slow, fast

    def trace(self, shapes, step):
        slow, fast = self._shapes(shapes)
        fused = step(self.fuse, fast)
        channels = None if slow[4] is None else slow[4] + fused[4]
        return [(*slow[:4], channels), fast]

    def forward(self, slow, fast) -> list[Tensor]:
        slow, fast = as_tensor(slow), as_tensor(fast)
        self._shapes([slow.shape, fast.shape])
        return [F.concat([slow, self.fuse(fast)], axis=-1), fast]


def _stem(width: int, temporal_kernel: int, name: str) -> nn.Sequential:
    t = temporal_kernel
    return nn.Sequential(
        nn.Conv3D(width, (t, 7, 7), stride=(1, 2, 2), padding=(t // 2, 3, 3), use_bias=False, name="0"),
        nn.BatchNorm(name="1"), nn.ReLU(name="2"),
        nn.MaxPool3D((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), name="3"), name=name)


def _stage(in_channels: int, inner: int, filters: int, blocks: int, temporal_kernel: int, stride: int,
           name: str) -> nn.Sequential:
    layers = [SlowFastBottleneck(in_channels if k == 0 else filters, inner, filters, temporal_kernel,
                                 stride if k == 0 else 1, name=str(k)) for k in range(blocks)]
    return nn.Sequential(*layers, name=name)


@register_with_arguments
class SlowFast(Block):
    """The SlowFast classifier of the module docstring. ``depths``: bottlenecks in res2..res5;
    ``width``: the slow stem's channels (stage i has inner width ``width`` 2^i and 4x that
    out); the fast pathway has 1 / ``beta_inv`` of the slow widths and ``alpha`` times its
    frames; laterals of ``fusion_kernel`` x 1 x 1 to ``fusion_ratio`` x the fast channels.

    Called as ``model(slow, fast)`` with slow (N, T / alpha, H, W, C) and fast (N, T, H, W, C)
    clips, or ``model(clips)`` with (N, T, H, W, C), cut by :func:`pack_pathways`. Sub-layers
    ``slow_stem``, ``fast_stem``, ``lateral_stem``, ``slow_res2`` .. ``slow_res5``,
    ``fast_res2`` .. ``fast_res5``, ``lateral_res2`` .. ``lateral_res4``, ``dropout``, ``head``.
    Outputs (N, num_classes) scores."""

    default_name = "slowfast"

    def __init__(self, num_classes: int = 400, alpha: int = 8, beta_inv: int = 8, depths=(3, 4, 6, 3),
                 width: int = 64, fusion_kernel: int = 5, fusion_ratio: int = 2, dropout: float = 0.5,
                 name: str | None = None):
        super().__init__(name=name)
        fn = "SlowFast"
        self.num_classes = positive_int(num_classes, f"{fn}: num_classes")
        self.alpha, self.beta_inv = positive_int(alpha, f"{fn}: alpha"), positive_int(beta_inv, f"{fn}: beta_inv")
        self.width = positive_int(width, f"{fn}: width")
        self.depths = tuple(positive_int(d, f"{fn}: depths") for d in depths)
        if len(self.depths) != 4:
            raise ValueError(f"{fn}: depths must give the blocks of res2..res5 (4 ints), got {depths!r}")
        if self.width % self.beta_inv:
            raise ValueError(f"{fn}: width {self.width} must be a multiple of beta_inv {self.beta_inv}")
        fast_width = self.width // self.beta_inv
        self.slow_stem = _stem(self.width, 1, "slow_stem")
        self.fast_stem = _stem(fast_width, 5, "fast_stem")
        self.lateral_stem = SlowFastLateral(fast_width, self.alpha, fusion_kernel, fusion_ratio, name="lateral_stem")
        slow_in, fast_in = self.width + fusion_ratio * fast_width, fast_width
        for i, blocks in enumerate(self.depths):
            stride, scale = (1 if i == 0 else 2), 2 ** i
            slow_out, fast_out = 4 * self.width * scale, 4 * fast_width * scale
            setattr(self, f"slow_res{i + 2}", _stage(slow_in, self.width * scale, slow_out, blocks,
                                                     SLOW_TEMPORAL_KERNELS[i], stride, f"slow_res{i + 2}"))
            setattr(self, f"fast_res{i + 2}", _stage(fast_in, fast_width * scale, fast_out, blocks,
                                                     FAST_TEMPORAL_KERNELS[i], stride, f"fast_res{i + 2}"))
            slow_in, fast_in = slow_out, fast_out
            if i < 3:
                setattr(self, f"lateral_res{i + 2}", SlowFastLateral(fast_out, self.alpha, fusion_kernel,
                                                                     fusion_ratio, name=f"lateral_res{i + 2}"))
                slow_in += fusion_ratio * fast_out
        self.dropout = nn.Dropout(dropout, name="dropout")
        self.head = nn.Dense(self.num_classes, name="head")

    def _pathway_shapes(self, shape) -> tuple[tuple, tuple]:
        if isinstance(shape, (list, tuple)) and len(shape) == 2 and isinstance(shape[0], (list, tuple)):
            return _clip_shape(self, shape[0]), _clip_shape(self, shape[1])
        fast = _clip_shape(self, shape)
        if fast[1] is not None and fast[1] % self.alpha:
            raise ShapeError(f"{self._label()}: got clips of shape {fast}; expected a number of frames that is a "
                             f"multiple of alpha={self.alpha}")
        return (fast[0], None if fast[1] is None else fast[1] // self.alpha, *fast[2:]), fast

    def trace(self, shape, step):
        slow, fast = self._pathway_shapes(shape)
        slow, fast = step(self.slow_stem, slow), step(self.fast_stem, fast)
        slow, fast = step(self.lateral_stem, [slow, fast])
        for stage in range(2, 6):
            slow = step(self._modules[f"slow_res{stage}"], slow)
            fast = step(self._modules[f"fast_res{stage}"], fast)
            if stage < 5:
                slow, fast = step(self._modules[f"lateral_res{stage}"], [slow, fast])
        pooled = (slow[0], slow[4] + fast[4])
        return step(self.head, step(self.dropout, pooled))

    def forward_features(self, slow, fast=None) -> Tensor:
        """The pooled features [mean(slow), mean(fast)], (N, C_slow + C_fast)."""
        if fast is None:
            slow, fast = pack_pathways(as_tensor(slow), self.alpha)
        slow, fast = as_tensor(slow), as_tensor(fast)
        self._pathway_shapes([slow.shape, fast.shape])
        slow, fast = self.lateral_stem(self.slow_stem(slow), self.fast_stem(fast))
        for stage in range(2, 6):
            slow = self._modules[f"slow_res{stage}"](slow)
            fast = self._modules[f"fast_res{stage}"](fast)
            if stage < 5:
                slow, fast = self._modules[f"lateral_res{stage}"](slow, fast)
        return F.concat([F.global_avg_pool3d(slow), F.global_avg_pool3d(fast)], axis=-1)

    def forward(self, slow, fast=None) -> Tensor:
        return self.head(self.dropout(self.forward_features(slow, fast)))


def slowfast_r50(num_classes: int = 400, input_shape=(32, 224, 224, 3), dropout: float = 0.5) -> SlowFast:
    """SlowFast 4x16 R50 (unbuilt): res2-5 of 3, 4, 6, 3 bottlenecks, alpha 8, beta 1/8, 5x1x1
    laterals; ``input_shape`` (frames, height, width, channels) of the fast pathway's clips
    (the slow one sees frames / 8). 34,480,216 parameters with 400 classes."""
    model = SlowFast(num_classes, dropout=dropout, name="slowfast_r50")
    model.input_shape = (None, *input_shape)
    return model


def slowfast_tiny(num_classes: int = 4, input_shape=(8, 16, 16, 1), alpha: int = 4, width: int = 8,
                  beta_inv: int = 4, dropout: float = 0.0) -> SlowFast:
    """A small SlowFast (one bottleneck per stage, slow stem of ``width`` channels, fast of
    width / ``beta_inv``) for tests and toy clips."""
    model = SlowFast(num_classes, alpha=alpha, beta_inv=beta_inv, depths=(1, 1, 1, 1), width=width,
                     dropout=dropout, name="slowfast_tiny")
    model.input_shape = (None, *input_shape)
    return model
