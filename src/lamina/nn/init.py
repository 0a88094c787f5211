"""Weight initializers (course notes, Weight initialization and Bias initialization).

Every initializer is called as ``init(shape, fan_in=None, fan_out=None, dtype=None)`` and
returns a new array of ``shape``; fans default to :func:`fans` of the shape and the dtype to
:func:`lamina.backend.get_default_dtype`. Random ones draw from :func:`lamina.backend.rng`.

* ``zeros``, ``ones`` and the factory ``constant(value)``: constant arrays. Zero biases are
  the default (symmetry is broken by the weights); the notes suggest a small positive bias
  (e.g. ``constant(0.01)``) before ReLU units to keep them from dying at the start.
* factories ``normal(std=0.01, mean=0)`` and ``uniform(limit=0.05)``: the notes' plain
  "small Gaussian" initialization, fine for shallow networks only, because activations
  shrink towards 0 layer after layer in deep ones.
* ``xavier_normal`` / ``xavier_uniform`` (Glorot): Var(W) = 2 / (fan_in + fan_out), i.e.
  std sqrt(2 / (fan_in + fan_out)) or a uniform limit sqrt(6 / (fan_in + fan_out)).
  Keeps the variance of activations and gradients through tanh layers.
* ``he_normal`` / ``he_uniform`` (Kaiming): Var(W) = 2 / fan_in, i.e. std sqrt(2 / fan_in)
  (the notes write ``2 / sqrt(fan_in)``; the factor belongs inside the root) or a uniform
  limit sqrt(6 / fan_in). Compensates the half of the units a ReLU switches off.
* ``lecun_normal`` / ``lecun_uniform``: Var(W) = 1 / fan_in, the notes'
  ``W = randn(fan_in, fan_out) / sqrt(fan_in)`` (the right choice before SELU).

A fan of 0 (a layer with no inputs: its weight has no entries) scales by 0 rather than
dividing by it, so ``Dense(3)`` builds on inputs of 0 features, as PyTorch's ``Linear(0, 3)``.

Beyond the notes: the factories ``orthogonal(gain=1)`` (Saxe et al.: the units' weight
vectors orthonormal, times ``gain``, which keeps the norm of a signal through many linear
layers or recurrent steps) and ``truncated_normal(std=0.05, mean=0)`` (N(mean, std^2) with
the draws beyond two standard deviations drawn again, Keras's ``TruncatedNormal``).

Layers take an initializer as a name (``'he_uniform'``, ``'glorot_uniform'`` is an alias of
``'xavier_uniform'``), a number (a constant), a config dict (``{'name': 'normal', 'std':
0.02}``), an :class:`Initializer` or any callable with the signature above; :func:`get`
resolves them and :func:`serialize` turns them back into JSON-compatible values.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator

import numpy

from lamina import backend

__all__ = [
    "Initializer", "constant", "fans", "get", "he_normal", "he_uniform", "is_meta", "is_meta_array",
    "lecun_normal", "lecun_uniform", "meta", "meta_array", "normal", "ones", "orthogonal", "serialize",
    "truncated_normal", "uniform", "xavier_normal", "xavier_uniform", "zeros",
]

_meta_depth = 0  # > 0 inside ``with meta():``


@contextlib.contextmanager
def meta() -> Iterator[None]:
    """Within the block, initializers return shape-only :func:`meta_array` weights."""
    global _meta_depth
    _meta_depth += 1
    try:
        yield
    finally:
        _meta_depth -= 1


def is_meta() -> bool:
    """Whether initializers currently return shape-only weights (inside :func:`meta`)."""
    return _meta_depth > 0


def meta_array(shape, dtype=None):
    """A read-only array of ``shape`` filled with 0 that owns no memory: every stride is 0
    (``broadcast_to`` of a 0-d zero), so a (25088, 4096) weight costs a few bytes."""
    dtype = numpy.dtype(backend.get_default_dtype() if dtype is None else dtype)
    return backend.xp.broadcast_to(backend.xp.zeros((), dtype=dtype), tuple(int(n) for n in shape))


def is_meta_array(array) -> bool:
    """Whether ``array`` (an array or a tensor) is a shape-only :func:`meta_array`."""
    if not hasattr(array, "strides"):
        array = getattr(array, "data", None)  # a tensor
    strides = getattr(array, "strides", None)
    return bool(strides) and array.size > 1 and not any(strides)


def _meta_init(shape, fan_in: int | None = None, fan_out: int | None = None, dtype=None):
    return meta_array(shape, dtype)


def _meta_aware(fn: Callable) -> Callable:
    """Make an initializer return :func:`meta_array` inside :func:`meta`."""

    @functools.wraps(fn)
    def initializer(shape, fan_in: int | None = None, fan_out: int | None = None, dtype=None):
        if _meta_depth:
            return meta_array(shape, dtype)
        return fn(shape, fan_in, fan_out, dtype)

    return initializer


def add_weight_and_bias(layer, w_shape: tuple[int, ...], units: int) -> None:
    """Give a layer its ``weight`` of ``w_shape``, drawn by its ``kernel_init`` from the fans of
    that shape, and, when it ``use_bias``, a ``bias`` of ``units`` values drawn by its
    ``bias_init``; then mark it built."""
    dtype = backend.get_default_dtype()
    fan_in, fan_out = fans(w_shape)
    layer.add_parameter("weight", get(layer.kernel_init)(w_shape, fan_in, fan_out, dtype))
    if layer.use_bias:
        layer.add_parameter("bias", get(layer.bias_init)((units,), fan_in, fan_out, dtype))
    layer.built = True


def fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of ``shape``.

    * ``(n,)`` (a bias or a per-channel vector): fan_in = fan_out = n.
    * Dense ``(n_in, n_out)``: fan_in = n_in, fan_out = n_out.
    * Convolution ``(K, fh, fw, c_in)`` (lamina's filter layout; any number of spatial axes):
      fan_in = fh·fw·c_in (the inputs one output unit sees), fan_out = fh·fw·K.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[1:-1])
    return receptive * shape[-1], receptive * shape[0]


def _resolve(shape, fan_in, fan_out, dtype):
    shape = tuple(int(n) for n in shape)
    if fan_in is None or fan_out is None:
        fi, fo = fans(shape)
        fan_in = fi if fan_in is None else fan_in
        fan_out = fo if fan_out is None else fan_out
    dtype = numpy.dtype(backend.get_default_dtype() if dtype is None else dtype)
    return shape, fan_in, fan_out, dtype


def _root(numerator: float, fan: int) -> float:
    """sqrt(numerator / fan), the scale of a variance-scaling initializer; 0 for a fan of 0 (a
    layer with no inputs, whose weight has no entries), as PyTorch's bias bound 1/sqrt(fan_in)."""
    return math.sqrt(numerator / fan) if fan else 0.0


