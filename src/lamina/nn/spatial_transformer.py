"""The spatial transformer layer (Jaderberg et al. 2015): a network that learns where to look.

Three parts, all differentiable, so the whole layer trains by backprop with the rest:

    theta = f_loc(U)                        a localization network: 6 numbers per image
    G = affine_grid(theta, output size)     where each output pixel reads the input
    V = grid_sample(U, G)                   the input read there (bilinear by default)

so the layer crops, translates, rotates, scales or skews each input by its own affine map
before the next layers see it. The localization network starts at the identity map
(last Dense: zero kernel, bias (1, 0, 0, 0, 1, 0)): the layer first passes its input through
unchanged and learns from there. See :mod:`lamina.functional.grid_sample` for the
coordinate conventions (PyTorch's).
"""

from __future__ import annotations

import numbers

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.grid_sample import MODES, PADDING_MODES, affine_grid, grid_sample
from lamina.nn import init as initializers
from lamina.nn.dense import Dense
from lamina.nn.layer import check_shape_ndim, input_error, layer_from_config, layer_to_config, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.reshape import Flatten
from lamina.nn.sequential import Sequential

__all__ = ["SpatialTransformer", "default_localization", "IDENTITY_THETA"]

IDENTITY_THETA = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
"""The identity affine map [[1, 0, 0], [0, 1, 0]], row by row."""

_NHWC = "a 4-D NHWC batch (batch, height, width, channels)"
_NHWC_SHAPE = "a 4-D NHWC shape (batch, height, width, channels)"


def default_localization(hidden_units: int = 32) -> Sequential:
    """The localization network the layer builds when given none: Flatten, Dense(hidden_units,
    'relu'), Dense(6) (the 6 entries of theta, row by row)."""
    return Sequential(Flatten(), Dense(hidden_units, activation="relu"), Dense(6))


def _output_size(value) -> tuple[int, int] | None:
    if value is None:
        return None
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in value)):
        raise ValueError(f"SpatialTransformer: output_size must be None or a pair of positive ints (H_o, W_o), "
                         f"got {value!r}")
    return int(value[0]), int(value[1])


