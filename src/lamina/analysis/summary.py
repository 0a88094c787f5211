"""The layer table of a model (course notes, Computational resource analysis; Memory usage).

Per layer, in execution order: the hyperparameters, the output volume, the learned
parameters, the multiply-accumulates of one sample and the memory of its activations.

Parameters (course notes, Number of parameters per layers):

    convolution      K (f f c_in / groups + 1)
    fully connected  n^[l] (n^[l-1] + 1)
    pooling          0

``trainable`` and ``non-trainable`` (frozen) parameters are counted separately; buffers
(batch norm's running mean and variance) are not parameters (they appear in the memory
estimate only), so the totals match the published counts.

MACs, which the course notes call "flops" (one multiply-accumulate = one flop), per sample:

    convolution      h_out w_out K f_h f_w c_in / groups   (weights (K, f_h, f_w, c_in / groups))
    depthwise conv   h_out w_out (c_in m) f_h f_w          (the same with groups = c_in)
    separable conv   the depthwise part + h_out w_out K (c_in m) for the 1x1 pointwise part
    pooling          h_out w_out c f_h f_w                 (global average pooling: f = h, w)
    fully connected  n^[l] n^[l-1]
    upsampling       bilinear: h_out w_out c t_h t_w, t = 2 along an axis of factor s > 1, else 1
                     (each output the weighted sum of its 4 neighbours: 4 per output value);
                     nearest, zero padding, cropping: 0 (copies)

The bias additions are not counted, and every other layer (batch norm, activations,
additions, concatenations, local response normalization, dropout, reshaping) counts 0: their
cost is a few operations per activation, negligible next to the convolutions, and the
course's tables and the published totals leave them out. A custom layer can report its own
count with a ``macs(input_shapes, output_shapes)`` method (shapes without the batch axis).

Memory (course notes, Memory usage: activations, parameters, training data): a layer's
activation memory is its output elements x bytes per element x batch size. The training
estimate adds parameter values, their gradients and the optimizer state (Adam keeps 2
values per trainable parameter, momentum, RMSProp and Adagrad 1, SGD none), the buffers,
every layer's activations, the other intermediate tensors of the graph (the pre-activation
inside a ``Conv2D(..., activation='relu')``, the sums and ReLUs computed in a residual
block's ``forward``), the gradients of both, and the input batch. Temporary workspaces
(im2col patch matrices, saved masks) are not included.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence

from lamina.analysis.receptive import Field, receptive_fields
from lamina.analysis.trace import LayerCall, Trace, trace
from lamina.nn.conv import SeparableConv2D, _Conv
from lamina.nn.conv_transpose import Conv2DTranspose
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.merge import Concatenate
from lamina.nn.module import Module
from lamina.nn.normalization import LocalResponseNorm
from lamina.nn.pooling import GlobalAvgPool2D, _Pool2D
from lamina.nn.resize import Cropping2D, UpSampling2D, ZeroPadding2D

__all__ = ["OPTIMIZER_STATES", "Summary", "layer_hyperparameters", "layer_macs", "summary"]

# values of optimizer state kept per trainable parameter
OPTIMIZER_STATES = {"sgd": 0, "momentum": 1, "nesterov": 1, "rmsprop": 1, "adagrad": 1, "adam": 2, "adamw": 2,
                    "adamax": 2, "nadam": 2, "radam": 2, "adadelta": 2}


# -- per-layer rules ---------------------------------------------------------------------
def layer_macs(module: Module, input_shapes: list[tuple[int, ...]], output_shapes: list[tuple[int, ...]]) -> int:
    """Multiply-accumulates of one call on one sample (shapes without the batch axis)."""
    own = getattr(module, "macs", None)
    if callable(own):
        return int(own(input_shapes, output_shapes))
    if not input_shapes or not output_shapes:
        return 0
    x, y = input_shapes[0], output_shapes[0]
    if isinstance(module, _Conv) and len(y) == 3:
        h_out, w_out, k = y
        fh, fw = module.kernel_size
        c_in = x[-1]
        groups = module._groups_for(c_in)
        return h_out * w_out * k * fh * fw * (c_in // groups)
    if isinstance(module, SeparableConv2D) and len(y) == 3:
        h_out, w_out, k = y
        fh, fw = module.kernel_size
        mid = x[-1] * module.depth_multiplier
        return h_out * w_out * mid * fh * fw + h_out * w_out * k * mid
    if isinstance(module, Conv2DTranspose) and len(x) == 3:
        h, w, c_in = x                       # each input value meets f_h f_w K weights
        fh, fw = module.kernel_size
        return h * w * c_in * fh * fw * module.filters
    if isinstance(module, _Pool2D) and len(y) == 3:
        h_out, w_out, c = y
        fh, fw = module.pool_size
        return h_out * w_out * c * fh * fw
    if isinstance(module, GlobalAvgPool2D) and len(x) == 3:
        h, w, c = x
        return c * h * w  # one (h, w) window per channel
    if isinstance(module, UpSampling2D) and len(y) == 3:
        taps = math.prod(2 if s > 1 else 1 for s in module.size)
        return math.prod(y) * taps if module.interpolation == "bilinear" and taps > 1 else 0
    if isinstance(module, Dense):
        return math.prod(y) * x[-1]  # n^[l] n^[l-1] (per position if there are leading axes)
    if _is_adaptive_pool(module, x, y):
        return _adaptive_pool_macs(x, y)
    return 0


def _is_adaptive_pool(module: Module, x: tuple, y: tuple) -> bool:
    """An adaptive average pool (the zoo's ``AdaptiveAvgPool2D``), recognised by its
    ``output_size`` so that this module does not depend on :mod:`lamina.models`."""
    return hasattr(module, "output_size") and not module._parameters and len(x) == 3 and len(y) == 3


def adaptive_windows(n: int, out: int) -> list[tuple[int, int]]:
    """Adaptive pooling windows along one axis: [floor(i n / out), ceil((i + 1) n / out))."""
    return [((i * n) // out, -(-((i + 1) * n) // out)) for i in range(out)]


def _adaptive_pool_macs(x: tuple, y: tuple) -> int:
    """The sum of the window areas times the channels; 0 when the map already has the size."""
    if tuple(x[:2]) == tuple(y[:2]):
        return 0
    rows = sum(b - a for a, b in adaptive_windows(x[0], y[0]))
    cols = sum(b - a for a, b in adaptive_windows(x[1], y[1]))
    return rows * cols * y[2]


def _size(pair_or_int) -> str:
    a, b = pair_or_int if isinstance(pair_or_int, tuple) else (pair_or_int, pair_or_int)
    return f"{a}" if a == b else f"{a}x{b}"


def _padding(padding) -> str:
    if isinstance(padding, str):
        return "0" if padding == "valid" else padding
    return _size(tuple(padding))


def _edges(pairs) -> str:
    """((1, 1), (2, 2)) -> '1x2'; asymmetric ((top, bottom), (left, right)) -> '(1,2)x(0,1)'."""
    (top, bottom), (left, right) = pairs
    if top == bottom and left == right:
        return _size((top, left))
    return f"({top},{bottom})x({left},{right})"


def layer_hyperparameters(module: Module, input_shapes: list[tuple[int, ...]] | None = None) -> str:
    """The course tables' hyperparameter column: 'K=6 f=5 s=1 p=0', 'n=120', 'f=2 s=2'."""
    parts: list[str] = []
    if isinstance(module, _Conv):
        if hasattr(module, "filters"):
            parts.append(f"K={module.filters}")
        parts += [f"f={_size(module.kernel_size)}", f"s={_size(module.stride)}", f"p={_padding(module.padding)}"]
        if module.dilation != (1, 1):
            parts.append(f"d={_size(module.dilation)}")
        groups = getattr(module, "groups", 1)
        if groups != 1:
            parts.append(f"g={groups}")
        multiplier = getattr(module, "depth_multiplier", 1)
        if multiplier != 1:
            parts.append(f"m={multiplier}")
    elif isinstance(module, (SeparableConv2D, Conv2DTranspose)):
        parts += [f"K={module.filters}", f"f={_size(module.kernel_size)}", f"s={_size(module.stride)}",
                  f"p={_padding(module.padding)}"]
        if module.dilation != (1, 1):
            parts.append(f"d={_size(module.dilation)}")
        if getattr(module, "depth_multiplier", 1) != 1:
            parts.append(f"m={module.depth_multiplier}")
        if getattr(module, "output_padding", (0, 0)) != (0, 0):
            parts.append(f"op={_size(module.output_padding)}")
    elif isinstance(module, _Pool2D):
        parts += [f"f={_size(module.pool_size)}", f"s={_size(module.stride)}"]
        if module.padding != (0, 0):
            parts.append(f"p={_size(module.padding)}")
        if module.ceil_mode:
            parts.append("ceil")
    elif isinstance(module, GlobalAvgPool2D):
        if input_shapes and len(input_shapes[0]) == 3:
            parts.append(f"f={_size(tuple(input_shapes[0][:2]))}")
    elif hasattr(module, "output_size") and not module._parameters:
        parts.append(f"out={_size(tuple(module.output_size))}")
    elif isinstance(module, UpSampling2D):
        parts += [f"size={_size(module.size)}", module.interpolation]
    elif isinstance(module, ZeroPadding2D):
        parts.append(f"p={_edges(module.padding)}")
    elif isinstance(module, Cropping2D):
        parts.append(f"crop={_edges(module.cropping)}")
    elif isinstance(module, Dense):
        parts.append(f"n={module.units}")
    elif isinstance(module, Dropout):
        parts.append(f"rate={module.rate:g}")
    elif isinstance(module, LocalResponseNorm):
        parts.append(f"size={module.size}")
    elif isinstance(module, Concatenate):
        parts.append(f"axis={module.axis}")
    spec = getattr(module, "activation_spec", None)
    if isinstance(spec, str) and spec != "linear":
        parts.append(spec)
    return " ".join(parts)


# -- formatting --------------------------------------------------------------------------
def format_bytes(n: float) -> str:
    """1536 -> '1.50 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"  # pragma: no cover


def format_count(n: float) -> str:
    """61706 -> '61.71 K'; 15470264320 -> '15.47 G'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:g}"