def _standard_normal(shape, dtype):
    draw_dtype = dtype if dtype in (numpy.float32, numpy.float64) else numpy.float64
    return backend.rng().standard_normal(shape, dtype=draw_dtype)


def _unit_uniform(shape, dtype):
    """Uniform on [-1, 1)."""
    draw_dtype = dtype if dtype in (numpy.float32, numpy.float64) else numpy.float64
    u = backend.rng().random(shape, dtype=draw_dtype)
    u *= 2
    u -= 1
    return u


def _scaled(draw, scale: float, shift: float | None = None):
    """scale * draw (+ shift), in place: a large weight's one array is written once, not one new
    array per operation (each costs its page faults again)."""
    draw *= scale
    if shift is not None:
        draw += shift
    return draw


def _out(array, dtype):
    return backend.xp.asarray(array.astype(dtype, copy=False))


# -- constants -------------------------------------------------------------------------
@_meta_aware
def zeros(shape, fan_in: int | None = None, fan_out: int | None = None, dtype=None):
    """W = 0 (biases; symmetry is broken by the weights)."""
    shape, _, _, dtype = _resolve(shape, 1, 1, dtype)
    return backend.xp.zeros(shape, dtype=dtype)


@_meta_aware
def ones(shape, fan_in: int | None = None, fan_out: int | None = None, dtype=None):
    """W = 1 (batch-norm scale gamma)."""
    shape, _, _, dtype = _resolve(shape, 1, 1, dtype)
    return backend.xp.ones(shape, dtype=dtype)


# -- variance scaling ------------------------------------------------------------------
@_meta_aware
def xavier_normal(shape, fan_in: int | None = None, fan_out: int | None = None, dtype=None):
    """Glorot normal: W ~ N(0, 2 / (fan_in + fan_out))."""
    shape, fan_in, fan_out, dtype = _resolve(shape, fan_in, fan_out, dtype)
    std = _root(2.0, fan_in + fan_out)
    return _out(_scaled(_standard_normal(shape, dtype), std), dtype)


