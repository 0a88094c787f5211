"""ControlNet (Zhang, Rao and Agrawala 2023): spatial conditioning (edges, masks, poses) added
to a frozen, pretrained :class:`~lamina.models.DenoisingUNet` (:class:`ControlNet`) or
:class:`~lamina.models.DiT` (:class:`DiTControlNet`).

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

:class:`DiTControlNet` is the transformer form (ControlNet-Transformer of the paper's
appendix, PixArt-delta, Chen et al. 2024): a trainable copy of the DiT's patch embedding and
first N blocks, the control image patch-embedded by a zero-initialised projection added to the
copy's tokens, and zero-initialised Dense layers on the copy's block outputs, which the
controlled DiT adds to the outputs of its own blocks 1..N (see :class:`DiTControlNet`).

``ControlledDenoiser(x_t, t, y)`` has the denoiser's call signature, so it plugs into
:class:`~lamina.models.DiffusionModel` (loss, samplers, classifier-free guidance): give the
control images by ``set_control`` (or ``control=`` in a direct call). A control batch of n
rows serves inputs of any multiple of n rows (tiled), such as guidance's doubled batch; without
control the output is the denoiser's own. The control image has the input's height and width
(no strided encoder for full-resolution controls of latent-space denoisers).

Example::

    controlnet = ControlNet(pretrained_unet, conditioning_channels=1)
    controlled = ControlledDenoiser(pretrained_unet, controlnet)   # freezes pretrained_unet
    model = DiffusionModel(controlled, schedule="cosine", num_timesteps=100)
    controlled.set_control(masks)            # (N, H, W, 1), one per training image
    loss = model.loss(images)                # only controlnet's weights learn
    controlled.set_control(new_masks)
    samples = model.sample(len(new_masks), steps=20, method="ddim")
    # a DiT the same way: ControlledDenoiser(dit, DiTControlNet(dit, conditioning_channels=1))
"""

from __future__ import annotations

import numbers

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.diffusion_nets import DenoisingUNet, TimeResidualBlock, _TimeConditioned, unet_down_path
from lamina.models.dit import DiT, DiTBlock
from lamina.models.mae import sincos_position_embedding
from lamina.nn import Conv2D, Dense, ModuleList
from lamina.nn.layer import describe, input_error, layer_from_config, layer_to_config, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["ControlNet", "ControlledDenoiser", "DiTControlNet"]

_UNET_SETTINGS = ("base_filters", "multipliers", "groups", "time_dim", "embed_dim", "num_classes")
_DIT_SETTINGS = ("image_size", "patch_size", "in_channels", "dim", "depth", "num_heads", "num_classes", "mlp_ratio",
                 "time_dim")


