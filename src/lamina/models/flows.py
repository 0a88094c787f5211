"""Normalizing flows: densities by change of variables through invertible layers.

A flow maps a sample x to a code z = f(x) = f_K(... f_1(x)) through invertible layers and
gives x the density of the code under a simple base distribution (a standard normal):

    log p(x) = log p_base(f(x)) + sum_k log |det J_{f_k}|,

J_{f_k} the Jacobian of layer k at its input. Every layer here is built so that its
log-determinant costs no more than the layer itself, and its inverse is exact:

* :class:`AffineCoupling` (RealNVP, Dinh et al. 2017): a binary mask b keeps some features
  and transforms the others with a scale and shift computed from the kept ones,
  y = b x + (1 - b) (x e^s + t), s, t = NN(b x); the Jacobian is triangular, log|det| = sum s.
* :class:`ActNorm` (Glow, Kingma and Dhariwal 2018): y = x e^a + c per feature, a and c set
  on the first training batch so that its outputs have zero mean and unit variance.
* :class:`Permute` and :class:`Reverse`: a fixed reordering of the features (log|det| = 0),
  so that every feature is transformed by some coupling.
* :class:`MaskedAutoregressive` (MAF, Papamakarios et al. 2017): z_i = (x_i - mu_i) e^(-a_i)
  with mu_i, a_i from a MADE network that sees only x_1 .. x_{i-1}; one pass forward (the
  density), d sequential passes back (sampling).

A layer's ``forward(x)`` returns (y, log|det J(x)|) and ``inverse(y)`` returns
(x, log|det J^-1(y)|) = (x, -log|det J(x)|), both per sample, shape (batch,).
:class:`NormalizingFlow` chains them, scores samples (``log_prob``) and draws new ones
(``sample``: base samples through the inverse). Train by maximum likelihood, with a plain
loop on ``-flow.log_prob(x).mean()`` or with the Trainer on :class:`FlowLogProb`::

    flow = realnvp(2, num_layers=6, hidden=64)
    trainer = Trainer(FlowLogProb(flow), density_nll, Adam(flow, lr=1e-3), metrics=())
    trainer.fit((x,), epochs=50, batch_size=256)        # inputs alone: the loss gets no labels
    samples = flow.sample(1000)
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.distributions import Independent, Normal
from lamina.errors import ShapeError
from lamina.nn import Dense, ModuleList, Sequential
from lamina.nn.layer import describe, layer_from_config, layer_to_config, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["ActNorm", "AffineCoupling", "FlowLogProb", "InvertibleLayer", "MaskedAutoregressive",
           "NormalizingFlow", "Permute", "Reverse", "density_nll", "realnvp"]


def _zeros_per_sample(x: Tensor) -> Tensor:
    """A constant log-determinant of 0 for each sample of ``x``."""
    return Tensor._wrap(backend.xp.zeros(x.shape[0], dtype=x.dtype))


def _hidden_sizes(hidden, who: str) -> tuple[int, ...]:
    """``hidden`` (an int: two layers of that width; or a sequence of widths) as a tuple."""
    sizes = (hidden, hidden) if isinstance(hidden, int) and not isinstance(hidden, bool) else tuple(hidden)
    if not sizes:
        raise ValueError(f"{who}: hidden must name at least one layer width, got {hidden!r}")
    return tuple(positive_int(n, f"{who}: hidden") for n in sizes)


def _sample_dtype(flow: Module, num_samples: int, dtype):
    """The checks of a flow's ``sample`` (``num_samples`` positive, the flow built) and the dtype
    to draw in: ``dtype``, else the parameters' (the default dtype without parameters)."""
    positive_int(num_samples, f"{flow._label()}.sample: num_samples")
    if not flow.built:
        raise RuntimeError(f"{flow._label()}.sample: the feature count is unknown; build the flow or call it first")
    if dtype is None:
        params = flow.parameters()
        dtype = params[0].dtype if params else backend.get_default_dtype()
    return dtype


