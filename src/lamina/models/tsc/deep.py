"""Deep time-series classifiers on (batch, steps, channels) series, returning class logits.

* :class:`FCN` (Wang, Yan & Oates, 2017): three convolution blocks (128, 256, 128 filters of
  8, 5, 3 taps, 'same' padding), each conv -> batch norm -> ReLU, global average pooling over
  time, a Dense layer.
* :class:`ResNet1D` (Wang et al., 2017): three residual blocks (:class:`ResNetBlock1D`, 64, 128,
  128 filters) of three such convolutions (8, 5, 3 taps, no ReLU after the third), added to a
  shortcut (1x1 convolution + batch norm where the channels change, batch norm alone
  otherwise, as Fawaz et al.'s implementation), then ReLU; pooling and Dense as the FCN.
* :class:`InceptionTime` (Fawaz et al., 2020): ``depth`` inception modules
  (:class:`InceptionModule1D`: a 1x1 bottleneck to 32 channels when the input has more than
  one, three convolutions of 32 filters with 39, 19 and 9 taps (40 // 2^i, made odd as the
  reference PyTorch port), a max-pool (3 steps, stride 1) -> 1x1 convolution branch; the four
  concatenated (128 channels), batch norm, ReLU), a residual connection (1x1 convolution +
  batch norm, added, ReLU) every 3 modules; pooling and Dense. :class:`InceptionTimeEnsemble`
  averages the softmax outputs of 5 such networks, the paper's classifier.

Every model keeps the map before the pooling (``features(x)``: (N, L, K)) so that
:meth:`class_activation_map` gives Zhou et al.'s class activation map for time series,
CAM_c(t) = sum_k W_{k, c} A_k(t) (W the Dense weights): the steps that drove class c.
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block
from lamina.nn.layer import check_shape_ndim, input_error, positive_int, register_layer
from lamina.nn.module import as_tensor

__all__ = ["FCN", "ConvBlock1D", "InceptionModule1D", "InceptionTime", "InceptionTimeEnsemble", "ResNet1D",
           "ResNetBlock1D", "inception_kernel_sizes"]

_NWC = "(batch, steps, channels)"


def _series_shape(layer, shape, channels: int) -> tuple:
    shape = check_shape_ndim(layer, shape, 3, _NWC)
    if shape[2] is not None and shape[2] != channels:
        raise ShapeError(f"{layer._label()}: got an input of shape {tuple(shape)}; expected {channels} channels "
                         f"(it was made for in_channels={channels})")
    return shape


def _check_series(layer, x: Tensor, channels: int) -> None:
    if x.ndim != 3 or x.shape[2] != channels:
        raise input_error(layer, x, f"(batch, steps, {channels}) series (in_channels={channels})")


def _with_channels(shape, channels: int) -> tuple:
    return (*shape[:2], channels)


def inception_kernel_sizes(kernel_size: int = 40, branches: int = 3) -> tuple[int, ...]:
    """The inception module's kernel sizes: kernel_size // 2^i, minus one where even (40 ->
    39, 19, 9), so that 'same' padding is symmetric."""
    sizes = [positive_int(kernel_size, "inception_kernel_sizes: kernel_size") // 2 ** i for i in range(branches)]
    if min(sizes) < 1:
        raise ValueError(f"inception_kernel_sizes: kernel_size={kernel_size} is too small for {branches} branches")
    return tuple(k if k % 2 else max(k - 1, 1) for k in sizes)


@register_layer
class ConvBlock1D(Block):
    """Conv1D ('same' padding) -> BatchNorm -> ReLU (``relu=False``: no ReLU), sub-layers
    ``conv`` and ``bn``."""

    default_name = "conv_block1d"

    def __init__(self, filters: int, kernel_size: int, relu: bool = True, use_bias: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        self.filters = positive_int(filters, "ConvBlock1D: filters")
        self.kernel_size = positive_int(kernel_size, "ConvBlock1D: kernel_size")
        self.relu = bool(relu)
        self.use_bias = bool(use_bias)
        self.conv = nn.Conv1D(self.filters, self.kernel_size, padding="same", use_bias=self.use_bias, name="conv")
        self.bn = nn.BatchNorm(name="bn")

    def trace(self, shape, step):
        shape = check_shape_ndim(self, shape, 3, _NWC)
        return step(self.bn, step(self.conv, shape))

    def forward(self, x) -> Tensor:
        h = self.bn(self.conv(x))
        return F.relu(h) if self.relu else h

    def get_config(self) -> dict:
        return {"filters": self.filters, "kernel_size": self.kernel_size, "relu": self.relu,
                "use_bias": self.use_bias, "name": self.name}


class _GapClassifier(Block):
    """A feature extractor (``features``), global average pooling over time and a Dense head
    (sub-layers ``pool``, ``head``); logits out."""

    def _make_head(self, num_classes: int) -> None:
        self.num_classes = positive_int(num_classes, f"{type(self).__name__}: num_classes")
        self.pool = nn.GlobalAvgPool1D(name="pool")
        self.head = nn.Dense(self.num_classes, name="head")

    def _trace_features(self, shape, step):
        raise NotImplementedError

    def trace(self, shape, step):
        shape = _series_shape(self, shape, self.in_channels)
        return step(self.head, step(self.pool, self._trace_features(shape, step)))

    def features(self, x) -> Tensor:
        raise NotImplementedError

    def forward(self, x) -> Tensor:
        return self.head(self.pool(self.features(x)))

    def class_activation_map(self, x, classes=None) -> np.ndarray:
        """CAM_c(t) = sum_k W_{k, c} A_k(t) for each series (N, L): A = :meth:`features`,
        W the head's weights; ``classes``: one class per series (default: the predicted one)."""
        a = self.features(x).numpy()
        w = self.head.weight.numpy()
        maps = np.einsum("nlk,kc->nlc", a, w)
        if classes is None:
            classes = (a.mean(axis=1) @ w + self.head.bias.numpy()).argmax(axis=1)
        classes = np.asarray(classes).reshape(-1)
        if len(classes) != len(a):
            raise ShapeError(f"{self._label()}.class_activation_map: got {len(a)} series but {len(classes)} classes")
        return maps[np.arange(len(a)), :, classes]


