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

MACs per sample and the hyperparameter column follow :mod:`lamina.analysis.layer_rules`.

A ``TimeDistributed`` layer is one row for the whole sequence: output volume (T, ...out),
the wrapped layer's parameters, T times the MACs of one step, and the wrapped layer's
hyperparameters after its type ('Conv2D K=4 f=3 s=1 p=0').

Memory (course notes, Memory usage: activations, parameters, training data): a layer's
activation memory is its output elements x bytes per element x batch size. The training
estimate adds parameter values, their gradients and the optimizer state (Adam keeps 2
values per trainable parameter, momentum, RMSProp and Adagrad 1, SGD none), the buffers,
every layer's activations, the other intermediate tensors of the graph (the pre-activation
inside a ``Conv2D(..., activation='relu')``, the sums and ReLUs computed in a residual
block's ``forward``), the gradients of both, and the input batch. Temporary workspaces
(im2col patch matrices, saved masks) are not included.

A model of several inputs (a functional ``Model`` built from a list of ``Input``
placeholders) lists every input's shape in the header, and its input memory is the sum over
its inputs. Its receptive-field column is left blank: a field is measured in the pixels of
one input image, and the units after a merge see several inputs. A model of several outputs
needs nothing special: every output's layers are rows, and the intermediate tensors are
collected back from all of them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence

from lamina.analysis.layer_rules import layer_hyperparameters, layer_macs
from lamina.analysis.receptive import Field, receptive_fields
from lamina.analysis.trace import LayerCall, Trace, trace
from lamina.nn.module import Module

__all__ = ["OPTIMIZER_STATES", "Summary", "summary"]