class _CheckedFlowLayer(Module):
    """``forward(x)`` -> (y, log|det dy/dx|) and ``inverse(y)`` -> (x, log|det dx/dy|) on the
    tensor :meth:`_checked` validates; subclasses implement the three."""

    def _checked(self, x, method: str) -> Tensor:
        raise NotImplementedError

    def forward(self, x) -> tuple[Tensor, Tensor]:
        return self._forward(self._checked(x, "forward"))

    def inverse(self, y) -> tuple[Tensor, Tensor]:
        return self._inverse(self._checked(y, "inverse"))

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class InvertibleLayer(_CheckedFlowLayer):
    """The base of the flow layers: inputs of shape (batch, features), ``forward(x)`` ->
    (y, log|det dy/dx|) and ``inverse(y)`` -> (x, log|det dx/dy|), each log-determinant one
    value per sample. Subclasses implement :meth:`_forward` and :meth:`_inverse` on checked
    tensors."""

    def build(self, input_shape) -> None:
        self.features = self._feature_count(input_shape)
        self.built = True

    def _feature_count(self, input_shape) -> int:
        shape = tuple(input_shape) if input_shape is not None else ()
        if len(shape) != 2 or shape[1] is None:
            raise ShapeError(f"{self._label()}: got an input shape {shape}; expected (batch, features)")
        return int(shape[1])

    def _checked(self, x, method: str) -> Tensor:
        x = as_tensor(x)
        if not self.built:
            self.build(tuple(x.shape))
            self.build_input_shape = (None, x.shape[-1]) if x.ndim == 2 else None
        if x.ndim != 2 or x.shape[1] != self.features:
            raise ShapeError(f"{self._label()}.{method}: got an input of {describe(x)}; expected "
                             f"(batch, {self.features})")
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