class _StackedGapClassifier(_GapClassifier):
    """A :class:`_GapClassifier` whose features are sub-layers ``block0`` .. (one per entry of
    ``filters``) applied in turn."""

    def _blocks(self):
        return [self._modules[f"block{i}"] for i in range(len(self.filters))]

    def _trace_features(self, shape, step):
        for block in self._blocks():
            shape = step(block, shape)
        return shape

    def features(self, x) -> Tensor:
        x = as_tensor(x)
        _check_series(self, x, self.in_channels)
        for block in self._blocks():
            x = block(x)
        return x

    def get_config(self) -> dict:
        return {"num_classes": self.num_classes, "in_channels": self.in_channels, "filters": self.filters,
                "kernel_sizes": self.kernel_sizes, "name": self.name}


@register_layer
class FCN(_StackedGapClassifier):
    """Wang et al.'s fully convolutional network: ``filters`` (128, 256, 128) convolutions of
    ``kernel_sizes`` (8, 5, 3) taps, each :class:`ConvBlock1D`, global average pooling, Dense
    to ``num_classes`` logits. Sub-layers ``block0`` .. ``block2``, ``pool``, ``head``."""

    default_name = "fcn"

    def __init__(self, num_classes: int, in_channels: int = 1, filters=(128, 256, 128), kernel_sizes=(8, 5, 3),
                 name: str | None = None):
        super().__init__(name=name)
        self.in_channels = positive_int(in_channels, "FCN: in_channels")
        self.filters = tuple(positive_int(f, "FCN: filters") for f in filters)
        self.kernel_sizes = tuple(positive_int(k, "FCN: kernel_sizes") for k in kernel_sizes)
        if len(self.filters) != len(self.kernel_sizes) or not self.filters:
            raise ValueError(f"FCN: filters {filters} and kernel_sizes {kernel_sizes} must be non-empty and of "
                             "equal length")
        for i, (f, k) in enumerate(zip(self.filters, self.kernel_sizes)):
            setattr(self, f"block{i}", ConvBlock1D(f, k, name=f"block{i}"))
        self._make_head(num_classes)


