"""Normalizer-free ResNets (Brock, De, Smith 2021, "Characterizing signal propagation to close
the performance gap in unnormalized ResNets"): residual networks without batch normalization
that keep the signal of every layer at a known scale by construction.

A residual stage is h_{i+1} = h_i + alpha · f_i(h_i / beta_i), where

* beta_i = sqrt(Var(h_i)) is the *expected* standard deviation of the block input, tracked
  analytically: Var(h_{i+1}) = Var(h_i) + alpha^2, so the residual branch always sees a
  unit-variance input;
* alpha (0.2) sets how fast the variance grows;
* f_i uses scaled weight standardization (:class:`lamina.nn.ScaledStdConv2D`) and scaled
  activations gamma · g(z) with gamma = 1 / std(g(z)) for z ~ N(0, 1)
  (:data:`ACTIVATION_GAMMAS`), so that each layer of the branch preserves unit variance;
* a transition block (stride 2 or new width) takes its shortcut through a 1x1 convolution of
  the normalized input g(h_i / beta_i), which resets the expected variance to 1 + alpha^2;
* optionally (``skipinit``) the branch is also multiplied by a learnable scalar started at 0,
  so that every block is the identity at initialization.

:class:`NFResNet`: a ScaledStdConv2D stem (7x7/2 and a 3x3/2 max pool for ImageNet; 3x3/1
for small images), stages of :class:`NFBlock` (pre-activation basic blocks of two 3x3
ScaledStdConv2D), the scaled activation of the last output divided by its expected standard
deviation, global average pooling, dropout and the classifier ``fc`` (the layer adaptive
gradient clipping leaves out: ``AGC(opt, exclude=model.fc)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import Block, nhwc, nhwc_channels, residual_sum
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int

__all__ = ["ACTIVATION_GAMMAS", "NFBlock", "NFResNet", "ScaledActivation", "nf_resnet18", "nf_resnet34",
           "nf_resnet_cifar"]

#: gamma = 1 / std(g(z)), z ~ N(0, 1): the gain that gives each activation a unit-variance
#: output (ReLU in closed form, sqrt(2 / (1 - 1/pi)); the others the values of the reference
#: implementation, estimated there by sampling: good to about 0.1%).
ACTIVATION_GAMMAS: dict[str, float] = {
    "identity": 1.0,
    "relu": math.sqrt(2.0 / (1.0 - 1.0 / math.pi)),
    "gelu": 1.7015043497085571,
    "silu": 1.7881293296813965,
    "tanh": 1.5939117670059204,
}
_ACTIVATIONS = {"identity": lambda z: z, "relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": F.tanh}


def _activation_name(activation, what: str) -> str:
    if activation not in ACTIVATION_GAMMAS:
        raise ValueError(f"{what}: activation must be one of {sorted(ACTIVATION_GAMMAS)}, got {activation!r}")
    return activation


def _positive_float(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")
    return float(value)


@register_with_arguments
class ScaledActivation(nn.Module):
    """gamma · g(x) with gamma = ``ACTIVATION_GAMMAS[activation]`` (or the ``gamma`` given): a
    unit-variance output for a standard normal input."""

    default_name = "scaled_activation"

    def __init__(self, activation: str = "relu", gamma: float | None = None, name: str | None = None):
        super().__init__(name=name)
        self.activation = _activation_name(activation, "ScaledActivation")
        self.gamma = (ACTIVATION_GAMMAS[activation] if gamma is None
                      else _positive_float(gamma, "ScaledActivation: gamma"))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def forward(self, x) -> Tensor:
        return F.mul(_ACTIVATIONS[self.activation](x), self.gamma)

    def extra_repr(self) -> str:
        return f"{self.activation}, gamma={self.gamma:.4f}"


@register_with_arguments
class NFBlock(Block):
    """A normalizer-free pre-activation basic block (module docstring):

        a = act(x / beta)                         (scaled activation, ``act1``)
        out = conv2(act(conv1(a)))                (3x3 ScaledStdConv2D, ``stride`` on conv1)
        return alpha · [skip_gain] · out + shortcut

    shortcut = x, or ``downsample`` (1x1 ScaledStdConv2D with the stride) of a when the block
    changes the stride or the width (a transition block). ``skipinit`` adds the learnable
    scalar ``skip_gain``, started at 0."""

    default_name = "nf_block"

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, alpha: float = 0.2,
                 beta: float = 1.0, activation: str = "relu", skipinit: bool = False, name: str | None = None):
        super().__init__(name=name)
        self.in_channels = positive_int(in_channels, "NFBlock: in_channels")
        self.out_channels = positive_int(out_channels, "NFBlock: out_channels")
        if stride not in (1, 2):
            raise ValueError(f"NFBlock: stride must be 1 or 2, got {stride!r}")
        self.stride = stride
        self.alpha = _positive_float(alpha, "NFBlock: alpha")
        self.beta = _positive_float(beta, "NFBlock: beta")
        self.skipinit = bool(skipinit)
        self.is_transition = stride != 1 or in_channels != out_channels
        self.act1 = ScaledActivation(activation, name="act1")
        self.conv1 = nn.ScaledStdConv2D(out_channels, 3, stride=stride, padding=1, name="conv1")
        self.act2 = ScaledActivation(activation, name="act2")
        self.conv2 = nn.ScaledStdConv2D(out_channels, 3, padding=1, name="conv2")
        if self.is_transition:
            self.downsample = nn.ScaledStdConv2D(out_channels, 1, stride=stride, name="downsample")

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.in_channels)
        normalized = step(self.act1, shape)
        out = step(self.conv2, step(self.act2, step(self.conv1, normalized)))
        short = step(self.downsample, normalized) if self.is_transition else shape
        return residual_sum(self, out, short)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        if self.skipinit:
            dtype = self.conv1.weight.dtype
            self.add_parameter("skip_gain", nn.init.get("zeros")((1,), 1, 1, dtype))

    def forward(self, x) -> Tensor:
        normalized = self.act1(F.mul(x, 1.0 / self.beta))
        out = self.conv2(self.act2(self.conv1(normalized)))
        out = F.mul(out, self.alpha)
        if self.skipinit:
            out = F.mul(out, self._parameters["skip_gain"])
        shortcut = self.downsample(normalized) if self.is_transition else x
        return F.add(out, shortcut)

    def extra_repr(self) -> str:
        return (f"{self.in_channels} -> {self.out_channels}, stride={self.stride}, alpha={self.alpha:.3g}, "
                f"beta={self.beta:.4g}{', skipinit' if self.skipinit else ''}")


def _positive_ints(values, what: str) -> tuple[int, ...]:
    items = tuple(values) if isinstance(values, (tuple, list)) else ()
    if not items or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in items):
        raise ValueError(f"{what} must be a non-empty sequence of positive ints, got {values!r}")
    return items


@register_with_arguments
class NFResNet(Block):
    """A normalizer-free ResNet (module docstring): ``depths`` blocks per stage of ``widths``
    channels (stride 2 at the start of every stage but the first), residual scale ``alpha``,
    scaled ``activation`` ('relu', 'gelu', 'silu', 'tanh'), optional ``skipinit``. The stem:
    a ``stem_kernel`` x ``stem_kernel`` ScaledStdConv2D with ``stem_stride`` to
    ``stem_channels``, then a 3x3/2 max pool when ``stem_pool``. Sub-layers ``stem``,
    [``pool``], ``stages`` (a Sequential of Sequentials of blocks), ``final_act``, ``avgpool``,
    ``dropout``, ``fc``. Outputs logits."""

    default_name = "nf_resnet"

    def __init__(self, depths: Sequence[int] = (2, 2, 2, 2), widths: Sequence[int] = (64, 128, 256, 512),
                 num_classes: int = 1000, stem_channels: int = 64, stem_kernel: int = 7, stem_stride: int = 2,
                 stem_pool: bool = True, alpha: float = 0.2, activation: str = "relu", skipinit: bool = False,
                 dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        depths = _positive_ints(depths, "NFResNet: depths")
        widths = _positive_ints(widths, "NFResNet: widths")
        if len(depths) != len(widths):
            raise ValueError(f"NFResNet: depths and widths must be equally long, got {depths!r} and {widths!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"NFResNet: dropout must be in [0, 1), got {dropout!r}")
        alpha = _positive_float(alpha, "NFResNet: alpha")
        _activation_name(activation, "NFResNet")
        self.stem = nn.ScaledStdConv2D(positive_int(stem_channels, "NFResNet: stem_channels"), stem_kernel,
                                       stride=stem_stride, padding=(stem_kernel - 1) // 2, name="stem")
        self.stem_pool = bool(stem_pool)
        if self.stem_pool:
            self.pool = nn.MaxPool2D(3, stride=2, padding=1, name="pool")
        stages, channels, expected_var = [], stem_channels, 1.0
        for s, (depth, width) in enumerate(zip(depths, widths)):
            blocks = []
            for b in range(depth):
                stride = 2 if s > 0 and b == 0 else 1
                block = NFBlock(channels, width, stride, alpha, math.sqrt(expected_var), activation, skipinit,
                                name=str(b))
                # a transition block's shortcut starts again from the unit-variance input
                expected_var = (1.0 if block.is_transition else expected_var) + alpha**2
                blocks.append(block)
                channels = width
            stages.append(nn.Sequential(*blocks, name=str(s)))
        self.stages = nn.Sequential(*stages, name="stages")
        #: Var(h) expected at the output of the last block.
        self.expected_var = expected_var
        self.final_act = ScaledActivation(activation, name="final_act")
        self.avgpool = nn.GlobalAvgPool2D(name="avgpool")
        self.dropout = nn.Dropout(dropout, name="dropout")
        self.fc = nn.Dense(positive_int(num_classes, "NFResNet: num_classes"), name="fc")

    def _body(self):
        return [self.stem, *([self.pool] if self.stem_pool else []), self.stages]

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        for layer in self._body():
            shape = step(layer, shape)
        for layer in (self.final_act, self.avgpool, self.dropout, self.fc):
            shape = step(layer, shape)
        return shape

    def features(self, x) -> Tensor:
        """The last stage's output h (before the final activation)."""
        for layer in self._body():
            x = layer(x)
        return x

    def forward(self, x) -> Tensor:
        h = self.final_act(F.mul(self.features(x), 1.0 / math.sqrt(self.expected_var)))
        return self.fc(self.dropout(self.avgpool(h)))


