"""Flow matching: a velocity field v_theta(t, x) trained to carry source samples x0 (noise,
or any distribution) at t = 0 to data x1 at t = 1, and sampled by solving the ODE
dx/dt = v_theta(t, x) with :func:`lamina.odeint` (Lipman et al. 2023; Liu et al. 2023;
Tong et al. 2023).

Training regresses the net on a probability path's conditional velocity
(:mod:`lamina.models.flow_matching_paths`):

    L(theta) = mean over the batch and values of (v_theta(t, x_t) - u_t(x_t | x0, x1))^2,
    t ~ U[0, 1], x_t and u_t from the matcher.

The net is a time-conditioned denoiser of :mod:`lamina.models.diffusion_nets`
(:class:`DenoisingMLP`, :class:`DenoisingUNet`) called as ``net(x, time_scale * t)``: the
sinusoidal time features were made for timesteps up to about 1000, so t in [0, 1] is scaled.
With ``num_classes`` on the net, labels are dropped to "no class" at the rate
``label_dropout`` in training, and sampling with ``guidance_scale`` w follows
v = v(x, t, no class) + w (v(x, t, y) - v(x, t, no class)) (classifier-free guidance).

Rectified flow's reflow (Liu et al. 2023): :func:`reflow_pairs` gives the pairs
(x0, ODE_theta(x0)); a model trained on them with a straight path (sigma = 0) moves along
straighter trajectories, so that few Euler steps suffice. :func:`straightness` measures it:
S = int_0^1 E ||(x_1 - x_0) - v_theta(t, x_t)||^2 dt along the solver's path (0 for
straight lines at constant speed).

Example::

    model = FlowMatchingModel(DenoisingMLP(hidden=(64, 64)), matcher="exact_ot")
    train_flow_matching(model, moons, x0=gaussians, epochs=50, batch_size=256, lr=3e-3)
    samples = model.sample(start=gaussians, steps=20, method="midpoint")
"""

from __future__ import annotations

import numbers

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.functional.ode import odeint
from lamina.models.diffusion import class_labels
from lamina.models.flow_matching_paths import ConditionalFlowMatcher, make_matcher
from lamina.nn.layer import describe, layer_from_config, layer_to_config, positive_int, register_layer
from lamina.nn.module import Module, as_tensor, evaluation_mode

__all__ = ["FIXED_STEP_METHODS", "FlowMatchingModel", "flow_matching_loss", "reflow_pairs", "straightness"]

FIXED_STEP_METHODS = ("euler", "midpoint", "rk4")