@register_layer
class ResNetBlock1D(Block):
    """Wang et al.'s residual block: h = BN(conv3(ReLU(BN(conv2(ReLU(BN(conv1(x)))))))),
    y = ReLU(h + shortcut(x)), shortcut = BN(conv1x1(x)) when in_channels != filters, else
    BN(x). Sub-layers ``conv0`` .. ``conv2`` (:class:`ConvBlock1D`), ``shortcut_conv`` (or
    none) and ``shortcut_bn``."""

    default_name = "resnet_block1d"

    def __init__(self, in_channels: int, filters: int, kernel_sizes=(8, 5, 3), name: str | None = None):
        super().__init__(name=name)
        self.in_channels = positive_int(in_channels, "ResNetBlock1D: in_channels")
        self.filters = positive_int(filters, "ResNetBlock1D: filters")
        self.kernel_sizes = tuple(positive_int(k, "ResNetBlock1D: kernel_sizes") for k in kernel_sizes)
        last = len(self.kernel_sizes) - 1
        for i, k in enumerate(self.kernel_sizes):
            setattr(self, f"conv{i}", ConvBlock1D(self.filters, k, relu=i < last, name=f"conv{i}"))
        self.shortcut_conv = (nn.Conv1D(self.filters, 1, name="shortcut_conv")
                              if self.in_channels != self.filters else None)
        self.shortcut_bn = nn.BatchNorm(name="shortcut_bn")

    def _convs(self):
        return [self._modules[f"conv{i}"] for i in range(len(self.kernel_sizes))]

    def trace(self, shape, step):
        shape = _series_shape(self, shape, self.in_channels)
        out = shape
        for conv in self._convs():
            out = step(conv, out)
        short = shape if self.shortcut_conv is None else step(self.shortcut_conv, shape)
        step(self.shortcut_bn, short)
        return out

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        _check_series(self, x, self.in_channels)
        h = x
        for conv in self._convs():
            h = conv(h)
        short = x if self.shortcut_conv is None else self.shortcut_conv(x)
        return F.relu(F.add(h, self.shortcut_bn(short)))

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "filters": self.filters, "kernel_sizes": self.kernel_sizes,
                "name": self.name}


@register_layer
class ResNet1D(_StackedGapClassifier):
    """Wang et al.'s ResNet for time-series classification: :class:`ResNetBlock1D` blocks of
    ``filters`` (64, 128, 128), global average pooling, Dense. Sub-layers ``block0`` ..,
    ``pool``, ``head``."""

    default_name = "resnet1d"

    def __init__(self, num_classes: int, in_channels: int = 1, filters=(64, 128, 128), kernel_sizes=(8, 5, 3),
                 name: str | None = None):
        super().__init__(name=name)
        self.in_channels = positive_int(in_channels, "ResNet1D: in_channels")
        self.filters = tuple(positive_int(f, "ResNet1D: filters") for f in filters)
        if not self.filters:
            raise ValueError("ResNet1D: filters must list at least one block")
        self.kernel_sizes = tuple(kernel_sizes)
        c_in = self.in_channels
        for i, f in enumerate(self.filters):
            setattr(self, f"block{i}", ResNetBlock1D(c_in, f, self.kernel_sizes, name=f"block{i}"))
            c_in = f
        self._make_head(num_classes)


