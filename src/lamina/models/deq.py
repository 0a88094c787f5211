"""Small deep equilibrium classifiers (Bai et al. 2019): :class:`DEQMLP` for flat inputs such as
8x8 digits, :class:`DEQConvNet` for NHWC images.

    u = x W_in + b_in,   z* = sigma(z* W + u),   logits = z* W_out + b_out

(the convolutional one: u and z W are 'same' convolutions, the head reads z* flattened, or its
global average), with sigma tanh or ReLU (both 1-Lipschitz). The cell's weight is rescaled to a Frobenius
norm of at most gamma = ``contraction`` < 1 (W <- W min(1, gamma / ||W||_F), a differentiable
weight normalisation), so ||W||_2 <= gamma and the cell is a contraction in z: the fixed point
exists, is unique, and every solver finds it. A convolution with an f x f kernel K is bounded
by f ||K||_F (the sum of its f^2 taps' norms), so the convolutional cell keeps ||K||_F <= gamma / f.
"""

from __future__ import annotations

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn import DEQ, Conv2D, Dense, Flatten, GlobalAvgPool2D
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["ContractiveCell", "ContractiveConvCell", "DEQConvNet", "DEQMLP"]

_ACTIVATIONS = {"tanh": F.tanh, "relu": F.relu}


def _within_norm(weight: Tensor, bound: float) -> Tensor:
    """weight min(1, bound / ||weight||_F), on the graph."""
    norm = ((weight * weight).sum()) ** 0.5
    return weight * (bound / F.maximum(norm, bound))


def _check_cell(who: str, contraction: float, activation: str) -> None:
    if not 0.0 < contraction < 1.0:
        raise ValueError(f"{who}: contraction must be in (0, 1), got {contraction!r}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{who}: activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")


@register_with_arguments
class ContractiveCell(Module):
    """f(z, u) = sigma(z W + u) with W (units, units) rescaled to ||W||_F <= ``contraction``
    (module docstring); ``activation`` 'tanh' or 'relu'."""

    def __init__(self, units: int, contraction: float = 0.9, activation: str = "tanh", name: str | None = None):
        super().__init__(name=name)
        self.units = positive_int(units, "ContractiveCell: units")
        _check_cell("ContractiveCell", contraction, activation)
        self.contraction, self.activation = float(contraction), activation
        self.add_parameter("weight", initializers.get("xavier_uniform")((self.units, self.units)))
        self.built = True

    def scaled_weight(self) -> Tensor:
        """W min(1, gamma / ||W||_F), on the graph."""
        return _within_norm(self.weight, self.contraction)

    def forward(self, z, u) -> Tensor:
        z, u = as_tensor(z), as_tensor(u)
        return _ACTIVATIONS[self.activation](z @ self.scaled_weight() + u)


@register_with_arguments
class DEQMLP(Module):
    """Flatten, inject (``Dense(hidden)``), the equilibrium of a :class:`ContractiveCell` found by
    :class:`lamina.nn.DEQ` (``solver``, ``tol``, ``max_iter`` and the other keywords in
    ``deq_options``), and a ``Dense(num_classes)`` head giving logits."""

    def __init__(self, hidden: int = 64, num_classes: int = 10, contraction: float = 0.9, activation: str = "tanh",
                 solver: str = "anderson", tol: float = 1e-4, max_iter: int = 30, deq_options: dict | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        self.hidden = positive_int(hidden, "DEQMLP: hidden")
        self.num_classes = positive_int(num_classes, "DEQMLP: num_classes")
        self.inject = Dense(self.hidden)
        self.deq = DEQ(ContractiveCell(self.hidden, contraction, activation), solver=solver, tol=tol,
                       max_iter=max_iter, **(deq_options or {}))
        self.head = Dense(self.num_classes)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        flat = x.reshape(x.shape[0], -1) if x.ndim != 2 else x
        return self.head(self.deq(self.inject(flat)))


@register_with_arguments
class ContractiveConvCell(Module):
    """f(z, u) = sigma(z * K + u) for NHWC z, K (channels, f, f, channels) a 'same' convolution
    rescaled to ||K||_F <= ``contraction`` / f (module docstring)."""

    def __init__(self, channels: int, kernel_size: int = 3, contraction: float = 0.9, activation: str = "relu",
                 name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "ContractiveConvCell: channels")
        self.kernel_size = positive_int(kernel_size, "ContractiveConvCell: kernel_size")
        _check_cell("ContractiveConvCell", contraction, activation)
        self.contraction, self.activation = float(contraction), activation
        shape = (self.channels, self.kernel_size, self.kernel_size, self.channels)
        self.add_parameter("weight", initializers.get("he_uniform")(shape))
        self.built = True

    def scaled_weight(self) -> Tensor:
        """K min(1, (gamma / f) / ||K||_F), on the graph."""
        return _within_norm(self.weight, self.contraction / self.kernel_size)

    def forward(self, z, u) -> Tensor:
        z, u = as_tensor(z), as_tensor(u)
        return _ACTIVATIONS[self.activation](F.conv2d(z, self.scaled_weight(), padding="same") + u)


@register_with_arguments
class DEQConvNet(Module):
    """NHWC images: inject (a 'same' ``Conv2D(channels, kernel_size)``), the equilibrium of a
    :class:`ContractiveConvCell` found by :class:`lamina.nn.DEQ` (``solver``, ``tol``, ``max_iter``,
    other keywords in ``deq_options``), and a ``Dense(num_classes)`` head on z* flattened (small
    images) or, with ``global_pool=True``, on its average over the pixels."""

    def __init__(self, channels: int = 16, num_classes: int = 10, kernel_size: int = 3, contraction: float = 0.9,
                 activation: str = "relu", solver: str = "anderson", tol: float = 1e-3, max_iter: int = 30,
                 global_pool: bool = False, deq_options: dict | None = None, name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "DEQConvNet: channels")
        self.num_classes = positive_int(num_classes, "DEQConvNet: num_classes")
        self.inject = Conv2D(self.channels, kernel_size, padding="same")
        self.deq = DEQ(ContractiveConvCell(self.channels, kernel_size, contraction, activation), solver=solver,
                       tol=tol, max_iter=max_iter, **(deq_options or {}))
        self.pool = GlobalAvgPool2D() if global_pool else Flatten()
        self.head = Dense(self.num_classes)

    def forward(self, x) -> Tensor:
        return self.head(self.pool(self.deq(self.inject(as_tensor(x)))))