@register_layer
class FlowMatchingModel(Module):
    """A velocity field: a time-conditioned ``net`` (``net(x, t)``, or ``net(x, t, y)`` with
    class labels) and a probability path ``matcher`` ('cfm', 'target', 'exact_ot', a
    :class:`~lamina.models.ConditionalFlowMatcher` or its config).

    ``time_scale``: the factor on t in [0, 1] before the net's time embedding.
    ``sample_shape``: the shape of one sample (None: from the first input).
    ``label_dropout``: the rate at which :meth:`loss` swaps labels for "no class".
    Calling the model, ``model(x, t, y=None)``, gives v_theta(t, x).
    """

    def __init__(self, net: Module, matcher="cfm", time_scale: float = 1000.0, sample_shape=None,
                 label_dropout: float = 0.1, name: str | None = None):
        super().__init__(name=name)
        if not isinstance(net, Module):
            raise TypeError(f"FlowMatchingModel: net must be a Module called as net(x, t), got {type(net).__name__}")
        if isinstance(time_scale, bool) or not isinstance(time_scale, numbers.Real) or not time_scale > 0:
            raise ValueError(f"FlowMatchingModel: time_scale must be a number > 0, got {time_scale!r}")
        if isinstance(label_dropout, bool) or not isinstance(label_dropout, numbers.Real) \
                or not 0 <= label_dropout <= 1:
            raise ValueError(f"FlowMatchingModel: label_dropout must be a number in [0, 1], got {label_dropout!r}")
        self.net = net
        self.matcher = make_matcher(matcher)
        self.time_scale, self.label_dropout = float(time_scale), float(label_dropout)
        self.sample_shape = None if sample_shape is None else tuple(
            positive_int(n, "FlowMatchingModel: sample_shape") for n in sample_shape)
        self.last_nfe = 0

    @property
    def num_classes(self) -> int | None:
        """The net's number of classes (None: unconditional)."""
        return getattr(self.net, "num_classes", None)

    def build(self, input_shape) -> None:
        shape = tuple(input_shape[0] if isinstance(input_shape, list) else input_shape)
        if self.sample_shape is not None and shape[1:] != self.sample_shape:
            raise ShapeError(f"{self._label()}: got inputs of shape {shape}; the model makes samples of shape "
                             f"{self.sample_shape}")
        self.sample_shape = tuple(int(n) for n in shape[1:])
        self.built = True

    def forward(self, x, t, y=None) -> Tensor:
        """v_theta(t, x) at the samples ``x`` and times ``t`` (n numbers, or one) (labels ``y``)."""
        x = as_tensor(x)
        times = np.asarray(backend.to_numpy(t.data if isinstance(t, Tensor) else t), dtype=np.float64)
        if times.ndim == 0:
            times = np.full(x.shape[0], float(times))
        steps = times * self.time_scale
        return self.net(x, steps) if y is None else self.net(x, steps, y)

    def velocity(self, x, t, labels=None, guidance_scale: float = 1.0) -> Tensor:
        """v_theta(t, x), with classifier-free guidance when ``labels`` are given and
        ``guidance_scale`` != 1 (module notes)."""
        x = as_tensor(x)
        if labels is None:
            return self(x, t)
        if guidance_scale == 1:
            return self(x, t, labels)
        n = x.shape[0]
        both = self(F.concat([x, x], axis=0), t, np.concatenate([labels, np.full(n, self.net.null_class)]))
        conditional, unconditional = both[:n], both[n:]
        return unconditional + guidance_scale * (conditional - unconditional)

    # -- training -------------------------------------------------------------------------
    def loss(self, x1, x0=None, labels=None, t=None, couple: bool = True) -> Tensor:
        """:func:`flow_matching_loss` with this model's matcher (``x0`` default: N(0, I))."""
        return flow_matching_loss(self, x1, x0, self.matcher, labels=labels, t=t, couple=couple)

    def _labels(self, labels, n: int, who: str) -> np.ndarray | None:
        return class_labels(labels, n, self.num_classes, f"{self._label()}.{who}")

    # -- sampling ------------------------------------------------------------------------
    def _start(self, n, start, who: str) -> Tensor:
        if self.sample_shape is None and start is None:
            raise RuntimeError(f"{who}: the sample shape is unknown; give sample_shape= or train the model first")
        params = self.parameters()
        dtype = params[0].dtype if params else backend.get_default_dtype()
        if start is None:
            n = positive_int(n, f"{who}: n")
            start = backend.rng().standard_normal((n, *self.sample_shape))
        x = as_tensor(backend.xp.asarray(backend.to_numpy(start.data) if isinstance(start, Tensor) else start,
                                         dtype=dtype))
        if self.sample_shape is not None and tuple(x.shape[1:]) != self.sample_shape:
            raise ShapeError(f"{who}: start of {describe(x)} must hold samples of shape {self.sample_shape}")
        if n is not None and x.shape[0] != n:
            raise ShapeError(f"{who}: start holds {x.shape[0]} samples but n={n}")
        return x

    def trajectory(self, n: int | None = None, times=None, steps: int = 100, method: str = "euler",
                   start=None, labels=None, guidance_scale: float = 1.0, rtol: float = 1e-5,
                   atol: float = 1e-5) -> np.ndarray:
        """The ODE's states at ``times`` (default: t = 0 and 1), a NumPy array
        (len(times), n, *sample_shape), from ``start`` (x_0; default n draws of N(0, I)).
        ``method``: a fixed-step method of :func:`lamina.odeint` ('euler', 'midpoint', 'rk4')
        taking ``steps`` equal steps over [0, 1], or the adaptive 'dopri5' / 'bosh3' with
        ``rtol``/``atol``. :attr:`last_nfe` records the net evaluations used (a guided one
        counts once)."""
        who = f"{self._label()}.sample"
        x = self._start(n, start, who)
        y = self._labels(labels, x.shape[0], "sample")
        if guidance_scale != 1 and y is None:
            raise ValueError(f"{who}: guidance_scale={guidance_scale!r} needs labels to guide towards")
        times = np.array([0.0, 1.0]) if times is None else np.asarray(times, dtype=np.float64)
        if times.ndim != 1 or times.min() < 0 or times.max() > 1:
            raise ValueError(f"{who}: times must be a 1-D array of times in [0, 1], got {times!r}")
        options = None
        if method in FIXED_STEP_METHODS:
            options = {"step_size": (times[-1] - times[0]) / positive_int(steps, f"{who}: steps")}
        count = [0]

        def field(t, state):
            count[0] += 1
            return self.velocity(state, float(t.item()), y, guidance_scale)

        with no_grad(), evaluation_mode(self):
            states = odeint(field, x, times, method=method, rtol=rtol, atol=atol, options=options, who=who)
        self.last_nfe = count[0]
        return np.asarray(backend.to_numpy(states.data))

    def sample(self, n: int | None = None, steps: int = 100, method: str = "euler", start=None, labels=None,
               guidance_scale: float = 1.0, rtol: float = 1e-5, atol: float = 1e-5) -> np.ndarray:
        """Samples x_1, a NumPy array (n, *sample_shape): the ODE solved from t = 0 to 1 from
        ``start`` (default n draws of N(0, I)); see :meth:`trajectory` for the options."""
        return self.trajectory(n, None, steps, method, start, labels, guidance_scale, rtol, atol)[-1]

    # -- configuration ---------------------------------------------------------------------
    def get_config(self) -> dict:
        return {"net": layer_to_config(self.net), "matcher": self.matcher.get_config(),
                "time_scale": self.time_scale,
                "sample_shape": None if self.sample_shape is None else list(self.sample_shape),
                "label_dropout": self.label_dropout, "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> FlowMatchingModel:
        config = dict(config)
        config["net"] = layer_from_config(config["net"])
        return cls(**config)

    def extra_repr(self) -> str:
        return f"{self.matcher!r}, time_scale={self.time_scale}"


def flow_matching_loss(model, x1, x0=None, matcher: ConditionalFlowMatcher | str | None = None, labels=None,
                       t=None, label_dropout: float | None = None, couple: bool = True) -> Tensor:
    """The conditional flow matching loss mean((model(x_t, t[, y]) - u_t)^2) over every value
    of the batch, (t, x_t, u_t) from ``matcher`` (default: the model's, else 'cfm') for the
    data ``x1`` and the source ``x0`` (default: N(0, I) from lamina's generator). ``model``
    is called as ``model(x_t, t)`` with t in [0, 1]. Class ``labels`` follow x1 through the
    matcher's coupling and are swapped for "no class" at the rate ``label_dropout`` (default:
    the model's). ``couple=False`` keeps the pairs (x0[i], x1[i]) as given (reflow's pairs),
    skipping an optimal transport matcher's re-pairing."""
    who = "flow_matching_loss"
    matcher = make_matcher(matcher if matcher is not None else getattr(model, "matcher", "cfm"))
    data = x1.data if isinstance(x1, Tensor) else backend.xp.asarray(x1)
    if data.ndim < 2:
        raise ShapeError(f"{who}: x1 must be a batch of samples (n, ...), got {describe(data)}")
    if data.dtype.kind != "f":
        data = data.astype(backend.get_default_dtype())
    if x0 is None:
        x0 = backend.xp.asarray(backend.rng().standard_normal(data.shape), dtype=data.dtype)
    x0, data = matcher.checked_pair(x0, data)
    rows, cols = matcher.couple(x0, data) if couple else (np.arange(len(data)),) * 2
    t, xt, ut = matcher.path(x0[backend.xp.asarray(rows)], data[backend.xp.asarray(cols)], t)
    y = None if labels is None else _training_labels(model, labels, np.asarray(cols), label_dropout)
    output = model(Tensor._wrap(xt), t) if y is None else model(Tensor._wrap(xt), t, y)
    if output.shape != ut.shape:
        raise ShapeError(f"{who}: the model gives {describe(output)} for inputs of shape {tuple(xt.shape)}; a "
                         "velocity must have the inputs' shape")
    diff = output - Tensor._wrap(ut)
    return (diff * diff).mean()


def _training_labels(model, labels, cols: np.ndarray, label_dropout: float | None) -> np.ndarray:
    """The labels of the paired data rows ``cols``, each swapped for the net's "no class" at the
    rate ``label_dropout`` (default: the model's)."""
    values = model._labels(labels, len(cols), "loss") if isinstance(model, FlowMatchingModel) else np.asarray(labels)
    values = values[cols]
    rate = getattr(model, "label_dropout", 0.0) if label_dropout is None else label_dropout
    if rate > 0:
        null_class = getattr(model, "net", model).null_class
        values = np.where(backend.rng().random(len(values)) < rate, null_class, values)
    return values


def reflow_pairs(model: FlowMatchingModel, x0=None, n: int | None = None, steps: int = 100,
                 method: str = "euler", labels=None, guidance_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Rectified flow's coupling (x0, x1 = ODE_theta(x0)): the source samples ``x0`` (default:
    ``n`` draws of N(0, I)) and where the model's flow carries them (:meth:`~FlowMatchingModel.sample`)."""
    start = model._start(n, x0, f"{model._label()}.reflow_pairs")
    ends = model.sample(steps=steps, method=method, start=start, labels=labels, guidance_scale=guidance_scale)
    return np.asarray(backend.to_numpy(start.data)), ends


def straightness(model: FlowMatchingModel, x0=None, n: int | None = None, steps: int = 100, labels=None,
                 guidance_scale: float = 1.0) -> float:
    """S = mean over ``steps`` Euler steps of E ||(x_1 - x_0) - v_theta(t_k, x_k)||^2 (module
    notes), from ``x0`` (default: ``n`` draws of N(0, I)); the squared norm is summed over
    each sample's values. 0 for straight paths of constant speed."""
    who = f"{model._label()}.straightness"
    x = model._start(n, x0, who)
    y = model._labels(labels, x.shape[0], "straightness")
    steps = positive_int(steps, f"{who}: steps")
    velocities = []
    with no_grad(), evaluation_mode(model):
        start = x.data
        for k in range(steps):
            v = model.velocity(x, k / steps, y, guidance_scale).data
            velocities.append(v)
            x = Tensor._wrap(x.data + v / steps)
    displacement = x.data - start
    axes = tuple(range(1, displacement.ndim))
    deviations = [float(((displacement - v) ** 2).sum(axis=axes).mean()) for v in velocities]
    return float(np.mean(deviations))