def _scale(value, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{who}: conditioning_scale must be a finite number, got {value!r}")
    return float(value)


class _ControlBase(_TimeConditioned):
    """What both ControlNets share: the copy named as in its denoiser (so that weights copy by
    name), the control input's checks and tiling, and a build recorded as a call on (x, t, control)."""

    _own_prefixes: tuple[str, ...] = ()
    denoiser_kind: type = Module
    denoiser_label = "denoiser"
    settings: dict

    @classmethod
    def settings_of(cls, denoiser) -> dict:
        """The part of ``denoiser``'s config that the copy depends on (as ``settings`` holds it)."""
        raise NotImplementedError

    def _build_as_called(self, shape: tuple) -> None:
        """Build for inputs x of ``shape`` (None, H, W, C), recorded as a call on (x, t, control) would."""
        self.build(shape)
        self.built = True
        object.__setattr__(self, "build_input_shape", [shape, (None,), (*shape[:3], self.conditioning_channels)])

    def _run_once_and_copy(self, shape: tuple) -> None:
        """Create the weights by one run (no graph) on zeros of ``shape`` (None, H, W, C) and, for a
        ControlNet made from a denoiser, copy that denoiser's weights into the copy."""
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
            self._copy_from(source)
            object.__setattr__(self, "_source", None)

    def copied_names(self) -> list[str]:
        """The state-dict names of the copy (those shared with the denoiser)."""
        return [key for key in self.state_dict() if not key.startswith(self._own_prefixes)]

    def _copy_from(self, denoiser: Module) -> None:
        theirs = denoiser.state_dict()
        names = self.copied_names()
        missing = [key for key in names if key not in theirs]
        if missing:
            raise ValueError(f"{self._label()}: the denoiser has no weights {missing}; it must be the "
                             f"{type(denoiser).__name__} this {type(self).__name__} was made for")
        self.load_state_dict({key: backend.to_numpy(theirs[key]) for key in names}, strict=False)

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

    def _scaled(self, residuals: list) -> list:
        return residuals if self.conditioning_scale == 1 else [self.conditioning_scale * r for r in residuals]


@register_layer
class ControlNet(_ControlBase):
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

    _own_prefixes = ("hint_convs.", "hint_out.", "zero_convs.")
    denoiser_kind, denoiser_label = DenoisingUNet, "U-Net"

    @classmethod
    def settings_of(cls, denoiser: DenoisingUNet) -> dict:
        mine = {key: value for key, value in denoiser.get_config().items() if key in _UNET_SETTINGS}
        return {**mine, "multipliers": list(mine["multipliers"])}

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

    def build(self, input_shape) -> None:
        shape = tuple(input_shape[0] if isinstance(input_shape, list) else input_shape)
        if len(shape) != 4 or any(n is None for n in shape[1:]):
            raise ShapeError(f"{self._label()}: got an input shape {shape}; expected (batch, height, width, "
                             "channels) with known sizes")
        self._check_size(shape)
        self.channels = int(shape[3])
        self._run_once_and_copy(shape)

    def copy_encoder_from(self, denoiser: DenoisingUNet) -> None:
        """Set the encoder copy to ``denoiser``'s weights (time and class features, stem, down
        path, middle block); the conditioning encoder and zero convolutions are left as they are."""
        self._copy_from(denoiser)

    def _check_size(self, shape) -> None:
        factor = 2 ** (self.levels - 1)
        if shape[1] % factor or shape[2] % factor:
            raise ShapeError(f"{self._label()}: got an input of shape {tuple(shape)}; its height and width must be "
                             f"divisible by 2^(levels - 1) = {factor} ({self.levels} levels)")

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
        return self._scaled([zero(h) for zero, h in zip(self.zero_convs, [*skips, middle])])

    def get_config(self) -> dict:
        return {"denoiser": dict(self.settings), "conditioning_channels": self.conditioning_channels,
                "conditioning_filters": list(self.conditioning_filters),
                "conditioning_scale": self.conditioning_scale, "name": self.name}

    def extra_repr(self) -> str:
        return (f"conditioning_channels={self.conditioning_channels}, levels={self.levels}, "
                f"conditioning_scale={self.conditioning_scale}")


@register_layer
class DiTControlNet(_ControlBase):
    """The trainable side of ControlNet for a :class:`~lamina.models.DiT` ``dit``, in the
    ControlNet-Transformer (PixArt-delta) form: ``forward(x_t, t, control, y=None)`` returns the N
    residuals [r_1, ..., r_N] that :meth:`DiT.forward` adds (through ``residuals=``) to the outputs
    of its blocks 1..N.

        h_0 = P(x_t) + pos + Z_in(c)       P: the copied patch embedding, Z_in a patch embedding
                                            of the control image c whose weights start at zero
        h_j = B_j(h_{j-1}, e),  r_j = scale * Z_j(h_j),   j = 1..N

    B_j the trainable copies of the DiT's first N blocks, e the copied time (and class)
    features, Z_j Dense layers whose weights and biases start at zero (so every r_j starts at
    zero). Unlike the paper, which feeds the copy the frozen model's hidden state, the copy
    here starts from its own patch embedding, as the U-Net ControlNet starts from its own stem.

    ``dit``: the pretrained DiT, whose weights are copied when this is built (its first call,
    or ``build``), or its config dict; ``conditioning_channels``: the control image's channels;
    ``num_control_blocks``: N (default half the depth, at least 1); ``conditioning_scale``: the
    factor on every residual (may be changed at sampling time).
    """

    _own_prefixes = ("hint_embed.", "zero_linears.")
    denoiser_kind, denoiser_label = DiT, "DiT"

    @classmethod
    def settings_of(cls, denoiser: DiT) -> dict:
        mine = {key: value for key, value in denoiser.get_config().items() if key in _DIT_SETTINGS}
        return {**mine, "image_size": list(mine["image_size"])}

    def __init__(self, dit, conditioning_channels: int, num_control_blocks: int | None = None,
                 conditioning_scale: float = 1.0, name: str | None = None):
        if isinstance(dit, DiT):
            settings, source = dit.get_config(), dit
        elif isinstance(dit, dict):
            settings, source = dit, None
        else:
            raise TypeError(f"DiTControlNet: dit must be a DiT (or its config dict), got {type(dit).__name__}")
        missing = [key for key in _DIT_SETTINGS if key not in settings]
        if missing:
            raise ValueError(f"DiTControlNet: the DiT config lacks {missing}")
        settings = {key: settings[key] for key in _DIT_SETTINGS}
        super().__init__(settings["time_dim"], settings["dim"], settings["num_classes"], name)
        self.settings = {**settings, "image_size": list(settings["image_size"])}
        self.conditioning_channels = positive_int(conditioning_channels, "DiTControlNet: conditioning_channels")
        depth = positive_int(settings["depth"], "DiTControlNet: depth")
        count = max(1, depth // 2) if num_control_blocks is None else positive_int(
            num_control_blocks, "DiTControlNet: num_control_blocks")
        if count > depth:
            raise ValueError(f"DiTControlNet: num_control_blocks {count} exceeds the DiT's depth {depth}")
        self.num_control_blocks = count
        self.conditioning_scale = _scale(conditioning_scale, "DiTControlNet")
        object.__setattr__(self, "_source", source)   # read once at build, not a sub-module

        dim, patch = settings["dim"], settings["patch_size"]
        self.image_size = tuple(int(n) for n in self.settings["image_size"])
        self.dim, self.patch_size, self.in_channels = dim, patch, settings["in_channels"]
        rows, cols = (n // patch for n in self.image_size)
        self.position_table = sincos_position_embedding(dim, (rows, cols))[None]
        # Z_in: the control's patch embedding, starting at zero
        self.hint_embed = Conv2D(dim, patch, stride=patch, kernel_init="zeros", name="hint_embed")
        # the trainable copies, named as in DiT so that weights copy by name
        self.patch_embed = Conv2D(dim, patch, stride=patch, kernel_init="xavier_uniform", name="patch_embed")
        self.blocks = ModuleList([DiTBlock(dim, settings["num_heads"], settings["mlp_ratio"], name=str(k))
                                  for k in range(count)])
        self.zero_linears = ModuleList([Dense(dim, kernel_init="zeros", name=f"zero{k}") for k in range(count)])
        if source is not None and source.built:
            self._build_as_called((None, *self.image_size, self.in_channels))

    def _checked_shape(self, shape: tuple) -> tuple:
        if tuple(shape[1:]) != (*self.image_size, self.in_channels):
            raise ShapeError(f"{self._label()}: got an input shape {tuple(shape)}; expected (batch, "
                             f"{self.image_size[0]}, {self.image_size[1]}, {self.in_channels})")
        return shape

    def build(self, input_shape) -> None:
        self._run_once_and_copy(self._checked_shape(tuple(input_shape[0] if isinstance(input_shape, list)
                                                          else input_shape)))

    def copy_weights_from(self, dit: DiT) -> None:
        """Set the copy to ``dit``'s weights (time and class features, patch embedding, the
        first N blocks); the control's embedding and the zero layers are left as they are."""
        self._copy_from(dit)

    def forward(self, x, t, control, y=None) -> list[Tensor]:
        x = as_tensor(x)
        if x.ndim != 4 or tuple(x.shape[1:]) != (*self.image_size, self.in_channels):
            raise input_error(self, x, f"a 4-D NHWC batch (batch, {self.image_size[0]}, {self.image_size[1]}, "
                                       f"{self.in_channels})")
        n = x.shape[0]
        hint = F.reshape(self.hint_embed(self._control_for(control, x)), n, -1, self.dim)
        e = self.time_features(t, y, x)
        h = F.reshape(self.patch_embed(x), n, -1, self.dim) + hint
        h = h + Tensor._wrap(backend.xp.asarray(self.position_table.astype(x.dtype)))
        residuals = []
        for block, zero in zip(self.blocks, self.zero_linears):
            h = block(h, e)
            residuals.append(zero(h))
        return self._scaled(residuals)

    def get_config(self) -> dict:
        return {"dit": dict(self.settings), "conditioning_channels": self.conditioning_channels,
                "num_control_blocks": self.num_control_blocks, "conditioning_scale": self.conditioning_scale,
                "name": self.name}

    def extra_repr(self) -> str:
        return (f"conditioning_channels={self.conditioning_channels}, num_control_blocks={self.num_control_blocks}, "
                f"conditioning_scale={self.conditioning_scale}")


@register_layer
class ControlledDenoiser(Module):
    """A frozen ``denoiser`` steered by a ``controlnet`` (see the module notes): called as the
    denoiser, ``(x_t, t, y=None)``, it returns ``denoiser(x_t, t, y, residuals=controlnet(x_t,
    t, control, y))``. Construction (and build) freezes the denoiser's parameters, so an
    optimizer given :meth:`parameters` moves only the ControlNet's. ``control``: the images set
    by :meth:`set_control`, or given as ``control=`` to one call; None runs the denoiser alone.
    """

    def __init__(self, denoiser: DenoisingUNet | DiT, controlnet: ControlNet | DiTControlNet,
                 name: str | None = None):
        super().__init__(name=name)
        if not isinstance(controlnet, _ControlBase):
            raise TypeError(f"ControlledDenoiser: controlnet must be a ControlNet or a DiTControlNet, got "
                            f"{type(controlnet).__name__}")
        kind = controlnet.denoiser_kind
        if not isinstance(denoiser, kind):
            raise TypeError(f"ControlledDenoiser: a {type(controlnet).__name__} steers a {kind.__name__}; the "
                            f"denoiser is a {type(denoiser).__name__}")
        mine = controlnet.settings_of(denoiser)
        if mine != controlnet.settings:
            raise ValueError(f"ControlledDenoiser: the controlnet was made for a {controlnet.denoiser_label} with "
                             f"{controlnet.settings}, not this denoiser's {mine}")
        self.denoiser, self.controlnet = denoiser, controlnet
        denoiser.freeze()
        self.control = None
        if denoiser.built or isinstance(denoiser, DiT):      # a DiT's input size is known: build at once
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


def _sample_shape(denoiser: DenoisingUNet | DiT) -> tuple:
    """(None, H, W, C): the input shape a built U-Net was built for, or a DiT's only one."""
    if isinstance(denoiser, DiT):
        return (None, *denoiser.image_size, denoiser.in_channels)
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