def _shape_text(shape: list) -> str:
    """[28, 28, 6] -> '(28, 28, 6)'; [400] -> '(400,)'; a list of shapes -> '[(..), (..)]'."""
    if shape and isinstance(shape[0], list):
        return "[" + ", ".join(_shape_text(s) for s in shape) + "]"
    return f"({shape[0]},)" if len(shape) == 1 else f"({', '.join(str(n) for n in shape)})"


def _field_text(field: list[int] | None) -> str:
    if field is None:
        return ""
    return f"{field[0]}" if field[0] == field[1] else f"{field[0]}x{field[1]}"


# -- the summary ---------------------------------------------------------------------------
class Summary:
    """A model's layer table. ``str(summary)`` prints it; ``rows`` (one dict per layer call:
    name, type, hyperparameters, input_shape, output_shape, trainable_params,
    non_trainable_params, params, macs, activation_bytes, receptive_field) and
    :meth:`to_json` are for programs; totals as attributes."""

    def __init__(self, tr: Trace, input_shape: tuple[int, ...], batch_size: int = 1, optimizer: str = "adam"):
        self.model_name = tr.model.name or type(tr.model).__name__
        self.input_shape = tuple(input_shape)
        self.batch_size = _positive(batch_size, "batch_size")
        self.optimizer = _optimizer(optimizer)
        self.dtype = str(tr.input.dtype)
        self.input_bytes = math.prod(self.input_shape) * tr.input.dtype.itemsize  # one sample
        fields = receptive_fields(tr)
        self.rows: list[dict] = [self._row(call, field) for call, field in zip(tr.calls, fields)]
        params = [p for _, p in tr.model.named_parameters()]
        self.total_params = sum(p.size for p in params)
        self.trainable_params = sum(p.size for p in params if p.trainable)
        self.non_trainable_params = self.total_params - self.trainable_params
        self.param_bytes = sum(p.size * p.dtype.itemsize for p in params)
        self.trainable_bytes = sum(p.size * p.dtype.itemsize for p in params if p.trainable)
        self.buffer_bytes = sum(b.size * b.dtype.itemsize for _, b in tr.model.named_buffers()
                                if b is not None and hasattr(b, "dtype"))
        self.total_macs = sum(r["macs"] for r in self.rows)
        self.activation_bytes_per_sample = sum(call.output_bytes for call in tr.calls)
        self.intermediate_bytes_per_sample = sum(math.prod(t.shape[1:]) * t.dtype.itemsize
                                                 for t in tr.intermediates())
        self.uncalled_params = self.total_params - sum(r["params"] for r in self.rows)

    def _row(self, call: LayerCall, field: Field | None) -> dict:
        module = call.module
        own = list(module._parameters.values()) if call.first else []
        trainable = sum(p.size for p in own if p.trainable)
        frozen = sum(p.size for p in own if not p.trainable)
        ins, outs = call.input_shapes, call.output_shapes
        return {
            "name": call.path or module.name or type(module).__name__,
            "type": type(module).__name__,
            "hyperparameters": layer_hyperparameters(module, ins),
            "input_shape": [list(s) for s in ins] if len(ins) != 1 else list(ins[0]),
            "output_shape": [list(s) for s in outs] if len(outs) != 1 else list(outs[0]),
            "trainable_params": trainable,
            "non_trainable_params": frozen,
            "params": trainable + frozen,
            "macs": layer_macs(module, ins, outs),
            "activation_bytes": call.output_bytes * self.batch_size,
            "receptive_field": None if field is None else [field[0], field[1]],
        }

    # -- totals --------------------------------------------------------------------------
    @property
    def layers(self) -> list[dict]:
        return self.rows

    def training_memory(self, batch_size: int | None = None, optimizer: str | None = None) -> dict:
        """Bytes needed for one training step (course notes, Memory usage), by source:
        parameters, gradients, optimizer_state, buffers, activations (the layers' outputs),
        intermediates (the other tensors the graph keeps: pre-activations inside layers,
        tensors computed in blocks' ``forward``), activation_gradients (one per activation
        and intermediate), input, and their total."""
        b = self.batch_size if batch_size is None else _positive(batch_size, "batch_size")
        opt = self.optimizer if optimizer is None else _optimizer(optimizer)
        parts = {
            "parameters": self.param_bytes,
            "gradients": self.trainable_bytes,
            "optimizer_state": OPTIMIZER_STATES[opt] * self.trainable_bytes,
            "buffers": self.buffer_bytes,
            "activations": self.activation_bytes_per_sample * b,
            "intermediates": self.intermediate_bytes_per_sample * b,
            "activation_gradients": (self.activation_bytes_per_sample + self.intermediate_bytes_per_sample) * b,
            "input": self.input_bytes * b,
        }
        parts["total"] = sum(parts.values())
        return parts

    def as_dict(self) -> dict:
        rows = [dict(r) for r in self.rows]
        return {
            "model": self.model_name,
            "input_shape": list(self.input_shape),
            "batch_size": self.batch_size,
            "dtype": self.dtype,
            "rows": rows,
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
            "total_macs": self.total_macs,
            "activation_bytes": self.activation_bytes_per_sample * self.batch_size,
            "intermediate_bytes": self.intermediate_bytes_per_sample * self.batch_size,
            "optimizer": self.optimizer,
            "training_memory": self.training_memory(),
        }

    def to_json(self, indent: int | None = None) -> str:
        """The table, totals and memory estimate as JSON."""
        return json.dumps(self.as_dict(), indent=indent)

    # -- printing ------------------------------------------------------------------------
    def __str__(self) -> str:
        headers = ("Layer (type)", "Hyperparameters", "Output volume", "Params", "Non-train.", "MACs",
                   "Act. memory", "RF")
        body = [(f"{r['name']} ({r['type']})", r["hyperparameters"], _shape_text(r["output_shape"]),
                 f"{r['params']:,}", f"{r['non_trainable_params']:,}", f"{r['macs']:,}",
                 format_bytes(r["activation_bytes"]), _field_text(r["receptive_field"])) for r in self.rows]
        right = {3, 4, 5, 6, 7}
        widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(headers)]

        def line(cells) -> str:
            return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        width = sum(widths) + 2 * (len(widths) - 1)
        shape = ", ".join(str(n) for n in self.input_shape)
        out = [f'Model: "{self.model_name}"   input ({shape}), {self.dtype}, batch {self.batch_size}',
               "=" * width, line(headers), "=" * width]
        out += [line(row) for row in body]
        out.append("=" * width)
        out.append(f"Total params: {self.total_params:,} ({format_bytes(self.param_bytes)})")
        out.append(f"Trainable params: {self.trainable_params:,}")
        out.append(f"Non-trainable params: {self.non_trainable_params:,}")
        if self.uncalled_params:
            out.append(f"  ({self.uncalled_params:,} of them in layers the forward pass does not call in "
                       "evaluation mode, e.g. auxiliary classifiers)")
        out.append(f"Total MACs (flops in the course notes): {self.total_macs:,} ({format_count(self.total_macs)}) "
                   "per sample")
        out.append("RF: the receptive field of one output unit, in input pixels")
        b = self.batch_size
        out.append(f"Activations (forward, batch {b}): {format_bytes(self.activation_bytes_per_sample * b)} "
                   f"in the layers' outputs + {format_bytes(self.intermediate_bytes_per_sample * b)} "
                   "of intermediate tensors")
        mem = self.training_memory()
        weights = (("parameters", "parameters"), ("gradients", "gradients"),
                   ("optimizer_state", f"optimizer state ({self.optimizer})"), ("buffers", "buffers"))
        data = (("activations", "activations"), ("intermediates", "intermediate tensors"),
                ("activation_gradients", "their gradients"), ("input", "input batch"))
        out.append(f"Training memory estimate (batch {b}, {self.optimizer}): {format_bytes(mem['total'])}")
        for prefix, group in (("  = ", weights), ("  + ", data)):
            out.append(prefix + " + ".join(f"{text} {format_bytes(mem[key])}" for key, text in group if mem[key]))
        out.append("-" * width)
        return "\n".join(out)

    def __repr__(self) -> str:
        return (f"Summary({self.model_name!r}, input_shape={self.input_shape}, layers={len(self.rows)}, "
                f"total_params={self.total_params:,}, total_macs={self.total_macs:,})")


