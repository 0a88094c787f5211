"""First-order steps on a NumPy vector from an estimated gradient, for the strategies that
turn their samples into one (OpenAI-ES, PGPE): plain or momentum SGD, Adam and ClipUp."""

from __future__ import annotations

import numpy

__all__ = ["AdamStep", "ClipUpStep", "SGDStep", "make_stepper"]


class SGDStep:
    """v <- momentum v + g; the step is -lr v."""

    def __init__(self, lr: float, momentum: float = 0.0):
        self.lr, self.momentum, self.velocity = lr, momentum, None

    def __call__(self, gradient: numpy.ndarray) -> numpy.ndarray:
        self.velocity = gradient.copy() if self.velocity is None else self.momentum * self.velocity + gradient
        return -self.lr * self.velocity


class AdamStep:
    """Adam (Kingma and Ba): bias-corrected moments, step -lr m_hat / (sqrt(v_hat) + eps)."""

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m = self.v = None
        self.t = 0

    def __call__(self, gradient: numpy.ndarray) -> numpy.ndarray:
        b1, b2 = self.betas
        if self.m is None:
            self.m, self.v = numpy.zeros_like(gradient), numpy.zeros_like(gradient)
        self.t += 1
        self.m = b1 * self.m + (1 - b1) * gradient
        self.v = b2 * self.v + (1 - b2) * gradient**2
        m_hat, v_hat = self.m / (1 - b1**self.t), self.v / (1 - b2**self.t)
        return -self.lr * m_hat / (numpy.sqrt(v_hat) + self.eps)


class ClipUpStep:
    """ClipUp (Toklu et al. 2020): v <- momentum v - lr g / ||g||, then v scaled down to norm
    ``max_speed`` if longer; the step is v. Default max_speed = 2 lr."""

    def __init__(self, lr: float, momentum: float = 0.9, max_speed: float | None = None):
        self.lr, self.momentum = lr, momentum
        self.max_speed = 2.0 * lr if max_speed is None else max_speed
        self.velocity = None

    def __call__(self, gradient: numpy.ndarray) -> numpy.ndarray:
        norm = numpy.linalg.norm(gradient)
        direction = gradient / norm if norm > 0 else gradient
        self.velocity = (0.0 if self.velocity is None else self.momentum * self.velocity) - self.lr * direction
        speed = numpy.linalg.norm(self.velocity)
        if speed > self.max_speed:
            self.velocity = self.velocity * (self.max_speed / speed)
        return self.velocity


def make_stepper(name: str, lr: float, momentum: float, who: str):
    if name == "adam":
        return AdamStep(lr)
    if name == "sgd":
        return SGDStep(lr, momentum)
    if name == "clipup":
        return ClipUpStep(lr, momentum)
    raise ValueError(f"{who}: optimizer must be 'adam', 'sgd' or 'clipup', got {name!r}")
