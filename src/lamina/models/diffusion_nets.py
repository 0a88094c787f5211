"""Denoisers for diffusion models: networks eps_theta(x_t, t) (or x_0 / v predictors) told
which noise level t they face through a timestep embedding.

* :func:`timestep_embedding`: the sinusoidal position signal of the Transformer
  (:func:`lamina.nn.transformer.sinusoidal_encoding`) read at the timesteps t, which may be any reals.
* :class:`DenoisingMLP`: vectors (N, D) -> (N, D); each hidden layer adds a projection of
  the time features, h <- silu(W h + b + U_l e(t)).
* :class:`DenoisingUNet`: NHWC images -> images of the same shape; residual blocks (GroupNorm,
  SiLU, 3x3 convolutions, the projected time features added between the two convolutions)
  at each resolution, strided convolutions down, nearest upsampling and a convolution up,
  skip connections joined along the channels (Ho et al. 2020's layout, small).

Both take optional class labels y for classifier-free guidance (``num_classes``): an
embedding of y is added to the time features, and the extra label ``num_classes`` is the
"no class" of the unconditional model. Both build their weights on the first call (or by
``build``) from the input shape.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn import Conv2D, Dense, Embedding, GroupNorm, ModuleList, Upsample
from lamina.nn.layer import describe, input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["DenoisingMLP", "DenoisingUNet", "TimeResidualBlock", "timestep_embedding"]

MAX_PERIOD = 10000.0


def timestep_embedding(t, dim: int, dtype=None):
    """The (N, ``dim``) sinusoidal features of N timesteps t (reals; integer t give rows of
    :func:`lamina.nn.transformer.sinusoidal_encoding`): with i = floor(j / 2), column j holds
    sin(t / 10000^(2i / dim)) for even j and cos(t / 10000^(2i / dim)) for odd j. A constant
    array (no gradient flows to t)."""
    dim = positive_int(dim, "timestep_embedding: dim")
    steps = np.asarray(backend.to_numpy(t.data) if isinstance(t, Tensor) else t, dtype=np.float64)
    if steps.ndim != 1:
        raise ShapeError(f"timestep_embedding: t must be a 1-D array of N timesteps, got shape {steps.shape}")
    pair = np.arange(dim) // 2
    angles = steps[:, None] / np.power(MAX_PERIOD, 2.0 * pair / dim)
    table = np.where(np.arange(dim) % 2 == 0, np.sin(angles), np.cos(angles))
    return backend.xp.asarray(table.astype(dtype or backend.get_default_dtype()))


def _timesteps_for(layer: Module, t, n: int) -> np.ndarray:
    """The timesteps as N floats (one number is repeated), or an error naming ``layer``."""
    steps = np.asarray(backend.to_numpy(t.data) if isinstance(t, Tensor) else t)
    if steps.dtype.kind not in "iuf":
        raise TypeError(f"{layer._label()}: timesteps t must be numbers, got {describe(steps)}")
    if steps.ndim == 0:
        steps = np.full(n, steps)
    if steps.shape != (n,):
        raise ShapeError(f"{layer._label()}: timesteps t of shape {steps.shape} do not fit a batch of {n}; "
                         f"expected ({n},)")
    return steps


class _TimeConditioned(Module):
    """What both denoisers share: the time (and class) features e(t, y) = W_2 silu(W_1 s(t) + b_1)
    + b_2 [+ E[y]], s the sinusoidal embedding of ``time_dim`` values, and a build by one
    forward pass on zeros."""

    def __init__(self, time_dim: int, embed_dim: int, num_classes: int | None, name: str | None):
        super().__init__(name=name)
        self.time_dim = positive_int(time_dim, f"{type(self).__name__}: time_dim")
        self.embed_dim = positive_int(embed_dim, f"{type(self).__name__}: embed_dim")
        self.num_classes = None if num_classes is None else positive_int(
            num_classes, f"{type(self).__name__}: num_classes")
        self.time_in = Dense(self.embed_dim, activation="silu", name="time_in")
        self.time_out = Dense(self.embed_dim, name="time_out")
        if self.num_classes is not None:   # the extra row num_classes is "no class"
            self.class_embedding = Embedding(self.num_classes + 1, self.embed_dim, name="class_embedding")

    @property
    def null_class(self) -> int | None:
        """The label of the unconditional model (``num_classes``), None without classes."""
        return self.num_classes

    def _labels(self, y, n: int) -> np.ndarray | None:
        if self.num_classes is None:
            if y is not None:
                raise ValueError(f"{self._label()}: got class labels but the model has no num_classes")
            return None
        if y is None:
            return np.full(n, self.num_classes, dtype=np.int64)
        labels = np.asarray(backend.to_numpy(y.data) if isinstance(y, Tensor) else y)
        if labels.shape != (n,):
            raise ShapeError(f"{self._label()}: class labels of shape {labels.shape} do not fit a batch of {n}")
        if labels.dtype.kind == "f" and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)    # a model rebuilt from its config is called on float zeros
        if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() > self.num_classes:
            raise ValueError(f"{self._label()}: class labels must be integers in [0, {self.num_classes}] "
                             f"({self.num_classes}: no class), got {describe(labels)}")
        return labels

    def time_features(self, t, y, x: Tensor) -> Tensor:
        steps = _timesteps_for(self, t, x.shape[0])
        e = self.time_out(self.time_in(Tensor._wrap(timestep_embedding(steps, self.time_dim, x.dtype))))
        labels = self._labels(y, x.shape[0])
        if labels is not None:
            e = e + self.class_embedding(labels)
        return e

    def build(self, input_shape) -> None:
        shape = input_shape[0] if isinstance(input_shape, list) else input_shape
        shape = self._checked_shape(tuple(shape))
        dtype = backend.get_default_dtype()
        x = Tensor(np.zeros((1, *shape[1:]), dtype=dtype), dtype=dtype)
        self.built = True
        with no_grad():
            self.forward(x, np.zeros(1, dtype=np.int64))

    def _checked_shape(self, shape: tuple) -> tuple:
        raise NotImplementedError


@register_layer
class DenoisingMLP(_TimeConditioned):
    """A denoiser for vectors: (N, D) samples and N timesteps -> (N, D).

    With e = e(t, y) the time (and class) features of ``embed_dim`` values (default: the
    first hidden width), each hidden layer l computes h_l = silu(W_l h_{l-1} + b_l + U_l e),
    h_0 = x, and the output is W_out h_L + b_out. ``hidden``: the widths; ``time_dim``: the
    size of the sinusoidal embedding of t; ``num_classes``: labels for classifier-free
    guidance (see the module notes).
    """

    def __init__(self, hidden=(128, 128, 128), time_dim: int = 32, embed_dim: int | None = None,
                 num_classes: int | None = None, name: str | None = None):
        widths = tuple(hidden) if not isinstance(hidden, int) else (hidden,)
        if not widths:
            raise ValueError(f"DenoisingMLP: hidden must name at least one layer width, got {hidden!r}")
        widths = tuple(positive_int(n, "DenoisingMLP: hidden") for n in widths)
        super().__init__(time_dim, embed_dim or widths[0], num_classes, name)
        self.hidden = widths
        self.layers = ModuleList([Dense(n, name=f"dense{k}") for k, n in enumerate(widths)])
        self.time_projections = ModuleList([Dense(n, use_bias=False, name=f"time{k}") for k, n in enumerate(widths)])
        self.features: int | None = None

    def _checked_shape(self, shape):
        if len(shape) != 2 or shape[1] is None:
            raise ShapeError(f"{self._label()}: got an input shape {shape}; expected (batch, features)")
        self.features = int(shape[1])
        self.head = Dense(self.features, kernel_init="zeros", name="head")
        return shape

    def forward(self, x, t, y=None) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 2 or x.shape[1] != self.features:
            raise input_error(self, x, f"(batch, {self.features}) samples")
        e = self.time_features(t, y, x)
        h = x
        for layer, projection in zip(self.layers, self.time_projections):
            h = F.silu(layer(h) + projection(e))
        return self.head(h)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0] if isinstance(input_shape, list) else input_shape)

    def get_config(self) -> dict:
        return {"hidden": list(self.hidden), "time_dim": self.time_dim, "embed_dim": self.embed_dim,
                "num_classes": self.num_classes, "name": self.name}

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, time_dim={self.time_dim}" + (
            f", num_classes={self.num_classes}" if self.num_classes else "")


@register_layer
class TimeResidualBlock(Module):
    """h = conv1(silu(norm1(x))) + U silu(e), then out = skip(x) + conv2(silu(norm2(h))): a
    residual block of two 3x3 convolutions of ``filters`` filters whose middle gets the time
    features e (N, E) projected to one shift per channel. GroupNorm uses ``groups`` groups
    (fewer when the channels do not split so); skip is the identity, or a 1x1 convolution when
    the channels change. ``forward(x, e)``."""

    default_name = "time_residual_block"

    def __init__(self, filters: int, groups: int = 8, name: str | None = None):
        super().__init__(name=name)
        self.filters = positive_int(filters, "TimeResidualBlock: filters")
        self.groups = positive_int(groups, "TimeResidualBlock: groups")
        self.norm2 = GroupNorm(math.gcd(self.groups, self.filters), name="norm2")
        self.conv1 = Conv2D(self.filters, 3, padding="same", name="conv1")
        self.conv2 = Conv2D(self.filters, 3, padding="same", name="conv2")
        self.time_projection = Dense(self.filters, name="time_projection")

    def build(self, input_shape) -> None:
        shape = input_shape[0] if isinstance(input_shape, list) else input_shape
        if len(shape) != 4 or shape[-1] is None:
            raise ShapeError(f"{self._label()}: got an input shape {tuple(shape)}; expected (batch, height, "
                             "width, channels) with known channels")
        channels = int(shape[-1])
        self.norm1 = GroupNorm(math.gcd(self.groups, channels), name="norm1")
        if channels != self.filters:
            self.skip = Conv2D(self.filters, 1, name="skip")
        self.built = True

    def forward(self, x, e) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4:
            raise input_error(self, x, "a 4-D NHWC batch (batch, height, width, channels)")
        h = self.conv1(F.silu(self.norm1(x)))
        shift = self.time_projection(F.silu(e))
        h = h + F.reshape(shift, x.shape[0], 1, 1, self.filters)
        h = self.conv2(F.silu(self.norm2(h)))
        skip = self.skip(x) if "skip" in self._modules else x
        return skip + h

    def get_config(self) -> dict:
        return {"filters": self.filters, "groups": self.groups, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.filters}, groups={self.groups}"


def unet_down_path(net: Module, h: Tensor, e: Tensor) -> tuple[list[Tensor], Tensor]:
    """The down path of :class:`DenoisingUNet` from the stem's output ``h`` and the time features
    ``e``: each ``net.down_blocks[l]`` (its output kept as skip_l), then ``net.downsamplers[l]``
    but at the last level, then ``net.middle``. Returns (skips, middle output); shared by the
    U-Net and the trainable copy of its encoder in :class:`~lamina.models.ControlNet`."""
    skips = []
    for level, block in enumerate(net.down_blocks):
        h = block(h, e)
        skips.append(h)
        if level < len(net.downsamplers):
            h = net.downsamplers[level](h)
    return skips, net.middle(h, e)


@register_layer
class DenoisingUNet(_TimeConditioned):
    """A small time-conditioned U-Net for NHWC images: (N, H, W, C) and N timesteps ->
    (N, H, W, C).

    With F_l = ``base_filters`` * ``multipliers[l]`` for levels l = 0 .. L-1:

        stem:    3x3 convolution to F_0 channels
        down_l:  a :class:`TimeResidualBlock` of F_l filters (its output kept as skip_l), then,
                 but at the last level, a 3x3 convolution of stride 2 halving the map
        middle:  a residual block of F_{L-1} filters
        up_l:    [skip_l, h] joined along the channels, a residual block of F_l filters, then,
                 but at level 0, nearest 2x upsampling and a 3x3 convolution to F_{l-1}
        head:    GroupNorm, SiLU, 3x3 convolution back to C channels

    Every block adds the time (and class) features of ``embed_dim`` values (default
    4 * base_filters). H and W must be divisible by 2^(L-1).
    """

    def __init__(self, base_filters: int = 16, multipliers=(1, 2), groups: int = 8, time_dim: int | None = None,
                 embed_dim: int | None = None, num_classes: int | None = None, name: str | None = None):
        base = positive_int(base_filters, "DenoisingUNet: base_filters")
        mults = tuple(multipliers) if not isinstance(multipliers, int) else (multipliers,)
        if not mults:
            raise ValueError(f"DenoisingUNet: multipliers must hold at least one level, got {multipliers!r}")
        mults = tuple(positive_int(m, "DenoisingUNet: multipliers") for m in mults)
        super().__init__(time_dim or base, embed_dim or 4 * base, num_classes, name)
        self.base_filters, self.multipliers, self.groups = base, mults, positive_int(groups, "DenoisingUNet: groups")
        filters = [base * m for m in mults]
        self.stem = Conv2D(filters[0], 3, padding="same", name="stem")
        self.down_blocks = ModuleList([TimeResidualBlock(f, self.groups, name=f"down{k}")
                                       for k, f in enumerate(filters)])
        self.downsamplers = ModuleList([Conv2D(f, 3, stride=2, padding="same", name=f"downsample{k}")
                                        for k, f in enumerate(filters[:-1])])
        self.middle = TimeResidualBlock(filters[-1], self.groups, name="middle")
        self.up_blocks = ModuleList([TimeResidualBlock(f, self.groups, name=f"up{k}") for k, f in enumerate(filters)])
        self.upsamplers = ModuleList([Upsample(scale_factor=2, mode="nearest", name=f"upsample{k}")
                                      for k in range(1, len(filters))])
        self.up_convs = ModuleList([Conv2D(filters[k - 1], 3, padding="same", name=f"upconv{k}")
                                    for k in range(1, len(filters))])
        self.head_norm = GroupNorm(math.gcd(self.groups, filters[0]), name="head_norm")
        self.channels: int | None = None

    def _checked_shape(self, shape):
        if len(shape) != 4 or any(n is None for n in shape[1:]):
            raise ShapeError(f"{self._label()}: got an input shape {shape}; expected (batch, height, width, "
                             "channels) with known sizes")
        self._check_size(shape)
        self.channels = int(shape[3])
        self.head = Conv2D(self.channels, 3, padding="same", kernel_init="zeros", name="head")
        return shape

    def _check_size(self, shape) -> None:
        factor = 2 ** (len(self.multipliers) - 1)
        if shape[1] % factor or shape[2] % factor:
            raise ShapeError(f"{self._label()}: got an input of shape {tuple(shape)}; its height and width must be "
                             f"divisible by 2^(levels - 1) = {factor} ({len(self.multipliers)} levels)")

    def forward(self, x, t, y=None, residuals=None) -> Tensor:
        """The denoised prediction; ``residuals`` (optional, e.g. a :class:`~lamina.models.ControlNet`'s
        outputs): one tensor per level and one for the middle block, added to the skips skip_l
        and to the middle block's output before the up path reads them."""
        x = as_tensor(x)
        if x.ndim != 4 or x.shape[3] != self.channels:
            raise input_error(self, x, f"a 4-D NHWC batch (batch, height, width, {self.channels})")
        self._check_size(x.shape)
        e = self.time_features(t, y, x)
        skips, h = unet_down_path(self, self.stem(x), e)
        if residuals is not None:
            skips, h = self._with_residuals(skips, h, residuals)
        for level in range(len(self.up_blocks) - 1, -1, -1):
            h = self.up_blocks[level](F.concat([skips[level], h], axis=-1), e)
            if level > 0:
                h = self.up_convs[level - 1](self.upsamplers[level - 1](h))
        return self.head(F.silu(self.head_norm(h)))

    def _with_residuals(self, skips: list, h: Tensor, residuals) -> tuple[list, Tensor]:
        residuals = list(residuals)
        if len(residuals) != len(skips) + 1:
            raise ValueError(f"{self._label()}: got {len(residuals)} residuals; expected {len(skips) + 1} (one per "
                             "level, then one for the middle block)")
        for k, (r, s) in enumerate(zip(residuals, [*skips, h])):
            if tuple(r.shape) != tuple(s.shape):
                raise ShapeError(f"{self._label()}: residual {k} has shape {tuple(r.shape)}; the feature map it adds "
                                 f"to has shape {tuple(s.shape)}")
        return [s + r for s, r in zip(skips, residuals)], h + residuals[-1]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0] if isinstance(input_shape, list) else input_shape)

    def get_config(self) -> dict:
        return {"base_filters": self.base_filters, "multipliers": list(self.multipliers), "groups": self.groups,
                "time_dim": self.time_dim, "embed_dim": self.embed_dim, "num_classes": self.num_classes,
                "name": self.name}

    def extra_repr(self) -> str:
        return f"base_filters={self.base_filters}, multipliers={self.multipliers}"
