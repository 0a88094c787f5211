"""Squeeze-and-excitation (Hu et al. 2018, "Squeeze-and-Excitation Networks") and the
convolution - normalization - activation unit of the newer zoo models (torchvision's
``Conv2dNormActivation``).

A squeeze-and-excitation block reweights the channels of a volume x (H x W x C) by how much
the image as a whole calls for them:

    s = mean over the pixels of x                      (squeeze: one value per channel, 1 x 1 x C)
    e = sigma(W_2 delta(W_1 s + b_1) + b_2)            (excitation: C -> C_sq -> C, gates in (0, 1))
    out = e · x                                        (each channel scaled by its gate)

W_1, W_2 are 1x1 convolutions named ``fc1`` and ``fc2`` (torchvision.ops.SqueezeExcitation),
delta is ``activation`` (ReLU; SiLU in EfficientNet) and sigma ``scale_activation``
(sigmoid; hard sigmoid in MobileNet v3). It costs 2 C C_sq + C_sq + C parameters and almost
no computation, since it runs on the 1 x 1 squeezed volume.
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import Block, nhwc_channels
from lamina.nn.layer import register_layer
from lamina.nn.module import Module

__all__ = ["ACTIVATION_LAYERS", "SqueezeExcitation", "activation_layer", "conv_norm_activation"]

ACTIVATION_LAYERS: dict[str, type[Module]] = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "hard_swish": nn.HardSwish, "hard_sigmoid": nn.HardSigmoid,
    "silu": nn.SiLU, "sigmoid": nn.Sigmoid, "gelu": nn.GELU,
}


def activation_layer(activation: str, name: str | None = None) -> Module:
    """The layer of the activation called ``activation`` ('relu', 'hard_swish', 'silu', ...)."""
    layer = ACTIVATION_LAYERS.get(activation) if isinstance(activation, str) else None
    if layer is None:
        raise ValueError(f"expected an activation among {sorted(ACTIVATION_LAYERS)}, got {activation!r}")
    return layer(name=name)


def conv_norm_activation(filters: int, kernel_size: int, stride: int = 1, groups: int = 1,
                         activation: str | None = "relu", eps: float = 1e-5, momentum: float = 0.9,
                         name: str | None = None, dilation: int = 1) -> nn.Sequential:
    """Conv2D (padding (f - 1) / 2 dilation, no bias) - BatchNorm - activation as a Sequential of
    layers named '0', '1', '2' (the last left out when ``activation`` is None): torchvision's
    ``Conv2dNormActivation``. ``momentum`` follows lamina's convention (0.9 = PyTorch's 0.1)."""
    layers = [nn.Conv2D(filters, kernel_size, stride=stride, padding=(kernel_size - 1) // 2 * dilation,
                        groups=groups, use_bias=False, dilation=dilation, name="0"),
              nn.BatchNorm(momentum=momentum, eps=eps, name="1")]
    if activation is not None:
        layers.append(activation_layer(activation, name="2"))
    return nn.Sequential(*layers, name=name)


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


@register_layer
class SqueezeExcitation(Block):
    """out = sigma(fc2(delta(fc1(mean_hw(x))))) · x (see the module docstring): ``input_channels``
    C, ``squeeze_channels`` C_sq, ``activation`` delta and ``scale_activation`` sigma given by
    name. Sub-layers ``avgpool``, ``fc1``, ``activation``, ``fc2``, ``scale_activation``, as
    torchvision.ops.SqueezeExcitation."""

    default_name = "squeeze_excitation"

    def __init__(self, input_channels: int, squeeze_channels: int, activation: str = "relu",
                 scale_activation: str = "sigmoid", name: str | None = None):
        super().__init__(name=name)
        self.input_channels = _positive_int(input_channels, "SqueezeExcitation: input_channels")
        self.squeeze_channels = _positive_int(squeeze_channels, "SqueezeExcitation: squeeze_channels")
        self.activation_name, self.scale_activation_name = activation, scale_activation
        self.avgpool = nn.AdaptiveAvgPool2D(1, name="avgpool")
        self.fc1 = nn.Conv2D(squeeze_channels, 1, name="fc1")
        self.activation = activation_layer(activation, name="activation")
        self.fc2 = nn.Conv2D(input_channels, 1, name="fc2")
        self.scale_activation = activation_layer(scale_activation, name="scale_activation")

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.input_channels, "input_channels")
        squeezed = step(self.activation, step(self.fc1, step(self.avgpool, shape)))
        step(self.scale_activation, step(self.fc2, squeezed))
        return shape

    def forward(self, x) -> Tensor:
        scale = self.activation(self.fc1(self.avgpool(x)))
        scale = self.scale_activation(self.fc2(scale))
        return F.mul(scale, x)

    def get_config(self) -> dict:
        return {"input_channels": self.input_channels, "squeeze_channels": self.squeeze_channels,
                "activation": self.activation_name, "scale_activation": self.scale_activation_name,
                "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.input_channels} -> {self.squeeze_channels} -> {self.input_channels}"