@_meta_aware
def xavier_uniform(shape, fan_in: int | None = None, fan_out: int | None = None, dtype=None):
    """Glorot uniform: W ~ U(-l, l), l = sqrt(6 / (fan_in + fan_out)) (variance l^2 / 3)."""
    shape, fan_in, fan_out, dtype = _resolve(shape, fan_in, fan_out, dtype)
    limit = _root(6.0, fan_in + fan_out)
    return _out(_scaled(_unit_uniform(shape, dtype), limit), dtype)


@_meta_aware
def he_normal(shape, fan_in: int | None = None, fan_out: int | None = None, dtype=None):
    """Kaiming normal: W ~ N(0, 2 / fan_in)."""
    shape, fan_in, fan_out, dtype = _resolve(shape, fan_in, fan_out, dtype)
    std = _root(2.0, fan_in)
    return _out(_scaled(_standard_normal(shape, dtype), std), dtype)


@_meta_aware
def he_uniform(shape, fan_in: int | None = None, fan_out: int | None = None, dtype=None):
    """Kaiming uniform: W ~ U(-l, l), l = sqrt(6 / fan_in) (variance 2 / fan_in)."""
    shape, fan_in, fan_out, dtype = _resolve(shape, fan_in, fan_out, dtype)
    limit = _root(6.0, fan_in)
    return _out(_scaled(_unit_uniform(shape, dtype), limit), dtype)


@_meta_aware
def lecun_normal(shape, fan_in: int | None = None, fan_out: int | None = None, dtype=None):
    """LeCun normal: W ~ N(0, 1 / fan_in), the notes' randn(fan_in, fan_out) / sqrt(fan_in)."""
    shape, fan_in, fan_out, dtype = _resolve(shape, fan_in, fan_out, dtype)
    z = _standard_normal(shape, dtype)
    if fan_in:
        z /= math.sqrt(fan_in)
    else:
        z *= 0.0
    return _out(z, dtype)


@_meta_aware
def lecun_uniform(shape, fan_in: int | None = None, fan_out: int | None = None, dtype=None):
    """LeCun uniform: W ~ U(-l, l), l = sqrt(3 / fan_in) (variance 1 / fan_in)."""
    shape, fan_in, fan_out, dtype = _resolve(shape, fan_in, fan_out, dtype)
    limit = _root(3.0, fan_in)
    return _out(_scaled(_unit_uniform(shape, dtype), limit), dtype)


# -- parametrised (factories) ----------------------------------------------------------
class Initializer:
    """An initializer with hyperparameters; ``get_config()`` gives ``{'name': ..., **params}``."""

    name = ""

    def __init__(self, **params: float):
        self.params = params

    def __call__(self, shape, fan_in: int | None = None, fan_out: int | None = None, dtype=None):
        if _meta_depth:
            return meta_array(shape, dtype)
        shape, fan_in, fan_out, dtype = _resolve(shape, fan_in, fan_out, dtype)
        return self.draw(shape, dtype)

    def draw(self, shape: tuple[int, ...], dtype):
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"name": self.name, **self.params}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({args})"


class _Constant(Initializer):
    name = "constant"

    def draw(self, shape, dtype):
        return backend.xp.full(shape, self.params["value"], dtype=dtype)


class _Normal(Initializer):
    name = "normal"

    def draw(self, shape, dtype):
        return _out(_scaled(_standard_normal(shape, dtype), self.params["std"], self.params["mean"]), dtype)


class _Uniform(Initializer):
    name = "uniform"

    def draw(self, shape, dtype):
        return _out(_scaled(_unit_uniform(shape, dtype), self.params["limit"]), dtype)


class _TruncatedNormal(Initializer):
    name = "truncated_normal"

    def draw(self, shape, dtype):
        z = _standard_normal(shape, dtype)
        outside = numpy.abs(z) > 2
        while outside.any():                 # about 4.6% of the draws each round
            z[outside] = _standard_normal(int(outside.sum()), dtype)
            outside = numpy.abs(z) > 2
        return _out(_scaled(z, self.params["std"], self.params["mean"]), dtype)


class _Orthogonal(Initializer):
    name = "orthogonal"

    def draw(self, shape, dtype):
        if len(shape) < 2:
            raise ValueError(f"orthogonal: needs a weight of at least 2 axes, got shape {shape}")
        # U: one row per unit, its weight vector: a dense (n_in, n_out) weight is U^T, a
        # convolution (K, f_h, f_w, c_in) weight is U with its rows reshaped to filters
        units = shape[1] if len(shape) == 2 else shape[0]
        if math.prod(shape) == 0:
            return backend.xp.zeros(shape, dtype=dtype)
        inputs = math.prod(shape) // units
        tall, short = max(units, inputs), min(units, inputs)
        q, r = numpy.linalg.qr(_standard_normal((tall, short), numpy.float64))
        q *= numpy.sign(numpy.diag(r))       # uniform over the orthogonal matrices (Mezzadri)
        u = q.T if units <= inputs else q    # orthonormal rows, or columns if more units than inputs
        u = self.params["gain"] * u
        return _out(u.T if len(shape) == 2 else u.reshape(shape), dtype)


