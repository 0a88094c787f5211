"""Koopman autoencoders (Lusch, Kutz & Brunton 2018; Takeishi et al. 2017): learn observables
z = phi(x) in which the dynamics are linear, z_{k+1} = z_k K.

    encoder phi: x -> z (an MLP),  K: a Dense without bias (latent_dim x latent_dim),
    decoder psi: z -> x (an MLP)

On sequences x_0 .. x_S (batch, S + 1, n), with z_0 = phi(x_0) and z^_k = z_0 K^k:

    reconstruction = mean ||psi(phi(x_k)) - x_k||^2          over k = 0..S
    prediction     = mean ||psi(z^_k) - x_k||^2              over k = 1..S   (state space)
    linearity      = mean ||z^_k - phi(x_k)||^2              over k = 1..S   (latent space)
    loss = w_rec reconstruction + w_pred prediction + w_lin linearity

(means over the batch, the steps and the features). The eigenvalues lambda of K approximate
Koopman eigenvalues; log(lambda) / dt gives the continuous-time ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import Dense, Sequential
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["KoopmanAutoencoder", "KoopmanLoss"]


@dataclass
class KoopmanLoss:
    """``loss`` (the weighted sum) and its three terms, scalar tensors on the graph."""

    loss: Tensor
    reconstruction: Tensor
    prediction: Tensor
    linearity: Tensor


def _mlp(widths, out: int, activation: str) -> Sequential:
    layers = [Dense(w, activation=activation, kernel_init="xavier_uniform") for w in widths]
    return Sequential(*layers, Dense(out, kernel_init="xavier_uniform"))


@register_with_arguments
class KoopmanAutoencoder(Module):
    """A Koopman autoencoder for ``n_states`` with ``latent_dim`` observables (module
    docstring); ``hidden`` the widths of the encoder's (and, reversed, the decoder's) hidden
    layers. ``encoder``, ``koopman`` (the Dense holding K) and ``decoder`` are its layers.

    Example::

        model = KoopmanAutoencoder(2, 3, hidden=(32, 32))
        history = model.fit(windows, steps=2000, lr=3e-3)      # windows: (batch, S + 1, 2)
        model.continuous_eigenvalues(dt)
    """

    def __init__(self, n_states: int, latent_dim: int, hidden=(32, 32), activation: str = "tanh",
                 reconstruction_weight: float = 1.0, prediction_weight: float = 1.0, linearity_weight: float = 1.0,
                 name: str | None = None):
        super().__init__(name=name)
        self.n_states = positive_int(n_states, "KoopmanAutoencoder: n_states")
        self.latent_dim = positive_int(latent_dim, "KoopmanAutoencoder: latent_dim")
        hidden = tuple(positive_int(h, "KoopmanAutoencoder: hidden widths") for h in hidden)
        weights = (reconstruction_weight, prediction_weight, linearity_weight)
        if any(not w >= 0 for w in weights):
            raise ValueError(f"KoopmanAutoencoder: loss weights must be >= 0, got {weights}")
        self.loss_weights = tuple(float(w) for w in weights)
        self.encoder = _mlp(hidden, self.latent_dim, activation)
        self.koopman = Dense(self.latent_dim, use_bias=False, kernel_init="orthogonal")
        self.decoder = _mlp(hidden[::-1], self.n_states, activation)
        self.build((None, self.n_states))

    def build(self, input_shape) -> None:
        self.encoder.build((None, self.n_states))
        self.koopman.build((None, self.latent_dim))
        self.decoder.build((None, self.latent_dim))
        self.built = True

    def encode(self, x) -> Tensor:
        return self.encoder(x)

    def decode(self, z) -> Tensor:
        return self.decoder(z)

    def advance(self, z, steps: int = 1) -> Tensor:
        """z K^steps."""
        for _ in range(steps):
            z = self.koopman(z)
        return z

    def forward(self, x) -> Tensor:
        """psi(phi(x)) K-advanced by one step: the one-step prediction of x (batch, n_states)."""
        return self.decode(self.advance(self.encode(x)))

    def _check(self, x: Tensor) -> None:
        if x.ndim != 3 or x.shape[1] < 2 or x.shape[2] != self.n_states:
            raise ShapeError(f"KoopmanAutoencoder.loss: expected sequences (batch, steps + 1 >= 2, {self.n_states}), "
                             f"got {tuple(x.shape)}")

    def loss(self, sequences) -> KoopmanLoss:
        """The losses of the module docstring on ``sequences`` (batch, S + 1, n_states)."""
        x = as_tensor(sequences)
        self._check(x)
        batch, length, n = x.shape
        z = F.reshape(self.encode(F.reshape(x, (batch * length, n))), (batch, length, self.latent_dim))
        reconstruction = F.mean((self.decode(F.reshape(z, (batch * length, self.latent_dim)))
                                 - F.reshape(x, (batch * length, n))) ** 2)
        z_hat, predicted, advanced = z[:, 0], [], []
        for _ in range(1, length):
            z_hat = self.koopman(z_hat)
            advanced.append(z_hat)
        z_hat = F.stack(advanced, axis=1)
        predicted = F.reshape(self.decode(F.reshape(z_hat, (batch * (length - 1), self.latent_dim))),
                              (batch, length - 1, n))
        prediction = F.mean((predicted - x[:, 1:]) ** 2)
        linearity = F.mean((z_hat - z[:, 1:]) ** 2)
        w_rec, w_pred, w_lin = self.loss_weights
        return KoopmanLoss(w_rec * reconstruction + w_pred * prediction + w_lin * linearity,
                           reconstruction, prediction, linearity)

    def koopman_matrix(self) -> numpy.ndarray:
        """K as it acts on row vectors: z_{k+1} = z_k K."""
        return numpy.asarray(self.koopman.weight.data, dtype=numpy.float64)

    def eigenvalues(self) -> numpy.ndarray:
        """The eigenvalues of K (discrete time)."""
        return numpy.linalg.eigvals(self.koopman_matrix())

    def continuous_eigenvalues(self, dt: float) -> numpy.ndarray:
        """log(lambda) / dt."""
        if not dt > 0:
            raise ValueError(f"KoopmanAutoencoder.continuous_eigenvalues: dt must be positive, got {dt!r}")
        return numpy.log(self.eigenvalues().astype(numpy.complex128)) / dt

    def fit(self, sequences, steps: int = 1000, lr: float = 1e-3, batch_size: int | None = None,
            seed: int | None = None) -> list[float]:
        """Adam on :meth:`loss` for ``steps`` updates (mini-batches of ``batch_size`` sequences
        drawn by a Generator seeded with ``seed``; None: the whole set); returns the losses."""
        from lamina import optim

        data = numpy.asarray(sequences)
        self._check(as_tensor(data))
        rng = numpy.random.default_rng(seed)
        optimizer = optim.Adam(self.parameters(), lr=lr)
        history = []
        for _ in range(positive_int(steps, "KoopmanAutoencoder.fit: steps")):
            batch = data if batch_size is None else data[rng.choice(len(data), batch_size, replace=False)]
            value = self.loss(batch).loss
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            history.append(float(value.item()))
        return history