def _choice(value, allowed: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ValueError(f"SpatialTransformer: {what} must be one of {list(allowed)}, got {value!r}")
    return value.lower()


@register_layer
class SpatialTransformer(Module):
    """An affine spatial transformer: (N, H, W, C) -> (N, H_o, W_o, C), each image warped by the
    affine map theta = localization(image) (N, 6) or (N, 2, 3), as PyTorch's
    ``grid_sample(x, affine_grid(theta, size))``.

    ``localization``: any layer or model mapping the input batch to 6 numbers per image
    (default :func:`default_localization`). ``output_size``: (H_o, W_o), default the input's
    size. ``mode``, ``padding_mode``, ``align_corners``: as :func:`lamina.functional.grid_sample`.

    ``identity_init`` (default: True for the default network, False for one given): when the
    layer builds its localization network, set the last Dense layer in it (which must have 6
    units) to a zero kernel and the bias of the identity map, so that training starts from
    theta = identity whatever the input. A network built before the layer is left as it is.
    """

    def __init__(self, localization=None, output_size=None, mode: str = "bilinear", padding_mode: str = "zeros",
                 align_corners: bool = False, identity_init: bool | None = None, name: str | None = None):
        super().__init__(name=name)
        if isinstance(localization, dict):
            localization = layer_from_config(localization)
        if identity_init is None:
            identity_init = localization is None
        if localization is None:
            localization = default_localization()
        if not isinstance(localization, Module):
            raise TypeError(f"SpatialTransformer: expected the localization network as a layer (a Module), "
                            f"got {type(localization).__name__}")
        self.localization = localization
        self.output_size = _output_size(output_size)
        self.mode = _choice(mode, MODES, "mode")
        self.padding_mode = _choice(padding_mode, PADDING_MODES, "padding_mode")
        self.align_corners = bool(align_corners)
        self.identity_init = bool(identity_init)
        if self.identity_init:
            self._last_dense()

    def _last_dense(self) -> Dense:
        """The Dense layer that outputs theta: the last Dense in the localization network."""
        dense = [m for m in self.localization.modules() if isinstance(m, Dense)]
        if not dense or dense[-1].units != 6:
            found = "no Dense layer" if not dense else f"a last Dense layer with {dense[-1].units} units"
            raise ValueError(f"{self._label()}: identity_init needs a localization network whose last Dense "
                             f"layer has 6 units (theta), found {found}")
        return dense[-1]

    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, 4, _NHWC_SHAPE)
        if self.localization.built:
            self.built = True
            return
        self.localization.build(shape)
        self.localization.built = True
        self.localization.build_input_shape = shape
        if self.identity_init:
            dense = self._last_dense()
            if not dense.built:
                raise ShapeError(f"{self._label()}: the localization network could not be built from the input "
                                 f"shape {shape} alone, so identity_init cannot set its last Dense layer; build "
                                 "it first (call it on a sample input) and pass identity_init=False")
            if not initializers.is_meta_array(dense.weight):
                dense.weight.data = backend.xp.zeros_like(dense.weight.data)
                if dense.use_bias:
                    dense.bias.data = backend.xp.asarray(IDENTITY_THETA, dtype=dense.bias.data.dtype)
        self.built = True

    def _theta(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        theta = self.localization(x)
        if not isinstance(theta, Tensor) or tuple(theta.shape) not in ((n, 6), (n, 2, 3)):
            shown = tuple(theta.shape) if isinstance(theta, Tensor) else type(theta).__name__
            raise ShapeError(f"{self._label()}: the localization network {self.localization._label()} turned an "
                             f"input of shape {tuple(x.shape)} into {shown}; expected theta of shape ({n}, 6) "
                             f"or ({n}, 2, 3)")
        return F.reshape(theta, (n, 2, 3))

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4:
            raise input_error(self, x, _NHWC)
        n, h, w, c = x.shape
        ho, wo = self.output_size or (h, w)
        grid = affine_grid(self._theta(x), (n, ho, wo, c), self.align_corners)
        return grid_sample(x, grid, self.mode, self.padding_mode, self.align_corners)

    def compute_output_shape(self, input_shape):
        n, h, w, c = check_shape_ndim(self, input_shape, 4, _NHWC_SHAPE)
        try:
            theta_shape = tuple(self.localization.compute_output_shape((n, h, w, c)))
        except NotImplementedError:
            theta_shape = None
        if theta_shape is not None and theta_shape[1:] not in ((6,), (2, 3)):
            raise ShapeError(f"{self._label()}: the localization network {self.localization._label()} maps an "
                             f"input shape {(n, h, w, c)} to {theta_shape}; expected theta of shape (batch, 6) or "
                             "(batch, 2, 3)")
        ho, wo = self.output_size or (h, w)
        return (n, ho, wo, c)

    def get_config(self) -> dict:
        try:
            localization = layer_to_config(self.localization)
        except (ValueError, NotImplementedError) as exc:
            raise ValueError(f"{self._label()}.get_config: the localization network "
                             f"{self.localization._label()} cannot describe its architecture ({exc}); register "
                             "its class with @lamina.nn.register_layer and give it get_config(), or save the "
                             "weights alone") from None
        return {"localization": localization, "output_size": None if self.output_size is None else
                list(self.output_size), "mode": self.mode, "padding_mode": self.padding_mode,
                "align_corners": self.align_corners, "identity_init": self.identity_init, "name": self.name}

    def extra_repr(self) -> str:
        parts = [] if self.output_size is None else [f"output_size={self.output_size}"]
        if self.mode != "bilinear":
            parts.append(f"mode={self.mode!r}")
        if self.padding_mode != "zeros":
            parts.append(f"padding_mode={self.padding_mode!r}")
        if self.align_corners:
            parts.append("align_corners=True")
        return ", ".join(parts)