def constant(value: float) -> Initializer:
    """W = value everywhere (e.g. ``constant(0.01)`` for biases before ReLU)."""
    return _Constant(value=float(value))


def normal(std: float = 0.01, mean: float = 0.0) -> Initializer:
    """W ~ N(mean, std^2), a fixed scale independent of the layer size."""
    return _Normal(std=float(std), mean=float(mean))


def uniform(limit: float = 0.05) -> Initializer:
    """W ~ U(-limit, limit)."""
    return _Uniform(limit=float(limit))


def truncated_normal(std: float = 0.05, mean: float = 0.0) -> Initializer:
    """W ~ N(mean, std^2) restricted to mean +- 2 std (draws outside are drawn again); the
    result's standard deviation is about 0.88 std."""
    return _TruncatedNormal(std=float(std), mean=float(mean))


def orthogonal(gain: float = 1.0) -> Initializer:
    """W with orthonormal unit weight vectors, times ``gain``: for a dense (n_in, n_out)
    weight W^T W = gain^2 I when n_in >= n_out (else W W^T = gain^2 I); for a convolution
    (K, f_h, f_w, c_in) the K filters, flattened, are orthonormal (when K <= f_h f_w c_in).
    Drawn as the Q of a Gaussian matrix's QR decomposition with the signs of R's diagonal,
    as PyTorch's ``orthogonal_`` and Keras's ``Orthogonal``."""
    return _Orthogonal(gain=float(gain))


_NAMED: dict[str, Callable] = {
    "zeros": zeros,
    "ones": ones,
    "xavier_normal": xavier_normal,
    "xavier_uniform": xavier_uniform,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "lecun_normal": lecun_normal,
    "lecun_uniform": lecun_uniform,
}
_ALIASES = {
    "zero": "zeros",
    "glorot_normal": "xavier_normal",
    "glorot_uniform": "xavier_uniform",
    "kaiming_normal": "he_normal",
    "kaiming_uniform": "he_uniform",
}
_FACTORIES: dict[str, Callable[..., Initializer]] = {
    "constant": constant,
    "normal": normal,
    "uniform": uniform,
    "truncated_normal": truncated_normal,
    "orthogonal": orthogonal,
}


def get(spec) -> Callable:
    """Resolve an initializer given as a name, number, config dict or callable."""
    if isinstance(spec, str):
        key = _ALIASES.get(spec.lower(), spec.lower())
        if key in _NAMED:
            return _NAMED[key]
        if key in _FACTORIES:
            return _FACTORIES[key]()
        known = sorted(set(_NAMED) | set(_FACTORIES) | set(_ALIASES))
        raise ValueError(f"unknown initializer {spec!r}; expected one of {known}")
    if isinstance(spec, bool):
        raise TypeError(f"initializer: expected a name, number, dict or callable, got {spec!r}")
    if isinstance(spec, (int, float)):
        return constant(spec)
    if isinstance(spec, dict):
        params = dict(spec)
        name = params.pop("name", None)
        if name not in _FACTORIES and name not in _NAMED and name not in _ALIASES:
            raise ValueError(f"initializer config {spec!r}: unknown name {name!r}")
        if name in _FACTORIES:
            return _FACTORIES[name](**params)
        return get(name)
    if callable(spec):
        return _meta_init if _meta_depth else spec
    raise TypeError(f"initializer: expected a name, number, dict or callable, got {type(spec).__name__}")


def serialize(spec) -> str | float | dict:
    """A JSON-compatible description of an initializer that :func:`get` turns back into it."""
    if isinstance(spec, str):
        get(spec)  # validate
        return spec
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return float(spec)
    if isinstance(spec, dict):
        return dict(spec)
    if isinstance(spec, Initializer):
        return spec.get_config()
    for name, fn in _NAMED.items():
        if spec is fn:
            return name
    raise ValueError(
        f"cannot serialise the initializer {spec!r}: give it as a name, a number, a config dict or "
        "a lamina.nn.init.Initializer subclass with get_config()"
    )