@register_layer
class AffineCoupling(InvertibleLayer):
    """RealNVP's affine coupling layer.

    With the binary ``mask`` b (1: the feature is kept, 0: it is transformed),

        y = b x + (1 - b) (x e^s + t),   s = (1 - b) c tanh(u),  (u, t) = NN(b x),

    NN a Dense network of ``hidden`` widths and ``activation`` with 2 * features outputs,
    c a trained per-feature bound on the log-scale (1 at first), so |s| <= c.
    log|det J| = sum_i s_i; the inverse is x = b y + (1 - b) (y - t) e^(-s) with the same s, t
    (b y = b x). The network's last layer starts at zero: the layer starts as the identity.
    """

    def __init__(self, mask, hidden=(64, 64), activation="relu", name: str | None = None):
        super().__init__(name=name)
        values = np.asarray(mask)
        if values.ndim != 1 or values.size < 2 or not np.isin(values, (0, 1)).all():
            raise ValueError(f"AffineCoupling: mask must be a sequence of 0s and 1s with at least two entries, "
                             f"got {mask!r}")
        if values.all() or not values.any():
            raise ValueError(f"AffineCoupling: mask must keep some features (1) and transform others (0), "
                             f"got {values.tolist()}")
        self.mask = [int(v) for v in values]
        self.hidden = _hidden_sizes(hidden, "AffineCoupling")
        self.activation = activation
        layers = [Dense(n, activation=activation) for n in self.hidden]
        self.net = Sequential(*layers, Dense(2 * values.size, kernel_init="zeros"))

    def build(self, input_shape) -> None:
        features = self._feature_count(input_shape)
        if features != len(self.mask):
            raise ShapeError(f"{self._label()}: got an input shape {tuple(input_shape)}; the mask has "
                             f"{len(self.mask)} entries, so expected (batch, {len(self.mask)})")
        self.features = features
        self.net.build((None, features))
        self.add_parameter("scale", np.ones(features, dtype=backend.get_default_dtype()))
        self.built = True

    def _scale_and_shift(self, kept: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(kept)
        d = self.features
        free = Tensor._wrap(1.0 - np.asarray(self.mask, dtype=kept.dtype))
        s = F.tanh(out[:, :d]) * self.scale * free
        return s, out[:, d:] * free

    def _kept(self, x: Tensor) -> Tensor:
        return x * Tensor._wrap(np.asarray(self.mask, dtype=x.dtype))

    def _forward(self, x):
        s, t = self._scale_and_shift(self._kept(x))
        return x * F.exp(s) + t, s.sum(axis=1)

    def _inverse(self, y):
        s, t = self._scale_and_shift(self._kept(y))
        return (y - t) * F.exp(-s), -s.sum(axis=1)

    def get_config(self) -> dict:
        return {"mask": list(self.mask), "hidden": list(self.hidden), "activation": self.activation,
                "name": self.name}

    def extra_repr(self) -> str:
        return f"mask={self.mask}, hidden={self.hidden}"


@register_layer
class ActNorm(InvertibleLayer):
    """Glow's activation normalization: y = x e^a + c per feature, log|det J| = sum_i a_i.

    a and c are parameters set by the first forward pass in training mode so that that
    batch comes out with zero mean and unit variance per feature (a = -log(std + eps),
    c = -mean e^a); until then the layer is the identity. The ``initialized`` buffer
    records it, so that a loaded model is not initialized again."""

    def __init__(self, eps: float = 1e-6, name: str | None = None):
        super().__init__(name=name)
        self.eps = float(eps)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        dtype = backend.get_default_dtype()
        self.add_parameter("log_scale", np.zeros(self.features, dtype=dtype))
        self.add_parameter("bias", np.zeros(self.features, dtype=dtype))
        self.register_buffer("initialized", np.zeros((), dtype=dtype))

    def _initialize(self, x: Tensor) -> None:
        data = backend.to_numpy(x.data)
        if data.shape[0] < 2:
            raise ValueError(f"{self._label()}: the data-dependent initialization needs a first training batch "
                             f"of at least 2 samples, got {describe(x)}")
        log_scale = -np.log(data.std(axis=0) + self.eps)
        self.log_scale.data = backend.xp.asarray(log_scale.astype(self.log_scale.dtype))
        self.bias.data = backend.xp.asarray((-data.mean(axis=0) * np.exp(log_scale)).astype(self.bias.dtype))
        self.register_buffer("initialized", np.ones((), dtype=self.initialized.dtype))

    def _log_det(self, x: Tensor) -> Tensor:
        return self.log_scale.sum() + _zeros_per_sample(x)

    def _forward(self, x):
        if self.training and not bool(self.initialized):
            self._initialize(x)
        return x * F.exp(self.log_scale) + self.bias, self._log_det(x)

    def _inverse(self, y):
        return (y - self.bias) * F.exp(-self.log_scale), -self._log_det(y)

    def get_config(self) -> dict:
        return {"eps": self.eps, "name": self.name}


@register_layer
class Permute(InvertibleLayer):
    """A fixed reordering of the features, y = x[:, permutation] (log|det J| = 0).

    ``permutation``: the new order, or None to draw one from lamina's generator when the
    layer is built; it is kept in a buffer, so it travels with the weights."""

    def __init__(self, permutation=None, name: str | None = None):
        super().__init__(name=name)
        self.given = None if permutation is None else [int(i) for i in permutation]
        if self.given is not None and sorted(self.given) != list(range(len(self.given))):
            raise ValueError(f"{type(self).__name__}: permutation must hold each of 0 .. n-1 once, got {permutation!r}")

    def _order(self, features: int) -> np.ndarray:
        if self.given is None:
            return backend.rng().permutation(features)
        if len(self.given) != features:
            raise ShapeError(f"{self._label()}: the permutation has {len(self.given)} entries but the input has "
                             f"{features} features")
        return np.asarray(self.given)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self.register_buffer("permutation", self._order(self.features).astype(np.int64))

    def _forward(self, x):
        return F.index_select(x, 1, self.permutation), _zeros_per_sample(x)

    def _inverse(self, y):
        return F.index_select(y, 1, np.argsort(self.permutation)), _zeros_per_sample(y)

    def get_config(self) -> dict:
        return {"permutation": self.given, "name": self.name}


@register_layer
class Reverse(Permute):
    """The features in reverse order (a :class:`Permute` that needs no stored order)."""

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def _order(self, features: int) -> np.ndarray:
        return np.arange(features)[::-1].copy()

    def get_config(self) -> dict:
        return {"name": self.name}


def made_masks(features: int, hidden: tuple[int, ...]) -> list[np.ndarray]:
    """MADE's connectivity masks (Germain et al. 2015) for inputs in their natural order.

    Input i has degree i + 1 and the hidden units degrees cycling through 1 .. features - 1;
    a hidden unit of degree m sees the units below of degree <= m, and output i sees the last
    hidden layer's units of degree < i + 1, so output i depends on x_1 .. x_{i-1} only.
    Returns one (n_in, n_out) 0/1 mask per Dense layer, the last with ``features`` columns."""
    degrees = [np.arange(1, features + 1)]
    for width in hidden:
        degrees.append(np.arange(width) % max(features - 1, 1) + 1)
    masks = [(d_out[None, :] >= d_in[:, None]).astype(np.float64) for d_in, d_out in zip(degrees, degrees[1:])]
    masks.append((degrees[0][None, :] > degrees[-1][:, None]).astype(np.float64))
    return masks


@register_layer
class MaskedAutoregressive(InvertibleLayer):
    """A masked autoregressive flow layer (MAF) on a MADE network.

    z_i = (x_i - mu_i) e^(-a_i), (mu_i, a_i) functions of x_1 .. x_{i-1} only (MADE: Dense
    layers whose weights are multiplied by fixed 0/1 masks), a_i = c tanh(u_i) bounded as in
    :class:`AffineCoupling`. The Jacobian is triangular: log|det J| = -sum_i a_i. The
    inverse, x_i = z_i e^(a_i) + mu_i, is computed one feature at a time (``features``
    passes of the network), exactly. The last layer starts at zero (the identity)."""

    def __init__(self, hidden=(64, 64), activation="relu", name: str | None = None):
        super().__init__(name=name)
        self.hidden = _hidden_sizes(hidden, "MaskedAutoregressive")
        self.activation = activation

    def build(self, input_shape) -> None:
        super().build(input_shape)
        d = self.features
        if d < 2:
            raise ShapeError(f"{self._label()}: an autoregressive layer needs at least 2 features, got input "
                             f"shape {tuple(input_shape)}")
        masks = made_masks(d, self.hidden)
        masks[-1] = np.concatenate([masks[-1], masks[-1]], axis=1)  # mu and u share the connectivity
        dtype = backend.get_default_dtype()
        self.layers = ModuleList([Dense(n, activation=self.activation) for n in self.hidden]
                                 + [Dense(2 * d, kernel_init="zeros")])
        width = d
        for layer, mask in zip(self.layers, masks):
            layer.build((None, width))
            width = layer.units
            layer.register_buffer("mask", mask.astype(dtype))
        self.add_parameter("scale", np.ones(d, dtype=dtype))

    def _shift_and_log_scale(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = x
        for layer in self.layers:
            h = layer.apply_weights(h, layer.weight * Tensor._wrap(layer.mask.astype(x.dtype, copy=False)))
        d = self.features
        return h[:, :d], F.tanh(h[:, d:]) * self.scale

    def _forward(self, x):
        mu, a = self._shift_and_log_scale(x)
        return (x - mu) * F.exp(-a), -a.sum(axis=1)

    def _inverse(self, z):
        x = z * 0.0
        for i in range(self.features):
            # features < i are final, and mu_i, a_i depend on them only; so, after the last
            # pass, are all of mu and a
            mu, a = self._shift_and_log_scale(x)
            only_i = Tensor._wrap(np.eye(self.features, dtype=z.dtype)[i])
            x = x + only_i * (z * F.exp(a) + mu - x)
        return x, a.sum(axis=1)

    def get_config(self) -> dict:
        return {"hidden": list(self.hidden), "activation": self.activation, "name": self.name}

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}"


@register_layer
class NormalizingFlow(Module):
    """Invertible ``layers`` on top of a ``base_distribution`` (default: the standard normal
    of the feature dimension, in the inputs' dtype).

    ``forward(x)`` -> (z, log|det dz/dx|), ``inverse(z)`` -> (x, log|det dx/dz|),
    ``log_prob(x)`` = log p_base(z) + log|det dz/dx| per sample, ``sample(n)``: n draws of the
    base mapped through the inverse. A custom base distribution (any object with
    ``log_prob`` of one value per sample and ``sample((n,))``) cannot be saved in a config."""

    def __init__(self, layers, base_distribution=None, name: str | None = None):
        super().__init__(name=name)
        self.layers = ModuleList(list(layers))
        for layer in self.layers:
            if not (callable(getattr(layer, "inverse", None))):
                raise TypeError(f"NormalizingFlow: every layer needs forward and inverse; {type(layer).__name__} "
                                "has no inverse")
        self.base_distribution = base_distribution
        self.features: int | None = None

    def build(self, input_shape) -> None:
        shape = tuple(input_shape) if input_shape is not None else ()
        if len(shape) != 2 or shape[1] is None:
            raise ShapeError(f"{self._label()}: got an input shape {shape}; expected (batch, features)")
        self.features = int(shape[1])
        for layer in self.layers:
            if not layer.built:
                layer.build((None, self.features))
                layer.built = True
                layer.build_input_shape = (None, self.features)
        self.built = True
        self.build_input_shape = (None, self.features)

    def _input(self, x, method: str) -> Tensor:
        x = as_tensor(x)
        if not self.built:
            self.build(tuple(x.shape))
        if x.ndim != 2 or x.shape[1] != self.features:
            raise ShapeError(f"{self._label()}.{method}: got an input of {describe(x)}; expected "
                             f"(batch, {self.features})")
        return x

    def forward(self, x) -> tuple[Tensor, Tensor]:
        z = self._input(x, "forward")
        log_det = _zeros_per_sample(z)
        for layer in self.layers:
            z, step = layer(z)
            log_det = log_det + step
        return z, log_det

    def inverse(self, z) -> tuple[Tensor, Tensor]:
        x = self._input(z, "inverse")
        log_det = _zeros_per_sample(x)
        for layer in reversed(list(self.layers)):
            x, step = layer.inverse(x)
            log_det = log_det + step
        return x, log_det

    def base(self, dtype=None):
        """The base distribution (the standard normal over the features in ``dtype`` when none was given)."""
        if self.base_distribution is not None:
            return self.base_distribution
        if self.features is None:
            raise RuntimeError(f"{self._label()}: the feature count is unknown; build the flow or call it first")
        dtype = np.dtype(dtype or backend.get_default_dtype())
        zeros = backend.xp.zeros(self.features, dtype=dtype)
        return Independent(Normal(zeros, zeros + 1.0, validate_args=False), 1, validate_args=False)

    def log_prob(self, x) -> Tensor:
        """log p(x) = log p_base(f(x)) + log|det J_f(x)|, one value per sample."""
        z, log_det = self.forward(x)
        return self.base(z.dtype).log_prob(z) + log_det

    def sample(self, num_samples: int, dtype=None) -> Tensor:
        """``num_samples`` draws: base samples through the inverse pass, off the graph (in
        ``dtype``, by default the parameters')."""
        dtype = _sample_dtype(self, num_samples, dtype)
        with no_grad():
            z = as_tensor(self.base(dtype).sample((num_samples,)))
            return self.inverse(z)[0]

    def get_config(self) -> dict:
        if self.base_distribution is not None:
            raise ValueError(f"{self._label()}.get_config: a custom base distribution cannot be saved; rebuild "
                             "the flow with it and load the weights with load_state_dict")
        return {"layers": [layer_to_config(layer) for layer in self.layers], "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> NormalizingFlow:
        config = dict(config)
        config["layers"] = [layer_from_config(c) for c in config["layers"]]
        return cls(**config)

    def extra_repr(self) -> str:
        return f"features={self.features}" if self.features is not None else ""


@register_layer
class FlowLogProb(Module):
    """``flow.log_prob(x)`` as a model's output, for the Trainer with
    :func:`density_nll` as the loss (the flow's parameters are this model's)."""

    def __init__(self, flow: NormalizingFlow, name: str | None = None):
        super().__init__(name=name)
        self.flow = flow

    def build(self, input_shape) -> None:
        self.flow.build(input_shape)
        self.built = True

    def forward(self, x) -> Tensor:
        return self.flow.log_prob(x)

    def get_config(self) -> dict:
        return {"flow": layer_to_config(self.flow), "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> FlowLogProb:
        return cls(layer_from_config(config["flow"]), name=config.get("name"))


def density_nll(log_prob, target=None) -> Tensor:
    """-mean(log_prob): the maximum-likelihood cost of a density model's per-sample log
    densities (``target``, the labels if the data has any, is ignored)."""
    return -as_tensor(log_prob).mean()


def realnvp(dim: int, num_layers: int = 4, hidden=(64, 64), activation: str = "relu",
            actnorm: bool = True, name: str | None = None) -> NormalizingFlow:
    """A RealNVP flow over ``dim`` features: ``num_layers`` affine couplings whose masks
    alternate between the even and the odd features (so each feature is transformed by every
    other coupling), each after an :class:`ActNorm` when ``actnorm``; built for (batch, dim)."""
    positive_int(num_layers, "realnvp: num_layers")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ValueError(f"realnvp: dim must be an int >= 2 (a coupling keeps some features and transforms "
                         f"the others), got {dim!r}")
    even = [int(i % 2 == 0) for i in range(dim)]
    layers: list[Module] = []
    for k in range(num_layers):
        if actnorm:
            layers.append(ActNorm())
        mask = even if k % 2 == 0 else [1 - b for b in even]
        layers.append(AffineCoupling(mask, hidden=hidden, activation=activation))
    flow = NormalizingFlow(layers, name=name)
    flow.build((None, dim))
    return flow
