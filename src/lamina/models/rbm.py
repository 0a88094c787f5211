"""Restricted Boltzmann machines (Hinton's "A Practical Guide to Training RBMs"; Goodfellow et
al., *Deep Learning*, ch. 16-20; scikit-learn's BernoulliRBM).

Visible units v (n_visible), binary hidden units h (n_hidden), weights W (n_visible, n_hidden),
visible biases b and hidden biases c. The energy of a joint state and the free energy of v
(the hidden units summed out, softplus(x) = log(1 + e^x)):

    bernoulli visible (v in {0, 1}):   E(v, h) = -b.v - c.h - v W h
                                       F(v)    = -b.v - sum_j softplus(c_j + (v W)_j)
    gaussian visible (unit variance):  E(v, h) = |v - b|^2 / 2 - c.h - v W h
                                       F(v)    = |v - b|^2 / 2 - sum_j softplus(c_j + (v W)_j)

p(v) = exp(-F(v)) / Z. The conditionals factorize: p(h_j = 1 | v) = sigmoid(c_j + (v W)_j), and
p(v_i = 1 | h) = sigmoid(b_i + (W h)_i) (bernoulli) or v | h ~ N(b + W h, I) (gaussian).

Training follows the gradient of the negative log-likelihood, d(-log p(v))/dtheta =
dF(v)/dtheta - E_model[dF/dtheta]: contrastive divergence (CD-k) estimates the model term from
k Gibbs steps started at the data; persistent CD (PCD, Tieleman 2008) keeps the chains running
between updates. :meth:`RBM.cd_gradients` is the gradient of mean F(v_data) - mean F(v_model).

log Z is exact for few hidden units (2^n_hidden terms, :meth:`RBM.log_partition`) and estimated
by annealed importance sampling otherwise (Salakhutdinov & Murray 2008,
:meth:`RBM.ais_log_partition`).
"""

from __future__ import annotations

import itertools
import math

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import Module
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import as_tensor

__all__ = ["RBM", "free_energy"]

VISIBLE_UNITS = ("bernoulli", "gaussian")
_MAX_EXACT_HIDDEN = 20


def _sigmoid(x):
    return 0.5 * (1.0 + numpy.tanh(0.5 * x))


def _softplus(x):
    return numpy.logaddexp(0.0, x)


def _logsumexp(x, axis=None):
    top = numpy.max(x, axis=axis, keepdims=True)
    return numpy.squeeze(top, axis=axis) + numpy.log(numpy.sum(numpy.exp(x - top), axis=axis))


def _generator(seed):
    return backend.rng() if seed is None else numpy.random.default_rng(seed)


def free_energy(v, weight, visible_bias, hidden_bias, visible: str = "bernoulli") -> Tensor:
    """F(v) of the module docstring for rows v (batch, n_visible), weights (n_visible, n_hidden)
    and the biases, as a differentiable composite of lamina ops; (batch,)."""
    if visible not in VISIBLE_UNITS:
        raise ValueError(f"free_energy: visible must be one of {VISIBLE_UNITS}, got {visible!r}")
    v, weight, visible_bias, hidden_bias = (as_tensor(a) for a in (v, weight, visible_bias, hidden_bias))
    hidden_term = F.sum(F.softplus(F.matmul(v, weight) + hidden_bias), axis=1)
    if visible == "bernoulli":
        return -F.matmul(v, visible_bias) - hidden_term
    return 0.5 * F.sum(F.square(v - visible_bias), axis=1) - hidden_term


