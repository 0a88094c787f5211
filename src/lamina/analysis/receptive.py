"""Receptive fields (course notes, Receptive fields): the input region one unit sees.

With 3x3 filters at stride 1 in every layer each unit sees a 3x3 region of its input, so
after 1, 2, 3 layers it sees 3x3, 5x5, 7x7 pixels: 1 -> 3 -> 5 -> 7. In general, with r the
receptive field of a unit (in input pixels) and j the distance in input pixels between two
neighbouring units (the product of the strides so far), a layer of filter size f and
stride s gives

    r_out = r_in + (f - 1) j_in,        j_out = j_in s

starting from r = 1, j = 1 at the input (padding moves the field, it does not widen it).
Convolutions and pooling windows follow this rule; layers that see a whole feature map
(GlobalAvgPool2D, a Flatten of an (h, w, c) volume) use f = s = the map size; the others
(activations, batch norm, dense layers on vectors) keep r and j. A transposed convolution
of stride s upsamples: each output unit sees at most ceil(f / s) of its input units along
an axis, so r_out = r_in + (ceil(f / s) - 1) j_in and j_out = j_in / s (the field is left
unknown where j_in / s is not a whole number of pixels). An UpSampling2D of factor s is such
a transposed convolution, one channel at a time, with a fixed kernel: for 'nearest' a box of
f = s ones (each output copies one input unit: ceil(s / s) = 1, r unchanged), for 'bilinear'
the tent 1 - |d| / s over f = 2s taps (2s - 1 for an odd s; each output mixes the 2 input
units either side of its source point: ceil(f / s) = 2, r_out = r_in + j_in; s = 1 is the
identity, f = 1). Both give j_out = j_in / s. An ``Upsample`` (any size, any mode) leaves
the field unknown. ZeroPadding2D and Cropping2D keep r and j
(they move the field, as padding does).

A volume (d, h, w, c) has its field along the height and the width only, as an image's:
the 3-D layers (Conv3D, MaxPool3D, AvgPool3D) apply the rule with the h and w axes of their
kernel, stride and dilation, and GlobalAvgPool3D (or a Flatten of the volume) sees the
whole h x w map; the depth axis is not followed. A layer that slides a window of its own
over a volume's frames (a TimeDistributed one, a ConvLSTM2D) leaves the field unknown.

The rule is applied along the data flow recorded by :func:`lamina.analysis.trace`, not just
down the list of layers: where branches meet (a residual addition, an inception
concatenation) a unit sees the union of what its sources see, the largest of their fields.
The result is the theoretical field; it may exceed the image (deep networks), in which case
part of it falls on the padding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lamina.analysis.trace import LayerCall, Trace, trace
from lamina.nn.conv3d import Conv3D, GlobalAvgPool3D, _Pool3D
from lamina.nn.conv_transpose import Conv2DTranspose
from lamina.nn.module import Module
from lamina.nn.pooling import GlobalAvgPool2D
from lamina.nn.reshape import Flatten, Reshape
from lamina.nn.resize import UpSampling2D
from lamina.nn.upsample import Upsample

__all__ = ["Field", "layer_window", "receptive_field", "receptive_fields"]

# (r_h, r_w, j_h, j_w): receptive field and jump along the height and the width
Field = tuple[int, int, int, int]


def _pair(value) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value, value
    try:
        a, b = value
        return int(a), int(b)
    except (TypeError, ValueError):
        return None


def layer_window(module: Module, input_shape: tuple[int, ...] | None) -> tuple[int, int, int, int] | None:
    """(f_h, f_w, s_h, s_w) of the window a layer slides, or None for a layer that keeps
    the receptive field. ``input_shape`` is the layer's input without the batch axis; for
    a volume (d, h, w, c) the window's h and w axes."""
    if isinstance(module, (Conv3D, _Pool3D)):
        extent = module.extent if isinstance(module, Conv3D) else module.pool_size
        return extent[1], extent[2], module.stride[1], module.stride[2]
    volume = input_shape is not None and len(input_shape) == 4
    if isinstance(module, GlobalAvgPool3D) or (isinstance(module, (Flatten, Reshape)) and volume):
        if not volume:
            return None
        h, w = input_shape[1], input_shape[2]
        return h, w, h, w
    spatial = input_shape is not None and len(input_shape) == 3
    if isinstance(module, GlobalAvgPool2D) or (isinstance(module, (Flatten, Reshape)) and spatial):
        if not spatial:
            return None
        h, w = input_shape[0], input_shape[1]
        return h, w, h, w
    out = _pair(getattr(module, "output_size", None))
    if out is not None and spatial and not module._parameters:
        # adaptive average pooling to out: windows of ceil(n / out) every floor(n / out) pixels
        h, w = input_shape[0], input_shape[1]
        if (h, w) == out:
            return None
        return -(-h // out[0]), -(-w // out[1]), max(h // out[0], 1), max(w // out[1], 1)
    kernel = _pair(getattr(module, "kernel_size", None)) or _pair(getattr(module, "pool_size", None))
    if kernel is None:
        return None
    stride = _pair(getattr(module, "stride", 1)) or (1, 1)
    dilation = _pair(getattr(module, "dilation", 1)) or (1, 1)
    fh, fw = ((f - 1) * d + 1 for f, d in zip(kernel, dilation))
    return fh, fw, stride[0], stride[1]


def _transposed_field(field: Field, module: Conv2DTranspose) -> Field | None:
    rh, rw, jh, jw = field
    (sh, sw) = module.stride
    fh, fw = ((f - 1) * q + 1 for f, q in zip(module.kernel_size, module.dilation))
    if jh % sh or jw % sw:
        return None
    return rh + (-(-fh // sh) - 1) * jh, rw + (-(-fw // sw) - 1) * jw, jh // sh, jw // sw


def _upsampled_field(field: Field, module: UpSampling2D) -> Field | None:
    """The transposed-convolution rule with ceil(f / s) input units per output unit: 1 for
    nearest, 2 for bilinear with s >= 2 (see the module docstring)."""
    rh, rw, jh, jw = field
    sh, sw = module.size
    if jh % sh or jw % sw:
        return None
    th, tw = ((2 if s > 1 else 1) if module.interpolation == "bilinear" else 1 for s in (sh, sw))
    return rh + (th - 1) * jh, rw + (tw - 1) * jw, jh // sh, jw // sw


_VOLUME_LAYERS = (Conv3D, _Pool3D, GlobalAvgPool3D, Flatten, Reshape)


def _unknown_on_volumes(call: LayerCall) -> bool:
    """Whether ``call`` reads a volume (d, h, w, c) with a window of its own that the rule
    does not model: a TimeDistributed layer, or a layer with a 2-D kernel or pool (ConvLSTM2D)."""
    shapes = call.input_shapes
    if not shapes or len(shapes[0]) != 4 or isinstance(call.module, _VOLUME_LAYERS):
        return False
    module = call.module
    return call.wraps_steps or any(getattr(module, a, None) is not None for a in ("kernel_size", "pool_size"))


def _combine(fields: list[Field | None]) -> Field | None:
    known = [f for f in fields if f is not None]
    if not known:
        return None
    return tuple(max(f[i] for f in known) for i in range(4))  # type: ignore[return-value]


def receptive_fields(tr: Trace) -> list[Field | None]:
    """The field of the (first) output of every call of ``tr.calls``, in order; None where
    the input is neither an image (h, w, c) nor a volume (d, h, w, c)."""
    known: dict[int, Field | None] = {}
    if len(tr.input.shape) in (4, 5):
        known[id(tr.input)] = (1, 1, 1, 1)

    def source(t) -> Field | None:
        """The field of tensor ``t``: recorded, or combined from the ops that made it."""
        key = id(t)
        if key in known:
            return known[key]
        ctx = getattr(t, "_ctx", None)
        inputs = getattr(ctx, "inputs", None) or ()
        known[key] = None  # guards against cycles while recursing
        field = _combine([source(u) for u in inputs])
        known[key] = field
        return field

    fields: list[Field | None] = []
    for call in tr.calls:
        field = _combine([source(t) for t in call.inputs])
        if field is not None and _unknown_on_volumes(call):
            field = None
        elif field is not None and isinstance(call.module, Conv2DTranspose):
            field = _transposed_field(field, call.module)
        elif field is not None and isinstance(call.module, UpSampling2D):
            field = _upsampled_field(field, call.module)
        elif isinstance(call.module, Upsample):
            field = None    # resampling by any factor: the field is no whole window of pixels
        elif field is not None:
            shapes = call.input_shapes
            window = layer_window(call.module, shapes[0] if shapes else None)
            if window is not None:
                rh, rw, jh, jw = field
                fh, fw, sh, sw = window
                field = (rh + (fh - 1) * jh, rw + (fw - 1) * jw, jh * sh, jw * sw)
        # a tensor can be the output of two calls (a Conv2D and the activation layer inside
        # it, whose input is the inner pre-activation): it sees the larger of the two fields
        for t in call.outputs:
            known[id(t)] = _combine([known.get(id(t)), field])
        fields.append(field)
    return [known[id(c.outputs[0])] if c.outputs else f for c, f in zip(tr.calls, fields)]


def find_call(tr: Trace, layer: Module | str | int) -> LayerCall:
    """The first call of ``layer``: a Module (of the traced model or of the caller's), a
    dotted path ('features.conv2d_1') or a layer name; an int is an index into the calls."""
    if isinstance(layer, int) and not isinstance(layer, bool):
        return tr.calls[layer]
    if isinstance(layer, Module):
        path = tr.path_of(layer)
        if path is None:
            raise ValueError(f"receptive_field: {layer._label()} is not part of the model")
        matches = [c for c in tr.calls if c.path == path]
        if not matches:
            raise ValueError(f"receptive_field: {layer._label()} (at {path!r}) is not a layer called by "
                             "the forward pass (containers have no field of their own; name a layer)")
        return matches[0]
    if isinstance(layer, str):
        matches = [c for c in tr.calls if c.path == layer]
        if not matches:
            matches = [c for c in tr.calls if c.module.name == layer or c.path.endswith("." + layer)]
        if not matches:
            names = [c.path for c in tr.calls]
            raise ValueError(f"receptive_field: no layer named {layer!r}; layers: {names}")
        if len({id(c.module) for c in matches}) > 1:
            raise ValueError(f"receptive_field: {layer!r} names several layers "
                             f"({[c.path for c in matches]}); give the dotted path")
        return matches[0]
    raise TypeError(f"receptive_field: layer must be a Module, a name or an index, got {type(layer).__name__}")


def receptive_field(model: Module | Callable[[], Module], layer: Module | str | int | None = None,
                    input_shape: Sequence[int] | None = None) -> int | tuple[int, int]:
    """The receptive field, in input pixels, of one unit of ``layer``'s output.

    r_out = r_in + (f - 1) j_in and j_out = j_in s across the convolution and pooling
    layers from the input (r = j = 1) to ``layer`` (see the module docstring): for stacked
    3x3 stride-1 convolutions 3, 5, 7, ... ``layer``: a layer of ``model``, its dotted path
    or name, or None for the last layer. ``input_shape`` (h, w, c) defaults to the shape the
    model was built for. An int ``layer`` indexes the layer calls in execution order (the
    rows of :func:`lamina.analysis.summary`). Returns an int, or (r_h, r_w) when the field is
    not square. For a volume (d, h, w, c) the field along the height and the width.
    """
    tr = trace(model, input_shape)
    if len(tr.input.shape) not in (4, 5):
        raise ValueError(f"receptive_field: the input shape {tuple(tr.input.shape[1:])} is not an image "
                         "(height, width, channels) or a volume (depth, height, width, channels)")
    if not tr.calls:
        raise ValueError("receptive_field: the model calls no layer")
    call = tr.calls[-1] if layer is None else find_call(tr, layer)
    field = receptive_fields(tr)[call.index]
    if field is None:
        raise ValueError(f"receptive_field: {call.path!r} does not depend on the input image")
    rh, rw = field[0], field[1]
    return rh if rh == rw else (rh, rw)