def _positive(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"lamina.analysis.summary: {what} must be a positive int, got {value!r}")
    return value


def _optimizer(name: str) -> str:
    key = str(name).lower()
    if key not in OPTIMIZER_STATES:
        raise ValueError(f"lamina.analysis.summary: unknown optimizer {name!r}; expected one of "
                         f"{sorted(OPTIMIZER_STATES)}")
    return key


def summary(model: Module | Callable[[], Module], input_shape: Sequence[int] | None = None, batch_size: int = 1,
            optimizer: str = "adam") -> Summary:
    """The layer table of ``model`` (a Module, or a zero-argument builder such as
    ``lamina.models.vgg16``, built with shape-only weights) for inputs of ``input_shape``
    (without the batch axis; default: the shape the model was built for).

    Per layer: name (dotted path), type, hyperparameters, output volume, trainable and
    non-trainable parameters, MACs of one sample (h_out w_out K f f c_in / groups for a
    convolution, h_out w_out c f f for pooling, n^[l] n^[l-1] for a dense layer, 0 for the
    rest) and activation memory at ``batch_size``; then the totals and a training-memory
    estimate with ``optimizer`` ('adam', 'sgd', 'momentum', ...). See the module docstring.

    Shape inference only: the model runs on a zero-sample batch and an unbuilt model is
    built on a copy with shape-only weights, so no weight is allocated and the caller's
    model is left as it was (an unbuilt one builds real weights on its first real call).
    """
    batch_size = _positive(batch_size, "batch_size")
    optimizer = _optimizer(optimizer)
    tr = trace(model, input_shape)
    return Summary(tr, tuple(tr.input.shape[1:]), batch_size=batch_size, optimizer=optimizer)