@register_layer
class InceptionModule1D(Block):
    """InceptionTime's module on (batch, steps, in_channels) -> (batch, steps, 4 filters):

        b = bottleneck(x) (a 1x1 convolution to ``bottleneck`` channels, only when
            in_channels > 1 and bottleneck > 0; else b = x)
        y = ReLU(BN(concat[conv_k0(b), conv_k1(b), conv_k2(b), conv1x1(maxpool3(x))]))

    All convolutions without bias, 'same' padding. Sub-layers ``bottleneck`` (or none),
    ``conv0`` .. ``conv2``, ``pool``, ``pool_conv``, ``bn``."""

    default_name = "inception_module1d"

    def __init__(self, in_channels: int, filters: int = 32, kernel_sizes=(39, 19, 9), bottleneck: int = 32,
                 name: str | None = None):
        super().__init__(name=name)
        self.in_channels = positive_int(in_channels, "InceptionModule1D: in_channels")
        self.filters = positive_int(filters, "InceptionModule1D: filters")
        self.kernel_sizes = tuple(positive_int(k, "InceptionModule1D: kernel_sizes") for k in kernel_sizes)
        self.bottleneck_size = int(bottleneck)
        use_bottleneck = self.bottleneck_size > 0 and self.in_channels > 1
        self.bottleneck = (nn.Conv1D(self.bottleneck_size, 1, use_bias=False, name="bottleneck")
                           if use_bottleneck else None)
        for i, k in enumerate(self.kernel_sizes):
            setattr(self, f"conv{i}", nn.Conv1D(self.filters, k, padding="same", use_bias=False, name=f"conv{i}"))
        self.pool = nn.MaxPool1D(3, stride=1, padding=1, name="pool")
        self.pool_conv = nn.Conv1D(self.filters, 1, use_bias=False, name="pool_conv")
        self.bn = nn.BatchNorm(name="bn")

    @property
    def out_channels(self) -> int:
        return self.filters * (len(self.kernel_sizes) + 1)

    def _convs(self):
        return [self._modules[f"conv{i}"] for i in range(len(self.kernel_sizes))]

    def trace(self, shape, step):
        shape = _series_shape(self, shape, self.in_channels)
        inner = shape if self.bottleneck is None else step(self.bottleneck, shape)
        for conv in self._convs():
            step(conv, inner)
        step(self.pool_conv, step(self.pool, shape))
        return step(self.bn, _with_channels(shape, self.out_channels))

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        _check_series(self, x, self.in_channels)
        inner = x if self.bottleneck is None else self.bottleneck(x)
        branches = [conv(inner) for conv in self._convs()] + [self.pool_conv(self.pool(x))]
        return F.relu(self.bn(F.concat(branches, axis=2)))

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "filters": self.filters, "kernel_sizes": self.kernel_sizes,
                "bottleneck": self.bottleneck_size, "name": self.name}


