"""ControlNet (Zhang, Rao and Agrawala 2023): spatial conditioning (edges, masks, poses) added
to a frozen, pretrained :class:`~lamina.models.DenoisingUNet`.

A :class:`ControlNet` holds a trainable copy of the denoiser's encoder (time and class
features, stem, down path, middle block), its weights copied from the denoiser when the
ControlNet is built. With the control image c (same height and width as x_t) it computes

    h_0 = stem(x_t) + Z_in(E(c))                           E: 3x3 convolutions with SiLU
    (s_0 .. s_{L-1}, m) = the copy's down path and middle block from h_0
    r_l = scale * Z_l(s_l),   r_mid = scale * Z_mid(m)

where every Z is a convolution whose weights and biases start at zero (Z_in a 3x3 one to the
stem's channels, the others 1x1) and scale is ``conditioning_scale``. A
:class:`ControlledDenoiser` adds r_l to the frozen denoiser's skip connections and r_mid to its
middle block's output. At initialisation every r is zero, so the controlled denoiser is the
pretrained one exactly; the gradient reaches the zero convolutions' weights at once (their
inputs are the copy's nonzero features) and the copy only once those weights have moved.

``ControlledDenoiser(x_t, t, y)`` has the denoiser's call signature, so it plugs into
:class:`~lamina.models.DiffusionModel` (loss, samplers, classifier-free guidance): give the
control images by ``set_control`` (or ``control=`` in a direct call). A control batch of n
rows serves inputs of any multiple of n rows (tiled), such as guidance's doubled batch; without
control the output is the denoiser's own. The control image has the input's height and width
(no strided encoder for full-resolution controls of latent-space denoisers), and there is no
ControlNet for :class:`~lamina.models.DiT` (the paper's ControlNet-Transformer variant).

Example::

    controlnet = ControlNet(pretrained_unet, conditioning_channels=1)
    controlled = ControlledDenoiser(pretrained_unet, controlnet)   # freezes pretrained_unet
    model = DiffusionModel(controlled, schedule="cosine", num_timesteps=100)
    controlled.set_control(masks)            # (N, H, W, 1), one per training image
    loss = model.loss(images)                # only controlnet's weights learn
    controlled.set_control(new_masks)
    samples = model.sample(len(new_masks), steps=20, method="ddim")
"""

from __future__ import annotations

import numbers

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.diffusion_nets import DenoisingUNet, TimeResidualBlock, _TimeConditioned, unet_down_path
from lamina.nn import Conv2D, ModuleList
from lamina.nn.layer import describe, input_error, layer_from_config, layer_to_config, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["ControlNet", "ControlledDenoiser"]

_UNET_SETTINGS = ("base_filters", "multipliers", "groups", "time_dim", "embed_dim", "num_classes")