@register_with_arguments
class RBM(Module):
    """A restricted Boltzmann machine (module docstring) with ``visible`` units 'bernoulli' or
    'gaussian' (unit variance: standardize the data first).

    Parameters ``weight`` (n_visible, n_hidden), drawn from N(0, 0.01^2) as scikit-learn's,
    ``visible_bias`` and ``hidden_bias`` (zeros). :meth:`free_energy` (also ``rbm(v)``) is a
    lamina tensor differentiable in all three; :meth:`fit` trains by CD-k or PCD with the
    closed-form gradients of :meth:`cd_gradients`.

    Example::

        rbm = RBM(64, 100).fit(x_binary, epochs=20, lr=0.05, persistent=True, seed=0)
        features = rbm.transform(x_binary)          # p(h = 1 | v), (batch, 100)
    """

    def __init__(self, n_visible: int, n_hidden: int, visible: str = "bernoulli", seed: int | None = None,
                 dtype=None, name: str | None = None):
        super().__init__(name=name)
        self.n_visible = positive_int(n_visible, "RBM: n_visible")
        self.n_hidden = positive_int(n_hidden, "RBM: n_hidden")
        if visible not in VISIBLE_UNITS:
            raise ValueError(f"RBM: visible must be one of {VISIBLE_UNITS}, got {visible!r}")
        self.visible = visible
        dtype = numpy.dtype(dtype or backend.get_default_dtype())
        weight = 0.01 * _generator(seed).standard_normal((n_visible, n_hidden))
        self.add_parameter("weight", weight.astype(dtype))
        self.add_parameter("visible_bias", numpy.zeros(n_visible, dtype))
        self.add_parameter("hidden_bias", numpy.zeros(n_hidden, dtype))
        self.built = True
        self.history: dict[str, list[float]] = {}

    # -- checks -------------------------------------------------------------------------
    def _visible_array(self, v, what: str = "v") -> numpy.ndarray:
        v = numpy.asarray(v.numpy() if isinstance(v, Tensor) else v, dtype=self.weight.dtype)
        if v.ndim != 2 or v.shape[1] != self.n_visible:
            raise ShapeError(f"RBM: {what} must be (batch, n_visible={self.n_visible}); got shape {v.shape}")
        if self.visible == "bernoulli" and v.size and (v.min() < 0 or v.max() > 1):
            raise ValueError(f"RBM: bernoulli visible units take values in [0, 1] (binary or probabilities); "
                             f"{what} ranges over [{v.min()}, {v.max()}]")
        return v

    def _hidden_array(self, h) -> numpy.ndarray:
        h = numpy.asarray(h.numpy() if isinstance(h, Tensor) else h, dtype=self.weight.dtype)
        if h.ndim != 2 or h.shape[1] != self.n_hidden:
            raise ShapeError(f"RBM: h must be (batch, n_hidden={self.n_hidden}); got shape {h.shape}")
        return h

    def _arrays(self):
        return self.weight.data, self.visible_bias.data, self.hidden_bias.data

    # -- energies -----------------------------------------------------------------------
    def energy(self, v, h) -> numpy.ndarray:
        """E(v, h) of each row pair (module docstring), shape (batch,)."""
        v, h = self._visible_array(v), self._hidden_array(h)
        if len(v) != len(h):
            raise ShapeError(f"RBM.energy: {len(v)} visible rows but {len(h)} hidden rows")
        w, b, c = self._arrays()
        coupling = numpy.einsum("bi,ij,bj->b", v, w, h)
        if self.visible == "bernoulli":
            return -v @ b - h @ c - coupling
        return 0.5 * numpy.sum((v - b) ** 2, axis=1) - h @ c - coupling

    def free_energy(self, v) -> Tensor:
        """F(v) = -log sum_h exp(-E(v, h)) per row (batch,), a tensor differentiable in the
        parameters (and in ``v`` when it is a tensor that requires grad)."""
        if not isinstance(v, Tensor):
            v = self._visible_array(v)
            v = Tensor(v, dtype=v.dtype)
        elif v.ndim != 2 or v.shape[1] != self.n_visible:
            raise ShapeError(f"RBM: v must be (batch, n_visible={self.n_visible}); got shape {tuple(v.shape)}")
        return free_energy(v, self.weight, self.visible_bias, self.hidden_bias, self.visible)

    def forward(self, v) -> Tensor:
        """``rbm(v)`` is the free energy F(v) (:meth:`free_energy`)."""
        return self.free_energy(v)

    def _free_energy_array(self, v: numpy.ndarray) -> numpy.ndarray:
        w, b, c = self._arrays()
        hidden_term = _softplus(v @ w + c).sum(axis=1)
        if self.visible == "bernoulli":
            return -v @ b - hidden_term
        return 0.5 * numpy.sum((v - b) ** 2, axis=1) - hidden_term

    # -- conditionals and sampling ----------------------------------------------------------
    def hidden_probabilities(self, v) -> numpy.ndarray:
        """p(h_j = 1 | v) = sigmoid(c + v W), (batch, n_hidden)."""
        w, _, c = self._arrays()
        return _sigmoid(self._visible_array(v) @ w + c)

    transform = hidden_probabilities

    def visible_mean(self, h) -> numpy.ndarray:
        """E[v | h]: sigmoid(b + W h) (bernoulli) or b + W h (gaussian), (batch, n_visible)."""
        w, b, _ = self._arrays()
        activation = self._hidden_array(h) @ w.T + b
        return _sigmoid(activation) if self.visible == "bernoulli" else activation

    def sample_h(self, v, seed: int | numpy.random.Generator | None = None) -> tuple[numpy.ndarray, numpy.ndarray]:
        """(p(h = 1 | v), a binary sample of h)."""
        rng = seed if isinstance(seed, numpy.random.Generator) else _generator(seed)
        probabilities = self.hidden_probabilities(v)
        return probabilities, (rng.random(probabilities.shape) < probabilities).astype(probabilities.dtype)

    def sample_v(self, h, seed: int | numpy.random.Generator | None = None) -> tuple[numpy.ndarray, numpy.ndarray]:
        """(E[v | h], a sample of v: binary, or the mean plus unit Gaussian noise)."""
        rng = seed if isinstance(seed, numpy.random.Generator) else _generator(seed)
        mean = self.visible_mean(h)
        if self.visible == "bernoulli":
            return mean, (rng.random(mean.shape) < mean).astype(mean.dtype)
        return mean, (mean + rng.standard_normal(mean.shape)).astype(mean.dtype)

    def gibbs(self, v, k: int = 1, seed: int | numpy.random.Generator | None = None) -> numpy.ndarray:
        """k steps of block Gibbs sampling v -> h -> v from ``v``; returns the last v sample."""
        rng = seed if isinstance(seed, numpy.random.Generator) else _generator(seed)
        v = self._visible_array(v)
        for _ in range(positive_int(k, "RBM.gibbs: k")):
            _, h = self.sample_h(v, rng)
            _, v = self.sample_v(h, rng)
        return v

    def reconstruct(self, v) -> numpy.ndarray:
        """E[v | h = p(h | v)]: the mean-field reconstruction of ``v``."""
        return self.visible_mean(self.hidden_probabilities(v))

    # -- learning ---------------------------------------------------------------------------
    def cd_gradients(self, v_data, v_model) -> dict[str, numpy.ndarray]:
        """The gradient of mean F(v_data) - mean F(v_model) in each parameter (positive phase
        minus negative phase), with dF/dW = -v^T p(h | v), dF/dc = -p(h | v) and dF/db = -v
        (bernoulli) or b - v (gaussian)."""
        v_data, v_model = self._visible_array(v_data, "v_data"), self._visible_array(v_model, "v_model")
        h_data, h_model = self.hidden_probabilities(v_data), self.hidden_probabilities(v_model)
        weight = v_model.T @ h_model / len(v_model) - v_data.T @ h_data / len(v_data)
        visible = v_model.mean(axis=0) - v_data.mean(axis=0)     # the b terms of the gaussian F cancel
        hidden = h_model.mean(axis=0) - h_data.mean(axis=0)
        return {"weight": weight, "visible_bias": visible, "hidden_bias": hidden}

    def fit(self, x, epochs: int = 10, batch_size: int = 10, lr: float = 0.1, k: int = 1, persistent: bool = True,
            momentum: float = 0.0, weight_decay: float = 0.0, seed: int | None = None) -> RBM:
        """Stochastic gradient descent on the negative log-likelihood, the model term from k Gibbs
        steps started at the batch (CD-k) or at persistent chains (PCD, ``persistent=True``, one
        chain per row of a batch, as scikit-learn's BernoulliRBM). Shuffles each epoch;
        ``weight_decay`` is an L2 penalty on W. Appends per epoch to ``history``: the
        'reconstruction_error' (mean squared) and, for bernoulli units, the mean 'pseudo_likelihood'."""
        x = self._visible_array(x, "x")
        epochs, batch_size, k = (positive_int(value, f"RBM.fit: {what}")
                                 for value, what in ((epochs, "epochs"), (batch_size, "batch_size"), (k, "k")))
        if not lr > 0:
            raise ValueError(f"RBM.fit: lr must be positive, got {lr!r}")
        rng = _generator(seed)
        chains = x[rng.integers(0, len(x), min(batch_size, len(x)))].copy()
        velocity = {name: numpy.zeros_like(param.data) for name, param in self.named_parameters()}
        for _ in range(epochs):
            order = rng.permutation(len(x))
            for start in range(0, len(x), batch_size):
                batch = x[order[start:start + batch_size]]
                start_states = chains[:len(batch)] if persistent else batch
                negatives = self.gibbs(start_states, k, rng)
                if persistent:
                    chains[:len(batch)] = negatives
                gradients = self.cd_gradients(batch, negatives)
                gradients["weight"] = gradients["weight"] + weight_decay * self.weight.data
                for name, param in self.named_parameters():
                    velocity[name] = momentum * velocity[name] - lr * gradients[name]
                    param.data += velocity[name].astype(param.data.dtype)
            self._record_epoch(x, rng)
        return self

    def _record_epoch(self, x: numpy.ndarray, rng) -> None:
        error = float(numpy.mean((self.reconstruct(x) - x) ** 2))
        self.history.setdefault("reconstruction_error", []).append(error)
        if self.visible == "bernoulli":
            self.history.setdefault("pseudo_likelihood", []).append(float(self.score_samples(x, rng).mean()))

    def score_samples(self, v, seed: int | numpy.random.Generator | None = None) -> numpy.ndarray:
        """The pseudo-likelihood of each row as scikit-learn's BernoulliRBM estimates it: one
        visible unit i drawn at random per row and flipped (v -> v~), then
        n_visible * log sigmoid(F(v~) - F(v)). Bernoulli units only."""
        if self.visible != "bernoulli":
            raise ValueError("RBM.score_samples: the pseudo-likelihood needs bernoulli visible units; "
                             "this RBM has gaussian ones")
        rng = seed if isinstance(seed, numpy.random.Generator) else _generator(seed)
        v = self._visible_array(v)
        flipped = v.copy()
        rows, units = numpy.arange(len(v)), rng.integers(0, self.n_visible, len(v))
        flipped[rows, units] = 1 - flipped[rows, units]
        return -self.n_visible * _softplus(self._free_energy_array(v) - self._free_energy_array(flipped))

    # -- the partition function ---------------------------------------------------------------
    def _log_unnormalized_hidden(self, h: numpy.ndarray) -> numpy.ndarray:
        """log sum_v exp(-E(v, h)) for each row of h, in float64."""
        w, b, c = (a.astype(numpy.float64) for a in self._arrays())
        activation = h @ w.T + b
        if self.visible == "bernoulli":
            return h @ c + _softplus(activation).sum(axis=1)
        return (h @ c + 0.5 * numpy.sum(activation ** 2, axis=1) - 0.5 * b @ b
                + 0.5 * self.n_visible * math.log(2 * math.pi))

    def log_partition(self) -> float:
        """log Z exactly, by summing the visible units out in closed form for each of the
        2^n_hidden hidden states (n_hidden <= 20)."""
        if self.n_hidden > _MAX_EXACT_HIDDEN:
            raise ValueError(f"RBM.log_partition: enumerating 2^{self.n_hidden} hidden states is too many "
                             f"(at most n_hidden={_MAX_EXACT_HIDDEN}); use ais_log_partition")
        states = numpy.array(list(itertools.product((0.0, 1.0), repeat=self.n_hidden)))
        return float(_logsumexp(self._log_unnormalized_hidden(states)))

    def log_likelihood(self, v, log_z: float | None = None) -> numpy.ndarray:
        """log p(v) = -F(v) - log Z per row (log Z exact unless given)."""
        log_z = self.log_partition() if log_z is None else log_z
        return -self._free_energy_array(self._visible_array(v).astype(numpy.float64)) - log_z

    def ais_log_partition(self, n_chains: int = 100, n_betas: int = 1000, base_bias=None,
                          seed: int | None = None) -> float:
        """log Z by annealed importance sampling (Salakhutdinov & Murray 2008).

        The chain anneals from a base RBM with W = 0, c = 0 and visible biases ``base_bias``
        (zeros by default; for bernoulli units, log(p / (1 - p)) of the data's mean is a good
        choice), whose log Z_0 is known, to this one, through the joint distributions
        p_beta(v, h) ~ exp(-(1 - beta) E_0(v) - beta E(v, h)) for beta = 0 .. 1 in ``n_betas``
        equal steps. Each chain's log-weight sums log p*_beta_k(v) - log p*_beta_(k-1)(v) at its
        states (one Gibbs transition per step); log Z = log Z_0 + log mean exp(log-weights).
        """
        n_chains, n_betas = positive_int(n_chains, "RBM.ais: n_chains"), positive_int(n_betas, "RBM.ais: n_betas")
        rng = _generator(seed)
        w, b, c = (a.astype(numpy.float64) for a in self._arrays())
        base = numpy.zeros(self.n_visible) if base_bias is None else numpy.asarray(base_bias, numpy.float64)
        if base.shape != (self.n_visible,):
            raise ShapeError(f"RBM.ais_log_partition: base_bias of shape {base.shape}; expected ({self.n_visible},)")
        bernoulli = self.visible == "bernoulli"

        def log_unnormalized(v, beta):      # log sum_h p*_beta(v, h)
            hidden_term = _softplus(beta * (v @ w + c)).sum(axis=1)
            if bernoulli:
                return (1 - beta) * v @ base + beta * v @ b + hidden_term
            return (-0.5 * (1 - beta) * numpy.sum((v - base) ** 2, axis=1)
                    - 0.5 * beta * numpy.sum((v - b) ** 2, axis=1) + hidden_term)

        if bernoulli:
            log_z = float(_softplus(base).sum()) + self.n_hidden * math.log(2)
            v = (rng.random((n_chains, self.n_visible)) < _sigmoid(base)).astype(numpy.float64)
        else:
            log_z = 0.5 * self.n_visible * math.log(2 * math.pi) + self.n_hidden * math.log(2)
            v = base + rng.standard_normal((n_chains, self.n_visible))
        log_weights = numpy.zeros(n_chains)
        betas = numpy.linspace(0.0, 1.0, n_betas + 1)
        for previous, beta in zip(betas[:-1], betas[1:]):
            log_weights += log_unnormalized(v, beta) - log_unnormalized(v, previous)
            h = (rng.random((n_chains, self.n_hidden)) < _sigmoid(beta * (v @ w + c))).astype(numpy.float64)
            mean_activation = (1 - beta) * base + beta * (b + h @ w.T)
            if bernoulli:
                v = (rng.random(v.shape) < _sigmoid(mean_activation)).astype(numpy.float64)
            else:
                v = mean_activation + rng.standard_normal(v.shape)
        return log_z + float(_logsumexp(log_weights) - math.log(n_chains))

    def extra_repr(self) -> str:
        return f"n_visible={self.n_visible}, n_hidden={self.n_hidden}, visible={self.visible!r}"