@register_layer
class InceptionTime(_GapClassifier):
    """One InceptionTime network (Fawaz et al., 2020): ``depth`` :class:`InceptionModule1D`
    (``module0`` ..), a shortcut every ``residual_every`` modules (``shortcut{j}_conv``, a 1x1
    convolution without bias, and ``shortcut{j}_bn``: y = ReLU(h + BN(conv(x_res)))), global
    average pooling, Dense. The paper's classifier is an ensemble of 5 such networks trained
    from different initialisations, their softmax outputs averaged."""

    default_name = "inception_time"

    def __init__(self, num_classes: int, in_channels: int = 1, filters: int = 32, depth: int = 6,
                 kernel_size: int = 40, bottleneck: int = 32, residual: bool = True, residual_every: int = 3,
                 name: str | None = None):
        super().__init__(name=name)
        self.in_channels = positive_int(in_channels, "InceptionTime: in_channels")
        self.filters = positive_int(filters, "InceptionTime: filters")
        self.depth = positive_int(depth, "InceptionTime: depth")
        self.kernel_size = positive_int(kernel_size, "InceptionTime: kernel_size")
        self.bottleneck_size = int(bottleneck)
        self.residual = bool(residual)
        self.residual_every = positive_int(residual_every, "InceptionTime: residual_every")
        sizes = inception_kernel_sizes(self.kernel_size)
        out = self.filters * (len(sizes) + 1)
        c_in = self.in_channels
        for i in range(self.depth):
            setattr(self, f"module{i}", InceptionModule1D(c_in, self.filters, sizes, self.bottleneck_size,
                                                          name=f"module{i}"))
            c_in = out
        for j in range(self._shortcuts()):
            setattr(self, f"shortcut{j}_conv", nn.Conv1D(out, 1, use_bias=False, name=f"shortcut{j}_conv"))
            setattr(self, f"shortcut{j}_bn", nn.BatchNorm(name=f"shortcut{j}_bn"))
        self._make_head(num_classes)

    def _shortcuts(self) -> int:
        return self.depth // self.residual_every if self.residual else 0

    def _walk(self, x, module, shortcut):
        """The data flow, shared by shapes and tensors: ``module(i, x)``, ``shortcut(j, x_res, h)``."""
        residual = x
        for i in range(self.depth):
            x = module(i, x)
            if self.residual and i % self.residual_every == self.residual_every - 1:
                x = shortcut(i // self.residual_every, residual, x)
                residual = x
        return x

    def _trace_features(self, shape, step):
        def module(i, s):
            return step(self._modules[f"module{i}"], s)

        def shortcut(j, res, s):
            step(self._modules[f"shortcut{j}_bn"], step(self._modules[f"shortcut{j}_conv"], res))
            return s
        return self._walk(shape, module, shortcut)

    def features(self, x) -> Tensor:
        x = as_tensor(x)
        _check_series(self, x, self.in_channels)

        def module(i, h):
            return self._modules[f"module{i}"](h)

        def shortcut(j, res, h):
            short = self._modules[f"shortcut{j}_bn"](self._modules[f"shortcut{j}_conv"](res))
            return F.relu(F.add(h, short))
        return self._walk(x, module, shortcut)

    def get_config(self) -> dict:
        return {"num_classes": self.num_classes, "in_channels": self.in_channels, "filters": self.filters,
                "depth": self.depth, "kernel_size": self.kernel_size, "bottleneck": self.bottleneck_size,
                "residual": self.residual, "residual_every": self.residual_every, "name": self.name}


@register_layer
class InceptionTimeEnsemble(Block):
    """Fawaz et al.'s classifier: ``members`` :class:`InceptionTime` networks (``member0`` ..)
    from different initialisations, their softmax outputs averaged:

        p(c | x) = (1 / M) sum_m softmax(f_m(x))_c

    ``forward`` returns these probabilities (N, num_classes). Train the members independently,
    each on its own loss: ``sum_m cross_entropy(f_m(x), y)`` over :meth:`member_logits` gives
    every member exactly its own gradient (their parameters are disjoint). Other keyword
    arguments go to every :class:`InceptionTime`."""

    default_name = "inception_time_ensemble"

    def __init__(self, num_classes: int, in_channels: int = 1, members: int = 5, name: str | None = None,
                 **network_args):
        super().__init__(name=name)
        self.num_classes = positive_int(num_classes, "InceptionTimeEnsemble: num_classes")
        self.in_channels = positive_int(in_channels, "InceptionTimeEnsemble: in_channels")
        self.members = positive_int(members, "InceptionTimeEnsemble: members")
        self.network_args = dict(network_args)
        for m in range(self.members):
            setattr(self, f"member{m}", InceptionTime(self.num_classes, self.in_channels, name=f"member{m}",
                                                      **self.network_args))

    def _members(self) -> list[InceptionTime]:
        return [self._modules[f"member{m}"] for m in range(self.members)]

    def trace(self, shape, step):
        shape = _series_shape(self, shape, self.in_channels)
        return [step(member, shape) for member in self._members()][0]

    def member_logits(self, x) -> list[Tensor]:
        return [member(x) for member in self._members()]

    def forward(self, x) -> Tensor:
        probabilities = [F.softmax(logits, axis=-1) for logits in self.member_logits(x)]
        return F.mean(F.stack(probabilities, axis=0), axis=0)

    def get_config(self) -> dict:
        return {"num_classes": self.num_classes, "in_channels": self.in_channels, "members": self.members,
                "name": self.name, **self.network_args}
