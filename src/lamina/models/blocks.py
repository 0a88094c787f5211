"""Building blocks shared by the architecture zoo.

* :class:`Block`: the base of every multi-layer block (residual blocks, inception modules,
  auxiliary heads, whole branching networks). A block owns named sub-layers created in its
  constructor (so the names, and the state-dict keys, exist before any weight does) and
  describes its data flow once, in :meth:`Block.trace`, which serves both ``build`` (each
  sub-layer is built for the shape that reaches it) and ``compute_output_shape`` (shapes
  only, no weights allocated).
* :class:`ConvBN`: convolution without bias -> batch normalization -> activation
  (torchvision's ``BasicConv2d``, every convolution of GoogLeNet and Inception-v3).
* :class:`BranchingNetwork`: a main path of named layers with auxiliary classifier heads
  tapping it (GoogLeNet, Inception-v3).
* :class:`AdaptiveAvgPool2D`: average pooling to a fixed output size (torchvision's
  ``AdaptiveAvgPool2d``: VGG's 7x7 pool before the classifier, GoogLeNet's 4x4 auxiliary pool).

Everything works on NHWC batches.
"""

from __future__ import annotations

from collections.abc import Callable

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.adaptive_pool import adaptive_windows
from lamina.nn import Activation, BatchNorm, Conv2D, Softmax, get_activation
from lamina.nn.adaptive import AdaptiveAvgPool2D
from lamina.nn.layer import check_shape_ndim, register_layer
from lamina.nn.module import Module

__all__ = [
    "AdaptiveAvgPool2D", "Block", "BranchingNetwork", "ConvBN", "adaptive_windows", "build_layer", "check_input",
    "classifier_layers", "concat_shapes", "finish", "identity_shortcut", "residual_sum",
]

Shape = tuple
Step = Callable[[Module, Shape], Shape]


def build_layer(layer: Module, input_shape) -> Shape:
    """Build ``layer`` for ``input_shape`` if it is not built yet; return its output shape."""
    shape = tuple(input_shape)
    if not layer.built:
        layer.build(shape)
        layer.built = True
        if layer.build_input_shape is None:
            layer.build_input_shape = shape
    return tuple(layer.compute_output_shape(shape))


def infer_shape(layer: Module, input_shape) -> Shape:
    """The output shape of ``layer`` by shape inference alone."""
    return tuple(layer.compute_output_shape(tuple(input_shape)))


def nhwc(layer: Module, input_shape) -> Shape:
    return check_shape_ndim(layer, input_shape, 4, "a 4-D NHWC shape (batch, height, width, channels)")


def nhwc_channels(layer: Module, input_shape, channels: int, name: str = "in_channels") -> Shape:
    """:func:`nhwc`, with the channel count checked against the ``channels`` a block was made
    for (its argument ``name``)."""
    shape = nhwc(layer, input_shape)
    if shape[3] is not None and shape[3] != channels:
        raise ShapeError(f"{layer._label()}: got an input of shape {tuple(shape)}; expected {channels} channels "
                         f"(the block was made for {name}={channels})")
    return shape


def concat_shapes(layer: Module, shapes: list[Shape]) -> Shape:
    """The shape of NHWC volumes joined along the channels (an inception module's output)."""
    first = shapes[0]
    for s in shapes[1:]:
        if any(a is not None and b is not None and a != b for a, b in zip(s[1:3], first[1:3])):
            raise ShapeError(f"{layer._label()}: the branches give maps of shapes {shapes}; expected "
                             "equal heights and widths to concatenate along the channels")
    channels = [s[3] for s in shapes]
    return (first[0], first[1], first[2], None if None in channels else sum(channels))


def identity_shortcut(layer: Module, shape: Shape, in_channels, out_channels: int, stride: int) -> Shape:
    """``shape``, the shortcut of a residual ``layer`` without a downsampling projection:
    refused (ShapeError) unless the block keeps its ``in_channels`` and has stride 1."""
    if in_channels != out_channels or stride != 1:
        raise ShapeError(f"{layer._label()}: the identity shortcut of an input of shape {tuple(shape)} does not "
                         f"match the block's output ({out_channels} channels, stride {stride}); create the block "
                         "with downsample=True")
    return shape


def residual_sum(layer: Module, out: Shape, short: Shape) -> Shape:
    """The shape of branch + shortcut in a residual ``layer``: ``out``, which must match the
    shortcut's ``short`` on every axis but the batch (else a ShapeError)."""
    if tuple(out[1:]) != tuple(short[1:]):
        raise ShapeError(f"{layer._label()}: the residual branch gives {tuple(out)} but the shortcut {tuple(short)}")
    return out


