"""Spiking neuron layers (snnTorch's ``Leaky``, ``Synaptic``, ``RLeaky`` and ``Lapicque``),
stepping one time step with their state passed in and out explicitly.

A leaky integrate-and-fire (LIF) neuron keeps a membrane potential U that decays by beta per
step, integrates its input current I, and fires a spike when it crosses the threshold theta:

    U[t+1] = beta U[t] + I[t+1] - R[t] theta        R[t] = S[t] = H(U[t] - theta)
    S[t+1] = H(U[t+1] - theta)

(``reset_mechanism="subtract"``, snnTorch's default: a spike removes theta from the potential).
``"zero"`` resets to zero instead, U[t+1] = beta (1 - R[t]) U[t] + I[t+1], and ``"none"``
never resets. The reset R is the previous step's spike, recomputed from U[t]; by default it is
cut from the graph (``detach_reset=True``, as snnTorch), so gradients flow through the
potential only, and with ``detach_reset=False`` it takes the surrogate gradient of the spike.

H is the Heaviside step forward, with the surrogate gradient ``spike_grad`` backward (a name
of :data:`lamina.functional.SURROGATES`, a :func:`lamina.functional.surrogate`,
or any callable ``u -> spikes``; default ``"atan"``, snnTorch's).

A layer is called on one step, samples first, any shape (batch, ...), with the previous
state (None: zeros, what ``init_leaky()`` and the like return) and returns the spikes and the
new state, as in snnTorch:

    spk, mem = lif(x, mem)                 # Leaky, Lapicque
    spk, syn, mem = syn_lif(x, syn, mem)   # Synaptic
    spk, mem = rlif(x, spk, mem)           # RLeaky

:class:`lamina.nn.SpikingSequential` runs whole sequences (T, batch, ...). beta, alpha and
theta are numbers or one value per neuron (broadcast against the last axes of the input);
``learn_beta`` and the like make them trainable parameters (beta and alpha are clamped to
[0, 1] when used, as snnTorch).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.elementwise import clip
from lamina.functional.surrogates import SURROGATES, Surrogate, surrogate
from lamina.nn import init as initializers
from lamina.nn.dense import linear
from lamina.nn.layer import describe, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["RESET_MECHANISMS", "Lapicque", "Leaky", "RLeaky", "SpikingNeuron", "Synaptic"]

RESET_MECHANISMS = ("subtract", "zero", "none")


def _values(value, who: str, what: str, interval: str = "") -> numpy.ndarray:
    """``value`` (a number or per-neuron values) as an array of the default dtype, checked to
    be finite and to lie in ``interval``: "[0, 1]", "(0, inf)" or "" (any)."""
    try:
        array = numpy.asarray(value, dtype=numpy.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{who}: {what} must be a number or an array of numbers, got {value!r}") from None
    if isinstance(value, bool) or array.size == 0 or not numpy.isfinite(array).all():
        raise ValueError(f"{who}: {what} must be finite numbers, got {value!r}")
    inside = {"[0, 1]": (array >= 0) & (array <= 1), "(0, inf)": array > 0, "": True}[interval]
    if not numpy.all(inside):
        raise ValueError(f"{who}: {what} must lie in {interval}, got {value!r}")
    return backend.xp.asarray(array, dtype=backend.get_default_dtype())


def _config_value(array) -> float | list:
    return float(array) if numpy.ndim(array) == 0 else numpy.asarray(array).tolist()


def _spike_function(spike_grad, who: str) -> Callable:
    if isinstance(spike_grad, str):
        if spike_grad not in SURROGATES:
            raise ValueError(f"{who}: spike_grad must be one of {SURROGATES}, a surrogate(...) or a callable, "
                             f"got {spike_grad!r}")
        return surrogate(spike_grad)
    if isinstance(spike_grad, dict):
        return surrogate(**spike_grad)
    if not callable(spike_grad):
        raise TypeError(f"{who}: spike_grad must be a surrogate name, a surrogate(...) or a callable, "
                        f"got {spike_grad!r}")
    return spike_grad


class SpikingNeuron(Module):
    """What the neuron layers share: the threshold, the spike function, the reset and the
    state's checks. A subclass gives ``state_names`` (the membrane potential ``"mem"`` last)
    and :meth:`step`."""

    state_names: tuple[str, ...] = ("mem",)

    def __init__(self, threshold=1.0, spike_grad="atan", reset_mechanism: str = "subtract",
                 learn_threshold: bool = False, detach_reset: bool = True, name: str | None = None):
        super().__init__(name=name)
        who = self._label()
        if reset_mechanism not in RESET_MECHANISMS:
            raise ValueError(f"{who}: reset_mechanism must be one of {RESET_MECHANISMS}, got {reset_mechanism!r}")
        self.reset_mechanism = reset_mechanism
        self.detach_reset = bool(detach_reset)
        self.spike_grad = _spike_function(spike_grad, who)
        self.add_parameter("threshold", _values(threshold, who, "threshold", "(0, inf)"),
                           trainable=bool(learn_threshold))
        self.built = True

    # -- one step ------------------------------------------------------------------------
    def init_state(self) -> tuple:
        """The zero state, one None per entry of ``state_names`` (a step reads None as zeros)."""
        return (None,) * len(self.state_names)

    def step(self, x: Tensor, state: tuple) -> tuple[Tensor, tuple]:
        """(spikes, new state) after one step of input ``x`` from ``state`` (``state_names``)."""
        raise NotImplementedError

    def forward(self, x, *state):
        """``spk, *state = layer(x, *state)``; a state left out, or None, is zeros."""
        x = as_tensor(x)
        given = self._given_state(x, state)
        spk, new = self.step(x, given)
        return (spk, *new)

    def _given_state(self, x: Tensor, state: tuple) -> tuple:
        if len(state) > len(self.state_names):
            raise TypeError(f"{self._label()}: takes the input and the state ({', '.join(self.state_names)}), got "
                            f"{len(state)} state values")
        state = tuple(state) + (None,) * (len(self.state_names) - len(state))
        checked = []
        for what, value in zip(self.state_names, state):
            if value is not None:
                value = as_tensor(value)
                if tuple(value.shape) != tuple(x.shape):
                    raise ShapeError(f"{self._label()}: the state {what} has {describe(value)}; expected the "
                                     f"input's shape {tuple(x.shape)}")
            checked.append(value)
        return tuple(checked)

    def fire(self, u) -> Tensor:
        """The spikes H(u) of the shifted potential u = mem - theta, with the surrogate gradient."""
        return self.spike_grad(u)

    def _check_input(self, x: Tensor, *per_neuron: Tensor) -> None:
        for values in per_neuron:
            k = values.ndim
            if k and (x.ndim < k or tuple(x.shape[x.ndim - k:]) != tuple(values.shape)):
                raise ShapeError(f"{self._label()}: got an input of {describe(x)}; its last axes must match the "
                                 f"per-neuron values of shape {tuple(values.shape)}")

    @staticmethod
    def _decay(param) -> Tensor:
        """A decay factor as used: clamped to [0, 1] when it is learned."""
        return clip(param, 0.0, 1.0) if param.requires_grad else param

    def _reset_signal(self, mem: Tensor):
        """R = H(mem - theta), the spike of the step that left ``mem``: a constant by default,
        the spike with its surrogate gradient with ``detach_reset=False``."""
        if not self.detach_reset:
            return self.fire(mem - self.threshold)
        return Tensor._wrap((mem.data > self.threshold.data).astype(mem.dtype))

    def _integrate(self, mem, decay, current: Tensor) -> Tensor:
        """decay mem + current, with the reset of the previous step (``reset_mechanism``);
        ``mem`` None stands for zeros."""
        if mem is None:
            if self.detach_reset or self.reset_mechanism != "subtract":
                return current
            # an attached reset H(0 - theta) is 0 but has a gradient with respect to theta
            mem = Tensor._wrap(backend.xp.zeros(current.shape, dtype=current.dtype))
        if self.reset_mechanism == "zero":
            return decay * (mem * (1 - self._reset_signal(mem))) + current
        new = decay * mem + current
        if self.reset_mechanism == "subtract":
            new = new - self._reset_signal(mem) * self.threshold
        return new

    # -- description -----------------------------------------------------------------------
    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        spike_grad = self.spike_grad
        if not isinstance(spike_grad, Surrogate):
            raise ValueError(f"{self._label()}.get_config: a custom spike_grad ({spike_grad!r}) cannot be saved in "
                             "a configuration; use lamina.functional.surrogate(...)")
        return {"threshold": _config_value(self.threshold.data), "spike_grad": spike_grad.get_config(),
                "reset_mechanism": self.reset_mechanism, "learn_threshold": self.threshold.trainable,
                "detach_reset": self.detach_reset, "name": self.name}

    def extra_repr(self) -> str:
        return f"reset_mechanism={self.reset_mechanism!r}, spike_grad={self.spike_grad!r}"


@register_layer
class Leaky(SpikingNeuron):
    """First-order LIF neuron (snnTorch's ``Leaky``): U[t+1] = beta U[t] + I[t+1] - R[t] theta,
    S[t+1] = H(U[t+1] - theta). ``spk, mem = lif(x, mem)``."""

    def __init__(self, beta, threshold=1.0, spike_grad="atan", reset_mechanism: str = "subtract",
                 learn_beta: bool = False, learn_threshold: bool = False, detach_reset: bool = True,
                 name: str | None = None):
        super().__init__(threshold, spike_grad, reset_mechanism, learn_threshold, detach_reset, name)
        self.add_parameter("beta", _values(beta, self._label(), "beta", "[0, 1]"), trainable=bool(learn_beta))

    def init_leaky(self):
        """The zero membrane potential: None, which a step reads as zeros of its input's shape."""
        return None

    def _current(self, x: Tensor) -> Tensor:
        return x

    def step(self, x, state):
        self._check_input(x, self.beta, self.threshold)
        mem = self._integrate(state[0], self._decay(self.beta), self._current(x))
        return self.fire(mem - self.threshold), (mem,)

    def get_config(self) -> dict:
        return {"beta": _config_value(self.beta.data), **super().get_config(), "learn_beta": self.beta.trainable}


@register_layer
class Lapicque(Leaky):
    """Lapicque's RC neuron (snnTorch's ``Lapicque``), a leaky neuron of resistance R and
    capacitance C simulated with Euler steps of ``time_step`` dt:

        U[t+1] = (1 - dt / (R C)) U[t] + (dt / C) I[t+1] - R[t] theta

    that is beta = 1 - dt / (R C) and the input scaled by dt / C. Giving ``beta`` instead sets
    C = dt / (R (1 - beta)) for the given R. ``spk, mem = lapicque(x, mem)``."""

    def __init__(self, beta=None, R: float = 1.0, C: float = 1.0, time_step: float = 1.0, threshold=1.0,
                 spike_grad="atan", reset_mechanism: str = "subtract", learn_threshold: bool = False,
                 detach_reset: bool = True, name: str | None = None):
        who = type(self).__name__
        R, time_step = (float(_values(v, who, what, "(0, inf)"))
                        for v, what in ((R, "R"), (time_step, "time_step")))
        if beta is not None:
            beta = float(_values(beta, who, "beta", "[0, 1]"))
            if beta == 1.0:
                raise ValueError(f"{who}: beta = 1 would need an infinite capacitance; give beta < 1")
            C = time_step / (R * (1.0 - beta))
        C = float(_values(C, who, "C", "(0, inf)"))
        decay = 1.0 - time_step / (R * C)
        if decay < 0:
            raise ValueError(f"{who}: time_step / (R C) = {time_step / (R * C):g} must be at most 1 (the Euler step "
                             "would overshoot); use a smaller time_step or a larger R C")
        super().__init__(decay, threshold, spike_grad, reset_mechanism, False, learn_threshold, detach_reset, name)
        self.R, self.C, self.time_step = R, C, time_step

    def init_lapicque(self):
        """The zero membrane potential (None)."""
        return None

    def _current(self, x):
        return x * (self.time_step / self.C)

    def get_config(self) -> dict:
        config = super().get_config()
        for key in ("beta", "learn_beta"):
            config.pop(key)
        return {**config, "R": self.R, "C": self.C, "time_step": self.time_step}


@register_layer
class Synaptic(SpikingNeuron):
    """Second-order LIF neuron (snnTorch's ``Synaptic``): a synaptic current that decays by
    alpha feeds the membrane,

        I_syn[t+1] = alpha I_syn[t] + I[t+1]
        U[t+1] = beta U[t] + I_syn[t+1] - R[t] theta,   S[t+1] = H(U[t+1] - theta)

    ``spk, syn, mem = syn_lif(x, syn, mem)``."""

    state_names = ("syn", "mem")

    def __init__(self, alpha, beta, threshold=1.0, spike_grad="atan", reset_mechanism: str = "subtract",
                 learn_alpha: bool = False, learn_beta: bool = False, learn_threshold: bool = False,
                 detach_reset: bool = True, name: str | None = None):
        super().__init__(threshold, spike_grad, reset_mechanism, learn_threshold, detach_reset, name)
        who = self._label()
        self.add_parameter("alpha", _values(alpha, who, "alpha", "[0, 1]"), trainable=bool(learn_alpha))
        self.add_parameter("beta", _values(beta, who, "beta", "[0, 1]"), trainable=bool(learn_beta))

    def init_synaptic(self):
        """The zero state (syn, mem): (None, None)."""
        return None, None

    def step(self, x, state):
        self._check_input(x, self.alpha, self.beta, self.threshold)
        syn, mem = state
        syn = x if syn is None else self._decay(self.alpha) * syn + x
        mem = self._integrate(mem, self._decay(self.beta), syn)
        return self.fire(mem - self.threshold), (syn, mem)

    def get_config(self) -> dict:
        return {"alpha": _config_value(self.alpha.data), "beta": _config_value(self.beta.data),
                **super().get_config(), "learn_alpha": self.alpha.trainable, "learn_beta": self.beta.trainable}


@register_layer
class RLeaky(SpikingNeuron):
    """Recurrent LIF neuron (snnTorch's ``RLeaky``): the previous step's spikes feed back,

        U[t+1] = beta U[t] + I[t+1] + rec(S[t]) - R[t] theta

    with rec(S) = S V + b over the last axis (``all_to_all=True``: V (n, n), drawn by
    ``kernel_init`` when the layer first sees its input, and a bias b), or rec(S) = V S
    element-wise (``all_to_all=False``: V a number or one value per neuron, the given ``V``).
    ``learn_recurrent`` trains V (and b). ``spk, mem = rlif(x, spk, mem)``."""

    state_names = ("spk", "mem")

    def __init__(self, beta, V=1.0, all_to_all: bool = True, learn_recurrent: bool = True, threshold=1.0,
                 spike_grad="atan", reset_mechanism: str = "subtract", learn_beta: bool = False,
                 learn_threshold: bool = False, detach_reset: bool = True, kernel_init="xavier_uniform",
                 name: str | None = None):
        super().__init__(threshold, spike_grad, reset_mechanism, learn_threshold, detach_reset, name)
        who = self._label()
        self.add_parameter("beta", _values(beta, who, "beta", "[0, 1]"), trainable=bool(learn_beta))
        self.all_to_all = bool(all_to_all)
        self.learn_recurrent = bool(learn_recurrent)
        self.kernel_init = kernel_init
        self.V_init = _config_value(_values(V, who, "V"))
        if self.all_to_all:
            initializers.get(kernel_init)
            self.built = False
        else:
            self.add_parameter("V", _values(V, who, "V"), trainable=self.learn_recurrent)

    def build(self, input_shape) -> None:
        if self.all_to_all:
            n = tuple(input_shape)[-1]
            if n is None:
                raise ShapeError(f"{self._label()}: the last axis of the input shape {tuple(input_shape)} must be "
                                 "known to create the recurrent weights")
            dtype = backend.get_default_dtype()
            self.add_parameter("V", initializers.get(self.kernel_init)((n, n), n, n, dtype),
                               trainable=self.learn_recurrent)
            self.add_parameter("bias", backend.xp.zeros((n,), dtype=dtype), trainable=self.learn_recurrent)
        self.built = True

    def init_rleaky(self):
        """The zero state (spk, mem): (None, None)."""
        return None, None

    def forward(self, x, spk=None, mem=None):
        """``spk, mem = rlif(x, spk, mem)``: the state is the previous spikes and potential."""
        x = as_tensor(x)
        spk, (_, mem) = self.step(x, self._given_state(x, (spk, mem)))
        return spk, mem

    def _feedback(self, spk) -> Tensor | None:
        if self.all_to_all:
            if spk is None:
                return self.bias
            return linear(spk, self.V, self.bias)
        return None if spk is None else self.V * spk

    def step(self, x, state):
        if not self.built:
            self.build(x.shape)
        self._check_input(x, self.beta, self.threshold, *(() if self.all_to_all else (self.V,)))
        spk, mem = state
        feedback = self._feedback(spk)
        current = x if feedback is None else x + feedback
        mem = self._integrate(mem, self._decay(self.beta), current)
        spk = self.fire(mem - self.threshold)
        return spk, (spk, mem)

    def get_config(self) -> dict:
        return {"beta": _config_value(self.beta.data), "V": self.V_init, "all_to_all": self.all_to_all,
                "learn_recurrent": self.learn_recurrent, **super().get_config(), "learn_beta": self.beta.trainable,
                "kernel_init": initializers.serialize(self.kernel_init)}
