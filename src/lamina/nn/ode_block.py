"""``ODEBlock``: a layer whose output is the final state of an ODE started at its input,
h(t_1) with dh/dt = f(t, h), h(t_0) = x (the ODE-Net of Chen et al., 2018, in place of a
stack of residual blocks h_{k+1} = h_k + f(h_k))."""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.functional.ode import METHODS, odeint
from lamina.functional.ode_adjoint import odeint_adjoint
from lamina.nn.layer import layer_from_config, layer_to_config, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["ODEBlock"]

_ADJOINT_KEYWORDS = {"adjoint_method", "adjoint_rtol", "adjoint_atol", "adjoint_options"}


@register_layer
class ODEBlock(Module):
    """h(t_1) for dh/dt = ``func(t, h)`` from h(t_0) = the input, ``t = (t_0, t_1)``.

    ``func`` is a module taking (t, h) (``t`` a 0-d tensor). ``method``, ``rtol``, ``atol`` and
    ``options`` are :func:`lamina.odeint`'s; ``adjoint=True`` differentiates by the adjoint
    method (:func:`lamina.odeint_adjoint`, its ``adjoint_*`` keywords in ``adjoint_options``).

    Function evaluations are counted, as they are plotted for ODE-Nets: ``nfe_forward`` for
    the last forward pass, ``nfe_backward`` for the backward pass after it (0 without the
    adjoint, which back-propagates through the recorded steps instead of calling ``func``),
    ``nfe`` their sum. Each forward pass starts both counts again.
    """

    def __init__(self, func: Module, t=(0.0, 1.0), method: str = "dopri5", rtol: float = 1e-7,
                 atol: float = 1e-9, options: dict | None = None, adjoint: bool = False,
                 adjoint_options: dict | None = None, name: str | None = None):
        super().__init__(name=name)
        if not isinstance(func, Module):
            raise TypeError(f"ODEBlock: func must be a Module taking (t, h), got {type(func).__name__}")
        if method not in METHODS:
            raise ValueError(f"ODEBlock: unknown method {method!r}; expected one of {METHODS}")
        times = tuple(float(v) for v in t)
        if len(times) != 2 or times[0] == times[1]:
            raise ValueError(f"ODEBlock: t must be two different times (t_0, t_1), got {t!r}")
        self.func = func
        self.t, self.method, self.rtol, self.atol = times, method, rtol, atol
        self.options, self.adjoint, self.adjoint_options = options, bool(adjoint), dict(adjoint_options or {})
        unknown = sorted(set(self.adjoint_options) - _ADJOINT_KEYWORDS)
        if unknown:
            raise ValueError(f"ODEBlock: unknown adjoint_options {unknown}; "
                             f"expected some of {sorted(_ADJOINT_KEYWORDS)}")
        self.nfe_forward = 0
        self.nfe_backward = 0
        self._in_forward = False

    @property
    def nfe(self) -> int:
        return self.nfe_forward + self.nfe_backward

    def _counted_func(self, t: Tensor, h):
        if self._in_forward:
            self.nfe_forward += 1
        else:
            self.nfe_backward += 1
        return self.func(t, h)

    def build(self, input_shape) -> None:
        """Let ``func``'s layers create their weights (one call on zeros)."""
        if not all(m.built for m in self.func.modules()):
            shape = tuple(1 if size is None else size for size in input_shape)
            zeros = Tensor._wrap(backend.xp.zeros(shape, dtype=backend.get_default_dtype()))
            with no_grad():
                self.func(Tensor(self.t[0]), zeros)
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        self.nfe_forward = self.nfe_backward = 0
        self._in_forward = True
        try:
            if self.adjoint:
                params = [p for p in self.func.parameters() if p.requires_grad]
                out = odeint_adjoint(self._counted_func, x, self.t, method=self.method, rtol=self.rtol,
                                     atol=self.atol, options=self.options, adjoint_params=params,
                                     **self.adjoint_options)
            else:
                out = odeint(self._counted_func, x, self.t, method=self.method, rtol=self.rtol, atol=self.atol,
                             options=self.options, who="ODEBlock")
        finally:
            self._in_forward = False
        return out[-1]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"func": layer_to_config(self.func), "t": list(self.t), "method": self.method, "rtol": self.rtol,
                "atol": self.atol, "options": self.options, "adjoint": self.adjoint,
                "adjoint_options": self.adjoint_options, "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> ODEBlock:
        config = dict(config)
        return cls(layer_from_config(config.pop("func")), **config)

    def extra_repr(self) -> str:
        return f"t={self.t}, method={self.method!r}, adjoint={self.adjoint}"