def nf_resnet18(num_classes: int = 1000, **options) -> NFResNet:
    """NF-ResNet-18: ResNet-18's layout (2, 2, 2, 2 basic blocks of 64-512 channels, 7x7/2 stem
    and max pool) without batch norm; ``options`` go to :class:`NFResNet`."""
    return NFResNet((2, 2, 2, 2), (64, 128, 256, 512), num_classes, **options)


def nf_resnet34(num_classes: int = 1000, **options) -> NFResNet:
    """NF-ResNet-34: ResNet-34's layout (3, 4, 6, 3 basic blocks) without batch norm."""
    return NFResNet((3, 4, 6, 3), (64, 128, 256, 512), num_classes, **options)


def nf_resnet_cifar(depth: int = 20, num_classes: int = 10, width: int = 16, **options) -> NFResNet:
    """The CIFAR layout (depth = 6n + 2: a 3x3 stem, three stages of n blocks of ``width``,
    2 ``width`` and 4 ``width`` channels) without batch norm."""
    if not (isinstance(depth, int) and depth >= 8 and (depth - 2) % 6 == 0):
        raise ValueError(f"nf_resnet_cifar: depth must be 6n + 2 with n >= 1 (8, 14, 20, ...), got {depth!r}")
    n = (depth - 2) // 6
    return NFResNet((n, n, n), (width, 2 * width, 4 * width), num_classes, stem_channels=width, stem_kernel=3,
                    stem_stride=1, stem_pool=False, **options)