def _scale(value, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{who}: conditioning_scale must be a finite number, got {value!r}")
    return float(value)


@register_layer
class ControlNet(_TimeConditioned):
    """The trainable side of ControlNet for a :class:`~lamina.models.DenoisingUNet` ``denoiser``
    (see the module notes): ``forward(x_t, t, control, y=None)`` returns the L + 1 residuals
    [r_0, ..., r_{L-1}, r_mid] that :meth:`DenoisingUNet.forward` adds through ``residuals=``.

    ``denoiser``: the pretrained U-Net, whose encoder weights are copied when this is built
    (its first call, or ``build``); or the U-Net's config dict (a ControlNet rebuilt from its
    config, whose weights are then loaded). ``conditioning_channels``: the control image's
    channels. ``conditioning_filters``: the widths of the 3x3 SiLU convolutions that encode
    the control image before the zero convolution to the stem's width. ``conditioning_scale``:
    the factor on every residual (an attribute that may be changed at sampling time).
    """

    def __init__(self, denoiser, conditioning_channels: int, conditioning_filters=(16, 16),
                 conditioning_scale: float = 1.0, name: str | None = None):
        if isinstance(denoiser, DenoisingUNet):
            settings, source = denoiser.get_config(), denoiser
        elif isinstance(denoiser, dict):
            settings, source = denoiser, None
        else:
            raise TypeError(f"ControlNet: denoiser must be a DenoisingUNet (or its config dict), got "
                            f"{type(denoiser).__name__}")
        missing = [key for key in _UNET_SETTINGS if key not in settings]
        if missing:
            raise ValueError(f"ControlNet: the denoiser config lacks {missing}")
        settings = {key: settings[key] for key in _UNET_SETTINGS}
        super().__init__(settings["time_dim"], settings["embed_dim"], settings["num_classes"], name)
        self.settings = {**settings, "multipliers": list(settings["multipliers"])}
        self.conditioning_channels = positive_int(conditioning_channels, "ControlNet: conditioning_channels")
        widths = (conditioning_filters,) if isinstance(conditioning_filters, int) else tuple(conditioning_filters)
        self.conditioning_filters = tuple(positive_int(n, "ControlNet: conditioning_filters") for n in widths)
        self.conditioning_scale = _scale(conditioning_scale, "ControlNet")
        object.__setattr__(self, "_source", source)   # read once at build, not a sub-module

        groups = positive_int(settings["groups"], "ControlNet: groups")
        filters = [settings["base_filters"] * m for m in settings["multipliers"]]
        self.levels = len(filters)
        # the conditioning encoder E and its zero convolution Z_in to the stem's width
        self.hint_convs = ModuleList([Conv2D(n, 3, padding="same", activation="silu", name=f"hint{k}")
                                      for k, n in enumerate(self.conditioning_filters)])
        self.hint_out = Conv2D(filters[0], 3, padding="same", kernel_init="zeros", name="hint_out")
        # the trainable copy of the encoder, named as in DenoisingUNet so that weights copy by name
        self.stem = Conv2D(filters[0], 3, padding="same", name="stem")
        self.down_blocks = ModuleList([TimeResidualBlock(f, groups, name=f"down{k}") for k, f in enumerate(filters)])
        self.downsamplers = ModuleList([Conv2D(f, 3, stride=2, padding="same", name=f"downsample{k}")
                                        for k, f in enumerate(filters[:-1])])
        self.middle = TimeResidualBlock(filters[-1], groups, name="middle")
        # the zero convolutions Z_l on the skips and Z_mid on the middle block
        self.zero_convs = ModuleList([Conv2D(f, 1, kernel_init="zeros", name=f"zero{k}")
                                      for k, f in enumerate([*filters, filters[-1]])])
        self.channels: int | None = None
        if source is not None and source.built:
            self._build_as_called(_sample_shape(source))

    def _build_as_called(self, shape: tuple) -> None:
        """Build for inputs x of ``shape`` (None, H, W, C), recorded as a call on (x, t, control) would."""
        self.build(shape)
        self.built = True
        object.__setattr__(self, "build_input_shape", [shape, (None,), (*shape[:3], self.conditioning_channels)])

    def copied_names(self) -> list[str]:
        """The state-dict names of the encoder copy (those shared with the denoiser)."""
        own = ("hint_convs.", "hint_out.", "zero_convs.")
        return [key for key in self.state_dict() if not key.startswith(own)]

    def build(self, input_shape) -> None:
        shape = tuple(input_shape[0] if isinstance(input_shape, list) else input_shape)
        if len(shape) != 4 or any(n is None for n in shape[1:]):
            raise ShapeError(f"{self._label()}: got an input shape {shape}; expected (batch, height, width, "
                             "channels) with known sizes")
        self._check_size(shape)
        self.channels = int(shape[3])
        dtype = backend.get_default_dtype()
        x = Tensor(np.zeros((1, *shape[1:]), dtype=dtype), dtype=dtype)
        control = np.zeros((1, *shape[1:3], self.conditioning_channels), dtype=dtype)
        self.built = True
        with no_grad():
            self.forward(x, np.zeros(1, dtype=np.int64), control)
        source = self._source
        if source is not None:
            if not source.built:
                source.build((1, *shape[1:]))
            self.copy_encoder_from(source)
            object.__setattr__(self, "_source", None)

    def copy_encoder_from(self, denoiser: DenoisingUNet) -> None:
        """Set the encoder copy to ``denoiser``'s weights (time and class features, stem, down
        path, middle block); the conditioning encoder and zero convolutions are left as they are."""
        theirs = denoiser.state_dict()
        names = self.copied_names()
        missing = [key for key in names if key not in theirs]
        if missing:
            raise ValueError(f"{self._label()}: the denoiser has no weights {missing}; it must be the U-Net this "
                             "ControlNet was made for")
        self.load_state_dict({key: backend.to_numpy(theirs[key]) for key in names}, strict=False)

    def _check_size(self, shape) -> None:
        factor = 2 ** (self.levels - 1)
        if shape[1] % factor or shape[2] % factor:
            raise ShapeError(f"{self._label()}: got an input of shape {tuple(shape)}; its height and width must be "
                             f"divisible by 2^(levels - 1) = {factor} ({self.levels} levels)")

    def _control_for(self, control, x: Tensor) -> Tensor:
        if not isinstance(control, Tensor):
            control = Tensor(backend.xp.asarray(control, dtype=x.dtype))
        n, h, w = x.shape[:3]
        if control.ndim != 4 or tuple(control.shape[1:]) != (h, w, self.conditioning_channels) \
                or control.shape[0] == 0 or n % control.shape[0]:
            raise ShapeError(f"{self._label()}: got a control of {describe(control)} for inputs of {describe(x)}; "
                             f"expected (m, {h}, {w}, {self.conditioning_channels}) with m dividing {n}")
        repeats = n // control.shape[0]
        return control if repeats == 1 else F.concat([control] * repeats, axis=0)

    def forward(self, x, t, control, y=None) -> list[Tensor]:
        x = as_tensor(x)
        if x.ndim != 4 or x.shape[3] != self.channels:
            raise input_error(self, x, f"a 4-D NHWC batch (batch, height, width, {self.channels})")
        self._check_size(x.shape)
        hint = self._control_for(control, x)
        for conv in self.hint_convs:
            hint = conv(hint)
        e = self.time_features(t, y, x)
        skips, middle = unet_down_path(self, self.stem(x) + self.hint_out(hint), e)
        residuals = [zero(h) for zero, h in zip(self.zero_convs, [*skips, middle])]
        return residuals if self.conditioning_scale == 1 else [self.conditioning_scale * r for r in residuals]

    def get_config(self) -> dict:
        return {"denoiser": dict(self.settings), "conditioning_channels": self.conditioning_channels,
                "conditioning_filters": list(self.conditioning_filters),
                "conditioning_scale": self.conditioning_scale, "name": self.name}

    def extra_repr(self) -> str:
        return (f"conditioning_channels={self.conditioning_channels}, levels={self.levels}, "
                f"conditioning_scale={self.conditioning_scale}")


@register_layer
class ControlledDenoiser(Module):
    """A frozen ``denoiser`` steered by a ``controlnet`` (see the module notes): called as the
    denoiser, ``(x_t, t, y=None)``, it returns ``denoiser(x_t, t, y, residuals=controlnet(x_t,
    t, control, y))``. Construction (and build) freezes the denoiser's parameters, so an
    optimizer given :meth:`parameters` moves only the ControlNet's. ``control``: the images set
    by :meth:`set_control`, or given as ``control=`` to one call; None runs the denoiser alone.
    """

    def __init__(self, denoiser: DenoisingUNet, controlnet: ControlNet, name: str | None = None):
        super().__init__(name=name)
        if not isinstance(denoiser, DenoisingUNet):
            raise TypeError(f"ControlledDenoiser: denoiser must be a DenoisingUNet, got {type(denoiser).__name__}")
        if not isinstance(controlnet, ControlNet):
            raise TypeError(f"ControlledDenoiser: controlnet must be a ControlNet, got {type(controlnet).__name__}")
        mine = {key: value for key, value in denoiser.get_config().items() if key in _UNET_SETTINGS}
        if {**mine, "multipliers": list(mine["multipliers"])} != controlnet.settings:
            raise ValueError(f"ControlledDenoiser: the controlnet was made for a U-Net with {controlnet.settings}, "
                             f"not this denoiser's {mine}")
        self.denoiser, self.controlnet = denoiser, controlnet
        denoiser.freeze()
        self.control = None
        if denoiser.built:
            shape = _sample_shape(denoiser)
            _build_with_shape(self, shape)
            object.__setattr__(self, "build_input_shape", [shape, (None,)])

    @property
    def num_classes(self) -> int | None:
        return self.denoiser.num_classes

    @property
    def null_class(self) -> int | None:
        return self.denoiser.null_class

    def set_control(self, control) -> ControlledDenoiser:
        """Use ``control`` (m, H, W, conditioning_channels), or None for no control, in the
        calls that follow (the control is not saved with the model)."""
        self.control = control
        return self

    def build(self, input_shape) -> None:
        shape = tuple(input_shape[0] if isinstance(input_shape, list) else input_shape)
        sample = (None, *shape[1:])
        if not self.denoiser.built:
            _build_with_shape(self.denoiser, sample)
        if not self.controlnet.built:
            self.controlnet._build_as_called(sample)
        self.denoiser.freeze()
        self.built = True

    def forward(self, x, t, y=None, control=None) -> Tensor:
        control = self.control if control is None else control
        if control is None:
            return self.denoiser(x, t, y)
        return self.denoiser(x, t, y, residuals=self.controlnet(x, t, control, y))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0] if isinstance(input_shape, list) else input_shape)

    def get_config(self) -> dict:
        return {"denoiser": layer_to_config(self.denoiser), "controlnet": layer_to_config(self.controlnet),
                "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> ControlledDenoiser:
        config = dict(config)
        config["denoiser"] = layer_from_config(config["denoiser"])
        config["controlnet"] = layer_from_config(config["controlnet"])
        return cls(**config)


def _sample_shape(denoiser: DenoisingUNet) -> tuple:
    """(None, H, W, C): the input shape a built U-Net was built for."""
    shape = denoiser.build_input_shape
    if isinstance(shape, list):
        shape = shape[0]
    if shape is None or len(shape) != 4:
        side = 2 ** (len(denoiser.multipliers) - 1)
        return (None, side, side, denoiser.channels)
    return (None, *(int(n) for n in shape[1:]))


def _build_with_shape(layer: Module, shape: tuple) -> None:
    """``layer.build(shape)``, recorded as the shape it was built for (as a first call does)."""
    layer.build(shape)
    layer.built = True
    object.__setattr__(layer, "build_input_shape", shape)