def check_input(input_shape, what: str) -> tuple[int, int, int]:
    """A builder's ``input_shape`` (height, width, channels) as a tuple of ints."""
    try:
        shape = tuple(int(n) for n in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{what}: input_shape must be (height, width, channels), got {input_shape!r}")
    return shape  # type: ignore[return-value]


def finish(model: Module, input_shape) -> Module:
    """Record the input shape a zoo model is meant for as ``model.input_shape`` = (None, h, w, c)
    (the model itself stays unbuilt)."""
    model.input_shape = (None, *input_shape)
    return model


def classifier_layers(activation: str | None) -> list[Module]:
    """The optional output activation of a classifier, as a layer named 'predictions':
    ``Softmax`` for 'softmax' (which the Trainer fuses with the cross-entropy), else
    ``Activation(name)``; none for None (the model outputs logits)."""
    if activation is None:
        return []
    if activation == "softmax":
        return [Softmax(name="predictions")]
    return [Activation(activation, name="predictions")]


class Block(Module):
    """A layer made of named sub-layers with a data flow written once in :meth:`trace`.

    ``trace(shape, step)`` walks the block the way ``forward`` does, calling
    ``step(sub_layer, input_shape) -> output_shape`` for every sub-layer it passes through;
    ``build`` runs it with a step that builds each sub-layer, ``compute_output_shape`` with
    one that only infers shapes.
    """

    def trace(self, shape: Shape, step: Step) -> Shape:
        raise NotImplementedError

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        self.trace(shape, build_layer)
        self.build_input_shape = shape
        self.built = True

    def compute_output_shape(self, input_shape):
        return self.trace(tuple(input_shape), infer_shape)


class PathBlock(Block):
    """A block whose sub-layers form one chain, listed by :meth:`_path` in order; its input
    is checked by :meth:`_input_shape` (an NHWC map unless a subclass says otherwise)."""

    def _path(self) -> tuple:
        raise NotImplementedError

    def _input_shape(self, shape) -> Shape:
        return nhwc(self, shape)

    def trace(self, shape, step):
        shape = self._input_shape(shape)
        for layer in self._path():
            shape = step(layer, shape)
        return shape

    def forward(self, x) -> Tensor:
        for layer in self._path():
            x = layer(x)
        return x


def _activation_fn(spec: str | None):
    if spec is not None and not isinstance(spec, str):
        raise TypeError(f"expected an activation name or None, got {spec!r}")
    return get_activation(spec)


@register_layer
class ConvBN(Block):
    """Conv2D (no bias) -> BatchNorm -> activation, sub-layers ``conv`` and ``bn``.

    torchvision's ``BasicConv2d`` (GoogLeNet, Inception-v3, with ``eps=0.001``);
    ``activation`` is 'relu', 'relu6' or None.
    ``momentum`` follows lamina's convention (0.9 = PyTorch's 0.1).
    """

    default_name = "conv_bn"

    def __init__(self, filters: int, kernel_size, stride=1, padding=0, groups: int = 1, eps: float = 1e-5,
                 momentum: float = 0.9, activation: str | None = "relu", name: str | None = None):
        super().__init__(name=name)
        self.conv = Conv2D(filters, kernel_size, stride=stride, padding=padding, use_bias=False, groups=groups,
                           name="conv")
        self.bn = BatchNorm(momentum=momentum, eps=eps, name="bn")
        self.act = _activation_fn(activation)
        self.activation = activation

    def trace(self, shape, step):
        return step(self.bn, step(self.conv, nhwc(self, shape)))

    def forward(self, x) -> Tensor:
        x = self.bn(self.conv(x))
        return self.act(x) if self.act is not None else x

    def get_config(self) -> dict:
        conv = self.conv
        return {
            "filters": conv.filters,
            "kernel_size": list(conv.kernel_size),
            "stride": list(conv.stride),
            "padding": conv.padding if isinstance(conv.padding, str) else list(conv.padding),
            "groups": conv.groups,
            "eps": self.bn.eps,
            "momentum": self.bn.momentum,
            "activation": self.activation,
            "name": self.name,
        }

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}"


class BranchingNetwork(Block):
    """A network whose main path is a sequence of named sub-layers (``main_path``), with
    auxiliary classifier heads tapping the main path after some of them (``taps``: layer name
    -> head name) when ``aux_logits`` is set (GoogLeNet, Inception-v3).

    ``forward`` returns the main output; in training mode with ``aux_logits`` it returns
    ``(logits, aux_k, ..., aux_1)``, the deepest head first as torchvision does. Iterating
    the network yields the main-path layers in order.
    """

    main_path: tuple[str, ...] = ()
    taps: dict[str, str] = {}
    aux_logits: bool = False

    def __iter__(self):
        return iter([self._modules[name] for name in self.main_path])

    @property
    def layers(self) -> list[Module]:
        """The main-path layers in order (the auxiliary heads left out)."""
        return list(self)

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        for name in self.main_path:
            shape = step(self._modules[name], shape)
            head = self.taps.get(name)
            if head is not None and self.aux_logits:
                step(self._modules[head], shape)
        return shape

    def forward(self, x):
        heads = []
        for name in self.main_path:
            x = self._modules[name](x)
            head = self.taps.get(name)
            if head is not None and self.aux_logits and self.training:
                heads.append(self._modules[head](x))
        if heads:
            return (x, *reversed(heads))
        return x
