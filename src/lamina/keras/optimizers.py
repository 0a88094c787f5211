"""Keras's optimizers: hyperparameters under Keras's names and defaults, built into lamina's.

A Keras optimizer is created before the model has weights (``Adam(learning_rate=1e-3)`` or
the string ``"adam"`` given to ``compile``), so the objects here are specifications:
:meth:`Optimizer.build` makes the :class:`lamina.optim.Optimizer` for a model's parameters
once ``compile`` knows the model. Keras's names map onto lamina's as follows:
``learning_rate`` -> ``lr``, ``beta_1``/``beta_2`` -> ``betas``, ``epsilon`` -> ``eps``,
``rho`` -> RMSprop's ``alpha`` and Adadelta's ``rho``. Defaults are Keras's (e.g. Adam
learning rate 0.001 and epsilon 1e-7, SGD 0.01, RMSprop 0.001 with rho 0.9, Adagrad 0.001
with initial accumulator 0.1), not lamina's. ``clipvalue`` and ``global_clipnorm`` become the
Trainer's ``clip_value`` and ``clip_norm`` (a joint norm over all gradients); ``clipnorm``
clips each weight's gradient to its own L2 norm, g min(1, clipnorm / ||g||), before them
(:class:`lamina.keras.training.KerasTrainer`).
"""

from __future__ import annotations

from typing import Any

from lamina import optim

__all__ = ["SGD", "Adadelta", "Adagrad", "Adam", "AdamW", "Adamax", "Nadam", "Optimizer", "RMSprop", "get"]


class Optimizer:
    """A Keras optimizer specification; :meth:`build` gives lamina's optimizer."""

    lamina_class: type = optim.SGD
    default_learning_rate = 0.001

    def __init__(self, learning_rate: float | None = None, clipvalue: float | None = None,
                 global_clipnorm: float | None = None, clipnorm: float | None = None,
                 weight_decay: float | None = None, name: str | None = None):
        for key, value in (("clipnorm", clipnorm), ("clipvalue", clipvalue), ("global_clipnorm", global_clipnorm)):
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise ValueError(f"{type(self).__name__}: {key} must be a positive number, got {value!r}")
        rate = self.default_learning_rate if learning_rate is None else learning_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise ValueError(f"{type(self).__name__}: learning_rate must be a positive number, got {rate!r}")
        self.learning_rate = float(rate)
        self.clipvalue, self.global_clipnorm, self.clipnorm = clipvalue, global_clipnorm, clipnorm
        self.weight_decay = weight_decay
        self.name = name or _snake(type(self).__name__)

    def hyperparameters(self) -> dict[str, Any]:
        """lamina's keyword arguments (besides the parameters and ``lr``)."""
        return {} if self.weight_decay is None else {"weight_decay": self.weight_decay}

    def build(self, model) -> optim.Optimizer:
        """lamina's optimizer over ``model``'s parameters (read at the first step when the
        model has no weights yet)."""
        return self.lamina_class(model, lr=self.learning_rate, **self.hyperparameters())

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "learning_rate": self.learning_rate}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(learning_rate={self.learning_rate})"


def _snake(name: str) -> str:
    return name.lower()


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum; learning rate 0.01."""

    lamina_class = optim.SGD
    default_learning_rate = 0.01

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "momentum": self.momentum, "nesterov": self.nesterov}


class RMSprop(Optimizer):
    """RMSprop: Keras's ``rho`` (0.9) is lamina's ``alpha``; learning rate 0.001, epsilon 1e-7."""

    lamina_class = optim.RMSprop

    def __init__(self, learning_rate: float = 0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.rho, self.momentum, self.epsilon, self.centered = float(rho), float(momentum), float(epsilon), centered

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "alpha": self.rho, "momentum": self.momentum, "eps": self.epsilon,
                "centered": bool(self.centered)}


class _Betas(Optimizer):
    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "betas": (self.beta_1, self.beta_2), "eps": self.epsilon}


class Adam(_Betas):
    """Adam: learning rate 0.001, beta_1 0.9, beta_2 0.999, epsilon 1e-7."""

    lamina_class = optim.Adam

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, amsgrad: bool = False, **kwargs):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, **kwargs)
        self.amsgrad = bool(amsgrad)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay (Keras's default 0.004)."""

    lamina_class = optim.AdamW

    def __init__(self, learning_rate: float = 0.001, weight_decay: float = 0.004, **kwargs):
        super().__init__(learning_rate, weight_decay=weight_decay, **kwargs)


class Adamax(_Betas):
    """Adamax (Adam with an infinity norm): learning rate 0.001."""

    lamina_class = optim.Adamax


class Nadam(_Betas):
    """Adam with Nesterov momentum: learning rate 0.001."""

    lamina_class = optim.NAdam


class Adagrad(Optimizer):
    """Adagrad: learning rate 0.001, initial accumulator 0.1, epsilon 1e-7."""

    lamina_class = optim.Adagrad

    def __init__(self, learning_rate: float = 0.001, initial_accumulator_value: float = 0.1,
                 epsilon: float = 1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.initial_accumulator_value, self.epsilon = float(initial_accumulator_value), float(epsilon)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "initial_accumulator_value": self.initial_accumulator_value,
                "eps": self.epsilon}


class Adadelta(Optimizer):
    """Adadelta: learning rate 0.001, rho 0.95, epsilon 1e-7."""

    lamina_class = optim.Adadelta

    def __init__(self, learning_rate: float = 0.001, rho: float = 0.95, epsilon: float = 1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.rho, self.epsilon = float(rho), float(epsilon)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "rho": self.rho, "eps": self.epsilon}


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW, "adagrad": Adagrad, "adadelta": Adadelta,
    "adamax": Adamax, "nadam": Nadam,
}


def get(identifier) -> Optimizer | optim.Optimizer:
    """A Keras optimizer from its name (any case: ``"adam"``, ``"Adam"``), a Keras optimizer
    object as it is, or a lamina optimizer already built (kept as it is)."""
    if isinstance(identifier, (Optimizer, optim.Optimizer)):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key in OPTIMIZERS:
            return OPTIMIZERS[key]()
        raise ValueError(f"lamina.keras.optimizers.get: unknown optimizer {identifier!r}; expected one of "
                         f"{sorted(OPTIMIZERS)} or an optimizer object")
    raise TypeError(f"lamina.keras.optimizers.get: expected an optimizer name or object, got "
                    f"{type(identifier).__name__}")