# values of optimizer state kept per trainable parameter (adafactor: row and column means of
# each matrix only, negligible next to the matrix; schedule-free: z and Adam's v; prodigy: the
# moments, s and the starting weights; dadapt_adam: the moments and s; adan: three averages
# and the previous gradient; ademamix: two momenta and Adam's v)
OPTIMIZER_STATES = {"sgd": 0, "momentum": 1, "nesterov": 1, "rmsprop": 1, "adagrad": 1, "adam": 2, "adamw": 2,
                    "adamax": 2, "nadam": 2, "radam": 2, "adadelta": 2, "lion": 1, "adafactor": 0, "asgd": 1,
                    "lamb": 2, "lars": 1, "sgd_schedulefree": 1, "adamw_schedulefree": 2, "radam_schedulefree": 2,
                    "prodigy": 4, "dadapt_adam": 3, "adabelief": 2, "adan": 4, "ademamix": 3}


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
    :meth:`to_json` are for programs; totals as attributes.

    ``input_shapes`` lists one shape (without batch) per model input; ``input_shape`` is that
    shape for a model of one input and the list for a model of several. The constructor's
    ``input_shape`` is optional; when given, it must be the traced inputs' shape(s)."""

    def __init__(self, tr: Trace, input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None,
                 batch_size: int = 1, optimizer: str = "adam"):
        self.model_name = tr.model.name or type(tr.model).__name__
        self.input_shapes = _traced_shapes(tr, input_shape)
        self.input_shape = self.input_shapes[0] if len(self.input_shapes) == 1 else list(self.input_shapes)
        self.input_names = _input_names(tr)
        self.batch_size = _positive(batch_size, "batch_size")
        self.optimizer = _optimizer(optimizer)
        dtypes = list(dict.fromkeys("str" if t.dtype.kind == "U" else str(t.dtype) for t in tr.inputs))
        self.dtype = "/".join(dtypes)  # 'float32', or e.g. 'int64/float32' for inputs of several dtypes
        self.input_bytes = sum(math.prod(shape) * t.dtype.itemsize  # one sample of every input
                               for shape, t in zip(self.input_shapes, tr.inputs))
        self.multi_input = len(tr.inputs) > 1
        fields = [None] * len(tr.calls) if self.multi_input else receptive_fields(tr)
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
        self.intermediate_bytes_per_sample = tr.intermediate_bytes()
        self.uncalled_params = self.total_params - sum(r["params"] for r in self.rows)
        self.uncalled_layers = _uncalled_layers(tr) if self.uncalled_params else []

    def _row(self, call: LayerCall, field: Field | None) -> dict:
        module = call.module
        own = _called_params(call)
        trainable = sum(p.size for p in own if p.trainable)
        frozen = sum(p.size for p in own if not p.trainable)
        ins, outs = call.input_shapes, call.output_shapes
        return {
            "name": call.path or module.name or type(module).__name__,
            "type": type(module).__name__,
            "hyperparameters": _hyperparameters(call),
            "input_shape": [list(s) for s in ins] if len(ins) != 1 else list(ins[0]),
            "output_shape": [list(s) for s in outs] if len(outs) != 1 else list(outs[0]),
            "trainable_params": trainable,
            "non_trainable_params": frozen,
            "params": trainable + frozen,
            "macs": _call_macs(call),
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
            "input_shape": ([list(s) for s in self.input_shapes] if self.multi_input
                            else list(self.input_shape)),
            "batch_size": self.batch_size,
            "dtype": self.dtype,
            "rows": rows,
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
            "total_macs": self.total_macs,
            "uncalled_params": self.uncalled_params,
            "uncalled_layers": list(self.uncalled_layers),
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
        out = [f'Model: "{self.model_name}"   {self._inputs_text()}, {self.dtype}, batch {self.batch_size}',
               "=" * width, line(headers), "=" * width]
        out += [line(row) for row in body]
        out.append("=" * width)
        out.append(f"Total params: {self.total_params:,} ({format_bytes(self.param_bytes)})")
        out.append(f"Trainable params: {self.trainable_params:,}")
        out.append(f"Non-trainable params: {self.non_trainable_params:,}")
        if self.uncalled_params:
            where = f": {', '.join(self.uncalled_layers)}" if self.uncalled_layers else ""
            out.append(f"  ({self.uncalled_params:,} of them in layers the forward pass does not call in "
                       f"evaluation mode on the traced batch{where}; not sized: e.g. auxiliary classifiers, "
                       "or heads that run only on detected objects)")
        out.append(f"Total MACs (flops in the course notes): {self.total_macs:,} ({format_count(self.total_macs)}) "
                   "per sample")
        if self.multi_input:
            out.append("RF: left blank, receptive fields are not computed for a model of several inputs")
        else:
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

    def _inputs_text(self) -> str:
        """'input (32, 32, 3)', or 'inputs [vec (4,), image (8, 8, 1)]' for several inputs."""
        if not self.multi_input:
            return f"input ({', '.join(str(n) for n in self.input_shape)})"
        names = self.input_names or [f"input_{k}" for k in range(len(self.input_shapes))]
        shapes = (_shape_text(list(s)) for s in self.input_shapes)
        return "inputs [" + ", ".join(f"{name} {shape}" for name, shape in zip(names, shapes)) + "]"

    def __repr__(self) -> str:
        return (f"Summary({self.model_name!r}, input_shape={self.input_shape}, layers={len(self.rows)}, "
                f"total_params={self.total_params:,}, total_macs={self.total_macs:,})")


def _traced_shapes(tr: Trace, input_shape) -> list[tuple[int, ...]]:
    """The input shapes (without batch), one per traced input; a given ``input_shape`` (a
    shape, or a list of shapes) must be the traced ones."""
    traced = [tuple(t.shape[1:]) for t in tr.inputs]
    if input_shape is None:
        return traced
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    many = bool(input_shape) and all(isinstance(s, (tuple, list)) for s in input_shape)
    given = [tuple(s) for s in input_shape] if many else [tuple(input_shape)]
    if given != traced:
        raise ValueError(f"lamina.analysis.Summary: input_shape {input_shape!r} is not the shape(s) of the traced "
                         f"inputs {traced}")
    return traced


def _input_names(tr: Trace) -> list[str] | None:
    """The inputs' names of a functional ``Model`` (``Input(..., name=)``), else None."""
    names = getattr(tr.model, "input_names", None)
    if isinstance(names, list) and len(names) == len(tr.inputs):
        return [str(n) for n in names]
    return None


def _called_params(call: LayerCall) -> list:
    """The parameters a row counts: its layer's own on the layer's first call, and for a
    ``TimeDistributed`` those of the layers it runs (each once, on its first call)."""
    own = list(call.module._parameters.values()) if call.first else []
    return own + [p for inner in call.inner for p in _called_params(inner)]


def _uncalled_layers(tr: Trace) -> list[str]:
    """The paths of the modules holding parameters that no traced call counted, each uncalled
    subtree named once by its topmost module (``roi_heads.mask_head``, not its every conv)."""
    called: set[int] = set()
    pending = list(tr.calls)
    while pending:
        call = pending.pop()
        called.add(id(call.module))
        pending += call.inner
    owners = [(path, module) for path, module in tr.model.named_modules() if module._parameters]
    missed = [path for path, module in owners if id(module) not in called]
    reached = [path for path, module in owners if id(module) in called]

    def inside(path: str, root: str) -> bool:
        return root == "" or path == root or path.startswith(root + ".")

    tops = []
    for path in missed:
        parts = path.split(".")
        top = next(".".join(parts[:k]) for k in range(1, len(parts) + 1)
                   if not any(inside(r, ".".join(parts[:k])) for r in reached))
        if top not in tops:
            tops.append(top)
    return [top or type(tr.model).__name__ for top in tops]


def _call_macs(call: LayerCall) -> int:
    """MACs of one sample: the layer rule, or for a ``TimeDistributed`` T times the MACs of
    the layers it runs on one step."""
    if call.wraps_steps:
        return call.steps * sum(_call_macs(inner) for inner in call.inner)
    return layer_macs(call.module, call.input_shapes, call.output_shapes)


def _hyperparameters(call: LayerCall) -> str:
    """The hyperparameter column; for a ``TimeDistributed``, the wrapped layer's type and its."""
    if not call.wraps_steps:
        return layer_hyperparameters(call.module, call.input_shapes)
    wrapped = call.module.layer
    step = [s[1:] for s in call.input_shapes]
    return f"{type(wrapped).__name__} {layer_hyperparameters(wrapped, step)}".rstrip()


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


def summary(model: Module | Callable[[], Module], input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None,
            batch_size: int = 1, optimizer: str = "adam") -> Summary:
    """The layer table of ``model`` (a Module, or a zero-argument builder such as
    ``lamina.models.vgg16``, built with shape-only weights) for inputs of ``input_shape``
    (without the batch axis; a list of shapes, one per input, for a model of several inputs;
    default: the shapes the model was built for).

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
    return Summary(tr, batch_size=batch_size, optimizer=optimizer)
